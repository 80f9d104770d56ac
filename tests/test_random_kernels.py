"""``degrade --random-kernels``: the authors' BlindSR_dataset_generator recipe, its files, and a
``run`` that pairs each LR image with its ground truth and kernel by itself."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from scipy.io import loadmat

from conftest import needs_data, hr_path
from report_rows import rows as _rows
from zssr_batch.cli import main
from zssr_batch.config import resolve
from zssr_batch.engine.kernels import load_kernel, random_kernel, random_kernel_size, shift_kernel
from zssr_batch.engine.resize import imresize
from zssr_batch.files.degrade import blur_picture, degrade_random_kernels, kernel_rng
from zssr_batch.files.images import Picture, load_image
from zssr_batch.files.sources import ScanOptions, scan

SCALES = (2, 3, 4)


def _hr_folder(folder: Path, names=("baby", "bird", "head"), size=(41, 37)) -> Path:
    """Small crops of Set5's ground truths (odd sizes: the set crops them to a multiple of the scale)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.open(hr_path("Set5", n)).crop((100, 100, 100 + size[1], 100 + size[0])).save(folder / f"{n}.png")
    return folder


def _moments(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre of mass, eigenvalues of the second central moments), in (row, column) pixels."""
    y, x = np.mgrid[0:k.shape[0], 0:k.shape[1]]
    cy, cx = ndimage.center_of_mass(k)
    cov = [[(k * (x - cx) ** 2).sum(), (k * (x - cx) * (y - cy)).sum()],
           [(k * (x - cx) * (y - cy)).sum(), (k * (y - cy) ** 2).sum()]]
    return np.array([cy, cx]), np.sort(np.linalg.eigvalsh(cov))


@pytest.mark.parametrize("s", SCALES)
def test_the_recipe_over_many_seeds(s):
    lo, hi = 0.175 * s, 2.5 * s
    variances, angles = [], []
    for seed in range(200):
        rk = random_kernel(s, np.random.default_rng(seed))
        k = rk.kernel
        variances += rk.variances
        angles.append(rk.angle)
        n = random_kernel_size(s) + 4  # the shift pads 2 taps a side (1 + the shift rounded up)
        assert k.shape == (n, n) and abs(k.sum() - 1) < 1e-12
        # the authors' kernel_shift: centre of mass at shape // 2 + (s - shape % 2) / 2 (their utils.py)
        centre, eig = _moments(k)
        np.testing.assert_allclose(centre, n // 2 + 0.5 * (s - n % 2), atol=1e-3)
        # The kernel's own spread follows the drawn variances; the +-0.4 noise per tap and the spline
        # shift move it (within 16 % in 300 draws at each scale), never to another scale's range.
        np.testing.assert_allclose(eig, sorted(rk.variances), rtol=0.2)
    variances = np.array(variances)
    assert lo <= variances.min() and variances.max() <= hi
    # uniform over the range: 400 draws reach within 5 % of each end (a miss has odds 0.95^400, 1e-9)
    assert variances.min() < lo + 0.05 * (hi - lo) and variances.max() > hi - 0.05 * (hi - lo)
    assert 0 <= min(angles) < 0.05 * math.pi and 0.95 * math.pi < max(angles) < math.pi


def test_grid_sizes_keep_the_generators_room_at_x4():
    # its 21x21 at x4; the same half-width per largest sigma (sqrt(10)) elsewhere
    assert [random_kernel_size(s) for s in (2, 3, 4, 8)] == [17, 19, 21, 31]
    for s in (2, 3, 4, 8):
        assert (random_kernel_size(s) // 2) / math.sqrt(2.5 * s) >= math.sqrt(10) - 1e-9


@needs_data
def test_degradation_matches_scipy_correlate():
    # The generator's downscale, written independently: scipy.ndimage.correlate with its default
    # 'reflect' borders, then rows and columns 0, s, 2s, ... (its linspace(0, H - s, H / s) rounded).
    hr = load_image(hr_path("Set5", "butterfly"))
    for s in SCALES:
        h, w = hr.size[0] // s * s, hr.size[1] // s * s
        pic = Picture(hr.color[:, :h, :w], None, 8)
        k = random_kernel(s, np.random.default_rng(s)).kernel
        ours = blur_picture(pic, k, s).color
        ref = np.stack([ndimage.correlate(c.astype(np.float64), k)[::s, ::s] for c in pic.color])
        # ours is float64 through torch's conv2d (another summation order), returned as float32:
        # float32's rounding of values in [0, 1] is below 6e-8, the sums' difference far below that.
        np.testing.assert_allclose(ours, np.clip(ref, 0, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("s", SCALES)
def test_lr_sits_where_the_authors_shift_puts_it(s):
    # On a ramp every kernel reads its centre of mass: LR pixel i shows HR column i s + (s - 1) / 2
    # after MATLAB bicubic, and the same after the authors' shift (its shape // 2, as their Python 2
    # code floored): a random-kernel input sits on the LR_bicubic grid, and the engine makes its
    # training pairs with the same shift, so a fit with the true kernel matches its input. (With
    # shape / 2 it sat half an HR pixel further.)
    w = 96
    ramp = np.tile(np.arange(w, dtype=np.float32) / w, (1, 24, 1))
    k = random_kernel(s, np.random.default_rng(7)).kernel
    ours = blur_picture(Picture(ramp), k, s).color[0, 0]  # every row alike
    bicubic = imresize(torch.from_numpy(ramp).double(), 1 / s)[0, 0].numpy()
    inner = slice(k.shape[1] // s + 1, (w - k.shape[1]) // s - 1)  # away from the mirrored borders
    np.testing.assert_allclose(bicubic[inner] * w, np.arange(w // s)[inner] * s + (s - 1) / 2, atol=1e-6)
    np.testing.assert_allclose((ours[inner] - bicubic[inner]) * w, 0.0, atol=1e-4)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_data
def test_same_seed_same_set_and_each_images_kernel_its_own(tmp_path):
    hr = _hr_folder(tmp_path / "hr")
    for out in ("a", "b"):
        assert main(["degrade", str(hr), "-o", str(tmp_path / out), "--scale", "3", "--random-kernels",
                     "--seed", "5"]) == 0
    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b")
    assert sorted(first) == sorted(
        [f"HR/{n}.png" for n in ("baby", "bird", "head")]
        + [f"LR_randomkernel/X3/{n}x3.png" for n in ("baby", "bird", "head")]
        + [f"kernels/X3/{n}x3{e}" for n in ("baby", "bird", "head") for e in (".npy", "_0.mat")])
    with Image.open(tmp_path / "a/HR/baby.png") as im, Image.open(tmp_path / "a/LR_randomkernel/X3/babyx3.png") as lr:
        assert im.size == (36, 39) and lr.size == (12, 13)  # 37x41 cropped to a multiple of 3
    # another seed, other kernels
    degrade_random_kernels(hr, tmp_path / "c", 3, seed=6)
    assert not np.array_equal(np.load(tmp_path / "a/kernels/X3/babyx3.npy"),
                              np.load(tmp_path / "c/kernels/X3/babyx3.npy"))
    # a new image in the folder leaves the others' kernels (and images) as they were
    Image.open(hr_path("Set5", "butterfly")).crop((0, 0, 30, 30)).save(hr / "aaa_butterfly.png")
    degrade_random_kernels(hr, tmp_path / "d", 3, seed=5)
    again = _files(tmp_path / "d")
    assert {k: v for k, v in again.items() if "aaa_" not in k} == first


@needs_data
def test_kernels_round_trip_through_kernel(tmp_path):
    # The written .npy and .mat are the kernel the LR image was made with: loaded as --kernel loads
    # them, they are that draw, and degrading the ground truth with them remakes the LR file exactly.
    hr = _hr_folder(tmp_path / "hr", names=("bird",))
    out = tmp_path / "set"
    degrade_random_kernels(hr, out, 2, seed=11)
    drawn = random_kernel(2, kernel_rng(11, 2, "bird.png")).kernel
    np.testing.assert_array_equal(np.load(out / "kernels/X2/birdx2.npy"), drawn)
    np.testing.assert_array_equal(loadmat(out / "kernels/X2/birdx2_0.mat")["Kernel"], drawn)
    for f in ("birdx2.npy", "birdx2_0.mat"):  # load_kernel divides by the sum: 1 up to float64 rounding
        np.testing.assert_allclose(load_kernel(out / "kernels/X2" / f), drawn, rtol=1e-12, atol=0)
    again = blur_picture(load_image(out / "HR/bird.png"), load_kernel(out / "kernels/X2/birdx2_0.mat"), 2)
    assert np.array_equal(np.asarray(Image.open(out / "LR_randomkernel/X2/birdx2.png")),
                          np.floor(np.transpose(again.color, (1, 2, 0)) * 255 + 0.5).astype(np.uint8))
    # the engine shifts a given kernel again before it makes its training pairs: a no-op on these
    # (the spline moves no tap by more than 1e-4 of the peak), so the fit sees the kernel that was used
    k = load_kernel(out / "kernels/X2/birdx2.npy")
    again = shift_kernel(k, (2, 2))
    p = (again.shape[0] - k.shape[0]) // 2
    np.testing.assert_allclose(again[p:-p, p:-p], k, rtol=0, atol=1e-4 * k.max())


def test_refusals(tmp_path, capsys):
    hr = tmp_path / "HR"
    hr.mkdir()
    Image.new("RGB", (8, 8)).save(hr / "a.png")
    Image.new("RGB", (8, 8)).save(hr / "a.jpg")
    with pytest.raises(ValueError, match=r"a\.jpg and .*a\.png would both be .*HR/a\.png"):
        degrade_random_kernels(hr, tmp_path / "out", 2)
    with pytest.raises(ValueError, match="the set's HR/ would overwrite it"):
        degrade_random_kernels(hr / "a.png", tmp_path, 2)  # a set made where its own input lies
    with pytest.raises(ValueError, match="whole scale of at least 2"):
        degrade_random_kernels(hr / "a.png", tmp_path / "out", 2.5)
    assert main(["degrade", str(hr / "a.png"), "-o", str(tmp_path / "o"), "--scale", "2", "--random-kernels",
                 "--suffix", "x2"]) == 2
    assert "--suffix is for bicubic outputs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
    # a folder that is not there, or holds no image, is a mistake, not a set of none (it said
    # "degraded 0 image(s)" and exited 0)
    (tmp_path / "empty").mkdir()
    for where, why in ((tmp_path / "gone", "no such file or folder"), (tmp_path / "empty", "no images found")):
        for random in ([], ["--random-kernels"]):
            assert main(["degrade", str(where), "-o", str(tmp_path / "o2"), "--scale", "2", *random]) == 2
            assert f"{where}: {why}" in capsys.readouterr().err
    # one image that cannot be made (1 pixel high, not an image at all) costs only itself: a line
    # naming it, the others made, exit 1 (it stopped the folder with no name, half a set written)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, size in (("a.png", (8, 8)), ("b.png", (40, 1)), ("c.png", (8, 6))):
        Image.new("RGB", size).save(mixed / name)
    (mixed / "d.png").write_bytes(b"not a picture")
    for random, lr in (([], "o3/{}.png"), (["--random-kernels"], "o4/LR_randomkernel/X2/{}x2.png")):
        out = tmp_path / lr.split("/")[0]
        assert main(["degrade", str(mixed), "-o", str(out), "--scale", "2", *random]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 2 and f"{mixed / 'b.png'}: image 40x1 is smaller than the scale 2" in err[0], err
        assert str(mixed / "d.png") in err[1] and "skipped" in err[1]
        assert sorted(p.name for p in out.rglob("*.png") if "b" in p.name or "d" in p.name) == []
        assert all((tmp_path / lr.format(n)).is_file() for n in ("a", "c"))


@needs_data
def test_run_pairs_ground_truth_and_kernel_by_itself(tmp_path, one_ray):
    hr = _hr_folder(tmp_path / "hr", names=("baby", "head"), size=(48, 48))
    bench = tmp_path / "set"
    assert main(["degrade", str(hr), "-o", str(bench), "--scale", "2", "--random-kernels"]) == 0
    out = tmp_path / "out"
    tiny = ["--scale", "2", "--gpus", "0", "--preset", "fast", "--max-iters", "10", "--crop", "16", "--no-progress"]
    assert main(["run", "--input", str(bench), "--output", str(out), *tiny]) == 0
    rows = sorted(_rows(out), key=lambda r: r["input"])
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for r, name in zip(rows, ("baby", "head")):
        assert Path(r["input"]) == bench / f"LR_randomkernel/X2/{name}x2.png"
        assert Path(r["gt"]) == bench / f"HR/{name}.png" and r["psnr_y"] != ""
        assert Path(r["output"]) == out / f"SR/X2/{name}.png"
        # the fit's settings are those of --kernel kernels/X2/NAMEx2.npy (the hash reads the file's bytes)
        with_kernel = resolve("fast", {}, {"scale": "2", "max_iters": "10", "crop": "16",
                                           "kernel": str(bench / f"kernels/X2/{name}x2.npy")})
        assert r["config_hash"] == with_kernel.hash() != resolve("fast", {}, {"scale": "2", "max_iters": "10",
                                                                             "crop": "16"}).hash()
    # a rerun pointed at the LR folder itself is the same work, already done: nothing is redone
    stamps = {r["output"]: os.stat(r["output"]).st_mtime_ns for r in rows}
    assert main(["run", "--input", str(bench / "LR_randomkernel/X2"), "--output", str(out), *tiny]) == 0
    assert {r["output"]: os.stat(r["output"]).st_mtime_ns for r in _rows(out)} == stamps


def test_an_input_without_its_kernel_fails_its_own_row(tmp_path):
    bench = tmp_path / "set"
    for d in ("HR", "LR_randomkernel/X2", "kernels/X2"):
        (bench / d).mkdir(parents=True)
    for n in ("a", "b"):
        Image.new("RGB", (8, 8)).save(bench / f"HR/{n}.png")
        Image.new("RGB", (4, 4)).save(bench / f"LR_randomkernel/X2/{n}x2.png")
    np.save(bench / "kernels/X2/ax2.npy", np.ones((3, 3)))
    a, b = scan(bench, ScanOptions(output_dir=tmp_path / "out", scale=2))
    assert a.overrides == (("kernel", str(bench / "kernels/X2/ax2.npy")),) and a.error is None
    assert b.error == f"{bench}/LR_randomkernel/X2/bx2.png: no kernel for it in {bench}/kernels/X2 " \
                      "(looked for bx2.npy and bx2_0.mat)"


def test_a_manifest_names_each_rows_kernel_and_the_kernel_that_made_it(tmp_path):
    # 'estimate' and 'bicubic' are words in a manifest's kernel column, as after --kernel (before,
    # both were read as files beside the manifest); a file is relative to the manifest; the
    # true_kernel column is the kernel that made the input (the row's kernel_error), checked at scan.
    (tmp_path / "k").mkdir()
    np.save(tmp_path / "k/a.npy", np.ones((3, 3)))
    for n in ("a", "b", "c", "d"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{n}.png")
    (tmp_path / "list.csv").write_text("input,kernel,true_kernel\n"
                                       "a.png,estimate,k/a.npy\n"
                                       "b.png,bicubic,\n"
                                       "c.png,k/a.npy,k/a.npy\n"
                                       "d.png,estimate,k/gone.npy\n"
                                       "a.png,k/gone.npy,\n"
                                       "b.png,5,\n")
    a, b, c, d, e, f = scan(tmp_path / "list.csv", ScanOptions(output_dir=tmp_path / "out", scale=2))
    assert a.overrides == (("kernel", "estimate"),) and a.true_kernel == str(tmp_path / "k/a.npy") and a.error is None
    assert b.overrides == (("kernel", ""),) and b.true_kernel is None and b.error is None
    assert c.overrides == (("kernel", str(tmp_path / "k/a.npy")),) and c.true_kernel == str(tmp_path / "k/a.npy")
    # a missing file names the manifest's line and column, at scan (a missing kernel failed on its
    # worker, in numpy's words); a number is no kernel
    assert d.error == f"list.csv line 5, column true_kernel: {tmp_path / 'k/gone.npy'}: no such file"
    assert e.error == f"list.csv line 6, column kernel: {tmp_path / 'k/gone.npy'}: no such file"
    assert f.error == f"list.csv line 7, column kernel: {tmp_path / '5'}: no such file"
    (tmp_path / "list.jsonl").write_text('{"input": "a.png", "kernel": 5}\n')
    (g,) = scan(tmp_path / "list.jsonl", ScanOptions(output_dir=tmp_path / "out", scale=2))
    assert g.error == "list.jsonl line 1, column kernel: expected a file, 'estimate' or 'bicubic', got 5"
    assert resolve("paper", overrides=dict(a.overrides)).kernel == "estimate"
