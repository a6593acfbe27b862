"""Run a function in several local processes that form one process group, from inside Python.

`run_local_processes(fn, 2, args)` starts the processes as `torchrun --standalone --nproc-per-node 2` starts
a script's: each gets WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE and a free loopback MASTER_ADDR/PORT, so
`init_distributed()` joins the group as under torchrun. Unlike torchrun it leaves the thread count to `fn`
(the demo's solver config sets one thread per process). The demo trains its solver this way on a 2-core CPU:
two one-thread processes are faster than one two-thread process, because the step is bound by small
operations that one process cannot spread over two cores (`benchmarks/README.md`, "Making a step cheaper").

The first process to fail names the cause: its exception reaches the caller as itself (a `ValueError` stays a
`ValueError`, so the CLI still prints it on one line), with the process's traceback attached as its
`__cause__`; one that cannot be carried across processes becomes a `RuntimeError` with its type and message.
A process killed by a signal (out of memory) is reported as torch's `ProcessExitedException`. Every process
is stopped when one fails or the caller is interrupted. The port is free when chosen; another program could
take it before the first process binds it, which then fails with an error naming the address.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException, ProcessExitedException

__all__ = ["RemoteTraceback", "free_port", "run_local_processes"]

# what a surrounding torchrun (its elastic agent) leaves in the environment: a child that kept them would
# look for the agent's store instead of hosting its own
_AGENT_ENV = (
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_NAME",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
)
# how long the other processes get to stop on their own once one has failed (they fail on the broken group
# within a second or two), before they are terminated
GRACE_PERIOD_S = 10.0
_TRACEBACK_CHARS = 16_000  # the report stays far below a pipe's buffer: the sender never waits on it


class RemoteTraceback(Exception):
    """The traceback of an exception raised in another process (its text), attached as `__cause__`."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _portable(error: BaseException) -> BaseException:
    """`error` itself where it can cross to the parent, else a RuntimeError with its type and message."""
    import copy
    import pickle

    if isinstance(error, SystemExit):  # sys.exit() in fn must not end the caller's process silently
        return RuntimeError(f"a process called sys.exit({error.code!r})")
    try:
        pickle.dumps(error)  # what the pipe sends
        copy.deepcopy(error)  # what the parent then does with it: class(*args), as unpickling does
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _worker(rank: int, fn: Callable, world_size: int, port: int, args: tuple, channel, claimed) -> None:
    for name in [n for n in os.environ if n.startswith("TORCHELASTIC_") or n in _AGENT_ENV]:
        del os.environ[name]
    os.environ.update(
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    try:
        result = fn(*args)
        if rank == 0:
            channel.put(("result", result))
    except BaseException as error:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        # the first process to fail reports, before its exit breaks the others' collectives: theirs (a closed
        # connection) never replaces the cause
        with claimed.get_lock():
            first = not claimed.value
            claimed.value = 1
        if first:
            channel.put(("error", (_portable(error), text[-_TRACEBACK_CHARS:])))
        raise SystemExit(1) from None
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def run_local_processes(fn: Callable[..., Any], processes: int, args: tuple = ()) -> Any:
    """`fn(*args)` in `processes` spawned processes of one process group; returns rank 0's result.

    `fn` must be importable by name (a module-level function), and `args` and the result picklable.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            "already inside a process group (WORLD_SIZE is set): start the local processes from a plain "
            "process, not under torchrun"
        )
    spawn = mp.get_context("spawn")  # fork would copy the parent's OpenMP thread pool, which can hang
    # multiprocessing's own pipe to the parent, the way the function and its arguments reached the processes
    channel, claimed = spawn.SimpleQueue(), spawn.Value("b", 0)
    context = mp.start_processes(
        _worker,
        args=(fn, processes, free_port(), args, channel, claimed),
        nprocs=processes,
        join=False,
        start_method="spawn",
    )
    try:
        while not context.join(grace_period=GRACE_PERIOD_S):
            pass
    except ProcessException as failure:
        killed = isinstance(failure, ProcessExitedException) and failure.exit_code < 0
        if killed or channel.empty():
            raise  # killed by a signal, with no chance to report: torch's message names the signal
        _, (error, text) = channel.get()
        raise error from RemoteTraceback(text)
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
        for process in context.processes:
            process.join()
    if channel.empty():
        raise RuntimeError("the local processes ended without the first one's result")
    _, result = channel.get()
    return result
