"""Faults injected for the robustness tests, read once from ``ZSSR_BATCH_FAULT``; off unless it is set.

The driver reads the variable (``Faults.from_env``) and ships the value to its actors inside
their settings, so the item and batch code asks a frozen value, not the environment, what to
break. The syntax (README): ``oom:NAME`` raises out of memory mid-fit for inputs whose path
contains NAME while the memory plan still has tiles of 512 or more; ``kill-on-read:NAME``
SIGKILLs the worker whenever it starts reading such an input (a poison image, as a decoder that
segfaults on it would be); ``kill:NAME:MARKER`` SIGKILLs it mid-fit the first time (while the
file MARKER does not exist yet), as a segfault or node loss would; ``diverge-in-pack:NAME``
turns such an input's packed fit to NaN; ``slow:NAME:SECONDS`` makes the worker wait that long
as it starts reading such an input, as a large image on a busy GPU would (a run long enough to
lose a node in, without the CPU time of long fits). ``ZSSR_BATCH_FAULT_RESTART_S`` slows a
killed worker's restart.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

if TYPE_CHECKING:  # (torch only where a fault fires: the driver reads the faults and needs no torch)
    from ..engine.infer import MemoryPlan
    from ..engine.super_resolve import SRResult


@dataclass(frozen=True)
class Faults:
    kind: str = ""  # 'oom', 'kill-on-read', 'kill', 'diverge-in-pack' or 'slow'; '' = none
    name: str = ""  # the inputs it hits: those whose path contains this
    marker: str = ""  # kill: the file that says the worker was killed once already
    restart_s: float = 0.0  # kill: how long a worker that starts after the kill sleeps first
    read_s: float = 0.0  # slow: how long a worker waits as it starts reading an input

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Faults":
        """The one reader of ``ZSSR_BATCH_FAULT`` (``KIND:NAME[:MARKER or SECONDS]``) and
        ``ZSSR_BATCH_FAULT_RESTART_S``."""
        kind, _, rest = env.get("ZSSR_BATCH_FAULT", "").partition(":")
        name, _, marker = rest.partition(":")
        restart_s = float(env.get("ZSSR_BATCH_FAULT_RESTART_S") or 0) if kind == "kill" else 0.0
        if kind == "slow":
            return cls(kind, name, read_s=float(marker or 1))
        return cls(kind, name, marker, restart_s)

    def _hits(self, kind: str, path: str) -> bool:
        return self.kind == kind and bool(self.name) and self.name in path

    def mid_fit(self, path: str) -> Callable[["MemoryPlan"], None] | None:
        """What to do at an input's first training step (``oom`` or ``kill``), or None for inputs no
        fault names."""
        if not self.kind or not self.name or self.name not in path:
            return None

        def fault(plan: "MemoryPlan") -> None:
            if self.kind == "oom" and plan.tile >= 512:
                import torch

                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            if self.kind == "kill" and self.marker and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

        return fault

    def on_read(self, path: str) -> None:
        """``kill-on-read``: SIGKILL the worker as it starts reading ``path``, every time; ``slow``:
        wait ``read_s`` first."""
        if self._hits("kill-on-read", path):
            os.kill(os.getpid(), signal.SIGKILL)
        if self._hits("slow", path):
            time.sleep(self.read_s)

    def diverge(self, path: str, result: "SRResult") -> None:
        """``diverge-in-pack``: turn ``path``'s packed fit to NaN, as a pack's own fault would (see
        docs/BENCHMARKS.md, "Why the run's defaults are what they are")."""
        if self._hits("diverge-in-pack", path):
            result.output.fill_(float("nan"))

    def slow_restart(self) -> None:
        """With ``kill`` injected and the worker already killed (MARKER exists), a worker that starts
        sleeps ``restart_s`` first: a slow restart, as a GPU worker's on a busy node, while the driver
        already has work to hand it again."""
        if self.kind == "kill" and self.marker and os.path.exists(self.marker):
            time.sleep(self.restart_s)
