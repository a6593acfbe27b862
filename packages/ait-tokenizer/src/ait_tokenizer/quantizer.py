"""EMA vector quantizer (VQ-VAE v2 style), with what the original lacks.

The codebook is not a parameter: it follows exponential moving averages of the encoder outputs assigned to
each code (decay 0.99, Laplace smoothing 1e-5), the encoder is pulled towards its code by a commitment loss
(weight 0.25), and gradients cross the quantisation by the straight-through estimator.

Beyond the original:
- ``kmeans_init``: the first training batch seeds the codebook by k-means (no dead codes from the start);
- ``dead_code_threshold``: codes whose EMA usage falls below it are restarted on random vectors of the batch;
- utilisation metrics of every training batch (perplexity, fraction of codes used) in ``last_metrics``;
- under ``torch.distributed`` the per-batch EMA statistics are summed over ranks before the update, and any
  random choice (k-means seeds, restarts) is broadcast from rank 0, so every rank holds the same codebook.
  The update then equals the single-process update on the concatenation of the ranks' batches.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed_world() -> int:
    """Number of processes whose statistics must be combined (1 when not running distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed_world() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed_world() > 1:
        dist.broadcast(tensor, src=0)
    return tensor


def _gather_rows(samples: torch.Tensor) -> torch.Tensor:
    """All ranks' rows concatenated in rank order (identical result to one process on the full batch)."""
    world = _distributed_world()
    if world == 1:
        return samples
    counts = [torch.zeros(1, dtype=torch.long, device=samples.device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([samples.shape[0]], device=samples.device))
    largest = int(max(c.item() for c in counts))
    padded = samples.new_zeros(largest, samples.shape[1])
    padded[: samples.shape[0]] = samples
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts)])


def kmeans(samples: torch.Tensor, num_clusters: int, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on rows of ``samples`` -> (centroids (K, D), cluster sizes (K,)).

    Seeds are chosen by k-means++ (each next seed drawn with probability proportional to its squared
    distance from the nearest seed so far), so two seeds rarely start in one cluster; with fewer distinct
    rows than clusters the rest repeat rows. An empty cluster keeps its previous centroid. Uses the global
    torch RNG, so seeded runs repeat.
    """
    num_samples = samples.shape[0]
    first = int(torch.randint(0, num_samples, (1,), device=samples.device))
    chosen = [first]
    nearest = (samples - samples[first]).pow(2).sum(dim=1)
    for _ in range(num_clusters - 1):
        total = nearest.sum()
        if total > 0:
            pick = int(torch.multinomial(nearest / total, 1))
        else:  # every row already coincides with a seed
            pick = int(torch.randint(0, num_samples, (1,), device=samples.device))
        chosen.append(pick)
        nearest = torch.minimum(nearest, (samples - samples[pick]).pow(2).sum(dim=1))
    centroids = samples[torch.tensor(chosen, device=samples.device)].clone()
    sizes = torch.zeros(num_clusters, dtype=samples.dtype, device=samples.device)
    for _ in range(iters):
        assignment = torch.cdist(samples, centroids).argmin(dim=1)
        sizes = torch.bincount(assignment, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, samples)
        nonempty = sizes > 0
        centroids[nonempty] = sums[nonempty] / sizes[nonempty, None]
    return centroids, sizes


class EMAVectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation of the last dimension with an EMA-updated codebook.

    ``forward(x)`` takes ``(..., dim)`` and returns ``(quantized, indices, loss)``: ``quantized`` has the
    shape of ``x`` and carries straight-through gradients to ``x``; ``indices`` is ``x.shape[:-1]`` (int64);
    ``loss`` is ``commitment_weight * mse(x, sg(quantized))``. The codebook is updated (EMA, restarts,
    k-means) only when ``update`` is true, by default in training mode.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment_weight: float = 0.25,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        sync_distributed: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.eps = eps
        self.commitment_weight = commitment_weight
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.sync_distributed = sync_distributed

        # The original's initial state: codebook N(0, 1), cluster sizes 0 and the EMA sums N(0, 1) drawn
        # independently of the codebook. A code that is never assigned therefore jumps at the first update
        # to ema_sum / (Laplace-smoothed ~0 count): the original's behaviour, which its checkpoints encode.
        # k-means initialisation (our option) overwrites all three from the first batch.
        self.register_buffer("embed", torch.randn(codebook_size, dim))
        self.register_buffer("ema_cluster_size", torch.zeros(codebook_size))
        self.register_buffer("ema_embed_sum", torch.randn(codebook_size, dim))
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        self.last_metrics: dict[str, float] = {}

    # ----------------------------------------------------------------- lookup
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the closest code (squared Euclidean) for each row of ``flat`` (N, dim)."""
        embed = self.embed.to(flat.dtype)
        distances = (
            flat.pow(2).sum(dim=1, keepdim=True) - 2 * flat @ embed.t() + embed.pow(2).sum(dim=1)[None, :]
        )
        return distances.argmin(dim=1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors of ``indices`` (any shape) -> ``indices.shape + (dim,)``."""
        return F.embedding(indices, self.embed)

    # ----------------------------------------------------------------- training-time codebook updates
    def _sync(self) -> bool:
        return self.sync_distributed and _distributed_world() > 1

    @torch.no_grad()
    def _initialise_by_kmeans(self, flat: torch.Tensor) -> None:
        samples = _gather_rows(flat) if self._sync() else flat
        centroids, sizes = kmeans(samples.to(self.embed.dtype), self.codebook_size, self.kmeans_iters)
        if self._sync():
            # Every rank ran k-means on the same rows but seeded with its own RNG: rank 0's result wins.
            _broadcast_from_rank0(centroids)
            _broadcast_from_rank0(sizes)
        self.embed.copy_(centroids)
        self.ema_cluster_size.copy_(sizes)
        self.ema_embed_sum.copy_(centroids * sizes[:, None])
        self.initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """One EMA step from the batch; returns the (all-reduced) per-code counts of the batch."""
        onehot = F.one_hot(indices, self.codebook_size).to(self.embed.dtype)
        batch_counts = onehot.sum(dim=0)
        batch_sums = onehot.t() @ flat.to(self.embed.dtype)
        if self._sync():
            _all_reduce_sum(batch_counts)
            _all_reduce_sum(batch_sums)
        self.ema_cluster_size.mul_(self.decay).add_(batch_counts, alpha=1 - self.decay)
        # Laplace smoothing keeps every count positive while preserving their total. As in the original,
        # the smoothed counts are what is kept (the next step decays them, not the raw counts).
        total = self.ema_cluster_size.sum()
        self.ema_cluster_size.add_(self.eps).div_(total + self.codebook_size * self.eps).mul_(total)
        self.ema_embed_sum.mul_(self.decay).add_(batch_sums, alpha=1 - self.decay)
        self.embed.copy_(self.ema_embed_sum / self.ema_cluster_size[:, None])
        return batch_counts

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> int:
        dead = self.ema_cluster_size < self.dead_code_threshold
        if self._sync():
            _broadcast_from_rank0(dead)
        num_dead = int(dead.sum())
        if num_dead == 0:
            return 0
        candidates = _gather_rows(flat) if self._sync() else flat
        picks = torch.randint(0, candidates.shape[0], (num_dead,), device=flat.device)
        if self._sync():
            _broadcast_from_rank0(picks)
        replacement = candidates[picks].to(self.embed.dtype)
        self.embed[dead] = replacement
        # The restarted code starts as if it had just been used `threshold` times at that vector.
        self.ema_cluster_size[dead] = self.dead_code_threshold
        self.ema_embed_sum[dead] = replacement * self.dead_code_threshold
        return num_dead

    # ----------------------------------------------------------------- forward
    def forward(
        self, x: torch.Tensor, update: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected last dimension {self.dim}, got shape {tuple(x.shape)}")
        update = self.training if update is None else update
        flat = x.reshape(-1, self.dim)
        if update and not bool(self.initialised):
            self._initialise_by_kmeans(flat.detach())
        indices = self.nearest(flat.detach())
        # The batch is quantised with the codebook it was assigned under, before this step's update.
        quantized = self.lookup(indices).view_as(x).to(x.dtype)
        if update:
            batch_counts = self._ema_update(flat.detach(), indices)
            restarted = self._restart_dead_codes(flat.detach()) if self.dead_code_threshold > 0 else 0
            self.last_metrics = {**utilisation(batch_counts), "restarted_codes": float(restarted)}
        loss = self.commitment_weight * F.mse_loss(x, quantized.detach())
        # Straight-through: the forward value is the code, the gradient flows to x unchanged.
        quantized = x + (quantized - x).detach()
        return quantized, indices.view(x.shape[:-1]), loss


def utilisation(counts: torch.Tensor) -> dict[str, float]:
    """Perplexity exp(H(p)) of the code histogram and the fraction of codes used at least once."""
    total = counts.sum()
    if total <= 0:
        return {"perplexity": 0.0, "codes_used": 0.0}
    probs = counts / total
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return {"perplexity": math.exp(float(entropy)), "codes_used": float((counts > 0).float().mean())}
