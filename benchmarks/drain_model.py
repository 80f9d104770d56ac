"""How long a pack trains a set of images, by pack size and compaction rule, from measured figures.

    python benchmarks/drain_model.py                       # the H200 figures of docs/BENCHMARKS.md
    python benchmarks/drain_model.py --steps-json throughput.json --step-ms 32:7.72 100:26.23

A pack's time is the sum of its step times, and a step costs what a full pack of
its current size costs (finished slots ride along masked in the recorded step).
This replays ``pack.loop.fit_packed``'s schedule: slots refill while images remain,
then the draining pack compacts once its live slots are at most a fraction of its
positions, to the next of ``COMPACT_SIZES`` up, paying a re-recording each time. Step times between the measured pack
sizes are interpolated linearly; below the smallest measured one, a step costs
the same per slot but never under ``--floor-ms`` (a replay of a few hundred
kernels). Inference and host work are left out: it models the training loop only.

With ``--calls``, the images come in actor calls as ``zssr-batch run`` sends them to one GPU
(``auto``: ``dispatch.call_size``; a number: calls of that size), each call its own pack that
drains at its end:

    python benchmarks/drain_model.py --steps-json run1.json --step-ms 16:3.6 32:5.9 64:10.9 100:16.4 \
        --images 10000 --packs 100 --rules 0.9 --calls 256 auto
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from zssr_batch.pack.options import COMPACT_SIZES

# Steps the paper preset's learning-rate rule gave Set5 and Set14 x2 on an H200 (2026-11-26, run 1,
# docs/gpu-logs/2026-11-26-h200-run1/quality.log); stand-ins until a run records BSD100's own.
SET5_SET14_STEPS = [1140, 2100, 2460, 1680, 2040, 2580, 1260, 1860, 1800, 2460, 2100, 2340, 1320, 2220, 1440,
                    2400, 2040, 1860, 1260]


def step_ms(k: int, measured: dict[int, float], floor: float) -> float:
    ks = sorted(measured)
    if k <= ks[0]:
        return max(floor, measured[ks[0]] * k / ks[0])
    if k >= ks[-1]:
        return measured[ks[-1]] * k / ks[-1]
    return float(np.interp(k, ks, [measured[x] for x in ks]))


def train_seconds(steps: list[int], k: int, compact_below: float, measured: dict[int, float],
                  record_s: float, floor: float) -> tuple[float, float, int]:
    """(seconds, share of slot-steps that trained a live image, compactions) for images in this order."""
    k = min(k, len(steps))  # fit_packed never makes a pack larger than its images
    queue, slots, size = list(steps), [], k
    seconds, computed, compactions = 0.0, 0, 0
    while queue or slots:
        while queue and len(slots) < k:
            slots.append(queue.pop(0))
        to = next((n for n in COMPACT_SIZES if n >= len(slots)), len(slots))
        if not queue and to < size and len(slots) <= size * compact_below:
            size, compactions, seconds = to, compactions + 1, seconds + record_s
        seconds += step_ms(size, measured, floor) / 1000
        computed += size
        slots = [s - 1 for s in slots if s > 1]
    return seconds, sum(steps) / computed, compactions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-json", type=Path, help="a throughput.py JSON line; its first variant's per_image_steps")
    ap.add_argument("--images", type=int, default=100, help="images drawn (with replacement) from the step counts")
    ap.add_argument("--step-ms", nargs="+", default=["32:7.72", "100:26.23"],
                    help="K:ms of a full-pack step (gpu_check.py's probe; default: bf16 graph, H200, 2026-11-26)")
    ap.add_argument("--record-s", type=float, default=0.15, help="seconds to record the step again")
    ap.add_argument("--floor-ms", type=float, default=1.5)
    ap.add_argument("--packs", type=int, nargs="+", default=[16, 32, 64, 100, 128])
    ap.add_argument("--rules", type=float, nargs="+", default=[0.75, 0.9],
                    help="compact once the live slots are at most this share of the positions (PackOptions)")
    ap.add_argument("--calls", nargs="+", default=["1"],
                    help="how the images arrive: 'auto' (run's call sizes on one GPU), N per call, or 1 = all at once")
    args = ap.parse_args()
    steps = SET5_SET14_STEPS
    if args.steps_json:
        line = json.loads(args.steps_json.read_text().strip().splitlines()[-1])
        steps = list(next(iter(line["variants"].values()))["per_image_steps"].values())
    measured = {int(a): float(b) for a, b in (x.split(":") for x in args.step_ms)}
    drawn = list(np.random.default_rng(0).choice(steps, args.images))
    print(f"{args.images} images, mean {np.mean(drawn):.0f} steps; step ms {measured}")
    print("| calls | pack | compact at | training s | images / hour (training only) | slot use | compactions |")
    print("|---|---|---|---|---|---|---|")
    for calls in args.calls:
        sizes = call_sizes(args.images, calls)
        for k in args.packs:
            for rule in args.rules:
                secs = used = n = 0.0
                at = 0
                for size in sizes:  # each call its own pack, draining at its end
                    s, use, c = train_seconds(drawn[at:at + size], k, rule, measured, args.record_s, args.floor_ms)
                    secs, used, n, at = secs + s, used + use * size, n + c, at + size
                label = "one" if len(sizes) == 1 else f"{len(sizes)} ({calls})"
                print(f"| {label} | {k} | {rule:.2f} | {secs:.1f} | {3600 * args.images / secs:.0f} | "
                      f"{used / args.images:.2f} | {n:.0f} |")


def call_sizes(images: int, how: str) -> list[int]:
    """The calls one GPU's actor gets: ``dispatch.call_size``'s ('auto'), or a fixed size (1: one call)."""
    from zssr_batch.run.dispatch import GPU_CALL, call_size

    sizes, left = [], images
    while left:
        size = call_size(left, 1, *GPU_CALL) if how == "auto" else (images if how == "1" else int(how))
        sizes.append(min(left, size))
        left -= sizes[-1]
    return sizes


if __name__ == "__main__":
    main()
