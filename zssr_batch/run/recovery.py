"""What the driver does when a worker dies: which images go back, which are retried, which fail,
and when the restarted worker may have work again.

An actor that dies (segfault, SIGKILL, node loss) is restarted by Ray. The images it had started
are resubmitted, up to ``retries`` times; those it had not started go back to the queue as they
were (``after_death``). A dead worker gets no work until it answers again (``Comebacks``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

from ..config import FitConfig
from ..files.sources import WorkItem

SPARED_MAX = 2  # deaths an image may sit through unannounced in a begun call before they count
RESTART_WAIT_S = 600.0  # how long work waits for a dead worker to answer again before it is sent anyway
PING_EVERY_S = 0.5
# What a worker's death is, as the driver sees it: the call's next item raises one of these.
DEATHS = (RayActorError, WorkerCrashedError, RayTaskError)


@dataclass
class Entry:
    """One image on its way through the workers."""

    item: WorkItem
    cfg: FitConfig  # its settings, sent with it
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


@dataclass
class _Down:
    """A dead worker, until it answers."""

    since: float  # when it died (monotonic)
    ping: Any = None  # the ping in flight, or None
    pinged_at: float = 0.0  # when the last ping was sent


class Comebacks:
    """Workers that died, until they answer again.

    Ray restarts a dead worker, but a call sent while it restarts fails at once ("the actor
    is restarting"). Counted as a death, that cost its images an attempt they never had: one
    death with a 3 s restart failed every image queued for retry, "worker died 3 times"
    (tests/test_overnight.py). So a dead worker gets no work until it answers a ping, or until
    ``RESTART_WAIT_S`` has passed (then work goes to it anyway, and fails as before if it is gone).
    """

    def __init__(self, actors: list, where: dict[int, dict], log: Callable[[str], None]) -> None:
        self.actors, self.where, self.log = actors, where, log  # where: actor -> where it runs (updated)
        self.down: dict[int, _Down] = {}  # the dead ones, by actor

    def died(self, a: int) -> None:
        self.down.setdefault(a, _Down(time.monotonic()))

    def up(self, a: int) -> bool:
        return a not in self.down

    def poll(self) -> None:
        """Note the workers that answer again; ping the others (never waits)."""
        now = time.monotonic()
        for a, state in list(self.down.items()):
            if state.ping is not None and ray.wait([state.ping], timeout=0)[0]:
                ping, state.ping = state.ping, None
                try:
                    self.where[a] = ray.get(ping)
                except DEATHS:
                    pass  # still restarting: ping again
                else:
                    del self.down[a]
                    self.log(f"actor {a} is back after {now - state.since:.1f} s (node {self.where[a]['node']})")
                    continue
            if now - state.since > RESTART_WAIT_S:
                del self.down[a]
                self.log(f"actor {a} has not answered for {RESTART_WAIT_S:.0f} s; sending it work anyway")
            elif state.ping is None and now - state.pinged_at >= PING_EVERY_S:
                state.ping, state.pinged_at = self.actors[a].where.remote(), now
