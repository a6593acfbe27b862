"""Run a function in several local processes that form one process group, from inside Python.

`run_local_processes(fn, 2, args)` does what `torchrun --standalone --nproc-per-node 2` does for a script:
each process gets WORLD_SIZE, RANK, LOCAL_RANK and a free MASTER_ADDR/PORT, so `init_distributed()` joins
the group as under torchrun. The demo trains its solver this way on a 2-core CPU: two one-thread processes
are faster than one two-thread process, because the step is bound by small operations that one thread
cannot spread over two cores (`benchmarks/README.md`, "Making a step cheaper").

The first failing process's exception reaches the caller as itself (a `ValueError` stays a `ValueError`, so
the CLI still prints it on one line); one that cannot be carried across processes becomes a `RuntimeError`
with its type and message. Every process is stopped when one fails or the caller is interrupted.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

__all__ = ["free_port", "run_local_processes"]

FIRST_ERROR = "first_error.pkl"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, fn: Callable, world_size: int, port: int, args: tuple, exchange: str) -> None:
    os.environ.update(
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    folder = Path(exchange)
    try:
        result = fn(*args)
        if rank == 0:
            (folder / "result.pkl").write_bytes(pickle.dumps(result))
    except BaseException as error:
        try:
            payload = pickle.dumps(error)
            pickle.loads(payload)  # an exception whose constructor pickle cannot replay is sent as text
        except Exception:
            payload = pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}"))
        # the first process to fail claims the report (before its exit breaks the others' collectives, so
        # theirs, a closed connection, never replaces the cause)
        try:
            claim = os.open(folder / FIRST_ERROR, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            pass
        else:
            with os.fdopen(claim, "wb") as report:
                report.write(payload)
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
    with tempfile.TemporaryDirectory(prefix="ait-processes-") as exchange:
        context = mp.start_processes(
            _worker,
            args=(fn, processes, free_port(), args, exchange),
            nprocs=processes,
            join=False,
            start_method="spawn",  # fork would copy the parent's OpenMP thread pool, which can hang
        )
        try:
            while not context.join():
                pass
        except ProcessException:
            report = Path(exchange) / FIRST_ERROR
            if report.is_file() and report.stat().st_size:
                raise pickle.loads(report.read_bytes()) from None
            raise  # killed without a report (a signal, out of memory): torch's own message says how
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            for process in context.processes:
                process.join()
        return pickle.loads((Path(exchange) / "result.pkl").read_bytes())
