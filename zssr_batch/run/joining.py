"""Nodes that join a run: GPUs asked of the autoscaler, and each node's actors added as it joins.

With ``--gpus N`` on a cluster that has fewer GPUs, the run asks the autoscaler for N GPUs
(``ray.autoscaler.sdk.request_resources``), waits a bounded, printed time for the first one if it
has none, and starts; every node that joins later (a GPU node the autoscaler started, or any node
a user adds with ``ray start``) gets the actors it holds, planned as at the start, and work from
the next call on. The request is withdrawn at the end, so the autoscaler can scale down.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError

from .cluster import Placement, StorageProbe, actors_per_gpu, live_nodes, plan_actors, start_failure
from .settings import ActorSettings, RunSettings, cluster_address

JOIN_EVERY_S = 5.0  # how often the live nodes are read again for newcomers
SAY_EVERY_S = 30.0  # how often a wait for GPUs says it is still waiting


def _gpus(nodes: list[dict[str, Any]]) -> int:
    return sum(int(n["Resources"].get("GPU", 0)) for n in nodes)


def ask_for_gpus(settings: RunSettings, nodes: list[dict[str, Any]], log: Callable[[str], None]) -> bool:
    """On a cluster joined (``--address`` or RAY_ADDRESS) with fewer GPUs than ``--gpus N``: ask the
    autoscaler for N. A local Ray has no autoscaler to ask: it runs with what it has."""
    joined = cluster_address(settings.address)
    if not joined or not settings.gpus or settings.device == "cpu" or settings.gpus <= _gpus(nodes):
        return False
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1}] * settings.gpus)
    log(f"zssr-batch: asked the autoscaler for {settings.gpus} GPUs (the cluster has {_gpus(nodes)}); "
        "each is used as its node joins")
    return True


def wait_for_a_gpu(wait_s: float, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The live nodes once one of them has a GPU; a ValueError after ``wait_s`` without one."""
    t0 = said = time.monotonic()
    log(f"zssr-batch: waiting up to {wait_s:.0f} s for a GPU node to join (--wait-for-gpus)")
    while True:
        nodes = live_nodes()
        if _gpus(nodes):
            log(f"zssr-batch: a GPU node joined after {time.monotonic() - t0:.0f} s")
            return nodes
        now = time.monotonic()
        if now - t0 >= wait_s:
            raise ValueError(f"no GPU node joined within {wait_s:.0f} s of asking the autoscaler; "
                             "--wait-for-gpus waits longer, --gpus 0 runs on CPUs")
        if now - said >= SAY_EVERY_S:
            said = now
            log(f"zssr-batch: still waiting for a GPU node ({wait_s - (now - t0):.0f} s left)")
        time.sleep(1.0)


def release_gpus() -> None:
    """Withdraw the request, so that the autoscaler may scale the GPU nodes down."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[])


class Joiner:
    """Watches for nodes that join during the run and starts the actors each holds; ``poll`` hands
    back those that have answered, for the dispatcher to send work to."""

    def __init__(self, settings: RunSettings, plan: list[Placement], actor_settings: ActorSettings,
                 probe: StorageProbe, log: Callable[[str], None]) -> None:
        self.settings, self.actor_settings, self.log = settings, actor_settings, log
        self.probe = probe  # a node that joins is used only once it sees the run's files
        self.known = {n["NodeID"] for n in live_nodes()}  # nodes planned at the start, used or not
        self.on_gpus = bool(plan and plan[0].resources.get("num_gpus"))  # a run stays on what it began with
        self.per_gpu = actors_per_gpu(settings)
        self.started = len(plan)  # actors so far
        self.pending: list[tuple[Any, Any, Placement]] = []  # (ping, actor, placement) not yet answered
        self.looked_at = time.monotonic()

    def _room(self) -> int | None:
        """How many more actors the run may have (None: as many as the nodes hold)."""
        if self.on_gpus:
            return None if self.settings.gpus is None else (self.settings.gpus * self.per_gpu - self.started)
        return None if self.settings.cpu_workers is None else self.settings.cpu_workers - self.started

    def _plan(self, nodes: list[dict[str, Any]]) -> list[Placement]:
        room = self._room()
        if room is not None and room <= 0:
            return []
        if self.on_gpus:
            nodes = [n for n in nodes if int(n["Resources"].get("GPU", 0))]
            gpus = None if room is None else -(-room // self.per_gpu)
            asked = dataclasses.replace(self.settings, gpus=gpus)
        else:
            nodes = [n for n in nodes if not int(n["Resources"].get("GPU", 0))] if self.settings.device != "cpu" \
                else nodes
            asked = dataclasses.replace(self.settings, cpu_workers=room)
        if not nodes:
            return []
        try:
            plan = plan_actors(asked, nodes, lambda msg: None)
        except ValueError:  # nothing this run can use on them (no CPU)
            return []
        return plan if room is None else plan[:room]

    def poll(self) -> list[tuple[Any, dict]]:
        """The actors that have answered since the last call, and where each runs; and, every
        ``JOIN_EVERY_S``, the actors of nodes that have joined, started."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .actor import FitActor

        answered = []
        if self.pending:
            ready, _ = ray.wait([p for p, _, _ in self.pending], num_returns=len(self.pending), timeout=0)
            for ping, actor, place in [x for x in self.pending if x[0] in ready]:
                self.pending.remove((ping, actor, place))
                try:
                    answered.append((actor, ray.get(ping)))
                except RayActorError as e:
                    self.log(f"zssr-batch: an actor on the joining node {place.node[:12]} could not start: "
                             f"{start_failure(e)}")
                    ray.kill(actor, no_restart=True)
        if time.monotonic() - self.looked_at < JOIN_EVERY_S:
            return answered
        self.looked_at = time.monotonic()
        new = [n for n in live_nodes() if n["NodeID"] not in self.known]
        self.known.update(n["NodeID"] for n in new)
        if new:
            blind = self.probe.failures([n["NodeID"] for n in new], self.log)
            for line in blind.values():
                self.log(f"zssr-batch: a node joined but is not used: {line}")
            new = [n for n in new if n["NodeID"] not in blind]
        for place in self._plan(new):
            actor = FitActor.options(**place.resources, scheduling_strategy=NodeAffinitySchedulingStrategy(
                place.node, soft=True)).remote(place.threads, self.actor_settings)
            self.pending.append((actor.where.remote(), actor, place))
            self.started += 1
        for n in new:
            count = sum(1 for _, _, p in self.pending if p.node == n["NodeID"])
            self.log(f"zssr-batch: node {n['NodeID'][:12]} joined; {count} actor(s) start on it")
        return answered

    def close(self) -> None:
        """Actors still starting are not wanted any more."""
        for _, actor, _ in self.pending:
            ray.kill(actor, no_restart=True)
        self.pending.clear()
