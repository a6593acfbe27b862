"""The fault suite (issue 12, docs/RELIABILITY.md): faults a careful user or a bad day brings, end to end.

- kill -9 at every phase of a task-solver save and of a tokenizer save, then resume: bit-identical to an
  uninterrupted run, every step logged once, no temporary file left;
- a crafted pickle in every file the project reads: refused, nothing executes;
- non-finite weights in every checkpoint kind: refused, naming the file;
- a fresh run into a used work folder; a full disk (a small tmpfs where the machine allows a mount, else a
  write that raises ENOSPC) keeps the previous checkpoint; SIGTERM stops like SIGINT.

The runs go through `_fault_server.py`, which imports the packages once and forks a child per run: each
child is a real process that can be killed, without paying the imports again (the suite takes ~2 minutes
on two cores).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SERVER = Path(__file__).resolve().parent / "_fault_server.py"

SOLVER_OPTIONS = [
    "optim.max_iters=6",
    "checkpoint_interval=2",
    "keep_checkpoints=1",
    "log_interval=1",
    "progress=False",
]
SOLVER_PHASES = ["solver-save:temp-written@4", "solver-save:replaced@4", "solver-save:pruned@4"]
TOKENIZER_ARGS = [
    "--max-steps", "6", "--batch-size", "4", "--no-progress",
    "--set", "train_size=8", "val_size=1", "log_every=1", "checkpoint_every=2", "val_every=0",
]  # fmt: skip
TOKENIZER_PHASES = [
    "tokenizer-save:state-temp-written@4",
    "tokenizer-save:state-replaced@4",
    "tokenizer-file:temp-written",  # inside the first last.safetensors write (step 2)
    "tokenizer-save:done@4",
]


# ------------------------------------------------------------------------------------------------ helpers
class Server:
    def __init__(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "AIT_KILL_AT", "AIT_DEBUG")
        }
        env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def run(self, program: str, argv: list[str], log: Path, **options) -> tuple[int, str]:
        command = {"program": program, "argv": [str(a) for a in argv], "log": str(log), **options}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the fault server died; log of the last run:\n{_read(log)[-3000:]}"
        return json.loads(line)["returncode"], _read(log)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


@pytest.fixture(autouse=True)
def _one_line_errors(monkeypatch):
    monkeypatch.delenv("AIT_DEBUG", raising=False)  # the tests check the one-line form


@pytest.fixture(scope="module")
def server():
    instance = Server()
    yield instance
    instance.close()


def _one_error_line(log: str) -> str:
    """The run's error: exactly one `ait: error:` line and no traceback."""
    assert "Traceback" not in log, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("ait: error:")]
    assert len(errors) == 1, log[-3000:]
    return errors[0]


def _train_solver(server, work: Path, *extra: str, env: dict | None = None, **options) -> tuple[int, str]:
    argv = [
        "train",
        "cpu_depth_tiny",
        "--no-eval",
        *extra,
        "--cfg-options",
        f"work_dir={work}",
        *SOLVER_OPTIONS,
    ]
    return server.run("ait", argv, work.with_suffix(f".{uuid.uuid4().hex[:6]}.log"), env=env or {}, **options)


def _train_tokenizer(server, out: Path, *extra: str, env: dict | None = None, **options) -> tuple[int, str]:
    argv = ["--out", out, *TOKENIZER_ARGS, *extra]
    return server.run(
        "tokenizer", argv, out.with_suffix(f".{uuid.uuid4().hex[:6]}.log"), env=env or {}, **options
    )


def _assert_equal_states(a, b, where: str = "") -> None:
    """Tensors bit-identical, everything else equal, recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_equal_states(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_states(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _steps(metrics: Path) -> list[int]:
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [r["step"] for r in records if "step" in r and r.get("kind", "train") == "train"]


def _no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if ".tmp" in p.name]
    assert not left, left


# ------------------------------------------------------------------------------- kill -9 during a save
@pytest.fixture(scope="module")
def solver_reference(server, tmp_path_factory):
    work = tmp_path_factory.mktemp("solver") / "full"
    rc, log = _train_solver(server, work)
    assert rc == 0, log[-3000:]
    return work


@pytest.mark.parametrize("phase", SOLVER_PHASES)
def test_solver_killed_at_a_save_phase_resumes_bit_identically(server, solver_reference, tmp_path, phase):
    work = tmp_path / "run"
    rc, log = _train_solver(server, work, env={"AIT_KILL_AT": phase})
    assert rc == -9, log[-3000:]  # SIGKILL: no cleanup ran
    rc, log = _train_solver(server, work, "--resume")
    assert rc == 0, log[-3000:]
    resumed_from = int(re.search(r"resumed from .* at step (\d+)", log).group(1))
    assert resumed_from == (2 if phase.startswith("solver-save:temp-written") else 4)
    full = torch.load(solver_reference / "checkpoints" / "iter_0000006.pt", weights_only=True)
    again = torch.load(work / "checkpoints" / "iter_0000006.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "data", "step"):
        _assert_equal_states(full[key], again[key], key)
    assert _steps(work / "metrics.jsonl") == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in (work / "checkpoints").iterdir()] == ["iter_0000006.pt"]  # pruned, no temp left


@pytest.fixture(scope="module")
def tokenizer_reference(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer") / "full"
    rc, log = _train_tokenizer(server, out)
    assert rc == 0, log[-3000:]
    return out


@pytest.mark.parametrize("phase", TOKENIZER_PHASES)
def test_tokenizer_killed_at_a_save_phase_resumes_bit_identically(
    server, tokenizer_reference, tmp_path, phase
):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    rc, log = _train_tokenizer(server, out, env={"AIT_KILL_AT": phase})
    assert rc == -9, log[-3000:]
    rc, log = _train_tokenizer(server, out)  # resuming is the default
    assert rc == 0, log[-3000:]
    _assert_equal_states(
        load_file(str(tokenizer_reference / "final.safetensors")), load_file(str(out / "final.safetensors"))
    )
    full = torch.load(tokenizer_reference / "train_state.pt", weights_only=True)
    again = torch.load(out / "train_state.pt", weights_only=True)
    for key in ("model", "optimizer", "step", "history"):
        _assert_equal_states(full[key], again[key], key)
    assert _steps(out / "metrics.jsonl") == [1, 2, 3, 4, 5, 6]
    _no_temporaries(out)


# ------------------------------------------------------------------------------ a crafted pickle anywhere
class _Payload:
    """Unpickling it creates the marker file: if the marker exists, a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(
    path: Path, marker: Path, wrap=lambda payload: {"format": "ait-checkpoint-v1", "model": payload}
):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(_Payload(marker)), path)
    return path


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from ait.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_crafted_solver_checkpoint_is_refused_by_eval_predict_and_resume(tmp_path, capsys):
    marker = tmp_path / "ran"
    checkpoint = _crafted(tmp_path / "evil.pt", marker)
    code, out = _cli(["eval", "cpu_depth_tiny", "--checkpoint", checkpoint], capsys)
    assert code == 2 and "evil.pt" in _one_error_line(out)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "room.png")
    code, out = _cli(
        ["predict", "--checkpoint", checkpoint, tmp_path / "room.png", "--out", tmp_path], capsys
    )
    assert code == 2 and "evil.pt" in _one_error_line(out)
    work = tmp_path / "work"
    _crafted(work / "checkpoints" / "iter_0000002.pt", marker)
    argv = [
        "train",
        "cpu_depth_tiny",
        "--resume",
        "--no-eval",
        "--cfg-options",
        f"work_dir={work}",
        "progress=False",
    ]
    code, out = _cli(argv, capsys)
    assert code == 2 and "iter_0000002.pt" in _one_error_line(out)
    assert not marker.exists()


def test_a_crafted_load_from_backbone_and_original_file_is_refused(tmp_path, capsys):
    from ait_backbone.checkpoint import read_state_dict

    marker = tmp_path / "ran"
    evil = _crafted(tmp_path / "det.pth", marker, wrap=lambda p: {"state_dict": {"w": p}})
    argv = [
        "train",
        "cpu_depth_tiny",
        "--no-eval",
        "--cfg-options",
        f"work_dir={tmp_path / 'w'}",
        f"load_from={evil}",
    ]
    code, out = _cli(argv, capsys)
    assert code == 2 and "det.pth" in _one_error_line(out)
    with pytest.raises(ValueError, match=r"det\.pth"):
        read_state_dict(evil)  # a SimMIM / timm backbone checkpoint
    from ait_tokenizer import load_tokenizer

    for name in ("vqvae.pth", "tokenizer.safetensors"):  # an original release file, or a renamed pickle
        with pytest.raises(ValueError, match=re.escape(name)):
            load_tokenizer(_crafted(tmp_path / name, marker, wrap=lambda p: {"weights": p}))
    assert not marker.exists()


def test_a_crafted_tokenizer_train_state_is_refused(tmp_path, capsys):
    marker, out = tmp_path / "ran", tmp_path / "tok"
    _crafted(out / "train_state.pt", marker, wrap=lambda p: {"step": 2, "optimizer": p, "config": {}})
    argv = [
        "tokenizer",
        "train",
        "cpu_depth_vqvae",
        "--out",
        out,
        "--cfg-options",
        "max_steps=1",
        "progress=False",
    ]
    code, log = _cli(argv, capsys)
    assert code == 2 and "train_state.pt" in _one_error_line(log)
    assert not marker.exists()


def test_a_maskcoco_file_with_objects_is_refused(tmp_path):
    from ait_data import MaskCoco

    marker = tmp_path / "ran"
    path = tmp_path / "maskcoco.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    np.savez(path, masks=payload, image_id=payload, ann_id=payload, category_id=payload, box=payload, size=64)
    with pytest.raises(ValueError, match=r"maskcoco\.npz is not a maskcoco file"):
        MaskCoco(path)
    assert not marker.exists()


def test_no_loader_can_unpickle_code():
    """Every torch.load in the sources is weights_only=True; no pickle/np.load(allow_pickle=True) reader."""
    offenders = []
    for path in sorted(
        [
            *ROOT.glob("packages/*/src/**/*.py"),
            *ROOT.glob("integration_tests/*.py"),
            *ROOT.glob("benchmarks/*.py"),
        ]
    ):
        if path == Path(__file__).resolve():
            continue  # this test names the patterns it looks for
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#")[0]
            if (
                "weights_only=False" in code
                or "allow_pickle=True" in code
                or re.search(r"\bpickle\.loads?\(", code)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start() : text.find(")", match.start()) + 200]
            if "weights_only=True" not in call.split("\n\n")[0]:
                offenders.append(f"{path.relative_to(ROOT)}: torch.load without weights_only=True")
    assert not offenders, "\n".join(offenders)


# ------------------------------------------------------------------------- non-finite weights, every kind
@pytest.fixture(scope="module")
def tiny_solver():
    import warnings

    from ait.config import create_config
    from ait.model import build_task_solver

    cfg = create_config("cpu_depth_tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cfg, build_task_solver(cfg).state_dict()


def _with_nan(weights: dict, contains: str = "") -> tuple[dict, str]:
    weights = {k: v.clone() for k, v in weights.items()}
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1 and contains in k)
    weights[name].view(-1)[0] = float("nan")
    return weights, name


def test_non_finite_solver_checkpoint_and_load_from_are_refused(tiny_solver, tmp_path, capsys):
    from safetensors.torch import save_file

    cfg, weights = tiny_solver
    bad, name = _with_nan(weights, "decoder")
    work = tmp_path / "work"
    state = {"format": "ait-checkpoint-v1", "config": cfg.to_json(), "step": 2, "model": bad}
    (work / "checkpoints").mkdir(parents=True)
    torch.save(state, work / "checkpoints" / "iter_0000002.pt")
    argv = [
        "train",
        "cpu_depth_tiny",
        "--resume",
        "--no-eval",
        "--cfg-options",
        f"work_dir={work}",
        "progress=False",
    ]
    code, out = _cli(argv, capsys)
    assert code == 2 and "non-finite weights" in _one_error_line(out) and name in out
    code, out = _cli(
        ["eval", "cpu_depth_tiny", "--checkpoint", work / "checkpoints" / "iter_0000002.pt"], capsys
    )
    assert code == 2 and "non-finite weights" in _one_error_line(out)
    torch.save(bad, tmp_path / "nan.pth")
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "nan.safetensors"))
    for source in ("nan.pth", "nan.safetensors"):
        argv = ["train", "cpu_depth_tiny", "--no-eval", "--cfg-options", f"work_dir={tmp_path / source}-run",
                f"load_from={tmp_path / source}"]  # fmt: skip
        code, out = _cli(argv, capsys)
        assert code == 2 and "non-finite weights" in _one_error_line(out) and source in out


def test_non_finite_tokenizer_files_and_backbone_checkpoint_are_refused(tiny_solver, tmp_path, capsys):
    from safetensors.torch import load_file, safe_open, save_file

    from ait_backbone import create_backbone
    from ait_backbone.checkpoint import load_backbone_checkpoint
    from ait_tokenizer import create_tokenizer, save_tokenizer

    # a tokenizer file used by a solver config
    good = save_tokenizer(create_tokenizer("depth-small"), tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as handle:
        metadata = handle.metadata()
    tensors, name = _with_nan(load_file(str(good)))
    save_file(tensors, str(tmp_path / "nan-tok.safetensors"), metadata=metadata)
    argv = ["train", "cpu_depth_tiny", "--no-eval", "--cfg-options", f"work_dir={tmp_path / 'w'}",
            f"model.depth_tokenizer.checkpoint={tmp_path / 'nan-tok.safetensors'}"]  # fmt: skip
    code, out = _cli(argv, capsys)
    assert code == 2 and "nan-tok.safetensors" in _one_error_line(out) and "non-finite" in out
    # a tokenizer training state
    out_dir = tmp_path / "tok"
    argv = ["tokenizer", "train", "cpu_depth_vqvae", "--out", out_dir, "--cfg-options", "max_steps=1",
            "train_size=4", "val_size=1", "batch_size=4", "progress=False"]  # fmt: skip
    assert _cli(argv, capsys)[0] == 0
    state = torch.load(out_dir / "train_state.pt", weights_only=True)
    state["model"], name = _with_nan(state["model"])
    torch.save(state, out_dir / "train_state.pt")
    code, out = _cli([*argv[:-5], "max_steps=2", *argv[-4:]], capsys)
    assert code == 2 and "train_state.pt" in _one_error_line(out) and "non-finite" in out and name in out
    # a backbone checkpoint
    cfg, _ = tiny_solver
    backbone = create_backbone(cfg.model.backbone)
    bad, _ = _with_nan(backbone.state_dict())
    torch.save(bad, tmp_path / "swin.pth")
    with pytest.raises(ValueError, match=r"swin\.pth: non-finite weights"):
        load_backbone_checkpoint(backbone, tmp_path / "swin.pth")


# -------------------------------------------------------------- used folders, full disks, SIGTERM = SIGINT
def test_a_fresh_run_into_a_used_folder_refuses(server, solver_reference, tokenizer_reference, tmp_path):
    before = sorted(p.name for p in (solver_reference / "checkpoints").iterdir())
    metrics = (solver_reference / "metrics.jsonl").read_text()
    rc, log = _train_solver(server, solver_reference)
    assert rc == 2 and "already holds a run" in _one_error_line(log) and "--resume" in log
    assert sorted(p.name for p in (solver_reference / "checkpoints").iterdir()) == before
    assert (solver_reference / "metrics.jsonl").read_text() == metrics
    rc, log = _train_tokenizer(server, tokenizer_reference, "--seed", "7")
    assert rc == 2 and "another config" in _one_error_line(log) and "seed" in log


@pytest.fixture
def small_disk(tmp_path):
    """A mount point with `size` bytes (tmpfs) or None where this machine allows no mount."""
    mounted = []

    def make(name: str, size: int) -> Path | None:
        point = tmp_path / name
        point.mkdir()
        if os.environ.get("AIT_FAULTS_NO_MOUNT"):  # force the ENOSPC-raising write (as where mount is denied)
            return None
        try:
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                capture_output=True,
                check=False,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError):  # no mount command
            return None
        if result.returncode != 0:
            return None
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_full_disk_names_enospc_and_keeps_the_previous_checkpoint(
    server, solver_reference, small_disk, tmp_path
):
    ckpt_size = (solver_reference / "checkpoints" / "iter_0000006.pt").stat().st_size
    disk = small_disk("solver-disk", int(ckpt_size * 1.6))  # the step-2 checkpoint fits, step 4's does not
    work = (disk or tmp_path) / "run"
    rc, log = _train_solver(server, work, **({} if disk else {"enospc_on_save": 2}))
    assert rc == 2, log[-3000:]
    line = _one_error_line(log)
    assert "ENOSPC" in line and "iter_0000004.pt" in line
    assert [p.name for p in (work / "checkpoints").iterdir()] == ["iter_0000002.pt"]
    from ait.engine import load_checkpoint

    assert load_checkpoint(work / "checkpoints" / "iter_0000002.pt")["step"] == 2


def test_a_full_disk_keeps_the_previous_tokenizer_state(server, tokenizer_reference, small_disk, tmp_path):
    sizes = sum((tokenizer_reference / n).stat().st_size for n in ("train_state.pt", "last.safetensors"))
    disk = small_disk("tok-disk", int(sizes * 1.3))  # step 2 fits, step 4's state temp does not
    out = (disk or tmp_path) / "tok"
    rc, log = _train_tokenizer(server, out, **({} if disk else {"enospc_on_save": 2}))
    assert rc == 2, log[-3000:]
    assert "ENOSPC" in _one_error_line(log)
    assert torch.load(out / "train_state.pt", weights_only=True)["step"] == 2
    _no_temporaries(out)


@pytest.mark.parametrize("signal_number", [15, 2], ids=["SIGTERM", "SIGINT"])
def test_sigterm_stops_like_sigint(server, tmp_path, signal_number):
    work = tmp_path / "run"
    argv = ["train", "cpu_depth_tiny", "--no-eval", "--cfg-options", f"work_dir={work}",
            "optim.max_iters=100000", "log_interval=1", "progress=False"]  # fmt: skip
    rc, log = server.run(
        "ait", argv, tmp_path / "log.txt", signal_after="step 1/100000", signal=signal_number
    )
    assert rc == 130, log[-3000:]
    assert "Traceback" not in log and log.strip().splitlines()[-1].startswith("ait: interrupted")


def test_out_of_range_options_are_one_line_errors(tmp_path, capsys):
    code, out = _cli(
        ["tokenizer", "train", "cpu_depth_vqvae", "--out", tmp_path, "--cfg-options", "batch_size=-4"], capsys
    )
    assert code == 2 and "batch_size=-4" in _one_error_line(out)
    assert not (tmp_path / "final.safetensors").exists()


def test_the_reliability_table_lists_at_least_40_kinds_each_with_an_existing_test():
    text = (ROOT / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    aliases = {
        "faults": "integration_tests/test_faults.py",
        "app": "packages/ait/tests/test_reliability.py",
        "tok": "packages/ait-tokenizer/tests/test_reliability.py",
        "traps": "packages/ait/tests/test_traps.py",
    }
    rows = [line for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) >= 40
    for row in rows:
        tests = re.findall(r"`([\w/.-]+)::(\w+)(?:\[[^\]]*\])?`", row.split("|")[-2])
        assert tests, f"no test named in: {row}"
        for path, name in tests:
            source = (ROOT / aliases.get(path, path)).read_text(encoding="utf-8")
            assert f"def {name}(" in source, f"{path}::{name} does not exist"
