"""Reading a run's report.csv in the tests, and waiting for its rows while the run goes on."""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path


def rows(out: Path) -> list[dict[str, str]]:
    """The rows of ``out``/report.csv, names that are not UTF-8 as the bytes they were."""
    with open(out / "report.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def wait_rows(out: Path, n: int, proc: subprocess.Popen, limit: float = 180) -> None:
    """Until ``out``/report.csv has ``n`` rows; fails if the run ends first or ``limit`` seconds pass."""
    t0 = time.time()
    while time.time() - t0 < limit and proc.poll() is None:
        if (out / "report.csv").exists() and len(rows(out)) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{n} rows did not arrive in {limit:.0f} s (exit {proc.poll()})")
