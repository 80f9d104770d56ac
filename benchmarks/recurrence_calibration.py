"""The line that turns a measured patch-recurrence width into a kernel width
(``engine.recurrence.CALIBRATION``), fitted on synthetic images only.

    python benchmarks/recurrence_calibration.py            # x2, ~15 min on a 2-core CPU
    python benchmarks/recurrence_calibration.py --scale 4  # x4, ~5 min

Dead-leaves images (opaque discs of random colour, radii drawn with density r^-3 between 1.5 and
200 px, front to back until 99.5 % is covered, drawn at 4x and box-averaged to 512x512): the
standard synthetic image whose statistics are those of natural images at every scale, so a
measure read off it is not read off any benchmark. Each is shrunk by the scale with Gaussians
(x2: 0.6-2.4 px; x4: 1.0-3.1, the blind recipe's ranges), four kernels of the blind recipe
(``engine.kernels.random_kernel``) and MATLAB's bicubic, and ``measured_width`` (always across a
factor of 2 of the input) is taken of each input. Printed: each measure, the least-squares line of the
true width (``kernel_moments``) on the measure (bicubic inputs left out: its kernel is no Gaussian),
its rms residual, and where the bicubic inputs fall on it. Then one JSON line.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from zssr_batch.engine.kernels import kernel_moments, random_kernel, random_kernel_size, shift_kernel
from zssr_batch.engine.recurrence import measured_width
from zssr_batch.engine.resize import imresize, kernel_downscale

SIDE = 512
GAUSSIANS = {2: (0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4), 4: (1.0, 1.3, 1.6, 1.9, 2.2, 2.5, 2.8, 3.1)}


def dead_leaves(side: int, seed: int, smallest: float = 1.5, largest: float = 200.0, supersample: int = 4) -> np.ndarray:
    """A (3, side, side) dead-leaves image in [0, 1]: discs drawn front to back (each covers only what
    no disc in front of it has), radii with density r^-3 in [smallest, largest] pixels."""
    rng = np.random.default_rng(seed)
    n = side * supersample
    img = np.full((3, n, n), 0.5)
    covered = np.zeros((n, n), bool)
    yy, xx = np.mgrid[0:n, 0:n]
    lo, hi = smallest ** -2, largest ** -2
    drawn = 0
    while drawn % 2000 or covered.mean() < 0.995:  # (the coverage is checked every 2000 discs: it is slow)
        drawn += 1
        r = supersample / np.sqrt(lo - rng.uniform() * (lo - hi))  # inverse CDF of density r^-3
        cx, cy = rng.uniform(-r, n + r, 2)
        x0, x1, y0, y1 = int(max(0, cx - r)), int(min(n, cx + r + 1)), int(max(0, cy - r)), int(min(n, cy + r + 1))
        if x1 <= x0 or y1 <= y0:
            continue
        disc = ((xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2 <= r * r) & ~covered[y0:y1, x0:x1]
        img[:, y0:y1, x0:x1][:, disc] = rng.uniform(0.05, 0.95, (3, 1))
        covered[y0:y1, x0:x1] |= disc
    return img.reshape(3, side, supersample, side, supersample).mean((2, 4))


def _gaussian(sigma: float, n: int) -> np.ndarray:
    z = np.arange(n) - n // 2
    g = np.exp(-z ** 2 / (2 * sigma ** 2))
    return np.outer(g, g) / g.sum() ** 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, choices=(2, 4), default=2)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--seed", type=int, default=10, help="the first image's seed; the others follow")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for i in range(args.images):
        hr = torch.from_numpy(dead_leaves(SIDE, args.seed + i))
        rng = np.random.default_rng(i)
        s = args.scale
        kernels = [(f"gaussian {g}", _gaussian(g, random_kernel_size(s))) for g in GAUSSIANS[s]]
        kernels += [(f"recipe {j}", random_kernel(s, rng).kernel) for j in range(4)]
        for name, k in [("bicubic", None)] + kernels:
            lr = imresize(hr, 1 / s) if k is None else kernel_downscale(hr, shift_kernel(k, (s, s)), 1 / s, (SIDE // s,) * 2)
            truth = None if k is None else kernel_moments(k)[0]
            rows.append({"image": i, "kernel": name, "truth": truth, "measured": measured_width(lr.clamp(0, 1))})
            print(f"image {i} {name}: truth {truth or 0:.2f} measured {rows[-1]['measured']:.3f}", flush=True)
    fit = [r for r in rows if r["truth"] is not None]
    slope, offset = np.polyfit([r["measured"] for r in fit], [r["truth"] for r in fit], 1)
    rms = float(np.sqrt(np.mean([(offset + slope * r["measured"] - r["truth"]) ** 2 for r in fit])))
    bicubic = [round(float(offset + slope * r["measured"]), 2) for r in rows if r["truth"] is None]
    print(f"\ntrue width = {offset:.3f} + {slope:.3f} x measured ({len(fit)} inputs, {rms:.3f} px rms); "
          f"bicubic inputs fall at {bicubic}")
    print(json.dumps({"scale": args.scale, "offset": offset, "slope": slope, "rms": rms, "rows": rows}))


if __name__ == "__main__":
    main()
