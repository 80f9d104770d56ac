"""Ray Job entry point: regenerate the Set5 / Set14 / BSD100 benchmark tables.

For every set and scale it runs ``zssr-batch run`` on the benchmark layout
(``<data>/<Set>/LR_bicubic/X<s>`` against ``<Set>/HR``), then writes
``<output>/BENCHMARKS.md`` beside each run's report, with the published figures.

    python jobs/benchmark_tables.py --data /mnt/shared/data --output /mnt/shared/bench --preset paper
Extra arguments after ``--`` go to every ``zssr-batch run`` (e.g. ``-- --max-iters 100``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from zssr_batch.cli import main as zssr_main
from zssr_batch.files.images import write_atomic
from zssr_batch.report.published import markdown_table


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder holding Set5/, Set14/, BSD100/")
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14", "BSD100"])
    ap.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--preset", default="paper")
    args = ap.parse_args(argv)
    rows, worst = [], 0
    for set_name in args.sets:
        for s in args.scales:
            out = args.output / set_name / f"x{s}"
            code = zssr_main(["run", "--input", str(args.data / set_name), "--output", str(out), "--scale", str(s),
                              "--preset", args.preset, "--no-progress", *extra])
            worst = max(worst, code)
            df = pd.read_csv(out / "report.csv")
            ok = df[df["status"] == "ok"]
            rows.append({"set": set_name, "scale": s, "images": len(ok), "psnr_y": ok["psnr_y"].mean(),
                         "ssim_y": ok["ssim_y"].mean(), "bicubic_psnr_y": ok["bicubic_psnr_y"].mean(),
                         "seconds_per_image": (ok["fit_seconds"] + ok["infer_seconds"]).mean()})
    table = markdown_table(rows)
    write_atomic(args.output / "BENCHMARKS.md", (f"Preset `{args.preset}`\n\n" + table + "\n").encode())
    print(table)
    return worst


if __name__ == "__main__":
    from job_paths import refuse_relative

    refuse_relative(sys.argv[1:], "benchmark_tables.py")
    sys.exit(main())
