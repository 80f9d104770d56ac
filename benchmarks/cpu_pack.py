"""What a pack costs per image on this CPU, by crop and pack size: the measurements behind
``pack_size.cpu_pack_size``.

    python benchmarks/cpu_pack.py [--crops 40 48 56 64 96 128] [--rounds 3]

Times a full-pack training step of the paper network (``pack_size.time_pack_step``: pairs,
forward, backward, Adam; synthetic images) at each crop for one fit, packs of 2 and 4 with
their thin ends padded, and 4 unpadded, in interleaved rounds (a shared 2-core machine drifts
by 10-30% over minutes), and prints the best and the median ms per image-step of each.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from zssr_batch.config import resolve
from zssr_batch.pack.size import time_pack_step
from zssr_batch.pack.options import PackOptions

WAYS = ((1, False), (2, True), (4, True), (4, False))  # (pack size, thin ends padded)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, nargs="+", default=[40, 48, 56, 64, 96, 128])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ms: dict[tuple[int, int, bool], list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for crop in args.crops:
            cfg = resolve("paper", overrides={"crop": crop})
            for k, pad in WAYS:
                step = time_pack_step(cfg, "cpu", k, PackOptions(pad_thin=pad), repeats=4 if crop < 100 else 2)
                ms[(crop, k, pad)].append(step / k)
    rows = []
    print("crop | " + " | ".join(f"{k}{' padded' if p else ''}" for k, p in WAYS) + "   (ms per image-step: best / median)")
    for crop in args.crops:
        cells = []
        for k, pad in WAYS:
            v = sorted(ms[(crop, k, pad)])
            cells.append(f"{v[0]:.1f} / {v[len(v) // 2]:.1f}")
            rows.append({"crop": crop, "pack": k, "pad_thin": pad, "best_ms": round(v[0], 2),
                         "median_ms": round(v[len(v) // 2], 2)})
        print(f"{crop} | " + " | ".join(cells), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
