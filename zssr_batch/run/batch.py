"""A packed call: a batch of images fitted K at a time on one device (see ``pack``), each row handed
back the moment its image is written.

The pack runs in its own thread; inputs are decoded by two threads ahead of it and each
finished image is written and scored by another, so the device never waits on files. The
pack starts training with its first decoded image, and a slot whose next image is still
decoding waits empty while the others train. If the pack runs out of memory, the images it had
not finished are fitted one by one with ``run_item``, which has the smaller-tiles plan.

With ``--kernel estimate`` the decoded images go first to an estimator pack
(``pack.kernel_estimates``: K KernelGANs at once, in a thread of its own beside the fit pack),
and each image's fit starts as soon as its kernel is out.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np
import torch

from ..config import FitConfig
from ..engine.infer import MemoryPlan
from ..engine.kernel_estimate import combined, estimate_kernel, restart_seeds, too_small, vetoed
from ..engine.resize import output_size
from ..engine.super_resolve import SRResult, pick_device, super_resolve
from ..files.images import image_size
from ..files.sources import WorkItem
from ..pack.jobs import Job
from ..pack.kernel_estimates import EstimateJob, estimate_packed
from ..pack.loop import fit_packed
from ..pack.options import PackOptions
from ..pack.size import plan_pack
from .faults import Faults
from .item import Prepared, diverged, failed, finish, is_out_of_memory, item_row, prepare, run_item, with_estimate
from .settings import Extras

Result = tuple[Any, "dict[str, Any] | None"]  # (index, record), or ([index, ...], None): about to start those


def pack_way(options: PackOptions, device: torch.device) -> str:
    """How a pack ran, in short, for its rows' ``pack_way`` and run.json: the conv way, then what was
    on of padding the thin ends to 8 channels, cuDNN tuning and bf16 (the last two GPUs only, as
    ``pack.device`` applies them)."""
    cuda = torch.device(device).type == "cuda"
    on = [("pad8", options.pad_thin), ("tune", options.tune and cuda), ("bf16", options.bf16 and cuda)]
    return "+".join([options.conv] + [name for name, used in on if used])


def largest_input(items: list[WorkItem], cfg: FitConfig, degrade: bool = False) -> tuple[int, int] | None:
    """The largest (h, w) among the inputs, from their headers only (files that cannot be read are skipped:
    they fail with their own row later); with ``degrade`` the size after shrinking."""
    best = None
    for item in items:
        size = image_size(item.input)
        if size is None:
            continue
        h, w = size
        if degrade:
            h, w = output_size((h, w), (1 / cfg.scale[0], 1 / cfg.scale[1]))
        if best is None or h * w > best[0] * best[1]:
            best = (h, w)
    return best


class PackedCall:
    """One call's batch fitted in packs. Iterate it for (index, record) as each image is written and,
    with ``announce``, ([index, ...], None) before it starts decoding those images: it decodes them
    only once the caller asks for the next item, so a worker that dies is known to have started
    only the images it announced (``run.recovery.after_death``)."""

    def __init__(self, items: list[WorkItem], cfgs: list[FitConfig], device: str, extras: Extras = Extras(),
                 max_pixels: int | None = None, degrade: bool = False, pack: int = 0, precision: str = "bf16",
                 announce: bool = False, faults: Faults | None = None) -> None:
        self.items, self.cfgs, self.device, self.extras = items, cfgs, device, extras
        self.max_pixels, self.degrade, self.announce = max_pixels, degrade, announce
        self.faults = Faults.from_env() if faults is None else faults
        self.dev = pick_device(device)
        options = PackOptions(bf16=precision == "bf16")
        # k: fits per pack; options: how the pack runs (measured on a GPU when ``pack`` is 0)
        self.k, self.options = (pack, options) if pack else plan_pack(
            cfgs[0], self.dev, largest_input(items, cfgs[0], degrade), len(items), options)
        self.way = pack_way(self.options, self.dev)  # the rows' pack_way
        self.readers = ThreadPoolExecutor(2)  # decode inputs ahead of the pack
        self.writer = ThreadPoolExecutor(1)  # write and score each finished image
        self.events: queue.Queue = queue.Queue()  # ("row", i, record) | ("start", [i, ...], gate) | ("end", error)
        self.stop = threading.Event()  # the call was closed: stop decoding and fitting at once
        self.answered: set[int] = set()  # indices whose row the caller has
        self.announced: set[int] = set()  # indices the caller was told are starting
        # --kernel estimate: kernels estimated K at a time in a pack of their own, beside the fits
        self.estimates = any(cfg.kernel == "estimate" for cfg in cfgs)
        self.estimated: queue.Queue = queue.Queue()  # (i, Prepared) with its kernel | None: all out | an error

    def _read(self, indices: list[int]) -> dict[int, Future]:
        """Start decoding; with ``announce``, only once the caller has been told (the gate opens)."""
        gate = threading.Event()
        if self.announce:
            self.events.put(("start", indices, gate))
        else:
            gate.set()

        def decode(i: int) -> Prepared:
            while not gate.wait(0.1):
                if self.stop.is_set():
                    raise RuntimeError("the call was closed")
            item = self.items[i]
            self.faults.on_read(item.input)
            # with --kernel estimate, the image's kernel is estimated later, in the estimator pack
            return prepare(item.input, self.cfgs[i], item.gt, self.max_pixels, self.degrade, item.true_kernel, self.dev,
                           estimate=False)

        return {i: self.readers.submit(decode, i) for i in indices}

    def _decoded(self) -> Iterator[tuple[int, Prepared] | None]:
        """The inputs in order, as they are decoded (None: the next is not ready yet); one that cannot
        be read is its failed row."""
        n = len(self.items)
        # decoded images wait in host memory: enough to refill the pack (and the estimator pack), no more
        ahead = self.k * (2 if self.estimates else 1) + 4
        decoding = self._read(list(range(min(ahead, n))))
        for i in range(n):
            if self.stop.is_set():
                return
            while not decoding[i].done():
                yield None
                if self.stop.is_set():
                    return
            fut = decoding.pop(i)
            if i + ahead < n:
                decoding.update(self._read([i + ahead]))
            try:
                prep = fut.result()
            except Exception as e:  # noqa: BLE001 - a bad input is a row, the batch goes on
                self.events.put(("row", i, failed(item_row(self.items[i], self.cfgs[i]), e)))
                continue
            yield i, prep

    def _job(self, i: int, prep: Prepared) -> Job:
        fault = self.faults.mid_fit(self.items[i].input)
        if fault:
            fault(MemoryPlan())
        return Job((i, prep), prep.color, self.cfgs[i], prep.kernel)

    def _jobs(self) -> Iterator[Job | None]:
        """The fit pack's jobs as their images are decoded and, with --kernel estimate, their kernels
        are out (None: nothing ready yet, train what is there)."""
        if not self.estimates:
            for ready in self._decoded():
                yield None if ready is None else self._job(*ready)
            return
        threading.Thread(target=self._estimate_all, name="zssr-kernels", daemon=True).start()
        while not self.stop.is_set():
            try:
                ready = self.estimated.get(timeout=0.002)
            except queue.Empty:
                yield None
                continue
            if ready is None:
                return
            if isinstance(ready, BaseException):
                raise ready
            yield self._job(*ready)

    def _to_estimate(self) -> Iterator[EstimateJob | None]:
        """The decoded images whose kernel is to be estimated, as the estimator pack's jobs; the others
        (given kernels, or too small to estimate from) go straight on to the fits."""
        for ready in self._decoded():
            if ready is None:
                yield None
                continue
            i, prep = ready
            cfg = self.cfgs[i]
            small = too_small(prep.color)
            if prep.picked is None and cfg.kernel_estimator == "recurrence":  # no training to pack: at once, as alone
                t0 = time.perf_counter()
                estimate = estimate_kernel(prep.color, int(cfg.scale[0]), device=self.dev, estimator="recurrence")
                self.estimated.put((i, with_estimate(prep, cfg, estimate, time.perf_counter() - t0, self.dev)))
            elif prep.picked is None and small is None:
                for seed in restart_seeds(cfg.seed, cfg.kernel_restarts):  # each run its own slot
                    yield EstimateJob((i, prep), prep.color, cfg.kernel_steps, seed)
            else:
                self.estimated.put((i, prep if small is None else with_estimate(prep, cfg, small, 0.0, self.dev)))

    def _estimate_all(self) -> None:
        """The estimator pack's thread: each image's kernel, then the image on to the fits."""
        draws: dict[int, list[tuple[np.ndarray, float]]] = {}  # an image's runs so far (--kernel-restarts)
        try:
            for (i, prep), k2, seconds in estimate_packed(self._to_estimate(), self.k, self.dev, self.stop.is_set):
                cfg = self.cfgs[i]
                mine = draws.setdefault(i, [])
                mine.append((k2, seconds))
                if len(mine) < cfg.kernel_restarts:
                    continue
                del draws[i]
                t0 = time.perf_counter()  # (the sharpness check counts as estimating)
                estimate = vetoed(combined([k for k, _ in mine], int(cfg.scale[0]), cfg.kernel_trust_width),
                                  prep.color, cfg.kernel_trust_recurrence, self.dev)
                seconds = sum(t for _, t in mine) + time.perf_counter() - t0
                self.estimated.put((i, with_estimate(prep, cfg, estimate, seconds, self.dev)))
            self.estimated.put(None)
        except BaseException as e:  # noqa: BLE001 - handed to the fit pack's thread
            self.estimated.put(e)

    def _write(self, i: int, prep: Prepared, result: SRResult) -> None:
        item, cfg = self.items[i], self.cfgs[i]
        row = item_row(item, cfg)
        try:
            self.faults.diverge(item.input, result)
            refit = diverged(result)
            if refit:
                # Fitted again alone (eager, fp32, one-image mode's path): a pack's own fault (a bf16
                # overflow, or a bug; docs/BENCHMARKS.md, "Why the run's defaults are what they are")
                # is then not the image's. A fit that diverges alone as well fails its row in ``finish``.
                result = super_resolve(prep.color, cfg, self.dev, prep.kernel)
            done = finish(prep, result, item.output, cfg, self.dev, self.extras.for_item(item), None,
                          self.max_pixels)
            if refit:
                done["notes"] = "; ".join(n for n in (done["notes"], "its packed fit diverged: fitted again alone")
                                          if n)
            record = {**row.as_record(), **done, "status": "ok", "error": None, "tile": MemoryPlan().tile,
                      "pack": 1 if refit else self.k, "pack_way": "" if refit else self.way}
        except Exception as e:  # noqa: BLE001
            record = failed(row, e)
        self.events.put(("row", i, record))

    def _fit_all(self) -> None:
        try:
            # A closed call (cancelled, or its caller gone) stops the pack at once instead of fitting
            # the images in its slots for nobody, beside the actor's next call on the same device.
            for (i, prep), result in fit_packed(self._jobs(), self.k, self.dev, options=self.options,
                                                stop=self.stop.is_set):
                self.writer.submit(self._write, i, prep, result)
            self.events.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self.events.put(("end", e))

    def _hand_on(self, event: tuple) -> Iterator[Result]:
        """A start notice (then its decodes may begin) or a row, to the caller."""
        kind, i, rest = event
        if kind == "start":
            self.announced.update(i)
            yield i, None  # under Ray's backpressure of 1 this returns once the driver has it
            rest.set()
        else:
            self.answered.add(i)
            yield i, rest

    def _alone(self) -> Iterator[Result]:
        """After the pack ran out of memory: the images it had not finished, one by one."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        for i, item in enumerate(self.items):
            if i not in self.answered:
                if self.announce and i not in self.announced:
                    yield [i], None
                yield i, run_item(item, self.cfgs[i], self.device, self.extras.for_item(item), self.max_pixels,
                                  self.degrade, self.faults)

    def __iter__(self) -> Iterator[Result]:
        threading.Thread(target=self._fit_all, name="zssr-pack", daemon=True).start()
        try:
            while True:
                event = self.events.get()
                if event[0] != "end":
                    yield from self._hand_on(event)
                    continue
                error = event[1]
                self.writer.shutdown(wait=True)  # every fitted image's row is queued after this
                while not self.events.empty():
                    yield from self._hand_on(self.events.get())
                break
            if error is not None:
                if not is_out_of_memory(error):
                    raise error
                yield from self._alone()
        finally:
            self.stop.set()
            self.readers.shutdown(wait=False, cancel_futures=True)
            self.writer.shutdown(wait=False)


def run_packed(items: list[WorkItem], cfgs: list[FitConfig], device: str, extras: Extras = Extras(),
               max_pixels: int | None = None, degrade: bool = False, pack: int = 0,
               precision: str = "bf16", announce: bool = False, faults: Faults | None = None) -> Iterator[Result]:
    """Fit a batch of images K at a time; yields (index, record) as each one is written (``PackedCall``).

    A generator, so that nothing (the pack-size probe included) runs before the caller asks for the
    first item, and closing it closes the call."""
    yield from PackedCall(items, cfgs, device, extras, max_pixels, degrade, pack, precision, announce, faults)
