"""The paper's detection-then-instances curriculum (`curriculum.detection_iters`) as two runs of one recipe.

The original trains a detection model first (`swinv2b_640reso_detonly`) and starts its instance and joint
models from it (`load_from`). Here both phases come from one config: the detection phase trains task "det"
(box + class sequences, 5 tokens per object, no mask tokenizer) for `detection_iters` steps with the same
backbone, decoder, data and schedule shape; the instance phase loads it and trains task "insseg" for the
rest of `optim.max_iters`. An instance sequence holds each object's box and class at the same offsets as
a detection sequence, only further apart, so the instance phase's position table starts from the
detection phase's at those offsets (and from its task prompt) instead of from noise.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ait.config import Config

DETECTION_TOKENS_PER_OBJECT = 5  # 4 box coordinates + class


def _scaled_warmup(cfg: Config, steps: int) -> int:
    return max(1, round(cfg.optim.warmup_iters * steps / cfg.optim.max_iters))


def schedule_part(cfg: Config, start: int, stop: int) -> Config:
    """A copy of `cfg` that trains steps [start, stop) of its run as a run of its own: stop - start steps, the
    warm-up scaled to them, the step milestones inside shifted to its start, no detection phase of its own."""
    part = copy.deepcopy(cfg)
    part.optim.max_iters = stop - start
    part.optim.warmup_iters = _scaled_warmup(cfg, stop - start)
    part.optim.step_milestones = tuple(m - start for m in cfg.optim.step_milestones if start < m <= stop)
    part.curriculum.detection_iters = 0
    return part


def detection_phase_config(cfg: Config) -> Config:
    """`cfg`'s detection phase: task det instead of insseg, `detection_iters` steps, its own work dir."""
    det = schedule_part(cfg, 0, cfg.curriculum.detection_iters)
    det.model.tasks = tuple("det" if task == "insseg" else task for task in cfg.model.tasks)
    det.model.mask_tokenizer = None
    det.model.decoding = {("det" if k == "insseg" else k): v for k, v in cfg.model.decoding.items()}
    det.work_dir = str(Path(cfg.work_dir) / "detection_phase")
    det.eval_interval = 0
    return det.validate()


def instance_phase_config(cfg: Config, detection_checkpoint: str | Path) -> Config:
    """`cfg`'s instance phase: the remaining steps, starting from the detection phase's weights."""
    ins = schedule_part(cfg, cfg.curriculum.detection_iters, cfg.optim.max_iters)
    ins.load_from = str(detection_checkpoint)
    return ins.validate()


@torch.no_grad()
def transfer_detection_positions(model: torch.nn.Module, detection: torch.nn.Module) -> int:
    """Copy the detection decoder's prompt and per-object box/class positions into the instance task's
    table (object k's slot j <- detection position 5k + j). Returns the number of positions copied."""
    source, target = detection.decoder, model.decoder
    det_positions, ins_positions = source.task_positions["det"], target.task_positions["insseg"]
    per_object = model.instance_head.per_object
    objects = min(ins_positions.shape[0] // per_object, det_positions.shape[0] // DETECTION_TOKENS_PER_OBJECT)
    for k in range(objects):
        for j in range(DETECTION_TOKENS_PER_OBJECT):
            ins_positions[k * per_object + j].copy_(det_positions[k * DETECTION_TOKENS_PER_OBJECT + j])
    target.task_prompts["insseg"].copy_(source.task_prompts["det"])
    return objects * DETECTION_TOKENS_PER_OBJECT


def train_with_curriculum(cfg: Config, resume: bool | str | None = None, **trainer_kwargs: Any):
    """Train `cfg`, with its detection phase first when `curriculum.detection_iters` > 0.

    Returns (the instance phase's Trainer, its TrainResult); without a detection phase, `cfg`'s own. A
    resumed run resumes the phase it stopped in (a finished detection phase is not trained again).
    """
    from ait.engine.trainer import Trainer

    if not cfg.curriculum.detection_iters:
        trainer = Trainer(cfg, **trainer_kwargs)
        return trainer, trainer.train(resume=resume)
    det_cfg = detection_phase_config(cfg)
    final = Path(det_cfg.work_dir) / "detection_final.pt"
    if not final.is_file():
        detection = Trainer(det_cfg, **trainer_kwargs)
        detection.train(resume=resume)
        if detection.dist.is_main:
            _save_weights(detection.model, final)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank reads the file next
        detection_model = detection.model
        del detection
    else:
        detection_model = None
    ins_cfg = instance_phase_config(cfg, final)
    trainer = Trainer(ins_cfg, **trainer_kwargs)
    if detection_model is None:  # resumed after the detection phase: rebuild it to read its positions
        from ait.engine.trainer import load_initial_weights
        from ait.model import build_task_solver

        detection_model = build_task_solver(det_cfg)
        load_initial_weights(detection_model, str(final), lambda message: None)
    copied = transfer_detection_positions(trainer.model, detection_model)
    if trainer.ema is not None:  # (a resumed phase then loads its own average)
        trainer.ema.restart()  # the average starts from the carried-over positions too
    trainer.log(
        f"curriculum: instance phase starts from the detection phase ({copied} positions carried over)"
    )
    return trainer, trainer.train(resume=resume)


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    from ait.engine.checkpoint import atomic_torch_save

    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
