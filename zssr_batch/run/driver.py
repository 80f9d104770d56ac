"""The Ray driver: streams WorkItems to fit actors, a bounded window in flight, rows as results land.

The only module that imports Ray. With no address it starts a local Ray sized
to the machine and shuts it down at the end; with one it joins the cluster.
By default each actor gets batches of images and fits them in packs (see
``pack.packed``): one actor per GPU, or per few CPU cores. Actor calls are Ray
streaming generators, so each record comes back the moment its image is done. With ``--pack 1`` each
call is one image and each actor holds ``1 / images_per_gpu`` of a GPU. At most
two calls wait per actor, so the driver never holds more than ``2 x actors``
object refs however long the input list is.
An actor that dies (segfault, SIGKILL, node loss) is restarted by Ray. The images it had
started are resubmitted, up to ``retries`` times; those it had not started go back to the
queue as they were (see ``after_death``).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, WorkerCrashedError

from .. import __version__
from ..config import FitConfig
from ..report.table import ReportWriter, read_rows, write_summary
from ..files.sources import WorkItem
from .worker import Extras, injected_slow_restart, run_item, run_packed

# Exit codes (documented in the README).
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_TOO_MANY_FAILURES, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEPTH = 2  # tasks queued per actor: one running, one ready to start
# Images per call on a GPU, by default: a call's pack drains at its end (a shrinking pack computes
# fewer images per second, and the next call's pack starts from its first decode and recording), so
# calls are large while much is left, then shrink so that the workers finish together (``call_size``).
GPU_CALL = (128, 1024)
SPARED_MAX = 2  # deaths an image may sit through unannounced in a begun call before they count
RESTART_WAIT_S = 600.0  # how long work waits for a dead worker to answer again before it is sent anyway
PING_EVERY_S = 0.5


@dataclass
class RunSettings:
    output_dir: Path
    gpus: int | None = None  # None: every GPU there is
    images_per_gpu: int | None = None  # actors per GPU; default 4 fitting one image each, 1 when packing
    pack: int = 0  # fits per pack: 0 = measured within GPU memory (CPU: pack.size.cpu_pack_size); 1 = one image per call
    precision: str = "bf16"  # packed networks on a GPU: 'bf16' or 'fp32' (CPUs always run fp32)
    batch: int | None = None  # images per actor call when packing (None: call_size within GPU_CALL, 16 on CPUs)
    cpu_workers: int | None = None  # --gpus 0: how many CPU actors (default: cores / threads)
    threads_per_worker: int | None = None
    address: str | None = None
    retries: int = 2
    max_failures: int | None = None
    overwrite: bool = False
    progress: bool = True
    max_pixels: int | None = None
    degrade: bool = False
    extras: Extras = field(default_factory=Extras)
    command: str = ""
    engine: dict[str, Any] = field(default_factory=dict)  # resolved base settings, for run.json


def call_size(left: int, actors: int, lo: int, hi: int) -> int:
    """Images for the next call when ``left`` images have not been sent yet: an even share of them
    over every call the actors can hold (``DEPTH`` each), kept within [lo, hi].

    By ``benchmarks/drain_model.py``'s replay of the paper preset on an H100's step times (run 1,
    2026-11-26), 10,000 images on one GPU train in calls of 256 at ~11,000 images/hour, in these
    (1024 while more than 2048 are left, then smaller, never under 128) at ~11,600, and in one call
    that never drains at ~11,900.
    """
    return max(lo, min(hi, -(-left // (DEPTH * actors))))


@dataclass
class Entry:
    """One image on its way through the workers."""

    item: WorkItem
    cfg: dict[str, Any]  # its FitConfig as a dict, ready to send
    attempt: int = 1  # the times a worker has started it, this one included
    spared: int = 0  # worker deaths it sat through without being started

    def name(self) -> str:
        return self.item.rel or self.item.input


@dataclass
class Call:
    """One actor call in flight, as the driver knows it."""

    left: dict[int, Entry]  # by index in the call: the images that have not come back yet
    actor: int
    begun: bool = False  # the worker said it began the call (its first item)
    started: set[int] = field(default_factory=set)  # the images it announced before touching them


@dataclass
class AfterDeath:
    back: list[Entry]  # not started by the dead worker: to the head of the queue, attempt unchanged
    retry: list[list[Entry]]  # started: resubmitted, each inner list as one call
    failed: list[Entry]  # started on their last attempt


def after_death(call: Call, retries: int) -> AfterDeath:
    """What becomes of the images of a call whose worker died before they came back.

    A death is charged only to the images the worker had started: it announces them before it
    touches them, and each announcement reaches the driver before the worker goes on (see
    ``FitActor.process``). The others, most of a GPU worker's call (up to 1024 images) and all of
    the call queued behind it, were bystanders: before, each of them cost an attempt and went back
    alone, so one lost node sent hundreds of images through one-image calls.
    Started images with another attempt after this one go back together, as one call, so a lost
    node costs one pack's worth of work; on their last attempt they go alone, so a poison image
    costs only itself. A worker can also die in a begun call before it announced anything (its
    pack-size probe, or the headers it reads for it); an image that has sat through
    ``SPARED_MAX`` such deaths counts as started, so no image can kill workers for ever.
    """
    out = AfterDeath([], [], [])
    together, alone = [], []
    for i in sorted(call.left):
        e = call.left[i]
        if not call.begun:
            out.back.append(e)
        elif i not in call.started and e.spared < SPARED_MAX:
            out.back.append(Entry(e.item, e.cfg, e.attempt, e.spared + 1))
        elif e.attempt > retries:
            out.failed.append(e)
        else:
            nxt = Entry(e.item, e.cfg, e.attempt + 1)
            (alone if nxt.attempt > retries else together).append(nxt)
    if together:
        out.retry.append(together)
    out.retry.extend([e] for e in alone)
    return out


@ray.remote(max_restarts=-1, max_task_retries=0)
class FitActor:
    """Fits a batch of images per call, one by one or packed; heavy state (torch, CUDA context) lives here."""

    def __init__(self, threads: int) -> None:
        import torch

        injected_slow_restart()  # off unless the robustness tests ask for it
        torch.set_num_threads(max(1, threads))
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.device = "cuda" if self.gpu_ids and torch.cuda.is_available() else "cpu"

    def where(self) -> dict[str, Any]:
        return {"node": ray.get_runtime_context().get_node_id()[:12], "host": socket.gethostname(),
                "gpu": ",".join(self.gpu_ids), "pid": os.getpid()}

    @ray.method(_generator_backpressure_num_objects=1)
    def process(self, items: list[dict[str, Any]], cfgs: list[dict[str, Any]],
                settings: dict[str, Any]) -> Iterator[tuple[Any, dict[str, Any] | None]]:
        """A Ray streaming generator: (index in the batch, record) for each image as soon as it is done,
        and ([index, ...], None) before it starts those images (first of all ([], None): begun).

        With a backpressure of one item, each ``yield`` returns only once the driver has taken the
        item, so a start notice is never lost with a worker that dies right after it (without it,
        17 of 20 were, in a trial with a SIGKILL right after the yield). The driver charges a death
        only to the images the worker had announced (``after_death``).
        One image at a time, or the batch fitted in packs (continuous batching).
        """
        yield [], None  # the call has begun: from here a death may be this call's doing
        started = time.time()
        configs = [FitConfig(**c) for c in cfgs]
        extras = Extras(**settings["extras"])
        if len(items) == 1 or settings["pack"] == 1:
            def one_by_one() -> Iterator[tuple[Any, dict[str, Any] | None]]:
                for i, (item, cfg) in enumerate(zip(items, configs)):
                    yield [i], None
                    yield i, run_item(item, cfg, self.device, extras.for_item(item), settings["max_pixels"],
                                      settings["degrade"])
            results = one_by_one()
        else:
            results = run_packed(items, configs, self.device, extras, settings["max_pixels"], settings["degrade"],
                                 settings["pack"], settings["precision"], announce=True)
        where = self.where()
        for i, record in results:
            if record is None:
                yield i, None
                continue
            record.update(where)
            record["started_at"] = _iso(started)
            record["finished_at"] = _iso(time.time())
            started = time.time()
            yield i, record


class _Comebacks:
    """Workers that died, until they answer again.

    Ray restarts a dead worker, but a call sent while it restarts fails at once ("the actor
    is restarting"). Counted as a death, that cost its images an attempt they never had: one
    death with a 3 s restart failed every image queued for retry, "worker died 3 times"
    (tests/test_overnight.py). So a dead worker gets no work until it answers a ping, or until
    ``RESTART_WAIT_S`` has passed (then work goes to it anyway, and fails as before if it is gone).
    """

    def __init__(self, actors: list, where: dict[int, dict], log: Callable[[str], None]) -> None:
        self.actors, self.where, self.log = actors, where, log
        self.down: dict[int, list] = {}  # actor -> [died at, ping in flight or None, last ping sent at]

    def died(self, a: int) -> None:
        self.down.setdefault(a, [time.monotonic(), None, 0.0])

    def up(self, a: int) -> bool:
        return a not in self.down

    def poll(self) -> None:
        """Note the workers that answer again; ping the others (never waits)."""
        now = time.monotonic()
        for a, state in list(self.down.items()):
            since, ping, _ = state
            if ping is not None and ray.wait([ping], timeout=0)[0]:
                state[1] = None
                try:
                    self.where[a] = ray.get(ping)
                except (RayActorError, WorkerCrashedError, RayTaskError):
                    pass  # still restarting: ping again
                else:
                    del self.down[a]
                    self.log(f"actor {a} is back after {now - since:.1f} s (node {self.where[a]['node']})")
                    continue
            if now - since > RESTART_WAIT_S:
                del self.down[a]
                self.log(f"actor {a} has not answered for {RESTART_WAIT_S:.0f} s; sending it work anyway")
            elif state[1] is None and now - state[2] >= PING_EVERY_S:
                state[1], state[2] = self.actors[a].where.remote(), now


def _item_row(item: WorkItem, attempts: int) -> dict[str, Any]:
    """The report fields a work item gives a row the driver writes itself (a failure before or after
    the workers)."""
    return {"input": item.input, "output": item.output, "gt": item.gt, "rel": item.rel, "attempts": attempts,
            "preset": item.preset}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def start_ray(address: str | None) -> bool:
    """Join ``address`` (or RAY_ADDRESS), else start a local Ray; returns True if we started it."""
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch/CUDA in the driver is fine: CPU only
        gpus = 0
    ray.init(num_cpus=os.cpu_count() or 1, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    return True


def plan_actors(settings: RunSettings) -> tuple[int, dict[str, float], int]:
    """(number of actors, resources per actor, torch threads per actor) for this cluster."""
    res = ray.cluster_resources()
    have_gpus = int(res.get("GPU", 0))
    cpus = int(res.get("CPU", 1))
    gpus = have_gpus if settings.gpus is None else min(settings.gpus, have_gpus)
    if settings.gpus and settings.gpus > have_gpus:
        print(f"zssr-batch: asked for {settings.gpus} GPUs, the cluster has {have_gpus}; using {gpus}",
              file=sys.stderr)
    if gpus > 0:
        k = max(1, settings.images_per_gpu or (4 if settings.pack == 1 else 1))
        return gpus * k, {"num_gpus": 1.0 / k, "num_cpus": 0}, max(1, settings.threads_per_worker or 2)
    threads = settings.threads_per_worker or min(4, cpus)
    n = settings.cpu_workers or max(1, cpus // threads)
    return n, {"num_cpus": min(threads, cpus)}, threads


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


def run(items: Callable[[], Iterator[WorkItem]], config_for: Callable[[WorkItem], FitConfig],
        settings: RunSettings) -> int:
    """Process everything ``items()`` yields; returns the exit code. ``items`` is called twice (count, work)."""
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.csv"
    t_start = time.time()

    # Pass 1 (names only): count the work and find old rows that this run replaces, so
    # that the compacted report keeps exactly one row per input at every moment.
    old = {} if settings.overwrite else read_rows(report_path)
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
    writer = ReportWriter(report_path, keep.values())
    done_before = set(keep)
    del old, keep

    started_ray = start_ray(settings.address)
    n_actors, resources, threads = plan_actors(settings)
    actors = [FitActor.options(**resources).remote(threads) for _ in range(n_actors)]
    where = {}
    payload_settings = {"extras": asdict(settings.extras), "max_pixels": settings.max_pixels,
                        "degrade": settings.degrade, "pack": settings.pack, "precision": settings.precision}
    if settings.pack == 1 or settings.batch:
        sizes = (1, 1) if settings.pack == 1 else (settings.batch, settings.batch)
    elif settings.pack:
        sizes = (2 * settings.pack, 8 * settings.pack)
    else:
        sizes = GPU_CALL if resources.get("num_gpus") else (16, 16)  # (a CPU's packs of 4 drain cheaply)
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    gain = {"sum": 0.0, "n": 0}  # running mean of the PSNR-Y gain, for the progress bar
    pending: dict[Any, Call] = {}  # by the call's generator
    abandoned: list = []  # calls begun after a stop, held until the workers are killed
    load = [0] * n_actors
    retry: deque[list[Entry]] = deque()  # calls to resubmit after a worker died
    back: deque[Entry] = deque()  # images a dead worker never started: they go before new ones
    source = iter(items())
    pulled = 0  # items taken from the source
    exhausted = False
    stop_reason = None
    bar = _progress(total, settings.progress)
    log = (lambda msg: None) if settings.progress else (lambda msg: print(msg, file=sys.stderr, flush=True))
    comebacks = _Comebacks(actors, where, log)

    def emit(record: dict[str, Any]) -> None:
        writer.write(record)
        status = record.get("status")
        counts["ok" if status == "ok" else "failed"] += 1
        if status == "ok" and record.get("psnr_y") is not None and record.get("bicubic_psnr_y") is not None:
            gain["sum"] += record["psnr_y"] - record["bicubic_psnr_y"]
            gain["n"] += 1
        if bar is not None:
            bar.update(1)
            post = {"ok": counts["ok"], "failed": counts["failed"]}
            if gain["n"]:
                post["gain"] = f"{gain['sum'] / gain['n']:+.2f}dB"
            bar.set_postfix(post, refresh=False)
        extra = f" ({record.get('error')})" if status != "ok" else \
            f" psnr_y={record['psnr_y']:.2f}" if record.get("psnr_y") is not None else ""
        log(f"finished {record.get('rel') or record['input']}: {status} on node {record.get('node', '-')} "
            f"gpu {record.get('gpu') or '-'} in {record.get('fit_seconds') or 0:.1f}+"
            f"{record.get('infer_seconds') or 0:.1f} s{extra}")

    def free_actor() -> int | None:
        """The least loaded worker that is up and can queue another batch."""
        free = [a for a in range(n_actors) if comebacks.up(a) and load[a] < DEPTH]
        return min(free, key=lambda a: load[a]) if free else None

    def submit(batch: list[Entry], a: int) -> None:
        gen = actors[a].process.remote([asdict(e.item) for e in batch], [e.cfg for e in batch], payload_settings)
        pending[gen] = Call(dict(enumerate(batch)), a)
        load[a] += 1
        info = where.get(a)
        for e in batch:
            log(f"sent {e.name()} to actor {a}" + (f" (node {info['node']})" if info else "")
                + (f", attempt {e.attempt}" if e.attempt > 1 else ""))

    def next_batch() -> list[Entry]:
        """A call to resubmit after a death (see ``after_death``), else up to ``call_size`` new images."""
        if retry:
            return retry.popleft()
        batch: list[Entry] = []
        size = call_size(total - pulled + len(back), n_actors, *sizes)
        while len(batch) < size:
            nxt = back.popleft() if back else next_item()
            if nxt is None:
                break
            batch.append(nxt)
        return batch

    def next_item() -> Entry | None:
        nonlocal exhausted, pulled
        while not exhausted:
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                return None
            pulled += 1
            base = _item_row(item, attempts=0)
            if item.error:
                emit({**base, "status": "failed", "error": item.error})
                continue
            try:
                cfg = config_for(item)
            except ValueError as e:
                emit({**base, "status": "failed", "error": f"{item.input}: {e}"})
                continue
            if item.input in done_before:
                counts["skipped"] += 1
                if bar is not None:
                    bar.update(1)
                continue
            return Entry(item, asdict(cfg))  # asdict keeps tuples as tuples
        return None

    exit_code = EXIT_OK
    with Interrupt() as interrupt:
        try:
            for i, a in enumerate(actors):  # where each actor landed, for the log
                try:
                    where[i] = ray.get(a.where.remote(), timeout=120)
                except (GetTimeoutError, RayActorError):
                    pass
            while True:
                if interrupt.requested:
                    stop_reason = "interrupted"
                if settings.max_failures is not None and counts["failed"] >= settings.max_failures and not stop_reason:
                    stop_reason = f"--max-failures {settings.max_failures} reached"
                    log(f"zssr-batch: {stop_reason}; finishing the images in flight")
                comebacks.poll()
                while not stop_reason and (a := free_actor()) is not None:
                    batch = next_batch()
                    if not batch:
                        break
                    submit(batch, a)
                waiting = comebacks.down and (retry or back or not exhausted)  # work for workers yet to come back
                if stop_reason == "interrupted" or not pending and (stop_reason or not waiting):
                    break
                if not pending:
                    time.sleep(PING_EVERY_S / 5)
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for gen in ready:
                    call = pending[gen]
                    a = call.actor
                    try:
                        i, record = ray.get(next(gen))
                    except StopIteration:  # the call is done
                        del pending[gen]
                        load[a] -= 1
                        continue
                    except (RayActorError, WorkerCrashedError, RayTaskError) as e:
                        del pending[gen]
                        load[a] -= 1
                        comebacks.died(a)
                        cause = " ".join(str(e).split())[:200]
                        fate = after_death(call, settings.retries)  # only what had not come back
                        for group in fate.retry:
                            for r in group:
                                log(f"worker died on {r.name()} (attempt {r.attempt - 1}); retrying"
                                    + (f" with the {len(group) - 1} others it had started" if len(group) > 1
                                       else " alone"))
                        if fate.back:
                            names = ", ".join(e.name() for e in fate.back[:3]) + (", ..." if len(fate.back) > 3 else "")
                            log(f"actor {a} died; {len(fate.back)} images it had not started go back to the queue: "
                                f"{names}")
                        retry.extend(fate.retry)
                        back.extendleft(reversed(fate.back))
                        for f in fate.failed:
                            emit({**_item_row(f.item, f.attempt), "status": "failed",
                                  "config_hash": FitConfig(**f.cfg).hash(),
                                  "error": f"{f.item.input}: worker died {f.attempt} times ({cause})"})
                        continue
                    if record is None:  # the worker is about to start images i (a list)
                        if not i and stop_reason:
                            # A call that begins after the run was told to stop is left unanswered: the
                            # worker waits at its next notice, before it reads anything, until the end
                            # kills it. (ray.cancel of a queued call cost the running call its last row
                            # in a trial with Ray 2.60, and left ray.wait blocked on the cancelled one.)
                            del pending[gen]
                            load[a] -= 1
                            abandoned.append(gen)
                            continue
                        call.begun = True
                        call.started.update(i)
                        continue
                    done = call.left.pop(i)
                    record["attempts"] = done.attempt
                    record["preset"] = done.item.preset or settings.engine.get("preset")
                    emit(record)
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        finally:
            for a in actors:  # also drops whatever was still queued on them
                ray.kill(a, no_restart=True)
            writer.close()
            if started_ray:
                ray.shutdown()
            if bar is not None:
                bar.close()

    if stop_reason == "interrupted":
        exit_code = EXIT_INTERRUPTED
    elif stop_reason:
        exit_code = EXIT_TOO_MANY_FAILURES
    elif counts["failed"]:
        exit_code = EXIT_SOME_FAILED
    table = write_summary(out)
    t_end = time.time()
    write_run_json(out, settings, counts, total, t_start, t_end, n_actors, resources, stop_reason)
    from ..report.html import write_html_report

    write_html_report(out)
    print(table)
    print(f"zssr-batch: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} already done "
          f"of {total} in {t_end - t_start:.1f} s; report: {report_path}"
          + (f" (stopped: {stop_reason})" if stop_reason else ""))
    return exit_code


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", dynamic_ncols=True, smoothing=0.05)


def write_run_json(out: Path, settings: RunSettings, counts: dict[str, int], total: int, t_start: float,
                   t_end: float, n_actors: int, resources: dict[str, float], stop_reason: str | None) -> None:
    import numpy
    import torch

    info = {
        "command": settings.command,
        "engine": settings.engine,
        "run": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()
                if k not in ("engine", "command")},
        "versions": {"zssr_batch": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "ray": ray.__version__, "numpy": numpy.__version__},
        "machine": {"host": socket.gethostname(), "platform": platform.platform(),
                    "cuda": torch.cuda.is_available(),
                    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]},
        "actors": {"count": n_actors, "resources": resources},
        "images": {"total": total, **counts},
        "stopped": stop_reason,
        "started_at": _iso(t_start), "finished_at": _iso(t_end), "wall_seconds": round(t_end - t_start, 3),
    }
    from ..files.images import write_atomic

    write_atomic(out / "run.json", json.dumps(info, indent=2).encode())
