"""Does a trained solver's instance decoder look at the image? Teacher-forced accuracy per token role.

    python benchmarks/instance_probe.py RUN_DIR [--images 64] [--seed 0] [--attention]

Feeds the held-out rooms' own instance sequences (the evaluation split of the run's config, built as in
training: objects in the config's order, padded with duplicates and noise boxes) to the solver with teacher
forcing and compares, for each role of an object's tokens (x1, y1, x2, y2, class, first mask token), the
solver's most likely token with the target against the best image-blind guess: the most frequent target
of that role. A solver that has learned instances beats the guess by far at every role (the model sees the
earlier tokens of the object, so x2 given x1 and y1, and the class given the whole box, are easy for one
that looks); one whose accuracy equals the guess predicts from the sequence alone, and its boxes land on
no object whatever the decoding. Only supervised positions count (real objects' box and mask tokens, every
object's class token, as the loss weighs them; "class_real" keeps the real objects' class tokens alone);
"within 2" counts a coordinate within two bins.
"""

from __future__ import annotations

import argparse
import json
import sys

ROLES = (("x1", 0), ("y1", 1), ("x2", 2), ("y2", 3), ("class", 4), ("class_real", 4), ("mask_1", 5))
COORDINATE_ROLES = (0, 1, 2, 3)


def role_accuracy(
    target_ids, predicted_ids, weights, per_object: int, noise_id: int | None = None
) -> dict[str, dict[str, float]]:
    """(B, T) targets, predictions and loss weights of instance sequences -> per role: the count of
    supervised positions, the accuracy, for coordinates the share within 2 bins, and the accuracy of always
    answering the role's most frequent target (the image-blind guess). "class" counts every object's class
    token, "class_real" (with `noise_id`) only those of real objects (target not the noise class)."""
    import torch

    if not (target_ids.shape == predicted_ids.shape == weights.shape) or target_ids.ndim != 2:
        raise ValueError(
            f"targets, predictions and weights must share one (B, T) shape, received {tuple(target_ids.shape)}, "
            f"{tuple(predicted_ids.shape)}, {tuple(weights.shape)}"
        )
    if target_ids.shape[1] % per_object:
        raise ValueError(
            f"sequence length {target_ids.shape[1]} is not a multiple of {per_object} tokens per object"
        )
    role_of = torch.arange(target_ids.shape[1], device=target_ids.device) % per_object
    result = {}
    for name, role in ROLES:
        if role >= per_object:
            continue
        chosen = (weights > 0) & (role_of == role)[None]
        if name == "class_real":
            if noise_id is None:
                continue
            chosen &= target_ids != noise_id
        target, predicted = target_ids[chosen], predicted_ids[chosen]
        if target.numel() == 0:
            continue
        most_frequent = target.mode().values
        row = {"positions": int(target.numel()), "accuracy": float((predicted == target).float().mean())}
        if role in COORDINATE_ROLES:
            row["within_2"] = float(((predicted - target).abs() <= 2).float().mean())
        row["image_blind_guess"] = float((target == most_frequent).float().mean())
        result[name] = row
    return result


def _teacher_forced(run: str, images: int, seed: int, attention: bool = False):
    """The solver of `run`, its held-out batch, sequence targets, memory, logits and (with `attention`) the
    decoder blocks' recorded cross-attention inputs."""
    import torch

    import ait
    from ait.data import build_eval_dataset
    from ait.model.attention_guide import captured_cross_attention

    solver = ait.load(run, device="cpu")
    model = solver.model.eval()
    head = model.instance_head
    if head is None:
        raise SystemExit(f"instance_probe: error: {run} has no instance task (tasks {solver.tasks})")
    dataset = build_eval_dataset(solver.config, head.task)
    samples = [dataset[index] for index in range(min(images, len(dataset)))]
    batch = {key: [sample[key] for sample in samples] for key in samples[0]}
    batch["image"] = torch.stack(batch["image"])
    records: list = []
    with torch.no_grad():
        targets = head.build_targets(batch, generator=torch.Generator().manual_seed(seed))
        memory = model.encode_images(batch["image"])
        length = targets["input_ids"].shape[1]
        if attention:
            with captured_cross_attention(model.decoder) as records:
                logits = model.teacher_forced_logits(memory, targets["input_ids"], head.task, length)
        else:
            logits = model.teacher_forced_logits(memory, targets["input_ids"], head.task, length)
    return model, batch, targets, memory, logits, records


def probe(run: str, images: int = 64, seed: int = 0) -> dict[str, dict[str, float]]:
    """Teacher-forced accuracy per role of the solver in `run` (a run folder or checkpoint) on the first
    `images` rooms of its evaluation split."""
    model, _, targets, _, logits, _ = _teacher_forced(run, images, seed)
    head = model.instance_head
    return role_accuracy(
        targets["target_ids"], logits.argmax(-1), targets["weights"], head.per_object, head.vocab.noise_id
    )


def where_it_looks(run: str, images: int = 64, seed: int = 0) -> dict:
    """Where the decoder looks and what the memory knows, on the same teacher-forced batch as `probe`.

    "attention": per decoder block, per role of a real object's tokens, the cross-attention mass (heads
    averaged) on the memory cells the object occupies; "uniform" is that mass under uniform attention.
    "memory_corners_within_2" (solvers trained with memory boxes): per corner, the share of covered memory
    cells whose memory-box head names its object's corner within 2 bins, the box the decoder could read.
    "x1_within_2_by_object": the first corner of the first, second, ... real object of a room within 2 bins
    (objects with at least 8 rooms), where the decoder must choose which object comes next.
    """
    import math

    import torch

    from ait.model.attention_guide import object_cells, position_targets
    from ait.model.memory_boxes import cell_owners
    from ait_decoder.layers import split_heads
    from ait_decoder.sequences import quantize_boxes

    model, batch, targets, memory, logits, records = _teacher_forced(run, images, seed, attention=True)
    head, stride = model.instance_head, model.backbone.stride
    masks = [torch.as_tensor(m) for m in batch["masks"]] if "masks" in batch else None
    if masks is None:
        raise SystemExit(f"instance_probe: error: {run}'s evaluation rooms carry no instance masks")
    cells = [object_cells(m, memory.grid, stride) for m in masks]
    on_object = position_targets(targets["slot_objects"], cells, head.per_object, head.length)
    roles = torch.arange(head.length) % head.per_object
    real = (targets["slot_objects"] >= 0).repeat_interleave(head.per_object, 1)
    names = [name for name, role in ROLES if name != "class_real" and role < head.per_object]
    result: dict = {"attention": [], "uniform": 0.0, "memory_corners_within_2": None}
    # the first corner of the n-th object, where the decoder must choose which object comes next
    slots = torch.arange(head.length) // head.per_object
    near = (logits.argmax(-1) - targets["target_ids"]).abs() <= 2
    result["x1_within_2_by_object"] = [
        float(near[chosen].float().mean())
        for slot in range(head.max_objects)
        if (chosen := real & ((roles == 0) & (slots == slot))[None]).sum() >= 8
    ]
    with torch.no_grad():
        for module, x, keys in records:
            queries = split_heads(module.q(x), module.num_heads)
            weights = (queries @ keys.transpose(-1, -2) / math.sqrt(queries.shape[-1])).softmax(-1).mean(1)
            mass = (weights * on_object).sum(-1)
            result["attention"].append(
                {name: float(mass[real & (roles == role)[None]].mean()) for role, name in enumerate(names)}
            )
        share = on_object.float().mean(-1)
        result["uniform"] = float(share[real & (roles == 0)[None]].mean())
        if model.memory_box_head is not None:
            tokens = memory.tokens
            queries = model.memory_box_head.proj(tokens).view(*tokens.shape[:2], 5, -1)
            corners = model.decoder.logits(queries[:, :, :4], model.vocab.coord).argmax(-1)  # (B, S, 4)
            hits = []
            for index, image_masks in enumerate(masks):
                owners = cell_owners(image_masks, memory.grid, stride)
                covered = (owners >= 0).nonzero()[:, 0]
                boxes = torch.as_tensor(batch["boxes"][index], dtype=torch.float32).reshape(-1, 4)
                truth = quantize_boxes(boxes[owners[covered]], head.canvas, model.vocab.num_bins)
                hits.append(((corners[index, covered] - truth).abs() <= 2).float())
            result["memory_corners_within_2"] = [float(v) for v in torch.cat(hits).mean(0)]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder or checkpoint of a solver with an instance task")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sequences' padding and order")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--attention",
        action="store_true",
        help="also where the decoder looks (attention on each object's own cells) and what the memory knows",
    )
    args = parser.parse_args(argv)
    if args.images <= 0:
        parser.error("--images must be positive")
    result = probe(args.run, args.images, args.seed)
    looks = where_it_looks(args.run, args.images, args.seed) if args.attention else None
    if args.json:
        print(json.dumps(result if looks is None else {"accuracy": result, **looks}, indent=2))
        return 0
    print("| token | positions | accuracy | within 2 | image-blind guess |")
    print("|---|---:|---:|---:|---:|")
    for name, row in result.items():
        within = f"{100 * row['within_2']:.1f} %" if "within_2" in row else ""
        print(
            f"| {name} | {row['positions']} | {100 * row['accuracy']:.1f} % | {within} "
            f"| {100 * row['image_blind_guess']:.1f} % |"
        )
    if looks is not None:
        roles = list(looks["attention"][0])
        print(f"\nattention on the object's own cells (uniform: {100 * looks['uniform']:.1f} %)")
        print("| block | " + " | ".join(roles) + " |")
        print("|---|" + "---:|" * len(roles))
        for block, row in enumerate(looks["attention"]):
            print(f"| {block} | " + " | ".join(f"{100 * row[r]:.1f} %" for r in roles) + " |")
        by_object = ", ".join(f"{100 * v:.0f} %" for v in looks["x1_within_2_by_object"])
        print(f"\nx1 within 2 bins, first, second, ... object of a room: {by_object}")
        if looks["memory_corners_within_2"] is not None:
            corners = ", ".join(
                f"{n} {100 * v:.1f} %"
                for n, v in zip(("x1", "y1", "x2", "y2"), looks["memory_corners_within_2"])
            )
            print(f"\nmemory-box head, corners within 2 bins at the covered cells: {corners}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
