"""A whole run in the driver process: what is left to do, the actors, the dispatch loop, then the
summary, run.json and report.html, and the exit code.

The only part of the package that talks to Ray is ``run/``. With no address the run starts a
local Ray sized to the machine and shuts it down at the end; with one it joins the cluster.
``ZSSR_BATCH_FAULT`` is read here, once, and sent to the actors (``run.faults``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import ray

from ..config import FitConfig
from ..files.sources import WorkItem
from ..report.table import ReportWriter, read_rows, write_summary
from .actor import FitActor
from .cluster import plan_actors, start_ray
from .dispatch import Dispatcher, call_bounds
from .faults import Faults
from .runinfo import write_run_json
from .settings import RunSettings

# Exit codes (documented in the README).
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_TOO_MANY_FAILURES, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Interrupt:
    """First Ctrl-C: stop cleanly (report flushed); second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self.old = None

    def __enter__(self) -> "Interrupt":
        def handler(signum, frame):  # noqa: ARG001
            if self.requested:
                print("\nzssr-batch: second Ctrl-C, stopping now", file=sys.stderr)
                os._exit(EXIT_INTERRUPTED)
            self.requested = True
            print("\nzssr-batch: stopping after cleanup (Ctrl-C again to stop at once)", file=sys.stderr)

        self.old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.old)


def is_done(row: dict[str, str] | None, cfg_hash: str) -> bool:
    return bool(row) and row.get("status") == "ok" and row.get("config_hash") == cfg_hash \
        and bool(row.get("output")) and Path(row["output"]).is_file()


def kept_rows(items: Callable[[], Iterator[WorkItem]], config_for: Callable[[WorkItem], FitConfig],
              report_path: Path, overwrite: bool) -> tuple[int, dict[str, dict[str, str]]]:
    """Pass 1 (names only): (items in all, the old rows this run keeps), so that the compacted
    report keeps exactly one row per input at every moment."""
    old = {} if overwrite else read_rows(report_path)
    total = 0
    keep = dict(old)
    for item in items():
        total += 1
        try:
            h = None if item.error else config_for(item).hash()
        except ValueError:
            h = None
        if h is None or not is_done(old.get(item.input), h):
            keep.pop(item.input, None)
    return total, keep


def exit_code(stop_reason: str | None, failed: int) -> int:
    if stop_reason == "interrupted":
        return EXIT_INTERRUPTED
    if stop_reason:
        return EXIT_TOO_MANY_FAILURES
    return EXIT_SOME_FAILED if failed else EXIT_OK


def run(items: Callable[[], Iterator[WorkItem]], config_for: Callable[[WorkItem], FitConfig],
        settings: RunSettings) -> int:
    """Process everything ``items()`` yields; returns the exit code. ``items`` is called twice (count, work)."""
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.csv"
    t_start = time.time()
    total, keep = kept_rows(items, config_for, report_path, settings.overwrite)
    writer = ReportWriter(report_path, keep.values())

    started_ray = start_ray(settings.address)
    n_actors, resources, threads = plan_actors(settings)
    actor_settings = settings.for_actors(Faults.from_env())
    actors = [FitActor.options(**resources).remote(threads, actor_settings) for _ in range(n_actors)]
    bar = _progress(total, settings.progress)
    log = (lambda msg: None) if settings.progress else (lambda msg: print(msg, file=sys.stderr, flush=True))
    work = Dispatcher(settings, actors, call_bounds(settings, bool(resources.get("num_gpus"))), iter(items()),
                      total, config_for, set(keep), writer, bar, log)
    del keep
    with Interrupt() as interrupt:
        try:
            work.run(lambda: interrupt.requested)
        finally:
            for a in actors:  # also drops whatever was still queued on them
                ray.kill(a, no_restart=True)
            writer.close()
            if started_ray:
                ray.shutdown()
            if bar is not None:
                bar.close()

    counts, stop_reason = work.counts, work.stop_reason
    table = write_summary(out)
    t_end = time.time()
    write_run_json(out, settings, counts, total, t_start, t_end, n_actors, resources, stop_reason, work.pack_ways)
    from ..report.html import write_html_report

    write_html_report(out)
    print(table)
    print(f"zssr-batch: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} already done "
          f"of {total} in {t_end - t_start:.1f} s; report: {report_path}"
          + (f" (stopped: {stop_reason})" if stop_reason else ""))
    return exit_code(stop_reason, counts["failed"])


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", dynamic_ncols=True, smoothing=0.05)
