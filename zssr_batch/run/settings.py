"""What a run is told: the driver's ``RunSettings``, and the frozen values it sends its actors.

``RunSettings`` is the command line's ``run`` in one value (and run.json's ``run`` section).
``ActorSettings`` is what every actor call shares (``Extras`` among it); it is frozen, so an
actor that Ray restarts gets the same value again, and it pickles as it is: no dicts to rebuild.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files.sources import WorkItem
from .faults import Faults


@dataclass(frozen=True)
class Extras:
    """What to keep besides the output (all beside it, named after it)."""

    save_weights: bool = False
    save_pairs: int = 0  # every Nth training pair as PNGs; 0 = none
    save_variants: bool = False  # single pass, mean and median ensembles
    save_curve: bool = False  # per-step loss and learning rate as CSV
    rel: str | None = None  # names the item's report pictures: its output's path in report_dir, set per item
    report_dir: str | None = None  # a run's folder: .report/curves/<rel>.csv|svg and .report/thumbs/<rel>/

    def for_item(self, item: WorkItem) -> "Extras":
        """These extras for one work item. Its pictures are named after its output, which the plan
        proved unique and inside the run's folder (an input's own name may be neither)."""
        if not self.report_dir:
            return dataclasses.replace(self, rel=item.rel or None)
        return dataclasses.replace(self, rel=os.path.relpath(os.path.abspath(item.output), os.path.abspath(self.report_dir)))


@dataclass
class RunSettings:
    output_dir: str | Path  # a folder (absolute), or an object store's URL
    gpus: int | None = None  # None: every GPU there is
    images_per_gpu: int | None = None  # actors per GPU; default 4 fitting one image each, 1 when packing
    pack: int = 0  # fits per pack: 0 = measured within GPU memory (CPU: pack.size.cpu_pack_size); 1 = one image per call
    precision: str = "bf16"  # packed networks on a GPU: 'bf16' or 'fp32' (CPUs always run fp32)
    batch: int | None = None  # images per actor call when packing (None: call_size within GPU_CALL, 16 on CPUs)
    cpu_workers: int | None = None  # --gpus 0: how many CPU actors (default: cores / threads)
    threads_per_worker: int | None = None
    address: str | None = None
    device: str = "auto"  # 'cpu': CPU actors only, whatever GPUs there are; 'cuda': GPUs or refuse
    wait_for_gpus: float = 600.0  # --gpus N on an autoscaling cluster with none yet: how long to wait for the first
    head_timeout: float = 15.0  # how long the Ray head may not answer before the run stops (``headwatch``)
    retries: int = 2
    max_failures: int | None = None
    overwrite: bool = False
    progress: bool = True  # a bar on a terminal (else one line per event)
    verbose: bool = False  # Ray's own start-up lines too
    max_pixels: int | None = None
    degrade: bool = False
    extras: Extras = field(default_factory=Extras)
    command: str = ""
    engine: dict[str, Any] = field(default_factory=dict)  # resolved base settings, for run.json

    def for_actors(self, faults: Faults) -> "ActorSettings":
        """What every actor call of this run shares."""
        return ActorSettings(self.max_pixels, self.degrade, self.pack, self.precision, self.extras, faults)


@dataclass(frozen=True)
class ActorSettings:
    """The run's settings an actor needs, sent once with the actor (Ray gives a restarted actor the
    same arguments)."""

    max_pixels: int | None = None  # refuse inputs with more pixels than this
    degrade: bool = False  # inputs are ground truth: make the LR input from each
    pack: int = 0  # fits per pack (0: measured; 1: one image at a time)
    precision: str = "bf16"  # packed networks on a GPU: 'bf16' or 'fp32'
    extras: Extras = Extras()  # what to keep besides each output
    faults: Faults = Faults()  # what to break, for the robustness tests (read once, in the driver)


def cluster_address(address: str | None) -> str | None:
    """The cluster a run joins: ``--address``, else RAY_ADDRESS; None, a Ray of the run's own, where
    neither is set or the one given is 'local' (Ray's word for a new local instance)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


def check_address(address: str | None) -> None:
    """Refuse, in one line, a cluster address this run cannot join."""
    address = cluster_address(address) or ""
    if address.startswith("ray://"):
        raise ValueError(f"{address}: Ray Client (ray://) addresses are not supported: the driver must join the "
                         "cluster itself (it watches the head, probes each node's storage, reads and writes the "
                         "report locally). Submit the run as a Ray Job (jobs/submit_upscale.sh), or run it on a "
                         "node of the cluster with --address HOST:6379")
