"""Process-group setup under torchrun and the few collectives the engine needs.

`init_distributed()` reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT) and
initialises `env://` with gloo on CPU or nccl on GPU; without WORLD_SIZE it is a single process and every
collective here is the identity, so the same code path runs in both cases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "init_distributed",
    "is_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join torchrun's process group if WORLD_SIZE > 1; pick the device (`device` forces "cpu"/"cuda")."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        torch_device = torch.device("cuda", torch.cuda.current_device())
    else:
        torch_device = torch.device("cpu")
    if world_size <= 1:
        return DistInfo(0, 1, 0, torch_device, None)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise ValueError(f"WORLD_SIZE={world_size} but {var} is not set: launch with torchrun")
        dist.init_process_group(backend=backend, init_method="env://", world_size=world_size, rank=rank)
    return DistInfo(rank, world_size, local_rank, torch_device, backend)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def collective_device() -> torch.device:
    """Where tensors for a collective must live: NCCL only reduces CUDA tensors, gloo CPU ones."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy on the input's device; the input is untouched)."""
    out = tensor.detach().clone()
    if is_distributed():
        staged = out.to(collective_device())
        dist.all_reduce(staged, op=dist.ReduceOp.SUM)
        out = staged.to(tensor.device)
    return out


def all_reduce_mean(values: dict[str, float], device: torch.device | None = None) -> dict[str, float]:
    """Mean of each scalar over ranks (every rank must pass the same keys, in any order)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor(
        [float(values[k]) for k in keys], dtype=torch.float64, device=device or collective_device()
    )
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist()))


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order; `[obj]` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
