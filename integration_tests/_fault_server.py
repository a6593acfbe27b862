"""Fork server of the fault suite: imports torch and the packages once, then forks one child per command.

Each child is a real, separate process (it can be SIGKILLed at a save phase through AIT_KILL_AT, or sent
SIGTERM/SIGINT), but it skips the ~10 s of imports a fresh interpreter pays, which keeps the suite short.
The parent never runs a torch computation, so forking it is safe.

Protocol: one JSON command per stdin line, one JSON result per stdout line.

    {"program": "ait" | "tokenizer", "argv": [...], "log": PATH, "env": {...},
     "enospc_on_save": N,                       # optional: the Nth torch.save raises ENOSPC
     "signal_after": TEXT, "signal": NUMBER}    # optional: send NUMBER once TEXT appears in the log
    -> {"returncode": RC}                       # -9 for SIGKILL, as subprocess reports it
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
import traceback

import torch

import ait.cli
import ait.engine
import ait.model
import ait_tokenizer.train

torch.set_num_threads(1)


def _child(command: dict) -> int:
    log = open(command["log"], "w", buffering=1, encoding="utf-8")  # open until os._exit
    sys.stdout = sys.stderr = log
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    os.environ.update(command.get("env") or {})
    if command.get("enospc_on_save"):
        real_save, calls = torch.save, []

        def full_disk(obj, f, *args, **kwargs):
            calls.append(1)
            if len(calls) == command["enospc_on_save"]:
                if hasattr(f, "write"):
                    f.write(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_save(obj, f, *args, **kwargs)

        torch.save = full_disk
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if command["program"] == "ait":
        return int(ait.cli.main(command["argv"]) or 0)
    try:
        ait_tokenizer.train.main(command["argv"])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def _run(command: dict) -> int:
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = _child(command)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    if command.get("signal_after"):
        deadline, sent = time.monotonic() + 300, False
        while not sent and time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return _status(status)
            try:
                with open(command["log"], encoding="utf-8") as handle:
                    if command["signal_after"] in handle.read():
                        os.kill(pid, command["signal"])
                        sent = True
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        if not sent:  # the text never came: do not wait for a run meant to be interrupted
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return _status(status)


def _status(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps({"returncode": _run(json.loads(line))}), flush=True)


if __name__ == "__main__":
    main()
