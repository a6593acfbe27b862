"""Training/evaluation engine: optimiser and schedules, checkpoints, torchrun/DDP, metrics logging."""

from ait.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_torch_save,
    check_config_compatible,
    checkpoint_path,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
)
from ait.engine.distributed import DistInfo, cleanup_distributed, init_distributed
from ait.engine.evaluate import evaluate_solver
from ait.engine.logging import MetricsLogger, read_metrics
from ait.engine.optim import build_optimizer, build_scheduler, lr_factor
from ait.engine.trainer import NonFiniteLossError, Trainer, TrainResult, seed_everything, train

__all__ = [
    "CHECKPOINT_FORMAT",
    "DistInfo",
    "MetricsLogger",
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "atomic_torch_save",
    "build_optimizer",
    "build_scheduler",
    "check_config_compatible",
    "checkpoint_path",
    "cleanup_distributed",
    "evaluate_solver",
    "find_latest_checkpoint",
    "init_distributed",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "lr_factor",
    "read_metrics",
    "seed_everything",
    "train",
]
