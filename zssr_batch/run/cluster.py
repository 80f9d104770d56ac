"""Where the run's actors go: join or start Ray, and how many actors with what resources.

By default each actor fits batches in packs: one actor per GPU, or per few CPU cores. With
``--pack 1`` each actor fits one image at a time and holds ``1 / images_per_gpu`` of a GPU.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray

from ..files import storage
from ..files.images import write_atomic
from .headwatch import gcs_answers
from .settings import ActorSettings, RunSettings, check_address, cluster_address


def use_token_if_any() -> None:
    """Send Ray's authentication token when joining a cluster, if this machine has one.

    A head started with ``ray start`` turns token authentication on when a token exists
    (``~/.ray/auth_token``, which any local Ray writes, or RAY_AUTH_TOKEN[_PATH]), but a driver
    that joins it sends the token only when RAY_AUTH_MODE=token is set: without it every call is
    refused ("Authentication token is missing or incorrect") and ``ray.init`` retries for minutes
    (Ray 2.60). An explicit RAY_AUTH_MODE is the user's and is left alone."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray read its settings when it was imported: have it read them again, as Ray itself does
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):  # a Ray without token authentication
            pass


def start_ray(address: str | None, verbose: bool = False) -> bool:
    """Join ``address`` (or RAY_ADDRESS), else start a local Ray; returns True if we started it.

    Ray's own lines (its token notice, 'Started a local Ray instance') are kept off the terminal
    unless ``verbose``: the run says what it is doing in its own words."""
    address = cluster_address(address)
    check_address(address)
    if ray.is_initialized():
        return False
    if not verbose:
        logging.getLogger("ray").setLevel(logging.ERROR)
        _quiet_worker_deaths()
    if address:
        use_token_if_any()
        head_answers(address)
        ray.init(address=address, log_to_driver=False, configure_logging=verbose)
        return False
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch/CUDA in the driver is fine: CPU only
        gpus = 0
    # No worker processes started ahead of need: for its first driver Ray starts one a CPU, of which
    # a run's actors (one a GPU, or a few CPU ones) take as many as they are; on a GPU box with many
    # cores the rest sit idle for the whole run, each a Python process polling the raylet (on this
    # 2-core machine an idle one used 0.01 CPU-s a second). Each actor starts its own instead.
    # address 'local': a Ray of the run's own, as the run says. With no address Ray would join the
    # last cluster started with `ray start` on this machine (its temp folder's ray_current_cluster),
    # even a dead one, and refuse our CPU count for it ("When connecting to an existing cluster,
    # num_cpus and num_gpus must not be provided"). Joining a cluster is --address's job.
    ray.init(address="local", num_cpus=os.cpu_count() or 1, num_gpus=gpus, include_dashboard=False,
             log_to_driver=False, configure_logging=False, _system_config={"prestart_worker_first_driver": False})
    return True


def head_answers(address: str, wait_s: float = 10.0) -> None:
    """Refuse, in one line, a ``host:port`` where no head answers within ``wait_s`` (a head that is
    starting gets that long): ``ray.init`` would retry a dead one for minutes, printing Ray's own
    warnings. Addresses of other forms ('auto') are left to Ray."""
    host, _, port = address.rpartition(":")
    if not (host and port.isdigit()):
        return
    t0 = time.monotonic()
    while not gcs_answers(address):
        if time.monotonic() - t0 >= wait_s:
            raise ConnectionError(f"{address}: no Ray head answers there (nothing took a connection at that port for "
                                  f"{wait_s:.0f} s); start the cluster's head, or check --address / RAY_ADDRESS")
        time.sleep(1.0)


def _quiet_worker_deaths() -> None:
    """Keep Ray's own 'A worker died or was killed ...' paragraphs (some 1,300 characters each, on
    stdout, over the bar) off the terminal: the run says each death in one line of its own. Ray's
    driver prints them from a thread through ``ray._private.worker.print_to_stdstream``, looked up
    at each call; messages from the raylet are dropped, the rest go through. A Ray without that
    function is left as it is."""
    from ray._private import worker

    ray_print = getattr(worker, "print_to_stdstream", None)
    if ray_print is None or getattr(ray_print, "quiet", False):
        return

    def print_to_stdstream(data, *args, **kwargs):
        if data.get("pid") != "raylet":
            ray_print(data, *args, **kwargs)

    print_to_stdstream.quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


@dataclass(frozen=True)
class Placement:
    """One planned actor: the node it is made for, what it asks of that node, its torch threads."""

    node: str  # Ray node id
    resources: dict[str, float]  # num_cpus / num_gpus, never more than the node holds
    threads: int


def actors_per_gpu(settings: RunSettings) -> int:
    """Actors sharing one GPU: --images-per-gpu, else 1 packing, 4 fitting one image each (--pack 1)."""
    return max(1, settings.images_per_gpu or (4 if settings.pack == 1 else 1))


def live_nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes as ``ray.nodes()`` gives them (NodeID, Resources, ...)."""
    return [n for n in ray.nodes() if n.get("Alive")]


def plan_actors(settings: RunSettings, nodes: list[dict[str, Any]], log: Callable[[str], None]) -> list[Placement]:
    """The actors for this run on these ``nodes``, node by node.

    Each actor is sized from the node it is made for, never from the cluster's total: an actor
    that asks for more CPUs or GPUs than any one node holds is never placed (on two 1-CPU nodes,
    sizing from the total asked for 2 CPUs and the run waited for ever at 0/N). ``--workers``
    beyond what the nodes hold is cut to what they hold, with a line that says so."""
    gpus_of = {n["NodeID"]: int(n["Resources"].get("GPU", 0)) for n in nodes}
    have = sum(gpus_of.values())
    want = 0 if settings.device == "cpu" else have if settings.gpus is None else min(settings.gpus, have)
    if settings.gpus and settings.gpus > have and settings.device != "cpu":
        log(f"zssr-batch: asked for {settings.gpus} GPUs, the cluster has {have}; using {want}")
    if settings.device.startswith("cuda") and want == 0:
        raise ValueError(f"--device {settings.device} asks for GPUs but {'--gpus 0 was given' if settings.gpus == 0 else 'the cluster has none'}")
    if want > 0:
        k = actors_per_gpu(settings)
        threads = max(1, settings.threads_per_worker or 2)
        plan = []
        for node, n_gpus in gpus_of.items():
            n = min(n_gpus, want - len(plan) // k)
            plan += [Placement(node, {"num_gpus": 1.0 / k, "num_cpus": 0}, threads)] * (n * k)
        return plan
    slots = []  # (node, threads): every CPU actor the nodes can hold, node by node
    for n in nodes:
        cpus = int(n["Resources"].get("CPU", 0))
        if cpus < 1:
            continue  # a head started with --num-cpus 0 runs the driver only
        threads = min(settings.threads_per_worker or min(4, cpus), cpus)
        slots.append([(n["NodeID"], threads)] * (cpus // threads))
    # one from each node in turn, so that --workers N spreads over the nodes
    order = [s for group in itertools.zip_longest(*slots) for s in group if s is not None]
    if not order:
        raise ValueError("the cluster has no CPU to run on (every node was started with --num-cpus 0)")
    n = settings.cpu_workers or len(order)
    if n > len(order):
        log(f"zssr-batch: asked for {n} CPU workers; the nodes hold {len(order)} of their size; using {len(order)}")
    return [Placement(node, {"num_cpus": threads}, threads) for node, threads in order[:n]]


# How long the actors may take to be placed and answer (importing torch, a CUDA context) before
# those that have not are dropped from the plan, their work going to the others; and, when none has
# answered by then, how much longer the run waits for the first (a busy machine: four test runs at
# once on 2 cores took over 60 s to start one actor).
PLACE_WAIT_S = 60.0
FIRST_WAIT_S = 540.0


class NoActors(RuntimeError):
    """No actor of the plan could start: the run cannot go on (one line, the first cause)."""


def start_failure(err: BaseException) -> str:
    """An actor's failed start in one line: the last line of Ray's report is its own exception."""
    last = [ln.strip() for ln in str(err).splitlines() if ln.strip()][-1:] or [type(err).__name__]
    name, sep, msg = last[0].partition(": ")
    return msg if sep and "." in name and " " not in name else last[0]


def start_actors(plan: list[Placement], settings: ActorSettings, log: Callable[[str], None],
                 wait_s: float = PLACE_WAIT_S) -> tuple[list, dict[int, dict]]:
    """Make the planned actors, each on its node (softly: a restart after its node is lost may go
    elsewhere), and keep those that answer within ``wait_s``; returns them and where each runs.
    An actor that fails its start says why in one line; one that is never placed is dropped."""
    from ray.exceptions import RayActorError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .actor import FitActor

    actors = [FitActor.options(**p.resources, scheduling_strategy=NodeAffinitySchedulingStrategy(p.node, soft=True))
              .remote(p.threads, settings) for p in plan]
    pings = [a.where.remote() for a in actors]
    ready, _ = ray.wait(pings, num_returns=len(pings), timeout=wait_s)
    if not ready:  # none at all: a machine too busy to start one in time, more likely than no room anywhere
        log(f"zssr-batch: no actor has answered after {wait_s:.0f} s; waiting up to {FIRST_WAIT_S:.0f} s more "
            "for the first")
        if ray.wait(pings, num_returns=1, timeout=FIRST_WAIT_S)[0]:
            ready, _ = ray.wait(pings, num_returns=len(pings), timeout=wait_s)
    placed: list = []
    where: dict[int, dict] = {}
    causes: list[str] = []
    for i, (actor, ping) in enumerate(zip(actors, pings)):
        if ping in ready:
            try:
                where[len(placed)] = ray.get(ping)
                placed.append(actor)
                continue
            except RayActorError as e:
                causes.append(start_failure(e))
        else:
            log(f"zssr-batch: actor {i} (asking {plan[i].resources} of node {plan[i].node[:12]}) was not placed "
                f"within {wait_s:.0f} s; dropped, its work goes to the others")
        ray.kill(actor, no_restart=True)
    if not placed:
        raise NoActors(causes[0] if causes else f"no actor was placed within {wait_s:.0f} s")
    for cause in dict.fromkeys(causes):  # each cause once, however many actors it stopped
        log(f"zssr-batch: {causes.count(cause)} of {len(plan)} actors could not start ({cause}); "
            f"going on with {len(placed)}")
    return placed, where


def _sees(paths: list[str], stamps: dict[str, str]) -> dict[str, Any]:
    """On one node: which local ``paths`` it cannot see, and which objects it reads otherwise than
    the driver does (``stamps``: the driver's, by URL)."""
    import socket

    missing = [p for p in paths if not os.path.exists(p)]
    for url, want in stamps.items():
        try:
            got = storage.stamp(url)
        except Exception as e:  # noqa: BLE001 - any reason to read it otherwise is the answer
            got = f"nothing ({type(e).__name__})"
        if got != want:
            missing.append(f"{url} (it reads {got}, the driver {want})")
    return {"host": socket.gethostname(), "missing": missing}


class StorageProbe:
    """Proves, before any work, that a node sees what the driver sees: the inputs' folders, the
    kernels, and a marker the driver writes into --output (a file, or an object whose stamp must
    read the same: a node whose store settings differ, another endpoint or no credentials, reads
    another object or none). Each image is read and written by whichever node fits it, and a node
    with a local folder of the same name (a shared mount that never came up) would fail every image
    it got, or write outputs nobody else sees while its rows say ok.

    A node is probed when it holds actors, the driver's own included when the run joined a Ray it
    did not start: its workers get the environment its ``ray start`` had (another endpoint, no
    credentials), not the driver's. A Ray the run started itself has the driver's."""

    def __init__(self, paths: list[str], output: str, own_ray: bool, wait_s: float = PLACE_WAIT_S) -> None:
        self.output, self.wait_s = output, wait_s
        self.local = [p for p in paths if not storage.is_url(p)]
        self.urls = [p for p in paths if storage.is_url(p)]
        self.here = ray.get_runtime_context().get_node_id() if own_ray else None

    def failures(self, nodes: list[str], log: Callable[[str], None]) -> dict[str, str]:
        """node -> one line saying what it cannot see (nodes that see everything are not in it)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = sorted(set(nodes) - {self.here})
        if not nodes:
            return {}
        marker = storage.join(self.output, f".zssr-batch.probe-{uuid.uuid4().hex[:12]}")
        write_atomic(marker, b"")
        try:
            stamps = {u: storage.stamp(u) for u in [*self.urls, *([marker] if storage.is_url(marker) else [])]}
            local = [*self.local, *([] if storage.is_url(marker) else [marker])]
            sees = ray.remote(num_cpus=0, max_retries=0)(_sees)
            probes = {n: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
                      .remote(local, stamps) for n in nodes}
            ready, _ = ray.wait(list(probes.values()), num_returns=len(probes), timeout=self.wait_s)
            bad = {}
            for node, ref in probes.items():
                if ref not in ready:
                    log(f"zssr-batch: node {node[:12]} did not answer the storage probe within {self.wait_s:.0f} s")
                    continue
                seen = ray.get(ref)
                if seen["missing"]:
                    shown = ", ".join(m.replace(marker, f"{self.output} (a file the driver wrote there)")
                                      for m in seen["missing"][:3])
                    bad[node] = (f"node {seen['host']} ({node[:12]}) cannot see {shown}: every node must see "
                                 "--input, --gt, --kernel and --output at the same paths (a shared mount: NFS, "
                                 "EFS, ...), and reach an object store with the same settings")
            return bad
        finally:
            try:
                storage.remove(marker)
            except OSError:
                pass  # gone already; a marker left behind is a hidden empty file

    def check(self, nodes: list[str], log: Callable[[str], None]) -> None:
        """Raise (one line, the first node's) unless every node of ``nodes`` sees what the driver sees."""
        bad = self.failures(nodes, log)
        if bad:
            raise ValueError(next(iter(bad.values())))
