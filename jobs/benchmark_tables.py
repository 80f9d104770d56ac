"""Ray Job entry point: the Set5 / Set14 / BSD100 tables at x2, x3 and x4, by preset.

Every (set, scale, preset) is one ``zssr-batch run`` on the benchmark layout, joining the cluster
(``RAY_ADDRESS`` is set inside a Job); ``zssr_batch.tables`` writes ``<output>/BENCHMARKS.md`` and
``benchmarks.json``, the same table ``benchmarks/quality.py`` writes on one machine.

    python jobs/benchmark_tables.py --data /mnt/shared/data --output /mnt/shared/bench --presets paper gradual-x2
Extra arguments after ``--`` go to every ``zssr-batch run`` (e.g. ``-- --max-iters 100``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zssr_batch.cli import main as zssr_batch
from zssr_batch.tables import run_tables


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder holding Set5/, Set14/, BSD100/")
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14", "BSD100"])
    ap.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--presets", nargs="+", default=["paper"])
    args = ap.parse_args(argv)
    rows, worst = run_tables(zssr_batch, args.data, args.output, args.sets, args.scales, args.presets, extra)
    print((args.output / "BENCHMARKS.md").read_text())
    return worst


if __name__ == "__main__":
    from job_paths import refuse_relative

    refuse_relative(sys.argv[1:], "benchmark_tables.py")
    sys.exit(main())
