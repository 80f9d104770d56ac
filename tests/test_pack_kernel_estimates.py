"""Kernel estimates packed (issue 22, item 3): K KernelGANs at once on one device, each slot
estimating as the image's estimator does alone, with continuous batching; and a packed run whose
fits take each image's kernel as soon as it is out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import lr_path, needs_data
from report_rows import rows as _rows
from zssr_batch.cli import main
from zssr_batch.engine import tally
from zssr_batch.engine.kernel_estimate import estimate_x2
from zssr_batch.engine.kernels import kernel_moments
from zssr_batch.pack.kernel_estimates import EstimateJob, estimate_packed


def _crop(name: str, h: int, w: int) -> torch.Tensor:
    a = np.asarray(Image.open(lr_path("Set14", name, 2)).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(a[:h, :w].copy()).permute(2, 0, 1)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_data
def test_each_slot_estimates_as_its_image_would_alone(one_thread):
    # Three images through two slots (the third takes the first slot that frees), each with its
    # own seed, and a fourth too small for the pack's 64-pixel crops (a 46-pixel side: 46-pixel
    # crops), estimated alone in turn. In float64: in float32 two runs of the same GAN part ways
    # within tens of steps whatever is packed (one thread against two does it too: Adam divides
    # near-zero gradients by their own size, and the sparsity loss's |k|^0.2 is steep near 0).
    # 10 steps walk the compressed schedule through the learning-rate cuts, the bicubic loss's
    # decay and 4 steps with the centre and sparsity losses on.
    images = [_crop("baboon", 90, 100), _crop("zebra", 100, 110), _crop("lenna", 96, 106), _crop("pepper", 46, 60)]
    jobs = [EstimateJob(i, image, 10, seed=i) for i, image in enumerate(images)]
    before = tally.trained()
    packed = {key: k for key, k, _ in estimate_packed(jobs, 2, dtype=torch.float64)}
    assert sorted(packed) == [0, 1, 2, 3]
    # every estimator step is counted for the run's bar (one per live slot), none as a fit's
    assert tally.trained() == (before.fits, before.kernels + 40)
    for i, image in enumerate(images):
        alone = estimate_x2(image, 10, seed=i, dtype=torch.float64)
        # measured 4e-10 to 1e-9: float64 rounding, grown by Adam's first steps
        np.testing.assert_allclose(packed[i], alone, rtol=0, atol=1e-8, err_msg=f"image {i}")
        assert abs(packed[i].sum() - 1) < 1e-12 and packed[i].min() >= 0


@needs_data
def test_a_slot_does_not_feel_its_neighbours(one_thread):
    # In float32 too, a slot's numbers are its own: the same image in the same slot of a pack of the
    # same size ends with the same kernel, bit for bit, whatever its neighbour and whenever that one
    # came. (Not across pack sizes: a pack that shrinks, or another K, rounds its convolutions
    # otherwise, as a second thread does.)
    a, b, c = _crop("baboon", 90, 100), _crop("zebra", 100, 110), _crop("lenna", 96, 106)
    first = {key: k for key, k, _ in estimate_packed([EstimateJob("a", a, 30, 0), EstimateJob("b", b, 30, 1)], 2)}
    later = {key: k for key, k, _ in estimate_packed([EstimateJob("c", c, 12, 2), EstimateJob("b", b, 30, 1),
                                                      EstimateJob("a", a, 40, 0)], 2)}
    np.testing.assert_array_equal(first["b"], later["b"])  # beside a from its start, and beside c then a
    assert not np.array_equal(first["a"], first["b"])


@needs_data
@pytest.mark.slow
def test_a_packed_run_estimates_each_kernel_and_fits_with_it(tmp_path, one_ray):
    # Four 40x40 inputs (estimated, each twice) and a 24x24 one (too small: bicubic) in one call of a
    # pack of 2, the estimator pack beside the fits.
    hr = tmp_path / "hr"
    hr.mkdir()
    for i, name in enumerate(("baby", "bird", "butterfly", "head")):
        Image.open(lr_path("Set5", name, 2)).crop((20, 20, 100, 100)).save(hr / f"{name}.png")
    Image.open(lr_path("Set5", "woman", 2)).crop((20, 20, 68, 68)).save(hr / "woman.png")
    bench, out = tmp_path / "set", tmp_path / "out"
    assert main(["degrade", str(hr), "-o", str(bench), "--scale", "2", "--random-kernels"]) == 0
    assert main(["run", "--input", str(bench), "--scale", "2", "--gpus", "0", "--preset", "fast", "--max-iters", "10",
                 "--crop", "16", "--no-progress", "--kernel-steps", "20", "--pack", "2", "--batch", "5",
                 "--output", str(out), "--kernel", "estimate", "--kernel-restarts", "2"]) == 0
    rows = {r["input"].rsplit("/", 1)[1].split("x2")[0]: r for r in _rows(out)}
    assert sorted(rows) == ["baby", "bird", "butterfly", "head", "woman"]
    for name, r in rows.items():
        assert r["status"] == "ok" and r["pack"] == "2", r
        used = np.load(out / f"SR/X2/{name}_kernel.npy")
        assert float(r["kernel_width"]) == pytest.approx(kernel_moments(used)[0], abs=1e-4)
        if name == "woman":
            assert r["kernel_source"] == "bicubic fallback" and "too small to estimate" in r["notes"]
            continue
        # each estimated in the pack; 20 GAN steps on a 40x40 input can end wild (4.5 px wide, or
        # diverged: measured), and such an estimate falls back to bicubic, saying why
        assert float(r["kernel_seconds"]) > 0, r
        # two runs of the GAN each (--kernel-restarts 2), each in its own slot of the estimator pack
        if r["kernel_source"] == "estimated":
            assert used.shape == (13, 13) and abs(used.sum() - 1) < 1e-9
            assert "kernel: the mean of its 2 runs" in r["notes"] or (
                "kernel: the mean of 1 of its 2 runs, 1 failed (its estimate " in r["notes"]), r
        else:
            assert r["kernel_source"] == "bicubic fallback", r
            assert "each of its 2 runs failed" in r["notes"] or "it was the mean of" in r["notes"], r
