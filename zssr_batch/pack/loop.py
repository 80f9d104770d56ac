"""Many ZSSR fits at once on one device: K networks packed into grouped convolutions.

A fit trains a tiny network on 128x128 crops, which leaves a GPU waiting on
kernel launches. Here slot i of a pack holds image i's network (its slice of
every layer's weights), its own Adam state and step count, its own learning-rate
schedule and its own random stream, so each image is fitted exactly as it would
be alone (the test suite checks the weights agree to float tolerance). One training step
runs all K networks as one grouped convolution on a (1, K*C, H, W) batch; the
loss is the sum of the per-image L1 means, so no image's gradient touches
another's weights. When an image's schedule ends, its output is made and the
slot takes the next image (continuous batching): stragglers never hold a pack.

What keeps a GPU busy:
- the random choices of each pair (crop, rotation, affine map) are drawn on the
  host from the image's own stream, but the K fathers and sons are made on the
  device in a few batched ops, from one small upload per step;
- the whole step (pairs, forward, backward, Adam) is one CUDA graph replay;
  finished slots ride along masked, and a draining pack compacts itself once
  a quarter of them are empty (without graphs, only the live slots are computed);
- the host never waits for the device inside the loop: losses, the errors of the
  schedule's reconstruction checks, and outputs come back through pinned buffers
  and events, and are read only when needed (the learning-rate rule reads a check
  at least 9 steps after it ran);
- checks and outputs read copies of their slot's weights and image, so they may
  run late, on a second stream beside the training (``PackOptions.beside``);
- the networks run in bfloat16 by default (master weights and Adam in float32).

Gradual fits (``scale_steps``) pack too: each slot walks its own scale steps. When a slot's step
ends, its output for that step (ensemble and back-projection, as ``engine.super_resolve`` makes
it) joins that slot's own sources of fathers and the slot trains on at the next step, while the
other slots go on, each at its own step.

Images with different downscaling kernels, or none (bicubic), share a pack: each slot makes its
sons, checks and outputs with its own kernel (``pack.kernels``). Images that cannot share a pack
(``max_iters`` 0, another channel count, network shape, crop or scale steps) are fitted on their
own by ``engine.super_resolve``.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterable, Iterator

import numpy as np
import torch

from ..config import FitConfig
from ..engine import tally
from ..engine.fit import FitLog, Schedule, augment_of, reconstruction_error, reconstruction_noise
from ..engine.infer import MemoryPlan
from ..engine.model import ZSSRNet
from ..engine.pairs import Augment, Draw, draw_father, son_noise
from ..engine.super_resolve import SRResult, super_resolve, upscale_with
from .beside import Handle, InLine, Later, job_runner
from .device import PARAMS, DevicePack
from .instruments import PackTimers
from .jobs import Job, signature
from .nets import load_slot, slot_layers
from .options import COMPACT_SIZES, PackOptions
from .readback import LossHistory, Readback

Result = tuple[Any, SRResult]  # (the job's key, its result)


def _check_job(slot_net: ZSSRNet, row: torch.Tensor, image: torch.Tensor, scale: tuple[float, float],
               kernel: torch.Tensor | None, noise: torch.Tensor | None, plan: MemoryPlan,
               readback: Readback) -> Handle:
    """A reconstruction check of one slot's weights ``row`` on its ``image``: its error, read back."""
    return readback.push(reconstruction_error(load_slot(slot_net, row), image, scale, kernel, noise, plan))


def _output_job(slot_net: ZSSRNet, row: torch.Tensor, image: torch.Tensor, cfg: FitConfig,
                kernel: torch.Tensor | None, plan: MemoryPlan, readback: Readback) -> Handle:
    """One slot's output (of its last scale step): its weights ``row`` upscaling its ``image``, read back."""
    out, _ = upscale_with(load_slot(slot_net, row), image, cfg, len(cfg.steps) - 1, kernel, plan)
    return readback.push(out)


@dataclass
class _Slot:
    job: Job
    gen: torch.Generator
    draw: Draw
    sched: Schedule
    aug: Augment
    first_step: int  # the pack's step count when this image started
    started: float  # perf_counter() then
    started_at: float  # time.time() then, for its row
    column: int  # its column in the loss history
    kernels: list  # its downscaling kernel of each scale step, shifted for the step (None: bicubic)
    hw: tuple[int, int] = (0, 0)
    rate: float = -1.0  # the learning rate last set on the device
    step: int = 0  # its scale step (gradual fits walk several)
    it: int = 0  # its steps in this scale step
    done: int = 0  # its steps in the scale steps before (the log counts across them, as alone)
    sizes: list = field(default_factory=list)  # (h, w) of its sources of fathers: the image, then its outputs
    checks: list = field(default_factory=list)  # (step, Later) not yet given to the schedule
    log: FitLog = field(default_factory=FitLog)

    def resolve_checks(self) -> None:
        for it, later in self.checks:
            self.sched.add_test(it, float(later.get()))
            self.log.test_steps.append(self.done + it)
            self.log.rec_mse.append(self.sched.rec[-1])
        self.checks.clear()


@dataclass
class _Finished:
    key: Any
    column: int
    log: FitLog
    steps: range  # the pack steps this image trained in
    started_at: float  # time.time() when a slot took it
    fit_seconds: float  # from then to its last step
    issued_at: float  # perf_counter() when its output (ensemble, back-projection) was issued
    ready_at: float | None  # perf_counter() when it was ready, if it was made in line; else when it lands
    output: Later
    weights: Handle  # the slot's flat row of weights


class PackRun:
    """One pack's loop over a source of jobs, K slots at a time; iterate it for (key, result) pairs as
    each image's output reaches the host (``fit_packed`` says what goes in and comes out).

    A pack step: ``fill`` offers each empty slot a job, ``compact`` shrinks a draining pack,
    ``train`` draws every live slot's pair and steps the device, ``book`` keeps each live slot's
    schedule (checks, rate changes, its end, ``finish``), and ``landed`` hands back the results
    that have reached the host.
    """

    def __init__(self, jobs: Iterable[Job | None], k: int, device: torch.device, plan: MemoryPlan,
                 options: PackOptions, timers: PackTimers | None, stop: Callable[[], bool] | None) -> None:
        self.pending = iter(jobs)
        self.k, self.device, self.plan, self.options = k, device, plan, options
        self.timers = timers  # a benchmark's counts and clocks, or None
        self.stop = stop  # checked every step: True abandons the pack
        self.readback = Readback(device)
        self.runner: InLine = job_runner(device, options, timers)  # where checks and outputs run
        self.pack: DevicePack | None = None  # made for the first packable job
        self.history: LossHistory | None = None  # made with the pack
        self.sig: tuple | None = None  # the signature every job in the pack shares
        self.slots: list[_Slot | None] = [None] * k  # by pack position; None: empty
        self.finished: deque[_Finished] = deque()  # outputs on their way to the host, in order
        self.exhausted = False  # the source has no job left
        self.dry = False  # the source said it had no job ready (None), this step
        self.step = 0  # pack steps taken
        self.upcoming = 0  # the pack step a slot filled now trains first
        self.stepped_at = 0.0  # perf_counter() when the last step was done (``book``)

    def _enter(self, phase: str) -> None:
        if self.timers is not None:
            self.timers.enter(phase)

    def _host(self, phase: str) -> ContextManager[None]:
        return self.timers.host(phase) if self.timers is not None else contextlib.nullcontext()

    def __iter__(self) -> Iterator[Result]:
        while True:
            if self.stop is not None and self.stop():
                return
            self.upcoming = self.step
            self.dry = False
            for i in range(len(self.slots)):  # a step's empty slots, first all of them: offer each a job
                if self.slots[i] is None and not self.exhausted and not self.dry:
                    yield from self.fill(i)
            live = [i for i, s in enumerate(self.slots) if s is not None]
            if not live:
                if self.exhausted:
                    break
                # Nothing to train until the source has a job ready (its images are still decoding):
                # meanwhile the finished images' results still go out.
                self.runner.catch_up()
                yield from self.landed()
                time.sleep(0.002)
                continue
            live = self.compact(live)
            self.train(live)
            with self._host("book"):
                yield from self.book(live)
            self.step += 1
            self.runner.advance(self.step)
            yield from self.landed()
            if self.step % 64 == 0:  # forget the losses no image still needs
                assert self.history is not None
                self.history.forget(min([s.first_step for s in self.slots if s is not None]
                                        + [f.steps.start for f in self.finished] + [self.step]))
        if self.timers is not None:
            self.timers.close(self.pack is not None and self.pack.graph_failed())
        self.runner.close()
        yield from self.landed(wait=True)

    def fill(self, slot: int) -> Iterator[Result]:
        """Put the next packable job into ``slot``; jobs that cannot share the pack are fitted alone.
        A source with no job ready yet (None) leaves the slot empty until the next step."""
        while not self.exhausted and not self.dry:
            try:
                job = next(self.pending)
            except StopIteration:
                self.exhausted = True
                return
            if job is None:
                self.dry = True
                return
            s = signature(job)
            if s is None or (self.sig is not None and s != self.sig):
                self._enter("alone")
                yield job.key, super_resolve(job.image, job.cfg, self.device, job.kernel, plan=self.plan)
                continue
            if self.pack is None:
                self.sig, self.pack = s, DevicePack(self.k, job, self.device, self.options)
                self.history = LossHistory(self.k, self.device, self.readback)
                self.runner.keep(*self.pack.slot_net.parameters())
            gen = torch.Generator().manual_seed(job.cfg.seed)
            self._enter("fill")
            kernels = self.pack.place(slot, job, gen)
            self.runner.keep(*kernels)  # its checks and outputs read them, maybe beside the training
            self.slots[slot] = _Slot(job, gen, Draw(gen), Schedule(job.cfg), augment_of(job.cfg),
                                     first_step=self.upcoming, started=time.perf_counter(), started_at=time.time(),
                                     column=self.pack.columns[slot], kernels=kernels, hw=tuple(job.image.shape[-2:]),
                                     sizes=[tuple(job.image.shape[-2:])])
            return

    def compact(self, live: list[int]) -> list[int]:
        """A draining pack: keep the recorded step (nearly) free of empty slots. Returns the live
        positions after."""
        pack, history = self.pack, self.history
        assert pack is not None and history is not None
        if not (pack.use_graphs and self.exhausted and len(live) <= pack.k * self.options.compact_below):
            return live
        size = next((n for n in COMPACT_SIZES if n >= len(live)), len(live))
        if size >= pack.k:
            return live
        keep = sorted(live + [i for i, s in enumerate(self.slots) if s is None][: size - len(live)])
        self._enter("compact")
        pack.compact(keep)
        history.regroup(pack.columns)
        self.slots[:] = [self.slots[i] for i in keep]
        if self.timers is not None:
            self.timers.count_compaction()
        return [i for i, s in enumerate(self.slots) if s is not None]

    def draw(self, live: list[int]) -> tuple[np.ndarray, dict[int, torch.Tensor]]:
        """Each live slot's next pair, drawn from its own stream: (K, PARAMS) rows of an inverse father
        map (3x3, flattened), an exact flag and the index of its source, identity rows for the rest;
        and where the pack adds noise, the son noise of each scale step a live slot is at (step ->
        (K, C, h, w)). Sets each slot's learning rate on the device as it changes."""
        pack = self.pack
        assert pack is not None
        params = np.zeros((pack.k, PARAMS))
        matrices = np.tile(np.eye(3), (pack.k, 1, 1))
        noise: dict[int, torch.Tensor] = {}
        for i in live:
            s = self.slots[i]
            assert s is not None
            rate = s.sched.rate(s.it)
            if rate != s.rate:
                pack.set_rate(i, rate)
                s.rate = rate
            params[i, 10], matrices[i], _, exact = draw_father(s.sizes, pack.base_scales, s.aug, s.draw)
            params[i, 9] = exact
            if pack.noise is not None and s.job.cfg.noise_std > 0:
                shape = pack.son_shapes[s.step]  # drawn where make_son draws it, from the same stream
                if s.step not in noise:
                    noise[s.step] = torch.zeros(pack.k, *shape)
                noise[s.step][i] = son_noise(shape, s.job.cfg.noise_std, s.gen)
        params[:, :9] = np.linalg.inv(matrices).reshape(pack.k, 9)
        return params, noise

    def train(self, live: list[int]) -> None:
        """One pack step of the ``live`` positions: their draws sent, the step recorded if it must be, run."""
        pack, history = self.pack, self.history
        assert pack is not None and history is not None
        with self._host("draw"):
            params, noise = self.draw(live)
        with self._host("step"):
            pack.send_draws(params, noise)  # before a recording, whose warm-up steps then compute this step's pairs
            if pack.needs_recording():
                self._enter("record")
                pack.record()
            self._enter("train")
            history.record(pack.step(live))
        tally.add(len(live))
        if self.timers is not None:
            self.timers.count_step(pack.k, pack.graph is not None, len(live))
        self.upcoming = self.step + 1

    def book(self, live: list[int]) -> Iterator[Result]:
        """After a step, each live slot's schedule: its log, a check issued or read, a rate change, and
        at its end its output (the slot then takes the next job)."""
        pack = self.pack
        assert pack is not None
        self.stepped_at = time.perf_counter()  # the fits that end at this step end now (not after others' outputs)
        for i in live:
            s = self.slots[i]
            assert s is not None
            s.log.lr.append(s.rate)
            s.log.scale_step.append(s.step)
            scale, kernel = pack.steps[s.step], s.kernels[s.step]
            if s.sched.wants_test(s.it):  # a check; "test" names its phase in the benchmarks' figures
                with self._host("test"):
                    self._enter("test")
                    row, img = pack.snapshot(i, s.hw)
                    # drawn now: at its turn in the image's stream
                    drawn = reconstruction_noise(img.shape, scale, s.job.cfg.noise_std, s.gen)
                    job = functools.partial(_check_job, pack.slot_net, row, img, scale, kernel, drawn,
                                            self.plan, self.readback)
                    s.checks.append((s.it, self.runner.run("test", job, row, img)))
            if s.sched.check_due(s.it):
                with self._host("wait"):
                    s.resolve_checks()  # ran >= 9 steps ago with the defaults: no stall
            if s.sched.after_step(s.it):
                s.log.lr_changes.append(s.done + s.it)
            s.it += 1
            if s.sched.finished or s.it >= s.job.cfg.max_iters:
                # A gradual fit goes on to its next scale step; a diverged one ends here (its output
                # is refused downstream), not after a look at its tests in each step left.
                if s.step + 1 < len(pack.steps) and not s.sched.diverged:
                    with self._host("scale_step"):
                        self.next_scale_step(i, s)
                    continue
                with self._host("finish"):
                    self.finish(i, s)
                yield from self.fill(i)

    def next_scale_step(self, i: int, s: _Slot) -> None:
        """Slot ``s``, at position ``i``, has ended a scale step before its last: its output for the
        step joins its sources, and it trains on at the next step from the next pack step, as
        ``engine.super_resolve`` goes on alone (a fresh schedule; the same weights, Adam state and
        stream of pairs unless ``reinit_each_step``)."""
        pack = self.pack
        assert pack is not None and pack.step_net is not None
        self._enter("scale_step")
        s.resolve_checks()  # the schedule's records of this step, before its schedule is dropped
        cfg = s.job.cfg
        # Made on the training stream, in order: the slot's next training step reads it.
        net = load_slot(pack.step_net, pack.nets.flat[i])
        out, _ = upscale_with(net, pack.src[i, 0, :, : s.hw[0], : s.hw[1]], cfg, s.step, s.kernels[s.step],
                              self.plan)
        s.step += 1
        fresh = (cfg.init_variance, s.gen) if cfg.reinit_each_step else None
        pack.next_step(i, s.step, out, fresh)  # fresh weights drawn here: where alone draws them
        if fresh is not None:
            s.draw = Draw(s.gen)  # alone, a fresh network comes with a fresh trainer and its own Draw
        s.sizes.append(tuple(out.shape[-2:]))
        s.done += s.it
        s.it = 0
        s.sched = Schedule(cfg)

    def finish(self, i: int, s: _Slot) -> None:
        """Slot ``s``, at position ``i``, is done: its output is issued and the position emptied."""
        pack, history = self.pack, self.history
        assert pack is not None and history is not None
        self._enter("finish")
        s.resolve_checks()
        history.flush()  # its last losses travel ahead of its output
        row, img = pack.snapshot(i, s.hw)
        job = functools.partial(_output_job, pack.slot_net, row, img, s.job.cfg, s.kernels[-1], self.plan,
                                self.readback)
        # Timed around the output's issue: on a CPU the runner computes it right here (its time is
        # the image's inference, not its fit, nor the outputs of slots that finish after it).
        issued = time.perf_counter()
        out = self.runner.run("finish", job, row, img)
        ready_at = time.perf_counter() if out.ready() else None
        pack.active[i] = False
        self.finished.append(_Finished(s.job.key, s.column, s.log, range(s.first_step, self.step + 1),
                                       s.started_at, self.stepped_at - s.started, issued, ready_at, out,
                                       self.readback.push(row)))
        self.slots[i] = None

    def result(self, done: _Finished) -> SRResult:
        """A finished image's result, its output and weights read back (waiting for them if need be)."""
        with self._host("wait"):
            assert self.history is not None and self.pack is not None  # (whose one-slot net has the layers' shapes)
            done.log.loss.extend(self.history.losses(done.column, done.steps))
            out = done.output.get()
            # each its own tensor: safetensors refuses to save views of one storage
            state = {f"convs.{n}.weight": w.clone()
                     for n, w in enumerate(slot_layers(Readback.get(done.weights), self.pack.slot_net))}
        infer_seconds = (done.ready_at or time.perf_counter()) - done.issued_at
        return SRResult(out, done.log, done.fit_seconds, infer_seconds, state,
                        started_at=done.started_at)

    def landed(self, wait: bool = False) -> Iterator[Result]:
        """The finished images whose outputs have reached the host, in order (``wait``: all of them)."""
        while self.finished and (wait or self.finished[0].output.ready()):
            done = self.finished.popleft()
            yield done.key, self.result(done)


def fit_packed(jobs: Iterable[Job | None], k: int, device: torch.device | str = "cpu",
               plan: MemoryPlan = MemoryPlan(), options: PackOptions = PackOptions(), stats: dict | None = None,
               stop: Callable[[], bool] | None = None) -> Iterator[Result]:
    """Fit every job, K at a time in one pack; yields (key, result) as each image's output reaches the host.

    ``jobs`` may yield None: no job ready yet (an image still decoding). The pack then trains
    the slots it has and offers the empty ones a job again at the next step, instead of
    waiting; with no slot live it waits for a job.
    ``fit_seconds`` of a result is the image's wall time in the pack (K images
    shared it, as they share the device). ``stats``, if given, receives what ``PackTimers``
    counts and times, for benchmarks (nothing is timed without it). ``stop``, checked every
    step, abandons the pack when it returns True (a cancelled call): the images in it get no
    result.
    """
    device = torch.device(device)
    timers = PackTimers(stats, device) if stats is not None else None
    yield from PackRun(jobs, k, device, plan, options, timers, stop)
