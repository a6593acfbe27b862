"""Training checkpoints: one file per save, written atomically, loadable with `torch.load(weights_only=True)`.

Format (a plain dict of tensors and Python scalars/lists, nothing pickled beyond that):

    format        "ait-checkpoint-v1"
    config        the effective Config as a JSON string (`Config.from_json` restores it)
    config_name   the registry name it was built from
    step          optimiser steps completed
    model         model state_dict (the frozen tokenizers included, so a checkpoint is self-contained)
    optimizer     AdamW state_dict
    scheduler     LambdaLR state_dict (its lambda is rebuilt from the config, not stored)
    scaler        GradScaler state_dict or None
    data          position of every task's sample stream (data order), see ait.data.TaskStreams
    rng           per rank: python, numpy, torch (and CUDA) generator states
    world_size    ranks that wrote it

Why one file and not safetensors + a state file: a checkpoint must be all-or-nothing for `--resume`, and one
`os.replace` is the only atomic step a filesystem gives us. `weights_only=True` loading keeps it as safe to
open as safetensors. The files are `work_dir/checkpoints/iter_XXXXXXX.pt`; the newest complete one is the
highest step (an interrupted save leaves only a hidden temp file, which is ignored and cleaned up).
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ait.config.schema import Config

# The kill -9 tests' fault hook (AIT_KILL_AT="PHASE" or "PHASE@STEP"; phases here: "solver-save:temp-written",
# "solver-save:replaced", "solver-save:pruned") and torch.save keeping a failed write's OSError are shared
# with the tokenizer's checkpoints: one implementation, in ait_tokenizer.checkpoint.
from ait_tokenizer.checkpoint import fault_point, torch_save_to

__all__ = [
    "CHECKPOINT_FORMAT",
    "OPERATIONAL_KEYS",
    "atomic_torch_save",
    "capture_rng_state",
    "check_config_compatible",
    "check_finite_weights",
    "checkpoint_path",
    "config_differences",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "prune_checkpoints",
    "read_saved_config",
    "remove_temporary_files",
    "resolve_checkpoint",
    "restore_rng_state",
    "run_dir_of",
    "saved_config",
]

CHECKPOINT_FORMAT = "ait-checkpoint-v1"
_ITER_RE = re.compile(r"^iter_(\d+)\.pt$")

# Keys that may differ between the run that wrote a checkpoint and the one that resumes it: where files
# live and how often to log/eval/save do not change the numbers a run computes.
OPERATIONAL_KEYS = (
    "name",
    "work_dir",
    "log_interval",
    "eval_interval",
    "checkpoint_interval",
    "keep_checkpoints",
    "progress",
    "load_from",
    "eval.",
    "data.num_workers",
    "data.nyu_root",
    "data.nyu_train_split",
    "data.nyu_test_split",
    "data.coco_root",
    "data.eval_batch",
    "data.synthetic_val_length",
    "model.backbone_checkpoint",
    "model.depth_tokenizer.checkpoint",
    "model.mask_tokenizer.checkpoint",
    "model.decode_weights",  # inference only: never changes training
    "model.soft_lookup",  # the same soft lookup computed by the Triton kernel or torch (a kernel switch)
    "model.backbone_grad_checkpointing",  # recomputes activations: the same gradients, less memory
)
# For evaluation/prediction only the architecture matters: model.* keys, less the decoding settings a user
# may change at evaluation time (the original's test-time overrides of top_p / tau work the same way).
_ARCHITECTURE_PREFIX = "model."
INFERENCE_KEYS = (
    "model.tau_depth",
    "model.tau_mask",
    "model.top_p",
    "model.soft_input",
    "model.object_order",  # how training sequences order the objects: nothing at inference
    "model.coordinate_embedding",  # how training starts the coordinate embeddings: the weights say the rest
)


def check_finite_weights(weights: dict, source: str | os.PathLike) -> None:
    """ValueError naming ``source`` and the tensors holding NaN/inf (a diverged run or a corrupted file)."""
    bad = [
        name
        for name, tensor in weights.items()
        if isinstance(tensor, torch.Tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise ValueError(
            f"{source}: non-finite weights (NaN or inf) in {shown}; the run diverged or the file is corrupted: "
            "use an earlier checkpoint"
        )


def remove_temporary_files(work_dir: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary files an interrupted (killed) save left in work_dir/checkpoints."""
    folder = Path(work_dir) / "checkpoints"
    removed = []
    if folder.is_dir():
        for path in folder.glob(".iter_*.pt.tmp-*"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def checkpoint_path(work_dir: str | os.PathLike, step: int) -> Path:
    return Path(work_dir) / "checkpoints" / f"iter_{step:07d}.pt"


def atomic_torch_save(obj: Any, path: str | os.PathLike, step: int | None = None) -> Path:
    """torch.save to a temp file in the same directory, fsync, then os.replace: readers never see half a file.

    A failed write (ENOSPC, EACCES...) is an OSError naming the file and the reason; the file it would have
    replaced is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            torch_save_to(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        fault_point("solver-save:temp-written", step)
        os.replace(tmp, path)
    except OSError as error:
        code = errno.errorcode.get(error.errno or 0, "")
        raise OSError(
            error.errno,
            f"cannot write checkpoint {path}: {error.strerror or error}{f' ({code})' if code else ''}; "
            "the previous checkpoints are kept: free space or choose another work_dir, then --resume",
        ) from error
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def list_checkpoints(work_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, (step, path) sorted by step."""
    folder = Path(work_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _ITER_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def find_latest_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(work_dir)
    return found[-1][1] if found else None


def prune_checkpoints(work_dir: str | os.PathLike, keep: int) -> None:
    """Keep the newest `keep` iteration checkpoints (0 keeps all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(work_dir)[:-keep]:
        path.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with `weights_only=True`; FileNotFoundError / ValueError name the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated, not a torch file at all, or holding code: never executed
        from ait_tokenizer.original import load_error_reason

        raise ValueError(
            f"cannot read checkpoint {path}: {load_error_reason(error)}{newest_good_hint(path)}"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not an AiT task-solver checkpoint (expected format {CHECKPOINT_FORMAT!r})"
        )
    missing = [key for key in ("config", "model", "step") if key not in state]
    if missing or not isinstance(state.get("model"), dict):
        raise ValueError(f"checkpoint {path} is incomplete: missing or malformed {missing or ['model']}")
    return state


def newest_good_hint(broken: str | os.PathLike) -> str:
    """For an unreadable checkpoint of a run: '; ...' naming the run's newest checkpoint that does load.

    A corrupt newest checkpoint (a copy cut short, a disk error) otherwise leaves the user to guess which
    older one is intact. Each candidate is opened memory-mapped, so the probe reads headers, not weights.
    """
    broken = Path(broken)
    if broken.parent.name != "checkpoints":
        return ""
    for _, candidate in reversed(list_checkpoints(broken.parent.parent)):
        if candidate == broken:
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            continue
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT and "model" in state:
            return (
                f"; the newest good checkpoint of the run is {candidate}: continue from it (ait train --resume "
                f"{candidate}; ait eval/predict --checkpoint {candidate}), and move {broken.name} aside"
            )
    return "; the run has no other readable checkpoint"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file as given, or the newest `checkpoints/iter_*.pt` of a run folder."""
    path = Path(path)
    if path.is_dir():
        latest = find_latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(
                f"{path} holds no checkpoint: expected a run folder with checkpoints/iter_*.pt or a checkpoint file"
            )
        return latest
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """The run folder a checkpoint belongs to (`RUN/checkpoints/iter_N.pt` -> RUN), else its folder."""
    folder = Path(checkpoint).parent
    return folder.parent if folder.name == "checkpoints" else folder


def saved_config(state: dict, path: str | os.PathLike) -> Config:
    """The config a checkpoint was written with; a ConfigError naming the file and the key it cannot read."""
    from ait.config.overrides import ConfigError

    try:
        return Config.from_json(state["config"])
    except ConfigError as error:
        raise ConfigError(
            f"{path}: its saved config does not fit this version of ait ({error}); name the registered "
            "config it was trained with instead (--config NAME)"
        ) from error
    except (TypeError, ValueError) as error:  # not JSON at all
        raise ValueError(f"{path}: its saved config is unreadable ({error})") from error


def read_saved_config(path: str | os.PathLike) -> Config:
    """The config saved in a checkpoint, read without loading its tensors into memory (mmap)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # the library's own text may advise an unsafe load: not passed on
        raise ValueError(
            f"cannot read checkpoint {path} ({type(error).__name__}): a truncated file, or one holding more "
            f"than tensors and plain data{newest_good_hint(path)}"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "config" not in state:
        raise ValueError(
            f"{path} is not an AiT task-solver checkpoint (expected format {CHECKPOINT_FORMAT!r})"
        )
    return saved_config(state, path)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def config_differences(saved: Config, current: Config, *, architecture_only: bool = False) -> list[str]:
    """`key: saved -> current` for every key that matters and differs."""
    a, b = _flatten(saved.to_dict()), _flatten(current.to_dict())
    diffs = []
    for key in sorted(set(a) | set(b)):
        if architecture_only and (not key.startswith(_ARCHITECTURE_PREFIX) or key in INFERENCE_KEYS):
            continue
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in OPERATIONAL_KEYS):
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: {a.get(key)!r} (checkpoint) vs {b.get(key)!r} (now)")
    return diffs


def check_config_compatible(
    state: dict, current: Config, path: str | os.PathLike, *, architecture_only: bool = False
) -> Config:
    """Raise a ValueError naming the differing keys if the checkpoint was written by another config."""
    saved = saved_config(state, path)
    diffs = config_differences(saved, current, architecture_only=architecture_only)
    if diffs:
        shown = "\n  ".join(diffs[:12]) + (f"\n  ... and {len(diffs) - 12} more" if len(diffs) > 12 else "")
        raise ValueError(
            f"checkpoint {path} was written by another config (checkpoint: {saved.name!r}, now: "
            f"{current.name!r}); these keys differ:\n  {shown}"
        )
    return saved


def stored_tokenizer_configs(state: dict, path: str | os.PathLike) -> dict[str, dict] | None:
    """{kind: TokenizerConfig dict} a solver checkpoint carries; None for one written before they were saved."""
    raw = state.get("tokenizers")
    if raw is None:
        return None
    try:
        configs = json.loads(raw)
        if not isinstance(configs, dict) or not all(isinstance(c, dict) for c in configs.values()):
            raise ValueError("expected a JSON object of tokenizer kinds to configs")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: the stored tokenizer architectures are malformed ({error})") from error
    return configs


def load_model_weights(model: torch.nn.Module, state_dict: dict, source: str | os.PathLike) -> None:
    """Strict load with an error that names missing/unexpected/mis-shaped parameters and the source file."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mis_shaped),
        ):
            if items:
                parts.append(
                    f"{label} ({len(items)}): {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                )
        raise ValueError(f"weights in {source} do not fit this model; " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


# --------------------------------------------------------------------------------------------------------
# RNG state as weights_only-loadable data


def capture_rng_state() -> dict:
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # noqa: NPY002 (the global state is what we capture)
    state = {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_json(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), indent=2)
