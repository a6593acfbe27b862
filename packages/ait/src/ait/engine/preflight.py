"""The files a training run starts from, checked before the model is built.

A solver config whose tokenizer checkpoint was not set used to train over an UNTRAINED tokenizer after a
warning; a paper config without its SimMIM backbone silently trained SwinV2 from scratch; a missing
`load_from` file surfaced only after data and model were built. Each is now refused with the key to set,
unless the config says so explicitly:

- `model.depth_tokenizer.checkpoint=untrained` (or `mask_tokenizer`): an untrained tokenizer on purpose (the
  tiny test configs do this);
- `model.backbone_checkpoint=scratch`: a pretrained-size backbone from random weights on purpose;
- `load_from=None`: no detection model to start from.
"""

from __future__ import annotations

from pathlib import Path

from ait.config.overrides import ConfigError
from ait.config.schema import Config

UNTRAINED_TOKENIZER = "untrained"
BACKBONE_FROM_SCRATCH = "scratch"

__all__ = ["BACKBONE_FROM_SCRATCH", "UNTRAINED_TOKENIZER", "check_training_files"]

_TOKENIZERS = (("depth", "depth"), ("insseg", "mask"))


def _missing(path: str, key: str, what: str, how: str) -> FileNotFoundError:
    where = "" if Path(path).is_absolute() else f" (relative to {Path.cwd()})"
    return FileNotFoundError(f"{key}: {what} {path} not found{where}: {how}")


def _backbone_is_pretrained_size(name: str) -> bool:
    """Presets fine-tuned from SimMIM weights (their pretrained windows are set); the CPU ones are not."""
    from ait_backbone import get_preset

    try:
        return any(get_preset(name).pretrained_window_sizes)
    except ValueError:  # an unknown preset: building the backbone names it
        return False


def check_training_files(cfg: Config) -> None:
    """Refuse (ConfigError / FileNotFoundError naming the key) a run that would start from a missing file."""
    model = cfg.model
    for task, kind in _TOKENIZERS:
        ref = getattr(model, f"{kind}_tokenizer")
        if task not in model.tasks or ref is None:
            continue
        key = f"model.{kind}_tokenizer.checkpoint"
        if ref.checkpoint is None:
            raise ConfigError(
                f"{key} is not set: the solver would train over an UNTRAINED {ref.preset!r} tokenizer; train "
                f"one (`ait tokenizer train`) and pass --cfg-options {key}=PATH, or {key}={UNTRAINED_TOKENIZER} "
                "to train over an untrained tokenizer on purpose"
            )
        if ref.checkpoint != UNTRAINED_TOKENIZER and not Path(ref.checkpoint).is_file():
            raise _missing(
                ref.checkpoint,
                key,
                "tokenizer checkpoint",
                f"give the path of a trained tokenizer ({key}=PATH)",
            )
    if cfg.load_from is not None and not Path(cfg.load_from).is_file():
        raise _missing(
            cfg.load_from,
            "load_from",
            "the model to start from",
            "train the detection model first (e.g. `ait train swinv2b_640reso_detonly`) and pass "
            "--cfg-options load_from=PATH, or load_from=None to start from the backbone alone",
        )
    checkpoint = model.backbone_checkpoint
    if checkpoint is None:
        if cfg.load_from is None and _backbone_is_pretrained_size(model.backbone):
            raise ConfigError(
                f"model.backbone_checkpoint is not set: backbone {model.backbone!r} is meant to start from "
                "SimMIM-pretrained weights (the original's swin_v2_*_densesimmim.pth); pass --cfg-options "
                f"model.backbone_checkpoint=PATH, or model.backbone_checkpoint={BACKBONE_FROM_SCRATCH} to train "
                "it from random weights on purpose"
            )
    elif checkpoint != BACKBONE_FROM_SCRATCH and not Path(checkpoint).is_file():
        raise _missing(
            checkpoint,
            "model.backbone_checkpoint",
            "backbone checkpoint",
            f"give its path, or model.backbone_checkpoint={BACKBONE_FROM_SCRATCH} for random weights",
        )
