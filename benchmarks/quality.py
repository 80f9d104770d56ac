"""The quality table: sets x scales x presets, each a whole ``zssr-batch run`` (for a borrowed GPU).

    python benchmarks/quality.py --output /tmp/bench                                  # paper + gradual, x2/x3/x4
    python benchmarks/quality.py --output /tmp/bench --sets Set5 --scales 2 --presets paper -- --max-iters 100

Writes BENCHMARKS.md (PSNR-Y / SSIM-Y, bicubic and the published ZSSR figure beside each, mean steps,
images per hour end to end) and benchmarks.json into --output, and prints the table. Reads
../shared/data (or --data). Arguments after ``--`` go to every run. ``zssr_batch.tables`` does the
work; ``jobs/benchmark_tables.py`` is the same on a Ray cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zssr_batch.cli import main as zssr_batch
from zssr_batch.config import PRESETS
from zssr_batch.tables import run_tables

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--output", type=Path, required=True, help="one run folder per set, scale and preset go here")
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14", "BSD100"])
    ap.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--presets", nargs="+", default=["paper"] + [p for p in PRESETS if p.startswith("gradual")])
    args = ap.parse_args(argv)
    rows, worst = run_tables(zssr_batch, args.data, args.output, args.sets, args.scales, args.presets, extra)
    print((args.output / "BENCHMARKS.md").read_text())
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
