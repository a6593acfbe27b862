"""Named tokenizer presets (timm style): ``create_tokenizer("depth-paper", **overrides)``.

The "-paper" presets reproduce the original's VQ-VAEs exactly (parameter counts are tested); the "-small"
presets are ours, narrow enough to train on a CPU in minutes. The small presets turn on what the original
lacks (k-means initialisation, dead-code restarts); the paper presets keep the original's quantizer.
"""

from __future__ import annotations

import dataclasses

from ait_tokenizer.model import TokenizerConfig, VQVAETokenizer

_PRESETS: dict[str, TokenizerConfig] = {}


def register_tokenizer(name: str, config: TokenizerConfig) -> TokenizerConfig:
    """Add a preset (the config's ``preset`` field is set to ``name``)."""
    if name in _PRESETS:
        raise ValueError(f"tokenizer preset {name!r} is already registered")
    _PRESETS[name] = dataclasses.replace(config, preset=name)
    return _PRESETS[name]


def list_tokenizers() -> list[str]:
    return sorted(_PRESETS)


def tokenizer_config(name: str, **overrides) -> TokenizerConfig:
    """The preset's config with ``overrides`` applied (the preset name is kept)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown tokenizer preset {name!r}; expected one of {list_tokenizers()}")
    known = {f.name for f in dataclasses.fields(TokenizerConfig)} - {"preset"}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown tokenizer options {sorted(unknown)}; expected a subset of {sorted(known)}")
    return dataclasses.replace(_PRESETS[name], **overrides)


def create_tokenizer(name: str, **overrides) -> VQVAETokenizer:
    return VQVAETokenizer(tokenizer_config(name, **overrides))


# Depth: 480x480 metres -> 15x15 tokens; encoder 3,320,560 and decoder 4,368,641 parameters.
register_tokenizer(
    "depth-paper",
    TokenizerConfig(
        kind="depth",
        channels=(16, 32, 64, 128, 256),
        num_codes=128,
        code_dim=512,
        input_size=(480, 480),
        mask_ratio=0.5,
        mask_patch_size=16,
    ),
)
# Instance masks: 64x64 in [0, 1] -> 4x4 tokens; encoder 861,936 and decoder 1,123,457 parameters.
register_tokenizer(
    "mask-paper",
    TokenizerConfig(
        kind="mask", channels=(16, 32, 64, 128), num_codes=128, code_dim=512, input_size=(64, 64)
    ),
)
# CPU depth: 64x64 -> 8x8 tokens. The mask patch keeps the paper's patch-to-token-cell ratio (16 px patches
# in 32 px cells there, 4 px in 8 px cells here): with half the patches blanked, a token's cell is rarely
# blanked whole (1/16 of the time), so every token still sees part of its input.
register_tokenizer(
    "depth-small",
    TokenizerConfig(
        kind="depth",
        channels=(16, 32, 64),
        num_codes=128,
        code_dim=64,
        input_size=(64, 64),
        kmeans_init=True,
        dead_code_threshold=1.0,
        mask_ratio=0.5,
        mask_patch_size=4,
    ),
)
# CPU masks: still 64x64 -> 4x4 = 16 tokens, so an instance stays 21 tokens in the solver's sequence.
register_tokenizer(
    "mask-small",
    TokenizerConfig(
        kind="mask",
        channels=(8, 16, 32, 64),
        num_codes=128,
        code_dim=64,
        input_size=(64, 64),
        kmeans_init=True,
        dead_code_threshold=0.5,
    ),
)
