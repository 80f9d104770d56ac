"""``zssr-batch run``: folders, benchmark layout, manifests, --degrade, multi-node Ray, streaming."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import DATA, needs_data, own_ray
from zssr_batch.cli import main
from report_rows import rows as _rows

TINY = ["--max-iters", "2", "--crop", "12", "--width", "8", "--back-projection-iters", "1", "--no-progress"]


def _img(path: Path, h: int, w: int, seed: int = 0, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / (2 + seed)) , np.cos(y / 3), np.sin((x + y) / 5)], -1) * 0.4 + 0.5
    arr = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray((arr * 255).astype(np.uint8))
    (im if mode == "RGB" else im.convert(mode)).save(path)


@needs_data
def test_set5_benchmark_layout_on_cpu(tmp_path, one_ray):
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


def test_manifest_with_per_row_overrides_and_escapes_refused(tmp_path, one_ray):
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


@pytest.mark.slow
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


def test_actors_are_planned_node_by_node_never_larger_than_a_node():
    from zssr_batch.run.cluster import plan_actors
    from zssr_batch.run.settings import RunSettings

    def node(name: str, cpus: int, gpus: int = 0) -> dict:
        return {"NodeID": name, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}

    said: list[str] = []
    plan = lambda nodes, **kw: plan_actors(RunSettings(Path("o"), **kw), nodes, said.append)  # noqa: E731
    # Two 1-CPU nodes: one 1-CPU actor on each (sized from the cluster's 2 CPUs, one actor asked for
    # 2 and was never placed: the run waited for ever at 0/N).
    two = [node("a", 1), node("b", 1)]
    assert [(p.node, p.resources, p.threads) for p in plan(two)] == [("a", {"num_cpus": 1}, 1), ("b", {"num_cpus": 1}, 1)]
    # --workers 3 on them: the 2 they hold, and a line that says so (the third was never placed)
    assert len(plan(two, cpu_workers=3)) == 2 and "using 2" in said[-1]
    # --workers spreads over the nodes; each node's actors are sized from that node
    mixed = [node("head", 0), node("big", 8), node("small", 2)]
    assert [(p.node, p.threads) for p in plan(mixed, cpu_workers=3)] == [("big", 4), ("small", 2), ("big", 4)]
    # GPUs: one actor per GPU packing, or --images-per-gpu shares of each with --pack 1, node by node
    gpu = [node("a", 1, 2), node("b", 1, 2)]
    assert [p.node for p in plan(gpu)] == ["a", "a", "b", "b"]
    shared = plan(gpu, gpus=3, images_per_gpu=2, pack=1)
    assert [p.node for p in shared] == ["a"] * 4 + ["b"] * 2 and all(p.resources["num_gpus"] == 0.5 for p in shared)
    assert plan(gpu, gpus=9)[0].resources["num_gpus"] == 1.0 and "the cluster has 4; using 4" in said[-1]
    # --device cpu: CPU actors whatever GPUs there are; --device cuda with none: refused
    assert all("num_gpus" not in p.resources for p in plan(gpu, device="cpu"))
    with pytest.raises(ValueError, match="asks for GPUs but the cluster has none"):
        plan(two, device="cuda")


@pytest.mark.slow
def test_a_gpu_that_torch_cannot_use_fails_the_start_in_one_line(tmp_path, capsys):
    # A node that offers a GPU (here: Ray told it has one) to a torch without CUDA: before, the actor
    # trained on the CPU in silence and the rows said ok.
    src = tmp_path / "src"
    _img(src / "a.png", 20, 20)
    with own_ray(num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False):
        rc = main(["run", "--input", str(src), "--output", str(tmp_path / "out"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if "cannot use CUDA" in ln]
    assert len(lines) == 1 and "--device cpu" in lines[0] and "Traceback" not in err, err
    assert "zssr-batch run: error:" in err


def _main_sampled(args: list[str], out: Path, every: float) -> tuple[int, list[tuple[int, float]]]:
    """``main(args)`` in this process, and what a thread read every ``every`` seconds while it ran:
    (rows in ``out``'s report, this process's RSS in MB)."""
    import threading

    import psutil

    me, samples, done = psutil.Process(), [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            n = 0
            if (out / "report.csv").exists():
                with open(out / "report.csv", "rb") as f:
                    n = max(0, f.read().count(b"\n") - 1)
            samples.append((n, me.memory_info().rss / 2**20))
            time.sleep(every)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        rc = main(args)
    finally:
        done.set()
        sampler.join()
    return rc, samples


@pytest.mark.slow
def test_streaming_1000_images_keeps_driver_memory_flat_and_rows_arrive_during_the_run(tmp_path, one_ray):
    # The driver is this process (its Ray started once for the test process: ``one_ray``); a thread
    # reads its memory and the report's rows while the run goes.
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for i in range(1000):
        d = src / f"d{i // 250}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"{i:04d}.png")
    out = tmp_path / "out"
    args = ["run", "--input", str(src), "--output", str(out), "--gpus", "0", "--workers", "2", "--threads", "1",
            "--max-iters", "0", "--ensemble", "none", "--back-projection-iters", "0", "--no-progress"]
    rc, samples = _main_sampled(args, out, 0.2)  # (rows in the report, driver RSS in MB)
    assert rc == 0
    assert len(_rows(out)) == 1000
    during = [n for n, _ in samples if 0 < n < 1000]
    assert len(set(during)) >= 5, "the report should grow while the run goes"
    # Flat memory while images stream: RSS once the pipeline is warm (200 rows) vs the
    # largest RSS until the last row (the summary and HTML report after it load pandas,
    # which is not per-image memory). A driver that kept every result or ref would grow
    # with the row count; we allow 40 MB for allocator noise and Ray's own caches (50 kB a
    # row over the 800 rows).
    warm = [rss for n, rss in samples if 200 <= n < 1000]
    print(f"driver RSS: {warm[0]:.1f} MB at 200 rows, at most {max(warm):.1f} MB until 1000")
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
def test_packed_batches_stream_a_row_per_image(tmp_path, one_ray):
    # One call carries 8 images fitted 2 at a time: the rows must arrive one by one
    # while the call runs, not all 8 when it returns. (The run is this process's; a thread counts
    # the report's rows while it goes.)
    src = tmp_path / "src"
    for i in range(8):
        _img(src / f"{i}.png", 24, 24, i)
    out = tmp_path / "out"
    args = ["run", "--input", str(src), "--output", str(out), "--gpus", "0", "--workers", "1", "--pack", "2",
            "--batch", "8", "--max-iters", "60", "--crop", "16", "--width", "16", "--back-projection-iters", "1",
            "--no-progress"]
    rc, samples = _main_sampled(args, out, 0.05)
    seen = {n for n, _ in samples}
    assert rc == 0
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
