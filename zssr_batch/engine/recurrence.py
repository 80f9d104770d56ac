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
kernels), each image wider blurred than sharp, where KernelGAN's estimate did not move at all.

Read coarsely (``recurrence_width``, 0.2 px steps) it is the ``real`` preset's check on an estimate
(``kernel_estimate.vetoed``). Read finely (``measured_width``: 0.1 px steps, the least found between
them by a parabola) it is biased wide but in a straight line: on dead-leaves images (discs of every
size, the standard synthetic image whose statistics are those of photos at every scale), blurred by
known Gaussians and random kernels, the true width is a line of the measured one
(``CALIBRATION``: at x2 to 0.076 px rms). Through that line it is an estimate (``calibrated_width``, ``kernel_estimate``'s
``recurrence`` estimator): the line was read off synthetic images only
(``benchmarks/recurrence_calibration.py``), never the benchmarks'.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WIDTHS = tuple(round(0.4 + 0.2 * i, 1) for i in range(11))  # the shrinks tried: 0.4 to 2.4 px
FINE = tuple(round(0.5 + 0.1 * i, 1) for i in range(26))  # ``measured_width``'s: 0.5 to 3.0 px
# The true kernel's width at each scale (``kernels.kernel_moments``, HR pixels) as a line of
# ``measured_width``: (offset, slope), fitted by ``benchmarks/recurrence_calibration.py`` on 4
# dead-leaves images x 12-14 kernels a scale (Gaussians over the blind recipe's range and 4 of its own
# kernels). x2: 0.076 px rms off the line; x4: 0.208 px rms (a measure across a factor of 2 moves half
# as much with an x4 kernel's width: the x4 line is steeper, and each image's own offset
# counts for more).
CALIBRATION = {2: (-1.912, 1.727), 4: (-4.322, 3.673)}
PATCH = 7
QUERIES = 4000  # patches of the image sampled (a fixed draw: the same image, the same answer)
SIDE = 384  # a larger image is measured on its central SIDE x SIDE: the search is quadratic
TAPS = 13
FLAT = 1e-4  # luma's spread under which an image has no detail to measure (0.03 of an 8-bit level)
# A fine profile that moves less than this share across 0.5-3 px says nothing of the blur: a linear
# ramp's moved 0.03 % (a hostile tester's), a photo's and a dead-leaves image's move many times over
FEATURELESS = 1e-3
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


def _profile(image: torch.Tensor, widths: tuple[float, ...]) -> list[float] | None:
    """The mean squared distance of the sampled patches of ``image`` to their nearest ones in its copy
    shrunk by 2 with a Gaussian of each width; None for a flat image (every shrink is the image)."""
    y = _luma(image)
    h, w = y.shape
    if min(h, w) < SMALLEST:
        raise ValueError(f"image {w}x{h} is too small to measure its patch recurrence")
    top, left = max(0, (h - SIDE) // 2), max(0, (w - SIDE) // 2)
    y = y[top:top + SIDE, left:left + SIDE]
    if float(y.std()) < FLAT:
        return None
    mine = _patches(y)
    pick = np.random.default_rng(0).choice(len(mine), min(QUERIES, len(mine)), replace=False)
    mine = mine[torch.from_numpy(pick).to(y.device)]
    distance = []
    for sigma in widths:
        small = F.conv2d(y[None, None], _gaussian(sigma, y.device)[None, None], stride=2)[0, 0]
        theirs = _patches(small)
        nearest = torch.cat([torch.cdist(q, theirs).min(1).values for q in mine.split(1000)])
        distance.append(float(nearest.square().mean()))
    return distance


def recurrence_width(image: torch.Tensor) -> float | None:
    """The shrink width (HR pixels, of ``WIDTHS``) at which the patches of ``image`` (C, H, W) in
    [0, 1] recur best in its own copy shrunk by 2, measured on the image's device (float64); None
    where no shrink is better than another (a flat image). Needs a side of at least ``SMALLEST``."""
    distance = _profile(image, WIDTHS)
    return None if distance is None else WIDTHS[int(np.argmin(distance))]


def measured_width(image: torch.Tensor) -> float | None:
    """``recurrence_width`` on ``FINE``'s steps, the least placed between them by the parabola through
    the best step and its neighbours (an end of the range stays where it is); None where no shrink is
    better than another (a flat image, or a featureless one such as a ramp)."""
    d = _profile(image, FINE)
    if d is None or max(d) - min(d) <= FEATURELESS * max(d):  # a ramp: every shrink alike, its least is noise
        return None
    i = int(np.argmin(d))
    if 0 < i < len(d) - 1 and (bend := d[i - 1] - 2 * d[i] + d[i + 1]) > 0:
        return FINE[i] + 0.5 * (d[i - 1] - d[i + 1]) / bend * (FINE[1] - FINE[0])
    return FINE[i]


def calibrated_width(image: torch.Tensor, scale: int) -> float | None:
    """The width (HR pixels) of the kernel that shrank ``image`` by ``scale`` (2 or 4), read off its
    patch recurrence (``measured_width`` through ``CALIBRATION``); None for a flat image. Can come out
    under 0 for a sharp image: each line holds over its calibration's range."""
    if scale not in CALIBRATION:
        raise ValueError(f"a kernel can be estimated for x2 and x4 only, not x{scale}")
    m = measured_width(image)
    offset, slope = CALIBRATION[scale]
    return None if m is None else offset + slope * m
