"""One run at a time per output folder: a lock held while a run writes into it.

Two trainings started into one folder used to both run, mixing their checkpoints and metrics. The lock is
an OS lock (``flock``) on ``<folder>/.ait-lock``: the kernel drops it when its process ends, even by
kill -9, so a crashed run never leaves a stale lock behind. The file itself stays (it names the last
holder) and is harmless.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no lock, the folder checks of each command still apply
    fcntl = None

LOCK_FILE = ".ait-lock"

__all__ = ["LOCK_FILE", "FolderInUseError", "RunLock", "check_unlocked"]


class FolderInUseError(OSError):
    """Another process holds the folder's lock (an OSError: commands show it as one line)."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another process"
    return text or "another process"


class RunLock:
    """Context manager (or ``acquire``/``release``) holding ``folder``'s lock; refuses at once if held.

    ``flag`` is the option of the running command that chooses the folder, named in the refusal.
    """

    def __init__(self, folder: str | os.PathLike, flag: str, what: str = "run"):
        self.folder, self.flag, self.what = Path(folder), flag, what
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None or self._fd is not None:
            return self
        path = self.folder / LOCK_FILE
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # an unwritable folder: the command's own check names it (one line, its flag)
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUseError(
                f"{self.folder} is in use by another {self.what} ({_holder(path)}): wait for it to end, or "
                f"choose another {self.flag}"
            ) from None
        except OSError:  # a file system without flock (some network mounts): go on unlocked
            os.close(fd)
            return self
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()}, started {started}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_unlocked(folder: str | os.PathLike, flag: str, what: str = "run") -> None:
    """Refuse now (FolderInUseError) if a run holds ``folder``: before any time is spent on data or model."""
    if Path(folder).is_dir():
        RunLock(folder, flag, what).acquire().release()
