"""The detection-then-instances curriculum (curriculum.detection_iters): phase configs, the position
transfer, and a tiny end-to-end run."""

from __future__ import annotations

import pytest
import torch

from ait.config import ConfigError, create_config
from ait.engine import list_checkpoints, load_checkpoint, read_metrics
from ait.engine.curriculum import (
    detection_phase_config,
    instance_phase_config,
    train_with_curriculum,
    transfer_detection_positions,
)
from ait.model import build_task_solver

TINY = {"progress": False, "optim.max_iters": 4, "checkpoint_interval": 0, "log_interval": 1}


def _cfg(tmp_path, **over):
    return create_config(
        "cpu_joint_tiny", {**TINY, "curriculum.detection_iters": 2, "work_dir": str(tmp_path / "run"), **over}
    )


def test_phase_configs_split_the_steps_and_swap_the_task(tmp_path):
    cfg = _cfg(tmp_path, **{"optim.max_iters": 10, "optim.warmup_iters": 4, "curriculum.detection_iters": 3})
    det = detection_phase_config(cfg)
    assert det.model.tasks == ("depth", "det") and det.model.mask_tokenizer is None
    assert det.optim.max_iters == 3 and det.curriculum.detection_iters == 0
    assert det.work_dir.startswith(cfg.work_dir)
    ins = instance_phase_config(cfg, tmp_path / "det.pt")
    assert ins.model.tasks == cfg.model.tasks and ins.optim.max_iters == 7
    assert ins.load_from == str(tmp_path / "det.pt") and ins.curriculum.detection_iters == 0
    assert det.optim.max_iters + ins.optim.max_iters == cfg.optim.max_iters


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"curriculum.detection_iters": 4}, r"curriculum.detection_iters: expected fewer steps than"),
        ({"curriculum.detection_iters": -1}, r"curriculum.detection_iters: expected an int >= 0"),
    ],
)
def test_bad_detection_phases_are_config_errors(tmp_path, over, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(tmp_path, **over)


def test_detection_phase_needs_instances(tmp_path):
    with pytest.raises(ConfigError, match=r"curriculum.detection_iters: expected 0 without task insseg"):
        create_config("cpu_depth_tiny", {"curriculum.detection_iters": 2, "optim.max_iters": 4})


def test_positions_of_box_and_class_slots_come_from_the_detection_sequence(tmp_path):
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    det = build_task_solver(detection_phase_config(cfg))
    ins = build_task_solver(cfg)
    before = ins.decoder.task_positions["insseg"].detach().clone()
    copied = transfer_detection_positions(ins, det)
    per_object, objects = ins.instance_head.per_object, cfg.model.max_objects
    assert copied == 5 * objects
    after, source = ins.decoder.task_positions["insseg"], det.decoder.task_positions["det"]
    for k in range(objects):
        assert torch.equal(after[k * per_object : k * per_object + 5], source[5 * k : 5 * k + 5])
        # mask slots keep their own positions
        assert torch.equal(
            after[k * per_object + 5 : (k + 1) * per_object],
            before[k * per_object + 5 : (k + 1) * per_object],
        )
    assert torch.equal(ins.decoder.task_prompts["insseg"], det.decoder.task_prompts["det"])


def test_curriculum_run_trains_detection_then_instances(tmp_path):
    cfg = _cfg(tmp_path)
    messages: list[str] = []
    trainer, result = train_with_curriculum(cfg, evaluate=False, log=messages.append)
    assert result.step == 2  # the instance phase's own steps
    det_dir = tmp_path / "run" / "detection_phase"
    weights = torch.load(det_dir / "detection_final.pt", weights_only=True)
    assert "decoder.task_positions.det" in weights and "decoder.task_positions.insseg" not in weights
    det_records = [r for r in read_metrics(det_dir) if r["kind"] == "train"]
    assert [r["step"] for r in det_records] == [1, 2] and all("det_ce" in r for r in det_records)
    ins_records = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert [r["step"] for r in ins_records] == [1, 2] and all("insseg_ce" in r for r in ins_records)
    loaded = [m for m in messages if m.startswith("load_from") and "detection_final.pt" in m]
    assert loaded and "tensors loaded" in loaded[0]
    assert any("positions carried over" in m for m in messages)
    assert trainer.model.instance_head.task == "insseg"


def test_with_a_weight_average_each_phase_hands_on_its_average(tmp_path, monkeypatch):
    from ait.engine.ema import WeightEma

    starts: list[dict] = []  # each phase's average as its first update finds it
    update = WeightEma.update

    def recording_update(self, step):
        if step == 1:
            starts.append(self.state_dict())
        update(self, step)

    monkeypatch.setattr(WeightEma, "update", recording_update)
    cfg = _cfg(tmp_path, **{"optim.ema_decay": 0.5})
    trainer, result = train_with_curriculum(cfg, evaluate=False, log=lambda _: None)
    det_dir = tmp_path / "run" / "detection_phase"
    handed_on = torch.load(det_dir / "detection_final.pt", weights_only=True)
    det_state = load_checkpoint(list_checkpoints(det_dir)[-1][1])
    assert handed_on.keys() >= det_state["ema"].keys()
    for key, value in det_state["ema"].items():
        assert torch.equal(handed_on[key], value), key
    assert any(not torch.equal(det_state["model"][k], v) for k, v in det_state["ema"].items())
    ins_state = load_checkpoint(result.checkpoint)
    for key, value in ins_state["ema"].items():
        assert torch.equal(trainer.model.state_dict()[key], value), key
    # the instance phase's average starts from the carried-over prompt and box/class positions
    assert len(starts) == 2
    instance_start, per_object = starts[1], trainer.model.instance_head.per_object
    det_positions = handed_on["decoder.task_positions.det"]
    assert torch.equal(instance_start["decoder.task_prompts.insseg"], handed_on["decoder.task_prompts.det"])
    for j in range(5):
        assert torch.equal(
            instance_start["decoder.task_positions.insseg"][per_object + j], det_positions[5 + j]
        )
