"""How blurred an image is, read from where its own patches recur across scales: a second,
internal opinion on a kernel estimate, with no GAN in it.

The image is shrunk by 2 with isotropic Gaussians of several widths; for each, every sampled
7x7 patch of the image (its luma) looks for its nearest patch in the shrunk copy. A shrink too
wide leaves the image's sharp patches without a match; one too narrow aliases. The width where
the mean squared distance is least is the one at which the image's patches recur best: larger
the blurrier the image (the idea of Michaeli & Irani's nonparametric blind SR, and of KernelGAN's
discriminator, without the training).

Measured here (docs/BENCHMARKS.md, "Does the estimate follow the truth?"): on the same 20 BSD100
images, this width moved from 1.0-1.8 px (bicubic-downscaled) to 1.8-2.4 (the blind recipe's
kernels), each image wider blurred than sharp, where KernelGAN's estimate did not move at all. It is biased and coarse, so it is a
check (``kernel_estimate.vetoed``), not an estimate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WIDTHS = tuple(round(0.4 + 0.2 * i, 1) for i in range(11))  # the shrinks tried: 0.4 to 2.4 px
PATCH = 7
QUERIES = 4000  # patches of the image sampled (a fixed draw: the same image, the same answer)
SIDE = 384  # a larger image is measured on its central SIDE x SIDE: the search is quadratic
TAPS = 13
FLAT = 1e-4  # luma's spread under which an image has no detail to measure (0.03 of an 8-bit level)
SMALLEST = 2 * (TAPS + PATCH)  # a side under this leaves the shrunk copy too few patches to search


def _gaussian(sigma: float, device: torch.device) -> torch.Tensor:
    z = torch.arange(TAPS, dtype=torch.float64, device=device) - (TAPS - 1) / 2
    g = torch.exp(-z ** 2 / (2 * sigma ** 2))
    return torch.outer(g, g) / g.sum() ** 2


def _luma(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) in [0, 1] -> (H, W) float64 on its device: Rec. 601 luma, or the mean of other channel counts."""
    x = image.detach().to(torch.float64)
    if x.shape[0] == 3:
        return torch.tensordot(torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64, device=x.device), x, 1)
    return x.mean(0)


def _patches(y: torch.Tensor) -> torch.Tensor:
    return F.unfold(y[None, None], PATCH)[0].T  # (N, 49)


def recurrence_width(image: torch.Tensor) -> float | None:
    """The shrink width (HR pixels, of ``WIDTHS``) at which the patches of ``image`` (C, H, W) in
    [0, 1] recur best in its own copy shrunk by 2, measured on the image's device (float64); None
    where no shrink is better than another (a flat image). Needs a side of at least ``SMALLEST``."""
    y = _luma(image)
    h, w = y.shape
    if min(h, w) < SMALLEST:
        raise ValueError(f"image {w}x{h} is too small to measure its patch recurrence")
    top, left = max(0, (h - SIDE) // 2), max(0, (w - SIDE) // 2)
    y = y[top:top + SIDE, left:left + SIDE]
    if float(y.std()) < FLAT:  # every shrink of a flat image is the image: no width is better
        return None
    mine = _patches(y)
    pick = np.random.default_rng(0).choice(len(mine), min(QUERIES, len(mine)), replace=False)
    mine = mine[torch.from_numpy(pick).to(y.device)]
    distance = []
    for sigma in WIDTHS:
        small = F.conv2d(y[None, None], _gaussian(sigma, y.device)[None, None], stride=2)[0, 0]
        theirs = _patches(small)
        nearest = torch.cat([torch.cdist(q, theirs).min(1).values for q in mine.split(1000)])
        distance.append(float(nearest.square().mean()))
    return WIDTHS[int(np.argmin(distance))]
