"""``zssr-batch run``: folders, benchmark layout, manifests, --degrade, multi-node Ray, streaming."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import DATA, needs_data
from zssr_batch.cli import main

TINY = ["--max-iters", "2", "--crop", "12", "--width", "8", "--back-projection-iters", "1", "--no-progress"]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "report.csv", newline="") as f:
        return list(csv.DictReader(f))


def _img(path: Path, h: int, w: int, seed: int = 0, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / (2 + seed)) , np.cos(y / 3), np.sin((x + y) / 5)], -1) * 0.4 + 0.5
    arr = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray((arr * 255).astype(np.uint8))
    (im if mode == "RGB" else im.convert(mode)).save(path)


@needs_data
def test_set5_benchmark_layout_on_cpu(tmp_path):
    # The command, with a tiny iteration budget and a small network, one pass (no ensemble):
    # on a CPU the time is the whole-image inference, not the 20 steps. The outputs still beat
    # bicubic on every image through the 10 back-projections (by 0.6-1.8 dB; a width-64 ensemble is
    # not what this layout test is about).
    out = tmp_path / "out"
    rc = main(["run", "--input", str(DATA / "Set5"), "--output", str(out), "--scale", "2", "--gpus", "0",
               "--preset", "fast", "--max-iters", "20", "--width", "8", "--ensemble", "none", "--no-progress"])
    assert rc == 0
    rows = _rows(out)
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        lr = Image.open(r["input"])
        sr = Image.open(r["output"])
        assert sr.size == (2 * lr.size[0], 2 * lr.size[1])
        assert Path(r["gt"]).parent.name == "HR"
        assert np.isfinite(float(r["psnr_y"])) and float(r["psnr_y"]) > float(r["bicubic_psnr_y"])
    bicubic = np.mean([float(r["bicubic_psnr_y"]) for r in rows])
    assert 33.6 <= bicubic <= 33.7
    summary = pd.read_csv(out / "summary.csv")
    assert summary.iloc[-1]["folder"] == "ALL" and summary.iloc[-1]["ok"] == 5
    info = json.loads((out / "run.json").read_text())
    assert info["images"]["ok"] == 5 and info["engine"]["preset"] == "fast" and "torch" in info["versions"]
    # how the packs ran: per row, and counted in run.json
    assert info["pack_ways"] == {w: sum(r["pack_way"] == w for r in rows) for w in {r["pack_way"] for r in rows} if w}
    # `report` rebuilds the summary from report.csv alone
    (out / "summary.csv").unlink()
    assert main(["report", str(out)]) == 0
    assert pd.read_csv(out / "summary.csv").equals(summary)


def test_manifest_with_per_row_overrides_and_escapes_refused(tmp_path):
    src = tmp_path / "src"
    _img(src / "a.png", 20, 24, 1)
    _img(src / "b.png", 18, 16, 2)
    (tmp_path / "m.csv").write_text(
        "input,scale,max_iters,output\n"
        "src/a.png,2,3,\n"
        "src/b.png,3,,b_x3.png\n"
        "src/missing.png,2,,\n"
        "src/a.png,2,,../escape.png\n")
    out = tmp_path / "out"
    rc = main(["run", "--input", str(tmp_path / "m.csv"), "--output", str(out), "--gpus", "0", *TINY])
    assert rc == 1  # some rows failed
    rows = {(r["input"], r["output"]): r for r in _rows(out)}
    by_status = [r["status"] for r in rows.values()]
    assert by_status.count("ok") == 2 and by_status.count("failed") == 2
    a = next(r for r in rows.values() if r["input"].endswith("a.png") and r["status"] == "ok")
    b = next(r for r in rows.values() if r["input"].endswith("b.png"))
    assert (a["scale"], a["out_height"], a["out_width"], a["iterations"]) == ("2", "40", "48", "3")
    assert (b["scale"], b["out_height"], b["out_width"], b["iterations"]) == ("3", "54", "48", "2")
    assert Path(b["output"]) == out / "b_x3.png" and (out / "b_x3.png").is_file()
    errors = " ".join(r["error"] for r in rows.values() if r["status"] == "failed")
    assert "no such file" in errors and "escapes the output folder" in errors
    assert not (tmp_path / "escape.png").exists()


def test_jsonl_manifest_and_gt_folder(tmp_path, one_ray):  # two runs, one Ray
    _img(tmp_path / "lr" / "sub" / "x.png", 16, 16, 3)
    _img(tmp_path / "hr" / "sub" / "x.jpg", 32, 32, 3)
    (tmp_path / "m.jsonl").write_text(json.dumps({"input": "lr/sub/x.png", "gt": "hr/sub/x.jpg"}) + "\n")
    out = tmp_path / "o1"
    assert main(["run", "--input", str(tmp_path / "m.jsonl"), "--output", str(out), "--gpus", "0", *TINY]) == 0
    assert _rows(out)[0]["psnr_y"] != ""
    out2 = tmp_path / "o2"  # --gt DIR pairs by relative path and stem, any extension
    assert main(["run", "--input", str(tmp_path / "lr"), "--gt", str(tmp_path / "hr"), "--output", str(out2),
                 "--gpus", "0", "--ext", "webp", *TINY]) == 0
    row = _rows(out2)[0]
    assert row["gt"].endswith("x.jpg") and row["output"].endswith("sub/x.webp") and row["psnr_y"] != ""


def test_degrade_run_scores_against_the_originals_and_authors_gt_naming(tmp_path, one_ray):  # two runs, one Ray
    src = tmp_path / "hr"
    _img(src / "p.png", 33, 26, 4)
    _img(src / "q.png", 30, 30, 5)
    out = tmp_path / "out"
    assert main(["run", "--input", str(src), "--output", str(out), "--degrade", "--scale", "2", "--gpus", "0",
                 *TINY]) == 0
    rows = {Path(r["input"]).name: r for r in _rows(out)}
    assert (rows["p.png"]["height"], rows["p.png"]["width"]) == ("16", "13")
    assert (rows["p.png"]["out_height"], rows["p.png"]["out_width"]) == ("32", "26")
    assert all(r["gt"] == r["input"] and float(r["psnr_y"]) > 15 for r in rows.values())
    # The authors' layout: NAME_gt.png beside NAME.png is ground truth, not an input.
    d = tmp_path / "authors"
    _img(d / "im.png", 16, 16, 6)
    _img(d / "im_gt.png", 32, 32, 6)
    out2 = tmp_path / "out2"
    assert main(["run", "--input", str(d), "--output", str(out2), "--gpus", "0", *TINY]) == 0
    rows2 = _rows(out2)
    assert len(rows2) == 1 and rows2[0]["gt"].endswith("im_gt.png") and rows2[0]["psnr_y"] != ""


def _max_overlap(rows: list[dict[str, str]]) -> int:
    ev = []
    for r in rows:
        ev.append((pd.Timestamp(r["started_at"]).value, 1))
        ev.append((pd.Timestamp(r["finished_at"]).value, -1))
    live = peak = 0
    for _, d in sorted(ev, key=lambda e: (e[0], e[1])):
        live += d
        peak = max(peak, live)
    return peak


@pytest.mark.slow
def test_two_node_cluster_uses_both_nodes_and_caps_concurrency(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    src = tmp_path / "src"
    for i in range(12):
        _img(src / f"{i:02d}.png", 20, 20, i)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 2})
    cluster.add_node(num_cpus=1, num_gpus=2)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address)
        out = tmp_path / "out"
        rc = main(["run", "--input", str(src), "--output", str(out), "--gpus", "4", "--batch", "2",
                   "--threads", "1", "--address", cluster.address, *TINY])  # packed (default), one actor per GPU
        assert rc == 0
        rows = _rows(out)
        assert len(rows) == 12 and len({r["node"] for r in rows}) == 2
        out2 = tmp_path / "out2"
        rc = main(["run", "--input", str(src), "--output", str(out2), "--gpus", "2", "--images-per-gpu", "2",
                   "--threads", "1", "--address", cluster.address, "--pack", "1", "--max-iters", "30", *TINY[2:]])
        assert rc == 0
        rows2 = _rows(out2)
        assert len(rows2) == 12
        assert 1 < _max_overlap(rows2) <= 4
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_streaming_2000_images_keeps_driver_memory_flat_and_rows_arrive_during_the_run(tmp_path):
    import psutil

    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for i in range(2000):
        d = src / f"d{i // 500}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"{i:04d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "zssr_batch", "run", "--input", str(src), "--output", str(out), "--gpus", "0",
           "--workers", "2", "--threads", "1", "--max-iters", "0", "--ensemble", "none",
           "--back-projection-iters", "0", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    samples = []  # (rows in the report, driver RSS in MB)
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            break
        n = 0
        if (out / "report.csv").exists():
            with open(out / "report.csv", "rb") as f:
                n = max(0, f.read().count(b"\n") - 1)
        samples.append((n, rss))
        time.sleep(0.2)
    assert proc.returncode == 0
    assert len(_rows(out)) == 2000
    during = [n for n, _ in samples if 0 < n < 2000]
    assert len(set(during)) >= 5, "the report should grow while the run goes"
    # Flat memory while images stream: RSS once the pipeline is warm (200 rows) vs the
    # largest RSS until the last row (the summary and HTML report after it load pandas,
    # which is not per-image memory). A driver that kept every result or ref would grow
    # with the row count; we allow 40 MB for allocator noise and Ray's own caches.
    warm = [rss for n, rss in samples if 200 <= n < 2000]
    print(f"driver RSS: {warm[0]:.1f} MB at 200 rows, at most {max(warm):.1f} MB until 2000")
    assert warm and max(warm) - warm[0] < 40, (warm[0], max(warm))


def test_scan_filters_suffix_and_hidden_files(tmp_path, one_ray):  # two runs, one Ray
    src = tmp_path / "src"
    _img(src / "a.png", 16, 16, 1)
    _img(src / "b.jpg", 16, 16, 2)
    _img(src / "sub" / "c.png", 16, 16, 3)
    _img(src / ".hidden" / "d.png", 16, 16, 4)
    _img(src / ".e.png", 16, 16, 5)
    out = tmp_path / "o1"
    assert main(["run", "--input", str(src), "--output", str(out), "--gpus", "0", "--extensions", "png",
                 "--suffix", "_x2", *TINY]) == 0
    assert sorted(r["rel"] for r in _rows(out)) == ["a.png", "sub/c.png"]
    assert (out / "a_x2.png").is_file() and (out / "sub" / "c_x2.png").is_file()
    out2 = tmp_path / "o2"
    assert main(["run", "--input", str(src), "--output", str(out2), "--gpus", "0", "--no-recursive", "--glob", "*.jpg",
                 *TINY]) == 0
    assert [r["rel"] for r in _rows(out2)] == ["b.jpg"]


@pytest.mark.slow
def test_packed_batches_stream_a_row_per_image(tmp_path):
    # One call carries 8 images fitted 2 at a time: the rows must arrive one by one
    # while the call runs, not all 8 when it returns.
    src = tmp_path / "src"
    for i in range(8):
        _img(src / f"{i}.png", 24, 24, i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "zssr_batch", "run", "--input", str(src), "--output", str(out), "--gpus", "0",
           "--workers", "1", "--pack", "2", "--batch", "8", "--max-iters", "60", "--crop", "16", "--width", "16",
           "--back-projection-iters", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = set()
    while proc.poll() is None:
        if (out / "report.csv").exists():
            with open(out / "report.csv", "rb") as f:
                seen.add(max(0, f.read().count(b"\n") - 1))
        time.sleep(0.05)
    assert proc.returncode == 0
    rows = _rows(out)
    assert len(rows) == 8
    assert len({n for n in seen if 0 < n < 8}) >= 3, sorted(seen)
    # Each row's times are its own image's: its fit began when a slot of the pack of 2 took it, so
    # two fits run at once at the start and never three (the rows once gave the previous image's
    # end as the start, and every interval followed the last).
    fits = [(_seconds(r["started_at"]), _seconds(r["started_at"]) + float(r["fit_seconds"])) for r in rows]
    at_once = [sum(s <= start < e for s, e in fits) for start, _ in fits]
    assert max(at_once) == 2, (at_once, fits)
    for r in rows:
        assert _seconds(r["started_at"]) + float(r["fit_seconds"]) <= _seconds(r["finished_at"]) + 0.002, r
        assert float(r["infer_seconds"]) > 0, r


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()
