"""The task-solver on tiny CPU shapes: losses, gradients, targets, joint normalisation, inference."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from ait.config import ConfigError, create_config
from ait.config.schema import Config, LossConfig, ModelConfig, TokenizerRef
from ait.losses import mask_aux_loss, silog_loss, token_cross_entropy
from ait.model import build_task_solver, crop_masks, paste_masks
from ait.model.instance_head import BOX
from ait_decoder.sequences import DUPLICATE, NOISE, REAL, pad_instances

SIZE = 32  # images and canvas; depth-small turns 32x32 into 4x4 = 16 tokens


def tiny_config(tasks=("depth", "insseg"), loss: LossConfig | None = None, **model_overrides) -> Config:
    model = ModelConfig(
        backbone="swinv2-tiny-cpu",
        backbone_drop_path=0.0,
        d_model=32,
        nhead=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dim_feedforward=64,
        dropout=0.0,
        drop_path=0.0,
        num_bins=SIZE,
        num_classes=5,
        tasks=tuple(tasks),
        tau_depth=0.8,
        tau_mask=1.0,
        max_objects=3,
        canvas=SIZE,
        depth_size=(SIZE, SIZE),
        depth_tokenizer=TokenizerRef("depth-small"),
        mask_tokenizer=TokenizerRef("mask-small"),
    )
    return Config(model=dataclasses.replace(model, **model_overrides), loss=loss or LossConfig())


def build(cfg: Config, seed: int = 0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained tokenizer presets: expected in tests
        return build_task_solver(cfg)


def depth_batch(batch: int = 2, seed: int = 0, size: int = SIZE) -> dict:
    gen = torch.Generator().manual_seed(seed)
    depth = torch.rand(batch, 1, size, size, generator=gen) * 4 + 0.5
    depth[torch.rand(depth.shape, generator=gen) < 0.2] = 0.0  # sensor holes
    return {"image": torch.rand(batch, 3, size, size, generator=gen), "depth": depth}


def instance_batch(objects=(2, 1), seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    boxes, labels, masks = [], [], []
    for count in objects:
        xy = torch.randint(0, SIZE // 2, (count, 2), generator=gen).float()
        wh = torch.randint(4, SIZE // 2, (count, 2), generator=gen).float()
        image_boxes = torch.cat([xy, xy + wh], 1)
        image_masks = torch.zeros(count, SIZE, SIZE, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(image_boxes.long().tolist()):
            image_masks[i, y1:y2, x1 : (x1 + x2) // 2 + 1] = 1  # the left half of the box
        boxes.append(image_boxes)
        labels.append(torch.randint(0, 5, (count,), generator=gen))
        masks.append(image_masks)
    return {
        "image": torch.randn(len(objects), 3, SIZE, SIZE, generator=gen),
        "boxes": boxes,
        "labels": labels,
        "masks": masks,
    }


@pytest.fixture(scope="module")
def joint_solver():
    return build(tiny_config())


# ------------------------------------------------------------------------------------------- training
def test_joint_loss_is_finite_and_reaches_backbone_and_decoder_not_tokenizers(joint_solver):
    solver = joint_solver.train()
    solver.zero_grad()
    out = solver.training_step(
        {"depth": depth_batch(), "insseg": instance_batch()}, torch.Generator().manual_seed(1)
    )
    assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
    for key in ("depth_ce", "depth_silog", "insseg_ce", "insseg_mask_aux", "depth_tokens", "insseg_tokens"):
        assert isinstance(out[key], float) and math.isfinite(out[key]), key
    assert out["depth_tokens"] == 2 * 16
    assert out["depth_silog"] > 0 and out["insseg_mask_aux"] > 0
    out["loss"].backward()
    backbone_grads = [p.grad for p in solver.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in backbone_grads)
    assert solver.decoder.token_embed.weight.grad.abs().sum() > 0
    for tokenizer in solver.tokenizers():
        assert not tokenizer.training
        assert all(not p.requires_grad and p.grad is None for p in tokenizer.parameters())
    trainable = {n for n, _ in solver.trainable_named_parameters()}
    assert trainable and not any(".tokenizer." in n for n in trainable)


def test_depth_loss_is_ce_plus_soft_silog():
    solver = build(tiny_config(tasks=("depth",), loss=LossConfig(depth_aux_weight=0.7))).train()
    batch = depth_batch()
    out = solver.training_step({"depth": batch})
    head = solver.depth_head
    # Recompute from the pieces: mean CE over the 2 x 16 tokens + 0.7 x SILog of the soft-decoded map.
    with torch.no_grad():
        targets = head.targets(batch["depth"])
        logits = solver.decoder(solver.encode_images(batch["image"]), targets, "depth")
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1).double(), targets.flatten())
        soft = head.tokenizer.decode_soft(logits[..., slice(*solver.vocab.depth_codes)], 0.8)
        silog = silog_loss(soft, batch["depth"])
    assert out["depth_ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert out["depth_silog"] == pytest.approx(silog.item(), rel=1e-4)
    assert out["loss"].item() == pytest.approx(ce.item() + 0.7 * silog.item(), rel=1e-5)


def test_soft_silog_sends_gradient_to_the_depth_code_logits_only():
    solver = build(tiny_config(tasks=("depth",)))
    head = solver.depth_head
    with torch.no_grad():
        head.tokenizer.decoder[-1].bias.fill_(2.0)  # an untrained decoder's output sits near 0 m
    batch = depth_batch()
    logits = torch.randn(2, 16, solver.vocab.size, requires_grad=True)
    head.loss(logits, head.targets(batch["depth"]), batch["depth"])["silog"].backward()
    start, stop = solver.vocab.depth_codes
    assert logits.grad[..., start:stop].abs().sum() > 0
    assert logits.grad[..., :start].abs().sum() == 0 and logits.grad[..., stop:].abs().sum() == 0


def test_without_soft_token_there_is_no_auxiliary_loss():
    solver = build(tiny_config(soft_token=False)).train()
    out = solver.training_step(
        {"depth": depth_batch(), "insseg": instance_batch()}, torch.Generator().manual_seed(0)
    )
    assert out["depth_silog"] == 0.0 and out["insseg_mask_aux"] == 0.0
    assert out["loss"].item() == pytest.approx(out["depth_ce"] + out["insseg_ce"], rel=1e-6)


def test_joint_loss_normalises_each_task_by_its_token_count(joint_solver):
    solver = joint_solver.train()
    solver.cfg.loss = LossConfig(depth_task_weight=0.2)
    try:
        depth, inst = depth_batch(), instance_batch()
        joint = solver.training_step({"depth": depth, "insseg": inst}, torch.Generator().manual_seed(3))
        alone_depth = solver.training_step({"depth": depth})
        alone_inst = solver.training_step({"insseg": inst}, torch.Generator().manual_seed(3))
    finally:
        solver.cfg.loss = LossConfig()
    # Each task's loss does not depend on the other task's presence; the joint loss weighs depth by 0.2.
    assert joint["depth_loss"] == pytest.approx(alone_depth["depth_loss"], rel=1e-6)
    assert joint["insseg_loss"] == pytest.approx(alone_inst["insseg_loss"], rel=1e-6)
    assert joint["loss"].item() == pytest.approx(0.2 * joint["depth_loss"] + joint["insseg_loss"], rel=1e-5)
    # The instance CE is the weighted CE sum over its supervised tokens divided by their count.
    head = solver.instance_head
    targets = head.build_targets(inst, torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = solver.decoder(solver.encode_images(inst["image"]), targets["input_ids"], "insseg")
    ce = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).double(), targets["target_ids"].flatten(), reduction="none"
    )
    weights = targets["weights"].flatten().double()
    count = int((weights > 0).sum())
    assert alone_inst["insseg_tokens"] == count
    assert alone_inst["insseg_ce"] == pytest.approx((ce * weights).sum().item() / count, rel=1e-5)
    # Mask aux: each supervised mask token of a real object carries 5.0 x 0.2 x (Dice + MSE) of its object.
    index = targets["real_index"]
    code_logits = head.mask_code_logits(logits)[index[:, 0], index[:, 1]]
    with torch.no_grad():
        soft = head.tokenizer.decode_soft(code_logits, 1.0, clamp=False)
        per_object = mask_aux_loss(soft, targets["real_crops"])
    expected_aux = 5.0 * 0.2 * 16 * per_object.double().sum().item() / count
    assert alone_inst["insseg_mask_aux"] == pytest.approx(expected_aux, rel=1e-4)


def _original_mask_aux(pred: torch.Tensor, target: torch.Tensor, mask_tokens: int) -> float:
    """The original's per-image term, float64: (dice_weight 1 x mean Dice + F.mse_loss) x 5.0 x tokens x 0.2."""
    p, t = pred.double().flatten(1), target.double().flatten(1)
    clipped = p.clip(0.0, 1.0)
    dice = 1 - (2 * (clipped * t).sum(-1) + 1) / (clipped.sum(-1) + t.sum(-1) + 1)
    return float((dice.mean() + ((p - t) ** 2).mean()) * 5.0 * mask_tokens * 0.2)


def test_mask_aux_loss_is_the_originals_on_the_unclamped_soft_mask():
    solver = build(tiny_config(tasks=("insseg",))).train()
    head = solver.instance_head
    with torch.no_grad():
        head.tokenizer.decoder[-1].bias.fill_(1.5)  # soft-decoded masks overshoot 1: (y + 1) / 2 > 1
    inst = instance_batch(objects=(2,))
    out = solver.training_step({"insseg": inst}, torch.Generator().manual_seed(4))
    targets = head.build_targets(inst, torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = solver.decoder(solver.encode_images(inst["image"]), targets["input_ids"], "insseg")
        index = targets["real_index"]
        code_logits = head.mask_code_logits(logits)[index[:, 0], index[:, 1]]
        raw = head.tokenizer.decode_soft(code_logits, 1.0, clamp=False)
    assert raw.max() > 1.2  # the case a clamp would hide from the MSE
    mask_tokens = 16 * len(index)  # the image's supervised mask tokens (all of its real objects)
    expected = _original_mask_aux(raw, targets["real_crops"], mask_tokens) / out["insseg_tokens"]
    assert out["insseg_mask_aux"] == pytest.approx(expected, rel=1e-5)


def test_instance_targets_any_batch_size_and_box_filling_mask_gives_all_ones(joint_solver):
    head = joint_solver.instance_head
    batch = instance_batch(objects=(1, 0, 2))
    # First image: the object's mask covers its whole box, so every roi_align sample is 1.
    batch["boxes"][0] = torch.tensor([[5.0, 7.0, 21.0, 30.0]])
    batch["masks"][0] = torch.zeros(1, SIZE, SIZE, dtype=torch.uint8)
    batch["masks"][0][0, 4:, 3:24] = 1
    targets = head.build_targets(batch, torch.Generator().manual_seed(0))
    assert targets["input_ids"].shape == targets["target_ids"].shape == (3, 3 * 21)
    assert sorted(targets["real_index"][:, 0].tolist()) == [0, 2, 2]  # one row per real object
    first = (targets["real_index"][:, 0] == 0).nonzero()[0, 0]
    crop = targets["real_crops"][first]
    assert crop.shape == (1, 64, 64) and bool((crop == 1).all())
    # ...and its mask tokens are the codes of that all-ones crop.
    slot = int(targets["real_index"][first, 1])
    expected = head.tokenizer.encode(torch.ones(1, 1, 64, 64)).flatten()
    got = targets["target_ids"][0].view(3, 21)[slot, 5:] - joint_solver.vocab.mask_codes[0]
    assert torch.equal(got, expected)
    # Masks on the left part of their boxes give crops on at the left, off at the right (away from the
    # upsampled corners, which interpolate with the outside).
    other = targets["real_crops"][targets["real_index"][:, 0] == 2]
    assert bool((other[:, :, 16:48, 12:28] == 1).all()) and bool((other[:, :, :, 56:] == 0).all())


def test_noise_boxes_are_drawn_inside_each_images_real_area(joint_solver):
    head = joint_solver.instance_head
    batch = instance_batch(objects=(1, 0))
    batch["boxes"][0] = torch.tensor([[1.0, 2.0, 9.0, 10.0]])
    batch["image_size"] = torch.tensor([[12, 20], [16, 8]])  # (h, w) before the padding to the 32 canvas
    for seed in range(10):
        targets = head.build_targets(batch, torch.Generator().manual_seed(seed))
        boxes = targets["input_ids"].view(2, 3, 21)[..., :4] - joint_solver.vocab.coord[0]  # 1 bin = 1 px
        real = torch.zeros(2, 3, dtype=torch.bool)
        real[0, 0] = True  # the one real object comes first
        for image, (h, w) in enumerate([(12, 20), (16, 8)]):
            pad = boxes[image][~real[image]]
            assert (pad[:, 0::2] <= w).all() and (pad[:, 1::2] <= h).all()


def test_crop_masks_of_a_mask_exactly_filling_its_box():
    masks = torch.zeros(1, 160, 160)
    masks[0, 10:138, 20:148] = 1  # a 128 x 128 box, exactly the mask
    rois = torch.tensor([[0.0, 20.0, 10.0, 148.0, 138.0]])
    assert bool((crop_masks(masks, rois, (64, 64)) == 1).all())
    # Upsampling a small box: the outer samples of the crop interpolate with the outside. The edges stay
    # on (weight 0.625 >= 0.5) and only the 4 corners (0.625^2 < 0.5) drop, as in the original's targets.
    small = torch.zeros(1, 32, 32)
    small[0, 8:24, 8:24] = 1
    crop = crop_masks(small, torch.tensor([[0.0, 8.0, 8.0, 24.0, 24.0]]), (64, 64))[0, 0]
    assert int(crop.sum()) == 64 * 64 - 4 and crop[0, 0] == 0 and crop[0, 1] == 1


def test_seeded_training_steps_are_identical():
    losses = []
    for _ in range(2):
        solver = build(tiny_config(), seed=5).train()
        out = solver.training_step(
            {"depth": depth_batch(), "insseg": instance_batch()}, torch.Generator().manual_seed(2)
        )
        losses.append(out["loss"].item())
    assert losses[0] == losses[1]


def test_joint_depth_images_are_padded_to_the_depth_size(joint_solver):
    out = joint_solver.train().training_step({"depth": depth_batch(size=16)})
    assert out["depth_tokens"] == 2 * 16 and math.isfinite(out["depth_loss"])
    with pytest.raises(ValueError, match="larger than the model's depth size"):
        joint_solver.training_step({"depth": depth_batch(size=64)})


def test_depth_image_padded_to_the_canvas_while_depth_keeps_its_token_grid():
    # The joint recipe at tiny size: images padded to 64x64 (2x2 memory cells), depth stays 32x32 (16 tokens).
    solver = build(tiny_config(tasks=("depth",), depth_image_size=(2 * SIZE, 2 * SIZE))).train()
    head = solver.depth_head
    assert head.length == 16 and solver.decoder.config.tasks == {"depth": 16}
    seen = []
    hook = solver.backbone.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape[-2:])))
    try:
        out = solver.training_step({"depth": depth_batch()})
        assert out["depth_tokens"] == 2 * 16 and math.isfinite(out["depth_loss"])
        pred = solver.eval().predict_depth(torch.rand(1, 3, SIZE, SIZE - 8))
    finally:
        hook.remove()
    assert seen == [(2 * SIZE, 2 * SIZE)] * 2 and pred.shape == (1, 1, SIZE, SIZE - 8)
    # evaluation: crop-wide windows of a wider image, each padded to the canvas
    from ait.evaluation import predict_depth_tta

    full = predict_depth_tta(solver.predict_depth, torch.rand(1, 3, SIZE, SIZE + 16), window_width=SIZE)
    assert full.shape == (1, 1, SIZE, SIZE + 16) and torch.isfinite(full).all()


def test_a_rank_without_a_task_reports_the_same_parts_and_a_zero_loss_with_a_graph(joint_solver):
    solver = joint_solver.train()
    full = solver.training_step({"depth": depth_batch(), "insseg": instance_batch()}, torch.Generator())
    no_depth = solver.training_step({"insseg": instance_batch()}, torch.Generator())
    nothing = solver.training_step({})
    assert set(full) == set(no_depth) == set(nothing)
    assert no_depth["depth_loss"] == no_depth["depth_tokens"] == 0.0
    assert nothing["loss"].item() == 0.0 and nothing["loss"].requires_grad
    nothing["loss"].backward()


def test_bad_batches_are_clear_errors(joint_solver):
    with pytest.raises(ValueError, match="subset"):
        joint_solver.training_step({"det": instance_batch()})
    bad = instance_batch()
    bad["masks"][0] = bad["masks"][0][:1]
    with pytest.raises(ValueError, match="masks"):
        joint_solver.training_step({"insseg": bad})
    with pytest.raises(ValueError, match="tasks"):
        build_task_solver(tiny_config(tasks=("insseg", "det")))


# ------------------------------------------------------------------------------------------ inference
def test_predict_shapes(joint_solver):
    solver = joint_solver.eval()
    depth = solver.predict_depth(torch.rand(2, 3, SIZE, SIZE))
    assert depth.shape == (2, 1, SIZE, SIZE) and torch.isfinite(depth).all()
    assert solver.predict_depth(torch.rand(1, 3, 16, 24)).shape == (1, 1, 16, 24)  # padded, cropped back
    results = solver.predict_instances(
        torch.randn(2, 3, SIZE, SIZE),
        scale=[0.5, 1.0],
        orig_size=[(64, 60), (32, 32)],
        generator=torch.Generator().manual_seed(0),
    )
    assert len(results) == 2
    for result, (height, width) in zip(results, [(64, 60), (32, 32)]):
        assert (
            result["boxes"].shape == (3, 4)
            and result["labels"].shape == (3,)
            and result["scores"].shape == (3,)
        )
        assert result["masks"].shape == (3, height, width) and result["masks"].dtype == torch.bool
        assert (result["boxes"][:, 2] <= width).all() and (result["boxes"][:, 3] <= height).all()
        assert ((result["labels"] >= 0) & (result["labels"] < 5)).all()
        assert ((result["scores"] > 0) & (result["scores"] < 1)).all()


def test_int8_decode_weights_reach_the_autoregressive_steps(monkeypatch):
    solver = build(tiny_config(tasks=("depth",), soft_input=False)).eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    exact = solver.predict_depth(images)
    seen = []
    generate = solver.decoder.generate
    monkeypatch.setattr(
        solver.decoder, "generate", lambda *a, **k: seen.append(k["weights"]) or generate(*a, **k)
    )
    solver.cfg.model.decode_weights = "int8"
    int8 = solver.predict_depth(images)
    assert seen == ["int8"]
    # same decoder, weights rounded to int8: the decoded depth moves a little, not arbitrarily
    assert (int8 - exact).abs().max() < 0.25 * exact.abs().max()
    solver.cfg.model.decode_weights = "int4"
    with pytest.raises(Exception, match="decode_weights"):
        solver.cfg.validate()


def test_sine_coordinate_embeddings_start_from_the_bins_places_on_the_memory_grid():
    from ait_decoder import sine_coordinate_codes

    learned, sine = (build(tiny_config(coordinate_embedding=kind)) for kind in ("learned", "sine"))
    first, stop = sine.vocab.coord
    rows = sine.decoder.token_embed.weight.detach()[first:stop].double()
    # SIZE 32 px through the stride-8 backbone: a 4x4 memory, one bin per pixel
    codes = sine_coordinate_codes(SIZE, SIZE, sine.backbone.stride, 32)
    torch.testing.assert_close(rows / rows.pow(2).mean().sqrt(), codes / codes.pow(2).mean().sqrt())
    assert not torch.allclose(learned.decoder.token_embed.weight[first:stop].double(), rows)
    # the rest of the model is the same draw
    assert torch.equal(learned.decoder.token_embed.weight[stop:], sine.decoder.token_embed.weight[stop:])


def test_the_memory_box_loss_is_added_weighted_only_when_asked():
    generator_seed = 0
    off = build(tiny_config(tasks=("insseg",))).train()
    on = build(tiny_config(tasks=("insseg",), loss=LossConfig(memory_box_weight=0.5))).train()
    assert off.memory_box_head is None and on.memory_box_head is not None
    out_off = off.training_step({"insseg": instance_batch()}, torch.Generator().manual_seed(generator_seed))
    out_on = on.training_step({"insseg": instance_batch()}, torch.Generator().manual_seed(generator_seed))
    assert "insseg_memory_boxes" not in out_off and out_on["insseg_memory_boxes"] > 0
    # the same draw but for the head: the sequence terms agree, the total adds the memory term
    assert out_on["insseg_ce"] == pytest.approx(out_off["insseg_ce"])
    assert out_on["loss"].item() == pytest.approx(out_off["loss"].item() + out_on["insseg_memory_boxes"])
    out_on["loss"].backward()
    assert on.memory_box_head.proj.weight.grad.abs().sum() > 0


def test_the_sequence_rank_joins_the_memory_boxes_only_when_asked():
    boxes_only = LossConfig(memory_box_weight=0.5)
    ranked = LossConfig(memory_box_weight=0.5, memory_rank_weight=0.25)
    plain = build(tiny_config(tasks=("insseg",), loss=boxes_only, object_order="area")).train()
    rank = build(tiny_config(tasks=("insseg",), loss=ranked, object_order="area")).train()
    assert plain.memory_box_head.rank is None and rank.memory_box_head.rank.out_features == 3  # max_objects
    # the whole memory-box sum is scaled by memory_box_weight: the rank's own weight is the ratio
    assert rank.memory_box_head.rank_weight == pytest.approx(0.5)
    out_plain = plain.training_step({"insseg": instance_batch()}, torch.Generator().manual_seed(0))
    out_rank = rank.training_step({"insseg": instance_batch()}, torch.Generator().manual_seed(0))
    assert out_rank["insseg_memory_boxes"] > out_plain["insseg_memory_boxes"]
    out_rank["loss"].backward()
    assert rank.memory_box_head.rank.weight.grad.abs().sum() > 0


def test_the_attention_guide_is_added_weighted_only_when_asked():
    stride_8 = "swinv2-convstem-cpu"  # a 4x4 memory at 32 px (the tiny backbone's stride 32 leaves one cell)
    off = build(tiny_config(tasks=("insseg",), backbone=stride_8)).train()
    guided = LossConfig(attention_guide_weight=2.0)
    on = build(tiny_config(tasks=("insseg",), loss=guided, backbone=stride_8)).train()
    out_off = off.training_step({"insseg": instance_batch()}, torch.Generator().manual_seed(0))
    out_on = on.training_step({"insseg": instance_batch()}, torch.Generator().manual_seed(0))
    assert "insseg_attention_guide" not in out_off and out_on["insseg_attention_guide"] > 0
    assert out_on["insseg_ce"] == pytest.approx(out_off["insseg_ce"])
    assert out_on["loss"].item() == pytest.approx(out_off["loss"].item() + out_on["insseg_attention_guide"])
    out_on["loss"].backward()
    assert on.decoder.blocks[0].cross_attn.q.weight.grad.abs().sum() > 0
    assert all(not block.cross_attn._forward_hooks for block in on.decoder.blocks)
    # detection batches (no masks) are guided to the cells of their boxes
    det = build(tiny_config(tasks=("det",), loss=guided, backbone=stride_8)).train()
    batch = instance_batch()
    del batch["masks"]
    assert det.training_step({"det": batch}, torch.Generator().manual_seed(0))["det_attention_guide"] > 0


def test_each_real_slot_names_its_input_object():
    solver = build(tiny_config(tasks=("insseg",), max_objects=4)).train()
    batch = instance_batch(objects=(3, 1))
    targets = solver.instance_head.build_targets(batch, torch.Generator().manual_seed(1))
    per_object, first_class = solver.instance_head.per_object, solver.vocab.classes[0]
    for image, slots in enumerate(targets["slot_objects"].tolist()):
        real = [obj for obj in slots if obj >= 0]
        assert sorted(real) == list(range(len(batch["labels"][image])))
        for slot, obj in enumerate(slots):
            if obj >= 0:  # the class token of a real slot is its object's label
                label = int(targets["target_ids"][image, slot * per_object + 4]) - first_class
                assert label == int(batch["labels"][image][obj])


def test_without_duplicates_every_padding_slot_is_a_noise_box(monkeypatch):
    import ait.model.instance_head as instance_head

    kinds = []

    def recording(*args, **kwargs):
        padded = pad_instances(*args, **kwargs)
        kinds.extend(padded.kind.tolist())
        return padded

    monkeypatch.setattr(instance_head, "pad_instances", recording)

    def padding_kinds(duplicate_boxes: str) -> set[int]:
        kinds.clear()
        solver = build(tiny_config(tasks=("insseg",), max_objects=4, duplicate_boxes=duplicate_boxes)).train()
        for seed in range(8):
            solver.instance_head.build_targets(
                instance_batch(objects=(2, 1)), torch.Generator().manual_seed(seed)
            )
        return set(kinds) - {REAL}

    assert padding_kinds("none") == {NOISE}
    assert padding_kinds("uniform") == {DUPLICATE, NOISE}  # the original pads with both


def test_detection_only_has_no_mask_tokens():
    solver = build(tiny_config(tasks=("det",))).train()
    out = solver.training_step({"det": instance_batch()}, torch.Generator().manual_seed(0))
    assert math.isfinite(out["loss"].item()) and "insseg_mask_aux" not in out
    assert solver.instance_head.length == 3 * 5
    results = solver.eval().predict_instances(
        torch.randn(1, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0)
    )
    assert results[0]["boxes"].shape == (3, 4) and "masks" not in results[0]


def test_ait_p_predicts_its_one_pass_definition():
    solver = build(tiny_config(tasks=("depth",), parallel=True)).eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    got = solver.predict_depth(images)
    with torch.no_grad():
        logits = solver.decoder(solver.encode_images(images), None, "depth", parallel=True, length=16)
        expected = solver.depth_head.tokenizer.decode_soft(logits[..., slice(*solver.vocab.depth_codes)], 0.8)
    torch.testing.assert_close(got, expected)
    out = solver.train().training_step({"depth": depth_batch()})
    assert math.isfinite(out["loss"].item())


def test_without_soft_token_depth_decodes_the_argmax_codes():
    solver = build(tiny_config(tasks=("depth",), soft_token=False, parallel=True)).eval()
    images = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = solver.decoder(solver.encode_images(images), None, "depth", parallel=True, length=16)
        codes = logits[..., slice(*solver.vocab.depth_codes)].argmax(-1).view(1, 4, 4)
        expected = solver.depth_head.tokenizer.decode(codes)
    torch.testing.assert_close(solver.predict_depth(images), expected)


def test_paste_masks_fills_exactly_the_box():
    masks = torch.ones(2, 1, 8, 8)
    boxes = torch.tensor([[2.0, 3.0, 6.0, 9.0], [0.0, 0.0, 10.0, 10.0]])
    pasted = paste_masks(masks, boxes, 10, 10)
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[3:9, 2:6] = True
    assert torch.equal(pasted[0], expected) and bool(pasted[1].all())
    half = torch.zeros(1, 1, 8, 8)
    half[..., :4] = 1  # left half of the crop -> left half of the box
    assert torch.equal(paste_masks(half, boxes[1:], 10, 10)[0].any(0), torch.arange(10) < 5)


def test_more_objects_than_slots_keeps_a_random_subset(joint_solver):
    batch = instance_batch(objects=(5, 3))
    targets = joint_solver.instance_head.build_targets(batch, torch.Generator().manual_seed(0))
    assert targets["input_ids"].shape == (2, 3 * 21)
    assert sorted(targets["real_index"][:, 0].tolist()) == [0, 0, 0, 1, 1, 1]
    out = joint_solver.train().training_step({"insseg": batch}, torch.Generator().manual_seed(0))
    assert math.isfinite(out["loss"].item())


def test_head_parse_is_the_decoder_parser_plus_rescaling_and_masks(joint_solver, monkeypatch):
    import ait.model.instance_head as instance_head_module
    from ait_decoder.sequences import parse_instances

    solver = joint_solver.eval()
    with torch.no_grad():
        memory = solver.encode_images(torch.randn(2, 3, SIZE, SIZE))
        length = solver.instance_head.length
        out = solver.decoder.generate(
            memory,
            "insseg",
            length,
            allowed=solver.vocab.allowed_ranges("insseg", length),
            strategy="top_p",
            generator=torch.Generator().manual_seed(0),
        )
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return parse_instances(*args, **kwargs)

    monkeypatch.setattr(instance_head_module, "parse_instances", spy)
    ours = solver.instance_head.parse(out.ids, out.logits, scale=0.5, orig_size=(2 * SIZE, 2 * SIZE))
    assert calls == [out.ids.shape]  # one call, for the whole batch: a single implementation
    for b in range(2):
        ref = parse_instances(out.ids[b], out.logits[b], solver.vocab, SIZE)
        torch.testing.assert_close(ours[b]["boxes"], (ref["boxes"] / 0.5).clamp(0, 2 * SIZE))
        assert torch.equal(ours[b]["labels"], ref["labels"])
        torch.testing.assert_close(ours[b]["scores"], ref["scores"])
        assert ours[b]["masks"].shape == (3, 2 * SIZE, 2 * SIZE)


def test_paper_joint_config_builds_the_papers_vocabulary_and_sequences():
    from ait.config.registry import create_config

    solver = build(create_config("swinv2b_640reso_joint"))
    assert solver.vocab.size == 2467  # the paper's layout with the 128 reserved ids
    # only the image is padded to the 640 canvas (20x20 memory); the depth ground truth stays a 480x480
    # crop: 15x15 = 225 depth tokens, no padding tokens (the original's padto=640 + a 480 tokenizer)
    assert solver.decoder.config.tasks == {"depth": 225, "insseg": 2100}
    head = solver.depth_head
    assert (head.size, head.image_size, head.grid) == ((480, 480), (640, 640), (15, 15))
    images, depth = head.pad(torch.zeros(2, 3, 480, 480), torch.ones(2, 1, 480, 480))
    assert images.shape == (2, 3, 640, 640) and depth.shape == (2, 1, 480, 480)
    assert head.tau == 1.0 and solver.cfg.loss.depth_task_weight == 0.2


@pytest.mark.parametrize(
    ("name", "instance"),
    [
        ("swinv2b_480reso_depthonly", False),
        ("swinv2b_640reso_detonly", False),
        ("swinv2b_640reso_joint", True),
    ],
)
def test_paper_configs_give_the_papers_vocabulary_and_overrides_are_not_ignored(name, instance):
    from ait.config.registry import create_config
    from ait.model.solver import build_vocab
    from ait_decoder import VocabLayout

    cfg = create_config(name)
    assert build_vocab(cfg.model) == VocabLayout.paper(instance=instance)
    cfg.model.num_classes = 20
    fewer = build_vocab(cfg.model)
    assert fewer.num_classes == 20 and fewer.size == VocabLayout.paper(instance=instance).size - 60


@pytest.mark.parametrize("parallel", [False, True])
def test_under_autocast_only_the_backbone_runs_in_half_precision(parallel):
    # The original trains fp16 with the transformer kept in fp32; CPU autocast (bf16) exercises the same path.
    solver = build(tiny_config(tasks=("depth",), parallel=parallel))
    batch = depth_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert solver.backbone(batch["image"]).dtype == torch.bfloat16
        memory = solver.encode_images(batch["image"])
        logits = solver.teacher_forced_logits(memory, torch.zeros(2, 16, dtype=torch.long), "depth", 16)
    assert memory.tokens.dtype == torch.float32 and logits.dtype == torch.float32


def test_masks_are_pasted_into_the_unclipped_boxes(joint_solver, monkeypatch):
    """As the original's decode_mask: the mask fills the predicted box even where the box leaves the image;
    only the reported box is clipped. A box clipped first would squeeze the whole mask into the image."""
    import ait.model.instance_head as instance_head_module
    from ait_decoder.sequences import parse_instances

    solver = joint_solver.eval()
    with torch.no_grad():
        memory = solver.encode_images(torch.randn(2, 3, SIZE, SIZE))
        length = solver.instance_head.length
        out = solver.decoder.generate(
            memory,
            "insseg",
            length,
            allowed=solver.vocab.allowed_ranges("insseg", length),
            strategy="top_p",
            generator=torch.Generator().manual_seed(0),
        )
    pasted, original = [], instance_head_module.paste_masks

    def spy(masks, boxes, *args, **kwargs):
        pasted.append(boxes.clone())
        return original(masks, boxes, *args, **kwargs)

    monkeypatch.setattr(instance_head_module, "paste_masks", spy)
    height = SIZE // 4  # the real image covers the top quarter of the canvas
    ours = solver.instance_head.parse(out.ids, out.logits, scale=1.0, orig_size=(height, SIZE))
    clipped_any = False
    for b in range(2):
        ref = parse_instances(out.ids[b], out.logits[b], solver.vocab, SIZE)["boxes"]
        torch.testing.assert_close(pasted[b], ref)  # unclipped
        torch.testing.assert_close(
            ours[b]["boxes"][:, 1::2], ref[:, 1::2].clamp(0, height)
        )  # reported: clipped
        clipped_any |= bool((ref[:, 3] > height).any())
    assert clipped_any  # the case that tells the two apart occurs


# ----------------------------------------------------- loss.coord_sigma: Gaussian targets over coordinate bins


def _head_and_targets(sigma: float):
    solver = build(tiny_config(tasks=("insseg",), loss=LossConfig(coord_sigma=sigma)))
    head = solver.instance_head
    targets = head.build_targets(instance_batch(), torch.Generator().manual_seed(0))
    return head, targets


def test_a_vanishing_sigma_is_the_plain_cross_entropy():
    head, targets = _head_and_targets(0.05)
    logits = torch.randn(
        *targets["target_ids"].shape, head.vocab.size, generator=torch.Generator().manual_seed(1)
    )
    smoothed = head.loss(logits, targets)
    plain = token_cross_entropy(logits, targets["target_ids"], targets["weights"])
    torch.testing.assert_close(smoothed["ce_sum"], plain[0])
    torch.testing.assert_close(smoothed["count"], plain[1])


def test_smoothed_loss_matches_a_float64_reference():
    sigma = 1.7
    head, targets = _head_and_targets(sigma)
    ids, weights = targets["target_ids"], targets["weights"]
    logits = torch.randn(*ids.shape, head.vocab.size, generator=torch.Generator().manual_seed(2))
    got = head.loss(logits, targets)

    log_probs = logits.double().log_softmax(-1)
    start, stop = head.vocab.coord
    expected = 0.0
    roles = head.roles.repeat(head.max_objects)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if weights[b, t] == 0:
                continue
            if roles[t] == BOX:
                centre = min(max(int(ids[b, t]), start), stop - 1)
                bins = torch.arange(start, stop, dtype=torch.float64)
                q = torch.exp(-0.5 * ((bins - centre) / sigma) ** 2)
                q = q / q.sum()
                term = -(q * log_probs[b, t, start:stop]).sum()
            else:
                term = -log_probs[b, t, int(ids[b, t])]
            expected += float(weights[b, t]) * float(term)
    assert float(got["ce_sum"]) == pytest.approx(expected, rel=1e-5)


def test_a_near_miss_costs_less_than_a_far_miss_only_with_smoothing():
    def box_loss(sigma: float, offset: int) -> float:
        head, targets = _head_and_targets(sigma)
        ids, weights = targets["target_ids"], targets["weights"]
        is_box = (head.roles == BOX).repeat(head.max_objects).unsqueeze(0) & (weights > 0)
        logits = torch.zeros(*ids.shape, head.vocab.size)
        start, stop = head.vocab.coord
        # every supervised token predicts its target confidently, box coordinates `offset` bins away
        predicted = ids.clone()
        predicted[is_box] = (ids[is_box] + offset).clamp(start, stop - 1)
        logits.scatter_(-1, predicted.unsqueeze(-1), 8.0)
        only_box = dict(targets, weights=weights * is_box)
        return float(head.loss(logits, only_box)["ce_sum"])

    assert box_loss(2.0, 1) < 0.9 * box_loss(2.0, 10)
    assert box_loss(0.0, 1) == pytest.approx(box_loss(0.0, 10), rel=1e-6)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_a_bad_sigma_is_a_config_error_naming_the_key(value):
    cfg = create_config("cpu_joint_tiny")
    cfg.loss = dataclasses.replace(cfg.loss, coord_sigma=value)
    with pytest.raises(ConfigError, match=r"loss\.coord_sigma"):
        cfg.validate()
