"""Where the run's actors go: join or start Ray, and how many actors with what resources.

By default each actor fits batches in packs: one actor per GPU, or per few CPU cores. With
``--pack 1`` each actor fits one image at a time and holds ``1 / images_per_gpu`` of a GPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ray

from .settings import RunSettings


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


def start_ray(address: str | None) -> bool:
    """Join ``address`` (or RAY_ADDRESS), else start a local Ray; returns True if we started it."""
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return False
    if address:
        use_token_if_any()
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
