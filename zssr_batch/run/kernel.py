"""An image's downscaling kernel before its fit, and what its row says of it.

The kernel is given (``--kernel FILE``, a manifest's ``kernel`` column, a random-kernel set's own
``kernels/X<s>/``), estimated from the image itself (``--kernel estimate``:
``engine.kernel_estimate``), or bicubic. The row's ``kernel_*`` columns describe the kernel the fit
used, the bicubic one included, so that a run that assumed bicubic on a blind set shows how far
that assumption was from the truth:

- ``kernel_source``: 'given', 'estimated', 'bicubic fallback' (an estimate not trusted) or 'bicubic';
- ``kernel_width`` and ``kernel_anisotropy``: ``engine.kernels.kernel_moments`` (HR pixels);
- ``kernel_error``: ``engine.kernels.kernel_error`` against the kernel that made the input, where
  it is known (``WorkItem.true_kernel``);
- ``kernel_lr_psnr``: the input made again from its ground truth with the kernel, against the input
  (``engine.kernels.remade_psnr``), where there is a ground truth;
- ``kernel_seconds``: the estimate's time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import FitConfig
from ..engine.kernel_estimate import Estimate, estimate_kernel
from ..engine.kernels import bicubic_kernel, kernel_error, kernel_moments, load_kernel, remade_psnr


@dataclass(frozen=True)
class KernelPick:
    kernel: np.ndarray | None  # what the fit downscales with; None: bicubic (``imresize``)
    shown: np.ndarray | None  # what the report pictures: the kernel, or bicubic's as an array where it has one
    true: np.ndarray | None  # the kernel that made the input, where known
    row: dict[str, Any] = field(default_factory=dict)  # the kernel_* columns
    notes: tuple[str, ...] = ()  # for the row's notes: why an estimate fell back to bicubic


def _integer_scale(cfg: FitConfig) -> int | None:
    sv, sh = cfg.scale
    return int(sv) if sv == sh and float(sv).is_integer() else None


def pick_kernel(color: torch.Tensor, cfg: FitConfig, gt: np.ndarray | None = None,
                true_kernel: str | None = None, device: torch.device | str = "cpu",
                estimated: tuple[Estimate, float] | None = None) -> KernelPick:
    """The kernel ``color`` (C, h, w) is fitted with under ``cfg``, and its row's columns. With
    ``--kernel estimate`` it is estimated here, alone, unless ``estimated`` brings the estimate and its
    seconds (a packed call estimates many at once: ``pack.kernel_estimates``)."""
    seconds, notes = None, ()
    if cfg.kernel == "estimate":
        if estimated is None:
            t0 = time.perf_counter()
            est = estimate_kernel(color, int(cfg.scale[0]), cfg.kernel_steps, cfg.seed, device, cfg.kernel_trust_width,
                                  cfg.kernel_restarts, cfg.kernel_trust_recurrence, cfg.kernel_estimator)
            seconds = round(time.perf_counter() - t0, 3)
        else:
            est, seconds = estimated[0], round(estimated[1], 3)
        kernel, source = est.kernel, est.source
        notes = (f"kernel: {'bicubic, ' if kernel is None else ''}{est.note}",) if est.note else ()
    elif cfg.kernel:
        kernel, source = load_kernel(cfg.kernel), "given"
    else:
        kernel, source = None, "bicubic"
    s = _integer_scale(cfg)
    shown = kernel if kernel is not None else (bicubic_kernel(s) if s else None)
    true = load_kernel(true_kernel) if true_kernel else None
    row: dict[str, Any] = {"kernel_source": source, "kernel_seconds": seconds, "kernel_width": None,
                           "kernel_anisotropy": None, "kernel_error": None, "kernel_lr_psnr": None}
    if shown is not None:
        width, anisotropy = kernel_moments(shown)
        row.update(kernel_width=round(width, 4), kernel_anisotropy=round(anisotropy, 4))
        if true is not None:
            row["kernel_error"] = round(kernel_error(shown, true), 4)
    if gt is not None:
        row["kernel_lr_psnr"] = round(remade_psnr(color, torch.from_numpy(gt), kernel, cfg.scale), 3)
    return KernelPick(kernel, shown, true, row, notes)
