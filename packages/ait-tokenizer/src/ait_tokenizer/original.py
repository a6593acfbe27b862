"""The original release's VQ-VAE files (`vqvae_depth.pt`, `vqvae_insseg.pt`) read into our tokenizers.

The original saves ``torch.save({'weights': model.state_dict()})`` of its ``VQVAE`` (sometimes with the
state dict behind ``'module'``). Its key names and ours, side by side:

===============================  ===============================  ===========================================
original                         ours                             note
===============================  ===============================  ===========================================
``encoder.N.*``                  ``encoder.N.*``                  same layer order, same ``net.M`` residuals
``decoder.N.*``                  ``decoder.N.*``                  same order (both have the ReLU at index 1)
``_vq_vae._embedding``           ``quantizer.embed``              the codebook (K, D)
``_vq_vae._ema_cluster_size``    ``quantizer.ema_cluster_size``   Laplace-smoothed EMA counts
``_vq_vae._ema_w``               ``quantizer.ema_embed_sum``      EMA sums of assigned vectors
(none)                           ``quantizer.initialised``        set true: the original has no k-means stage
===============================  ===============================  ===========================================

The preset (``depth-paper`` or ``mask-paper``) is inferred from the shapes; a file whose shapes fit neither is
refused with the shapes it holds. Reading never executes code from the file (see ``safe_torch_load``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ait_tokenizer.model import VQVAETokenizer
from ait_tokenizer.registry import create_tokenizer, tokenizer_config

__all__ = [
    "PAPER_PRESETS",
    "ConversionReport",
    "convert_original_vqvae",
    "extract_original_vqvae",
    "infer_original_preset",
    "is_safetensors_file",
    "load_original_tokenizer",
    "safe_torch_load",
]

# Presets an original VQ-VAE can become (the original trained exactly these two).
PAPER_PRESETS = ("depth-paper", "mask-paper")

# The original's quantizer buffers and ours.
_QUANTIZER_KEYS = {
    "_vq_vae._embedding": "quantizer.embed",
    "_vq_vae._ema_cluster_size": "quantizer.ema_cluster_size",
    "_vq_vae._ema_w": "quantizer.ema_embed_sum",
}

# Plain types an mmcv runner's `meta` may hold beyond what `weights_only=True` accepts (numpy scalars and
# arrays in `hook_msgs`, e.g. a best score). Constructing them runs no code of the file.
_META_GLOBALS = (
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    *(
        f"numpy.dtypes.{name}DType"
        for name in ("Float64", "Float32", "Float16", "Int64", "Int32", "Int16", "Int8", "UInt8", "Bool")
    ),
)


# --------------------------------------------------------------------------------------------- reading
def is_safetensors_file(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (8-byte header length, then a JSON object)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    (header_length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + header_length <= size


def _resolve_global(name: str) -> Any | None:
    module_name, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        return None


def _meta_allow_list() -> list[Any]:
    allowed = []
    for name in _META_GLOBALS:
        obj = _resolve_global(name)
        if obj is not None:
            allowed.append((obj, name))
    return allowed


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


def _torch_load(path: Path) -> Any:
    # Through a file handle: torch.load would otherwise pick a reader by the file name's extension.
    with path.open("rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=True)


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, nothing executed.

    A file that needs other globals is refused with their names, except the numpy scalar/array types an
    mmcv ``meta`` may hold (a narrow allow-list). FileNotFoundError for a missing file, ValueError for
    anything unreadable, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return _torch_load(path)
    except Exception as error:
        first_error = error
    try:
        needed = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        needed = None
    if needed:
        allow = _meta_allow_list()
        allowed_names = {name for _, name in allow}
        refused = [name for name in needed if name not in allowed_names]
        if not refused:
            try:
                with torch.serialization.safe_globals(allow):
                    return _torch_load(path)
            except Exception as error:
                first_error = error
        else:
            raise ValueError(
                f"refused to load {path}: it holds objects other than tensors and plain data "
                f"({', '.join(refused[:5])}); loading it could run code, so nothing was loaded"
            ) from first_error
    raise ValueError(
        f"cannot read {path} as a PyTorch {what} of plain tensors ({load_error_reason(first_error)}); "
        "nothing was loaded"
    ) from first_error


# --------------------------------------------------------------------------------------------- reports
def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in tensor.shape)


@dataclass
class ConversionReport:
    """What a conversion from the original's key names did, key by key.

    ``mapped``: (original key(s), our key); ``dropped``: (original key, reason); ``filled``: (our key, how)
    for ours that the file has no counterpart of; ``missing``: ours left unfilled; ``mismatched``:
    "original key (shape) -> our key (shape)"; ``unexpected``: original keys nothing here understands.
    """

    source: str
    kind: str = ""
    mapped: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    filled: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected)

    def summary(self) -> str:
        return (
            f"{self.source} ({self.kind}): {len(self.mapped)} mapped, {len(self.dropped)} dropped, "
            f"{len(self.filled)} filled, {len(self.missing)} missing, {len(self.mismatched)} mismatched, "
            f"{len(self.unexpected)} unexpected"
        )

    def lines(self) -> list[str]:
        """Every key, one line each: the full report."""
        out = [self.summary()]
        out += [f"  note: {note}" for note in self.notes]
        out += [f"  mapped     {source} -> {ours}" for source, ours in self.mapped]
        out += [f"  dropped    {source} ({reason})" for source, reason in self.dropped]
        out += [f"  filled     {ours} ({how})" for ours, how in self.filled]
        out += [f"  missing    {ours}" for ours in self.missing]
        out += [f"  mismatched {item}" for item in self.mismatched]
        out += [f"  unexpected {source}" for source in self.unexpected]
        return out

    def problems(self, limit: int = 6) -> str:
        """The keys that prevent a faithful load, shortened to ``limit`` per kind, for an error message."""
        parts = []
        for label, items in (
            ("shape mismatch", self.mismatched),
            ("missing", self.missing),
            ("not understood", self.unexpected),
        ):
            if items:
                shown = "; ".join(items[:limit]) + (
                    f"; ... ({len(items)} in all)" if len(items) > limit else ""
                )
                parts.append(f"{label} ({len(items)}): {shown}")
        return " | ".join(parts)

    def __str__(self) -> str:
        return "\n".join(self.lines())


# --------------------------------------------------------------------------------------------- VQ-VAE
def extract_original_vqvae(content: Any) -> dict[str, torch.Tensor] | None:
    """The original VQ-VAE state dict inside ``content`` (unwrapped as the original's loader does:
    ``['weights']``, then ``['module']``, and a DDP ``module.`` prefix), or None when it is not one."""
    state = content
    for wrapper in ("weights", "module"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        return None
    tensors = {
        key.removeprefix("module."): value
        for key, value in state.items()
        if isinstance(key, str) and isinstance(value, torch.Tensor)
    }
    if "_vq_vae._embedding" not in tensors or not any(k.startswith("encoder.") for k in tensors):
        return None
    return tensors


_CONV = re.compile(r"^encoder\.(\d+)\.weight$")
_RES = re.compile(r"^encoder\.(\d+)\.net\.0\.weight$")


def _describe_shapes(state: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], int, int, tuple[int, ...]]:
    """(encoder stride-2 channels, input channels, residual blocks, codebook shape) of an original VQ-VAE."""
    strided = sorted(
        (int(m.group(1)), state[key])
        for key in state
        if (m := _CONV.match(key)) and state[key].dim() == 4 and state[key].shape[-1] == 4
    )
    channels = tuple(int(w.shape[0]) for _, w in strided)
    in_channels = int(strided[0][1].shape[1]) if strided else 0
    res_blocks = len({m.group(1) for key in state if (m := _RES.match(key))})
    return channels, in_channels, res_blocks, _shape(state["_vq_vae._embedding"])


def infer_original_preset(state: Mapping[str, torch.Tensor], source: str = "the file") -> str:
    """``depth-paper`` or ``mask-paper`` from the shapes; ValueError naming the shapes if neither fits."""
    channels, in_channels, res_blocks, codebook = _describe_shapes(state)
    for name in PAPER_PRESETS:
        cfg = tokenizer_config(name)
        if (
            channels == cfg.channels
            and in_channels == 1
            and res_blocks == cfg.num_res_blocks
            and codebook == (cfg.num_codes, cfg.code_dim)
        ):
            return name
    expected = "; ".join(
        f"{name}: channels {tokenizer_config(name).channels}, {tokenizer_config(name).num_res_blocks} residual "
        f"blocks, codebook {tokenizer_config(name).num_codes}x{tokenizer_config(name).code_dim}"
        for name in PAPER_PRESETS
    )
    raise ValueError(
        f"{source} is an original VQ-VAE whose shapes fit no tokenizer preset: encoder channels {channels} "
        f"from {in_channels} input channel(s), {res_blocks} residual blocks, codebook {codebook}; "
        f"expected one of ({expected})"
    )


def _vqvae_key(key: str) -> str | None:
    if key.startswith(("encoder.", "decoder.")):
        return key
    return _QUANTIZER_KEYS.get(key)


def convert_original_vqvae(
    state: Mapping[str, torch.Tensor],
    source: str = "the file",
    expected_preset: str | None = None,
) -> tuple[VQVAETokenizer, ConversionReport]:
    """Our tokenizer (preset inferred from the shapes) holding the original VQ-VAE weights ``state``.

    Raises ValueError, naming the keys and shapes, when the preset is not ``expected_preset`` or any key
    does not fit (nothing is half-loaded: the tokenizer is only returned complete).
    """
    preset = infer_original_preset(state, source)
    if expected_preset is not None and preset != expected_preset:
        raise ValueError(
            f"{source} holds an original VQ-VAE of preset {preset!r} (inferred from its shapes), "
            f"expected {expected_preset!r}"
        )
    # Shapes only (meta tensors, e.g. a key-set check at paper size): build on the meta device too.
    device = next(iter(state.values())).device if state else torch.device("cpu")
    with torch.device("meta") if device.type == "meta" else contextlib.nullcontext():
        tokenizer = create_tokenizer(preset)
    own = tokenizer.state_dict()
    report = ConversionReport(source=source, kind=f"original VQ-VAE -> {preset}")
    converted: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        ours = _vqvae_key(key)
        if key == "codebook.weight":  # the original's own loader deletes this key too
            report.dropped.append((key, "ignored by the original's loader as well"))
        elif ours is None or ours not in own:
            report.unexpected.append(key)
        elif _shape(state[key]) != _shape(own[ours]):
            report.mismatched.append(f"{key} {_shape(state[key])} -> {ours} {_shape(own[ours])}")
        else:
            converted[ours] = state[key]
            report.mapped.append((key, ours))
    converted["quantizer.initialised"] = torch.tensor(True, device=device)
    report.filled.append(("quantizer.initialised", "true: the original's codebook needs no k-means stage"))
    report.missing = [key for key in own if key not in converted]
    non_finite = [
        key
        for key, tensor in state.items()
        if tensor.is_floating_point()
        and tensor.device.type != "meta"
        and not bool(torch.isfinite(tensor).all())
    ]
    if non_finite:
        raise ValueError(
            f"{source}: non-finite weights (NaN or inf) in {', '.join(sorted(non_finite)[:4])}; the file is "
            "corrupted or the model diverged: use another copy"
        )
    if not report.ok:
        raise ValueError(f"{source} does not fit the {preset!r} tokenizer: {report.problems()}")
    tokenizer.load_state_dict(converted, strict=True, assign=device.type == "meta")
    return tokenizer.eval(), report


def load_original_tokenizer(
    path: str | os.PathLike,
    expected_preset: str | None = None,
    map_location: str | torch.device = "cpu",
    *,
    return_report: bool = False,
):
    """Read an original VQ-VAE release (``{'weights': state_dict}``) into our tokenizer.

    ValueError (naming the file) for a file that is neither this nor readable without running code.
    """
    try:
        content = safe_torch_load(path, what="tokenizer checkpoint")
    except ValueError as error:
        if str(error).startswith("refused"):
            raise
        raise ValueError(
            f"{path} is not a safetensors tokenizer checkpoint nor an original AiT VQ-VAE file: {error}"
        ) from error
    state = extract_original_vqvae(content)
    if state is None:
        keys = list(content)[:6] if isinstance(content, Mapping) else type(content).__name__
        raise ValueError(
            f"{path} is not a safetensors tokenizer checkpoint nor an original AiT VQ-VAE file "
            f"({{'weights': state_dict}} with '_vq_vae._embedding'); it holds {keys}"
        )
    tokenizer, report = convert_original_vqvae(state, str(path), expected_preset)
    tokenizer = tokenizer.to(map_location).eval()
    return (tokenizer, report) if return_report else tokenizer
