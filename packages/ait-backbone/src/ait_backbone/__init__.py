"""ait_backbone: SwinV2 backbones from timm with presets, SimMIM checkpoint loading and layer-wise lr decay."""

from .checkpoint import CheckpointReport, load_backbone_checkpoint, read_state_dict
from .lr_decay import layer_decay_param_groups
from .presets import BackbonePreset, get_preset, list_backbones, register_backbone
from .simmim import SimMIM, pretrain_simmim, random_patch_mask, save_backbone
from .swin import PadThenShiftBlock, SwinV2Backbone, create_backbone

__all__ = [
    "BackbonePreset",
    "CheckpointReport",
    "PadThenShiftBlock",
    "SimMIM",
    "SwinV2Backbone",
    "create_backbone",
    "get_preset",
    "layer_decay_param_groups",
    "list_backbones",
    "load_backbone_checkpoint",
    "pretrain_simmim",
    "random_patch_mask",
    "read_state_dict",
    "register_backbone",
    "save_backbone",
]
