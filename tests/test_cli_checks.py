"""Settings that can be checked before any work are checked before any work: one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import DATA, needs_data, run_here
from report_rows import rows as rows_of
from zssr_batch.cli import main


@pytest.mark.parametrize("flag,value,says", [
    ("--pack", "-1", "must be at least 0"), ("--batch", "-3", "must be at least 1"),
    ("--workers", "0", "must be at least 1"), ("--gpus", "-1", "must be at least 0"),
    ("--ext", "xyz", "cannot write 'xyz' files"), ("--suffix", "/../../x", "cannot hold a path separator"),
    ("--retries", "two", "expected a whole number"),
])
def test_bad_run_settings_stop_before_any_work(tmp_path, capsys, flag, value, says):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--input", str(tmp_path), "--output", str(tmp_path / "out"), flag, value])
    assert stop.value.code == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was started


@needs_data
def test_a_benchmark_set_without_the_asked_scale_is_refused(tmp_path, capsys):
    rc = main(["run", "--input", str(DATA / "Set5"), "--output", str(tmp_path / "out"), "--scale", "5",
               "--gpus", "0"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "LR_bicubic/X2, X3, X4 but no inputs at x5" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting,value,says", [
    ("--seed", "1.5", "seed: expected a whole number, got '1.5'"),
    ("--learning-rate", "nan", "learning_rate: expected a finite number"),
    ("--address", "ray://10.0.0.1:10001", "Ray Client (ray://) addresses are not supported"),
    ("--kernel", "/nonexistent/k.npy", "/nonexistent/k.npy: no such kernel file"),
    ("--scale", "1", "scale must be at least 1 on each axis and more than 1 on one (an upscale), got (1.0, 1.0)"),
    ("--scale", "0.5,2", "more than 1 on one (an upscale), got (0.5, 2.0)"),  # (both were accepted)
    # fitted on sons the size of their fathers, into outputs a rounded-up pixel larger (it was accepted)
    ("--scale", "1.0000001", "a factor of 1.0000001 is under a pixel on the 128x128 training crops (shrunk by it, a "
                             "crop keeps its 128 pixels), so the fit would learn nothing; a factor over 1 must be at "
                             "least 128/127"),
    ("--scale", "1.0000001,2", "a factor of 1.0000001 is under a pixel on the 128x128 training crops"),
])
def test_settings_that_cannot_work_say_so_naming_themselves(tmp_path, capsys, setting, value, says):
    # (they once said "invalid literal for int()", started Ray to fail every row, or a traceback)
    (tmp_path / "in").mkdir()
    rc = main(["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), setting, value])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0.5", "1", "nan"])
def test_degrade_refuses_a_scale_that_would_not_shrink(tmp_path, capsys, value):
    # degrade --scale 0.5 enlarged each image, and 1 copied it: neither is a low-resolution input
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["degrade", str(tmp_path / "a.png"), "-o", str(tmp_path / "out.png"), "--scale", value]) == 2
    assert f"it must be a finite number over 1, got {float(value):g}" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_a_manifest_line_whose_scale_is_under_a_pixel_fails_alone(tmp_path, one_ray, capsys):
    # A line's own scale under a pixel on the training crops fails that line, naming the file and the
    # line; so does one under a pixel on the crops of its small image (crops are at most the image),
    # and the run goes on with the other lines.
    import numpy as np
    from PIL import Image

    for name in ("a", "b", "c"):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "m.csv").write_text("input,scale,crop\na.png,1.0000001,\nb.png,1.02,64\nc.png,,\n")
    proc = run_here(capsys, "--input", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"), "--crop", "12",
                    "--max-iters", "2", "--width", "8", "--back-projection-iters", "1", "--no-progress", "--gpus", "0",
                    "--workers", "1", "--no-report-images")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {Path(r["input"]).name: r for r in rows_of(tmp_path / "out")}
    assert rows["c.png"]["status"] == "ok"
    assert rows["a.png"]["status"] == rows["b.png"]["status"] == "failed"
    assert rows["a.png"]["error"].startswith(f"{tmp_path / 'a.png'} (m.csv line 2): invalid settings: scale "
                                             "(1.0000001, 1.0000001): a factor of 1.0000001 is under a pixel on the "
                                             "12x12 training crops"), rows["a.png"]["error"]
    assert rows["b.png"]["error"] == f"{tmp_path / 'b.png'}: image 24x20 is too small for x1.02: a factor of 1.02 " \
                                     "is under a pixel on its 20x20 training crops, so the fit would learn nothing"
    assert not (tmp_path / "out" / "a.png").exists() and not (tmp_path / "out" / "b.png").exists()
