"""The benchmark layout (``HR/`` beside ``LR_<name>/X<s>/``): what pairs with what, which folder a
run reads, what it refuses, and outputs named after the ground truth (``SR/X<s>/NAME.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, names, needs_data
from zssr_batch.files.plan import PlanError, plan_outputs
from zssr_batch.files.sources import ScanOptions, check_layout, scan


def _scan(root: Path, out: Path, **opts):
    o = ScanOptions(output_dir=out, **opts)
    check_layout(root, o)
    return list(scan(root, o))


def _set(root: Path, files: list[str]) -> Path:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        if f.endswith(".npy"):
            np.save(root / f, np.ones((3, 3)))
        else:
            Image.new("RGB", (8, 8)).save(root / f)
    return root


@needs_data
@pytest.mark.parametrize("where", ["Set5", "Set5/LR_bicubic", "Set5/LR_bicubic/X2"])
def test_set5_outputs_are_named_after_their_ground_truth(tmp_path, where):
    out = tmp_path / "out"
    items = _scan(DATA / where, out, scale=2.0)
    assert [Path(i.output).relative_to(out).as_posix() for i in items] == [f"SR/X2/{n}.png" for n in names("Set5")]
    assert [Path(i.gt) for i in items] == [DATA / "Set5/HR" / f"{n}.png" for n in names("Set5")]
    assert all(Path(i.input).parent == DATA / "Set5/LR_bicubic/X2" and not i.overrides for i in items)
    # the report still names each row by its input, under the folder given
    # (Set5/LR_bicubic was scanned whole: every scale's inputs at x2, with no ground truth)
    assert items[0].rel == {"Set5": "LR_bicubic/X2/babyx2.png", "Set5/LR_bicubic": "X2/babyx2.png"}.get(
        where, "babyx2.png")
    # --suffix and --ext apply to the new name as to any other
    items = _scan(DATA / where, out, scale=2.0, suffix="_zssr", ext=".jpg")
    assert Path(items[0].output) == out / "SR/X2/baby_zssr.jpg"


@needs_data
def test_a_sets_lr_folder_at_another_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"holds the x4 inputs of the benchmark set .*Set5, not inputs at x2; "
                                         r"give --scale 4"):
        _scan(DATA / "Set5/LR_bicubic/X4", tmp_path / "out", scale=2.0)


@needs_data
def test_a_sets_lr_folder_without_the_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"LR_bicubic holds X2, X3, X4 of the benchmark set .*Set5, no inputs at "
                                         r"x5; give one of those scales"):
        _scan(DATA / "Set5/LR_bicubic", tmp_path / "out", scale=5.0)


def test_subfolders_pair_by_their_place_and_bicubic_takes_no_kernel(tmp_path):
    bench = _set(tmp_path / "set", ["HR/sub/a.png", "HR/b.png", "LR_bicubic/X2/sub/ax2.png", "LR_bicubic/X2/bx2.png",
                                    "kernels/X2/sub/ax2.npy", "kernels/X2/bx2.npy"])
    items = _scan(bench, tmp_path / "out", scale=2.0)
    assert [(Path(i.input).relative_to(bench).as_posix(), Path(i.gt).relative_to(bench).as_posix(),
             Path(i.output).relative_to(tmp_path / "out").as_posix()) for i in items] == [
        ("LR_bicubic/X2/bx2.png", "HR/b.png", "SR/X2/b.png"),
        ("LR_bicubic/X2/sub/ax2.png", "HR/sub/a.png", "SR/X2/sub/a.png")]
    assert not any(i.overrides for i in items)  # LR_bicubic is bicubic by its name, whatever lies beside it


def test_two_lr_folders_at_one_scale_ask_which(tmp_path):
    bench = _set(tmp_path / "set", ["HR/a.png", "LR_bicubic/X2/ax2.png", "LR_randomkernel/X2/ax2.png",
                                    "kernels/X2/ax2.npy"])
    with pytest.raises(ValueError, match=r"holds inputs at x2 in LR_bicubic and LR_randomkernel; give --input one of "
                                         r".*LR_bicubic/X2, .*LR_randomkernel/X2"):
        _scan(bench, tmp_path / "out", scale=2.0)
    with pytest.raises(ValueError, match=r"set with LR_bicubic/X2; LR_randomkernel/X2 but no inputs at x3"):
        _scan(bench, tmp_path / "out", scale=3.0)
    (item,) = _scan(bench / "LR_randomkernel/X2", tmp_path / "out", scale=2.0)
    assert item.overrides == (("kernel", str(bench / "kernels/X2/ax2.npy")),)
    # --degrade on the set makes its inputs from HR/ alone
    (item,) = _scan(bench, tmp_path / "out", scale=2.0, degrade=True)
    assert item.input == item.gt == str(bench / "HR/a.png")


def test_two_inputs_of_one_ground_truth_stop_the_run_naming_both(tmp_path):
    # ax2.png and a.png both name the ground truth a: one output, refused before any work
    bench = _set(tmp_path / "set", ["HR/a.png", "LR_bicubic/X2/a.png", "LR_bicubic/X2/ax2.png"])
    with pytest.raises(PlanError, match=r"X2/a\.png and .*X2/ax2\.png would both write .*SR/X2/a\.png"):
        plan_outputs(_scan(bench, tmp_path / "out", scale=2.0), tmp_path / "out")
