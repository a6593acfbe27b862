"""The Python API: load a trained solver, predict on images, get arrays back.

    import ait
    solver = ait.load("runs/my_run")            # a run folder, a checkpoint, or an original .pth
    result = solver.predict("room.jpg")         # also a PIL image, a uint8 (H, W, 3) array, a tensor, a list
    result.depth                                # float32 (H, W) metres at the input's resolution
    result.instances.boxes, .scores, .class_names, .masks   # xyxy input pixels; bool (N, H, W) masks
    result.save("predictions/")                 # depth .npy + 16-bit PNG, coloured depth, overlay

The preprocessing is the evaluation's: depth at the training crop's height, sliding windows and flip
averaging as `eval.*` says, resized back to the input; instances on the padded `model.canvas` image,
boxes and masks mapped back to the input's pixels. `ait predict` is a loop over `Solver.predict`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ait.config.schema import Config

__all__ = ["Instances", "Prediction", "Solver", "load"]

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor

OVERLAY_SCORE_THRESHOLD = 0.3  # instances drawn in overlays; every instance stays in the data
OVERLAY_MAX_INSTANCES = 20


@dataclass
class Instances:
    """The instances of one image, in its pixels; every array has one row per instance, best score first."""

    boxes: np.ndarray  # float32 (N, 4) xyxy
    scores: np.ndarray  # float32 (N,)
    labels: np.ndarray  # int64 (N,): the solver's contiguous class index
    category_ids: np.ndarray  # int64 (N,): the dataset's category id (COCO ids for COCO models)
    class_names: list[str]
    masks: np.ndarray | None = None  # bool (N, H, W); None for detection-only models

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index) -> Instances:
        """A subset, e.g. `instances[instances.scores > 0.5]` or `instances[:10]`."""
        keep = np.arange(len(self))[index]
        keep = np.atleast_1d(keep)
        return Instances(
            boxes=self.boxes[keep],
            scores=self.scores[keep],
            labels=self.labels[keep],
            category_ids=self.category_ids[keep],
            class_names=[self.class_names[i] for i in keep],
            masks=None if self.masks is None else self.masks[keep],
        )

    def rle(self) -> list[dict]:
        """The masks as COCO compressed RLE ({"size": [H, W], "counts": str}), one per instance."""
        from pycocotools import mask as mask_utils

        if self.masks is None:
            raise ValueError("this model predicts boxes only (task 'det'): there are no masks to encode")
        encoded = []
        for mask in self.masks:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            encoded.append(rle)
        return encoded

    def to_coco(self, image_id: int) -> list[dict]:
        """COCO results records (image_id, category_id, bbox xywh, score[, segmentation RLE])."""
        from ait_eval import detections_from_arrays

        return detections_from_arrays(
            int(image_id), self.boxes, self.scores, self.category_ids, masks=self.masks
        )


@dataclass
class Prediction:
    """What the solver predicts for one image."""

    image: np.ndarray  # uint8 (H, W, 3) RGB: the input as the solver saw it
    depth: np.ndarray | None = None  # float32 (H, W) metres; None for a model without the depth task
    instances: Instances | None = None  # None for a depth-only model
    source: str | None = None  # the file it came from, when it came from one

    def depth_png(self) -> np.ndarray:
        """Depth as uint16 millimetres (the NYU convention: 0 = no measurement, which a prediction never is)."""
        if self.depth is None:
            raise ValueError("this model predicts no depth")
        return np.clip(np.nan_to_num(self.depth, nan=0.0) * 1000.0, 0, 65535).round().astype(np.uint16)

    def depth_color(self) -> np.ndarray:
        """Depth as a uint8 (H, W, 3) colour image (near: light, far: dark), scaled to this image's range."""
        if self.depth is None:
            raise ValueError("this model predicts no depth")
        return colorize_depth(self.depth)

    def overlay(
        self, score_threshold: float = OVERLAY_SCORE_THRESHOLD, max_instances: int = OVERLAY_MAX_INSTANCES
    ) -> np.ndarray:
        """uint8 (H, W, 3): the image with masks, boxes, class names and scores of the confident instances."""
        if self.instances is None:
            raise ValueError("this model predicts no instances")
        return draw_instances(self.image, self.instances, score_threshold, max_instances)

    def plot(self, score_threshold: float = OVERLAY_SCORE_THRESHOLD):
        """A PIL image: the instance overlay (or the input) beside the coloured depth."""
        from PIL import Image

        panels = [self.overlay(score_threshold) if self.instances is not None else self.image]
        if self.depth is not None:
            panels.append(self.depth_color())
        return Image.fromarray(np.concatenate(panels, axis=1))

    def save(self, out_dir: str | os.PathLike, name: str | None = None) -> list[Path]:
        """Write NAME_depth.npy (float32 metres), NAME_depth.png (uint16 mm), NAME_depth_color.png and
        NAME_instances.png (overlay) into out_dir, for the tasks the model has; returns the paths.

        NAME defaults to the source file's stem. A file is replaced atomically; the source image never is.
        """
        if name is None:
            if self.source is None:
                raise ValueError("this prediction has no source file: pass save(out_dir, name=...)")
            name = Path(self.source).stem
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        targets = output_files(out, name, depth=self.depth is not None, instances=self.instances is not None)
        if self.source is not None:
            source = Path(self.source).resolve()
            for target in targets.values():
                if target.resolve() == source:
                    raise ValueError(
                        f"saving to {target} would replace the input image: choose another folder"
                    )
        for kind, target in targets.items():
            _atomic_write(target, lambda handle, kind=kind: _write_output(self, kind, handle))
        return list(targets.values())


def output_files(out_dir: Path, name: str, *, depth: bool, instances: bool) -> dict[str, Path]:
    """{kind: path} that `Prediction.save` writes for a prediction with depth and/or instances."""
    files = {}
    if depth:
        files["depth_npy"] = out_dir / f"{name}_depth.npy"
        files["depth_png"] = out_dir / f"{name}_depth.png"
        files["depth_color"] = out_dir / f"{name}_depth_color.png"
    if instances:
        files["instances"] = out_dir / f"{name}_instances.png"
    return files


def _write_output(prediction: Prediction, kind: str, handle) -> None:
    from PIL import Image

    # zlib level 1: half the default's encoding time for a photo overlay 15 % larger (encoding at the default
    # level was half of `ait predict`'s time per image on the CPU)
    if kind == "depth_npy":
        np.save(handle, prediction.depth.astype(np.float32))
    elif kind == "depth_png":
        Image.fromarray(prediction.depth_png()).save(handle, format="PNG", compress_level=1)
    elif kind == "depth_color":
        Image.fromarray(prediction.depth_color()).save(handle, format="PNG", compress_level=1)
    else:
        Image.fromarray(prediction.overlay()).save(handle, format="PNG", compress_level=1)


def _atomic_write(path: Path, write) -> None:
    """write(handle) into a hidden temp file, then os.replace: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """float (H, W) metres -> uint8 (H, W, 3); invalid (<= 0 or non-finite) pixels black."""
    import matplotlib

    valid = np.isfinite(depth) & (depth > 0)
    low, high = (float(depth[valid].min()), float(depth[valid].max())) if valid.any() else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(depth) - low) / max(high - low, 1e-6), 0.0, 1.0)
    # magma_r without its near-black far end, so far surfaces never look like invalid (black) pixels
    colours = matplotlib.colormaps["magma_r"](scaled * 0.8)[..., :3]
    colours[~valid] = 0.0
    return (colours * 255).round().astype(np.uint8)


def draw_instances(
    image: np.ndarray, instances: Instances, score_threshold: float, max_instances: int
) -> np.ndarray:
    """The image with the confident instances' masks (translucent), boxes and "name score" labels."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    order = [i for i in np.argsort(-instances.scores) if instances.scores[i] >= score_threshold]
    order = order[:max_instances]
    palette = matplotlib.colormaps["tab20"]
    canvas = image.astype(np.float32)
    colours = [tuple(int(255 * c) for c in palette(rank % 20)[:3]) for rank in range(len(order))]
    if instances.masks is not None:
        for colour, i in zip(colours, order, strict=True):
            mask = instances.masks[i]
            canvas[mask] = 0.55 * canvas[mask] + 0.45 * np.asarray(colour, np.float32)
    picture = Image.fromarray(canvas.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    try:  # a label readable at any resolution (Pillow >= 10.1 scales its built-in font)
        font = ImageFont.load_default(size=max(10, min(image.shape[:2]) // 40))
    except TypeError:
        font = ImageFont.load_default()
    for colour, i in zip(colours, order, strict=True):
        x1, y1, x2, y2 = (float(v) for v in instances.boxes[i])
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=max(1, round(min(image.shape[:2]) / 200)))
        text = f"{instances.class_names[i]} {instances.scores[i]:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        top_y = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle((x1, top_y, x1 + right - left + 2, top_y + bottom - top + 2), fill=colour)
        draw.text((x1 + 1, top_y + 1 - (top - y1)), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


# ------------------------------------------------------------------------------------------------ inputs
def as_rgb_array(image: ImageInput) -> tuple[np.ndarray, str | None]:
    """One image of any accepted kind -> (uint8 (H, W, 3) RGB, source path or None); ValueError otherwise."""
    from PIL import Image

    from ait.engine.inference import MIN_IMAGE_SIDE, load_image

    source = None
    if isinstance(image, (str, os.PathLike)):
        source = str(image)
        array = load_image(image)
    elif isinstance(image, Image.Image):
        from ait_data.io import to_rgb  # 16-bit grey, alpha, palette, CMYK: the picture they show

        array = to_rgb(image)
    elif isinstance(image, torch.Tensor):
        array = _tensor_to_array(image)
    elif isinstance(image, np.ndarray):
        array = _numpy_to_array(image)
    else:
        raise ValueError(
            "expected an image path, a PIL image, a uint8 (H, W, 3) array or a (3, H, W) tensor, "
            f"received {type(image).__name__}"
        )
    height, width = array.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        what = source or f"the {type(image).__name__} image"
        raise ValueError(
            f"{what} is {width}x{height} pixels; the solver takes images of at least {MIN_IMAGE_SIDE} pixels a side"
        )
    return np.require(array, requirements=("C_CONTIGUOUS", "WRITEABLE")), source  # torch needs writable


def _numpy_to_array(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an image array (H, W, 3) (or (H, W), (H, W, 4)), received {array.shape}")
    array = array[..., :3]
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
            raise ValueError("a float image array must hold values in [0, 1] (uint8 arrays hold 0..255)")
        return (array * 255.0).round().astype(np.uint8)
    raise ValueError(f"expected a uint8 or float [0, 1] image array, received dtype {array.dtype}")


def _tensor_to_array(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(
            f"expected an image tensor (3, H, W) (a batch: (B, 3, H, W)), received {tuple(tensor.shape)}"
        )
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()  # numpy has no bfloat16
    return _numpy_to_array(tensor.permute(1, 2, 0).numpy())


def _flatten_inputs(images: ImageInput | Sequence[ImageInput]) -> tuple[list[ImageInput], bool]:
    """(list of single images, whether the caller passed several)."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images), True
    if isinstance(images, (list, tuple)):
        return list(images), True
    return [images], False


# ------------------------------------------------------------------------------------------------ solver
class Solver:
    """A trained task-solver ready to predict: `ait.load(...)` builds one.

    `model` is the torch module (eval mode), `config` the run's `Config`, `categories` the
    [{"id", "name"}] of its class labels.
    """

    def __init__(self, model: torch.nn.Module, config: Config, source: str | None = None):
        from ait.categories import categories_for

        self.model = model.eval()
        self.config = config
        self.source = source
        self.categories = categories_for(config)
        self.tasks = tuple(config.model.tasks)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        return (
            f"Solver({self.config.name!r}, tasks={self.tasks}, device={self.device}, source={self.source!r})"
        )

    def predict(
        self, images: ImageInput | Sequence[ImageInput], batch_size: int = 1
    ) -> Prediction | list[Prediction]:
        """Predict one image (returns a `Prediction`) or several (a list, run `batch_size` at a time; the
        default 1 gives the numbers `ait predict` gives by default, a larger batch is faster on a GPU).

        Instances are sampled (nucleus sampling, `model.top_p`) with a generator seeded from the config's
        seed at each batch, so a result depends only on the images of its batch: the same call gives the
        same numbers every time.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, received {batch_size}")
        items, several = _flatten_inputs(images)
        results: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            arrays = [as_rgb_array(item) for item in items[start : start + batch_size]]
            results.extend(self.predict_arrays([a for a, _ in arrays], [s for _, s in arrays]))
        return results if several else results[0]

    @torch.no_grad()
    def predict_arrays(
        self, arrays: list[np.ndarray], sources: list[str | None] | None = None
    ) -> list[Prediction]:
        """One batch of uint8 (H, W, 3) arrays (any sizes) -> predictions."""
        from ait.engine.inference import check_finite_predictions

        sources = sources or [None] * len(arrays)
        depths = self._predict_depth(arrays, sources) if "depth" in self.tasks else [None] * len(arrays)
        instances: list[Instances | None] = [None] * len(arrays)
        if any(task in self.tasks for task in ("insseg", "det")):
            instances = self._predict_instances(arrays)
        predictions = []
        for array, depth, found, source in zip(arrays, depths, instances, sources, strict=True):
            if found is not None:
                check_finite_predictions(torch.from_numpy(found.boxes), f"boxes of {source or 'the image'}")
            predictions.append(Prediction(image=array, depth=depth, instances=found, source=source))
        return predictions

    def _predict_depth(self, arrays: list[np.ndarray], sources: list[str | None]) -> list[np.ndarray]:
        """The evaluation's protocol per image: resize to the training crop's height (width: one window, or
        the image's aspect rounded to the backbone stride with sliding windows), windows + flip, resize back."""
        from ait.engine.inference import check_finite_predictions
        from ait.evaluation import depth_window_width, predict_depth_tta

        cfg = self.config
        window = depth_window_width(cfg)
        net_h = int(cfg.data.crop_size[0])
        groups: dict[tuple[int, int], list[int]] = {}
        resized = []
        for index, array in enumerate(arrays):
            height, width = array.shape[:2]
            net_w = window
            if cfg.eval.sliding_window:
                net_w = max(window, round(width * net_h / height / 32) * 32)
            rgb = torch.from_numpy(array).permute(2, 0, 1).float().div(255.0)[None]
            resized.append(F.interpolate(rgb, size=(net_h, net_w), mode="bilinear", align_corners=False))
            groups.setdefault((net_h, net_w), []).append(index)
        out: list[np.ndarray | None] = [None] * len(arrays)
        for members in groups.values():
            batch = torch.cat([resized[i] for i in members]).to(self.device)
            pred = predict_depth_tta(
                self.model.predict_depth,
                batch,
                window_width=window,
                sliding_window=cfg.eval.sliding_window,
                flip=cfg.eval.flip,
            )
            for row, index in enumerate(members):
                check_finite_predictions(pred[row], f"depth of {sources[index] or 'the image'}")
                height, width = arrays[index].shape[:2]
                full = F.interpolate(
                    pred[row : row + 1].float().cpu(),
                    size=(height, width),
                    mode="bilinear",
                    align_corners=False,
                )
                # as the evaluation protocol does: clipped below at min_depth (a prediction is never "no
                # measurement", which 0 means in the NYU PNG convention)
                out[index] = full.clamp(min=cfg.eval.min_depth)[0, 0].numpy().astype(np.float32)
        return out

    def _predict_instances(self, arrays: list[np.ndarray]) -> list[Instances]:
        from ait.evaluation import instance_decoding, predict_instances_fused
        from ait_data import InstanceTransform

        cfg = self.config
        transform = InstanceTransform(train=False, canvas=cfg.model.canvas, normalize=True)
        prepared = []
        for array in arrays:
            height, width = array.shape[:2]
            sample = {
                "image": array,
                "boxes": np.zeros((0, 4), np.float32),
                "labels": np.zeros((0,), np.int64),
                "masks": np.zeros((0, height, width), bool),
                "image_id": 0,
            }
            prepared.append(transform(sample))
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        # as the solver's evaluation decodes (eval.instance_samples / instance_flip, fused; one decode by default)
        results = predict_instances_fused(
            self.model,
            torch.stack([p["image"] for p in prepared]).to(self.device),
            scale=[float(p["scale"]) for p in prepared],
            orig_size=[tuple(a.shape[:2]) for a in arrays],
            image_size=[tuple(p["image_size"]) for p in prepared],
            generator=generator,
            **instance_decoding(cfg.eval),
        )
        return [self._instances(result) for result in results]

    def _instances(self, result: dict) -> Instances:
        labels = result["labels"].cpu().numpy().astype(np.int64)
        scores = result["scores"].float().cpu().numpy()
        keep = labels >= 0  # the noise class is never a detection
        order = np.argsort(-scores[keep], kind="stable")
        index = np.flatnonzero(keep)[order]
        labels = labels[index]
        masks = result.get("masks")
        return Instances(
            boxes=result["boxes"].float().cpu().numpy()[index].astype(np.float32),
            scores=scores[index].astype(np.float32),
            labels=labels,
            category_ids=np.asarray([self.categories[i]["id"] for i in labels], dtype=np.int64),
            class_names=[self.categories[i]["name"] for i in labels],
            masks=None if masks is None else masks.cpu().numpy().astype(bool)[index],
        )


def load(
    source: str | os.PathLike,
    device: str | torch.device | None = None,
    *,
    config: str | Config | None = None,
    cfg_options: Iterable[str] | dict | None = None,
) -> Solver:
    """A trained solver from a run folder (its newest checkpoint), a checkpoint file or an original release
    file, on `device` (default: CUDA when available).

    The run's own config is used; `config` (a registered name or a `Config`: needed for an original file of
    a w/o-soft-token ablation, whose weights fit the soft config too) replaces it, and `cfg_options`
    (["model.top_p=0.4", "eval.flip=false"] or {"model.top_p": 0.4}) change it on top.
    """
    from ait.config import ConfigError, config_kind, create_config
    from ait.engine.inference import load_solver

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but CUDA is not available on this machine: use device='cpu'"
        )
    if isinstance(config, str):
        if config_kind(config) != "solver":
            raise ConfigError(f"{config!r} is a tokenizer config, not a task-solver config")
        config = create_config(config)
    overrides = dict(cfg_options) if isinstance(cfg_options, dict) else list(cfg_options or [])
    model, run_cfg = load_solver(source, config, device=device, overrides=overrides or None)
    return Solver(model, run_cfg, source=str(source))
