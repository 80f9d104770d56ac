"""Images per hour: one fit at a time (the baseline) vs packed fits, on the same images, in one process.

    python benchmarks/throughput.py --set ../shared/data/BSD100 --scale 2 --preset paper --device cuda
    python benchmarks/throughput.py --device cpu --tiny          # about a minute on a 2-core CPU

Prints a table, then one JSON line with device, torch, images, both rates, the
speedup and both mean PSNR-Y values (the fast path must not cost quality).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from zssr_batch.config import resolve
from zssr_batch.engine import pick_device, super_resolve
from zssr_batch.images import load_image
from zssr_batch.metrics import score
from zssr_batch.packed import Job, auto_pack_size, fit_packed

DEFAULT_SET = Path(__file__).resolve().parents[2] / "shared" / "data" / "BSD100"


def load_set(folder: Path, scale: int, limit: int | None, side: int | None) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    lr_dir = folder / "LR_bicubic" / f"X{scale}"
    out = []
    for f in sorted(lr_dir.glob("*.png"))[:limit]:
        lr = torch.from_numpy(load_image(f).color)
        hr = load_image(folder / "HR" / (f.stem[: -len(f"x{scale}")] + ".png")).color
        if side:  # tiny mode: a centre crop, and the matching ground truth
            h, w = lr.shape[-2:]
            y, x = (h - side) // 2, (w - side) // 2
            lr = lr[:, y:y + side, x:x + side]
            hr = hr[:, y * scale:(y + side) * scale, x * scale:(x + side) * scale]
        out.append((f.stem, lr, hr))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", type=Path, default=DEFAULT_SET)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--pack", type=int, default=None, help="fits per pack (default: from memory)")
    ap.add_argument("--tiny", action="store_true", help="4 centre crops of 48x48, 40 steps of 24x24 crops")
    args = ap.parse_args()
    device = pick_device(args.device)
    overrides: dict = {"scale": args.scale}
    limit, side = args.limit, None
    if args.tiny:
        overrides.update(crop=24, max_iters=40, width=32)
        limit, side = limit or 4, 48
    cfg = resolve(args.preset, overrides=overrides)
    images = load_set(args.set, args.scale, limit, side)
    k = args.pack or min(auto_pack_size(cfg, device), len(images))

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return res, time.perf_counter() - t0

    base, base_s = timed(lambda: {n: super_resolve(lr, cfg, device) for n, lr, _ in images})
    fast, fast_s = timed(lambda: dict(fit_packed((Job(n, lr, cfg) for n, lr, _ in images), k, device)))
    border = args.scale
    base_psnr = float(np.mean([score(base[n].output, hr, border)["psnr_y"] for n, _, hr in images]))
    fast_psnr = float(np.mean([score(fast[n].output, hr, border)["psnr_y"] for n, _, hr in images]))
    n = len(images)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "images": n, "preset": args.preset, "pack": k,
        "baseline_images_per_hour": round(3600 * n / base_s, 1), "fast_images_per_hour": round(3600 * n / fast_s, 1),
        "speedup": round(base_s / fast_s, 3), "baseline_psnr_y": round(base_psnr, 3), "fast_psnr_y": round(fast_psnr, 3),
        "baseline_mean_iterations": float(np.mean([r.iterations for r in base.values()])),
        "fast_mean_iterations": float(np.mean([r.iterations for r in fast.values()])),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"| path | images | seconds | images / hour | mean PSNR-Y |\n|---|---|---|---|---|\n"
          f"| one fit at a time | {n} | {base_s:.1f} | {result['baseline_images_per_hour']:.0f} | {base_psnr:.3f} |\n"
          f"| packed x{k} | {n} | {fast_s:.1f} | {result['fast_images_per_hour']:.0f} | {fast_psnr:.3f} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
