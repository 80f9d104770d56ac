"""Training steps taken in this process so far, for a run's live progress.

A fit (alone or in a pack, one step per live slot) adds its steps here; the actor's progress
method reads the total from another thread, so a run's bar moves with training, not with images
landing in bursts. One writer thread per process: a plain int is enough.
"""

from __future__ import annotations

_trained = 0


def add(steps: int) -> None:
    global _trained
    _trained += steps


def trained() -> int:
    return _trained
