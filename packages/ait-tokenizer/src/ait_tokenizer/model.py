"""The VQ-VAE tokenizer: convolutional encoder, EMA quantizer, convolutional decoder.

Layer structure (the original's, for any channel list ``c_1..c_n``):
- encoder: n convolutions 4x4 stride 2 (1 -> c_1 -> ... -> c_n), each followed by ReLU; ``num_res_blocks``
  residual blocks at c_n; a 1x1 convolution to the code dimension. Downsample 2**n.
- decoder: 1x1 code dimension -> c_n, ReLU; residual blocks at c_n; n transposed convolutions 4x4 stride 2
  (c_n -> c_n -> c_{n-1} -> ... -> c_1), each followed by ReLU; a 1x1 convolution to one channel.
- residual block: 3x3, ReLU, 3x3, ReLU, 1x1, plus the input. No normalisation layers anywhere.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ait_tokenizer.augment import mask_augment
from ait_tokenizer.quantizer import EMAVectorQuantizer
from ait_tokenizer.soft_lookup import soft_lookup

KINDS = ("depth", "mask")


@dataclass(frozen=True)
class TokenizerConfig:
    """Everything needed to rebuild a tokenizer (stored in checkpoints as JSON)."""

    kind: str = "depth"  # "depth": raw metres, 0 = invalid; "mask": [0, 1], scaled to [-1, 1] inside
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_blocks: int = 2
    num_codes: int = 128
    code_dim: int = 512
    input_size: tuple[int, int] = (480, 480)  # the training crop; the model is fully convolutional
    # quantizer
    decay: float = 0.99
    eps: float = 1e-5
    commitment_weight: float = 0.25
    kmeans_init: bool = False
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.0
    # mask augmentation (training forward only): share of patches blanked and their side in pixels
    mask_ratio: float = 0.0
    mask_patch_size: int = 16
    preset: str | None = None  # registry name it came from, if any

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not self.channels:
            raise ValueError("channels must name at least one downsampling stage")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        if any(s % (2 ** len(self.channels)) for s in self.input_size):
            raise ValueError(
                f"input_size {self.input_size} must be divisible by the downsample {2 ** len(self.channels)}"
            )

    @property
    def downsample(self) -> int:
        return 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown tokenizer config keys {sorted(unknown)}; expected a subset of {sorted(known)}"
            )
        return cls(**data)


@dataclass
class TokenizerOutput:
    """Result of the training forward."""

    recon: torch.Tensor  # (B, 1, H, W) in the input's units (metres / [0, 1])
    ids: torch.Tensor  # (B, h, w) int64
    loss: torch.Tensor  # recon_loss + commit_loss
    recon_loss: torch.Tensor
    commit_loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def build_encoder(
    in_channels: int, channels: tuple[int, ...], num_res_blocks: int, code_dim: int
) -> nn.Sequential:
    layers: list[nn.Module] = []
    previous = in_channels
    for width in channels:
        layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1), nn.ReLU()]
        previous = width
    layers += [ResidualBlock(previous) for _ in range(num_res_blocks)]
    layers.append(nn.Conv2d(previous, code_dim, 1))
    return nn.Sequential(*layers)


def build_decoder(
    out_channels: int, channels: tuple[int, ...], num_res_blocks: int, code_dim: int
) -> nn.Sequential:
    widest = channels[-1]
    # The ReLU after the first 1x1 convolution is the original's (it has no parameters, so only the
    # outputs show it); with it the Sequential indices equal the original's `decoder.N.*` keys.
    layers: list[nn.Module] = [nn.Conv2d(code_dim, widest, 1), nn.ReLU()]
    layers += [ResidualBlock(widest) for _ in range(num_res_blocks)]
    previous = widest
    for width in reversed(channels):
        layers += [nn.ConvTranspose2d(previous, width, 4, stride=2, padding=1), nn.ReLU()]
        previous = width
    layers.append(nn.Conv2d(previous, out_channels, 1))
    return nn.Sequential(*layers)


class VQVAETokenizer(nn.Module):
    """Depth or instance-mask tokenizer. See ``docs/CONTRACTS.md`` (ait_tokenizer) for the API."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(1, config.channels, config.num_res_blocks, config.code_dim)
        self.quantizer = EMAVectorQuantizer(
            config.code_dim,
            config.num_codes,
            decay=config.decay,
            eps=config.eps,
            commitment_weight=config.commitment_weight,
            kmeans_init=config.kmeans_init,
            kmeans_iters=config.kmeans_iters,
            dead_code_threshold=config.dead_code_threshold,
        )
        self.decoder = build_decoder(1, config.channels, config.num_res_blocks, config.code_dim)
        # soft-lookup implementation of `soft_embed` / `decode_soft` ("auto", "triton" or "torch"; see
        # `ait_tokenizer.soft_lookup`): the task-solver sets it from its config
        self.soft_lookup_backend = "auto"

    # ----------------------------------------------------------------- properties
    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def preset(self) -> str | None:
        return self.config.preset

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @property
    def code_dim(self) -> int:
        return self.config.code_dim

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) codebook, detached: read it, do not write it (the EMA owns it)."""
        return self.quantizer.embed.detach()

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) of an (height, width) map; ValueError unless the downsample divides both."""
        if height % self.downsample or width % self.downsample or height <= 0 or width <= 0:
            raise ValueError(
                f"spatial size must be positive multiples of the downsample {self.downsample}, "
                f"got {height}x{width}"
            )
        return height // self.downsample, width // self.downsample

    # ----------------------------------------------------------------- value scaling and checks
    def _check_maps(self, x: torch.Tensor, name: str = "x") -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor (B, 1, H, W), got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"{name} must be (B, 1, H, W), got shape {tuple(x.shape)}")
        self.token_grid(x.shape[2], x.shape[3])
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError(
                f"{name} must be finite ({'metres' if self.kind == 'depth' else '[0, 1]'}), got NaN/inf"
            )
        if self.kind == "mask" and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"mask {name} must lie in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]"
            )

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1 if self.kind == "mask" else x

    def _from_model(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1) / 2 if self.kind == "mask" else y

    def _finish(self, y: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Decoder output -> user units; masks are clamped to [0, 1] unless ``clamp=False``."""
        y = self._from_model(y)
        return y.clamp(0, 1) if self.kind == "mask" and clamp else y

    def _check_logits(self, logits: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        """Logits (B, h*w, K) or (B, h, w, K) -> (B, h, w, K)."""
        if logits.shape[-1] != self.num_codes:
            raise ValueError(
                f"logits last dimension must be the codebook size {self.num_codes}, got shape {tuple(logits.shape)}"
            )
        if logits.dim() == 4:
            if grid is not None and tuple(logits.shape[1:3]) != tuple(grid):
                raise ValueError(f"logits grid {tuple(logits.shape[1:3])} does not match grid={grid}")
            return logits
        if logits.dim() != 3:
            raise ValueError(f"logits must be (B, h*w, K) or (B, h, w, K), got shape {tuple(logits.shape)}")
        length = logits.shape[1]
        if grid is None:
            side = math.isqrt(length)
            if side * side != length:
                raise ValueError(f"{length} tokens are not a square grid: pass grid=(h, w)")
            grid = (side, side)
        if grid[0] * grid[1] != length:
            raise ValueError(f"grid {grid} holds {grid[0] * grid[1]} tokens, logits have {length}")
        # A view keeps a strided slice of a larger vocabulary tensor uncopied where possible.
        return logits.unflatten(1, tuple(grid))

    # ----------------------------------------------------------------- public API
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output before quantisation, channel-last (B, h, w, D)."""
        return self.encoder(self._to_model(x)).permute(0, 2, 3, 1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) metres or [0, 1] -> token ids (B, h, w), row-major; never updates the codebook."""
        self._check_maps(x)
        # float64 (numpy's default) or half maps are the same picture: encode them in the weights' dtype
        latents = self.encode_latents(x.to(self.codebook.dtype))
        return self.quantizer.nearest(latents.reshape(-1, self.code_dim)).view(latents.shape[:-1])

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Channel-last code vectors (B, h, w, D) -> decoder output in model units (B, 1, H, W)."""
        return self.decoder(z.permute(0, 3, 1, 2))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, h, w) -> (B, 1, H, W) in metres / [0, 1]."""
        if ids.dim() != 3:
            raise ValueError(f"ids must be (B, h, w), got shape {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"ids must be an integer tensor, got dtype {ids.dtype}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_codes):
            raise ValueError(
                f"token ids must be in [0, {self.num_codes}), got values in [{int(ids.min())}, {int(ids.max())}]"
            )
        return self._finish(self.decode_latents(self.quantizer.lookup(ids.long())))

    def soft_embed(
        self, logits: torch.Tensor, tau: float = 1.0, grid: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """softmax(tau * logits) @ codebook -> (B, h, w, D); logits (B, h*w, K) or (B, h, w, K)."""
        logits = self._check_logits(logits, grid)
        return soft_lookup(logits, self.codebook, tau, backend=self.soft_lookup_backend)

    def decode_soft(
        self,
        logits: torch.Tensor,
        tau: float = 1.0,
        grid: tuple[int, int] | None = None,
        clamp: bool = True,
    ) -> torch.Tensor:
        """The soft token: decoder(softmax(tau * logits) @ codebook) -> (B, 1, H, W); differentiable in logits.

        Masks come back clamped to [0, 1]; ``clamp=False`` returns the raw (denormalised) decoder output, as
        the original's ``decode_soft`` does: a loss on it keeps its gradient where a prediction overshoots
        [0, 1] (the task-solver's mask MSE). Depth maps are never clamped.
        """
        z = self.soft_embed(logits, tau, grid)
        return self._finish(self.decode_latents(z.to(self.codebook.dtype)), clamp=clamp)

    def forward(
        self,
        x: torch.Tensor,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> TokenizerOutput:
        """Training forward: reconstruction of ``target`` (default ``x``) from (augmented) ``x``.

        In training mode with ``mask_ratio > 0`` the encoder input gets mask augmentation (patches set to 0,
        drawn from ``generator``); the target is untouched. Depth loss: MSE over pixels whose target is > 0;
        mask loss: MSE over all pixels in [-1, 1] units. Plus the commitment loss.
        """
        self._check_maps(x)
        target = x if target is None else target
        self._check_maps(target, "target")
        if target.shape != x.shape:
            raise ValueError(f"target shape {tuple(target.shape)} must equal input shape {tuple(x.shape)}")
        if self.training and self.config.mask_ratio > 0:
            x = mask_augment(
                x, ratio=self.config.mask_ratio, patch_size=self.config.mask_patch_size, generator=generator
            )
        latents = self.encode_latents(x)
        quantized, ids, commit_loss = self.quantizer(latents)
        output = self.decode_latents(quantized)
        recon_loss = reconstruction_loss(
            output, self._to_model(target), valid=target > 0 if self.kind == "depth" else None
        )
        metrics = dict(self.quantizer.last_metrics) if self.training else {}
        return TokenizerOutput(
            recon=self._from_model(output),
            ids=ids,
            loss=recon_loss + commit_loss,
            recon_loss=recon_loss,
            commit_loss=commit_loss,
            metrics=metrics,
        )


def reconstruction_loss(
    output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over the ``valid`` pixels (all when None); 0 (with a graph) when none is valid."""
    if valid is None:
        return F.mse_loss(output, target)
    squared = (output - target).pow(2) * valid
    return squared.sum() / valid.sum().clamp_min(1)
