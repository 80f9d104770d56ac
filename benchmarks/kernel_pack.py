"""Kernel estimates one by one against K at a time in a pack (``pack.kernel_estimates``): seconds
per image, and how far the packed kernels are from the lone ones (float32: another draw of the
same GAN, not the same bits; docs/BENCHMARKS.md).

    python benchmarks/kernel_pack.py --device cuda --images 32 --pack 16 --steps 3000   # a GPU
    python benchmarks/kernel_pack.py --images 4 --pack 4 --steps 200                   # a CPU's taste

The images are BSD100 LR_bicubic x2 inputs (../shared/data, or --data), each cut to 96x96 unless
--side says otherwise. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zssr_batch.engine.kernel_estimate import estimate_x2
from zssr_batch.engine.kernels import kernel_error
from zssr_batch.pack.kernel_estimates import EstimateJob, estimate_packed

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--pack", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--side", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on a CPU")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    paths = sorted((args.data / "BSD100" / "LR_bicubic" / "X2").glob("*.png"))[: args.images]
    images = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)[: args.side, : args.side]
                               / 255).permute(2, 0, 1).contiguous() for p in paths]
    t0 = time.perf_counter()
    alone = [estimate_x2(im, args.steps, seed=i, device=device) for i, im in enumerate(images)]
    _sync(device)
    t1 = time.perf_counter()
    jobs = [EstimateJob(i, im, args.steps, seed=i) for i, im in enumerate(images)]
    packed = {key: k for key, k, _ in estimate_packed(jobs, args.pack, device)}
    _sync(device)
    t2 = time.perf_counter()
    apart = [kernel_error(packed[i], alone[i]) for i in range(len(images))]
    print(json.dumps({"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      "torch": torch.__version__, "images": len(images), "pack": args.pack, "steps": args.steps,
                      "side": args.side, "alone_s_per_image": round((t1 - t0) / len(images), 3),
                      "packed_s_per_image": round((t2 - t1) / len(images), 3),
                      "speedup": round((t1 - t0) / (t2 - t1), 2),
                      "packed_vs_alone_kernel_error_mean": round(float(np.mean(apart)), 4)}))


if __name__ == "__main__":
    main()
