"""Configs of a task-solver run: dataclasses (`schema`), a named registry, typed `--cfg-options` overrides."""

from ait.config.overrides import (
    ORIGINAL_KEY_ALIASES,
    ConfigError,
    apply_overrides,
    get_by_path,
    parse_cfg_options,
    set_by_path,
    valid_keys,
)
from ait.config.registry import config_kind, create_config, describe_config, list_configs, register_config
from ait.config.schema import (
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TokenizerRef,
)

__all__ = [
    "ORIGINAL_KEY_ALIASES",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TokenizerRef",
    "apply_overrides",
    "config_kind",
    "create_config",
    "describe_config",
    "get_by_path",
    "list_configs",
    "parse_cfg_options",
    "register_config",
    "set_by_path",
    "valid_keys",
]
