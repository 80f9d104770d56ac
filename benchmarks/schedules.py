"""Which gradual schedule to ship for x3 and x4: candidate scale-step schedules scored on benchmark
images at a reduced budget (a CPU screen; the chosen ones are then measured at full budget on a GPU
with benchmarks/quality.py).

    python benchmarks/schedules.py --scale 4 --sets Set5 --max-iters 60 --crop 48 --limit 3

Each candidate is one ``FitConfig`` (``--scale-steps``, back-projections rising from 6 to 12 over the
steps as the authors' X2_GRADUAL_IDEAL_CONF does); every candidate fits the same images with the same
seed and budget per step, so the table compares schedules, not budgets. Prints a Markdown table and
one JSON line per candidate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from zssr_batch.config import GRADUAL_X2, Scale, resolve
from zssr_batch.files.sources import ScanOptions, scan_folder
from zssr_batch.run.item import process_image

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _times(steps: tuple[Scale, ...], k: float) -> tuple[Scale, ...]:
    return tuple((a * k, b * k) for a, b in steps)


# x2's six steps are (1, 1.5) ... (2, 2): anisotropic steps between isotropic ones, each a factor of at
# most 1.5 on one axis. The natural ways to reach 3 and 4 from them:
CANDIDATES: dict[int, dict[str, tuple[Scale, ...]]] = {
    3: {
        "one jump": (),
        "x1.5 then x3": ((1.5, 1.5), (3.0, 3.0)),
        "x2 schedule, then to 3 the same way": GRADUAL_X2 + ((2.0, 3.0), (3.0, 2.0), (3.0, 3.0)),
        "x2 schedule's ratios scaled to 3": _times(GRADUAL_X2, 1.5),
    },
    4: {
        "one jump": (),
        "x2 then x4": ((2.0, 2.0), (4.0, 4.0)),
        "x2 schedule twice (x2, then its steps times 2)": GRADUAL_X2 + _times(GRADUAL_X2, 2.0),
        "x2 then 4 through anisotropic steps": ((2.0, 2.0), (2.0, 3.0), (3.0, 2.0), (3.0, 3.0), (3.0, 4.0),
                                                 (4.0, 3.0), (4.0, 4.0)),
    },
}


def back_projections(n: int) -> tuple[int, ...]:
    """6 at the first step rising to 12 at the last, as X2_GRADUAL_IDEAL_CONF's (6, 6, 8, 10, 10, 12)."""
    return (10,) if n == 0 else tuple(int(round(6 + 6 * i / max(1, n - 1))) for i in range(n))


def config_for(scale: int, steps: tuple[Scale, ...], max_iters: int, crop: int):
    overrides = {"scale": (float(scale), float(scale)), "max_iters": max_iters, "crop": crop,
                 "back_projection_iters": back_projections(len(steps))}
    if steps:
        overrides["scale_steps"] = steps
    return resolve("paper", overrides=overrides)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--scale", type=int, choices=sorted(CANDIDATES), required=True)
    ap.add_argument("--sets", nargs="+", default=["Set5"])
    ap.add_argument("--limit", type=int, default=None, help="first N images of each set")
    ap.add_argument("--max-iters", type=int, default=60, help="steps per scale step (reduced budget)")
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", nargs="+", default=None, help="candidate names to run (default all)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        items = []
        for set_name in args.sets:
            scan = ScanOptions(output_dir=Path(tmp) / set_name, scale=args.scale)
            items += list(scan_folder(args.data / set_name, scan))[: args.limit]
        for name, steps in CANDIDATES[args.scale].items():
            if args.only and name not in args.only:
                continue
            cfg = config_for(args.scale, steps, args.max_iters, args.crop)
            t0 = time.perf_counter()
            recs = [process_image(it.input, it.output, cfg, args.device, it.gt) for it in items]
            bad = [r["error"] for r in recs if r.get("status") == "failed"]
            if bad:
                raise SystemExit("; ".join(bad))
            row = {"scale": args.scale, "candidate": name, "steps": [list(s) for s in steps],
                   "back_projection_iters": list(cfg.back_projection_iters), "images": len(recs),
                   "sets": args.sets, "max_iters": args.max_iters, "crop": args.crop,
                   "psnr_y": float(np.mean([r["psnr_y"] for r in recs])),
                   "ssim_y": float(np.mean([r["ssim_y"] for r in recs])),
                   "bicubic_psnr_y": float(np.mean([r["bicubic_psnr_y"] for r in recs])),
                   "per_image_psnr_y": {Path(r["input"]).stem: round(r["psnr_y"], 3) for r in recs},
                   "seconds_per_image": (time.perf_counter() - t0) / max(1, len(recs)),
                   "device": recs[0]["device"] if recs else args.device}
            rows.append(row)
            print(f"{name}: PSNR-Y {row['psnr_y']:.3f} (bicubic {row['bicubic_psnr_y']:.3f}), "
                  f"{row['seconds_per_image']:.0f} s/image", flush=True)
    print("| x | schedule | steps | PSNR-Y | SSIM-Y | gain over bicubic | s / image |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scale']} | {r['candidate']} | {max(1, len(r['steps']))} | {r['psnr_y']:.3f} | "
              f"{r['ssim_y']:.4f} | {r['psnr_y'] - r['bicubic_psnr_y']:+.3f} | {r['seconds_per_image']:.0f} |")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
