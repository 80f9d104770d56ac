"""The dispatch loop: WorkItems streamed to the fit actors, a bounded window in flight, each row
written the moment its image is done.

At most ``DEPTH`` calls wait per actor, so the driver never holds more than ``DEPTH x actors``
object refs however long the input list is. A worker's death sends its images through
``recovery.after_death``; ``Dispatcher`` is otherwise a pool of actors in the way
``ray.util.ActorPool`` is, that also knows which images each call still owes.
"""

from __future__ import annotations

import posixpath
import time
from collections import Counter, deque
from typing import Any, Callable, Iterator

import ray


from ..config import FitConfig
from ..files.sources import WorkItem
from ..report.row import Row
from ..report.table import DISK_FULL, DiskFull, ReportWriter
from .recovery import DEATHS, PING_EVERY_S, AfterDeath, Call, Comebacks, Entry, after_death
from .progress import Progress
from .settings import RunSettings

DEPTH = 2  # tasks queued per actor: one running, one ready to start
# Images per call on a GPU, by default: a call's pack drains at its end (a shrinking pack computes
# fewer images per second, and the next call's pack starts from its first decode and recording), so
# calls are large while much is left, then shrink so that the workers finish together (``call_size``).
GPU_CALL = (128, 1024)
# Reasons to stop that do not wait for the images in flight: a signal, or a disk that takes no more.
STOP_NOW = ("interrupted", "terminated", DISK_FULL)


def call_size(left: int, actors: int, lo: int, hi: int) -> int:
    """Images for the next call when ``left`` images have not been sent yet: an even share of them
    over every call the actors can hold (``DEPTH`` each), kept within [lo, hi], and never more than
    one actor's even share, so that every actor has work even on a 5-image set (with ``lo`` alone,
    Set5 and Set14 went whole to one actor of one node).

    Large calls drain less often; an even share at the end lets the workers finish together. A
    replay of measured step times puts this between many small calls and one that never drains
    (docs/BENCHMARKS.md, "Why the run's defaults are what they are").
    """
    share = -(-left // actors)
    return max(1, min(share, max(lo, min(hi, -(-left // (DEPTH * actors))))))


def call_bounds(settings: RunSettings, on_gpus: bool) -> tuple[int, int]:
    """(lo, hi) for ``call_size`` under these settings."""
    if settings.pack == 1 or settings.batch:
        return (1, 1) if settings.pack == 1 else (settings.batch, settings.batch)
    if settings.pack:
        return 2 * settings.pack, 8 * settings.pack
    return GPU_CALL if on_gpus else (16, 16)  # (a CPU's packs of 4 drain cheaply)


class Dispatcher:
    """Sends the run's images to its actors and writes each row as it lands (``run``)."""

    def __init__(self, settings: RunSettings, actors: list, where: dict[int, dict], sizes: tuple[int, int],
                 source: Iterator[WorkItem], total: int, config_for: Callable[[WorkItem], FitConfig],
                 done_before: set[str], writer: ReportWriter, progress: Progress) -> None:
        self.settings, self.actors, self.sizes = settings, actors, sizes  # sizes: call_size's (lo, hi)
        self.source, self.total = source, total  # the work, and how many items it holds
        self.config_for, self.done_before = config_for, done_before  # settings per item; inputs already done
        self.writer, self.progress = writer, progress  # report.csv; the terminal
        self.log, self.detail = progress.say, progress.detail  # lines to see (above the bar); lines for a log
        self.where = where  # actor -> where it runs (node, host, gpu, pid), for the log
        self.comebacks = Comebacks(actors, self.where, self.log)  # dead workers until they answer again
        self.pending: dict[Any, Call] = {}  # calls in flight, by their generator
        self.abandoned: list = []  # calls begun after a stop, held until the workers are killed
        self.load = [0] * len(actors)  # calls in flight per actor
        self.retry: deque[list[Entry]] = deque()  # calls to resubmit after a worker died
        self.back: deque[Entry] = deque()  # images a dead worker never started: they go before new ones
        self.pulled = 0  # items taken from the source
        self.exhausted = False  # the source has no more
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.gain = {"sum": 0.0, "n": 0}  # running mean of the PSNR-Y gain, for the progress bar
        self.pack_ways: Counter[str] = Counter()  # rows by how their pack ran (run.json's pack_ways)
        self.stop_reason: str | None = None  # why the run stopped early (a key of STOP_NOW, or --max-failures)
        self.stop_detail = ""  # the line that says so, for a stop that is not the user's
        self.tick: Callable[[], None] = lambda: None  # called every turn of the loop (a URL output's copy)

    def add_actor(self, actor: Any, where: dict) -> None:
        """An actor whose node joined during the run: it gets work from the next call on."""
        self.actors.append(actor)
        self.load.append(0)
        self.where[len(self.actors) - 1] = where
        self.log(f"actor {len(self.actors) - 1} joined (node {where['node']})")

    def emit(self, record: dict[str, Any]) -> None:
        """Write a row, count it, and show it. A full disk stops the run (``DISK_FULL``): every image
        after would fail the same way, and a night's worth of failed rows is no report."""
        try:
            self.writer.write(record)
        except DiskFull as e:
            self._stop_now(DISK_FULL, str(e))
            return
        status = record.get("status")
        if status != "ok" and DISK_FULL in (record.get("error") or ""):
            self._stop_now(DISK_FULL, record["error"])
        self.counts["ok" if status == "ok" else "failed"] += 1
        if record.get("pack_way"):
            self.pack_ways[record["pack_way"]] += 1
        if status == "ok" and record.get("psnr_y") is not None and record.get("bicubic_psnr_y") is not None:
            self.gain["sum"] += record["psnr_y"] - record["bicubic_psnr_y"]
            self.gain["n"] += 1
        self.progress.landed(status, record.get("iterations"),
                             f"{self.gain['sum'] / self.gain['n']:+.2f} dB" if self.gain["n"] else "")
        extra = f" ({record.get('error')})" if status != "ok" else \
            f" psnr_y={record['psnr_y']:.2f}" if record.get("psnr_y") is not None else ""
        name = record.get("rel") or record["input"]
        if not record.get("node"):  # refused before any work: no place, no times
            self.detail(f"finished {name}: {status}{extra}")
            return
        where = f"{record.get('host') or record['node']} " + (f"gpu {record['gpu']}" if record.get("gpu") else "(cpu)")
        self.detail(f"finished {name}: {status} on {where} in {record.get('fit_seconds') or 0:.1f} s fit + "
                    f"{record.get('infer_seconds') or 0:.1f} s output{extra}")

    def free_actor(self) -> int | None:
        """The least loaded worker that is up and can queue another batch."""
        free = [a for a in range(len(self.actors)) if self.comebacks.up(a) and self.load[a] < DEPTH]
        return min(free, key=lambda a: self.load[a]) if free else None

    def submit(self, batch: list[Entry], a: int) -> None:
        gen = self.actors[a].process.remote([e.item for e in batch], [e.cfg for e in batch])
        self.pending[gen] = Call(dict(enumerate(batch)), a)
        self.load[a] += 1
        info = self.where.get(a)
        for e in batch:
            self.detail(f"sent {e.name()} to actor {a}" + (f" (node {info['node']})" if info else "")
                     + (f", attempt {e.attempt}" if e.attempt > 1 else ""))

    def next_batch(self) -> list[Entry]:
        """A call to resubmit after a death (see ``after_death``), else up to ``call_size`` new images."""
        if self.retry:
            return self.retry.popleft()
        batch: list[Entry] = []
        size = call_size(self.total - self.pulled + len(self.back), len(self.actors), *self.sizes)
        while len(batch) < size:
            nxt = self.back.popleft() if self.back else self.next_item()
            if nxt is None:
                break
            batch.append(nxt)
        return batch

    def next_item(self) -> Entry | None:
        """The next item of the source with work to do; those refused before any work get their row here."""
        while not self.exhausted:
            try:
                item = next(self.source)
            except StopIteration:
                self.exhausted = True
                return None
            self.pulled += 1
            base = Row.of(item, attempts=0, preset=item.preset)
            if item.error:
                self.emit(base.failed(item.error).as_record())
                continue
            try:
                cfg = self.config_for(item)
            except ValueError as e:
                self.emit(base.failed(f"{item.input}{f' ({item.origin})' if item.origin else ''}: {e}").as_record())
                continue
            if item.key in self.done_before:
                self.counts["skipped"] += 1
                self.progress.skipped()
                continue
            return Entry(item, cfg)
        return None

    def _drop(self, gen: Any) -> Call:
        call = self.pending.pop(gen)
        self.load[call.actor] -= 1
        return call

    def on_death(self, gen: Any, err: BaseException) -> None:
        """A call's worker died: requeue, retry or fail what it had not sent back."""
        call = self._drop(gen)
        self.comebacks.died(call.actor)
        cause = " ".join(str(err).split())[:200]
        fate = after_death(call, self.settings.retries)  # only what had not come back
        self._log_fate(call.actor, fate)
        self.retry.extend(fate.retry)
        self.back.extendleft(reversed(fate.back))
        for f in fate.failed:
            self.emit(Row.of(f.item, attempts=f.attempt, preset=f.item.preset, config_hash=f.cfg.hash()).failed(
                f"{f.item.input}: worker died {f.attempt} times ({cause})").as_record())

    def _log_fate(self, a: int, fate: AfterDeath) -> None:
        if fate.retry or fate.failed:  # one line a death, however many images it had started
            def names(entries: list[Entry]) -> str:
                return ", ".join(e.name() for e in entries[:3]) + (f" +{len(entries) - 3}" if len(entries) > 3 else "")

            again = "; ".join(f"{names(g)} {'together' if len(g) > 1 else 'alone'} (attempt {g[0].attempt})"
                              for g in fate.retry)
            self.log(f"actor {a}'s worker died with {sum(map(len, fate.retry)) + len(fate.failed)} image(s) started"
                     + (f"; retrying {again}" if again else "")
                     + (f"; {names(fate.failed)} failed (no attempt left)" if fate.failed else ""))
        if fate.back:
            names = ", ".join(e.name() for e in fate.back[:3]) + (", ..." if len(fate.back) > 3 else "")
            self.log(f"actor {a} died; {len(fate.back)} images it had not started go back to the queue: {names}")

    def on_ready(self, gen: Any) -> None:
        """Take a call's next item: the end, a death, a start notice or a row."""
        call = self.pending[gen]
        try:
            i, record = ray.get(next(gen))
        except StopIteration:  # the call is done
            self._drop(gen)
            return
        except DEATHS as e:
            self.on_death(gen, e)
            return
        if record is None:  # the worker is about to start images i (a list)
            if not i and self.stop_reason:
                # A call that begins after the run was told to stop is left unanswered: the worker
                # waits at its next notice, before it reads anything, until the end kills it.
                # (ray.cancel of a queued call lost the running call's last row, and left ray.wait
                # blocked on the cancelled one: docs/BENCHMARKS.md, "Why the run's defaults are
                # what they are".)
                self._drop(gen)
                self.abandoned.append(gen)
                return
            call.begun = True
            call.started.update(i)
            return
        done = call.left.pop(i)
        record["attempts"] = done.attempt
        record["preset"] = done.item.preset or self.settings.engine.get("preset")
        self.emit(record)

    def _stop_now(self, reason: str, why: str) -> None:
        """Stop without finishing the images in flight (a signal, a full disk)."""
        if self.stop_reason not in STOP_NOW:
            self.stop_reason = reason
            self.log(f"zssr-batch: stopping: {why}")
            self.stop_detail = why

    def _check_stop(self, asked: str | None) -> None:
        if asked:
            self.stop_reason = asked
        limit = self.settings.max_failures
        if limit is not None and self.counts["failed"] >= limit and not self.stop_reason:
            self.stop_reason = f"--max-failures {limit} reached"
            self.log(f"zssr-batch: {self.stop_reason}; finishing the images in flight")

    def _fill(self) -> None:
        """Give every free worker a call, while there is work and no stop."""
        while not self.stop_reason and (a := self.free_actor()) is not None:
            batch = self.next_batch()
            if not batch:
                break
            self.submit(batch, a)

    def unfinished_folders(self) -> set[str]:
        """The folders of the outputs of images still in a call: once their workers are killed, one
        may hold the temporary file of an output it was writing (``files.images.remove_parts``)."""
        return {posixpath.dirname(e.item.output) for call in self.pending.values() for e in call.left.values()
                if e.item.output}

    def run(self, asked_to_stop: Callable[[], str | None]) -> None:
        """Dispatch until the work is done or the run stops (``stop_reason``); ``asked_to_stop`` gives
        the reason a signal asked for ('interrupted', 'terminated'), or None."""
        try:
            if not self.actors:  # nothing to fit (every image done): only the rows of refused items
                while self.next_item() is not None:
                    pass
                return
            while True:
                self._check_stop(asked_to_stop())
                self.comebacks.poll()
                self.tick()
                self.progress.poll(self.actors)
                self._fill()
                # work for workers yet to come back
                waiting = self.comebacks.down and (self.retry or self.back or not self.exhausted)
                if self.stop_reason in STOP_NOW or not self.pending and (self.stop_reason or not waiting):
                    break
                if not self.pending:
                    time.sleep(PING_EVERY_S / 5)
                    continue
                ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
                for gen in ready:
                    self.on_ready(gen)
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"
