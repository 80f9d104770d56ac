"""Where the run's actors go: join or start Ray, and how many actors with what resources.

By default each actor fits batches in packs: one actor per GPU, or per few CPU cores. With
``--pack 1`` each actor fits one image at a time and holds ``1 / images_per_gpu`` of a GPU.
"""

from __future__ import annotations

import os
import sys

import ray

from .settings import RunSettings


def start_ray(address: str | None) -> bool:
    """Join ``address`` (or RAY_ADDRESS), else start a local Ray; returns True if we started it."""
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch/CUDA in the driver is fine: CPU only
        gpus = 0
    ray.init(num_cpus=os.cpu_count() or 1, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    return True


def plan_actors(settings: RunSettings) -> tuple[int, dict[str, float], int]:
    """(number of actors, resources per actor, torch threads per actor) for this cluster."""
    res = ray.cluster_resources()
    have_gpus = int(res.get("GPU", 0))
    cpus = int(res.get("CPU", 1))
    gpus = have_gpus if settings.gpus is None else min(settings.gpus, have_gpus)
    if settings.gpus and settings.gpus > have_gpus:
        print(f"zssr-batch: asked for {settings.gpus} GPUs, the cluster has {have_gpus}; using {gpus}",
              file=sys.stderr)
    if gpus > 0:
        k = max(1, settings.images_per_gpu or (4 if settings.pack == 1 else 1))
        return gpus * k, {"num_gpus": 1.0 / k, "num_cpus": 0}, max(1, settings.threads_per_worker or 2)
    threads = settings.threads_per_worker or min(4, cpus)
    n = settings.cpu_workers or max(1, cpus // threads)
    return n, {"num_cpus": min(threads, cpus)}, threads
