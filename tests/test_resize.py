"""MATLAB-compatible imresize, checked against the LR_bicubic files (made by MATLAB) and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import DATA, hr_path, lr_path, names, needs_data
from zssr_batch.files.degrade import degrade_path, degrade_picture
from zssr_batch.files.images import load_image
from zssr_batch.engine.kernels import load_kernel, shift_kernel
from zssr_batch.engine.resize import imresize, kernel_downscale, output_size


def _levels(a: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(a, 0, 1) * 255 + 0.5).astype(np.int64)


@needs_data
@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degrade_reproduces_matlab_lr_files(set_name, scale):
    # The issue asks for >= 99.9% of pixels within 1 grey level; emulating MATLAB's
    # uint8 rounding between passes makes them identical, so we hold that bar.
    for name in names(set_name):
        ours = _levels(degrade_picture(load_image(hr_path(set_name, name)), scale).color)
        ref = _levels(load_image(lr_path(set_name, name, scale)).color)
        assert ours.shape == ref.shape, name
        assert np.abs(ours - ref).max() <= 1, name
        assert (ours == ref).mean() >= 0.999, name


@needs_data
def test_degrade_command_on_a_folder(tmp_path):
    pairs = degrade_path(DATA / "Set5" / "HR", tmp_path, 4, suffix="x4")
    assert len(pairs) == 5
    for name in names("Set5"):
        out = load_image(tmp_path / f"{name}x4.png")
        ref = load_image(lr_path("Set5", name, 4))
        assert np.array_equal(_levels(out.color), _levels(ref.color)), name


@needs_data
def test_float_resize_within_one_level_of_matlab():
    # Without MATLAB's rounding between the two passes, the only differences are that
    # rounding: half a level after the rows, carried through a kernel whose absolute
    # weights sum to ~1.1, then half a level more -- so at most 2 levels, mostly 0.
    hr = load_image(hr_path("Set5", "butterfly")).color
    ours = imresize(torch.from_numpy(hr).double(), 0.5).numpy()
    ref = load_image(lr_path("Set5", "butterfly", 2)).color
    diff = np.abs(_levels(ours) - _levels(ref))
    assert diff.max() <= 2
    assert (diff == 0).mean() > 0.8


def test_output_size_is_ceil_and_axes_are_separate():
    x = torch.rand(2, 3, 17, 10)
    assert imresize(x, 2).shape == (2, 3, 34, 20)
    assert imresize(x, 0.5).shape == (2, 3, 9, 5)  # ceil(8.5), ceil(5)
    assert imresize(x, (1.5, 2.0)).shape == (2, 3, 26, 20)
    assert imresize(x, 3, out_shape=(50, 29)).shape == (2, 3, 50, 29)
    assert output_size((7, 5), 1 / 3) == (3, 2)


def test_constant_image_stays_constant_and_batches_are_independent():
    x = torch.full((1, 9, 13), 0.37, dtype=torch.float64)
    for s in (0.3, 0.5, 1.7, 2, (0.5, 3)):
        assert torch.allclose(imresize(x, s), torch.full_like(imresize(x, s), 0.37), atol=1e-12)
    batch = torch.rand(4, 3, 12, 11, dtype=torch.float64)
    together = imresize(batch, 0.4)
    for i in range(4):
        assert torch.equal(together[i], imresize(batch[i], 0.4))


def test_upscale_by_integer_keeps_the_mean_and_downscale_inverts_smooth_images():
    y, x = np.mgrid[0:32, 0:32] / 32.0
    smooth = torch.from_numpy(np.sin(2 * y) * np.cos(3 * x))[None]
    up = imresize(smooth, 2)
    back = imresize(up, 0.5)
    assert torch.allclose(back[:, 3:-3, 3:-3], smooth[:, 3:-3, 3:-3], atol=2e-3)


def test_explicit_kernel_matches_scipy_correlate_and_subsample():
    # Reference: the authors' numeric_kernel written with scipy directly.
    rng = np.random.default_rng(0)
    img = rng.random((3, 23, 18))
    kernel = rng.random((7, 6))
    kernel /= kernel.sum()
    out = kernel_downscale(torch.from_numpy(img), kernel, (0.5, 0.5), (12, 9)).numpy()
    for c in range(3):
        full = ndimage.correlate(img[c], kernel, mode="reflect")
        rows = np.round(np.linspace(0, 23 - 2, 12)).astype(int)
        cols = np.round(np.linspace(0, 18 - 2, 9)).astype(int)
        np.testing.assert_allclose(out[c], full[rows][:, cols], atol=1e-12)


def test_kernel_files_load_and_shift(tmp_path):
    from scipy.io import savemat

    g = np.exp(-((np.arange(13) - 6.0) ** 2) / 4)
    k = np.outer(g, g)
    np.save(tmp_path / "k.npy", k)
    savemat(tmp_path / "k.mat", {"Kernel": k})
    a, b = load_kernel(tmp_path / "k.npy"), load_kernel(tmp_path / "k.mat")
    np.testing.assert_allclose(a, b)
    assert abs(a.sum() - 1) < 1e-12
    shifted = shift_kernel(a, (2.0, 2.0))
    # the authors' target: centre of mass at shape // 2 + (s - shape % 2) / 2 = 6 + 0.5,
    # in the coordinates of the unpadded kernel (the padding moves it by `pad`)
    com = np.array(ndimage.center_of_mass(shifted))
    pad = (shifted.shape[0] - 13) // 2
    np.testing.assert_allclose(com, np.array([6.5, 6.5]) + pad, atol=1e-3)
    with pytest.raises(ValueError, match="Kernel"):
        savemat(tmp_path / "bad.mat", {"K": k})
        load_kernel(tmp_path / "bad.mat")


def test_the_bicubic_kernel_given_as_a_file_downscales_as_imresize():
    # A kernel's place is the authors' kernel_shift with their Python 2 floor (shape // 2): with
    # shape / 2 an odd kernel sat half an HR pixel off, and a fit given the bicubic kernel as a file
    # lost ~6 dB against the same fit assuming bicubic. Reference: our imresize, MATLAB-exact (it
    # remakes the LR_bicubic files bit for bit); float64 sums in another order: 1e-12.
    from zssr_batch.engine.kernels import bicubic_kernel

    img = torch.from_numpy(np.random.default_rng(0).random((1, 48, 48)))
    for s in (2, 4):
        k = shift_kernel(bicubic_kernel(s), (float(s), float(s)))
        ours = kernel_downscale(img, k, (1 / s, 1 / s), (48 // s, 48 // s)).numpy()
        ref = imresize(img, 1 / s).numpy()
        np.testing.assert_allclose(ours[:, 4:-4, 4:-4], ref[:, 4:-4, 4:-4], rtol=0, atol=1e-12)  # (away from borders)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 40, 33, dtype=torch.float64)
    for s in (0.5, 2, (1.5, 0.75)):
        assert torch.allclose(imresize(x.cuda(), s).cpu(), imresize(x, s), atol=1e-10)
