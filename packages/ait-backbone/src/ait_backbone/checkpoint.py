"""Loading SwinV2 weights from local files: the original SimMIM/AiT layout and timm's layout.

The original layout (Microsoft Swin-Transformer / SimMIM, e.g. `swin_v2_base_densesimmim.pth`, and AiT's
own backbone) differs from ours (timm's) in three ways, all handled here:

* prefixes: weights sit under `encoder.` (SimMIM, next to its `decoder.` and `encoder.mask_token`) or
  `backbone.` (a whole AiT model), possibly behind `module.` (DDP); the rest of such a file is not ours;
* the patch merging of stage i sits at the end of stage i (`layers.i.downsample`) where timm puts it at the
  start of stage i+1 (`layers.{i+1}.downsample`);
* the continuous-position-bias MLP is `rpe_mlp` in AiT's code (`cpb_mlp` in Microsoft's and timm's), and
  AiT's output norm of stage k is `norm{k}` where ours is `norm`.

Window-size changes need no weight surgery: SwinV2's position bias is an MLP of (log-spaced) relative
coordinates, so `cpb_mlp` transfers to any window; the coordinate tables and index buffers
(`relative_coords_table`, `relative_position_index`, `attn_mask`) are recomputed by the model for its own
windows and are dropped from the file.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# (the same rule as ait_tokenizer.original.load_error_reason; this library depends on no sibling)
# Words of a library's error text that advise loading a refused file unsafely (torch's advice to re-run
# with its weights-only guard turned off, numpy's "allow_pickle"): such text is never passed on to the user.
_UNSAFE_ADVICE = ("weights_only", "allow_pickle", "trust the source", "can still be loaded", "pickle")


def load_error_reason(error: BaseException) -> str:
    """Why a file could not be read, in one line, without a library's advice to load it unsafely."""
    text = " ".join(str(error).split())
    globals_needed = list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", text)))
    if globals_needed:
        return (
            f"it holds Python objects, not only tensors ({', '.join(globals_needed[:5])}); such a file is never "
            "loaded, as loading it could run code"
        )
    if any(word in text.lower() for word in _UNSAFE_ADVICE):
        return "it holds Python objects, not only tensors; such a file is never loaded, as loading it could run code"
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


# Buffers the model derives from its window configuration; a file's copies are for other windows.
RECOMPUTED_BUFFERS = ("relative_coords_table", "relative_position_index", "attn_mask", "k_bias")
# Parts of pretraining/classification checkpoints that have no place in a feature backbone.
NOT_BACKBONE_PREFIXES = ("mask_token", "decoder.", "head.", "fc.")
# Wrappers found around state dicts (mmcv/SimMIM use "model" or "state_dict").
STATE_DICT_WRAPPERS = ("model", "state_dict", "model_state_dict", "module")

_ORIGINAL_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.")
_ORIGINAL_OUT_NORM = re.compile(r"^norm(\d+)\.")


@dataclass
class CheckpointReport:
    """What `load_backbone_checkpoint` did. Key names: ours for `loaded`/`missing`, the file's for the rest."""

    path: str
    layout: str  # "original" (Microsoft/SimMIM/AiT naming) or "timm"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # backbone weights the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file weights that match nothing in the backbone
    dropped: list[str] = field(
        default_factory=list
    )  # deliberately ignored: recomputed buffers, SimMIM extras...

    def __str__(self) -> str:
        def preview(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")

        lines = [f"loaded {len(self.loaded)} tensors from {self.path} ({self.layout} layout)"]
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("dropped", self.dropped),
        ):
            if keys:
                lines.append(f"  {label}: {preview(keys)}")
        return "\n".join(lines)


def _looks_like_safetensors(path: Path) -> bool:
    # A safetensors file is an 8-byte little-endian header length followed by a JSON header.
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    (header_length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + header_length <= path.stat().st_size


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint file (torch.load with weights_only=True, or safetensors), unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if _looks_like_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:
            raise ValueError(f"{path} looks like a safetensors file but cannot be read: {error}") from error
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is not a PyTorch or safetensors checkpoint ({load_error_reason(error)})"
        ) from error

    # Peel wrappers such as {"model": {...}} or {"state_dict": {...}, "meta": ...}.
    unwrapped = True
    while unwrapped and isinstance(content, Mapping):
        unwrapped = False
        for wrapper in STATE_DICT_WRAPPERS:
            if isinstance(content.get(wrapper), Mapping):
                content, unwrapped = content[wrapper], True
                break
    if not isinstance(content, Mapping):
        raise ValueError(f"{path} holds a {type(content).__name__}, not a state dict of tensors")
    tensors = {k: v for k, v in content.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = list(content)[:8]
        raise ValueError(f"{path} contains no tensors (top-level keys: {keys})")
    return tensors


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], num_stages: int, layout: str = "auto"
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str], str]:
    """Map a checkpoint's keys to ours.

    Returns (converted tensors under our names, our name -> the file's name, the file's dropped keys, layout).
    """
    if layout not in ("auto", "original", "timm"):
        raise ValueError(f"layout must be 'auto', 'original' or 'timm', got {layout!r}")
    dropped: list[str] = []
    # Work on (current name, file name) pairs so reports can name what is in the file.
    entries = [(key.removeprefix("module."), key) for key in state_dict]

    # A whole AiT model keeps its backbone under "backbone.", SimMIM under "encoder."; the rest is not ours.
    for prefix in ("backbone.", "encoder."):
        if any(name.startswith(prefix) for name, _ in entries):
            dropped += [source for name, source in entries if not name.startswith(prefix)]
            entries = [(name[len(prefix) :], source) for name, source in entries if name.startswith(prefix)]
            break

    kept = []
    for name, source in entries:
        if name.split(".")[-1] in RECOMPUTED_BUFFERS or name.startswith(NOT_BACKBONE_PREFIXES):
            dropped.append(source)
        else:
            kept.append((name, source))

    merge_stages = {int(m.group(1)) for name, _ in kept if (m := _ORIGINAL_MERGE.match(name))}
    if layout == "auto":
        # The original merges at the end of stages 0..S-2, timm at the start of stages 1..S-1.
        layout = "original" if 0 in merge_stages else "timm"

    converted: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for name, source in kept:
        if layout == "original":
            name = _ORIGINAL_MERGE.sub(lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", name)
        name = name.replace(".rpe_mlp.", ".cpb_mlp.")
        out_norm = _ORIGINAL_OUT_NORM.match(name)
        if out_norm:
            stage = int(out_norm.group(1))
            new_prefix = "norm." if stage == num_stages - 1 else f"stage_norms.{stage}."
            name = new_prefix + name[out_norm.end() :]
        if name in converted:
            raise ValueError(f"checkpoint keys {sources[name]!r} and {source!r} both map to {name!r}")
        converted[name] = state_dict[source]
        sources[name] = source
    return converted, sources, dropped, layout


def check_finite(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """ValueError naming the file and the tensors holding NaN/inf (a diverged run or a corrupted file)."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"{path}: non-finite weights (NaN or inf) in {', '.join(bad[:4])}"
            f"{f' and {len(bad) - 4} more' if len(bad) > 4 else ''}; use another checkpoint"
        )


def load_backbone_checkpoint(
    backbone: nn.Module, path: str | os.PathLike, *, layout: str = "auto"
) -> CheckpointReport:
    """Load a local SwinV2 checkpoint into `backbone` (original/SimMIM or timm layout) and report what happened.

    Missing and unexpected keys are reported, not fatal (e.g. a classification checkpoint lacks nothing the
    backbone needs, a SimMIM one brings a mask token and a decoder). Raises FileNotFoundError for a missing
    file, ValueError for a file that is not a checkpoint, holds no weight of this backbone, or holds weights
    of other shapes (another architecture).
    """
    state_dict = read_state_dict(path)
    check_finite(state_dict, path)
    num_stages = len(backbone.preset.depths) if hasattr(backbone, "preset") else 4
    converted, sources, dropped, layout = convert_state_dict(state_dict, num_stages, layout)

    own = backbone.state_dict()
    mismatched = [
        f"{sources[name]} {tuple(tensor.shape)} vs {name} {tuple(own[name].shape)}"
        for name, tensor in converted.items()
        if name in own and tensor.shape != own[name].shape
    ]
    if mismatched:
        raise ValueError(
            f"{path}: {len(mismatched)} weights have other shapes than this backbone (another size or "
            f"architecture?): " + "; ".join(mismatched[:5])
        )
    to_load = {name: tensor for name, tensor in converted.items() if name in own}
    if not to_load:
        raise ValueError(
            f"{path}: no weight matches this backbone; the file's keys look like {list(state_dict)[:5]}"
        )
    backbone.load_state_dict(to_load, strict=False)
    return CheckpointReport(
        path=str(path),
        layout=layout,
        loaded=sorted(to_load),
        missing=sorted(name for name in own if name not in converted),
        unexpected=sorted(sources[name] for name in converted if name not in own),
        dropped=sorted(dropped),
    )
