"""Training steps taken in this process so far, for a run's live progress.

A fit (alone or in a pack, one step per live slot) adds its steps here, and so does a kernel
estimator, to a count of its own; the actor's progress method reads both from another thread, so
a run's bar moves with training, not with images landing in bursts, and says when kernels are
being estimated before any fit has stepped. One writer thread per count: plain ints are enough.
"""

from __future__ import annotations

from typing import NamedTuple

_trained = 0
_estimated = 0


class Steps(NamedTuple):
    """What an actor has trained: ZSSR fit steps, and kernel estimator steps (one per live slot)."""

    fits: int
    kernels: int


def add(steps: int) -> None:
    global _trained
    _trained += steps


def add_estimated(steps: int) -> None:
    global _estimated
    _estimated += steps


def trained() -> Steps:
    return Steps(_trained, _estimated)
