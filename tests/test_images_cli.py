"""Every input format and mode comes out right; the fit / degrade commands; configs; weights."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import hr_path, lr_path, needs_data
from zssr_batch.cli import main
from zssr_batch.config import resolve
from zssr_batch.engine.super_resolve import super_resolve
from zssr_batch.files.images import ImageError, load_image
from zssr_batch.engine.infer import combine, ensemble_outputs
from zssr_batch.files.weights import load_weights

TINY = ["--max-iters", "2", "--crop", "12", "--width", "8", "--back-projection-iters", "1"]


def _photo(h: int = 24, w: int = 20) -> np.ndarray:
    """A real photo crop when the data is there, else a smooth synthetic image."""
    try:
        a = np.asarray(Image.open(hr_path("Set5", "bird")).convert("RGB"))[100:100 + h, 80:80 + w]
    except FileNotFoundError:
        y, x = np.mgrid[0:h, 0:w]
        a = np.stack([(x * 9) % 256, (y * 7) % 256, ((x + y) * 5) % 256], -1)
    return np.ascontiguousarray(a.astype(np.uint8))


def _write_cases(d):
    rgb = _photo()
    gray = rgb[..., 1]
    alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint8)
    cases = {}  # file name -> (expected PIL mode of the output, bit depth, channels)
    Image.fromarray(rgb).save(d / "rgb.png"); cases["rgb.png"] = ("RGB", 8)
    Image.fromarray(gray).save(d / "gray.png"); cases["gray.png"] = ("L", 8)
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(d / "gray_alpha.png"); cases["gray_alpha.png"] = ("LA", 8)
    Image.fromarray(np.dstack([rgb, alpha])).save(d / "rgba.png"); cases["rgba.png"] = ("RGBA", 8)
    Image.fromarray(rgb).quantize(64).save(d / "palette.png"); cases["palette.png"] = ("RGB", 8)
    Image.fromarray(rgb).save(d / "photo.jpg", quality=95); cases["photo.jpg"] = ("RGB", 8)
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg"); cases["cmyk.jpg"] = ("RGB", 8)
    Image.fromarray(rgb).save(d / "rgb.tif"); cases["rgb.tif"] = ("RGB", 8)
    Image.fromarray(rgb).save(d / "rgb.bmp"); cases["rgb.bmp"] = ("RGB", 8)
    Image.fromarray(rgb).save(d / "rgb.webp", lossless=True); cases["rgb.webp"] = ("RGB", 8)
    g16 = gray.astype(np.uint16) * 256 + 3
    Image.fromarray(g16).save(d / "gray16.png"); cases["gray16.png"] = ("I;16", 16)
    Image.fromarray(g16).save(d / "gray16.tif"); cases["gray16.tif"] = ("I;16", 16)
    c16 = rgb.astype(np.uint16) * 256 + 1
    cv2.imwrite(str(d / "rgb16.png"), c16[..., ::-1]); cases["rgb16.png"] = ("RGB16", 16)
    cv2.imwrite(str(d / "rgb16.tif"), c16[..., ::-1]); cases["rgb16.tif"] = ("RGB16", 16)
    return cases


def _read_any(path):
    im = Image.open(path)
    if im.mode == "RGB" and path.suffix in (".png", ".tif"):
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw.dtype == np.uint16:
            return "RGB16", raw.shape[:2]
    return im.mode, (im.size[1], im.size[0])


def test_every_format_and_mode_keeps_mode_bit_depth_and_gets_the_right_size(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cases = _write_cases(src)
    for name, (mode, depth) in cases.items():
        pic = load_image(src / name)
        assert pic.bit_depth == depth, name
        rc = main(["fit", str(src / name), "-o", str(out / name), "--scale", "2", *TINY])
        assert rc == 0, name
        got_mode, size = _read_any(out / name)
        expected_mode = {"I;16": ("I;16", "I")}.get(mode, (mode,))
        assert got_mode in expected_mode, (name, got_mode)
        assert size == (48, 40), name
        assert load_image(out / name).bit_depth == depth, name


def test_sixteen_bit_colour_keeps_its_low_bits(tmp_path):
    rgb = _photo().astype(np.uint16) * 256 + 77  # values no 8-bit image can hold
    cv2.imwrite(str(tmp_path / "a.png"), rgb[..., ::-1])
    pic = load_image(tmp_path / "a.png")
    assert pic.bit_depth == 16
    assert np.array_equal(np.round(pic.color.transpose(1, 2, 0) * 65535).astype(np.uint16), rgb)


def test_exif_orientation_is_applied(tmp_path):
    rgb = _photo(24, 20)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    pic = load_image(tmp_path / "rot.jpg")
    assert pic.size == (20, 24)  # upright: height and width swapped
    rc = main(["fit", str(tmp_path / "rot.jpg"), "-o", str(tmp_path / "up.jpg"), *TINY])
    assert rc == 0 and Image.open(tmp_path / "up.jpg").size == (48, 40)


@pytest.mark.parametrize("content,cause", [(b"", "empty file"), (b"hello, not a picture", "not an image")])
def test_unusable_files_give_one_clear_line(tmp_path, capsys, content, cause):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(ImageError, match=cause):
        load_image(bad)
    assert main(["fit", str(bad), "-o", str(tmp_path / "o.png"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.png" in err and cause in err
    assert not (tmp_path / "o.png").exists()


def test_truncated_png_and_tiny_image_are_refused(tmp_path, capsys):
    Image.fromarray(_photo(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert main(["fit", str(tmp_path / "cut.png"), "-o", str(tmp_path / "o.png"), *TINY]) == 2
    assert "cut.png" in capsys.readouterr().err
    Image.fromarray(_photo(5, 7)).save(tmp_path / "tiny.png")
    assert main(["fit", str(tmp_path / "tiny.png"), "-o", str(tmp_path / "o.png"), *TINY]) == 2
    assert "smaller than the minimum 8x8" in capsys.readouterr().err


@needs_data
def test_fit_json_scores_and_zero_iterations_bicubic(tmp_path, capsys):
    lr, hr = lr_path("Set5", "head", 4), hr_path("Set5", "head")  # (the untrained network still runs: a small one)
    rc = main(["fit", str(lr), "-o", str(tmp_path / "b.png"), "--gt", str(hr), "--compare", str(hr), "--scale", "4",
               "--max-iters", "0", "--back-projection-iters", "0", "--json"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)
    for key in ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "bicubic_psnr_rgb", "bicubic_ssim_rgb",
                "bicubic_psnr_y", "bicubic_ssim_y", "iterations", "fit_seconds", "infer_seconds"):
        assert key in rec
    # no training, no back-projection: the output is the bicubic upscale (to float rounding)
    assert rec["iterations"] == 0
    assert rec["psnr_y"] == pytest.approx(rec["bicubic_psnr_y"], abs=0.01)
    assert rec["comparison_psnr_y"] is None and rec["psnr_ratio"] == 0.0  # identical to GT: PSNR inf -> JSON null


def test_fit_without_ground_truth_has_null_scores(tmp_path, capsys):
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    assert main(["fit", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--json", *TINY]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["psnr_y"] is None and rec["bicubic_ssim_rgb"] is None and rec["iterations"] == 2


def test_config_files_and_command_line_precedence(tmp_path):
    (tmp_path / "c.yaml").write_text("preset: fast\nmax_iters: 7\ncrop: 20\nscale: [3, 3]\n")
    (tmp_path / "c.toml").write_text('preset = "article"\nmax-iters = 9\nensemble = "mean"\n')
    from zssr_batch.cli import build_parser, engine_config

    args = build_parser().parse_args(["fit", "x.png", "-o", "y.png", "--config", str(tmp_path / "c.yaml"),
                                      "--crop", "30"])
    cfg = engine_config(args)
    assert (cfg.max_iters, cfg.crop, cfg.scale) == (7, 30, (3.0, 3.0))
    args = build_parser().parse_args(["fit", "x.png", "-o", "y.png", "--config", str(tmp_path / "c.toml")])
    cfg = engine_config(args)
    assert (cfg.max_iters, cfg.ensemble, cfg.lr_schedule, cfg.crop) == (9, "mean", "halving", 96)
    with pytest.raises(ValueError, match="unknown setting"):
        resolve("paper", {"max_iter": 3})
    with pytest.raises(ValueError, match="ensemble"):
        resolve("paper", overrides={"ensemble": "mode"})
    assert resolve("paper").hash() != resolve("paper", overrides={"seed": 1}).hash()


def test_saved_weights_reload_without_pickle_and_reproduce_the_output(tmp_path):
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    rc = main(["fit", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--save-weights",
               "--save-variants", "--save-pairs", "1", "--save-curve", *TINY])
    assert rc == 0
    assert (tmp_path / "o.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    net, cfg = load_weights(tmp_path / "o.safetensors")
    assert cfg.max_iters == 2 and cfg.width == 8
    img = torch.from_numpy(load_image(tmp_path / "a.png").color)
    sf = cfg.scale
    again = combine(ensemble_outputs(net.eval(), img, sf, True, 1), "median", img, sf, 1)
    saved = super_resolve(img, cfg).output
    assert torch.allclose(again, saved, atol=1e-6)
    for name in ("o_single.png", "o_mean.png", "o_median.png", "o_curve.csv",
                 "o_pairs/step00000_father.png", "o_pairs/step00001_son.png"):
        assert (tmp_path / name).is_file(), name
    lines = (tmp_path / "o_curve.csv").read_text().splitlines()
    assert lines[0] == "step,scale_step,loss,lr,reconstruction_mse" and len(lines) == 3


def test_console_script_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "zssr_batch", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "fit" in out.stdout and "degrade" in out.stdout
