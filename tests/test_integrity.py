"""Nothing lost, nothing stale: every input owns its output, resume keys on content, one writer
per folder, signals and a full disk end cleanly. Each test runs the real command line on a
2-core CPU with tiny settings; the names and faults are the hostile cases users hit."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from conftest import run_here
from report_rows import rows as _rows
from zssr_batch.config import resolve
from zssr_batch.files import storage
from zssr_batch.files.plan import file_stamp
from zssr_batch.files.sources import WorkItem
from zssr_batch.report.table import ReportWriter, compact, read_report, read_rows, write_rows
from zssr_batch.run.resume import kept_rows

TINY = ["--max-iters", "2", "--crop", "12", "--width", "8", "--back-projection-iters", "1", "--no-progress",
        "--gpus", "0", "--workers", "1", "--no-report-images"]


def _img(path: Path, seed: int = 0, h: int = 20, w: int = 24) -> None:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([np.sin(x / (2 + seed)), np.cos(y / (3 + seed)), np.sin((x + y) / 5)], -1) * 0.4 + 0.5
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)


def _run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zssr_batch", "run", *args], cwd=cwd, capture_output=True,
                          text=True, errors="replace", timeout=timeout)


def _images_and_start(src: Path, out: Path, n: int, *more: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``n`` 40x40 inputs, and a run over them started in the background."""
    for i in range(n):
        _img(src / f"{i}.png", i, 40, 40)
    return _start(src, out, *more, env=env)


def _start(src: Path, out: Path, *more: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A run over ``src`` started in the background."""
    return subprocess.Popen([sys.executable, "-m", "zssr_batch", "run", "--input", str(src), "--output", str(out),
                             *TINY, *more], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _tree(root: Path, skip: Path | None = None) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip is None or skip not in p.parents and p != skip}


def _done(proc: subprocess.CompletedProcess) -> int:
    """How many images the run's last line says were already done."""
    last = [line for line in proc.stdout.splitlines() if line.startswith("zssr-batch:")][-1]
    return int(last.split(" already done")[0].rsplit(", ", 1)[1])


@pytest.mark.slow
def test_hostile_names_each_get_their_own_output_and_row_and_nothing_leaves_the_output(tmp_path, one_ray, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    names = ["b.png", "b.gif", "ctl\x01name.png", "new\nline.png", 'quote",comma.png', "l" * 246 + ".png",
             "thumbs/inner.png", "curves/inner.png", unicodedata.normalize("NFC", "café.png"),
             unicodedata.normalize("NFD", "café.png"), os.fsdecode(b"bad\xff.png"), "sub\x1b[41m/inner.png"]
    for i, n in enumerate(names):
        _img(src / n, i)
    outside = _tree(tmp_path)
    # b.png and b.gif would both write out/b.png: refused before any work, naming both
    clash = run_here(capsys, "--input", str(src), "--output", str(out), *TINY)
    assert clash.returncode == 2, clash.stderr
    assert "b.gif" in clash.stderr and "b.png" in clash.stderr and "would both write" in clash.stderr
    assert not (out / "report.csv").exists()
    # with the rule that keeps them apart, every input runs: one row each, distinct intact outputs
    proc = run_here(capsys, "--input", str(src), "--output", str(out), "--keep-ext", *TINY[:-1])  # pictures too
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert sorted(os.path.relpath(r["input"], src) for r in rows) == sorted(names)
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    outputs = [r["output"] for r in rows]
    assert len(set(outputs)) == len(names)
    for r in rows:
        assert Path(r["output"]).resolve().is_relative_to(out.resolve())
        with Image.open(r["output"]) as im:
            assert im.size == (48, 40)
    assert _tree(tmp_path, skip=out) == outside  # nothing was written outside --output
    assert not [p for p in out.rglob("*.part")]
    # the names reach the log as escapes: no raw control character splits a line or reaches the terminal
    assert "new\\nline.png" in proc.stderr and "ctl\\x01name.png" in proc.stderr and "bad\\udcff.png" in proc.stderr
    assert not [c for c in proc.stderr + proc.stdout if not c.isprintable() and c != "\n"], proc.stderr + proc.stdout
    assert "sub\\x1b[41m" in proc.stdout  # the summary's folder column
    again = run_here(capsys, "--input", str(src), "--output", str(out), "--keep-ext", *TINY[:-1])
    assert again.returncode == 0 and _done(again) == len(names), again.stdout  # the report reads back whole


@pytest.mark.slow
def test_a_second_run_on_one_folder_is_refused_and_the_first_keeps_every_row(tmp_path, joining_one_ray):
    src, out = tmp_path / "in", tmp_path / "out"
    first = _images_and_start(src, out, 6, "--max-iters", "40", env=joining_one_ray)
    t0 = time.time()
    while not (out / "report.csv").exists() and time.time() - t0 < 120:
        time.sleep(0.1)
    second = _run("--input", str(src), "--output", str(out), *TINY, timeout=60)
    assert second.returncode == 2
    assert "another zssr-batch run is writing here" in second.stderr and f"pid {first.pid}" in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    rows = _rows(out)
    assert sorted(r["input"] for r in rows) == sorted(str(src / f"{i}.png") for i in range(6))
    assert all(r["status"] == "ok" for r in rows)


@pytest.mark.slow
def test_resume_redoes_exactly_what_changed(tmp_path, one_ray, monkeypatch):  # seven runs, one Ray
    src, gt, out = tmp_path / "in", tmp_path / "gt", tmp_path / "out"
    for i in range(3):
        _img(src / f"{i}.png", i)
        _img(gt / f"{i}.png", i, 40, 48)
    base = ["--input", str(src), "--output", str(out), "--gt", str(gt), *TINY]

    def run(*args: str) -> subprocess.CompletedProcess:
        rc, stdout = _main(*args)
        return subprocess.CompletedProcess(args, rc, stdout, "")

    assert run(*base).returncode == 0
    before = {r["input"]: r for r in _rows(out)}
    _img(gt / "0.png", 9, 40, 48)  # a new ground truth: its scores are stale
    _img(src / "1.png", 8)  # a new input: its output is stale
    proc = run(*base)
    assert proc.returncode == 0 and _done(proc) == 1
    after = {r["input"]: r for r in _rows(out)}
    assert len(after) == 3
    assert after[str(src / "0.png")]["psnr_y"] != before[str(src / "0.png")]["psnr_y"]
    assert after[str(src / "2.png")]["finished_at"] == before[str(src / "2.png")]["finished_at"]
    os.utime(src / "2.png")  # touched, same bytes: still done
    assert _done(run(*base)) == 3
    # the same run spelt with a relative input is the same run
    monkeypatch.chdir(tmp_path)
    rel = run("--input", os.path.relpath(src, tmp_path), "--output", str(out), "--gt", str(gt), *TINY)
    assert rel.returncode == 0 and _done(rel) == 3
    assert len(_rows(out)) == 3
    # without the ground truth the scores no longer apply; with a suffix the outputs are others
    assert _done(run(*base[:4], *TINY)) == 0
    proc = run(*base, "--suffix", "_x2")
    assert _done(proc) == 0
    # the new outputs' rows, and the old outputs' (still on disk, still what they wrote) beside them
    rows = _rows(out)
    assert sorted(Path(r["output"]).name for r in rows) == ["0.png", "0_x2.png", "1.png", "1_x2.png", "2.png", "2_x2.png"]
    assert all(r["output_stat"] == file_stamp(r["output"]) for r in rows)


def test_a_folder_moved_whole_resumes_where_it_is_now(tmp_path, one_ray, capsys):
    # A night of work was fitted again once its folder moved (mv keeps the outputs' stamps) or the
    # symlink it was given through went: the rows named the outputs by their old absolute paths. Each
    # row now names its output where the folder is. What is not the file its row wrote is still redone:
    # an output edited by hand, and a copy (cp gives it new stamps, and no row holds its output's hash).
    src, real, link, elsewhere = tmp_path / "in", tmp_path / "real", tmp_path / "link", tmp_path / "elsewhere"
    for i in range(3):
        _img(src / f"{i}.png", i)
    real.mkdir()
    elsewhere.mkdir()
    link.symlink_to(real)

    def run(out: Path) -> subprocess.CompletedProcess:
        proc = run_here(capsys, "--input", str(src), "--output", str(out), *TINY)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def stamps(out: Path) -> dict[str, str]:
        return {p.name: file_stamp(p) for p in out.glob("*.png")}

    def named_at(out: Path) -> None:  # each row names its output at the folder's place, and is true of it
        rows = _rows(out)
        assert sorted(r["output"] for r in rows) == [str(out / f"{i}.png") for i in range(3)]
        assert all(r["output_stat"] == file_stamp(r["output"]) and r["output_rel"] for r in rows)

    run(link)
    first = stamps(real)
    link.unlink()
    link.symlink_to(elsewhere)  # the link the folder was given through now points elsewhere
    dry = run_here(capsys, "--input", str(src), "--output", str(real), "--dry-run", *TINY)
    assert "3 item(s): 0 to do, 3 done before" in dry.stdout, dry.stdout
    assert _done(run(real)) == 3 and stamps(real) == first
    named_at(real)
    moved = tmp_path / "moved"
    real.rename(moved)  # mv, on the same file system
    real.symlink_to(elsewhere)  # and a link left at its old name, pointing elsewhere
    assert _done(run(moved)) == 3 and stamps(moved) == first
    named_at(moved)
    # a report made before rows kept output_rel resumes in place as it did, and gains the column
    old = _rows(moved)
    with open(moved / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [c for c in old[0] if c != "output_rel"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(old)
    assert "output_rel" not in (moved / "report.csv").read_text()
    assert _done(run(moved)) == 3 and _rows(moved) == old
    # moved again, with one output edited by hand: that one is fitted again, the others kept
    moved.rename(tmp_path / "again")
    moved = tmp_path / "again"
    with Image.open(moved / "1.png") as im:
        im.load()
        im.putpixel((0, 0), (0, 0, 0))
        im.save(moved / "1.png")
    dry = run_here(capsys, "--input", str(src), "--output", str(moved), "--dry-run", *TINY)
    assert "1 to do, 2 done before" in dry.stdout and "its output is not the file its row wrote" in dry.stdout
    assert _done(run(moved)) == 2
    assert {n: s for n, s in stamps(moved).items() if n != "1.png"} == {n: first[n] for n in ("0.png", "2.png")}
    named_at(moved)
    # a copy (new stamps) is fitted again, into the copy; the original is left as it was
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    before = (moved / "report.csv").read_bytes()
    assert _done(run(copy)) == 0
    named_at(copy)
    assert (moved / "report.csv").read_bytes() == before


def test_metadata_alone_fits_nothing_again_and_an_output_written_over_is(tmp_path, one_ray, capsys, monkeypatch):
    # A hostile tester's third round: resume compared an output's whole stamp, ctime included, so a
    # chmod of one output fitted it again, and a hard-link snapshot of the folder (cp -al, as
    # rsnapshot makes one) moved every output's ctime: the folder itself, never moved, was fitted
    # again whole. Metadata (chmod, chown, an xattr, a new hard link) leaves each image the file its
    # row wrote; what another run or an editor writes does not: a file renamed over an output (another
    # inode) even of the same size with its mtime put back to the nanosecond, and one written in place.
    src, out, snap = tmp_path / "in", tmp_path / "out", tmp_path / "snap"
    for i in range(3):
        _img(src / f"{i}.png", i)

    def run(folder: Path, *more: str) -> subprocess.CompletedProcess:
        proc = run_here(capsys, "--input", str(src), "--output", str(folder), *TINY, *more)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def held() -> dict[str, tuple[int, int, int]]:  # what tells one output file from another
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) for p in out.glob("*.png")}

    hashed: list[str] = []  # the inputs hashed again (a moved stamp costs a hash, not a fit)
    sha256 = storage.sha256
    monkeypatch.setattr(storage, "sha256", lambda p: hashed.append(Path(p).name) or sha256(p))
    run(out)
    first = held()
    os.chmod(out / "0.png", 0o444)
    os.chmod(out / "0.png", 0o644)
    os.chown(out / "1.png", os.getuid(), os.getgid())
    try:
        os.setxattr(out / "2.png", "user.checked", b"yes")
    except OSError:
        pass  # (a file system without user xattrs)
    subprocess.run(["cp", "-al", str(out), str(snap)], check=True)  # every output's link count and ctime move
    os.chmod(src / "0.png", 0o444)  # an input's ctime: hashed again once, not fitted
    hashed.clear()
    for folder in (out, snap):
        dry = run(folder, "--dry-run")
        assert "3 item(s): 0 to do, 3 done before" in dry.stdout, dry.stdout
    assert hashed == ["0.png", "0.png"]
    hashed.clear()
    assert _done(run(out)) == 3 and held() == first
    assert hashed == ["0.png"]  # and its row restamped: the next run hashes nothing
    hashed.clear()
    assert "0 to do, 3 done before" in run(out, "--dry-run").stdout and not hashed
    # a report of an earlier version, its stamps without the inode, resumes as it did, hashing nothing
    rows = _rows(out)
    for r in rows:
        for c in ("input_stat", "output_stat"):
            r[c] = ":".join(r[c].split(":")[:3])
    with open(out / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert _done(run(out)) == 3 and held() == first and not hashed
    assert all(r["output_stat"] == file_stamp(r["output"]) for r in _rows(out))  # restamped, the inode in
    # 1.png: other bytes renamed over it, of its size and mtime; 2.png: other bytes written in place
    for name, how in (("1.png", "replaced since by another file, or a copy"), ("2.png", "written over (or touched) since")):
        data, st = bytearray((out / name).read_bytes()), (out / name).stat()
        data[-20] ^= 0xFF
        if name == "1.png":
            (out / "other.tmp").write_bytes(data)
            os.utime(out / "other.tmp", ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(out / "other.tmp", out / name)
            assert (out / name).stat().st_size == st.st_size and (out / name).stat().st_mtime_ns == st.st_mtime_ns
        else:
            (out / name).write_bytes(data)
        dry = run(out, "--dry-run")
        assert f"{name} (its output is not the file its row wrote: {how})" in dry.stdout, dry.stdout
    assert "3 item(s): 2 to do, 1 done before" in dry.stdout
    assert _done(run(out)) == 1 and held()["0.png"] == first["0.png"]
    # the snapshot is a folder of its own: its 1.png is still the file its row wrote, its 2.png (one
    # file with the folder's, written in place) not
    dry = run(snap, "--dry-run")
    assert "3 item(s): 1 to do, 2 done before" in dry.stdout and "snap/2.png (its output is not" in dry.stdout


def test_an_output_rel_that_leaves_the_folder_is_not_followed(tmp_path):
    # (no Ray) report.csv edited by hand: an output_rel that is absolute, climbs out with '..', or
    # leads out through a symlink in the folder placed its row's output outside the folder (another
    # row for one input, two outputs counted in summary.csv). Such a cell is not followed, as a
    # manifest's output that leaves the folder is refused: the row keeps its output as written.
    out, elsewhere, report = tmp_path / "out", tmp_path / "elsewhere", tmp_path / "out" / "report.csv"
    rows = []
    elsewhere.mkdir()
    for name in "abc":
        _img(out / f"{name}.png", ord(name))
        shutil.copy2(out / f"{name}.png", elsewhere / f"{name}.png")  # the same size and mtime there
        rows.append({"input": str(tmp_path / f"in/{name}.png"), "output": str(out / f"{name}.png"), "status": "ok",
                     "key": f"folder {name}", "rel": f"{name}.png", "output_stat": file_stamp(out / f"{name}.png")})
    (out / "link").symlink_to(elsewhere)
    write_rows(report, rows)
    edited = _rows(out)
    assert [r["output_rel"] for r in edited] == ["a.png", "b.png", "c.png"]
    for r, rel in zip(edited, (str(elsewhere / "a.png"), "../elsewhere/b.png", "link/c.png")):
        r["output_rel"] = rel
    with open(report, "w", newline="") as f:
        writer = csv.DictWriter(f, list(edited[0]))
        writer.writeheader()
        writer.writerows(edited)
    assert sorted(r["output"] for r in read_rows(report).values()) == [str(out / f"{n}.png") for n in "abc"]
    assert sorted(read_report(report)["output"]) == [str(out / f"{n}.png") for n in "abc"]
    kept = kept_rows([], lambda item: resolve("fast"), report, overwrite=False)
    assert sorted(r["output"] for r in kept.rows.values()) == [str(out / f"{n}.png") for n in "abc"]
    write_rows(report, kept.rows.values())  # what a run starts its report with: each output_rel its own again
    assert [r["output_rel"] for r in _rows(out)] == ["a.png", "b.png", "c.png"]


def _terminated_after(proc: subprocess.Popen, out: Path, count: int, new: Callable[[dict[str, str]], bool]) -> None:
    """SIGTERM ``proc`` once report.csv has ``count`` rows that ``new`` says it wrote; it ends as a stop does."""
    t0 = time.time()
    while not (out / "report.csv").exists() or sum(map(new, _rows(out))) < count:
        assert time.time() - t0 < 180, "no row in 3 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143


@pytest.mark.slow
def test_sigterm_ends_like_a_first_ctrl_c_and_a_stopped_rerun_keeps_every_row(tmp_path, joining_one_ray, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    proc = _images_and_start(src, out, 8, "--max-iters", "60", "--pack", "1", env=joining_one_ray)
    _terminated_after(proc, out, 4, lambda r: True)
    finished = {r["input"]: r for r in _rows(out) if r["status"] == "ok"}
    assert finished and (out / "summary.csv").is_file() and (out / "run.json").is_file()
    assert "terminated" in (out / "run.json").read_text()
    # A rerun with other settings, stopped after its first image (one more in flight): the first
    # run's rows stay (each still describes its output on disk) until the new settings redo their
    # images; those the stopped run's last pack wrote over, with no row, go with it.
    stamps = {i: file_stamp(r["output"]) for i, r in finished.items()}
    proc = _start(src, out, "--max-iters", "61", "--pack", "1", env=joining_one_ray)
    old_hash = next(iter(finished.values()))["config_hash"]
    _terminated_after(proc, out, 1, lambda r: r["config_hash"] != old_hash)
    rows = {r["input"]: r for r in _rows(out)}
    assert len(_rows(out)) == len(rows)  # one row per image: the redone images' old rows went
    assert all(file_stamp(r["output"]) == r["output_stat"] for r in rows.values())  # each true of its file
    untouched = {i for i in finished if file_stamp(finished[i]["output"]) == stamps[i]}
    assert untouched, "the stopped rerun wrote every output: nothing left to keep"
    assert all(rows[i] == finished[i] for i in untouched)
    redone = {i for i, r in rows.items() if r["config_hash"] != old_hash}
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[1].split(",")[1] == str(len(rows)), summary  # ALL's images: each row once
    (out / ".zssr-killed.part").write_bytes(b"\x89PNG")  # what a run killed as it wrote a file leaves
    again = run_here(capsys, "--input", str(src), "--output", str(out), *TINY, "--max-iters", "61", "--pack", "1")
    assert again.returncode == 0 and _done(again) == len(redone)
    assert not list(out.rglob("*.part"))


def test_rows_of_other_keys_stay_until_their_outputs_are_written_and_go_once_their_files_do(tmp_path):
    # (no Ray) a folder run's rows, and a manifest whose rows carry settings of their own: other keys
    # for the same outputs. Its first rows replace the old ones; an old row whose output is deleted,
    # or written over by a stopped fit that wrote no row, goes.
    out, report = tmp_path / "out", tmp_path / "out" / "report.csv"
    rows = []
    for name in "abcd":
        _img(out / f"{name}.png", ord(name))
        rows.append({"input": str(tmp_path / f"in/{name}.png"), "output": str(out / f"{name}.png"), "status": "ok",
                     "key": f"folder {name}", "output_stat": file_stamp(out / f"{name}.png")})
    write_rows(report, rows)
    (out / "c.png").unlink()  # by hand
    os.chmod(out / "b.png", 0o640)  # its ctime moves, not its image (as a cp -a of the folder does)
    manifest = [WorkItem(str(tmp_path / f"in/{n}.png"), str(out / f"{n}.png"), key=f"manifest {n}") for n in "ad"]
    kept = kept_rows(manifest, lambda item: resolve("fast"), report, overwrite=False)
    assert set(kept.rows) == {"folder a", "folder b", "folder d"} and kept.done == set()
    assert kept.provisional == {"folder a", "folder d"}  # the manifest writes their outputs
    writer = ReportWriter(report, kept.rows.values())
    _img(out / "a.png", 9)  # the manifest's first image, and its row
    writer.write({**rows[0], "key": "manifest a", "output_stat": file_stamp(out / "a.png")})
    _img(out / "d.png", 10)  # its second, in flight when the run stopped: written, no row
    writer.close()
    compact(report, kept.provisional)
    assert [r["key"] for r in _rows(out)] == ["folder b", "manifest a"]


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("a small tmpfs needs mount (root): the disk-full test runs as root, as CI does")


@pytest.mark.slow
def test_a_full_disk_stops_the_run_cleanly_and_a_rerun_completes(tmp_path, one_ray, capsys):
    src, out = tmp_path / "in", tmp_path / "small"
    for i in range(12):
        _img(src / f"{i}.png", i, 64, 64)
    _mount_tmpfs(out, "1m")
    try:
        ballast = out / "ballast"
        ballast.write_bytes(b"\0" * 1_020_000)  # leaves 7 pages of 4 KiB: room for a few outputs only
        proc = run_here(capsys, "--input", str(src), "--output", str(out), *TINY)
        assert proc.returncode == 4, (proc.returncode, proc.stderr)
        assert "disk full" in proc.stderr.lower() or "no space left" in proc.stderr.lower()
        rows = _rows(out)  # the report reads whole: no torn row
        assert all(r["status"] in ("ok", "failed") and r["input"] for r in rows)
        assert not list(out.rglob("*.part"))
        ballast.unlink()
        again = run_here(capsys, "--input", str(src), "--output", str(out), *TINY)
        assert again.returncode == 0, again.stderr
        rows = _rows(out)
        assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


def _main(*args: str) -> tuple[int, str]:
    """The command line in this process (one Ray for several runs: ``one_ray``), with its stdout."""
    import contextlib
    import io

    from zssr_batch.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["run", *args])
    return rc, buf.getvalue()


@pytest.mark.slow
def test_a_hostile_testers_second_round_each_case_ends_with_one_right_row(tmp_path, one_ray, capsys):
    # 1. --output above --input, with a subfolder of the same name: in/in/a.png's output was in/a.png,
    #    an input of the same run, overwritten.
    _img(tmp_path / "p" / "in" / "a.png", 1)
    _img(tmp_path / "p" / "in" / "in" / "a.png", 2)
    before = (tmp_path / "p" / "in" / "a.png").read_bytes()
    assert _main("--input", str(tmp_path / "p" / "in"), "--output", str(tmp_path / "p"), *TINY)[0] == 1
    assert (tmp_path / "p" / "in" / "a.png").read_bytes() == before
    refused = [r for r in _rows(tmp_path / "p") if r["status"] == "failed"]
    assert len(refused) == 1 and "is the input" in refused[0]["error"], refused

    # 2. Two input folders into one --output, then the first again: its output had become the
    #    second's picture, and the rerun called it done.
    for name, seed in (("x1", 3), ("x2", 4)):
        _img(tmp_path / name / "a.png", seed)
    ox = tmp_path / "ox"
    for name in ("x1", "x2", "x1"):
        rc, out = _main("--input", str(tmp_path / name), "--output", str(ox), *TINY)
        assert rc == 0
    assert _done(subprocess.CompletedProcess([], 0, out, "")) == 0  # redone, not "already done"
    rows = _rows(ox)
    assert len(rows) == 1 and rows[0]["input"] == str(tmp_path / "x1" / "a.png")  # one row per output

    # 3. A carriage return in a name, and 4. a name of 253 bytes (its curve's name was too long).
    names = tmp_path / "names"
    odd = ["cr\rret.png", "b" * 249 + ".png"]
    for i, n in enumerate(odd):
        _img(names / n, i)
    on = tmp_path / "on"
    report_pictures = [a for a in TINY if a != "--no-report-images"]
    assert _main("--input", str(names), "--output", str(on), *report_pictures)[0] == 0
    assert sorted(Path(r["input"]).name for r in _rows(on)) == sorted(odd)
    assert all(r["status"] == "ok" for r in _rows(on)) and (on / "report.html").is_file()
    rc, out = _main("--input", str(names), "--output", str(on), *report_pictures)
    assert rc == 0 and _done(subprocess.CompletedProcess([], 0, out, "")) == 2 and len(_rows(on)) == 2

    # 5. A manifest value given as a list ({"scale": [2, 2]}) crashed the run ("unhashable type");
    #    and "2" in a CSV names the same row as 2 in a JSONL.
    _img(tmp_path / "m" / "g.png", 5)
    (tmp_path / "m" / "a.jsonl").write_text('{"input": "g.png", "scale": [2, 2]}\n')
    (tmp_path / "m" / "a.csv").write_text("input,scale\ng.png,2\n")
    om = tmp_path / "om"
    assert _main("--input", str(tmp_path / "m" / "a.jsonl"), "--output", str(om), *TINY)[0] == 0
    rc, out = _main("--input", str(tmp_path / "m" / "a.csv"), "--output", str(om), *TINY)
    assert rc == 0 and _done(subprocess.CompletedProcess([], 0, out, "")) == 1 and len(_rows(om)) == 1

    # 10. One output as a file and as the folder of another: refused before any work, naming both.
    _img(tmp_path / "t3" / "a.jpg", 6)
    _img(tmp_path / "t3" / "a.png" / "c.png", 7)
    capsys.readouterr()
    assert _main("--input", str(tmp_path / "t3"), "--output", str(tmp_path / "o3"), "--ext", "png", *TINY)[0] == 2
    err = capsys.readouterr().err
    assert "a.jpg" in err and "c.png" in err and "as a folder" in err

    # 11. A .report symlink already in --output: the pictures went through it, outside --output.
    (tmp_path / "o7").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "o7" / ".report").symlink_to(tmp_path / "elsewhere")
    assert _main("--input", str(tmp_path / "x1"), "--output", str(tmp_path / "o7"), *report_pictures)[0] == 2
    assert "is a symlink" in capsys.readouterr().err and not list((tmp_path / "elsewhere").iterdir())


def test_a_manifest_column_that_repeats_the_runs_setting_redoes_nothing(tmp_path, one_ray, capsys):
    # A folder run, then a manifest of the same images beside them (its outputs are the same files) whose
    # `scale` column says what the run asks anyway: the same settings, input and output under another
    # report key. Nothing is fitted again, the dry run says so, and each image keeps one row. A row of
    # other settings is redone, and the dry run says why.
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(2):
        _img(src / f"{i}.png", i)
    assert run_here(capsys, "--input", str(src), "--output", str(out), *TINY).returncode == 0
    stats = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (src / "m.csv").write_text("input,scale\n0.png,2\n1.png,\n")
    dry = run_here(capsys, "--input", str(src / "m.csv"), "--output", str(out), "--dry-run", *TINY)
    assert "2 item(s): 0 to do, 2 done before" in dry.stdout, dry.stdout
    again = run_here(capsys, "--input", str(src / "m.csv"), "--output", str(out), *TINY)
    assert again.returncode == 0 and _done(again) == 2, again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stats
    assert sorted(Path(r["output"]).name for r in _rows(out)) == ["0.png", "1.png"]
    (src / "m.csv").write_text("input,max_iters\n0.png,3\n1.png,\n")
    dry = run_here(capsys, "--input", str(src / "m.csv"), "--output", str(out), "--dry-run", *TINY)
    assert "1 to do, 1 done before" in dry.stdout and "(other settings)" in dry.stdout, dry.stdout


def test_rows_follow_their_outputs_when_a_manifest_points_images_elsewhere(tmp_path, one_ray, capsys):
    # A hostile tester's cases against moving rows between report keys: an image listed twice in one
    # manifest, one line taking the folder run's output and one writing a new one; a manifest that
    # points an image at a new output (the old output's row stays its row); a byte-identical copy of
    # an input is another input; --overwrite with --glob redoes only what it covers; --glob filters a
    # manifest's lines.
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(2):
        _img(src / f"{i}.png", i)

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = run_here(capsys, "--output", str(out), *TINY, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def stamps() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}

    def outputs() -> list[str]:
        return sorted(Path(r["output"]).name for r in _rows(out))

    run("--input", str(src))
    (src / "m.csv").write_text("input,scale,output\n0.png,,0b.png\n0.png,2,0.png\n")
    dry = run("--input", str(src / "m.csv"), "--dry-run")
    assert "1 to do, 1 done before" in dry.stdout and "(None)" not in dry.stdout, dry.stdout
    before = stamps()
    run("--input", str(src / "m.csv"))
    assert stamps()["0.png"] == before["0.png"]  # the same work under another key: not fitted again
    assert outputs() == ["0.png", "0b.png", "1.png"]
    before = stamps()
    assert _done(run("--input", str(src))) == 2 and stamps() == before
    assert outputs() == ["0.png", "0b.png", "1.png"]  # 0b.png's row stays while 0b.png is its result
    dry = run("--input", str(src / "m.csv"), "--dry-run")  # and back again: each line finds its row
    assert "0 to do, 2 done before" in dry.stdout, dry.stdout
    (src / "m.csv").write_text("input,output\n1.png,1new.png\n")
    run("--input", str(src / "m.csv"))
    assert outputs() == ["0.png", "0b.png", "1.png", "1new.png"]
    assert _done(run("--input", str(src))) == 2 and stamps() == {**before, "1new.png": stamps()["1new.png"]}
    # a copy with the same bytes is another input: its line is fitted, not taken as done
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "0.png").write_bytes((src / "0.png").read_bytes())
    (tmp_path / "w" / "m.csv").write_text("input,output\n0.png,0.png\n")
    dry = run("--input", str(tmp_path / "w" / "m.csv"), "--dry-run")
    assert "1 to do, 0 done before" in dry.stdout and f"(its output holds the result of {src / '0.png'})" in dry.stdout
    # --overwrite redoes what the run covers and keeps the rest
    before = stamps()
    run("--input", str(src), "--overwrite", "--glob", "1*")
    after = stamps()
    assert after["1.png"] != before["1.png"] and after["0.png"] == before["0.png"]
    assert outputs() == ["0.png", "0b.png", "1.png", "1new.png"]
    # --glob takes a manifest's lines by their input's path
    (src / "m.csv").write_text("input,max_iters\n0.png,3\n1.png,3\n")
    dry = run("--input", str(src / "m.csv"), "--glob", "1*", "--dry-run")
    assert "1 item(s): 1 to do" in dry.stdout, dry.stdout
