"""SwinV2 backbones built by timm, configured like the original AiT backbone.

timm's `SwinTransformerV2` provides the blocks, attention (cosine attention, continuous position bias with
`pretrained_window_sizes` scaling, the same as the original's `norm8_log_bylayer` tables), patch merging and
residual post-norm. Three things the original does that timm's constructor cannot express are configured on
timm's own modules after construction, changing no parameter:

1. Per-stage windows (30/30/30/15) and per-stage shift switches (depth: no shifts in stages 3-4). timm takes
   one window size for every stage; we call timm's `SwinTransformerV2Stage.set_input_size` per stage with the
   stage's window and, where the stage must not shift, zero the block's target shift first.
2. `always_partition=True`: timm otherwise shrinks a window to the nominal map size and drops the shift when
   the map is not larger than the window (e.g. 30x30 maps at 480 px). The original keeps fixed windows and
   pads, so that a 480x640 input sees the same windows as a 480x480 one.
3. Pad-then-shift. When a map is not a multiple of the window (640 px: 160 -> 180 with window 30) and the
   block shifts, the original pads first, rolls the padded map, and masks on the padded geometry. timm rolls
   the unpadded map and then pads, so the wrapped-around rows land inside an unmasked region and attend to the
   opposite border. `PadThenShiftBlock` overrides only `_attn` to restore the original order.
"""

from __future__ import annotations

import os
from functools import partial

import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer_v2 import SwinTransformerV2Block, window_partition, window_reverse
from torch import nn

from .presets import BackbonePreset, get_preset


class PadThenShiftBlock(SwinTransformerV2Block):
    """timm's SwinV2 block with the original's window order: pad to window multiples, then cyclic shift.

    Same parameters and state-dict keys as `SwinTransformerV2Block`; the shift mask is always computed for the
    padded map of the actual input, so any input size works.
    """

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, channels = x.shape
        win_h, win_w = self.window_size
        pad_h = (win_h - height % win_h) % win_h
        pad_w = (win_w - width % win_w) % win_w
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        padded_size = (height + pad_h, width + pad_w)

        has_shift = any(self.shift_size)
        if has_shift:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
            attn_mask = self.get_attn_mask(x)  # timm's mask builder, evaluated on the padded, rolled map
        else:
            attn_mask = None

        windows = window_partition(x, self.window_size).view(-1, self.window_area, channels)
        windows = self.attn(windows, mask=attn_mask)
        x = window_reverse(windows.view(-1, win_h, win_w, channels), self.window_size, padded_size)

        if has_shift:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :height, :width, :].contiguous()


class ConvStem(nn.Module):
    """Early convolutions in place of the patch embedding (Xiao et al. 2021): per factor of two,
    a 3x3 stride-2 and a 3x3 stride-1 conv, each with BatchNorm and ReLU, then a 1x1 projection to the
    embedding width. Same input/output shapes as the strided-conv patch embedding it replaces
    (``(B, 3, H, W) -> (B, embed_dim, H/patch, W/patch)``).

    Why: a transformer trained from scratch on a few thousand small images barely learns image -> depth
    through a single linear patch projection (measured: RMSE at the level of a per-pixel mean map), while
    the same stages behind this stem do; the convolutions supply the local inductive bias pretraining
    otherwise provides.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, width = in_chans, max(8, embed_dim // 2 ** (patch_size.bit_length() - 2))
        for _ in range(patch_size.bit_length() - 1):  # log2(patch_size) halvings
            for stride in (2, 1):
                layers += [
                    nn.Conv2d(channels, width, 3, stride, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            width = min(width * 2, embed_dim)
        layers.append(nn.Conv2d(channels, embed_dim, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def _configure_stage_windows(model: nn.Module, preset: BackbonePreset) -> None:
    """Give each stage its own window and shift switch, using timm's `set_input_size` (see module doc)."""
    grid_h, grid_w = model.patch_embed.grid_size
    for index, stage in enumerate(model.layers):
        for block in stage.blocks:
            if not preset.shift_stages[index]:
                block.target_shift_size = (
                    0,
                    0,
                )  # timm re-derives shift = window // 2 only from a non-zero target
            block.__class__ = PadThenShiftBlock
        scale = 2 ** max(index - 1, 0)  # stage i>0 starts with a patch merging of the previous stage's map
        stage.set_input_size(
            feat_size=(grid_h // scale, grid_w // scale),
            window_size=(preset.window_sizes[index],) * 2,
            always_partition=True,
        )


class SwinV2Backbone(nn.Module):
    """A SwinV2 trunk from timm returning NCHW feature maps of the requested stages.

    Parameter names are timm's (`patch_embed.*`, `layers.{i}.downsample.*` at the start of stage i,
    `layers.{i}.blocks.{j}.*`, `norm.*` for the last stage's output LayerNorm); `stage_norms.{i}.*` hold the
    LayerNorms of other requested stages. The classification head is not kept.

    Attributes: `out_channels`, `stride` (of the deepest requested map), `num_layers` (layer ids for layer-wise
    lr decay: patch embedding, every block and every patch merging, plus one for what follows), `preset`.
    """

    def __init__(self, preset: BackbonePreset) -> None:
        super().__init__()
        self.preset = preset
        num_stages = preset.num_stages
        self.out_indices = tuple(sorted({i % num_stages for i in preset.out_indices}))
        deepest = self.out_indices[-1]

        model = timm.create_model(
            preset.timm_name,
            pretrained=False,
            num_classes=0,
            img_size=preset.img_size,
            patch_size=preset.patch_size,
            in_chans=preset.in_chans,
            embed_dim=preset.embed_dim,
            depths=preset.depths,
            num_heads=preset.num_heads,
            window_size=preset.window_sizes[0],
            pretrained_window_sizes=preset.pretrained_window_sizes,
            mlp_ratio=preset.mlp_ratio,
            drop_path_rate=preset.drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=preset.norm_eps),
            strict_img_size=False,  # any input that is a multiple of the stride; windows are padded
            always_partition=True,
        )
        _configure_stage_windows(model, preset)
        if preset.stem == "conv":
            # timm's PatchEmbed keeps its size checks, channels-last output and norm; only the projection changes
            model.patch_embed.proj = ConvStem(preset.in_chans, preset.embed_dim, preset.patch_size)

        self.patch_embed = model.patch_embed
        # Stages after the deepest requested one are never run: drop them (as timm's prune does).
        self.layers = model.layers[: deepest + 1]
        self.norm = model.norm if deepest == num_stages - 1 else None
        self.stage_norms = nn.ModuleDict(
            {
                str(i): nn.LayerNorm(model.feature_info[i]["num_chs"], eps=preset.norm_eps)
                for i in self.out_indices
                if i != num_stages - 1
            }
        )
        self.feature_info = [dict(model.feature_info[i], index=i) for i in self.out_indices]
        self.out_channels = model.feature_info[deepest]["num_chs"]
        self.stride = model.feature_info[deepest]["reduction"]

        # Layer ids as in the original's SwinLayerDecayOptimizerConstructor: 0 for the patch embedding, then
        # every block and every patch merging in order (a merging counts at the end of the stage before it),
        # and num_layers - 1 for everything else (output norms, and outside the backbone).
        self._block_ids: dict[tuple[int, int], int] = {}
        self._merge_ids: dict[int, int] = {}
        next_id = 1
        for i, depth in enumerate(preset.depths):
            if i > 0:
                self._merge_ids[i] = (
                    next_id  # timm's layers.i.downsample == the original's layers.(i-1).downsample
                )
                next_id += 1
            for j in range(depth):
                self._block_ids[(i, j)] = next_id
                next_id += 1
        self.num_layers = next_id + 1  # + 1 for the head (everything after the trunk)
        self._param_names = {name for name, _ in self.named_parameters()}

    # --- forward ------------------------------------------------------------------------------------------

    def _check_input(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor (B, C, H, W), got {type(images).__name__}")
        if not images.is_floating_point():
            raise ValueError(f"images must be a floating-point tensor, got dtype {images.dtype}")
        if images.ndim != 4 or images.shape[1] != self.preset.in_chans:
            raise ValueError(
                f"expected images of shape (B, {self.preset.in_chans}, H, W), got {tuple(images.shape)}"
            )
        height, width = images.shape[-2:]
        if height % self.stride or width % self.stride:
            raise ValueError(
                f"image size {height}x{width} must be a multiple of the backbone stride {self.stride} "
                f"(pad or resize the input; the windows {self.preset.window_sizes} need no other constraint, "
                "maps are padded to window multiples)"
            )

    def forward_stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """NCHW maps of every requested stage, each after its LayerNorm, shallowest first."""
        self._check_input(images)
        x = self.patch_embed(images)  # (B, H/4, W/4, C), channels last as timm's stages expect
        outputs = []
        for index, stage in enumerate(self.layers):
            x = stage(x)
            if index in self.out_indices:
                norm = self.norm if index == self.preset.num_stages - 1 else self.stage_norms[str(index)]
                outputs.append(norm(x).permute(0, 3, 1, 2).contiguous())
        return outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(B, 3, H, W) -> (B, out_channels, H/stride, W/stride); a list if several stages are requested."""
        outputs = self.forward_stages(images)
        return outputs[0] if len(outputs) == 1 else outputs

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (timm's stage flag) to save activation memory."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    # --- layer-wise lr decay --------------------------------------------------------------------------------

    def layer_id(self, param_name: str) -> int:
        """Layer id of one of this backbone's parameters (names as in `named_parameters()`)."""
        if param_name not in self._param_names:
            raise ValueError(
                f"{param_name!r} is not a parameter of this backbone (names look like 'layers.0...')"
            )
        parts = param_name.split(".")
        if parts[0] == "patch_embed":
            return 0
        if parts[0] == "layers":
            stage = int(parts[1])
            if parts[2] == "downsample":
                return self._merge_ids[stage]
            if parts[2] == "blocks":
                return self._block_ids[(stage, int(parts[3]))]
        return self.num_layers - 1

    def extra_repr(self) -> str:
        p = self.preset
        return (
            f"preset={p.name!r}, embed_dim={p.embed_dim}, depths={p.depths}, windows={p.window_sizes}, "
            f"shift_stages={p.shift_stages}, out_indices={self.out_indices}, stride={self.stride}"
        )


def create_backbone(name: str, *, pretrained: str | os.PathLike | None = None, **overrides) -> SwinV2Backbone:
    """Build the preset `name` (see `list_backbones()`), with preset fields replaced by `overrides`.

    `pretrained`: path of a local checkpoint (SimMIM/original or timm layout, .pth or .safetensors); nothing
    is downloaded. The load report is kept as `backbone.checkpoint_report`.
    """
    if pretrained is True:
        raise ValueError("pretrained weights are never downloaded; pass the path of a local checkpoint file")
    backbone = SwinV2Backbone(get_preset(name, **overrides))
    backbone.checkpoint_report = None
    if pretrained:
        from .checkpoint import load_backbone_checkpoint

        backbone.checkpoint_report = load_backbone_checkpoint(backbone, pretrained)
    return backbone
