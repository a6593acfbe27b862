"""Helpers for multi-process checks (they must be importable by spawned workers, so they live here)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ait_tokenizer.quantizer import EMAVectorQuantizer


def make_check_quantizer(seed: int = 0, **options) -> EMAVectorQuantizer:
    """A tiny float64 quantizer, identical in every process for the same seed."""
    torch.manual_seed(seed)
    return EMAVectorQuantizer(3, 5, **options).double().train()


def run_quantizer_steps(quantizer: EMAVectorQuantizer, batches: list[torch.Tensor], seed: int = 1) -> dict:
    """Feed ``batches`` through training forwards; returns the codebook state afterwards."""
    torch.manual_seed(seed)
    restarted = 0.0
    for batch in batches:
        quantizer(batch)
        restarted += quantizer.last_metrics.get("restarted_codes", 0.0)
    state = {name: buffer.clone() for name, buffer in quantizer.named_buffers()}
    state["restarted_codes"] = torch.tensor(restarted)
    return state


def ema_sync_worker(
    rank: int, world_size: int, init_file: str, batches: list[torch.Tensor], out_dir: str, options: dict
) -> None:
    """One rank of the distributed EMA check: rows are split by rank, statistics all-reduced."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        quantizer = make_check_quantizer(**options)
        local = [batch.chunk(world_size)[rank] for batch in batches]
        state = run_quantizer_steps(quantizer, local)
        torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def train_worker(rank: int, world_size: int, port: int, config: dict, out_dir: str, result_dir: str) -> None:
    """One rank of a torchrun-like training run (env:// rendezvous); saves its final weights per rank."""
    from ait_tokenizer.train import TokenizerTrainConfig, run_training

    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
        }
    )
    torch.set_num_threads(1)
    try:
        tokenizer, final = run_training(TokenizerTrainConfig(**config), out_dir)
        state = {name: tensor.clone() for name, tensor in tokenizer.state_dict().items()}
        torch.save({"final": str(final), "state": state}, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
