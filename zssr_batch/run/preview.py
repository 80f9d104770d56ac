"""``run --dry-run``: what a run would do, item by item, decided as the run decides it (the scan, the
output plan, resume against the report, a URL output's included) with nothing written and no Ray
started. What the run would only find on reading an input, the preview finds from its header where
it can: a file that is not an image, one over ``--max-pixels``."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, TextIO

from ..config import FitConfig
from ..files import storage
from ..files.display import shown
from ..files.images import image_size
from ..files.plan import plan_outputs
from ..files.sources import WorkItem
from ..report.table import read_rows
from .mirror import Mirror, local_home
from .resume import earlier_row, kept_rows, redo_reason


def _shown(path: str | None) -> str:
    """A path as short as it can be said (relative to the working directory when under it), its
    control characters escaped (``files.display.shown``)."""
    if not path:
        return "-"
    if not storage.is_url(path):
        rel = os.path.relpath(path)
        path = rel if not rel.startswith("..") else path
    return shown(path)


def _settings(cfg: FitConfig, preset: str) -> str:
    scale = "x" + (f"{cfg.scale[0]:g}" if cfg.scale[0] == cfg.scale[1] else f"{cfg.scale[0]:g},{cfg.scale[1]:g}")
    steps = f"{len(cfg.steps)} steps to {scale}" if len(cfg.steps) > 1 else scale
    return f"{preset} ({steps}, up to {cfg.max_iters} iterations{' per step' if len(cfg.steps) > 1 else ''})"


def _earlier_rows(output_dir: str, scratch: Path) -> Path:
    """The report a run into ``output_dir`` resumes from: the folder's, or for a URL this machine's
    copy merged with the store's (copied into ``scratch``, so that nothing of the run's changes)."""
    home = local_home(output_dir)
    if not storage.is_url(output_dir):
        return home / "report.csv"
    if (home / "report.csv").is_file():
        shutil.copyfile(home / "report.csv", scratch / "report.csv")
    Mirror(scratch, output_dir).pull()
    return scratch / "report.csv"


def _unreadable(item: WorkItem, max_pixels: int | None) -> str | None:
    """Why the run would fail this input on reading it, as far as its header tells (local files)."""
    if storage.is_url(item.input):
        return None
    size = image_size(item.input)
    if size is None:
        return f"{item.input}: not an image this run can read"
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        return f"{item.input}: {size[1]}x{size[0]} exceeds --max-pixels {max_pixels}"
    return None


def preview(items: list[WorkItem], config_for: Callable[[WorkItem], FitConfig], output_dir: str, base_preset: str,
            overwrite: bool, precision: str, max_pixels: int | None = None, out: TextIO | None = None) -> int:
    """Print each item's fate and the counts; returns the exit code the run would give if every
    image it fits went well (1 when some would be refused). A plan the run refuses (two inputs,
    one output) raises ``PlanError`` here as there."""
    out = out or sys.stdout  # (at the call: a default bound at import would keep a replaced stream)
    planned = plan_outputs(items, output_dir).items
    with tempfile.TemporaryDirectory() as scratch:
        report = _earlier_rows(output_dir, Path(scratch))
        old = read_rows(report) if report.is_file() and not overwrite else {}
        resumed = kept_rows(planned, config_for, report, overwrite, precision, old) if old else None
    done, by_output = (resumed.done, resumed.by_output) if resumed else (set(), {})
    counts = {"to do": 0, "done": 0, "refused": 0}
    print(f"dry run: nothing is written and Ray is not started; outputs go to {_shown(output_dir)}", file=out)
    for n, item in enumerate(planned, 1):
        cfg = None
        why = item.error
        if not why:
            try:
                cfg = config_for(item)
            except ValueError as e:
                why = f"{item.input}{f' ({item.origin})' if item.origin else ''}: {e}"
        if not why and item.key not in done:
            why = _unreadable(item, max_pixels)
        state = "refused" if why else "done" if item.key in done else "to do"
        counts[state] += 1
        print(f"{n:>4}  {state:<7}  {_shown(item.input)}", file=out)
        if why:
            print(f"      {'':<7}  {shown(why)}", file=out)
            continue
        assert cfg is not None
        kernel = _shown(cfg.kernel) if cfg.kernel else "bicubic"
        why_again = redo_reason(earlier_row(item, old, by_output), item, cfg.hash(), precision) if state == "to do" else None
        again = f" ({why_again})" if why_again and why_again != "not done before" else ""
        print(f"      {'':<7}  -> {_shown(item.output)}{again}", file=out)
        print(f"      {'':<7}  gt: {_shown(item.gt) if item.gt else 'none (no scores)'}; kernel: {kernel}; "
              f"settings: {_settings(cfg, item.preset or base_preset)}", file=out)
    print(f"{len(planned)} item(s): {counts['to do']} to do, {counts['done']} done before (a run keeps them), "
          f"{counts['refused']} refused", file=out)
    return 1 if counts["refused"] else 0
