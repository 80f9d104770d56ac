"""A run whose --output is an object store's URL: its own files (report.csv, summary.csv, run.json,
report.html) live in a local folder of the driver's, and are copied to the URL.

report.csv is appended row by row and fsynced as for a local run, in the local folder (an object
cannot be appended to); the whole file is copied to the URL at most every ``PUSH_EVERY_S`` and at
the end, so a run stopped in any way leaves at most that much of its rows only on the driver's
disk, and a rerun on the same machine reads them back. At the start the report at the URL and the
local one are merged, each key's newest row kept: a rerun from another machine resumes too.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from ..files import storage
from ..files.images import write_atomic
from ..report.table import read_rows, write_rows

PUSH_EVERY_S = 30.0
END_FILES = ("report.csv", "summary.csv", "run.json", "report.html")


def local_home(output: str) -> Path:
    """Where a run into ``output`` keeps its own files: the folder itself, or for a URL a folder of
    this machine's named after the URL (``$XDG_CACHE_HOME``, else ``~/.cache``)."""
    if not storage.is_url(output):
        return Path(output)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    name = hashlib.sha256(output.rstrip("/").encode()).hexdigest()[:16]
    return cache / "zssr-batch" / "runs" / name


class Mirror:
    """Copies a run's own files from ``home`` to the URL ``output`` (nothing to do for a local run)."""

    def __init__(self, home: Path, output: str) -> None:
        self.home, self.output = home, output
        self.on = storage.is_url(output)
        self.pushed_at = time.monotonic()

    def pull(self) -> None:
        """Merge the URL's report.csv into the local one (the newest row of each key wins)."""
        if not self.on:
            return
        remote = storage.join(self.output, "report.csv")
        if not storage.exists(remote):
            return
        fetched = self.home / ".report.remote.csv"
        write_atomic(fetched, storage.read_bytes(remote))
        rows = read_rows(fetched)
        for key, row in read_rows(self.home / "report.csv").items():
            if key not in rows or (row.get("finished_at") or "") >= (rows[key].get("finished_at") or ""):
                rows[key] = row
        write_rows(self.home / "report.csv", rows.values())
        fetched.unlink()

    def tick(self) -> None:
        """report.csv to the URL, if ``PUSH_EVERY_S`` have passed since the last copy."""
        if self.on and time.monotonic() - self.pushed_at >= PUSH_EVERY_S:
            self.push(("report.csv",))

    def push(self, names: tuple[str, ...] = END_FILES) -> None:
        if not self.on:
            return
        for name in names:
            if (self.home / name).is_file():
                storage.write_bytes(storage.join(self.output, name), (self.home / name).read_bytes())
        self.pushed_at = time.monotonic()
