"""Father/son sampling against OpenCV's warpPerspective (the authors' warp) and exact crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import hr_path, needs_data
from zssr_batch.files.images import load_image
from zssr_batch.engine.pairs import Augment, Draw, father_transform, make_son, sample_father, warp
from zssr_batch.engine.resize import imresize

AUG = Augment(crop=64, p_as_is=0.05, p_no_interp=0.45, min_scale=0.5, max_scale=0.0, scale_diff_sigma=0.25,
              shear_sigma=0.1, rotation="any")


def _image() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.random((3, 90, 70)).astype(np.float32))


@needs_data
def test_affine_father_matches_opencv_warp_perspective():
    # The authors warp with cv2.warpPerspective(..., INTER_CUBIC) and a zero border;
    # ours uses grid_sample's bicubic (same a = -0.75). Float32 sampling noise only.
    img = load_image(hr_path("Set5", "bird")).color
    t = torch.from_numpy(img)
    draw = Draw(torch.Generator().manual_seed(3))
    for _ in range(5):
        m = father_transform(img.shape[1:], 96, 1.0, 0.8, "affine", AUG, draw)
        ours = warp(t, m, 96, exact=False).numpy()
        ref = cv2.warpPerspective(np.ascontiguousarray(img.transpose(1, 2, 0)), m, (96, 96), flags=cv2.INTER_CUBIC)
        ref = np.clip(ref, 0, 1).transpose(2, 0, 1)
        assert np.abs(ours - ref).max() < 1e-4


def test_non_affine_fathers_are_exact_pixels_where_opencv_puts_them():
    # Plain and right-angle fathers take pixels without interpolation. As in the authors'
    # code, a rotated non-square image can leave zero margins inside the crop; OpenCV's
    # warp with the same matrix is the reference for where every pixel lands.
    img = _image()
    a = np.ascontiguousarray(img.numpy().transpose(1, 2, 0))
    draw = Draw(torch.Generator().manual_seed(0))
    for mode in ("as_is", "no_interp"):
        for _ in range(20):
            m = father_transform((90, 70), 32, 1.0, 1.0, mode, AUG, draw)
            assert np.allclose(m[:2, :2], np.round(m[:2, :2])) and np.allclose(m[:2, 2], np.round(m[:2, 2]))
            ours = warp(img, m, 32, exact=True).numpy()
            ref = cv2.warpPerspective(a, m, (32, 32), flags=cv2.INTER_NEAREST).transpose(2, 0, 1)
            assert np.array_equal(ours, ref), mode
            if mode == "as_is":  # a plain crop: identity rotation, no empty margin
                assert np.allclose(m[:2, :2], np.eye(2)) and (ours > 0).all()


def test_father_and_son_shapes_and_value_range():
    img = _image()
    gen = torch.Generator().manual_seed(1)
    draw = Draw(gen)
    for _ in range(20):
        f = sample_father([img], [(1.0, 1.0), (2.0, 2.0)], AUG, draw)
        assert f.shape == (3, 64, 64)
        assert 0 <= float(f.min()) and float(f.max()) <= 1
        son = make_son(f, (2.0, 2.0), None, 0.0, gen)
        assert son.shape == (3, 32, 32)
        assert torch.equal(son, imresize(f, 0.5).clamp(0, 1))
    tiny = torch.rand(3, 20, 30)
    assert sample_father([tiny], [(1.0, 1.0)], AUG, draw).shape == (3, 20, 20)  # crop clamped to the image


def test_noise_is_added_to_sons_only_when_asked():
    f = torch.full((3, 40, 40), 0.5)
    gen = torch.Generator().manual_seed(0)
    clean = make_son(f, (2.0, 2.0), None, 0.0, gen)
    noisy = make_son(f, (2.0, 2.0), None, 0.1, gen)
    assert torch.allclose(clean, torch.full_like(clean, 0.5))
    assert float((noisy - 0.5).std()) == pytest.approx(0.1, rel=0.15)


def test_gradual_sources_are_chosen_by_scale():
    # With two sources (input, x1.5 output), scales above 1 must come from the larger one.
    small, big = torch.zeros(1, 40, 40), torch.ones(1, 60, 60)
    aug = Augment(16, 0.0, 1.0, 1.2, 0.0, 0.0, 0.0, "any")  # all draws in [1.2, 1.5]: from `big`
    draw = Draw(torch.Generator().manual_seed(0))
    for _ in range(10):
        assert float(sample_father([small, big], [(1.0, 1.0), (1.5, 1.5), (2.0, 2.0)], aug, draw).min()) == 1.0
