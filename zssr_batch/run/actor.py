"""The Ray actor that fits images: one per GPU (or per share of one, or per few CPU cores).

Heavy state (torch, the CUDA context) lives here for the whole run. Each call is a batch of
``WorkItem``s with their ``FitConfig``s, fitted one by one or in packs, and is a Ray streaming
generator, so each row comes back the moment its image is done.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Iterator

import ray

from ..config import FitConfig
from ..engine import tally
from ..files.sources import WorkItem
from ..report.row import timestamp
from .batch import Result, run_packed
from .item import run_item
from .settings import ActorSettings


class NoCuda(RuntimeError):
    """A worker given a GPU that its torch cannot use."""


# 'progress' is a second thread of the actor for ``trained`` alone: the run asks it for its step
# count while a fit runs; ``process`` calls still run one at a time, in the default group.
@ray.remote(max_restarts=-1, max_task_retries=0, concurrency_groups={"progress": 1})
class FitActor:
    """Fits a batch of images per call, one by one or packed, under the run's ``ActorSettings``."""

    def __init__(self, threads: int, settings: ActorSettings) -> None:
        import torch

        self.settings = settings
        settings.faults.slow_restart()  # off unless the robustness tests ask for it
        torch.set_num_threads(max(1, threads))
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        if self.gpu_ids and not torch.cuda.is_available():
            # never a silent CPU fit on a GPU's share: it would run for days and say ok
            raise NoCuda(f"{socket.gethostname()} gave this worker GPU {','.join(self.gpu_ids)} but its torch "
                         f"{torch.__version__} cannot use CUDA (a CPU build, or no driver); install a CUDA build of "
                         "torch there, or run with --device cpu")
        self.device = "cuda" if self.gpu_ids else "cpu"

    def where(self) -> dict[str, Any]:
        return {"node": ray.get_runtime_context().get_node_id()[:12], "host": socket.gethostname(),
                "gpu": ",".join(self.gpu_ids), "pid": os.getpid()}

    @ray.method(concurrency_group="progress")
    def trained(self) -> tally.Steps:
        """Training steps this worker has taken, fits' and kernel estimators' (``engine.tally``), for
        the run's progress."""
        return tally.trained()

    def _one_by_one(self, items: list[WorkItem], cfgs: list[FitConfig]) -> Iterator[Result]:
        s = self.settings
        for i, (item, cfg) in enumerate(zip(items, cfgs)):
            yield [i], None
            yield i, run_item(item, cfg, self.device, s.extras.for_item(item), s.max_pixels, s.degrade, s.faults)

    @ray.method(_generator_backpressure_num_objects=1)
    def process(self, items: list[WorkItem], cfgs: list[FitConfig]) -> Iterator[Result]:
        """A Ray streaming generator: (index in the batch, record) for each image as soon as it is done,
        and ([index, ...], None) before it starts those images (first of all ([], None): begun).

        With a backpressure of one item, each ``yield`` returns only once the driver has taken the
        item, so a start notice is never lost with a worker that dies right after it (without it,
        most were: docs/BENCHMARKS.md, "Why the run's defaults are what they are"). The driver
        charges a death only to the images the worker had announced (``recovery.after_death``).
        One image at a time, or the batch fitted in packs (continuous batching).
        """
        yield [], None  # the call has begun: from here a death may be this call's doing
        s = self.settings
        if len(items) == 1 or s.pack == 1:
            results = self._one_by_one(items, cfgs)
        else:
            results = run_packed(items, cfgs, self.device, s.extras, s.max_pixels, s.degrade, s.pack, s.precision,
                                 announce=True, faults=s.faults)
        where = self.where()
        for i, record in results:
            if record is None:
                yield i, None
                continue
            record.update(where)  # started_at is the image's own, from its fit (empty if none began)
            record["finished_at"] = timestamp(time.time())
            yield i, record
