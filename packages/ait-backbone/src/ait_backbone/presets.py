"""Named backbone presets, kept as data (timm style: a registry of names -> configurations).

The paper presets reproduce the original AiT configs (`configs/swinv2{b,l}_{480,640}reso_*.py`):
SwinV2 pretrained with SimMIM at 192 px with windows 12/12/12/6, fine-tuned with windows 30/30/30/15.
Depth runs at 480 px without window shifts in stages 3-4; COCO runs at 640 px with shifts everywhere
(the maps are then padded to window multiples, as the original does).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class BackbonePreset:
    """Everything needed to build one SwinV2 backbone through timm.

    `window_sizes`, `pretrained_window_sizes` and `shift_stages` have one entry per stage.
    A pretrained window size of 0 means "scale the position-bias coordinates by this stage's own window"
    (a model trained from scratch); a positive one reproduces SwinV2's scaling for transferred weights.
    """

    name: str
    timm_name: str  # the timm architecture the model is created from (all shape kwargs are overridden)
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    img_size: int | tuple[int, int]
    window_sizes: tuple[int, ...]
    pretrained_window_sizes: tuple[int, ...]
    shift_stages: tuple[bool, ...]
    drop_path_rate: float
    norm_eps: float = 1e-6
    patch_size: int = 4
    in_chans: int = 3
    mlp_ratio: float = 4.0
    out_indices: tuple[int, ...] = (-1,)  # stages whose (LayerNorm-ed) maps forward returns; -1 = last
    # "patch": timm's patch embedding (one strided conv, as the paper); "conv": early convolutions (Xiao et al.
    # 2021, "Early Convolutions Help Transformers See Better"), for models trained from scratch (see ConvStem)
    stem: str = "patch"
    description: str = ""

    def __post_init__(self) -> None:
        num_stages = len(self.depths)
        for field_name in ("num_heads", "window_sizes", "pretrained_window_sizes", "shift_stages"):
            value = getattr(self, field_name)
            if len(value) != num_stages:
                raise ValueError(
                    f"preset {self.name!r}: {field_name} has {len(value)} entries, expected one per stage "
                    f"({num_stages} stages from depths={self.depths})"
                )
        if any(w < 1 for w in self.window_sizes):
            raise ValueError(f"preset {self.name!r}: window sizes must be >= 1, got {self.window_sizes}")
        for w, pw in zip(self.window_sizes, self.pretrained_window_sizes):
            if pw == 1 or pw < 0:
                raise ValueError(
                    f"preset {self.name!r}: pretrained window sizes must be 0 (none) or >= 2, "
                    f"got {self.pretrained_window_sizes}"
                )
            if w == 1 and pw == 0:
                raise ValueError(f"preset {self.name!r}: a window of 1 needs a pretrained window size >= 2")
        for i, heads in enumerate(self.num_heads):
            dim = self.embed_dim * 2**i
            if dim % heads:
                raise ValueError(
                    f"preset {self.name!r}: stage {i} width {dim} is not divisible by {heads} heads"
                )
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"preset {self.name!r}: stem must be 'patch' or 'conv', got {self.stem!r}")
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(
                f"preset {self.name!r}: a conv stem halves the resolution per step, so patch_size must be "
                f"a power of two >= 2, got {self.patch_size}"
            )
        if not self.out_indices:
            raise ValueError(f"preset {self.name!r}: out_indices must name at least one stage")
        for index in self.out_indices:
            if not -num_stages <= index < num_stages:
                raise ValueError(
                    f"preset {self.name!r}: out index {index} is outside the {num_stages} stages "
                    f"(valid: {-num_stages}..{num_stages - 1})"
                )

    @property
    def num_stages(self) -> int:
        return len(self.depths)


_REGISTRY: dict[str, BackbonePreset] = {}


def register_backbone(preset: BackbonePreset, *, overwrite: bool = False) -> BackbonePreset:
    """Add a preset to the registry (e.g. a project-specific size); returns it."""
    if preset.name in _REGISTRY and not overwrite:
        raise ValueError(f"a backbone preset named {preset.name!r} is already registered")
    _REGISTRY[preset.name] = preset
    return preset


def list_backbones() -> list[str]:
    """Names of all registered presets, sorted."""
    return sorted(_REGISTRY)


def get_preset(name: str, **overrides) -> BackbonePreset:
    """The preset called `name`, with any fields replaced by `overrides` (validated)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(list_backbones())}")
    preset = _REGISTRY[name]
    if not overrides:
        return preset
    valid = {f.name for f in dataclasses.fields(BackbonePreset)} - {"name", "timm_name"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for backbone {name!r}; valid: {sorted(valid)}")
    # Sequences arrive as lists from configs / command lines; the preset stores tuples.
    normalised = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(preset, **normalised)


# --- the paper's presets -------------------------------------------------------------------------------

_SWINV2_B = dict(
    timm_name="swinv2_base_window12_192", embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)
)
_SWINV2_L = dict(
    timm_name="swinv2_large_window12_192", embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)
)
_FINETUNE_WINDOWS = dict(window_sizes=(30, 30, 30, 15), pretrained_window_sizes=(12, 12, 12, 6))
_DEPTH = dict(img_size=480, shift_stages=(True, True, False, False), drop_path_rate=0.1)
_COCO = dict(img_size=640, shift_stages=(True, True, True, True), drop_path_rate=0.3)

for _size, _arch in (("b", _SWINV2_B), ("l", _SWINV2_L)):
    register_backbone(
        BackbonePreset(
            name=f"swinv2-{_size}-480",
            **_arch,
            **_FINETUNE_WINDOWS,
            **_DEPTH,
            description=f"SwinV2-{_size.upper()} for NYUv2 depth at 480 px: windows 30/30/30/15, "
            "no shifts in stages 3-4, drop-path 0.1 (15x15 output at 480x480)",
        )
    )
    register_backbone(
        BackbonePreset(
            name=f"swinv2-{_size}-640",
            **_arch,
            **_FINETUNE_WINDOWS,
            **_COCO,
            description=f"SwinV2-{_size.upper()} for COCO (and joint training) at 640 px: windows 30/30/30/15, "
            "shifts in every stage, maps padded to window multiples, drop-path 0.3 (20x20 output)",
        )
    )

# --- tiny CPU presets for tests and the demo -------------------------------------------------------------
# Same structure (4 stages, stride 32, last stage + LayerNorm), narrow and shallow. Trained from scratch,
# so the position-bias coordinates are scaled by each stage's own window (pretrained window 0).

_TINY = dict(
    timm_name="swinv2_tiny_window8_256",
    embed_dim=32,
    depths=(2, 2, 2, 2),  # two blocks per stage, so the odd (shifted) block exists in every stage
    num_heads=(1, 2, 4, 8),
    img_size=128,
    window_sizes=(8, 8, 4, 2),
    pretrained_window_sizes=(0, 0, 0, 0),
    drop_path_rate=0.1,
)
register_backbone(
    BackbonePreset(
        name="swinv2-tiny-cpu",
        **_TINY,
        shift_stages=(True, True, False, False),
        description="tiny CPU SwinV2 (embed 32, depths 2/2/2/2) at 64-128 px, depth-style shifts "
        "(stages 1-2 only); 4x4 output at 128 px",
    )
)
register_backbone(
    BackbonePreset(
        name="swinv2-tiny-cpu-coco",
        **{**_TINY, "drop_path_rate": 0.3},
        shift_stages=(True, True, True, True),
        description="tiny CPU SwinV2 (embed 32, depths 2/2/2/2) at 64-128 px, COCO-style shifts in every stage",
    )
)
register_backbone(
    BackbonePreset(
        name="swinv2-convstem-cpu",
        timm_name="swinv2_tiny_window8_256",
        embed_dim=32,
        depths=(2, 2),
        num_heads=(1, 2),
        img_size=64,
        window_sizes=(8, 8),
        pretrained_window_sizes=(0, 0),
        shift_stages=(True, True),
        drop_path_rate=0.1,
        stem="conv",
        description="CPU demo backbone trained from scratch: conv stem + two SwinV2 stages (embed 32), "
        "stride 8 (8x8 output at 64 px); the patch-embedding tiny presets barely learn RGB -> depth in minutes",
    )
)
