"""The AiT task-solver: backbone + decoder + depth / instance heads over frozen tokenizers."""

from ait.model.depth_head import DepthHead
from ait.model.instance_head import InstanceHead, crop_masks, paste_masks
from ait.model.solver import TaskSolver, build_task_solver, build_vocab, load_frozen_tokenizer

__all__ = [
    "DepthHead",
    "InstanceHead",
    "TaskSolver",
    "build_task_solver",
    "build_vocab",
    "crop_masks",
    "load_frozen_tokenizer",
    "paste_masks",
]
