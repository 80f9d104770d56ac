"""Overnight safety: bad inputs become rows, resume after SIGKILL or Ctrl-C, worker deaths, out of memory."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import run_here
from report_rows import rows as _rows, wait_rows as _wait_rows
from zssr_batch.cli import main

TINY = ["--max-iters", "2", "--crop", "12", "--width", "8", "--back-projection-iters", "1", "--no-progress",
        "--gpus", "0"]


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([np.sin(x / (2 + seed)), np.cos(y / 3), np.sin((x + y) / 5)], -1) * 0.4 + 0.5
    return (rgb * 255).astype(np.uint8)


def _bomb_png(path: Path, w: int, h: int) -> None:
    """A tiny PNG whose header declares a huge size."""
    buf = io.BytesIO()
    Image.fromarray(_photo(8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def _corpus(d: Path) -> dict[str, tuple[str, str]]:
    """Writes the inputs; returns relative path -> (expected status, error fragment or output check)."""
    d.mkdir(parents=True)
    exp: dict[str, tuple[str, str]] = {}
    rgb = _photo(20, 24)
    (d / "empty.png").write_bytes(b""); exp["empty.png"] = ("failed", "empty file")
    full = io.BytesIO(); Image.fromarray(_photo(64, 64)).save(full, "PNG")
    (d / "cut.png").write_bytes(full.getvalue()[:300]); exp["cut.png"] = ("failed", "truncated")
    jpg = io.BytesIO(); Image.fromarray(_photo(64, 64)).save(jpg, "JPEG")
    (d / "cut.jpg").write_bytes(jpg.getvalue()[:400]); exp["cut.jpg"] = ("failed", "truncated")
    (d / "notes.png").write_text("this is a text file"); exp["notes.png"] = ("failed", "not an image")
    _bomb_png(d / "bomb.png", 100000, 100000); exp["bomb.png"] = ("failed", "exceeds --max-pixels 100000000")
    Image.fromarray(_photo(1, 1)).save(d / "one.png"); exp["one.png"] = ("failed", "image 1x1 is smaller than the minimum 8x8")
    Image.fromarray(_photo(5, 7)).save(d / "small.png"); exp["small.png"] = ("failed", "image 7x5 is smaller than the minimum 8x8")
    Image.fromarray(_photo(10, 11)).save(d / "below_crop.png"); exp["below_crop.png"] = ("ok", "RGB")
    Image.fromarray(rgb[..., 0]).save(d / "gray.png"); exp["gray.png"] = ("ok", "L")
    Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA").save(d / "gray_alpha.png"); exp["gray_alpha.png"] = ("ok", "LA")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(d / "rgba.png"); exp["rgba.png"] = ("ok", "RGBA")
    Image.fromarray(rgb).quantize(32).save(d / "palette.png"); exp["palette.png"] = ("ok", "RGB")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg"); exp["cmyk.jpg"] = ("ok", "RGB")
    g16 = rgb[..., 0].astype(np.uint16) * 256 + 7
    Image.fromarray(g16).save(d / "gray16.png"); exp["gray16.png"] = ("ok", "16-gray")
    Image.fromarray(g16).save(d / "gray16.tif"); exp["gray16.tif"] = ("ok", "16-gray")
    c16 = rgb.astype(np.uint16) * 256 + 7
    cv2.imwrite(str(d / "rgb16.png"), c16[..., ::-1]); exp["rgb16.png"] = ("ok", "16-rgb")
    cv2.imwrite(str(d / "rgb16.tif"), c16[..., ::-1]); exp["rgb16.tif"] = ("ok", "16-rgb")
    im = Image.fromarray(rgb); ex = im.getexif(); ex[0x0112] = 6
    im.save(d / "rotated.jpg", exif=ex); exp["rotated.jpg"] = ("ok", "upright")
    frames = [Image.fromarray(_photo(20, 24, s)) for s in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:]); exp["anim.gif"] = ("ok", "P->png")
    Image.fromarray(rgb).save(d / "with space ü.png"); exp["with space ü.png"] = ("ok", "RGB")
    for sub in ("a", "b"):
        (d / sub).mkdir()
        Image.fromarray(_photo(16, 16, 1 if sub == "a" else 2)).save(d / sub / "same.png")
        exp[f"{sub}/same.png"] = ("ok", "RGB")
    os.symlink("..", d / "a" / "loop")  # a symlink loop: followed once, never forever
    (d / ".hidden.png").write_bytes(full.getvalue())  # hidden: not an input
    return exp


def _check_output(path: Path, kind: str, src: Path, row_notes: str = "") -> None:
    if kind.startswith("16-"):
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.ndim == (2 if kind == "16-gray" else 3), path
        return
    im = Image.open(path)
    w, h = Image.open(src).size
    if kind == "upright":
        assert im.size == (2 * h, 2 * w)  # EXIF orientation 6: the picture stands up
    elif kind == "P->png":
        assert path.suffix == ".png" and im.size == (2 * w, 2 * h)
        assert row_notes == "first of 3 frames"
    else:
        assert im.mode == kind and im.size == (2 * w, 2 * h), (path, im.mode, im.size)


def test_corpus_of_bad_and_odd_inputs(tmp_path, one_ray):  # two runs, one Ray
    src = tmp_path / "in"
    exp = _corpus(src)
    out = src / "out"  # the output folder inside the input folder: never picked up as input
    for attempt in range(2):
        rc = main(["run", "--input", str(src), "--output", str(out), "--scale", "2", *TINY])
        assert rc == 1  # some images failed, and the exit code says so
        rows = _rows(out)
        rels = [r["rel"] for r in rows]
        assert sorted(rels) == sorted(exp), attempt  # exactly one row per input, no output re-read
    for r in rows:
        status, what = exp[r["rel"]]
        assert r["status"] == status, (r["rel"], r["error"])
        if status == "failed":
            assert what in r["error"] and r["rel"].split("/")[-1] in r["error"], r["error"]
            assert "\n" not in r["error"]
        else:
            _check_output(Path(r["output"]), what, Path(r["input"]), r["notes"])
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                      if p.is_file() and p.relative_to(out).parts[0] != ".report")
    expected = sorted(Path(r["output"]).relative_to(out).as_posix() for r in rows if r["status"] == "ok")
    assert produced == sorted(expected + [".zssr-batch.lock", "report.csv", "report.html", "run.json", "summary.csv"])
    # the report's pictures: a curve and thumbnails for each image that was fitted, named after its
    # output, under .report/, nothing else
    ok = expected
    pictures = out / ".report"
    assert sorted(p.relative_to(pictures / "curves").as_posix()[:-4] for p in (pictures / "curves").rglob("*.svg")) == ok
    assert sorted(p.parent.relative_to(pictures / "thumbs").as_posix()
                  for p in (pictures / "thumbs").rglob("zssr.png")) == ok


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_a_failed_row(tmp_path, one_ray):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_photo(16, 16)).save(src / "locked.png")
    os.chmod(src / "locked.png", 0)
    assert main(["run", "--input", str(src), "--output", str(tmp_path / "out"), *TINY]) == 1
    assert "permission denied" in _rows(tmp_path / "out")[0]["error"]


def test_permission_denied_becomes_a_clear_failed_row(tmp_path, monkeypatch):
    # Root (as in CI) reads any file, so the real chmod case above cannot run there:
    # here the read meets the PermissionError a non-root user would get.
    from PIL import Image as PILImage

    from zssr_batch.config import resolve
    from zssr_batch.files.sources import WorkItem
    from zssr_batch.run.item import run_item

    PILImage.fromarray(_photo(16, 16)).save(tmp_path / "locked.png")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked.png"))

    monkeypatch.setattr("zssr_batch.files.storage.read_bytes", denied)
    rec = run_item(WorkItem(input=str(tmp_path / "locked.png"), output=str(tmp_path / "o.png")),
                   resolve("fast", overrides={"max_iters": 1}), "cpu")
    assert rec["status"] == "failed" and rec["error"] == f"{tmp_path / 'locked.png'}: permission denied"


def _make_inputs(d: Path, n: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_photo(24, 24, i % 7)).save(d / f"{i:03d}.png")


def _cmd(src: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "zssr_batch", "run", "--input", str(src), "--output", str(out), "--workers", "1",
            "--threads", "1", "--max-iters", "30", "--crop", "16", "--width", "16", "--back-projection-iters", "1",
            "--no-progress", "--gpus", "0", "--pack", "2", "--batch", "2", *more]  # packed, rows every 2 images


@pytest.mark.slow
def test_driver_sigkill_then_rerun_is_exactly_once(tmp_path, one_ray, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _make_inputs(src, 12)
    proc = subprocess.Popen(_cmd(src, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _wait_rows(out, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and whatever it started, at once
    proc.wait()
    done = {r["input"]: r for r in _rows(out) if r["status"] == "ok"}
    assert 3 <= len(done) < 12
    stamps = {p: os.stat(p).st_mtime_ns for p in (r["output"] for r in done.values())}
    rerun = run_here(capsys, *_cmd(src, out)[4:])  # in this process: no interpreter, no Ray to start
    assert rerun.returncode == 0, rerun.stderr
    rows = _rows(out)
    assert sorted(r["input"] for r in rows) == sorted(str(p) for p in src.glob("*.png"))  # one row each
    assert all(r["status"] == "ok" for r in rows)
    assert f"{len(done)} already done" in rerun.stdout  # finished images were not fitted again
    assert all(os.stat(p).st_mtime_ns == t for p, t in stamps.items())
    for r in rows:
        assert Image.open(r["output"]).size == (48, 48)
    assert not [p for p in out.rglob("*.part")]


@pytest.mark.slow
def test_worker_killed_mid_fit_is_retried_once(tmp_path, one_ray, capsys, monkeypatch):
    src = tmp_path / "in"
    _make_inputs(src, 6)
    # The restarted worker takes 3 s to start, as a GPU worker can on a busy node: work sent to it
    # while it restarts must wait for it, not count as another death. (Before the driver waited,
    # both images retried here failed, "worker died 3 times", after one death.)
    for mode in ("packed", "single"):
        out = tmp_path / mode
        marker = tmp_path / f"killed-{mode}"
        monkeypatch.setenv("ZSSR_BATCH_FAULT", f"kill:001.png:{marker}")  # read by the run, sent to its actors
        monkeypatch.setenv("ZSSR_BATCH_FAULT_RESTART_S", "3")
        more = ["--pack", "1"] if mode == "single" else []
        res = run_here(capsys, *_cmd(src, out, *more)[4:])
        assert res.returncode == 0, res.stderr
        assert marker.exists()  # the worker really died
        rows = {Path(r["input"]).name: r for r in _rows(out)}
        assert len(rows) == 6 and all(r["status"] == "ok" for r in rows.values())
        attempts = {name: r["attempts"] for name, r in rows.items()}
        assert "worker died" in res.stderr and "actor 0 is back after" in res.stderr
        assert "not started go back to the queue" in res.stderr  # the call queued behind, unharmed
        if mode == "packed":
            # Calls of 2, both sent at the start: 000 and 001 were both started (decoded) when 001
            # killed the worker; they are resubmitted together, as one pack, not one by one. 002 and
            # 003 waited in the queued call. (The kill is in the first call so that the call behind it
            # is queued whatever the machine's load: a kill in the second call raced the driver's
            # sending of the third.)
            assert attempts == {"000.png": "2", "001.png": "2", "002.png": "1", "003.png": "1", "004.png": "1",
                                "005.png": "1"}
            assert rows["000.png"]["pack"] == rows["001.png"]["pack"] == "2"
        else:  # one image per call: only the image that was in the dead worker is redone
            assert attempts == {"000.png": "1", "001.png": "2", "002.png": "1", "003.png": "1", "004.png": "1",
                                "005.png": "1"}


@pytest.mark.slow
def test_poison_image_costs_only_itself_and_its_pack(tmp_path, one_ray, capsys, monkeypatch):
    # 001 kills its worker the moment it is read, every time (a decoder that segfaults on it).
    src, out = tmp_path / "in", tmp_path / "out"
    _make_inputs(src, 4)
    monkeypatch.setenv("ZSSR_BATCH_FAULT", "kill-on-read:001.png")
    res = run_here(capsys, *_cmd(src, out)[4:])
    assert res.returncode == 1, res.stderr  # some images failed
    rows = {Path(r["input"]).name: r for r in _rows(out)}
    assert {n: (r["status"], r["attempts"]) for n, r in rows.items()} == {
        "000.png": ("ok", "3"), "001.png": ("failed", "3"), "002.png": ("ok", "1"), "003.png": ("ok", "1")}
    assert "001.png: worker died 3 times" in rows["001.png"]["error"]
    # 000 and 001 were read together (the call's first burst), so both were charged each death: once
    # retried together, then alone. The call queued behind (002, 003) was never charged. Each death
    # was charged at once: that needs each start notice to reach the driver before the worker goes on
    # (the process's backpressure). A notice lost with the worker would send 000 and 001 back unharmed.
    log = res.stderr
    assert "worker died with 2 image(s) started; retrying 000.png, 001.png together (attempt 2)" in log
    assert "worker died with 2 image(s) started; retrying 000.png alone (attempt 3); 001.png alone (attempt 3)" in log
    assert "worker died with 1 image(s) started; 001.png failed (no attempt left)" in log
    back = [line for line in log.splitlines() if "go back to the queue" in line]
    assert back and all(line.endswith("not started go back to the queue: 002.png, 003.png") for line in back)


def _call(n: int, started: set[int], attempt: int = 1, spared: int = 0, begun: bool = True):
    from zssr_batch.config import FitConfig
    from zssr_batch.files.sources import WorkItem
    from zssr_batch.run.recovery import Call, Entry

    left = {i: Entry(WorkItem(input=f"{i}.png", output=f"out/{i}.png"), FitConfig(), attempt, spared)
            for i in range(n)}
    return Call(left, actor=0, begun=begun, started=started)


def test_a_death_costs_an_attempt_only_to_the_images_the_worker_had_started():
    from zssr_batch.run.recovery import SPARED_MAX, after_death

    # A GPU call of 8 in which the worker had started (decoded, or was fitting) 0-2 when it died.
    fate = after_death(_call(8, {0, 1, 2}), retries=2)
    assert [e.item.input for e in fate.back] == ["3.png", "4.png", "5.png", "6.png", "7.png"]
    assert all(e.attempt == 1 and e.spared == 1 for e in fate.back)
    assert [[(e.item.input, e.attempt) for e in g] for g in fate.retry] == [[("0.png", 2), ("1.png", 2),
                                                                              ("2.png", 2)]]
    assert not fate.failed
    # The call queued behind it had not begun: all of it goes back, as if nothing happened.
    fate = after_death(_call(4, set(), begun=False), retries=2)
    assert [(e.attempt, e.spared) for e in fate.back] == [(1, 0)] * 4 and not fate.retry
    # Their next death is their last attempt's: a poison image among them now hurts no other.
    fate = after_death(_call(3, {0, 1, 2}, attempt=2), retries=2)
    assert [[(e.item.input, e.attempt) for e in g] for g in fate.retry] == [[("0.png", 3)], [("1.png", 3)],
                                                                             [("2.png", 3)]]
    # Out of attempts: a failed row each.
    fate = after_death(_call(2, {0, 1}, attempt=3), retries=2)
    assert [e.item.input for e in fate.failed] == ["0.png", "1.png"] and not fate.retry and not fate.back
    # With --retries 1 the first retry is already the last: alone.
    fate = after_death(_call(2, {0, 1}), retries=1)
    assert [len(g) for g in fate.retry] == [1, 1]
    # Deaths in a begun call before anything was announced (the pack-size probe, header reads): an
    # image that sat through SPARED_MAX of them counts as started, so it cannot kill workers for ever.
    fate = after_death(_call(1, set(), spared=SPARED_MAX), retries=2)
    assert not fate.back and [(e.item.input, e.attempt, e.spared) for g in fate.retry for e in g] == [("0.png", 2, 0)]


def test_out_of_memory_retries_with_smaller_tiles(tmp_path, monkeypatch):
    from zssr_batch.config import resolve
    from zssr_batch.files.sources import WorkItem
    from zssr_batch.run.item import run_item

    Image.fromarray(_photo(24, 24)).save(tmp_path / "big.png")
    monkeypatch.setenv("ZSSR_BATCH_FAULT", "oom:big.png")
    cfg = resolve("fast", overrides={"max_iters": 3, "crop": 12, "width": 8})
    item = WorkItem(input=str(tmp_path / "big.png"), output=str(tmp_path / "o.png"))
    rec = run_item(item, cfg, "cpu")
    assert rec["status"] == "ok" and rec["tile"] == 256  # 1024 and 512 ran out of memory
    monkeypatch.setenv("ZSSR_BATCH_FAULT", "")
    assert run_item(item, cfg, "cpu")["tile"] == 1024


def test_a_fit_that_diverges_is_a_failed_row_not_a_garbage_picture(tmp_path):
    from zssr_batch.config import resolve
    from zssr_batch.files.sources import WorkItem
    from zssr_batch.run.item import run_item

    Image.fromarray(_photo(24, 24)).save(tmp_path / "in.png")
    item = WorkItem(input=str(tmp_path / "in.png"), output=str(tmp_path / "o.png"))
    # Adam moves each weight by about the learning rate a step: at 1e10 the network's output is NaN
    cfg = resolve("fast", overrides={"max_iters": 10, "crop": 12, "width": 8, "learning_rate": 1e10})
    rec = run_item(item, cfg, "cpu")
    assert rec["status"] == "failed" and not (tmp_path / "o.png").exists()
    assert rec["error"].startswith(str(tmp_path / "in.png")) and "diverged" in rec["error"], rec["error"]
    assert "\n" not in rec["error"]
    assert run_item(item, resolve("fast", overrides={"max_iters": 10, "crop": 12, "width": 8}), "cpu")["status"] == "ok"


def test_an_image_whose_packed_fit_diverges_is_fitted_again_alone(tmp_path, monkeypatch):
    # A pack's own fault (on the H100 a recording once turned a whole pack NaN) must not cost the
    # image: its output is then the one-image mode's, bit for bit, and its row says what happened.
    from zssr_batch.config import resolve
    from zssr_batch.files.sources import WorkItem
    from zssr_batch.run.batch import run_packed
    from zssr_batch.run.item import run_item

    for n in range(3):
        Image.fromarray(_photo(24, 26, seed=n)).save(tmp_path / f"{n}.png")
    cfg = resolve("fast", overrides={"max_iters": 6, "crop": 12, "width": 8})
    items = [WorkItem(input=str(tmp_path / f"{n}.png"), output=str(tmp_path / f"p{n}.png")) for n in range(3)]
    monkeypatch.setenv("ZSSR_BATCH_FAULT", "diverge-in-pack:1.png")
    rows = {i: r for i, r in run_packed(items, [cfg] * 3, "cpu", pack=2) if r is not None}
    assert [rows[i]["status"] for i in range(3)] == ["ok"] * 3
    assert "its packed fit diverged: fitted again alone" in rows[1]["notes"] and rows[1]["pack"] == 1
    assert "diverged" not in rows[0]["notes"] and rows[0]["pack"] == 2
    assert rows[0]["pack_way"] == "grouped" and rows[1]["pack_way"] == ""  # --pack 2 on a CPU; the refit ran alone
    alone = run_item(replace(items[1], output=str(tmp_path / "a1.png")), cfg, "cpu")
    assert alone["status"] == "ok"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p1.png")), np.asarray(Image.open(tmp_path / "a1.png")))
    assert rows[1]["iterations"] == alone["iterations"]


def test_tiled_inference_has_no_seams():
    import torch

    from zssr_batch.engine.infer import MemoryPlan, network_upscale
    from zssr_batch.engine.metrics import psnr
    from zssr_batch.engine.model import ZSSRNet

    net = ZSSRNet(3, 8, 16, 0.5, torch.Generator().manual_seed(0)).eval()  # a strong residual shows seams
    img = torch.rand(2, 3, 70, 90)
    whole = network_upscale(net, img, (2.0, 2.0), plan=MemoryPlan(tile=4096))
    tiled = network_upscale(net, img, (2.0, 2.0), plan=MemoryPlan(tile=48))
    assert psnr(whole.numpy() * 255, tiled.numpy() * 255) >= 50  # the bar; in fact equal to float noise
    assert float((whole - tiled).abs().max()) < 1e-5


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_rerun_completes(tmp_path, joining_one_ray, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _make_inputs(src, 10)
    proc = subprocess.Popen(_cmd(src, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=joining_one_ray)
    _wait_rows(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "stopping" in stderr
    partial = _rows(out)
    assert 2 <= len(partial) < 10 and len({r["input"] for r in partial}) == len(partial)
    rerun = run_here(capsys, *_cmd(src, out)[4:])  # in this process: no interpreter, no Ray to start
    assert rerun.returncode == 0
    rows = _rows(out)
    assert len(rows) == 10 and len({r["input"] for r in rows}) == 10 and all(r["status"] == "ok" for r in rows)


def test_max_failures_runs_no_call_that_begins_after_it(tmp_path, one_ray):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a0", "a1", "c0", "c1", "c2", "c3"):
        (src / f"{name}.png").write_bytes(b"nope")
    Image.fromarray(_photo(40, 40)).save(src / "b.png")
    # Calls of 3: (a0, a1, b) runs, and a0 and a1 fail at once while b still fits for seconds; the call
    # queued behind, (c0, c1, c2), begins only after the stop, so it is left unanswered, not run.
    rc = main(["run", "--input", str(src), "--output", str(tmp_path / "out"), "--max-failures", "2", "--pack", "2",
               "--batch", "3", "--workers", "1", *TINY, "--max-iters", "800", "--min-iters", "800", "--crop", "16"])
    assert rc == 3
    assert sorted(Path(r["input"]).name for r in _rows(tmp_path / "out")) == ["a0.png", "a1.png", "b.png"]


def test_calls_are_large_while_much_is_left_and_shrink_toward_the_end():
    from zssr_batch.run.dispatch import DEPTH, GPU_CALL, call_size

    lo, hi = GPU_CALL
    assert call_size(10_000, 1, lo, hi) == hi  # one GPU, a long run: the largest calls (fewest drains)
    assert call_size(1_000, 1, lo, hi) == 1_000 // DEPTH  # the end near: what is left, shared by the calls held
    assert call_size(100, 1, lo, hi) == 100  # one actor, little left: all of it, in one pack
    assert call_size(200, 1, lo, hi) == lo  # never less than a pack can fill while one actor's share is more
    assert call_size(10_000, 8, lo, hi) == 625  # eight GPUs share it evenly
    # A small set is spread over every actor (it once went whole to one): Set5 on 2 GPUs, Set14 on 4 CPUs.
    assert call_size(5, 2, lo, hi) == 3 and call_size(2, 2, lo, hi) == 1
    assert call_size(14, 4, 16, 16) == 4
    # Whatever is left, the calls sent one after another cover it, never more than hi, never under lo
    # while each of the 3 actors' even share of what is left is more than lo.
    left, sizes = 5_000, []
    while left:
        sizes.append(min(left, call_size(left, 3, lo, hi)))
        assert sizes[-1] <= hi and sizes[-1] >= min(lo, -(-left // 3)), (left, sizes)
        left -= sizes[-1]
    assert sum(sizes) == 5_000 and sizes == sorted(sizes, reverse=True)
