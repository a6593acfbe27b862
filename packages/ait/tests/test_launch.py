"""Local process groups started from Python (`ait.engine.launch`), as the demo trains its solver."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch.multiprocessing.spawn import ProcessExitedException

from ait.engine.launch import RemoteTraceback, free_port, run_local_processes
from ait.engine.trainer import NonFiniteLossError


def _rank_sum(scale: float) -> dict:
    # every process joins the group through the environment the launcher set, as under torchrun
    from ait.engine.distributed import init_distributed

    info = init_distributed("cpu")
    total = torch.tensor([float(info.rank + 1) * scale])
    torch.distributed.all_reduce(total)
    return {"rank": info.rank, "world": info.world_size, "sum": total.item(), "pid": os.getpid()}


class _Unpicklable(Exception):
    def __init__(self, first: str, second: str) -> None:  # pickle replays cls(*args): one arg, not two
        super().__init__(f"{first} {second}")


def _fail_on_last_rank(kind: str) -> None:
    import signal

    from ait.engine.distributed import init_distributed

    info = init_distributed("cpu")
    if info.rank == info.world_size - 1:
        if kind == "value":
            raise ValueError("bad key data.depth_batch on the last rank")
        if kind == "unpicklable":
            raise _Unpicklable("two", "fields")
        if kind == "exit":
            raise SystemExit(0)
        if kind == "killed":
            os.kill(os.getpid(), signal.SIGKILL)  # out of memory: no chance to report
        raise NonFiniteLossError(7, {"depth": float("nan")}, Path("/runs/iter_0000006.pt"))
    torch.distributed.barrier()  # the other ranks wait on the failed one: they fail on the broken group


def _environment(names: list[str]) -> dict:
    return {name: os.environ.get(name) for name in names}


def test_processes_form_one_group_and_rank_zeros_result_comes_back():
    result = run_local_processes(_rank_sum, 3, (2.0,))
    assert result["rank"] == 0 and result["world"] == 3
    assert result["sum"] == 2.0 * (1 + 2 + 3)  # all three took part in the reduction
    assert result["pid"] != os.getpid()  # computed in a child process, not here


def test_the_first_failure_reaches_the_caller_as_itself_with_its_fields():
    with pytest.raises(ValueError, match=r"bad key data\.depth_batch on the last rank") as caught:
        run_local_processes(_fail_on_last_rank, 2, ("value",))
    # the failing process's own traceback comes along (what --debug shows), not only the parent's frames
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "_fail_on_last_rank" in str(caught.value.__cause__)
    with pytest.raises(NonFiniteLossError) as caught:
        run_local_processes(_fail_on_last_rank, 2, ("nan",))
    assert caught.value.step == 7 and caught.value.last_checkpoint == Path("/runs/iter_0000006.pt")
    assert "non-finite loss at step 7" in str(caught.value)


def test_what_cannot_travel_as_itself_still_arrives_and_a_killed_process_is_named():
    with pytest.raises(RuntimeError, match="_Unpicklable: two fields"):
        run_local_processes(_fail_on_last_rank, 2, ("unpicklable",))
    # sys.exit() in a process must not end the caller silently
    with pytest.raises(RuntimeError, match=r"sys\.exit\(0\)"):
        run_local_processes(_fail_on_last_rank, 2, ("exit",))
    # killed by a signal: the survivor's "connection closed" must not stand in for the cause
    with pytest.raises(ProcessExitedException, match="SIGKILL"):
        run_local_processes(_fail_on_last_rank, 2, ("killed",))


def test_a_surrounding_torchrun_agents_variables_do_not_reach_the_processes(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("GROUP_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    seen = run_local_processes(
        _environment, 2, (["TORCHELASTIC_USE_AGENT_STORE", "GROUP_RANK", "LOCAL_WORLD_SIZE"],)
    )
    assert seen == {"TORCHELASTIC_USE_AGENT_STORE": None, "GROUP_RANK": None, "LOCAL_WORLD_SIZE": "2"}


def test_non_finite_loss_error_survives_pickling():
    error = NonFiniteLossError(3, {"insseg": float("inf")}, None)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is NonFiniteLossError and str(copy) == str(error) and copy.step == 3


def test_bad_process_counts_and_nested_groups_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="at least 1"):
        run_local_processes(_rank_sum, 0, (1.0,))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="not under torchrun"):
        run_local_processes(_rank_sum, 2, (1.0,))


def test_free_port_is_a_bindable_loopback_port():
    import socket

    port = free_port()
    assert 1024 <= port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


_SLEEPER = """
import os, pathlib, time

def sleep_forever(folder):
    pathlib.Path(folder, f"{os.getpid()}.pid").write_text("started")
    time.sleep(600)
"""
_CALLER = """
import sys
sys.path.insert(0, sys.argv[1])
import sleeper
from ait.engine.launch import run_local_processes
run_local_processes(sleeper.sleep_forever, 2, (sys.argv[1],))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_interrupted_caller_leaves_no_process_behind(tmp_path):
    # Ctrl-C reaches the caller alone here (the hardest case: the processes themselves are not told)
    import contextlib
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "sleeper.py").write_text(_SLEEPER)
    caller = subprocess.Popen(
        [sys.executable, "-c", _CALLER, str(tmp_path)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2:
            assert caller.poll() is None, caller.stderr.read()
            assert time.monotonic() < deadline, "the processes did not start"
            time.sleep(0.2)
        caller.send_signal(signal.SIGINT)
        # a caller that does not stop its processes waits for them at exit: it times out here
        _, stderr = caller.communicate(timeout=60)
        left_behind = [int(path.stem) for path in tmp_path.glob("*.pid") if _alive(int(path.stem))]
    finally:
        caller.kill()
        for path in tmp_path.glob("*.pid"):
            if _alive(int(path.stem)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(path.stem), signal.SIGKILL)
    assert caller.returncode != 0 and "KeyboardInterrupt" in stderr
    assert not left_behind
