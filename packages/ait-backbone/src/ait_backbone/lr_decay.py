"""Layer-wise learning-rate decay parameter groups (the original's SwinLayerDecayOptimizerConstructor).

Backbone parameters get scale = layer_decay ** (num_layers - 1 - layer_id), with layer ids from
`SwinV2Backbone.layer_id` (29 ids for SwinV2-B/L: 0 patch embedding, 1-2 stage-1 blocks, 3 merging, 4-5,
6 merging, 7-24, 25 merging, 26-27, 28 output norm). Everything outside the backbone gets scale 1.

No weight decay (as the original): 1-D parameters (norms, biases), names ending in `.bias`, the
position-bias MLP (`cpb_mlp`, the original's `rpe_mlp`), `logit_scale`, and every token / prompt /
position embedding (the original lists det_embed, voc_embed, enc_embed, dec_embed and mask_embed).
The backbone's patch embedding is a convolution and keeps its weight decay, as in the original.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

NO_DECAY_KEYWORDS = (
    "cpb_mlp",
    "rpe_mlp",
    "logit_scale",
    "relative_position",
    "token",
    "prompt",
    "pos_embed",
    "pos_table",
    "position",
    "embed",
)
# Substrings removed before matching NO_DECAY_KEYWORDS, because they are decayed weights whose names
# merely contain "embed".
DECAYED_DESPITE_NAME = ("patch_embed",)


def uses_weight_decay(
    name: str, parameter: nn.Parameter, no_decay_keywords: Iterable[str] = NO_DECAY_KEYWORDS
) -> bool:
    """Whether `name` (a full parameter name) should get weight decay."""
    if parameter.ndim <= 1 or name.endswith(".bias"):
        return False
    searchable = name
    for exempt in DECAYED_DESPITE_NAME:
        searchable = searchable.replace(exempt, "")
    return not any(keyword in searchable for keyword in no_decay_keywords)


def layer_decay_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    layer_decay: float,
    backbone_prefix: str = "backbone.",
    no_decay_keywords: Iterable[str] = NO_DECAY_KEYWORDS,
) -> list[dict]:
    """Optimizer parameter groups with layer-wise lr decay for `model`'s backbone.

    `model` contains the backbone at `backbone_prefix` (a submodule path followed by "."; "" when `model`
    is the backbone itself); it must provide `layer_id(name)` and `num_layers`. Every parameter of `model`
    is in exactly one group (frozen ones too: an optimizer skips parameters without gradients). Each group
    carries `lr` (= lr * lr_scale), `weight_decay`, `lr_scale`, and for inspection `name`, `layer_id`,
    `param_names`. A scheduler that sets a base lr should multiply it by each group's `lr_scale`.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if backbone_prefix and not backbone_prefix.endswith("."):
        raise ValueError(f"backbone_prefix must end with '.' (or be ''), got {backbone_prefix!r}")
    try:
        backbone = model.get_submodule(backbone_prefix.rstrip(".")) if backbone_prefix else model
    except AttributeError as error:
        raise ValueError(f"model has no backbone at prefix {backbone_prefix!r}") from error
    if not (hasattr(backbone, "layer_id") and hasattr(backbone, "num_layers")):
        raise ValueError(
            f"the module at {backbone_prefix!r} ({type(backbone).__name__}) has no layer_id/num_layers; "
            "expected an ait_backbone backbone"
        )
    num_layers = backbone.num_layers
    no_decay_keywords = tuple(no_decay_keywords)

    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if backbone_prefix and name.startswith(backbone_prefix):
            layer_id = backbone.layer_id(name[len(backbone_prefix) :])
        elif not backbone_prefix:
            layer_id = backbone.layer_id(name)
        else:
            layer_id = num_layers - 1  # outside the backbone: full lr
        decay = uses_weight_decay(name, parameter, no_decay_keywords)
        key = (layer_id, decay)
        if key not in groups:
            scale = layer_decay ** (num_layers - 1 - layer_id)
            groups[key] = {
                "name": f"layer_{layer_id}_{'decay' if decay else 'no_decay'}",
                "layer_id": layer_id,
                "params": [],
                "param_names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(parameter)
        groups[key]["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]
