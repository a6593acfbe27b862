"""Joint augmentation of image, depth, boxes and masks (torchvision.transforms.v2 functional ops on tv_tensors).

Random parameters are drawn here, from one ``torch.Generator`` per transform when a ``seed`` is given (so a
seeded run is reproducible), else from torch's global RNG (which DataLoader seeds differently per worker).
The geometric ops themselves are torchvision's, applied to ``tv_tensors`` so boxes and masks follow the image:
depth maps travel as ``tv_tensors.Mask`` (nearest-neighbour whenever resized, never blended).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

COCO_MEAN = (123.675, 116.28, 103.53)
COCO_STD = (58.395, 57.12, 57.375)
DEPTH_KEYS = ("depth", "depth_complete")


def _as_tensor(value) -> torch.Tensor:
    return (
        torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, np.ndarray)
        else torch.as_tensor(value)
    )


def image_to_tensor(image) -> tv_tensors.Image:
    """uint8 (H,W,3) numpy or (3,H,W) tensor -> tv_tensors.Image (3,H,W), dtype kept."""
    t = _as_tensor(image)
    if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"image must be (H, W, 3) or (3, H, W), got shape {tuple(t.shape)}")
    return tv_tensors.Image(t.contiguous())


def to_tv_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A reader's numpy sample -> tv_tensors (image (3,H,W), depth (1,H,W) as Mask, boxes, masks)."""
    image = image_to_tensor(sample["image"])
    height, width = image.shape[-2:]
    out: dict[str, Any] = {"image": image}
    for key in DEPTH_KEYS:
        if key in sample:
            d = _as_tensor(sample[key]).float()
            d = d[None] if d.ndim == 2 else d
            if tuple(d.shape) != (1, height, width):
                raise ValueError(
                    f"{key} must be (H, W) = {(height, width)} like the image, got {tuple(d.shape)}"
                )
            out[key] = tv_tensors.Mask(d)
    if "boxes" in sample:
        boxes = _as_tensor(sample["boxes"]).float().reshape(-1, 4)
        out["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
    if "masks" in sample:
        masks = _as_tensor(sample["masks"]).to(torch.uint8)
        masks = masks.reshape(-1, *masks.shape[-2:]) if masks.numel() == 0 else masks
        if masks.ndim != 3 or tuple(masks.shape[-2:]) != (height, width):
            raise ValueError(
                f"masks must be (N, H, W) with H, W = {(height, width)}, got {tuple(masks.shape)}"
            )
        out["masks"] = tv_tensors.Mask(masks)
    for key, value in sample.items():
        if key not in out:
            out[key] = _as_tensor(value) if key in ("labels", "iscrowd") else value
    return out


_GEOMETRIC_KEYS = ("image", *DEPTH_KEYS, "boxes", "masks")


def hflip(sample: dict[str, Any]) -> dict[str, Any]:
    """Horizontal flip of every spatial entry of a tv sample."""
    return {k: F.horizontal_flip(v) if k in _GEOMETRIC_KEYS else v for k, v in sample.items()}


def crop(sample: dict[str, Any], top: int, left: int, height: int, width: int) -> dict[str, Any]:
    """Crop every spatial entry; boxes are shifted and clamped to the crop."""
    return {k: F.crop(v, top, left, height, width) if k in _GEOMETRIC_KEYS else v for k, v in sample.items()}


def resize(sample: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """Bilinear (antialiased) for the image, nearest for masks and depth, scaled boxes."""
    out = {}
    for k, v in sample.items():
        if k not in _GEOMETRIC_KEYS:
            out[k] = v
        elif isinstance(v, tv_tensors.Mask) and v.shape[0] == 0:
            out[k] = tv_tensors.Mask(v.new_zeros((0, height, width)))
        else:
            out[k] = F.resize(v, [height, width], antialias=True)
    return out


class _Random:
    """Parameter draws from a seeded generator (or torch's global RNG when seed is None).

    In a DataLoader worker the seeded generator is re-seeded once from (seed, worker id): every worker
    holds a copy of the transform, and identical copies would otherwise draw identical parameters.
    """

    def __init__(self, seed: int | None):
        self.seed = None if seed is None else int(seed)
        self.generator = None if seed is None else torch.Generator().manual_seed(self.seed)
        self._worker: int | None = None

    def _gen(self) -> torch.Generator | None:
        if self.generator is not None:
            info = torch.utils.data.get_worker_info()
            if info is not None and info.id != self._worker:
                self._worker = info.id
                self.generator.manual_seed(self.seed * 1_000_003 + info.id + 1)
        return self.generator

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=self._gen()).item()

    def chance(self, p: float) -> bool:
        return p > 0 and torch.rand((), generator=self._gen()).item() < p

    def randint(self, high: int) -> int:
        """Uniform in [0, high]."""
        return int(torch.randint(0, high + 1, (), generator=self._gen()))


def brightness_contrast(image: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """albumentations' RandomBrightnessContrast (brightness_by_max): ``image * alpha + beta``, clipped to
    [0, 1]: the contrast scales about 0 (not the mean), the brightness shifts by a fraction of the range."""
    return (image * alpha + beta).clamp(0, 1)


def _rgb_to_hsv(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(3, H, W) RGB in [0, 1] -> hue in [0, 1) (fraction of the circle), saturation, value (OpenCV's HSV)."""
    r, g, b = image.unbind(-3)
    maxc, minc = image.amax(-3), image.amin(-3)
    delta = maxc - minc
    saturation = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    safe = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(r == maxc, bc - gc, torch.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    return hue, saturation, maxc


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    sector = torch.floor(hue * 6.0)
    f = hue * 6.0 - sector
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * f)
    t = value * (1.0 - saturation * (1.0 - f))
    index = (sector.long() % 6).unsqueeze(0)
    options = {  # per sector: (r, g, b)
        "r": torch.stack((value, q, p, p, t, value)),
        "g": torch.stack((t, value, value, q, p, p)),
        "b": torch.stack((p, p, t, value, value, q)),
    }
    return torch.cat([options[c].gather(0, index) for c in "rgb"])


def shift_hsv(image: torch.Tensor, hue: float, saturation: float, value: float) -> torch.Tensor:
    """albumentations' HueSaturationValue: additive shifts in OpenCV's HSV, hue a fraction of the circle
    (wrapping), saturation and value fractions of their [0, 1] range (clipped)."""
    h, s, v = _rgb_to_hsv(image)
    h = (h + hue) % 1.0
    s = (s + saturation).clamp(0, 1)
    v = (v + value).clamp(0, 1)
    return _hsv_to_rgb(h, s, v)


class DepthTransform:
    """NYU-style depth augmentation (GLPDepth / AiT).

    Train: on every ``cutdepth_every``-th sample a CutDepth strip (RGB columns replaced by the depth, scaled
    by ``1 / max_depth`` into [0, 1] since our RGB is in [0, 1]) before the flip and crop; horizontal flip
    (p ``flip_p``); random crop to ``crop`` (h, w); then, with p 0.5 each, the original's albumentations
    defaults in their forms: brightness/contrast ``x * (1 + U(-0.2, 0.2)) + U(-0.2, 0.2)``
    (`brightness_contrast`), gamma ``x ** U(0.8, 1.2)``, and additive HSV shifts (`shift_hsv`): hue
    U(-20, 20)/180 of the circle, saturation U(-30, 30)/255, value U(-20, 20)/255. The original applies them
    to uint8 images (look-up tables that truncate to whole levels); here they act on [0, 1] floats.
    Test: no augmentation.

    Output: ``image`` float32 (3,H,W) in [0,1] (no mean/std), ``depth`` float32 (1,H,W), ``depth_complete``
    if the input has it, ``image_id``.
    """

    def __init__(
        self,
        train: bool = True,
        crop: tuple[int, int] | None = None,
        cutdepth_every: int = 4,
        seed: int | None = None,
        flip_p: float = 0.5,
        photometric_p: float = 0.5,
        max_depth: float = 10.0,
    ):
        if crop is not None and (len(crop) != 2 or min(crop) < 1):
            raise ValueError(f"crop must be (height, width) with positive sides or None, got {crop}")
        if cutdepth_every < 0:
            raise ValueError(f"cutdepth_every must be >= 0 (0 disables CutDepth), got {cutdepth_every}")
        self.train, self.crop = train, None if crop is None else (int(crop[0]), int(crop[1]))
        self.cutdepth_every, self.flip_p, self.photometric_p = cutdepth_every, flip_p, photometric_p
        self.max_depth = max_depth
        self.rng = _Random(seed)
        self.count = 0  # samples seen, for "every 4th sample" (GLPDepth's self.count)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        if "depth" not in sample:
            raise ValueError(f"DepthTransform needs a 'depth' entry, got keys {sorted(sample)}")
        tv = to_tv_sample({k: sample[k] for k in ("image", *DEPTH_KEYS) if k in sample})
        image = tv["image"]
        tv["image"] = tv_tensors.Image(image.float() / 255 if image.dtype == torch.uint8 else image.float())
        if self.train:
            if self.cutdepth_every and self.count % self.cutdepth_every == 0:
                tv["image"] = self._cutdepth(tv["image"], tv["depth"])
            self.count += 1
            if self.rng.chance(self.flip_p):
                tv = hflip(tv)
            if self.crop is not None:
                height, width = tv["image"].shape[-2:]
                ch, cw = self.crop
                if ch > height or cw > width:
                    raise ValueError(f"crop {self.crop} is larger than the image {(height, width)}")
                tv = crop(tv, self.rng.randint(height - ch), self.rng.randint(width - cw), ch, cw)
            tv["image"] = self._photometric(tv["image"])
        out = {k: v.as_subclass(torch.Tensor) for k, v in tv.items()}
        out["image_id"] = sample.get("image_id", -1)
        return out

    def _cutdepth(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        # GLPDepth: l = int(alpha * W), w = int(max((W - alpha * W) * beta * p, 1)), p = 0.75
        width = image.shape[-1]
        alpha, beta = self.rng.uniform(0, 1), self.rng.uniform(0, 1)
        left = int(alpha * width)
        strip = int(max((width - alpha * width) * beta * 0.75, 1))
        image = image.clone()
        image[:, :, left : left + strip] = (depth[:, :, left : left + strip] / self.max_depth).clamp(0, 1)
        return tv_tensors.Image(image)

    def _photometric(self, image: torch.Tensor) -> torch.Tensor:
        rng, p = self.rng, self.photometric_p
        if rng.chance(p):  # RandomBrightnessContrast(): contrast_limit 0.2, brightness_limit 0.2
            alpha = 1.0 + rng.uniform(-0.2, 0.2)
            image = brightness_contrast(image, alpha, rng.uniform(-0.2, 0.2))
        if rng.chance(p):  # RandomGamma(): gamma_limit (80, 120) / 100
            image = image.clamp(0, 1) ** rng.uniform(0.8, 1.2)
        if rng.chance(p):  # HueSaturationValue(): shift limits 20, 30, 20 of OpenCV's 180 / 255 / 255
            hue = rng.uniform(-20, 20) / 180
            image = shift_hsv(image, hue, rng.uniform(-30, 30) / 255, rng.uniform(-20, 20) / 255)
        return tv_tensors.Image(image)


class InstanceTransform:
    """COCO-style instance augmentation (Pix2Seq / AiT) onto a square ``canvas``.

    Train: scale jitter (the image is resized to fit a square of side ``canvas * s``, s ~ U(scale_range)),
    random crop to at most canvas x canvas, boxes narrower or shorter than ``min_box_size`` px (mmdet's
    ``FilterAnnotations(min_gt_bbox_wh=(0.01, 0.01))``) and instances whose mask became empty are dropped,
    horizontal flip (p ``flip_p``), pad to the canvas (bottom/right). Test: resize the longer side to the
    canvas, pad. Images are normalised with the COCO mean/std (``normalize=True``), padding is 0 after that.

    Output: ``image`` float32 (3,canvas,canvas), ``boxes`` float32 (N,4) canvas pixels, ``labels`` int64 (N,),
    ``masks`` uint8 (N,canvas,canvas), ``scale`` (resize factor), ``orig_size`` (H, W), ``image_size`` (h, w)
    (the resized, cropped image before the padding: the real image area), ``image_id``, and
    ``iscrowd`` (N,) when the input has it.
    The image is resized to whole pixels (round(H * scale), round(W * scale)) and boxes follow that resize
    exactly per axis, so ``boxes / scale`` recovers original pixels to within half a pixel.
    """

    def __init__(
        self,
        train: bool = True,
        canvas: int = 640,
        scale_range: tuple[float, float] = (0.1, 3.0),
        normalize: bool = True,
        flip_p: float = 0.5,
        min_box_size: float = 0.01,
        seed: int | None = None,
    ):
        if canvas < 1:
            raise ValueError(f"canvas must be a positive size, got {canvas}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.train, self.canvas, self.scale_range = train, int(canvas), tuple(scale_range)
        self.normalize, self.flip_p, self.min_box_size = normalize, flip_p, min_box_size
        self.rng = _Random(seed)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        for key in ("image", "boxes", "labels"):
            if key not in sample:
                raise ValueError(f"InstanceTransform needs '{key}', got keys {sorted(sample)}")
        keys = ("image", "boxes", "labels", "masks", "iscrowd")
        tv = to_tv_sample({k: sample[k] for k in keys if k in sample})
        height, width = tv["image"].shape[-2:]
        canvas = self.canvas
        if self.train:
            target = canvas * self.rng.uniform(*self.scale_range)
        else:
            target = canvas
        scale = min(target / height, target / width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        tv = resize(tv, new_h, new_w)
        if self.train:
            if new_h > canvas or new_w > canvas:
                ch, cw = min(new_h, canvas), min(new_w, canvas)
                tv = crop(tv, self.rng.randint(new_h - ch), self.rng.randint(new_w - cw), ch, cw)
            tv = self._drop_degenerate(tv)
            if self.rng.chance(self.flip_p):
                tv = hflip(tv)
        image = F.to_dtype(tv["image"], torch.float32, scale=False)
        if self.normalize:
            image = F.normalize(image, COCO_MEAN, COCO_STD)
        else:
            image = image / 255.0
        h, w = image.shape[-2:]
        padding = [0, 0, canvas - w, canvas - h]  # left, top, right, bottom
        out = {
            "image": F.pad(image.as_subclass(torch.Tensor), padding, fill=0.0),
            "boxes": tv["boxes"].as_subclass(torch.Tensor).float(),
            "labels": tv["labels"].long(),
            "scale": float(scale),
            "orig_size": (int(height), int(width)),
            "image_size": (int(h), int(w)),  # the real image area, top-left of the canvas
            "image_id": sample.get("image_id", -1),
        }
        if "iscrowd" in tv:
            out["iscrowd"] = tv["iscrowd"].bool()
        if "masks" in tv:
            out["masks"] = F.pad(tv["masks"].as_subclass(torch.Tensor), padding, fill=0)
        return out

    def _drop_degenerate(self, tv: dict[str, Any]) -> dict[str, Any]:
        boxes = tv["boxes"]
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & (
            (boxes[:, 3] - boxes[:, 1]) >= self.min_box_size
        )
        if "masks" in tv:
            keep &= tv["masks"].as_subclass(torch.Tensor).flatten(1).bool().any(dim=1)
        tv = dict(tv)
        tv["boxes"] = tv_tensors.wrap(boxes[keep], like=boxes)
        tv["labels"] = tv["labels"][keep]
        if "iscrowd" in tv:
            tv["iscrowd"] = tv["iscrowd"][keep]
        if "masks" in tv:
            tv["masks"] = tv_tensors.Mask(tv["masks"][keep])
        return tv


class TransformDataset(Dataset):
    """``dataset`` with ``transform`` applied to every sample (e.g. SyntheticRooms + DepthTransform)."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.transform(self.dataset[index])


VARIABLE_KEYS = ("boxes", "labels", "masks", "iscrowd")


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: per-instance entries (boxes, labels, masks, iscrowd) stay lists of tensors;
    other tensors/arrays of one shape are stacked; numbers become a tensor; tuples of ints (orig_size)
    a (B, k) tensor; anything else a list."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    keys = samples[0].keys()
    for s in samples[1:]:
        if s.keys() != keys:
            raise ValueError(f"samples have different keys: {sorted(keys)} vs {sorted(s.keys())}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if key in VARIABLE_KEYS:
            batch[key] = [_as_tensor(v) for v in values]
        elif all(isinstance(v, (torch.Tensor, np.ndarray)) for v in values):
            tensors = [_as_tensor(v) for v in values]
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) != 1:
                raise ValueError(
                    f"cannot stack '{key}': shapes differ {sorted(shapes)} (resize or crop first)"
                )
            batch[key] = torch.stack(tensors)
        elif all(isinstance(v, (bool, int, float, np.integer, np.floating)) for v in values):
            batch[key] = torch.tensor(values)
        elif all(isinstance(v, tuple) and all(isinstance(x, (int, np.integer)) for x in v) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch
