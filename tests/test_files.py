"""files/: atomic writes under the user's umask and any name length, colour profiles kept where
they still apply."""

from __future__ import annotations

import dataclasses
import os
import stat
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from zssr_batch.files.images import Picture, icc_colour_space, keeps_profile, load_image, save_image, write_atomic


def test_atomic_writes_follow_the_umask_and_leave_no_part(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    # the module read the umask at import; with the usual 022 a file is 0644, as open() makes it
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == 0o666 & ~old
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_name_at_the_file_systems_limit_still_writes(tmp_path):
    name = "n" * 251 + ".png"  # 255 bytes: no room for a suffix of the temporary file's own
    save_image(tmp_path / name, Picture(np.full((3, 9, 9), 0.5, np.float32)))
    assert load_image(tmp_path / name).size == (9, 9)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def _srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_a_16_bit_png_keeps_its_colour_profile(tmp_path):
    icc = _srgb()
    src = tmp_path / "in.png"
    pic = Picture(np.random.default_rng(0).random((3, 12, 10), dtype=np.float32), None, 16, icc)
    save_image(src, pic)
    back = load_image(src)
    assert back.bit_depth == 16 and back.icc_profile == icc
    with Image.open(src) as im:  # an independent reader finds the profile where PNG keeps it
        assert im.info.get("icc_profile") == icc
        im.load()  # and the file still decodes whole (chunk CRCs checked)
    raw = src.read_bytes()
    at = raw.index(b"iCCP")
    assert raw.index(b"IHDR") < at < raw.index(b"IDAT")
    assert zlib.decompress(raw[at + 4 + len(b"icc\0\0"):raw.index(b"IDAT") - 8]) == icc


def test_a_cmyk_profile_is_dropped_with_a_note_when_the_output_is_rgb(tmp_path):
    icc = _srgb()
    cmyk = bytearray(icc)
    cmyk[16:20] = b"CMYK"  # the header field a CMYK profile carries
    Image.new("CMYK", (10, 8), (10, 40, 90, 5)).save(tmp_path / "c.jpg", icc_profile=bytes(cmyk))
    pic = load_image(tmp_path / "c.jpg")
    assert pic.icc_profile is None and pic.color.shape[0] == 3
    assert any("CMYK colour profile was dropped" in n for n in pic.notes)
    assert icc_colour_space(icc) == "RGB"


@pytest.mark.parametrize("suffix,bits,kept", [(".png", 8, True), (".png", 16, True), (".jpg", 8, True),
                                               (".tif", 16, False), (".bmp", 8, False), (".gif", 8, False)])
def test_keeps_profile_says_what_the_file_really_holds(tmp_path, suffix, bits, kept):
    pic = Picture(np.full((3, 6, 6), 0.25, np.float32), None, bits, _srgb())
    assert keeps_profile(pic, suffix) is kept
    save_image(tmp_path / f"x{suffix}", pic)
    with Image.open(tmp_path / f"x{suffix}") as im:
        assert (im.info.get("icc_profile") == pic.icc_profile) is kept


def _items(manifest, tmp_path):
    from zssr_batch.files.sources import ScanOptions, read_manifest

    return list(read_manifest(manifest, ScanOptions(output_dir=tmp_path / "out")))


def test_a_spreadsheets_csv_with_a_byte_order_mark_reads_as_any_other(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "m.csv").write_bytes("\ufeffinput,crop\na.png,16\n".encode("utf-8"))
    [item] = _items(tmp_path / "m.csv", tmp_path)
    assert item.error is None and item.input == str(tmp_path / "a.png") and item.overrides == (("crop", 16),)  # parsed: one spelling per value


def test_bad_manifest_lines_fail_their_own_row_naming_file_line_and_column(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "m.jsonl").write_text(
        '\n'                                   # 1: blank, skipped but counted
        '{"input": "a.png", "crop": [16]}\n'   # 2: a list where a number goes
        '[1, 2]\n'                             # 3: not an object
        '{"input": "a.png", \n'                # 4: broken JSON
        '{"input": 7}\n'                       # 5: a number where a path goes
        '{"input": "a.png", "crop": "abc"}\n'  # 6: not a number
        '{"input": "a.png", "max_iters": 3}\n')  # 7: fine
    items = _items(tmp_path / "m.jsonl", tmp_path)
    errors = [i.error for i in items]
    assert len(items) == 6
    assert errors[0].startswith("m.jsonl line 2, column crop: bad value [16]")
    assert errors[1] == "m.jsonl line 3: expected a JSON object, got list"
    assert errors[2].startswith("m.jsonl line 4: not JSON")
    assert errors[3].startswith("m.jsonl line 5, column input: expected a path, got int")
    assert errors[4].startswith("m.jsonl line 6, column crop: bad value 'abc'")
    assert errors[5] is None and items[5].overrides == (("max_iters", 3),)


def test_report_names_of_manifest_rows_stay_inside_the_manifests_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "up.png").write_bytes(b"")
    (tmp_path / "d" / "m.csv").write_text("input,output\n../up.png,x.png\n../up.png,\n")
    items = _items(tmp_path / "d" / "m.csv", tmp_path)
    assert [i.rel for i in items] == ["up.png", "up.png"]  # thumbs/<rel> and curves/<rel> stay in --output
    assert items[0].output == str(tmp_path / "out" / "x.png")


def _plan_folder(tmp_path, names, **opts):
    from zssr_batch.files.plan import plan_outputs
    from zssr_batch.files.sources import ScanOptions, scan

    src = tmp_path / "in" / "+".join(names) / str(sorted(opts.items()))
    for n in names:
        (src / n).parent.mkdir(parents=True, exist_ok=True)
        (src / n).write_bytes(b"")
    o = ScanOptions(output_dir=tmp_path / "out", **opts)
    return plan_outputs(scan(src, o), o.output_dir)


def test_two_inputs_that_would_share_an_output_stop_the_run_naming_both(tmp_path):
    from zssr_batch.files.plan import PlanError

    with pytest.raises(PlanError, match=r"b\.gif and .*b\.png would both write .*b\.png"):
        _plan_folder(tmp_path, ["b.png", "b.gif"])
    with pytest.raises(PlanError, match="a.jpg and .*a.png would both write"):
        _plan_folder(tmp_path, ["a.jpg", "a.png"], ext="png")
    plan = _plan_folder(tmp_path, ["b.png", "b.gif"], keep_ext=True)  # the rule that keeps them apart
    assert sorted(Path(i.output).name for i in plan.items) == ["b.gif.png", "b.png"]


def test_outputs_are_proven_inside_the_output_folder(tmp_path):
    from zssr_batch.files.plan import plan_outputs
    from zssr_batch.files.sources import WorkItem

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")  # a symlink already inside --output
    items = [WorkItem("a.png", str(out / "link" / "a.png")), WorkItem("b.png", str(out / "sub" / ".." / ".." / "b.png")),
             WorkItem("c.png", str(out / "report.csv")), WorkItem("d.png", str(out / "sub" / "d.png"))]
    plan = plan_outputs(items, out)
    errors = [i.error for i in plan.items]
    assert "resolves outside the output folder" in errors[0] and "resolves outside" in errors[1]
    assert "the run's own report.csv" in errors[2]
    assert errors[3] is None and plan.items[3].output == str(out / "sub" / "d.png")


def test_one_input_twice_is_refused_but_at_two_scales_is_two_items(tmp_path):
    from zssr_batch.files.plan import PlanError, item_key, plan_outputs
    from zssr_batch.files.sources import WorkItem

    out = tmp_path / "out"
    a2 = WorkItem("in/a.png", str(out / "a_x2.png"), overrides=(("scale", "2"),))
    a3 = WorkItem("in/a.png", str(out / "a_x3.png"), overrides=(("scale", "3"),))
    assert len(plan_outputs([a2, a3], out).items) == 2
    with pytest.raises(PlanError, match="listed twice"):
        plan_outputs([a2, dataclasses.replace(a2, output=str(out / "other.png"))], out)
    # a relative and an absolute spelling of one input are one key
    cwd = os.getcwd()
    assert item_key(WorkItem("in/a.png", "")) == item_key(WorkItem(os.path.join(cwd, "in", "a.png"), ""))


def test_a_picture_knows_the_hash_of_the_file_it_came_from(tmp_path):
    import hashlib

    save_image(tmp_path / "a.png", Picture(np.full((3, 9, 9), 0.5, np.float32)))
    assert load_image(tmp_path / "a.png").sha256 == hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()


def test_a_ground_truth_of_another_size_fails_its_row_with_the_sizes(tmp_path):
    from zssr_batch.config import resolve
    from zssr_batch.files.sources import WorkItem
    from zssr_batch.run.item import run_item

    save_image(tmp_path / "lr.png", Picture(np.full((3, 10, 12), 0.5, np.float32)))
    save_image(tmp_path / "gt.png", Picture(np.full((3, 21, 25), 0.5, np.float32)))  # x2 and the mod-2 crop: fine
    save_image(tmp_path / "other.png", Picture(np.full((3, 30, 30), 0.5, np.float32)))  # another image's
    cfg = resolve("fast", overrides={"max_iters": 1, "crop": 8, "width": 8, "back_projection_iters": (0,)})
    good = run_item(WorkItem(str(tmp_path / "lr.png"), str(tmp_path / "o1.png"), str(tmp_path / "gt.png")), cfg, "cpu")
    assert good["status"] == "ok", good["error"]
    bad = run_item(WorkItem(str(tmp_path / "lr.png"), str(tmp_path / "o2.png"), str(tmp_path / "other.png")), cfg, "cpu")
    assert bad["status"] == "failed" and "ground truth is 30x30, but x2 of the 12x10 input is 24x20" in bad["error"]
    assert not (tmp_path / "o2.png").exists()  # refused before the fit


def test_gray_and_alpha_write_as_bmp_and_jpeg_and_the_row_says_the_alpha_is_not_kept(tmp_path):
    # (a gray+alpha input with --ext bmp failed its row after its fit; RGBA to JPEG lost its alpha in silence)
    import numpy as np

    from zssr_batch.files.images import Picture, drops_alpha, encode_image, load_image

    rng = np.random.default_rng(0)
    gray, alpha = rng.random((1, 6, 5), dtype=np.float32), rng.random((1, 6, 5), dtype=np.float32)
    for suffix in (".bmp", ".jpg"):
        (tmp_path / f"la{suffix}").write_bytes(encode_image(Picture(gray, alpha), suffix))
        back = load_image(tmp_path / f"la{suffix}")
        assert back.alpha is None and back.size == (6, 5)
    assert np.abs(load_image(tmp_path / "la.bmp").color[0] - gray[0]).max() <= 0.5 / 255 + 1e-6  # 8 bits
    rgba = Picture(np.repeat(gray, 3, axis=0), alpha)
    assert drops_alpha(rgba, ".jpg") and drops_alpha(rgba, ".BMP") and not drops_alpha(rgba, ".png")
    assert not drops_alpha(Picture(gray), ".jpg")
