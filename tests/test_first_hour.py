"""A newcomer's first hour: help that says what each flag takes and its default, mistakes answered in
two lines, ``--dry-run``, and what a run shows on a real terminal (a pty) while it works."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, needs_data
from ray_nodes import free_port
from zssr_batch.cli import main


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zssr_batch", *args], capture_output=True, text=True, **kw)


def test_run_help_is_grouped_and_shows_every_default():
    out = _cli("run", "--help").stdout
    for group in ("inputs:", "outputs:", "run:", "cluster:", "report:", "engine ("):
        assert f"\n{group}" in out, group
    flat = " ".join(out.split())  # (argparse wraps the help text)
    assert "--max-iters N training steps at most (per scale step) (default: 3000)" in flat
    assert "--retries N resubmissions of an image whose worker died (default: 2)" in flat
    assert "--max-pixels N refuse inputs with more pixels than this (default: 100000000)" in flat
    assert "--scale S" in flat and "(default: 2)" in flat
    assert "--reinit-each-step, --no-reinit-each-step" in flat  # a flag, not a value
    assert " V " not in out and "exit codes:" in out and "examples:" in out
    assert "`" not in _cli("--help").stdout  # no reST markup in the top-level text
    assert "samples" in _cli("--help").stdout


def test_a_boolean_setting_is_a_flag_both_ways(tmp_path):
    from zssr_batch.cli import build_parser, engine_config

    parse = build_parser().parse_args
    common = ["run", "--input", "x", "--output", "y"]
    assert engine_config(parse(common + ["--reinit-each-step"])).reinit_each_step is True
    assert engine_config(parse(common + ["--preset", "gradual-x2", "--no-reinit-each-step"])).reinit_each_step \
        is False


def test_mistakes_get_two_lines_and_a_suggestion(capsys):
    bad = _cli("run", "--input", "x", "--output", "y", "--iters", "3")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "zssr-batch run: error: unrecognized arguments: --iters (did you mean --max-iters or --min-iters?)",
        "see 'zssr-batch run --help'"]
    typo = _cli("run", "--input", "x", "--output", "y", "--pakc", "2")
    assert "--pakc (did you mean --pack?)" in typo.stderr
    # a mistyped required flag is named as the mistake, not as 'required: --input'
    assert "--inptu (did you mean --input?)" in _cli("run", "--inptu", "x", "--output", "y").stderr
    # no guessing from abbreviations: --gpu is not quietly --gpus, nor --out a second --output
    assert "--gpu (did you mean --gpus?)" in _cli("run", "--input", "x", "--output", "y", "--gpu", "1").stderr
    assert "--out (did you mean --output?)" in _cli("run", "--input", "x", "--output", "y", "--out", "z").stderr
    device = _cli("run", "--input", "x", "--output", "y", "--device", "gpu")
    assert device.returncode == 2 and "expected cpu, cuda, cuda:N or auto, got 'gpu'" in device.stderr
    choice = _cli("run", "--input", "x", "--output", "y", "--preset", "papr")
    assert choice.returncode == 2 and len(choice.stderr.splitlines()) == 2  # not 22 lines of usage first
    assert "invalid choice: 'papr'" in choice.stderr


@needs_data
def test_dry_run_lists_the_set5_layout_without_ray_or_files(tmp_path):
    out = tmp_path / "out"
    # In a fresh interpreter: Ray not even imported, and nothing written.
    code = ("import sys; from zssr_batch.cli import main; "
            f"rc = main(['run', '--input', {str(DATA / 'Set5')!r}, '--output', {str(out)!r}, '--scale', '2', "
            "'--dry-run']); print('RAY IMPORTED' if 'ray' in sys.modules else 'no ray'); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("no ray")
    assert not out.exists()
    names = ("baby", "bird", "butterfly", "head", "woman")
    for name in names:
        assert f"gt: {DATA / 'Set5' / 'HR' / name}.png; kernel: bicubic" in res.stdout
    assert "5 item(s): 5 to do, 0 done before (a run keeps them), 0 refused" in res.stdout
    assert res.stdout.count("  to do  ") == 5


def test_dry_run_says_what_a_rerun_keeps_and_what_it_refuses(tmp_path, one_ray, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(src / f"{name}.png")
    tiny = ["--max-iters", "2", "--crop", "8", "--width", "8", "--back-projection-iters", "1", "--no-progress",
            "--gpus", "0", "--pack", "1"]
    assert main(["run", "--input", str(src), "--output", str(out), *tiny]) == 0
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(src / "c.png")
    (src / "b.gif").write_bytes((src / "b.png").read_bytes())  # b.gif and b.png: one output, refused
    capsys.readouterr()
    assert main(["run", "--input", str(src), "--output", str(out), *tiny, "--dry-run"]) == 2
    assert "b.gif" in capsys.readouterr().err  # a plan the run refuses is refused by its dry run too
    (src / "b.gif").unlink()
    rows_before = (out / "report.csv").read_bytes()
    assert main(["run", "--input", str(src), "--output", str(out), *tiny, "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert re.search(r"1  done\s+\S*a\.png", said) and re.search(r"3  to do\s+\S*c\.png", said)
    assert "3 item(s): 1 to do, 2 done before" in said
    # an item done before but to do again says why
    (out / "b.png").unlink()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(src / "a.png")
    assert main(["run", "--input", str(src), "--output", str(out), *tiny, "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "a.png (the input changed)" in said and "b.png (its output is gone)" in said
    assert (out / "report.csv").read_bytes() == rows_before


def test_dry_run_refuses_what_the_run_would_fail_at_once(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(src / f"{name}.png")
    (src / "junk.png").write_bytes(b"not a picture")
    (src / "list.csv").write_text("input,gt,output\na.png,nogt.png,a.png\nb.png,,b.xyz\nc.png,,c.png\n"
                                  "junk.png,,j.png\n")
    code = main(["run", "--input", str(src / "list.csv"), "--output", str(tmp_path / "out"), "--dry-run"])
    cap = capsys.readouterr()
    said = cap.out
    assert code == 1, cap.err  # as a run with failed rows
    assert "its ground truth" in said and "nogt.png is not there" in said
    assert "cannot write its output" in said and "'.xyz' is not one of" in said
    assert "junk.png: not an image this run can read" in said
    assert "4 item(s): 1 to do, 0 done before (a run keeps them), 3 refused" in said
    assert main(["run", "--input", str(src), "--output", str(tmp_path / "o2"), "--max-pixels", "200",
                 "--dry-run"]) == 1
    assert "16x16 exceeds --max-pixels 200" in capsys.readouterr().out
    # an --output that is a file is refused as the run refuses it: one line, exit 2
    assert main(["run", "--input", str(src), "--output", str(src / "a.png"), "--dry-run"]) == 2
    assert "--output is a file, not a folder" in capsys.readouterr().err


def _pty_run(cmd: list[str], env: dict[str, str], timeout: float = 400) -> str:
    """Run ``cmd`` on a pseudo-terminal 120 columns wide, as a user's shell would; all it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks, t0 = [], time.monotonic()
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("the run did not end")
    proc.wait()
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_a_run_on_a_terminal_says_what_it_does(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(src / f"{i}.png")
    marker = tmp_path / "killed"
    # A cluster once started on this machine with `ray start`, and dead since: Ray's temp folder still
    # names it (ray_current_cluster), and a plain ray.init() would try to join it and fail. The run
    # starts its own, as it says. (A temp folder of the test's: Ray's socket paths must be short.)
    ray_tmp = Path(tempfile.mkdtemp(prefix="zr", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    env = {**os.environ, "ZSSR_BATCH_FAULT": f"kill:1.png:{marker}", "PYTHONUNBUFFERED": "1",
           "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_AUTH_MODE", None)  # as a newcomer's shell: Ray would announce its token mode
    try:
        said = _pty_run([sys.executable, "-m", "zssr_batch", "run", "--input", str(src), "--output", str(out),
                         "--gpus", "0", "--workers", "1", "--threads", "1", "--pack", "1", "--max-iters", "600",
                         "--min-iters", "600", "--crop", "12", "--width", "8", "--back-projection-iters", "1"], env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    # (600 steps: a few seconds of training an image, so that the bar's once-a-second polls see steps)
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", said)) if ln.strip()]
    assert marker.exists()  # the worker was killed mid-fit, with the bar on
    first_bar = next(i for i, ln in enumerate(lines) if re.search(r"\d+/3 img", ln))
    assert any("starting Ray on this machine" in ln for ln in lines[:first_bar])  # said before the bar
    assert any("warming up" in ln for ln in lines)
    assert "Token authentication" not in said and "Started a local Ray" not in said  # Ray's own lines
    # one line for the death, written above the bar, and none of Ray's own
    assert sum("worker died with 1 image(s) started; retrying 1.png alone (attempt 2)" in ln for ln in lines) == 1
    assert "A worker died or was killed" not in said
    assert any("steps/s" in ln and "ETA" in ln for ln in lines)  # the rate comes from training steps
    for ln in lines:  # the counts move with the bar: n images shown, n counted
        m = re.search(r"(\d+)/3 img \[[^,\]]*, ok (\d+), failed (\d+)", ln)
        if m:
            assert int(m[1]) == int(m[2]) + int(m[3]), ln
    assert lines[-2] == f"rows:   {out / 'report.csv'}" and lines[-1] == f"report: {out / 'report.html'}"


def test_the_bar_says_when_kernels_are_being_estimated():
    # --kernel estimate at the authors' 3000 steps trains kernel estimators for minutes before a
    # first fit steps: the bar said 'warming up' all along, as if nothing ran
    from zssr_batch.run.progress import Progress

    p = Progress(3, enabled=False, expected_steps=10)
    assert p.describe("warming up ") == "warming up "  # nothing stepped yet
    p.steps.kernels = 40
    assert p.describe("warming up ") == "estimating kernels "
    p.steps.total = 1  # a fit has stepped: the bar's own counts say the rest
    assert p.describe("estimating kernels ") == "" and p.describe("warming up ") == ""
    assert p.describe("stopping: Ctrl-C ") == "stopping: Ctrl-C "  # what the run says is not overwritten


def test_a_stdout_that_cannot_encode_a_name_writes_it_as_an_escape():
    # PYTHONIOENCODING=ascii (or an old locale): a finished run printed its summary, met a folder
    # named café, and ended "error: 'ascii' codec can't encode" with exit 2
    import io

    from zssr_batch.files.display import tolerant_output

    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    saved = sys.stdout
    sys.stdout = out
    try:
        tolerant_output()
        print("café/ \udcff")
        out.flush()
    finally:
        sys.stdout = saved
    assert out.buffer.getvalue() == b"caf\\xe9/ \\udcff\n"
