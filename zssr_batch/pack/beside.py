"""Where a pack's reconstruction checks and outputs run: in the training stream's order
(``InLine``), or on a second CUDA stream beside the training (``SecondStream``,
``PackOptions.beside``). Either way a job reads only its own copies (``DevicePack.snapshot``),
tensors that never change (its slot's kernels) and the pack's one-slot network, which jobs alone
use, one after another; its result comes back as a ``Later``."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable

import torch

from .instruments import DeviceClock, PackTimers
from .options import PackOptions
from .readback import Readback

Handle = tuple[torch.Tensor, Any]  # a ``Readback`` handle


class Later:
    """A job's result (a ``Readback`` handle), once its runner has run the job."""

    def __init__(self, runner: InLine) -> None:
        self.runner = runner
        self.handle: Handle | None = None

    def ready(self) -> bool:
        return self.handle is not None and Readback.ready(self.handle)

    def get(self) -> torch.Tensor:
        if self.handle is None:
            self.runner.catch_up()
        assert self.handle is not None
        return Readback.get(self.handle)


class InLine:
    """Jobs run as they are issued, in the training stream's order.

    ``lag`` is for tests on a CPU, where work is done as it is issued: each job then runs that
    many steps late, so a job that read the pack's live state instead of its copies would read
    later weights or the next image placed in its slot, and fail them.
    """

    lag = 0

    def __init__(self) -> None:
        self.waiting: deque[tuple[int, Callable[[], Handle], Later]] = deque()  # lagging jobs, by step due
        self.step = 0

    def keep(self, *tensors: torch.Tensor | None) -> None:
        """Tensors jobs read for the pack's life (nothing to do in line: they run in stream order)."""

    def run(self, phase: str, job: Callable[[], Handle], *copies: torch.Tensor) -> Later:
        """Run ``job`` (it returns a readback handle) after the work issued so far, reading ``copies``."""
        later = Later(self)
        if self.lag:
            self.waiting.append((self.step + self.lag, job, later))
        else:
            later.handle = job()
        return later

    def advance(self, step: int) -> None:
        """The pack's step count is now ``step``: run the lagging jobs due by then."""
        self.step = step
        self._run_due(step)

    def catch_up(self) -> None:
        """Run every lagging job now (a result is wanted)."""
        self._run_due(math.inf)

    def _run_due(self, by: float) -> None:
        while self.waiting and self.waiting[0][0] <= by:
            _, job, later = self.waiting.popleft()
            later.handle = job()

    def close(self) -> None:
        """The pack is done issuing jobs."""


class SecondStream(InLine):
    """Jobs on a second CUDA stream: their small kernels (a check is ~40 of them on one image) then
    fill the device's gaps beside the training, where on the training stream they queue between
    its steps. The training stream never waits for a job; the host does, when it reads a result.
    ``clock``, if given, takes the second stream's own seconds per phase."""

    def __init__(self, device: torch.device, clock: DeviceClock | None) -> None:
        super().__init__()
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.clock = clock

    def keep(self, *tensors: torch.Tensor | None) -> None:
        """Tensors jobs read for the pack's life: their memory is not reused while a job may still run."""
        for t in tensors:
            if t is not None:
                t.record_stream(self.stream)

    def run(self, phase: str, job: Callable[[], Handle], *copies: torch.Tensor) -> Later:
        later = Later(self)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the copies are made
        self.keep(*copies)  # freed by the host now, but not reused before the job has run
        with torch.cuda.stream(self.stream):
            if self.clock is not None:
                self.clock.enter(phase)
            later.handle = job()
            if self.clock is not None:
                self.clock.enter("idle")
        return later

    def close(self) -> None:
        if self.clock is not None:
            with torch.cuda.stream(self.stream):
                self.clock.close()


def job_runner(device: torch.device, options: PackOptions, timers: PackTimers | None) -> InLine:
    """Where a pack on ``device`` runs its checks and outputs: a second stream on a GPU with
    ``options.beside``, else in line."""
    if options.beside and device.type == "cuda":
        return SecondStream(device, timers.second_stream_clock() if timers is not None else None)
    return InLine()
