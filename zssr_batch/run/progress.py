"""What the terminal shows during a run: status lines while Ray starts and the actors warm up, then
a bar of images whose rate and ETA come from training steps, with every log line above it.

Images land in bursts (a pack of 16 finishes 16 images within a few steps), so a rate of images
says nothing for minutes, then too much. Training steps go at an even pace: each actor counts the
steps its fits take (``engine.tally``), the run asks every actor for its count about once a second,
and the ETA is the steps still to go (images left times the steps an image has taken so far in
this run) over the steps per second of the last minute. With no terminal (a log file, ``nohup``)
or ``--no-progress`` there is no bar: one line per event instead.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from typing import Any

import ray

from ..engine.tally import Steps
from ..files.display import shown

POLL_EVERY_S = 1.0  # how often the actors are asked for their step counts
RATE_WINDOW_S = 60.0  # steps per second over this much of the recent past


def _line(msg: str) -> None:
    print(shown(msg), file=sys.stderr, flush=True)


class StepCounts:
    """Steps trained by the run's actors, asked of each about once a second without ever waiting:
    fit steps (``total``: the rate and the ETA) and kernel estimator steps (``kernels``).

    An actor that Ray restarted starts counting from zero again: what it had counted before stays
    counted (its steps were trained, if for nothing)."""

    def __init__(self) -> None:
        self.asked: dict[int, Any] = {}  # actor index -> the ref of its answer to come
        self.last: dict[int, Steps] = {}  # actor index -> its counts at its last answer
        self.total = 0  # fit steps of every actor since the run began
        self.kernels = 0  # kernel estimator steps of every actor since the run began
        self.asked_at = 0.0

    def poll(self, actors: list) -> bool:
        """Collect the answers that came, ask again those that answered; True when a count moved."""
        before = (self.total, self.kernels)
        if self.asked:
            done, _ = ray.wait(list(self.asked.values()), num_returns=len(self.asked), timeout=0)
            for a, ref in list(self.asked.items()):
                if ref not in done:
                    continue
                del self.asked[a]
                try:
                    now = ray.get(ref)
                except Exception:  # noqa: BLE001 - a dead or restarting actor: its death is the dispatcher's
                    continue
                last = self.last.get(a, Steps(0, 0))
                restarted = now.fits < last.fits or now.kernels < last.kernels
                self.total += now.fits if restarted else now.fits - last.fits
                self.kernels += now.kernels if restarted else now.kernels - last.kernels
                self.last[a] = now
        if time.monotonic() - self.asked_at >= POLL_EVERY_S:
            self.asked_at = time.monotonic()
            for a, actor in enumerate(actors):
                if a not in self.asked:
                    self.asked[a] = actor.trained.remote()
        return (self.total, self.kernels) != before


class Progress:
    """The run's terminal: ``status`` before the work, then ``bar`` and ``landed``; ``say`` for lines
    that must be seen (deaths, retries, stops: above the bar), ``detail`` for lines that only a log
    wants (each image sent and finished: without a bar only)."""

    def __init__(self, total: int, enabled: bool, expected_steps: int) -> None:
        self.total = total
        # a bar on a terminal only: in a log file its redraws are noise, and tqdm draws nothing at width 0
        self.enabled = enabled and sys.stderr.isatty()
        self.expected_steps = max(1, expected_steps)  # steps per image until the first lands
        self.bar: Any = None
        self.steps = StepCounts()
        self.recent: deque[tuple[float, int]] = deque()  # (time, total steps) of the last minute
        self.fitted = {"images": 0, "steps": 0}  # images fitted in this run, and their steps
        self.todo = total  # images this run fits or refuses: the total less those found done
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.gain = ""

    # --- lines ---
    def status(self, msg: str) -> None:
        """What the run is doing before its first image: starting Ray, placing actors."""
        if self.bar is not None:
            self.bar.set_description_str(msg, refresh=True)
        else:
            _line(f"zssr-batch: {msg}")

    def say(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(shown(msg), file=sys.stderr)
        else:
            _line(msg)

    def detail(self, msg: str) -> None:
        if self.bar is None:
            _line(msg)

    # --- the bar ---
    def start(self) -> None:
        """The bar, once the actors are placed; it says 'warming up' until the first step is counted."""
        if not self.enabled or self.bar is not None:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, unit="img", dynamic_ncols=True, file=sys.stderr,
                        bar_format="{desc}{n_fmt}/{total_fmt} img |{bar}| {elapsed}{postfix}")
        self.bar.set_description_str("warming up ")
        self._show()

    def landed(self, status: str, iterations: int | None, mean_gain: str) -> None:
        """An image's row was written (ok or failed)."""
        self.counts["ok" if status == "ok" else "failed"] += 1
        if iterations:
            self.fitted["images"] += 1
            self.fitted["steps"] += iterations
        self.gain = mean_gain
        self._advance()

    def skipped(self) -> None:
        """An item done before, with the same settings: nothing to fit."""
        self.counts["skipped"] += 1
        self.todo -= 1
        self._advance()

    def poll(self, actors: list) -> None:
        """Every turn of the dispatch loop: the actors' step counts, the clock."""
        if self.bar is None:
            return
        if self.steps.poll(actors):
            self.bar.set_description_str(self.describe(self.bar.desc))
        now = time.monotonic()
        self.recent.append((now, self.steps.total))
        while len(self.recent) > 2 and now - self.recent[0][0] > RATE_WINDOW_S:
            self.recent.popleft()
        self._show()

    def describe(self, desc: str) -> str:
        """The bar's words before the count: 'warming up' until a step is counted, 'estimating
        kernels' while only kernel estimators have stepped (--kernel estimate: minutes before a
        first fit on a GPU at the authors' 3000 steps), nothing once the fits step."""
        if not desc.startswith(("warming", "estimating")):
            return desc
        if self.steps.total:
            return ""
        return "estimating kernels " if self.steps.kernels else desc

    def _advance(self) -> None:
        if self.bar is not None:
            self._show(refresh=False)  # the counts first: the bar and its counts move together
            self.bar.update(1)

    def _show(self, refresh: bool = True) -> None:
        """The counts, the gain, steps/s and the ETA after the bar; on a narrow terminal the least
        needed go first (gain, then steps/s), so that the bar keeps a third of the width."""
        rate = self.rate()
        eta = self.eta(rate) if rate else None
        parts = [f"ok {self.counts['ok']}" + (f" failed {self.counts['failed']}" if self.counts["failed"] else "")
                 + (f" before {self.counts['skipped']}" if self.counts["skipped"] else ""),
                 f"ETA {_clock(eta)}" if eta is not None else "", f"{rate:,.0f} steps/s" if rate else "",
                 f"gain {self.gain}" if self.gain else ""]
        parts = [p for p in parts if p]
        room = shutil.get_terminal_size((80, 24)).columns * 2 // 3 - 22  # the count, the clock, a third for the bar
        while len(parts) > 1 and len(" | ".join(parts)) > room:
            parts.pop()
        self.bar.set_postfix_str(" | ".join(parts), refresh=refresh)

    def rate(self) -> float | None:
        if len(self.recent) < 2 or self.recent[-1][0] - self.recent[0][0] < 2 * POLL_EVERY_S:
            return None
        (t0, s0), (t1, s1) = self.recent[0], self.recent[-1]
        return (s1 - s0) / (t1 - t0) or None

    def eta(self, rate: float) -> float | None:
        """Seconds to the end: the steps the images left will take, less those already trained."""
        per_image = self.fitted["steps"] / self.fitted["images"] if self.fitted["images"] else self.expected_steps
        finished = self.counts["ok"] + self.counts["failed"]
        left = max(0, self.todo - finished) * per_image
        in_flight = max(0, self.steps.total - self.fitted["steps"])  # steps of images not landed yet
        return max(0.0, left - in_flight) / rate

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

