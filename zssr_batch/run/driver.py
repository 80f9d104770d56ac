"""A whole run in the driver process: what is left to do, the actors, the dispatch loop, then the
summary, run.json and report.html, and the exit code.

The only part of the package that talks to Ray is ``run/``. With no address the run starts a
local Ray sized to the machine and shuts it down at the end; with one it joins the cluster.
``ZSSR_BATCH_FAULT`` is read here, once, and sent to the actors (``run.faults``).
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import ray

from ..config import FitConfig
from ..files.display import shown, shown_lines
from ..files.sources import WorkItem
from ..files import storage
from ..files.images import remove_parts
from ..files.plan import plan_outputs
from ..report.html import write_html_report
from ..report.table import DISK_FULL, DiskFull, ReportWriter, compact, write_summary
from .cluster import NoActors, Placement, StorageProbe, live_nodes, plan_actors, start_actors, start_ray
from .dispatch import Dispatcher, call_bounds
from .faults import Faults
from .headwatch import HeadWatch
from .joining import Joiner, ask_for_gpus, release_gpus, wait_for_a_gpu
from .lock import FolderBusy, FolderLock
from .mirror import Mirror, local_home
from .progress import Progress
from .resume import kept_rows
from .runinfo import write_run_json
from .settings import RunSettings, cluster_address

# Exit codes (documented in the README).
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_TOO_MANY_FAILURES = 0, 1, 2, 3
EXIT_DISK_FULL, EXIT_LOST_HEAD, EXIT_INTERRUPTED, EXIT_TERMINATED = 4, 5, 130, 143  # 128 + SIGINT, + SIGTERM
LOST_HEAD = "lost the Ray head"  # run.json's 'stopped' when the cluster went away under the run
EXIT_FOR_STOP = {"interrupted": EXIT_INTERRUPTED, "terminated": EXIT_TERMINATED, DISK_FULL: EXIT_DISK_FULL,
                 LOST_HEAD: EXIT_LOST_HEAD}


class Interrupt:
    """The first Ctrl-C or SIGTERM (what Slurm, Kubernetes and ``ray job stop`` send) stops the run
    cleanly: rows flushed, summary, run.json and report.html written. A second one stops at once."""

    SIGNALS = {signal.SIGINT: ("interrupted", "Ctrl-C"), signal.SIGTERM: ("terminated", "SIGTERM")}

    def __init__(self) -> None:
        self.reason: str | None = None  # 'interrupted' or 'terminated' once asked
        self.old: dict = {}

    def __enter__(self) -> "Interrupt":
        def handler(signum, frame):  # noqa: ARG001
            reason, name = self.SIGNALS[signum]
            if self.reason:
                print(f"\nzssr-batch: second {name}, stopping now", file=sys.stderr)
                os._exit(EXIT_FOR_STOP[reason])
            self.reason = reason
            print(f"\nzssr-batch: {name}: stopping after cleanup ({name} again to stop at once)", file=sys.stderr)

        self.old = {s: signal.signal(s, handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self.old.items():
            signal.signal(s, old)


def exit_code(stop_reason: str | None, failed: int) -> int:
    if stop_reason in EXIT_FOR_STOP:
        return EXIT_FOR_STOP[stop_reason]
    if stop_reason:
        return EXIT_TOO_MANY_FAILURES
    return EXIT_SOME_FAILED if failed else EXIT_OK


def run(items: Iterable[WorkItem], config_for: Callable[[WorkItem], FitConfig], settings: RunSettings) -> int:
    """Plan, then process every item; returns the exit code.

    The plan (``files.plan``) is made before anything is written: a run that cannot start as asked
    (two inputs, one output) raises ``PlanError`` with nothing touched. Then the output folder is
    locked for the whole run: a second run on it is refused at once."""
    plan = plan_outputs(items, settings.output_dir)
    out = local_home(str(settings.output_dir))  # the folder, or this machine's copy of a URL's report
    try:
        out.mkdir(parents=True, exist_ok=True)
        with FolderLock(out):
            mirror = Mirror(out, str(settings.output_dir))
            mirror.pull()
            return _locked_run(plan.items, config_for, settings, out, mirror)
    except (FolderBusy, NoActors) as e:
        print(shown(f"zssr-batch run: error: {e}"), file=sys.stderr)
        return EXIT_USAGE
    except DiskFull as e:
        print(shown(f"zssr-batch run: stopped: {e}"), file=sys.stderr)
        return EXIT_DISK_FULL
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"zssr-batch run: stopped: {e.filename or out}: disk full ({e.strerror}) before any image",
              file=sys.stderr)
        return EXIT_DISK_FULL


def _locked_run(items: list[WorkItem], config_for: Callable[[WorkItem], FitConfig], settings: RunSettings,
                out: Path, mirror: Mirror) -> int:
    """The run, its folder locked: ``out`` holds report.csv and the end files (``mirror`` copies
    them to a URL --output)."""
    t_start = time.time()
    if mirror.on:  # one listing fills the store's cache: resume then asks for no output one by one
        storage.listing(str(settings.output_dir))
    # a run killed as it wrote an output or a report file left its temporary file (never a torn one)
    remove_parts({str(out)} | {posixpath.dirname(i.output) for i in items if i.output})
    resumed = kept_rows(items, config_for, out / "report.csv", settings.overwrite, settings.precision)
    writer = ReportWriter(out / "report.csv", resumed.rows.values())
    done, provisional = resumed.done, resumed.provisional

    progress = Progress(len(items), settings.progress, expected_steps(settings.engine))
    # Ray only when there is work: a rerun with everything done ends in about a second
    needs_ray = any(not i.error and i.key not in done for i in items)
    started_ray, asked, plan, actors, where, probe = _actors(settings, items, progress) if needs_ray \
        else (False, False, [], [], {}, None)
    joiner = Joiner(settings, plan, settings.for_actors(Faults.from_env()), probe, progress.say) if probe else None
    on_gpus = bool(plan and plan[0].resources.get("num_gpus"))
    if actors:  # (no bar for a run with nothing to fit: its last lines say it all)
        progress.status(f"{len(actors)} actor(s) placed; fitting {sum(i.key not in done for i in items)} image(s)")
        progress.start()
    work = Dispatcher(settings, actors, where, call_bounds(settings, on_gpus), iter(items), len(items), config_for,
                      done, writer, progress)
    del resumed

    def tick() -> None:  # every turn of the dispatch loop: the report's copy, nodes that joined
        mirror.tick()
        for actor, at in joiner.poll() if joiner else ():
            work.add_actor(actor, at)

    work.tick = tick
    end = Ending(settings, work, len(items), t_start, actors_info(plan, where), out, mirror, provisional)

    def head_lost(why: str) -> None:
        """From the watch's thread, with the main one perhaps blocked in Ray: no row after this,
        the end files written, and out (the folder lock goes with the process)."""
        writer.hold()
        progress.close()
        work.stop_detail = why
        os._exit(end.finish(LOST_HEAD))

    with Interrupt() as interrupt, HeadWatch(ray.get_runtime_context().gcs_address if needs_ray else None,
                                             head_lost, settings.head_timeout):
        try:
            work.run(lambda: interrupt.reason)
        finally:
            if joiner:
                joiner.close()
            for a in actors:  # (with those added as their nodes joined) also drops what was queued on them
                ray.kill(a, no_restart=True)
            if asked:
                release_gpus()
            writer.close()
            progress.close()
            if started_ray:
                ray.shutdown()
            _gone(list(where.values()))
            remove_parts(work.unfinished_folders())  # a worker killed as it wrote an output left its part
        return end.finish(work.stop_reason)


def _gone(workers: list[dict], wait_s: float = 5.0) -> None:
    """Wait (at most ``wait_s``) for the killed workers of this machine to end: ``ray.kill`` only asks,
    and a worker still alive as the run sweeps its temporary files can leave one more (the full-disk
    test found one). Workers of other machines are not waited for: their pids mean nothing here."""
    here = socket.gethostname()
    pids = [w["pid"] for w in workers if w.get("host") == here and w.get("pid")]
    t0 = time.monotonic()
    while pids and time.monotonic() - t0 < wait_s:
        pids = [p for p in pids if _running(p)]
        if pids:
            time.sleep(0.05)


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, killed and not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _actors(settings: RunSettings, items: list[WorkItem], progress: Progress) -> tuple[
        bool, bool, list[Placement], list, dict[int, dict], StorageProbe]:
    """Ray joined or started, GPUs asked of the autoscaler if the cluster has fewer than asked (and
    the first waited for), the actors planned, every node proven to see the run's files, the actors
    placed: (whether we started Ray, whether we asked for GPUs, the plan, the actors, where each
    runs, the storage probe, for nodes that join later)."""
    say = progress.say
    address = cluster_address(settings.address)
    progress.status(f"joining the Ray cluster at {address}" if address else "starting Ray on this machine")
    started_ray = start_ray(settings.address, settings.verbose)
    asked = False
    try:
        nodes = live_nodes()
        asked = ask_for_gpus(settings, nodes, say)
        if asked and not any(n["Resources"].get("GPU") for n in nodes):
            nodes = wait_for_a_gpu(settings.wait_for_gpus, say)
        plan = plan_actors(settings, nodes, say)
        probe = StorageProbe(probe_paths(items, settings), str(settings.output_dir), own_ray=started_ray)
        if len(nodes) > 1 or not started_ray:
            progress.status(f"checking that {len({p.node for p in plan})} node(s) see the run's files")
        probe.check([p.node for p in plan], say)
        progress.status(f"starting {len(plan)} actor(s) (each loads torch)")
        actors, where = start_actors(plan, settings.for_actors(Faults.from_env()), say)
    except (NoActors, ValueError):
        if asked:
            release_gpus()
        if started_ray:
            ray.shutdown()
        raise
    return started_ray, asked, plan, actors, where, probe


class Ending:
    """The end of a run: the stop's line, summary.csv, run.json, report.html, the last lines, and
    the exit code. The main thread ends a run this way, and so does the head's watch
    (``HeadWatch``) when Ray can no longer answer."""

    def __init__(self, settings: RunSettings, work: Dispatcher, total: int, t_start: float,
                 actors: dict[str, Any], out: Path, mirror: Mirror, provisional: set[str]) -> None:
        self.settings, self.work, self.total, self.t_start = settings, work, total, t_start
        self.provisional = provisional  # old rows kept until replaced (``resume.kept_rows``)
        self.actors = actors  # run.json's 'actors'
        self.out, self.mirror = out, mirror  # where the end files are written; their copy to a URL

    def finish(self, stop_reason: str | None) -> int:
        out, work, counts = self.out, self.work, self.work.counts
        if work.stop_detail:
            print(shown(f"zssr-batch: stopped: {work.stop_detail}"), file=sys.stderr)
        t_end = time.time()
        _written(lambda: compact(out / "report.csv", self.provisional), "report.csv")  # old rows replaced go
        table = _written(lambda: write_summary(out), "summary.csv") or ""
        _written(lambda: write_run_json(out, self.settings, counts, self.total, self.t_start, t_end, self.actors,
                                        stop_reason, work.pack_ways), "run.json")
        _written(lambda: write_html_report(out), "report.html")
        if self.mirror.on:
            _written(self.mirror.push, f"the report to {self.settings.output_dir}")
        print(shown_lines(table))
        where = str(self.settings.output_dir)
        print(f"zssr-batch: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} already done "
              f"of {self.total} in {t_end - self.t_start:.1f} s" + (f" (stopped: {stop_reason})" if stop_reason else ""))
        print(shown(f"  rows:   {storage.join(where, 'report.csv')}"))
        print(shown(f"  report: {storage.join(where, 'report.html')}"), flush=True)
        return exit_code(stop_reason, counts["failed"])


def probe_paths(items: list[WorkItem], settings: RunSettings, most: int = 64) -> list[str]:
    """What every node must see as the driver does: the first input of each folder and its ground
    truth's (a node may lack one folder of several), and the kernel files; at most ``most``."""
    first: dict[str, str] = {}
    for item in items:
        if item.error:
            continue
        for path in (item.input, item.gt):
            if path:
                first.setdefault(posixpath.dirname(path), path)
        for kernel in (dict(item.overrides).get("kernel"), item.true_kernel):
            if kernel and kernel != "estimate":  # ('estimate' is no file: each image's is made where it is fitted)
                first.setdefault(kernel, kernel)
    if settings.engine.get("kernel") not in (None, "", "estimate"):
        first.setdefault(settings.engine["kernel"], settings.engine["kernel"])
    return sorted(first.values())[:most]


def actors_info(plan: list[Placement], where: dict[int, dict]) -> dict[str, Any]:
    """run.json's 'actors': how many started, on which hosts, asking what of their nodes."""
    return {"count": len(where), "planned": len(plan), "hosts": dict(Counter(w["host"] for w in where.values())),
            "resources": sorted({json.dumps(p.resources, sort_keys=True) for p in plan})}


def _written(write: Callable[[], Any], name: str) -> Any:
    """Write one of the end-of-run files; a full disk (or any file error) costs that file only, with
    a line that says so: report.csv, already written row by row, is the run's record."""
    try:
        return write()
    except OSError as e:
        print(f"zssr-batch: could not write {name}: {e.strerror or e}", file=sys.stderr)
        return None


def expected_steps(engine: dict[str, Any]) -> int:
    """Steps an image takes at most under the run's base settings: the ETA's guess until the first
    image has landed and says how many the learning-rate rule really takes."""
    return int(engine.get("max_iters") or 1) * max(1, len(engine.get("scale_steps") or ()))
