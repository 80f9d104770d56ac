"""Benchmark tables: every set x scale x preset through ``zssr-batch run``, end to end (decode, Ray,
outputs written, scores, report), each line beside bicubic and the published ZSSR figure.

``benchmarks/quality.py`` runs it on one machine and ``jobs/benchmark_tables.py`` as a Ray Job on a
cluster; both write the same ``BENCHMARKS.md`` and ``benchmarks.json`` into the output folder.
A gradual preset walks fixed steps to its own scale: it is run at that scale only.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from .config import resolve
from .files.images import write_atomic
from .report.published import BICUBIC, zssr_published


def preset_scales(preset: str, scales: Sequence[int]) -> list[int]:
    """The scales of ``scales`` that ``preset`` can run: all for a one-jump preset, its own for a
    gradual one."""
    cfg = resolve(preset)
    if not cfg.scale_steps:
        return list(scales)
    own = cfg.scale[0]
    return [s for s in scales if s == own and cfg.scale[0] == cfg.scale[1]]


def table_row(report_csv: Path, set_name: str, scale: int, preset: str, wall_s: float) -> dict[str, Any]:
    """One line of the table from a run's report.csv and the run's wall time."""
    df = pd.read_csv(report_csv)
    ok = df[df["status"] == "ok"]
    published, verified = zssr_published(set_name, scale)
    psnr = float(ok["psnr_y"].mean()) if len(ok) else math.nan
    return {"set": set_name, "scale": scale, "preset": preset, "images": int(len(ok)),
            "failed": int(len(df) - len(ok)), "psnr_y": psnr, "ssim_y": float(ok["ssim_y"].mean()),
            "bicubic_psnr_y": float(ok["bicubic_psnr_y"].mean()), "bicubic_ssim_y": float(ok["bicubic_ssim_y"].mean()),
            "bicubic_published": BICUBIC.get((set_name, scale)), "zssr_published": published,
            "zssr_published_verified": verified,
            "vs_published": psnr - published if published is not None else None,
            "mean_steps": float(ok["iterations"].mean()) if len(ok) else math.nan,
            "images_per_hour": len(ok) / wall_s * 3600 if wall_s > 0 else math.nan, "wall_s": wall_s,
            "device": ",".join(sorted(set(ok["device"].dropna().astype(str)))) if len(ok) else ""}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table: PSNR-Y and SSIM-Y, bicubic (ours / published), ZSSR published ('?': second hand,
    unverified), our difference from it, mean steps and images per hour end to end."""
    lines = ["| set | scale | preset | images | PSNR-Y | SSIM-Y | bicubic PSNR-Y (ours / published) | "
             "ZSSR published | vs published | mean steps | images / hour |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pub = r["zssr_published"]
        shown_pub = "-" if pub is None else f"{pub:.2f}" + ("" if r["zssr_published_verified"] else "?")
        diff = "-" if r["vs_published"] is None else f"{r['vs_published']:+.2f}"
        bic_pub = "-" if r["bicubic_published"] is None else f"{r['bicubic_published']:.2f}"
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(f"| {r['set']} | x{r['scale']} | {r['preset']} | {r['images']}{failed} | {r['psnr_y']:.2f} | "
                     f"{r['ssim_y']:.4f} | {r['bicubic_psnr_y']:.2f} / {bic_pub} | {shown_pub} | {diff} | "
                     f"{r['mean_steps']:.0f} | {r['images_per_hour']:,.0f} |")
    return "\n".join(lines)


def run_tables(run: Callable[[list[str]], int], data: Path, output: Path, sets: Sequence[str],
               scales: Sequence[int], presets: Sequence[str], extra: Sequence[str] = (),
               say: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], int]:
    """Run every (set, scale, preset) with ``run`` (``zssr-batch``'s ``main``) into
    ``output/<set>/x<scale>/<preset>/``, then write BENCHMARKS.md and benchmarks.json into ``output``;
    returns (the rows, the worst exit code). A run already done is resumed, so its images/hour is
    not a measurement: pass ``--overwrite`` in ``extra`` to time it again."""
    rows, worst = [], 0
    for set_name in sets:
        for preset in presets:
            for s in preset_scales(preset, scales):
                out = output / set_name / f"x{s}" / preset
                t0 = time.perf_counter()
                scale = [] if resolve(preset).scale_steps else ["--scale", str(s)]  # (gradual: its own)
                code = run(["run", "--input", str(data / set_name), "--output", str(out), *scale,
                            "--preset", preset, "--no-progress", *extra])
                wall = time.perf_counter() - t0
                worst = max(worst, code)
                if not (out / "report.csv").is_file():
                    say(f"{set_name} x{s} {preset}: no report (exit {code})")
                    continue
                rows.append(table_row(out / "report.csv", set_name, s, preset, wall))
                say(markdown(rows[-1:]).splitlines()[-1])
    text = markdown(rows)
    write_atomic(output / "BENCHMARKS.md", (text + "\n\n'?': published figure quoted second hand, not verified "
                                            "in the ZSSR paper. Images / hour: whole runs, end to end.\n").encode())
    write_atomic(output / "benchmarks.json", json.dumps(rows, indent=1).encode())
    return rows, worst
