"""``run --dry-run``: what a run would do, item by item, decided exactly as the run decides it (the
scan, the output plan, resume) but with nothing written and no Ray started."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, TextIO

from ..config import FitConfig
from ..files import storage
from ..files.plan import plan_outputs
from ..files.sources import WorkItem
from .mirror import local_home
from .resume import kept_rows


def _shown(path: str | None) -> str:
    """A path as short as it can be said: relative to the working directory when under it."""
    if not path:
        return "-"
    if storage.is_url(path):
        return path
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def _settings(cfg: FitConfig, preset: str) -> str:
    scale = "x" + (f"{cfg.scale[0]:g}" if cfg.scale[0] == cfg.scale[1] else f"{cfg.scale[0]:g},{cfg.scale[1]:g}")
    steps = f"{len(cfg.steps)} steps to {scale}" if len(cfg.steps) > 1 else scale
    return f"{preset} ({steps}, up to {cfg.max_iters} iterations{' per step' if len(cfg.steps) > 1 else ''})"


def preview(items: list[WorkItem], config_for: Callable[[WorkItem], FitConfig], output_dir: str, base_preset: str,
            overwrite: bool, precision: str, out: TextIO = sys.stdout) -> None:
    """Print each item's fate and the counts. A plan the run would refuse (two inputs, one output)
    raises ``PlanError`` here as there."""
    planned = plan_outputs(items, output_dir).items
    report = local_home(output_dir) / "report.csv"
    keep = kept_rows(planned, config_for, report, overwrite, precision) if Path(report).is_file() else {}
    counts = {"to do": 0, "done": 0, "refused": 0}
    print(f"dry run: nothing is written and Ray is not started; outputs go to {_shown(output_dir)}", file=out)
    for n, item in enumerate(planned, 1):
        cfg = None
        why = item.error
        if not why:
            try:
                cfg = config_for(item)
            except ValueError as e:
                why = str(e)
        state = "refused" if why else "done" if item.key in keep else "to do"
        counts[state] += 1
        print(f"{n:>4}  {state:<7}  {_shown(item.input)}", file=out)
        if why:
            print(f"      {'':<7}  {why}", file=out)
            continue
        assert cfg is not None
        kernel = _shown(cfg.kernel) if cfg.kernel else "bicubic"
        print(f"      {'':<7}  -> {_shown(item.output)}", file=out)
        print(f"      {'':<7}  gt: {_shown(item.gt) if item.gt else 'none (no scores)'}; kernel: {kernel}; "
              f"settings: {_settings(cfg, item.preset or base_preset)}", file=out)
    print(f"{len(planned)} item(s): {counts['to do']} to do, {counts['done']} done before (a run keeps them), "
          f"{counts['refused']} refused", file=out)
