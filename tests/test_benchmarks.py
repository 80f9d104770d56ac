"""The benchmark scripts run (tiny modes) and print what docs/BENCHMARKS.md quotes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, needs_data

ROOT = Path(__file__).resolve().parents[1]


def _throughput(*extra: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cpu", "--tiny",
                          "--set", str(DATA / "BSD100"), *extra], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@needs_data
def test_throughput_tiny_on_cpu_prints_the_comparison():
    result = _throughput()
    for key in ("device", "torch", "images", "baseline_images_per_hour", "fast_images_per_hour", "speedup",
                "baseline_psnr_y", "fast_psnr_y"):
        assert key in result
    assert result["images"] == 4 and result["device"] == "cpu"
    # same fits, packed or not: the quality must agree (float differences only)
    assert abs(result["baseline_psnr_y"] - result["fast_psnr_y"]) < 0.05
    # Timing 2 images and fitting the other 2 alone in worker processes gives the same per-image
    # figures as fitting all 4 in this process (one thread there instead of two: float noise only).
    split = _throughput("--baseline-limit", "2", "--baseline-workers", "2")
    assert split["baseline_images"] == 2 and split["baseline_per_image_psnr_y"].keys() == \
        result["baseline_per_image_psnr_y"].keys()
    for name, v in result["baseline_per_image_psnr_y"].items():
        assert abs(split["baseline_per_image_psnr_y"][name] - v) < 0.01, name
    assert abs(split["baseline_psnr_y_all"] - result["baseline_psnr_y_all"]) < 0.01


@pytest.mark.slow
@needs_data
def test_quality_benchmark_writes_the_table_of_whole_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--sets", "Set5", "--scales", "2",
                          "--presets", "fast", "--data", str(DATA), "--output", str(tmp_path), "--",
                          "--max-iters", "5", "--gpus", "0", "--width", "8", "--ensemble", "none"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads((tmp_path / "benchmarks.json").read_text())
    assert (row["set"], row["scale"], row["preset"], row["images"]) == ("Set5", 2, "fast", 5)
    assert row["zssr_published"] == 37.37 and row["zssr_published_verified"] and row["images_per_hour"] > 0
    assert row["mean_steps"] == 5 and abs(row["bicubic_psnr_y"] - 33.68) < 0.01  # our bicubic, as the README says
    assert "| Set5 | x2 | fast | 5 |" in out.stdout and "33.68 / 33.64 | 37.37 |" in out.stdout


def test_tables_run_a_gradual_preset_at_its_own_scale_and_mark_second_hand_figures():
    from zssr_batch.tables import markdown, preset_scales

    assert preset_scales("paper", [2, 3, 4]) == [2, 3, 4]
    assert preset_scales("gradual-x2", [2, 3, 4]) == [2]
    row = {"set": "BSD100", "scale": 2, "preset": "paper", "images": 100, "failed": 0, "psnr_y": 31.5,
           "ssim_y": 0.89, "bicubic_psnr_y": 29.56, "bicubic_published": 29.55, "zssr_published": 31.65,
           "zssr_published_verified": False, "vs_published": -0.15, "mean_steps": 1800.0, "images_per_hour": 9000.0}
    assert "| BSD100 | x2 | paper | 100 | 31.50 | 0.8900 | 29.56 / 29.55 | 31.65? | -0.15 | 1800 | 9,000 |" \
        in markdown([row])


@pytest.mark.slow
def test_cpu_pack_benchmark_times_every_way():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_pack.py"), "--crops", "16", "24",
                          "--rounds", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [(r["crop"], r["pack"], r["pad_thin"]) for r in rows] == [
        (c, k, p) for c in (16, 24) for k, p in ((1, False), (2, True), (4, True), (4, False))]
    assert all(0 < r["best_ms"] <= r["median_ms"] for r in rows)


def test_gpu_check_times_every_triton_kernel_call_of_a_step():
    # On a CPU the Triton interpreter runs the kernels (tiny shapes): the GPU session's per-layer table
    # must not fail there, where device time is scarce.
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--layers-only", "--device", "cpu",
                          "--pack", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    rows = [line.split()[:2] for line in out.stdout.splitlines() if " x1:" in line or " x6:" in line]
    assert rows == [["forward", "first"], ["forward", "hidden"], ["forward", "last"], ["input", "grad"],
                    ["input", "grad"], ["weight", "grad"], ["weight", "grad"], ["weight", "grad"]]
    assert "the 5 calls of the thin first and last layers" in out.stdout
