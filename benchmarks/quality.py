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

from zssr_batch.config import resolve
from zssr_batch.report.published import markdown_table
from zssr_batch.files.sources import ScanOptions, scan_folder
from zssr_batch.run.batch import run_packed
from zssr_batch.run.item import process_image

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
            # the benchmark layout pairs LR_bicubic/X<s>/NAMEx<s>.png with HR/NAME.png, as `run` does
            scan = ScanOptions(output_dir=Path(tmp) / set_name, scale=args.scale)
            items = list(scan_folder(args.data / set_name, scan))[: args.limit]
            files = [Path(it.input) for it in items]
            t0 = time.perf_counter()
            if args.pack:  # the fast path, written and scored as `run` writes and scores it
                done = dict(run_packed(items, [cfg] * len(items), args.device, pack=min(args.pack, len(items)),
                                       precision=args.precision))
                recs = [done[i] for i in range(len(items))]
            else:
                recs = [process_image(it.input, it.output, cfg, args.device, it.gt) for it in items]
            failed = [r["error"] for r in recs if r.get("status") == "failed"]
            if failed:
                raise SystemExit("; ".join(failed))
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
