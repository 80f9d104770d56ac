"""One writer per output folder: a lock held for the whole run.

Two runs on one ``--output`` interleave their rows and the second one's start-up compaction
replaces report.csv under the first, so a whole run's rows vanish. The lock is an exclusive
``flock`` on ``OUTPUT/.zssr-batch.lock``: the kernel drops it when its process ends however it
ends (SIGKILL included), so a stale lock of a dead run is simply taken by the next one. The
file names its holder (pid, host, start) for the message a refused run prints; it is never
deleted, since a run that deleted it could leave two runs each holding a lock on a different
file of that name.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".zssr-batch.lock"


class FolderBusy(RuntimeError):
    """Another live run holds the folder."""


class FolderLock:
    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderBusy(f"{self.path.parent}: another zssr-batch run is writing here{holder}; wait for it "
                             "to end, or give this run another --output") from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.write(fd, json.dumps(info).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f" (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (ValueError, KeyError, OSError):
        return ""
