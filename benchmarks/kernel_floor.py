"""Does the estimate follow the true kernel's width? KernelGAN's x2 estimate on each input of a
random-kernel set (x2 and x4) and on bicubic-downscaled inputs, against the width the truth asks
of it, beside a second internal criterion that has no GAN: patch recurrence across scales.

    python benchmarks/kernel_floor.py --limit 6 --steps 1000            # a CPU's taste (~15 min)
    python benchmarks/kernel_floor.py --limit 20 --no-gan --bicubic ../shared/data/Set5/LR_bicubic/X2 \
        ../shared/data/Set14/LR_bicubic/X2                              # the recurrence alone (~5 min)
    python benchmarks/kernel_floor.py --limit 100 --steps 3000 --device cuda

The x2 width an estimate should have: at x2 the true kernel's (``kernel_moments``); at x4 the
true kernel's over sqrt 5, as the x4 kernel made from an x2 one (``analytic_kernel``) is sqrt 5
times as wide; for a bicubic input (the same ground truths' bicubic x2 inputs, and those of
``--bicubic`` folders), the bicubic kernel's (0.85 px). Patch recurrence:
``engine.recurrence.recurrence_width``, the shrink at which the image's own patches recur best
(the ``real`` preset's check on an estimate). Prints a Markdown table, the correlation of each width with
the truth's, and one JSON line. Reads ../shared/data (or --hr and --bicubic).

With KernelGAN, it also scores each random-kernel input's kernels alone (``remade_psnr``: the input
remade from its ground truth with the kernel, PSNR-Y against the input), and prints the mean at x2
and x4 for each way of using the estimates: none, all, or only where the image measures at least
1.7, 1.9 or 2.1 px (``--kernel-trust-recurrence``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zssr_batch.engine.kernel_estimate import estimate_x2, failed
from zssr_batch.engine.kernels import analytic_kernel, bicubic_kernel, kernel_moments, load_kernel, remade_psnr
from zssr_batch.engine.recurrence import recurrence_width
from zssr_batch.files.degrade import degrade_random_kernels
from zssr_batch.files.images import load_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHECKS = (1.7, 1.9, 2.1)  # the recurrence checks compared (the ``real`` preset's is 1.9)


@dataclass(frozen=True)
class Input:
    label: str
    path: Path
    truth: float  # the x2 width its estimate should have
    scale: int = 2
    gt: Path | None = None  # its ground truth, where the true kernel is known (the random-kernel set)


def _inputs(args: argparse.Namespace) -> list[Input]:
    """Every input measured: the first ``limit`` ground truths through the blind recipe at x2 and x4,
    the same images' bicubic x2 inputs where the set has them (a pair: sharp, and blurred), and the
    ``--bicubic`` folders'."""
    out = []
    bicubic = kernel_moments(bicubic_kernel(2))[0]
    if args.limit:
        hr = args.out / "hr"
        hr.mkdir(parents=True, exist_ok=True)
        for p in sorted(args.hr.glob("*.png"))[:args.limit]:
            shutil.copy(p, hr / p.name)
        for s in (2, 4):
            for gt, lr in degrade_random_kernels(hr, args.out / "set", s, seed=0):
                true = load_kernel(args.out / "set" / "kernels" / f"X{s}" / f"{lr.stem}.npy")
                out.append(Input(f"x{s} {lr.stem}", lr, kernel_moments(true)[0] / (1 if s == 2 else 5 ** 0.5), s, gt))
        sharp = (args.hr.parent / "LR_bicubic" / "X2" / f"{p.stem}x2.png" for p in sorted(hr.glob("*.png")))
        out += [Input(f"bicubic {p.stem}", p, bicubic) for p in sharp if p.is_file()]
    for folder in args.bicubic:
        out += [Input(f"bicubic {p.stem}", p, bicubic) for p in sorted(folder.glob("*.png"))]
    return out


def _remade(image: torch.Tensor, gt: torch.Tensor, inp: Input, k2: np.ndarray | None) -> float:
    """How well the kernel (None: bicubic) explains the input: the input remade from its ground truth
    ``gt`` with it, PSNR-Y against the input (``remade_psnr``; the true kernel scores 90 dB or more)."""
    kernel = None if k2 is None else k2 if inp.scale == 2 else analytic_kernel(k2)
    return round(remade_psnr(image, gt, kernel, (inp.scale, inp.scale)), 2)


def _policies(rows: list[dict]) -> None:
    """Per scale, the mean remade PSNR-Y of the random-kernel inputs under each way of using the
    estimates: none (bicubic), all (a failed run falls back, as a run does), and only where the image
    measures at least so wide (``--kernel-trust-recurrence``)."""
    print("\n| kernel used | x2 | x4 |\n|---|---|---|")
    ways = {"bicubic": lambda r: r["remade_bicubic"],
            "every estimate (failed: bicubic)": lambda r: r["remade_bicubic"] if r["failed"] else r["remade_estimate"]}
    for cut in CHECKS:
        ways[f"estimate where the image measures >= {cut} px"] = (
            lambda r, cut=cut: r["remade_bicubic"] if r["failed"] or (r["recurrence"] or 0) < cut else r["remade_estimate"])
    for name, value in ways.items():
        means = [np.mean([value(r) for r in rows if r["scale"] == s] or [np.nan]) for s in (2, 4)]
        print(f"| {name} | " + " | ".join(f"{m:.2f}" for m in means) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hr", type=Path, default=DATA / "BSD100" / "HR", help="ground truths for the random-kernel set")
    ap.add_argument("--limit", type=int, default=6, help="how many of them (0: none)")
    ap.add_argument("--bicubic", type=Path, nargs="*", default=[], help="folders of more bicubic x2 inputs")
    ap.add_argument("--no-gan", action="store_true", help="the recurrence alone (seconds, not minutes, an input)")
    ap.add_argument("--steps", type=int, default=1000, help="KernelGAN steps (the authors: 3000)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("kernel-floor"), help="the set is made here")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)  # (KernelGAN's small convolutions: a second thread was slower here)
    rows = []
    print("| input | truth asks (px) | KernelGAN (px) | recurrence (px) |\n|---|---|---|---|")
    for inp in _inputs(args):
        color = torch.from_numpy(np.asarray(load_image(inp.path).color, dtype=np.float64))  # (C, H, W) in [0, 1]
        k2 = None if args.no_gan else estimate_x2(color.float(), args.steps, args.seed, args.device)
        why = None if k2 is None else failed(k2)
        width = None if k2 is None else round(kernel_moments(k2)[0], 3)
        row = {"input": inp.label, "scale": inp.scale, "truth": round(inp.truth, 3), "kernelgan": width, "failed": why,
               "recurrence": recurrence_width(color.to(args.device))}
        if inp.gt is not None and k2 is not None:
            gt = torch.from_numpy(np.asarray(load_image(inp.gt).color, dtype=np.float64))
            row.update(remade_bicubic=_remade(color, gt, inp, None), remade_estimate=_remade(color, gt, inp, k2))
        rows.append(row)
        gan = "-" if k2 is None else f"{row['kernelgan']:.2f}" + (" (failed)" if why else "")
        print(f"| {inp.label} | {inp.truth:.2f} | {gan} | {row['recurrence']:.2f} |", flush=True)
    kept = [r for r in rows if not r["failed"]]
    corr = {k: float(np.corrcoef([r["truth"] for r in kept], [r[k] for r in kept])[0, 1])
            if len(kept) > 2 and not (k == "kernelgan" and args.no_gan) else None for k in ("kernelgan", "recurrence")}
    print(f"\ncorrelation with the width the truth asks (kept estimates, {len(kept)} of {len(rows)}): "
          + ", ".join(f"{k} {v:+.2f}" if v is not None else f"{k} -" for k, v in corr.items()))
    if any("remade_estimate" in r for r in rows):
        _policies([r for r in rows if "remade_estimate" in r])
    print(json.dumps({"steps": args.steps, "device": args.device, "rows": rows, "correlation": corr}))


if __name__ == "__main__":
    main()
