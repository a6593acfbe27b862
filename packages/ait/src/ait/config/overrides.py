"""Typed, validated access to nested config dataclasses by dotted path.

This is what `--cfg-options a.b=c` goes through, as on the original's command line, and what restores a
config from its JSON. Every value is converted to the declared type of the field it lands in (int, float,
bool, None, tuples, lists, dicts, nested dataclasses); an unknown key or a value of the wrong type is a
`ConfigError` that names the nearest valid keys.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Union

__all__ = [
    "ORIGINAL_KEY_ALIASES",
    "ConfigError",
    "apply_overrides",
    "coerce_value",
    "from_dict",
    "get_by_path",
    "parse_cfg_options",
    "set_by_path",
    "to_dict",
    "valid_keys",
]


class ConfigError(ValueError):
    """A bad config key or value (a ValueError, so callers catching ValueError see it too)."""


# The original's mmcv spellings of the options its README passes on the command line.
ORIGINAL_KEY_ALIASES: dict[str, str] = {
    "model.backbone.init_cfg.checkpoint": "model.backbone_checkpoint",
    "model.backbone.drop_path_rate": "model.backbone_drop_path",
    "model.task_heads.depth.vae_cfg.pretrained": "model.depth_tokenizer.checkpoint",
    "model.task_heads.insseg.vae_cfg.pretrained": "model.mask_tokenizer.checkpoint",
    "optimizer.lr": "optim.lr",
    "optimizer.weight_decay": "optim.weight_decay",
    "runner.max_iters": "optim.max_iters",
}

# The original's keys whose meaning differs here: refused with the key to set instead, never remapped
# silently (samples_per_gpu was per GPU there; our batches are global, whatever the number of processes).
REFUSED_ORIGINAL_KEYS: dict[str, str] = {
    "data.samples_per_gpu": (
        "data.samples_per_gpu is the original's per-GPU batch; batches here are global, for all GPUs together: "
        "set data.depth_batch (depth) and/or data.insseg_batch (instances) to samples_per_gpu x the number of "
        "GPUs, and data.images_per_gpu to cap the images per GPU per forward pass"
    ),
}


# ----------------------------------------------------------------------------------------------------------
# type handling


def _field_types(cls: type) -> dict[str, Any]:
    # get_type_hints resolves the string annotations that `from __future__ import annotations` leaves.
    return typing.get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _parse_text(text: str) -> Any:
    """Command-line text -> a Python literal where it is one (`3`, `1e-4`, `(1, 2)`, `None`), else the text."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    if "," in stripped:  # mmcv style `a=1,2,3` for sequences
        return [_parse_text(part) for part in stripped.split(",") if part.strip()]
    return text


def coerce_value(value: Any, tp: Any, path: str = "value") -> Any:
    """Convert `value` to the annotated type `tp`, or raise ConfigError naming `path`, the type and the value.

    Strings are parsed first (command-line text), so `coerce_value("1e-4", float)` is 1e-4 and
    `coerce_value("480,640", tuple[int, int])` is (480, 640).
    """
    if tp is Any:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        # Try the non-None members; str last, so "3" becomes 3 for `int | str`.
        members = sorted((a for a in args if a is not type(None)), key=lambda a: a is str)
        for member in members:
            try:
                return coerce_value(value, member, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")

    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, path)
        raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")

    if isinstance(value, str) and tp is not str:
        value = _parse_text(value)

    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("yes", "no", "on", "off"):
            return value.strip().lower() in ("yes", "on")
        raise ConfigError(f"{path}: expected bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected int, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{path}: expected int, got non-integral {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, got {value!r}")
        return value
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{path}: expected None, got {value!r}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            value = [value]  # a single number for a one-element sequence, e.g. step_milestones=18180
        items = list(value)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values ({_type_name(tp)}), got {value!r}")
            return tuple(coerce_value(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(items, args)))
        item_type = args[0] if args else Any
        converted = [coerce_value(v, item_type, f"{path}[{i}]") for i, v in enumerate(items)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a dict, got {value!r}")
        return dict(value)
    raise ConfigError(f"{path}: unsupported field type {_type_name(tp)}")


# ----------------------------------------------------------------------------------------------------------
# dict round trip


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON-ready data (tuples become lists; from_dict turns them back)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type, data: Mapping[str, Any], path: str = "") -> Any:
    """Build dataclass `cls` from a (possibly partial) mapping, converting every value to its field type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {data!r}")
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else key
        if key not in names:
            raise ConfigError(_unknown_key_message(full, [f"{path}.{n}" if path else n for n in names]))
        kwargs[key] = coerce_value(value, hints[key], full)
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# dotted paths


def valid_keys(obj_or_cls: Any, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config (leaves and nested dataclass fields)."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    keys = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        tp = hints[f.name]
        nested = [a for a in (typing.get_args(tp) if _is_union(tp) else (tp,)) if dataclasses.is_dataclass(a)]
        for sub in nested:
            keys.extend(valid_keys(sub, key + "."))
    return keys


def _unknown_key_message(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=5, cutoff=0.5)
    if not close:  # fall back to matching the last component (e.g. `lr` -> `optim.lr`)
        leaf = key.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:5]
        close = close or difflib.get_close_matches(leaf, candidates, n=5, cutoff=0.3)
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    return f"unknown config key {key!r}{hint}"


def _resolve_alias(key: str) -> str:
    if key in REFUSED_ORIGINAL_KEYS:
        raise ConfigError(REFUSED_ORIGINAL_KEYS[key])
    return ORIGINAL_KEY_ALIASES.get(key, key)


def get_by_path(cfg: Any, key: str) -> Any:
    key = _resolve_alias(key)
    obj = cfg
    walked = []
    for part in key.split("."):
        walked.append(part)
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            raise ConfigError(_unknown_key_message(key, valid_keys(cfg)))
        obj = getattr(obj, part)
    return obj


def set_by_path(cfg: Any, key: str, value: Any) -> None:
    """Set one dotted key in place, converting `value` (text or Python) to the field's declared type."""
    original_key = key
    key = _resolve_alias(key)
    parts = key.split(".")
    obj = cfg
    for depth, part in enumerate(parts):
        fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
        if part not in fields:
            raise ConfigError(_unknown_key_message(original_key, valid_keys(cfg)))
        if depth == len(parts) - 1:
            tp = _field_types(type(obj))[part]
            setattr(obj, part, coerce_value(value, tp, key))
            return
        child = getattr(obj, part)
        if child is None:
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"cannot set {key!r}: {prefix} is None in this config (this config does not use it; "
                f"set {prefix} as a whole first, e.g. {prefix}={{'preset': ..., 'checkpoint': ...}})"
            )
        obj = child


def parse_cfg_options(options: Iterable[str]) -> list[tuple[str, str]]:
    """`["a.b=1", "c=x"]` -> `[("a.b", "1"), ("c", "x")]`; an item without `=` is an error."""
    pairs = []
    for item in options:
        if "=" not in item:
            raise ConfigError(f"--cfg-options expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--cfg-options expects key=value, got {item!r}")
        pairs.append((key, value))
    return pairs


def apply_overrides(cfg: Any, overrides: Mapping[str, Any] | Iterable[str] | None) -> Any:
    """Apply `{"a.b": value}` or `["a.b=value", ...]` to `cfg` in place and return it."""
    if overrides is None:
        return cfg
    items = overrides.items() if isinstance(overrides, Mapping) else parse_cfg_options(overrides)
    for key, value in items:
        set_by_path(cfg, key, value)
    return cfg
