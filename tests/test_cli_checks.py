"""Settings that can be checked before any work are checked before any work: one line, exit 2."""

from __future__ import annotations

import pytest

from conftest import DATA, needs_data
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
