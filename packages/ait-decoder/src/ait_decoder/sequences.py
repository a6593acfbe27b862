"""Task outputs <-> token sequences: depth code grids and instance lists (Pix2Seq-style).

Instance sequence, per object: ``[x1 y1 x2 y2 class m1 .. m16]`` (21 tokens; detection: the first 5).
Coordinates are quantised to ``vocab.num_bins`` bins of a square ``canvas``:
``bin = round(x / canvas · num_bins)`` clamped to ``[0, num_bins]``, back as ``bin · canvas / num_bins``.

Boxes outside the canvas are **clipped** to ``[0, canvas]`` (both in ``pad_instances`` and by the
clamp of the quantiser), the same as the original; padding boxes are clipped to the real image area; a box with ``x2 < x1`` or ``y2 < y1`` or a
non-finite coordinate is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ait_decoder.vocab import VocabLayout

REAL, DUPLICATE, NOISE = 0, 1, 2
JITTER_RANGE = 0.1  # duplicates: corners move by trunc-normal · (w, h) · 0.1 / 2, as in Pix2Seq


# --- depth ---------------------------------------------------------------------------------------------
def depth_to_sequence(codes: torch.Tensor, vocab: VocabLayout) -> torch.Tensor:
    """Depth token grid ``(B, h, w)`` of codebook indices -> vocabulary ids ``(B, h*w)`` (row-major)."""
    if codes.ndim != 3:
        raise ValueError(f"depth codes must be (B, h, w), received shape {tuple(codes.shape)}")
    _check_codes(codes, vocab.num_depth_codes, "depth codes")
    return codes.long().flatten(1) + vocab.depth_codes[0]


def sequence_to_depth(ids: torch.Tensor, vocab: VocabLayout, grid: tuple[int, int]) -> torch.Tensor:
    """Vocabulary ids ``(B, h*w)`` -> depth codebook indices ``(B, h, w)``."""
    height, width = grid
    if ids.ndim != 2 or ids.shape[1] != height * width:
        raise ValueError(
            f"depth sequence must be (B, {height * width}) for a {height}×{width} grid, received {tuple(ids.shape)}"
        )
    lo, hi = vocab.depth_codes
    _check_in_range(ids, lo, hi, "depth sequence ids (depth codebook range)")
    return (ids - lo).view(ids.shape[0], height, width)


# --- boxes ---------------------------------------------------------------------------------------------
def quantize_boxes(boxes: torch.Tensor, canvas: float, num_bins: int) -> torch.Tensor:
    """Pixel coordinates -> bins ``round(x / canvas · num_bins)``, clamped to ``[0, num_bins]`` (long)."""
    return torch.round(boxes / canvas * num_bins).long().clamp(0, num_bins)


def dequantize_boxes(bins: torch.Tensor, canvas: float, num_bins: int) -> torch.Tensor:
    """Bins -> pixel coordinates ``bin · canvas / num_bins`` (float32)."""
    return bins.float() * (canvas / num_bins)


@dataclass
class PaddedInstances:
    """Objects of one image padded Pix2Seq-style to ``max_objects``.

    ``kind``: 0 real / 1 duplicate (jittered copy of a real box) / 2 noise (a random "bad" box).
    ``source``: the index (into the *input* boxes) of the real object a row is, or a duplicate copies; -1
    for noise boxes. ``labels``: the real label for real objects and for duplicates (their source's, for
    information: the sequence labels every padding object "noise"), -1 for noise boxes.
    Rows: the real objects first in a random order, then the padding objects in a random order.
    """

    boxes: torch.Tensor  # (M, 4) float32 canvas pixels, clipped to the canvas
    labels: torch.Tensor  # (M,) int64
    kind: torch.Tensor  # (M,) int64
    source: torch.Tensor  # (M,) int64

    @property
    def num_real(self) -> int:
        return int((self.kind == REAL).sum())


def _trunc_normal(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal truncated to [-2, 2] (timm's ``trunc_normal_`` default), seeded."""
    return torch.nn.init.trunc_normal_(
        torch.empty(shape), mean=0.0, std=1.0, a=-2.0, b=2.0, generator=generator
    )


def _check_boxes(boxes: torch.Tensor, labels: torch.Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) xyxy, received shape {tuple(boxes.shape)}")
    if labels.ndim != 1 or labels.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"labels must be ({boxes.shape[0]},) to match the boxes, received {tuple(labels.shape)}"
        )
    if not torch.isfinite(boxes).all():
        raise ValueError("boxes must be finite; received NaN or inf coordinates")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError("boxes must be xyxy with x2 >= x1 and y2 >= y1; received an inverted box")


OBJECT_ORDERS = ("random", "area", "raster")
# how many of a sequence's free slots hold jittered duplicates of real objects (see ``pad_instances``)
DUPLICATE_BOXES = ("uniform", "none")


def object_order(
    boxes: torch.Tensor, order: str, canvas: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of ``boxes`` (N, 4) xyxy in sequence order (see ``pad_instances``); ties keep input order."""
    if order == "random":
        return torch.randperm(boxes.shape[0], generator=generator)
    if order == "area":
        area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
        return torch.sort(-area, stable=True).indices
    if order == "raster":
        row = torch.div(boxes[:, 1].clamp(min=0), canvas / 8, rounding_mode="floor")
        key = row * (4 * canvas + 1) + boxes[:, 0].clamp(min=0, max=4 * canvas)
        return torch.sort(key, stable=True).indices
    raise ValueError(f"order must be one of {OBJECT_ORDERS}, received {order!r}")


def pad_instances(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    max_objects: int,
    canvas: float,
    generator: torch.Generator | None = None,
    image_size: tuple[float, float] | None = None,
    order: str = "random",
    duplicates: str = "uniform",
) -> PaddedInstances:
    """Order the real objects and pad them to ``max_objects`` with duplicates and noise boxes.

    ``order``: ``"random"`` (the original: a new permutation per sequence), ``"area"`` (largest box first)
    or ``"raster"`` (by the top-left corner: rows of ``canvas / 8`` pixels from the top, then left to right).
    A fixed order gives a young model one right answer for the first object instead of any of them.
    ``duplicates``: ``"uniform"`` (the original, below) or ``"none"`` (every free slot a bad box: no padding
    slot then sits on a real object with the noise class as its target).

    As Pix2Seq / the original (``insseg_head.py`` ``build_input_seq``): the number of duplicates is uniform in
    ``[0, free slots]`` (none without a real object); duplicates and shifted boxes take their source
    without replacement from the real objects tiled ``free // num_real + 1`` times; the rest are "bad" boxes
    drawn from a pool of real boxes moved to a random centre (same size) and random boxes (centre uniform, half-sizes
    |trunc-normal|/4 of the image width and height separately). ``image_size`` (H, W) is the real image area
    at the top-left of the canvas, before its zero padding (default: the whole canvas): bad-box centres are
    uniform over it, and every padding box (duplicates too) is clipped to it. Real boxes are clipped to
    ``[0, canvas]``. More real objects than ``max_objects`` is a ``ValueError`` (drop some first; the
    sequence has no room for them).
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).cpu()
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    _check_boxes(boxes, labels)
    if (labels < 0).any():
        raise ValueError(f"labels must be >= 0, received minimum {int(labels.min())}")
    num_real = boxes.shape[0]
    if num_real > max_objects:
        raise ValueError(
            f"{num_real} objects do not fit a sequence of max_objects={max_objects}; drop objects before padding"
        )
    if duplicates not in DUPLICATE_BOXES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_BOXES}, received {duplicates!r}")
    if image_size is None:
        image_size = (canvas, canvas)
    height, width = float(image_size[0]), float(image_size[1])
    if not (0 < height <= canvas and 0 < width <= canvas):
        raise ValueError(f"image_size (H, W) must lie in (0, canvas={canvas}], received {tuple(image_size)}")
    canvas_xyxy = torch.full((4,), float(canvas))
    image_xyxy = torch.tensor([width, height, width, height])
    order = object_order(boxes, order, canvas, generator)
    real_boxes, real_labels = boxes[order].clamp(min=0).minimum(canvas_xyxy), labels[order]

    free = max_objects - num_real
    num_dup = 0
    if num_real and duplicates == "uniform":
        num_dup = int(torch.randint(0, free + 1, (1,), generator=generator))
    num_bad = free - num_dup

    # Sources are drawn as the original does: without replacement from the real objects tiled
    # free // num_real + 1 times (so every object is used about equally often).
    tiled = order.repeat(free // num_real + 1) if num_real else order[:0]

    # Duplicates: jittered copies of real objects.
    dup_source = tiled[torch.randperm(tiled.shape[0], generator=generator)[:num_dup]]
    dup = boxes[dup_source]
    size = torch.stack([dup[:, 2] - dup[:, 0], dup[:, 3] - dup[:, 1]] * 2, dim=-1)
    dup = dup + size * _trunc_normal((num_dup, 4), generator) / 2 * JITTER_RANGE

    # Bad boxes: shifted real boxes (same size, centre uniform over the image) and random boxes (centre
    # uniform over the image, half-sizes |trunc-normal|/4 of its width and height), mixed and subsampled.
    shifted = boxes[tiled[torch.randperm(tiled.shape[0], generator=generator)[:num_bad]]]
    centre = torch.rand((shifted.shape[0], 2), generator=generator) * image_xyxy[:2]
    half = (shifted[:, 2:] - shifted[:, :2]) / 2
    shifted = torch.cat([centre - half, centre + half], dim=-1)
    centre = torch.rand((num_bad, 2), generator=generator)
    half = _trunc_normal((num_bad, 2), generator).abs() / 4
    random_boxes = torch.cat([centre - half, centre + half], dim=-1) * image_xyxy
    pool = torch.cat([random_boxes, shifted])
    bad = pool[torch.randperm(pool.shape[0], generator=generator)[:num_bad]]

    pad_boxes = torch.cat([dup, bad]).clamp(min=0).minimum(image_xyxy)
    pad_kind = torch.cat([torch.full((num_dup,), DUPLICATE), torch.full((num_bad,), NOISE)])
    pad_source = torch.cat([dup_source, torch.full((num_bad,), -1)])
    pad_labels = torch.cat([labels[dup_source], torch.full((num_bad,), -1)])
    shuffle = torch.randperm(free, generator=generator)
    return PaddedInstances(
        boxes=torch.cat([real_boxes, pad_boxes[shuffle]]),
        labels=torch.cat([real_labels, pad_labels[shuffle]]),
        kind=torch.cat([torch.full((num_real,), REAL), pad_kind[shuffle]]).long(),
        source=torch.cat([order, pad_source[shuffle]]).long(),
    )


def instances_to_sequence(
    padded: PaddedInstances,
    mask_codes: torch.Tensor | None,
    vocab: VocabLayout,
    canvas: float,
    generator: torch.Generator | None = None,
    corrupt_class_p: float | None = 0.5,
    box_weight: float = 1.0,
    class_weight: float = 1.0,
    mask_weight: float = 0.2,
    supervise_duplicate_masks: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Serialise padded objects -> ``(input_ids, target_ids, weights)``, each ``(M * 21,)``.

    ``mask_codes (M, 16)``: mask codebook indices of every row (real: its mask's crop; duplicates: their
    jittered crop; noise: an empty mask); ``None`` builds a detection sequence (5 tokens per object).

    Targets: real objects carry their boxes, class and mask codes; padding objects (duplicates and
    noise boxes alike, as in the original) carry their own boxes and codes but the *noise* class.
    Weights: real box tokens ``box_weight``, class tokens ``class_weight`` for every object, real mask
    tokens ``mask_weight``; everything else of a padding object 0 (only its class token is supervised).
    ``supervise_duplicate_masks=True`` also supervises duplicates' mask tokens (the original's
    ``sup_neg_mask`` option). Input ids equal the targets except the class tokens: each is replaced with
    probability ``corrupt_class_p`` by a uniformly random class, otherwise by the noise token (the
    original's ``rand_n_fake_cls``); ``corrupt_class_p=None`` keeps the true classes.
    """
    num_objects = padded.boxes.shape[0]
    task = "det" if mask_codes is None else "insseg"
    if task == "insseg":
        expected = (num_objects, vocab.tokens_per_mask)
        if tuple(mask_codes.shape) != expected:
            raise ValueError(f"mask_codes must be {expected}, received {tuple(mask_codes.shape)}")
        _check_codes(mask_codes, vocab.num_mask_codes, "mask codes")
    if ((padded.kind == REAL) & ((padded.labels < 0) | (padded.labels >= vocab.num_classes))).any():
        raise ValueError(
            f"real labels must lie in [0, {vocab.num_classes}), received {padded.labels.tolist()}"
        )
    if corrupt_class_p is not None and not 0.0 <= corrupt_class_p <= 1.0:
        raise ValueError(f"corrupt_class_p must be in [0, 1] or None, received {corrupt_class_p}")

    real = padded.kind == REAL
    box_ids = quantize_boxes(padded.boxes, canvas, vocab.num_bins) + vocab.coord[0]
    class_ids = torch.where(real, padded.labels.clamp(min=0) + vocab.classes[0], vocab.noise_id)
    columns = [box_ids, class_ids[:, None]]
    box_w = torch.where(real, box_weight, 0.0)[:, None].expand(num_objects, 4)
    weights = [box_w, torch.full((num_objects, 1), class_weight)]
    if task == "insseg":
        columns.append(mask_codes.long().cpu() + vocab.mask_codes[0])
        supervised = real | ((padded.kind == DUPLICATE) & supervise_duplicate_masks)
        weights.append(
            torch.where(supervised, mask_weight, 0.0)[:, None].expand(num_objects, vocab.tokens_per_mask)
        )
    target = torch.cat(columns, dim=1)
    weight = torch.cat(weights, dim=1).float()

    inputs = target.clone()
    if corrupt_class_p is not None:
        random_class = (
            torch.randint(0, vocab.num_classes, (num_objects,), generator=generator) + vocab.classes[0]
        )
        use_random = torch.rand((num_objects,), generator=generator) < corrupt_class_p
        inputs[:, 4] = torch.where(use_random, random_class, vocab.noise_id)
    return inputs.flatten(), target.flatten(), weight.flatten()


def parse_instances(
    ids: torch.Tensor,
    logits: torch.Tensor | None,
    vocab: VocabLayout,
    canvas: float,
    task: str = "insseg",
) -> dict[str, torch.Tensor]:
    """Predicted sequences -> boxes, labels, scores, mask codes: the one parser of instance sequences (the
    task-solver's ``InstanceHead.parse`` calls it, then rescales the boxes and decodes the masks).

    ``ids (T,)`` (one sequence) or ``(B, T)`` (a batch), with its ``logits (T, V)`` / ``(B, T, V)`` or None;
    results carry the same leading batch dimension, on the ids' device. Per object (M = T / tokens per
    object): ``boxes (M, 4)``: xyxy ``bin · canvas / num_bins`` in canvas pixels (divide by the resize scale
    for the original image), corners ordered (``x1 <= x2``, ``y1 <= y2``: sampled corners may come out
    swapped). ``labels (M,)``: class index. ``scores (M,)``: the probability of the predicted class under a
    softmax over the class logits plus the noise logit (noise column dropped, not renormalised); ones when
    ``logits`` is None. ``mask_codes (M, 16)`` (insseg only): mask codebook indices.
    An object whose class token is the noise id (a target sequence's padding, or an unrestricted
    prediction) gets label -1 and score 0. Every other position must hold an id of its range (what
    restricted decoding produces), else ``ValueError``.
    """
    if ids.ndim not in (1, 2):
        raise ValueError(
            f"parse_instances takes one sequence (T,) or a batch (B, T), received shape {tuple(ids.shape)}"
        )
    single = ids.ndim == 1
    batch_ids = ids[None] if single else ids
    num_seq, length = batch_ids.shape
    allowed = vocab.allowed_ranges(task, length).to(ids.device)  # raises unless whole objects
    vocab.check_ids(batch_ids, "instance sequence ids")
    batch_ids = batch_ids.long()
    per_object = vocab.tokens_per_object(task)
    class_position = torch.arange(length, device=ids.device) % per_object == 4
    outside = ((batch_ids < allowed[:, 0]) | (batch_ids >= allowed[:, 1])) & ~(
        class_position & (batch_ids == vocab.noise_id)
    )
    if outside.any():
        b, t = (int(v) for v in outside.nonzero()[0])
        where = f"position {t}" if single else f"sequence {b}, position {t}"
        raise ValueError(
            f"{where} of the {task} sequence must hold an id in [{int(allowed[t, 0])}, {int(allowed[t, 1])}), "
            f"received {int(batch_ids[b, t])}"
        )
    objects = batch_ids.view(num_seq, -1, per_object)
    is_noise = objects[..., 4] == vocab.noise_id
    corners = dequantize_boxes(objects[..., :4] - vocab.coord[0], canvas, vocab.num_bins)
    result = {
        "boxes": torch.cat(
            [
                torch.minimum(corners[..., :2], corners[..., 2:]),
                torch.maximum(corners[..., :2], corners[..., 2:]),
            ],
            dim=-1,
        ),
        "labels": torch.where(is_noise, -1, objects[..., 4] - vocab.classes[0]),
    }
    if logits is None:
        result["scores"] = torch.where(is_noise, 0.0, 1.0)
    else:
        expected = (length, vocab.size) if single else (num_seq, length, vocab.size)
        if tuple(logits.shape) != expected:
            raise ValueError(f"logits must be {expected}, received {tuple(logits.shape)}")
        # only the class positions' logits are read (and cast): a (B, M, V) slice, wherever logits live
        class_logits = logits.detach().reshape(num_seq, -1, per_object, vocab.size)[:, :, 4].float()
        lo, hi = vocab.classes
        with_noise = torch.cat(
            [class_logits[..., lo:hi], class_logits[..., vocab.noise_id : vocab.noise_id + 1]], dim=-1
        )
        probs = torch.softmax(with_noise, dim=-1)[..., :-1]
        scores = probs.gather(-1, result["labels"].clamp(min=0)[..., None].to(probs.device))[..., 0]
        result["scores"] = torch.where(is_noise.to(scores.device), 0.0, scores).to(ids.device)
    if task == "insseg":
        result["mask_codes"] = objects[..., 5:] - vocab.mask_codes[0]
    return {key: value[0] for key, value in result.items()} if single else result


# --- helpers -------------------------------------------------------------------------------------------
def _check_codes(codes: torch.Tensor, num_codes: int, what: str) -> None:
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"{what} must be integer codebook indices, received dtype {codes.dtype}")
    _check_in_range(codes, 0, num_codes, f"{what} (codebook of {num_codes})")


def _check_in_range(values: torch.Tensor, lo: int, hi: int, what: str) -> None:
    if values.numel() and (int(values.min()) < lo or int(values.max()) >= hi):
        raise ValueError(
            f"{what} must lie in [{lo}, {hi}), received values in [{int(values.min())}, {int(values.max())}]"
        )
