"""Blind SR on a BSD100RK-style set (issue 22): ZSSR assuming bicubic, with each image's estimated
kernel, and with its true kernel, on the same random-kernel inputs.

    python benchmarks/blind.py                      # the whole thing: BSD100, x2 and x4, blind preset (a GPU)
    python benchmarks/blind.py --limit 3 --max-iters 300 --crop 64 --gpus 0   # a CPU's taste
    python benchmarks/blind.py --kernel-estimator kernelgan --gpus 1          # the same with KernelGAN

The set is made as a user makes one: ``zssr-batch degrade HR --random-kernels --seed 0`` (the authors'
BlindSR_dataset_generator recipe), at each scale. Each way is one ``zssr-batch run`` over the set with
the same settings but the kernel: ``--kernel bicubic`` (assume bicubic, whatever the set's kernels),
``--kernel estimate`` (each image's kernel estimated first: by its patch recurrence, the ``blind``
preset's, or with ``--kernel-estimator kernelgan`` by KernelGAN), and no ``--kernel`` (the set's
own kernels).
Prints a Markdown table per scale (mean PSNR-Y / SSIM-Y, the estimate's gain over bicubic and the
share of the bicubic-to-true gap it closes, mean kernel error and remade-input PSNR, seconds per
image) and one JSON line per scale and way. Reads ../shared/data (or --hr).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from zssr_batch.report.row import KERNEL
from zssr_batch.report.table import read_report

DEFAULT_HR = Path(__file__).resolve().parents[2] / "shared" / "data" / "BSD100" / "HR"
WAYS = {"bicubic": ["--kernel", "bicubic"], "estimated": ["--kernel", "estimate"], "true": []}


def zssr_batch(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "zssr_batch", *args], check=True)


def ground_truths(src: Path, dst: Path, limit: int | None, crop: int | None) -> Path:
    """The first ``limit`` images of ``src`` (each cut to its central ``crop`` square, if asked) in ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob("*.png"))[:limit]:
        im = Image.open(p)
        if crop:
            w, h = im.size
            side = min(crop, w, h)
            im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        im.save(dst / p.name)
    return dst


def summary(out: Path) -> dict:
    df = read_report(out / "report.csv", ["psnr_y", "ssim_y", "fit_seconds", "infer_seconds", *KERNEL])
    ok = df[df["status"] == "ok"]
    return {"images": len(ok), "failed": int((df["status"] != "ok").sum()),
            **{c: float(ok[c].mean()) for c in ("psnr_y", "ssim_y", "kernel_error", "kernel_lr_psnr",
                                                "kernel_width", "fit_seconds", "infer_seconds", "kernel_seconds")},
            "sources": ok["kernel_source"].value_counts().to_dict(),
            "per_image": dict(zip(ok["rel"], ok["psnr_y"].round(2)))}


def table(scale: int, res: dict[str, dict]) -> str:
    b, e, t = (res[w]["psnr_y"] for w in ("bicubic", "estimated", "true"))
    closes = f", closing {(e - b) / (t - b):.0%} of the gap to the true kernel" if e > b and t > b else ""
    lines = [f"x{scale}: estimate {e - b:+.2f} dB over bicubic{closes}; true kernel {t - b:+.2f} dB", "",
             "| kernel | images | PSNR-Y | SSIM-Y | kernel error | remade input (dB) | kernel width | "
             "estimate (s) | fit (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for way, r in res.items():
        cells = [f"{r['psnr_y']:.2f}", f"{r['ssim_y']:.4f}", f"{r['kernel_error']:.3f}", f"{r['kernel_lr_psnr']:.2f}",
                 f"{r['kernel_width']:.2f}", "-" if np.isnan(r["kernel_seconds"]) else f"{r['kernel_seconds']:.0f}",
                 f"{r['fit_seconds']:.0f}"]
        lines.append(f"| {way} | {r['images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hr", type=Path, default=DEFAULT_HR, help="the ground truths (default: BSD100/HR)")
    ap.add_argument("--out", type=Path, default=Path("blind-bench"), help="the set and the runs go here")
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--limit", type=int, default=None, help="the first N ground truths")
    ap.add_argument("--hr-crop", type=int, default=None, help="cut each ground truth to its central square")
    ap.add_argument("--seed", type=int, default=0, help="degrade --random-kernels --seed")
    ap.add_argument("--preset", default="blind", help="the same settings for every way, but the kernel")
    ap.add_argument("--max-iters", type=int, default=None)
    ap.add_argument("--crop", type=int, default=None)
    ap.add_argument("--kernel-steps", type=int, default=None)
    ap.add_argument("--kernel-restarts", type=int, default=None, help="KernelGAN runs an image (run --kernel-restarts)")
    ap.add_argument("--kernel-estimator", default=None, help="run --kernel-estimator: kernelgan or recurrence")
    ap.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS),
                    help="the kernels to score with (default: all three; the table needs all three)")
    ap.add_argument("--gpus", default=None, help="run --gpus (0: CPU workers)")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    hr = ground_truths(args.hr, args.out / "hr", args.limit, args.hr_crop)
    common = ["--preset", args.preset, "--no-progress"]
    for flag, value in (("--max-iters", args.max_iters), ("--crop", args.crop),
                        ("--kernel-steps", args.kernel_steps), ("--kernel-restarts", args.kernel_restarts),
                        ("--kernel-estimator", args.kernel_estimator),
                        ("--gpus", args.gpus)):
        if value is not None:
            common += [flag, str(value)]
    results = {}
    for s in args.scales:
        bench = args.out / "set"
        zssr_batch("degrade", str(hr), "-o", str(bench), "--scale", str(s), "--random-kernels",
                   "--seed", str(args.seed))
        results[s] = {}
        for way in args.ways:
            flags = WAYS[way]
            out = args.out / f"x{s}_{way}"
            zssr_batch("run", "--input", str(bench), "--scale", str(s), "--output", str(out), *common, *flags)
            results[s][way] = summary(out)
            print(json.dumps({"scale": s, "kernel": way, "preset": args.preset, "max_iters": args.max_iters,
                              "crop": args.crop, "kernel_steps": args.kernel_steps,
                              "kernel_restarts": args.kernel_restarts,
                              "kernel_estimator": args.kernel_estimator, **results[s][way]}), flush=True)
    for s, res in results.items():
        if set(res) == set(WAYS):
            print(table(s, res), "\n")


if __name__ == "__main__":
    main()
