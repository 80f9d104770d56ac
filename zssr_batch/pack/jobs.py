"""What a pack is given to fit (``Job``), and which jobs can share a pack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import FitConfig


@dataclass
class Job:
    key: Any  # the caller's handle on the image (e.g. its work item)
    image: torch.Tensor  # (C, h, w) in [0, 1]
    cfg: FitConfig
    kernel: np.ndarray | None = None  # the downscaling kernel the image was made with, if known


def packable(cfg: FitConfig) -> bool:
    """Whether fits with these settings can share a pack (``max_iters`` 0, the plain bicubic upscale, is made alone)."""
    return cfg.max_iters > 0


def signature(job: Job) -> tuple | None:
    """What must match for two jobs to share a pack; None for jobs that are fitted alone.

    Not the kernel: each slot makes its sons with its own (``pack.kernels``), so images with
    different kernels, or none, share a pack instead of each one being fitted alone while the
    pack waits. The scale steps fix each step's son shape and the slots' sources; each slot is
    at its own step.
    """
    cfg, (c, h, w) = job.cfg, job.image.shape
    if not packable(cfg) or min(h, w) < cfg.crop:
        return None
    return (c, cfg.depth, cfg.width, cfg.crop, cfg.steps, cfg.noise_std > 0)
