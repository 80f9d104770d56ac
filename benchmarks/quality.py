"""Paper-configuration quality on the benchmark sets, one process, no Ray (for a borrowed GPU).

    python benchmarks/quality.py --sets Set5 Set14 --scale 2 --preset paper --device cuda

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

from zssr_batch.config import resolve
from zssr_batch.published import markdown_table
from zssr_batch.worker import process_image

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None, help="first N images of each set")
    ap.add_argument("--max-iters", type=int, default=None)
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
            for f in files:
                gt = args.data / set_name / "HR" / (f.stem[: -len(f"x{args.scale}")] + ".png")
                rec = process_image(f, Path(tmp) / f.name, cfg, args.device, gt)
                recs.append(rec)
                print(f"{set_name} {f.stem}: psnr_y {rec['psnr_y']:.2f} (bicubic {rec['bicubic_psnr_y']:.2f}) "
                      f"{rec['iterations']} steps {rec['fit_seconds'] + rec['infer_seconds']:.1f} s", flush=True)
            wall = time.perf_counter() - t0
            row = {"set": set_name, "scale": args.scale, "images": len(recs),
                   "psnr_y": float(np.mean([r["psnr_y"] for r in recs])),
                   "ssim_y": float(np.mean([r["ssim_y"] for r in recs])),
                   "bicubic_psnr_y": float(np.mean([r["bicubic_psnr_y"] for r in recs])),
                   "seconds_per_image": wall / max(1, len(recs)),
                   "mean_iterations": float(np.mean([r["iterations"] for r in recs])),
                   "device": recs[0]["device"] if recs else args.device, "preset": args.preset}
            rows.append(row)
    print(markdown_table(rows))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
