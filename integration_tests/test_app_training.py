"""End-to-end checks of the application with the real tiny task-solver on the CPU.

- 2-process DDP (torchrun, gloo): ranks end identical, and equal a 1-process run with the same global batch.
- kill -9 after N steps, then `ait train --resume`: the same final weights as an uninterrupted run.
- CLI smoke: `ait eval` and `ait predict` on the resulting checkpoint (and on an undecodable image).

Why the depth-only DDP comparison sets the auxiliary SILog weight 0: the token cross-entropy is normalised
by the all-reduced token count, so its DDP gradient is exactly the global-batch gradient, but SILog is a
square root over the *local* batch, which no gradient averaging can reproduce when several ranks hold depth
images. The joint comparison gives all depth images to one rank (global depth batch 1, as 4 NYU images over
many GPUs leave most ranks without one): there the local SILog is the global one, and the original's
scaling (SILog x local token count before the division by the mean count) makes the update exact, SILog
included. Dropout and drop-path are 0 in the CPU configs; augmentation and instance sequences (padding,
class corruption) are seeded per sample, so they are the same in both runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "_train_worker.py"
TIMEOUT = 900


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **extra)
    return env


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, env=_env(**env), cwd=ROOT)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["model"] if "model" in state else state


def _assert_same(a: dict, b: dict, rtol: float = 0.0, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


DDP_OPTIONS = [
    "optim.max_iters=6",
    "data.depth_batch=4",
    "loss.depth_aux_weight=0",
    "checkpoint_interval=0",
    "log_interval=3",
]


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29517",
            str(WORKER),
            "cpu_depth_tiny",
            str(ddp_dir),
            *DDP_OPTIONS,
        ]
    )
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    single = _run([sys.executable, str(WORKER), "cpu_depth_tiny", str(single_dir), *DDP_OPTIONS])
    assert single.returncode == 0, single.stderr[-4000:]

    rank0, rank1 = _weights(ddp_dir / "rank0.pt"), _weights(ddp_dir / "rank1.pt")
    _assert_same(rank0, rank1)  # DDP keeps ranks bit-identical
    one = _weights(single_dir / "rank0.pt")
    # same images, same gradients up to float summation order across ranks
    _assert_same(rank0, one, rtol=1e-4, atol=1e-5)
    # the logged loss is the mean over ranks, the same as the single run's
    ddp_loss = [line for line in ddp.stdout.splitlines() if line.startswith("step 6/6")]
    single_loss = [line for line in single.stdout.splitlines() if line.startswith("step 6/6")]
    assert ddp_loss and single_loss
    assert float(ddp_loss[0].split()[3]) == pytest.approx(float(single_loss[0].split()[3]), rel=1e-4)


JOINT_DDP_OPTIONS = [
    "optim.max_iters=6",
    "data.depth_batch=1",  # rank 1 holds the only depth image, rank 0 none
    "data.insseg_batch=2",
    "checkpoint_interval=0",
    "log_interval=3",
]


def test_joint_ddp_with_a_rank_without_depth_matches_one_process(tmp_path):
    """Every rank joins the same collectives whatever its batch holds (before: "non-finite loss" at step 1).

    The DDP run loads with a DataLoader worker, as the paper configs do (before: "collate needs at least one
    sample" on the rank without depth); the single run loads in-process, so the comparison also shows that
    workers change no image."""
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29518",
            str(WORKER),
            "cpu_joint_tiny",
            str(ddp_dir),
            *JOINT_DDP_OPTIONS,
            "data.num_workers=1",
        ]
    )
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    single = _run([sys.executable, str(WORKER), "cpu_joint_tiny", str(single_dir), *JOINT_DDP_OPTIONS])
    assert single.returncode == 0, single.stderr[-4000:]

    rank0, rank1 = _weights(ddp_dir / "rank0.pt"), _weights(ddp_dir / "rank1.pt")
    _assert_same(rank0, rank1)
    _assert_same(rank0, _weights(single_dir / "rank0.pt"), rtol=1e-4, atol=1e-5)
    ddp_loss = [line for line in ddp.stdout.splitlines() if line.startswith("step 6/6")]
    single_loss = [line for line in single.stdout.splitlines() if line.startswith("step 6/6")]
    assert ddp_loss and single_loss
    assert float(ddp_loss[0].split()[3]) == pytest.approx(float(single_loss[0].split()[3]), rel=1e-4)


JOINT_OPTIONS = ["optim.max_iters=6", "checkpoint_interval=2", "keep_checkpoints=0", "log_interval=2"]


@pytest.fixture(scope="module")
def joint_runs(tmp_path_factory):
    """An uninterrupted joint run and one killed after step 5 then resumed (checkpoints every 2 steps)."""
    base = tmp_path_factory.mktemp("joint")
    full = _run(
        [
            sys.executable,
            "-m",
            "ait",
            "train",
            "cpu_joint_tiny",
            "--no-eval",
            "--cfg-options",
            f"work_dir={base / 'full'}",
            *JOINT_OPTIONS,
        ]
    )
    assert full.returncode == 0, full.stderr[-4000:]
    killed = _run(
        [
            sys.executable,
            "-m",
            "ait",
            "train",
            "cpu_joint_tiny",
            "--no-eval",
            "--cfg-options",
            f"work_dir={base / 'resumed'}",
            *JOINT_OPTIONS,
        ],
        AIT_KILL_AFTER_STEP="5",
    )
    resumed = _run(
        [
            sys.executable,
            "-m",
            "ait",
            "train",
            "cpu_joint_tiny",
            "--resume",
            "--no-eval",
            "--cfg-options",
            f"work_dir={base / 'resumed'}",
            *JOINT_OPTIONS,
        ]
    )
    return base, killed, resumed


def test_killed_then_resumed_run_ends_with_the_same_weights(joint_runs):
    base, killed, resumed = joint_runs
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: no cleanup ran
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout and "at step 4" in resumed.stdout  # step 5 was lost and redone
    full = _weights(base / "full" / "checkpoints" / "iter_0000006.pt")
    again = _weights(base / "resumed" / "checkpoints" / "iter_0000006.pt")
    _assert_same(full, again)  # bit-identical
    a = torch.load(base / "full" / "checkpoints" / "iter_0000006.pt", weights_only=True)
    b = torch.load(base / "resumed" / "checkpoints" / "iter_0000006.pt", weights_only=True)
    assert a["data"] == b["data"]
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])


def test_cli_eval_and_predict_on_the_trained_checkpoint(joint_runs, tmp_path, capsys):
    from PIL import Image

    from ait.cli import main

    base, _, _ = joint_runs
    checkpoint = base / "full" / "checkpoints" / "iter_0000006.pt"
    assert (
        main(["eval", "cpu_joint_tiny", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.json")])
        == 0
    )
    table = capsys.readouterr().out
    assert "| D1 | D2 | D3 | Abs Rel | RMSE | Log10 | Box AP | Mask AP |" in table
    assert (tmp_path / "m.json").is_file()

    rng = np.random.default_rng(0)
    image = tmp_path / "room.png"
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(out)]) == 0
    depth_png = out / "room_depth.png"
    assert depth_png.is_file() and (out / "room_instances.png").is_file()
    depth = np.asarray(Image.open(depth_png))
    # every pixel is a prediction (clipped at min_depth as in evaluation), never 0 = "no measurement"
    assert depth.shape == (48, 80) and depth.dtype == np.uint16 and (depth > 0).all()

    # a file that is not an image among images: skipped with a warning naming it, the others predicted
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    assert main(["predict", "--checkpoint", str(checkpoint), str(image), str(broken), "--out", str(out)]) == 0
    assert f"ait: warning: skipping {broken}: not an image" in capsys.readouterr().err

    # a checkpoint of another config: a clear error naming the differing keys
    assert main(["eval", "cpu_depth_tiny", "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "another config" in err and "model.tasks" in err


def test_nan_loss_keeps_the_last_checkpoint(tmp_path):
    # lr 1e30 blows the weights up within a few steps; the run must stop naming the step, checkpoints intact
    work = tmp_path / "nan"
    run = _run(
        [
            sys.executable,
            "-m",
            "ait",
            "train",
            "cpu_depth_tiny",
            "--no-eval",
            "--cfg-options",
            f"work_dir={work}",
            "optim.max_iters=12",
            "optim.lr=1e30",
            "optim.grad_clip=None",
            "optim.warmup_iters=0",
            "checkpoint_interval=1",
            "keep_checkpoints=0",
        ]
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert "ait: error: non-finite loss at step" in run.stderr
    step = int(run.stderr.split("non-finite loss at step ")[1].split()[0])
    saved = sorted(p.name for p in (work / "checkpoints").iterdir())
    assert saved[-1] == f"iter_{step - 1:07d}.pt" and not any(n.startswith(".") for n in saved)
    shutil.rmtree(work)


def test_quick_demo_writes_the_table_figure_and_report(tmp_path):
    out = tmp_path / "demo"
    run = _run([sys.executable, "-m", "ait", "demo", "--quick", "--out", str(out)])
    assert run.returncode == 0, run.stderr[-4000:]
    assert (
        "| Model | D1 | D2 | D3 | Abs Rel | RMSE | Log10 | Box AP | Mask AP | Box AP50 | Mask AP50 |"
        in run.stdout
    )
    assert "| predict-the-mean |" in run.stdout
    oracle_row = next(line for line in run.stdout.splitlines() if line.startswith("| tokenizer oracle |"))
    cells = [c.strip() for c in oracle_row.strip("|").split("|")]
    assert all(c != "-" for c in cells[1:7]) and cells[8] != "-"  # depth metrics and the mask AP
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["tokenizer_oracle"]["depth"]["rmse"] < 100
    assert "Tokenizer oracle" in (out / "results.md").read_text()
    for phase in ("depth tokenizer", "mask tokenizer", "task-solver training", "evaluation + figure"):
        assert f"[demo] {phase}:" in run.stdout
    report = (out / "results.md").read_text()
    assert "predictions.png" in report and "images/s" in report
    assert (
        "instances from 16 decodes of each room (8 nucleus samples and as many of its mirror image)" in report
    )
    assert (out / "predictions.png").stat().st_size > 1000
    # the default: the solver in two one-thread processes (this machine has no GPU)
    assert metrics["solver_processes"] == 2 and "2 processes of 1 torch thread" in report


def test_a_failure_in_the_demos_solver_processes_is_one_error_line(tmp_path):
    out = tmp_path / "demo"
    run = _run(
        [sys.executable, "-m", "ait", "demo", "--quick", "--out", str(out), "--cfg-options", "optim.lr=1e30"]
    )
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith("ait: error: non-finite loss at step "), run.stderr[
        -3000:
    ]
    assert "Terminating process" not in run.stderr
