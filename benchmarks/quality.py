"""Paper-configuration quality on the benchmark sets, one process, no Ray (for a borrowed GPU).

    python benchmarks/quality.py --sets Set5 Set14 --scale 2 --preset paper --device cuda
    python benchmarks/quality.py --sets Set5 Set14 --pack 19 --device cuda   # every image of a set in one pack

Prints a Markdown table (mean PSNR-Y / SSIM-Y, bicubic, the paper's figure,
seconds per image) and one JSON line per set. Reads ../shared/data (or --data).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zssr_batch.config import resolve
from zssr_batch.engine import pick_device
from zssr_batch.images import load_image
from zssr_batch.metrics import score
from zssr_batch.packed import Job, PackOptions, fit_packed
from zssr_batch.published import markdown_table
from zssr_batch.resize import imresize
from zssr_batch.worker import process_image

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def packed_records(files: list[Path], gts: dict[str, Path], cfg, args) -> list[dict]:
    """Scores of the set fitted in packs of ``args.pack`` (the fast path), in file order."""
    device = pick_device(args.device)
    lrs = {f.stem: torch.from_numpy(load_image(f).color) for f in files}
    jobs = (Job(name, lr, cfg) for name, lr in lrs.items())
    options = PackOptions(bf16=args.precision == "bf16")
    out = dict(fit_packed(jobs, min(args.pack, len(files)), device, options=options))
    recs = []
    for f in files:
        hr, lr, res = load_image(gts[f.stem]).color, lrs[f.stem], out[f.stem]
        bicubic = imresize(lr.double(), cfg.scale, res.output.shape[-2:]).float()
        rec = score(res.output, hr, args.scale)
        rec.update({"bicubic_" + k: v for k, v in score(bicubic, hr, args.scale).items()})
        recs.append({**rec, "iterations": res.iterations, "device": str(device)})
    return recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None, help="first N images of each set")
    ap.add_argument("--max-iters", type=int, default=None)
    ap.add_argument("--pack", type=int, default=0, help="fit K images at once (packed); 0 = one at a time")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="packed networks on a GPU")
    args = ap.parse_args()
    overrides = {"scale": args.scale}
    if args.max_iters is not None:
        overrides["max_iters"] = args.max_iters
    cfg = resolve(args.preset, overrides=overrides)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for set_name in args.sets:
            lr_dir = args.data / set_name / "LR_bicubic" / f"X{args.scale}"
            files = sorted(lr_dir.glob("*.png"))[: args.limit]
            recs = []
            t0 = time.perf_counter()
            gts = {f.stem: args.data / set_name / "HR" / (f.stem[: -len(f"x{args.scale}")] + ".png") for f in files}
            if args.pack:
                recs = packed_records(files, gts, cfg, args)
            for f in files if not args.pack else []:
                rec = process_image(f, Path(tmp) / f.name, cfg, args.device, gts[f.stem])
                recs.append(rec)
            for f, rec in zip(files, recs):
                print(f"{set_name} {f.stem}: psnr_y {rec['psnr_y']:.2f} (bicubic {rec['bicubic_psnr_y']:.2f}) "
                      f"{rec['iterations']} steps", flush=True)
            wall = time.perf_counter() - t0
            row = {"set": set_name, "scale": args.scale, "images": len(recs),
                   "psnr_y": float(np.mean([r["psnr_y"] for r in recs])),
                   "ssim_y": float(np.mean([r["ssim_y"] for r in recs])),
                   "bicubic_psnr_y": float(np.mean([r["bicubic_psnr_y"] for r in recs])),
                   "seconds_per_image": wall / max(1, len(recs)),
                   "mean_iterations": float(np.mean([r["iterations"] for r in recs])),
                   "device": recs[0]["device"] if recs else args.device, "preset": args.preset,
                   "pack": args.pack, "precision": args.precision}
            rows.append(row)
    print(markdown_table(rows))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
