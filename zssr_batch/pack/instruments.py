"""What a benchmark reads of a pack's loop, and nothing else does: counts, the host's seconds per
phase and, on a GPU, the device's (``PackTimers``). The loop calls them only when it is given one
(``fit_packed``'s ``stats``)."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Any, Callable, Iterator

import torch


class DeviceClock:
    """The device's seconds per phase of the loop, for benchmarks: what the host's own seconds cannot
    show, since the device runs behind it. An event goes on the stream at each change of phase; the
    time between two events is charged to the phase the first one opened (so a gap in which the
    device waited on the host is charged to the phase after it). ``new_event`` makes a recorded
    event (``torch.cuda.Event``'s interface); None (a CPU) turns the clock off. Totals go to
    ``totals[f"{prefix}{phase}_s"]``."""

    def __init__(self, totals: dict, new_event: Callable[[], Any] | None, prefix: str = "device_") -> None:
        self.totals, self.new_event, self.prefix = totals, new_event, prefix
        self.marks: deque[tuple[str, Any]] = deque()

    @staticmethod
    def cuda_event() -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def enter(self, phase: str) -> None:
        if self.new_event is None or (self.marks and self.marks[-1][0] == phase):
            return
        self.marks.append((phase, self.new_event()))
        self._fold(wait=False)

    def _fold(self, wait: bool) -> None:
        while len(self.marks) >= 2 and (wait or self.marks[1][1].query()):
            phase, start = self.marks.popleft()
            end = self.marks[0][1]
            end.synchronize()
            key = f"{self.prefix}{phase}_s"
            self.totals[key] = self.totals.get(key, 0.0) + start.elapsed_time(end) / 1000

    def close(self) -> None:
        self.enter("end")
        self._fold(wait=True)
        self.marks.clear()


class PackTimers:
    """Counts and seconds of a pack's loop, written into ``stats`` as the loop runs (a caller may read
    them between the results it is given): pack steps, graph replays, compactions, whether recording
    failed, slot-steps computed and how many of them trained a live image (``steps``, ``replays``,
    ``compactions``, ``graph_failed``, ``slot_steps``, ``live_slot_steps``), the host's seconds per
    phase (``host_{phase}_s``) and, on a GPU, the device's (``device_{phase}_s``; ``DeviceClock``)."""

    def __init__(self, stats: dict, device: torch.device) -> None:
        stats.update(steps=0, replays=0, compactions=0, slot_steps=0, live_slot_steps=0, graph_failed=False,
                     host_draw_s=0.0, host_step_s=0.0,
                     host_book_s=0.0, host_test_s=0.0, host_finish_s=0.0, host_wait_s=0.0,
                     host_scale_step_s=0.0)
        self.stats = stats
        self.clock = DeviceClock(stats, DeviceClock.cuda_event if device.type == "cuda" else None)

    def enter(self, phase: str) -> None:
        """The loop's work on the device is now in ``phase``."""
        self.clock.enter(phase)

    @contextlib.contextmanager
    def host(self, phase: str) -> Iterator[None]:
        """Charge the host's seconds in the block to ``phase``."""
        t0 = time.perf_counter()
        yield
        self.stats[f"host_{phase}_s"] += time.perf_counter() - t0

    def second_stream_clock(self) -> DeviceClock:
        """A clock for the second stream's own seconds per phase (``device_beside_{phase}_s``)."""
        return DeviceClock(self.stats, DeviceClock.cuda_event, "device_beside_")

    def count_step(self, positions: int, replayed: bool, live: int) -> None:
        """One pack step of ``positions`` positions, ``live`` of them a live image's, ``replayed`` as a graph
        (a replay computes every position; an eager step only the live ones)."""
        self.stats["steps"] += 1
        self.stats["replays"] += replayed
        self.stats["slot_steps"] += positions if replayed or live == positions else live  # computed
        self.stats["live_slot_steps"] += live  # of which a live image's step

    def count_compaction(self) -> None:
        self.stats["compactions"] += 1

    def close(self, graph_failed: bool) -> None:
        self.clock.close()
        self.stats["graph_failed"] = graph_failed
