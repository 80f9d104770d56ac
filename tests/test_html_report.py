"""report.html in headless Chromium: rows, charts, sorting, filtering, the full-resolution viewer, no
network, 10,000 rows fast."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import hr_path, lr_path, names, needs_data
from report_rows import rows as _rows
from zssr_batch.cli import main
from zssr_batch.engine.kernels import bicubic_kernel, kernel_error, kernel_moments, random_kernel
from zssr_batch.files.plan import REPORT_PICTURES
from zssr_batch.report.html import write_html_report
from zssr_batch.report.kernel_pictures import write_kernel_pictures
from zssr_batch.report.plots import ranked, scatter
from zssr_batch.report.table import COLUMNS
from zssr_batch.report.thumbs import most_different_region, write_thumbs

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="Debian packages chromium and chromium-driver are not installed")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1600", "--disable-dev-shm-usage"):  # the window the page must fit
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield drv
    drv.quit()


def _requested_urls(drv) -> list[str]:
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _open(drv, path: Path, timeout: float = 30) -> float:
    t0 = time.perf_counter()
    drv.get(path.resolve().as_uri())
    while drv.execute_script("return document.body && document.body.dataset.ready") != "1":
        if time.perf_counter() - t0 > timeout:
            raise AssertionError("report.html never finished rendering")
        time.sleep(0.02)
    return time.perf_counter() - t0


def _fits_the_window(drv) -> bool:
    return drv.execute_script("const d = document.documentElement; return d.scrollWidth <= d.clientWidth")


def _wait_loaded(drv, timeout: float = 10) -> None:
    """Until both of the viewer's pictures have loaded (they load from disk, asynchronously)."""
    t0 = time.perf_counter()
    while not drv.execute_script("return [...document.querySelectorAll('#v-stage img')]"
                                 ".every(i => i.complete && i.naturalWidth > 0)"):
        if time.perf_counter() - t0 > timeout:
            raise AssertionError("the viewer's pictures never loaded")
        time.sleep(0.02)


def _gains(drv) -> list[float]:
    return [float(g) for g in drv.execute_script(
        "return [...document.querySelectorAll('.entry')].map(e => e.dataset.gain).filter(g => g !== '')")]


@needs_browser
@needs_data
def test_report_of_a_real_run_renders_sorts_and_stays_offline(tmp_path, browser, one_ray):
    from selenium.webdriver.support.ui import Select

    manifest = tmp_path / "set5.csv"
    lines = ["input,gt"] + [f"{lr_path('Set5', n, 2)},{hr_path('Set5', n)}" for n in names("Set5")]
    (tmp_path / "broken.png").write_text("not a picture")
    lines.append(f"{tmp_path / 'broken.png'},")
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rc = main(["run", "--input", str(manifest), "--output", str(out), "--scale", "2", "--gpus", "0",
               "--preset", "fast", "--max-iters", "30", "--width", "8", "--ensemble", "none", "--no-progress"])
    # (a small network, one pass: what the report shows of a real run, not how good its outputs are)
    assert rc == 1 and (out / "report.html").is_file()

    _open(browser, out / "report.html")
    entries = browser.execute_script("return [...document.querySelectorAll('.entry')].map(e => e.dataset.rel)")
    assert sorted(entries) == sorted([f"{n}x2.png" for n in names("Set5")] + ["broken.png"])
    for chart in ("chart-gain", "chart-scatter", "chart-time"):  # one point per ok image, each naming it
        assert browser.execute_script(f"return document.querySelectorAll('#{chart} [data-i]').length") == 5
    assert browser.execute_script("return document.querySelectorAll('#chart-gain rect[data-i]').length") == 5  # bars
    assert _fits_the_window(browser)
    failed = browser.execute_script("return document.querySelector('.entry.failed .error').textContent")
    assert "broken.png" in failed and "not an image" in failed
    # every ok entry shows its thumbnails, crops and curve, and they really loaded
    time.sleep(0.5)
    loaded = browser.execute_script(
        "return [...document.querySelectorAll('.entry.ok img')].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
    assert len(loaded) == 5 * 9  # 4 thumbnails + 4 crops + 1 curve
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    time.sleep(0.5)
    loaded = browser.execute_script(
        "return [...document.querySelectorAll('.entry.ok img')].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert loaded == []

    sort = Select(browser.find_element("id", "sort"))
    sort.select_by_value("gain:1")
    up = _gains(browser)
    sort.select_by_value("gain:-1")
    down = _gains(browser)
    assert len(up) == 5 and up == sorted(up) and down == sorted(up, reverse=True)
    Select(browser.find_element("id", "status")).select_by_value("failed")
    assert browser.execute_script("return document.querySelectorAll('.entry').length") == 1

    Select(browser.find_element("id", "status")).select_by_value("")
    browser.execute_script("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "report.png"))
    # the viewer of a real run: the bicubic upscale the worker wrote beside the output, and the output itself
    first = browser.find_element("css selector", ".entry.ok")
    first.find_element("css selector", "button.open").click()
    _wait_loaded(browser)
    shown = browser.execute_script("return [...document.querySelectorAll('#v-stage img')].map(i => i.getAttribute('src'))")
    output = next(Path(r["output"]) for r in _rows(out) if r["rel"] == first.get_attribute("data-rel"))
    assert shown[0].endswith("/full_bicubic.png") and (out / unquote(shown[1])).resolve() == output.resolve()
    browser.save_screenshot(str(ARTIFACTS / "report-viewer.png"))

    urls = _requested_urls(browser)
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), [u for u in urls if not u.startswith("file")]


def _synthetic_report(folder: Path, n: int) -> pd.DataFrame:
    """report.csv and report.html of ``n`` made-up rows (2% failed), with no pictures: the page's own work."""
    rng = np.random.default_rng(0)
    bic = rng.normal(30, 3, n)
    df = pd.DataFrame({c: [None] * n for c in COLUMNS})
    df["input"] = [f"/data/set/{i // 1000:02d}/img{i:05d}.png" for i in range(n)]
    df["rel"] = [f"{i // 1000:02d}/img{i:05d}.png" for i in range(n)]
    df["output"] = df["rel"]
    df["status"] = np.where(rng.random(n) < 0.02, "failed", "ok")
    df["error"] = np.where(df["status"] == "failed", "some file: not an image", None)
    ok = df["status"] == "ok"
    df.loc[ok, "bicubic_psnr_y"] = bic[ok]
    df.loc[ok, "psnr_y"] = bic[ok] + rng.normal(1.5, 0.8, ok.sum())
    df.loc[ok, "ssim_y"] = 0.9
    df.loc[ok, "bicubic_ssim_y"] = 0.88
    df.loc[ok, "fit_seconds"] = rng.uniform(1, 9, ok.sum())
    df["height"], df["width"], df["out_height"], df["out_width"], df["scale"] = 100, 120, 200, 240, "2"
    df.to_csv(folder / "report.csv", index=False)
    write_html_report(folder)
    return df


@needs_browser
def test_report_over_10000_rows_opens_in_seconds(tmp_path, browser):
    df = _synthetic_report(tmp_path, 10_000)
    # What keeps 10,000 rows quick to open is that only one page of entries is ever built, from the
    # embedded JSON; that is asserted, not how many seconds it took (a busy machine must not fail it).
    _open(browser, tmp_path / "report.html")
    assert browser.execute_script("return document.querySelectorAll('.entry').length") == 50  # one page
    assert "page 1 of 200 (10000 images)" in browser.find_element("id", "page").text
    gains = _gains(browser)
    assert gains == sorted(gains, reverse=True) and gains[0] == pytest.approx(float((df["psnr_y"] - df["bicubic_psnr_y"]).max()))
    browser.find_element("id", "next").click()  # the next page replaces this one: still 50 entries
    assert browser.execute_script("return document.querySelectorAll('.entry').length") == 50
    assert "page 2 of 200" in browser.find_element("id", "page").text
    assert _gains(browser)[0] <= gains[-1]


def _save(path: Path, t: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((t.clamp(0, 1).numpy().transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(path)


def _kernel_pictures(out: Path, name: str) -> dict:
    """a.png's fit used an estimate of a known kernel, b.png assumed bicubic, c.png has no picture."""
    if name == "c.png":
        return {}
    true = random_kernel(2, np.random.default_rng(3)).kernel
    used = true[::-1].copy() if name == "a.png" else bicubic_kernel(2)
    write_kernel_pictures(out / REPORT_PICTURES / "thumbs" / name, used, true if name == "a.png" else None)
    width, anisotropy = kernel_moments(used)
    return dict(kernel_source="estimated" if name == "a.png" else "bicubic", kernel_width=width,
                kernel_anisotropy=anisotropy, kernel_error=kernel_error(used, true) if name == "a.png" else None)


def _small_report(tmp_path: Path) -> Path:
    """Three ok images and a failed one, with the pictures a worker makes (``write_thumbs``): a.png's
    ground truth a pixel larger than the output (a size that is not a multiple of the scale, cropped),
    c.png without one; the ground truths outside the output folder, as a --gt folder is."""
    out, gt_dir = tmp_path / "out", tmp_path / "gt"
    g = torch.Generator().manual_seed(0)
    records = []
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        lr = torch.rand(3, 48, 64, generator=g)
        bicubic = F.interpolate(lr[None], scale_factor=2, mode="bicubic", align_corners=False)[0].clamp(0, 1)
        zssr = (bicubic + 0.2 * torch.rand(bicubic.shape, generator=g)).clamp(0, 1)
        gt = None if name == "c.png" else torch.rand(3, 97, 129, generator=g)
        _save(out / name, zssr)
        if gt is not None:
            _save(gt_dir / name, gt)
        write_thumbs(out / REPORT_PICTURES / "thumbs" / name, lr, bicubic, zssr, gt,
                     originals={"zssr": str(out / name), "gt": str(gt_dir / name) if gt is not None else None})
        records.append(dict(input=str(tmp_path / "in" / name), output=str(out / name), status="ok", rel=name,
                            gt=str(gt_dir / name) if gt is not None else None, scale="2", height=48, width=64,
                            out_height=96, out_width=128, psnr_y=30.0 + i, bicubic_psnr_y=29.0, ssim_y=0.9,
                            bicubic_ssim_y=0.88, fit_seconds=5.0 + i, iterations=200, **_kernel_pictures(out, name)))
    records.append(dict(input=str(tmp_path / "in" / "d.png"), output=str(out / "d.png"), status="failed",
                        error=f"{tmp_path / 'in' / 'd.png'}: not an image", rel="d.png"))
    pd.DataFrame(records, columns=COLUMNS).to_csv(out / "report.csv", index=False)
    write_html_report(out)
    return out


def _shown_at(drv, fx: float, fy: float = 0.5) -> str:
    """The picture on top at a point of the viewer's stage (in fractions of its size), as its src."""
    return drv.execute_script(
        "const b = document.getElementById('v-stage').getBoundingClientRect();"
        "const e = document.elementFromPoint(b.left + arguments[0] * b.width, b.top + arguments[1] * b.height);"
        "return e.tagName === 'IMG' ? e.getAttribute('src') : e.id", fx, fy)


def _stage(drv) -> dict:
    """The viewer's stage in the window's coordinates (those of getBoundingClientRect, whatever the page's scroll)."""
    return drv.execute_script("const b = document.getElementById('v-stage').getBoundingClientRect();"
                              "return {x: b.left, y: b.top, width: b.width, height: b.height}")


def _layers(drv) -> list[dict]:
    """Each side's picture as the browser lays it out: its box on screen, its pixels, its layer's transform."""
    return drv.execute_script(
        "return ['v-a', 'v-b'].map(id => { const img = document.querySelector('#' + id + ' img'),"
        " layer = img.parentNode, r = img.getBoundingClientRect(), l = layer.getBoundingClientRect();"
        " return {left: r.left, top: r.top, scale: r.width / img.naturalWidth, layer: [l.left, l.top, l.width, l.height],"
        " transform: getComputedStyle(layer).transform}; })")


BICUBIC, ZSSR, GT = ".report/thumbs/a.png/full_bicubic.png", "a.png", "../gt/a.png"


@needs_browser
def test_viewer_slider_and_toggle_change_the_picture_shown(tmp_path, browser):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.keys import Keys

    out = _small_report(tmp_path)
    _open(browser, out / "report.html")
    assert browser.find_elements("css selector", '.entry[data-rel="d.png"] button.open') == []  # failed: nothing to see
    browser.find_element("css selector", '.entry[data-rel="a.png"] button.open').click()
    _wait_loaded(browser)
    # slider: bicubic left of the split, ZSSR right of it, each at full resolution
    assert browser.execute_script("return document.querySelector('#v-a img').naturalWidth") == 128
    assert (_shown_at(browser, 0.3), _shown_at(browser, 0.7)) == (BICUBIC, ZSSR)
    divider = browser.find_element("id", "v-divider")
    width = _stage(browser)["width"]
    ActionChains(browser).click_and_hold(divider).move_by_offset(int(0.3 * width), 0).release().perform()
    assert (_shown_at(browser, 0.7), _shown_at(browser, 0.85)) == (BICUBIC, ZSSR)  # the split moved right
    ActionChains(browser).send_keys(" ").perform()  # space swaps the sides
    assert (_shown_at(browser, 0.7), _shown_at(browser, 0.85)) == (ZSSR, BICUBIC)
    ActionChains(browser).send_keys(" ").perform()

    # toggle: one picture over the whole stage, space flips to the other
    browser.find_element("css selector", '#viewer [data-mode="toggle"]').click()
    assert {_shown_at(browser, f) for f in (0.3, 0.5, 0.7)} == {ZSSR}
    ActionChains(browser).send_keys(" ").perform()
    assert {_shown_at(browser, f) for f in (0.3, 0.5, 0.7)} == {BICUBIC}
    ActionChains(browser).send_keys("g").perform()  # the ground truth, read from outside the output folder
    _wait_loaded(browser)
    assert {_shown_at(browser, f) for f in (0.3, 0.5, 0.7)} == {GT}
    assert browser.execute_script("return document.querySelector('#v-a img').naturalWidth") == 129
    browser.find_element("css selector", '#v-right [data-kind="zssr"]').click()
    assert _shown_at(browser, 0.5) == ZSSR

    # the next image in the list's order (by gain: c, b, a) has no ground truth to offer
    ActionChains(browser).send_keys("p").send_keys("p").perform()
    assert browser.find_element("id", "v-name").text == "c.png"
    assert browser.execute_script("return [...document.querySelectorAll('#viewer [data-kind=gt]')].every(b => b.disabled)")
    _wait_loaded(browser)
    assert _shown_at(browser, 0.5) in (".report/thumbs/c.png/full_bicubic.png", "c.png")
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    assert not browser.find_element("id", "viewer").is_displayed()

    urls = _requested_urls(browser)
    assert any(u.endswith("/gt/a.png") for u in urls)
    assert all(u.startswith(("file://", "data:")) for u in urls), [u for u in urls if not u.startswith("file")]


@needs_browser
def test_viewer_zoom_and_pan_keep_both_sides_aligned(tmp_path, browser):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    out = _small_report(tmp_path)
    _open(browser, out / "report.html")
    browser.find_element("css selector", '.entry[data-rel="a.png"] button.open').click()
    browser.find_element("css selector", '#v-right [data-kind="gt"]').click()  # a picture a pixel larger than the other
    _wait_loaded(browser)
    stage = browser.find_element("id", "v-stage")

    def aligned() -> dict:
        a, b = _layers(browser)
        assert a["transform"] == b["transform"] and a["layer"] == pytest.approx(b["layer"], abs=0.01)
        assert (a["left"], a["top"], a["scale"]) == pytest.approx((b["left"], b["top"], b["scale"]), abs=0.01)
        return a

    def under(x: float, y: float, a: dict) -> tuple[float, float]:  # the picture's pixel at a point of the page
        return (x - a["left"]) / a["scale"], (y - a["top"]) / a["scale"]

    fitted = aligned()
    box = _stage(browser)
    cx, cy = box["x"] + box["width"] / 2 - 150, box["y"] + box["height"] / 2 - 80
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(stage, -150, -80), 0, -300).perform()
    zoomed = aligned()
    assert zoomed["scale"] > 1.5 * fitted["scale"]
    assert under(cx, cy, zoomed) == pytest.approx(under(cx, cy, fitted), abs=0.05)  # the pixel under the wheel stays
    browser.find_element("id", "v-in").click()
    assert aligned()["scale"] == pytest.approx(1.5 * zoomed["scale"])
    zoomed = aligned()
    ActionChains(browser).move_to_element_with_offset(stage, -300, 100).click_and_hold() \
        .move_by_offset(-120, -60).release().perform()
    panned = aligned()
    assert (panned["left"] - zoomed["left"], panned["top"] - zoomed["top"]) == pytest.approx((-120, -60), abs=1)
    browser.find_element("css selector", '#viewer [data-mode="toggle"]').click()  # the other way of comparing: same place
    assert aligned()["left"] == pytest.approx(panned["left"]) and _shown_at(browser, 0.5) == GT
    ActionChains(browser).send_keys(" ").perform()
    assert aligned()["left"] == pytest.approx(panned["left"]) and _shown_at(browser, 0.5) == BICUBIC
    ActionChains(browser).send_keys("0").perform()  # back to the whole picture
    assert aligned()["scale"] == pytest.approx(fitted["scale"])


@needs_browser
def test_thumbnails_link_to_full_pictures_and_mark_the_crop(tmp_path, browser):
    out = _small_report(tmp_path)
    _open(browser, out / "report.html")
    assert _fits_the_window(browser)
    heads = browser.execute_script("return [...document.querySelectorAll('table.summary th')].map(t => t.textContent)")
    assert {"PSNR-Y (dB)", "SSIM-Y", "fit (s)", "ZSSR", "bicubic", "gain"} <= set(heads)
    time.sleep(0.3)
    entry = '.entry[data-rel="a.png"]'
    links = browser.execute_script(f"return [...document.querySelectorAll('{entry} .pics a')].map(a => a.href)")
    files = sorted(Path(unquote(urlparse(u).path)).resolve() for u in links)
    assert files == sorted(p.resolve() for p in (out / "a.png", tmp_path / "gt" / "a.png",
                                                 out / ".report/thumbs/a.png/full_bicubic.png"))  # no input on disk
    crop = json.loads((out / ".report/thumbs/a.png/crop.json").read_text())
    for img, box in browser.execute_script(
            f"return [...document.querySelectorAll('{entry} .frame')].map(f => [f.querySelector('img').getBoundingClientRect(),"
            " f.querySelector('.box').getBoundingClientRect()])"):
        assert box["left"] - img["left"] == pytest.approx(crop["left"] / crop["width"] * img["width"], abs=0.5)
        assert box["top"] - img["top"] == pytest.approx(crop["top"] / crop["height"] * img["height"], abs=0.5)
        assert box["width"] == pytest.approx(crop["side"] / crop["width"] * img["width"], abs=0.5)
    note = browser.find_element("css selector", f"{entry} .cropnote").text
    assert f"{crop['side']}×{crop['side']}" in note and f"shown {192 / crop['side']:g}×" in note
    # the kernel the fit used beside the true one, on one grid, at one size, with what the row says
    kernels = browser.execute_script(
        f"return [...document.querySelectorAll('{entry} .kernels figure')].map(f => [f.querySelector('img').src,"
        " f.querySelector('img').naturalWidth, f.querySelector('img').getBoundingClientRect().width,"
        " f.querySelector('figcaption').textContent])")
    assert [Path(unquote(urlparse(k[0]).path)).name for k in kernels] == ["kernel.png", "kernel_true.png"], kernels
    assert kernels[0][1] == kernels[1][1] > 0 and kernels[0][2] == kernels[1][2] > 0
    row = next(r for r in _rows(out) if r["rel"] == "a.png")
    assert kernels[0][3] == f"kernel used: estimated, {float(row['kernel_width']):.2f} px wide, " \
                            f"{float(row['kernel_anisotropy']):.2f}:1"
    assert kernels[1][3] == f"true kernel: error {float(row['kernel_error']):.3f}"
    # assumed bicubic with no truth to hold it against (any ordinary run), or no picture: none shown
    assert (out / REPORT_PICTURES / "thumbs/b.png/kernel.png").is_file()
    for name in ("b.png", "c.png"):
        assert browser.find_elements("css selector", f'.entry[data-rel="{name}"] .kernels') == []
    browser.find_element("css selector", f"{entry} img.crop").click()  # a crop opens the viewer on its box
    _wait_loaded(browser)
    a, _ = _layers(browser)
    stage = _stage(browser)
    centre = ((stage["x"] + stage["width"] / 2 - a["left"]) / a["scale"], (stage["y"] + stage["height"] / 2 - a["top"]) / a["scale"])
    assert centre == pytest.approx((crop["left"] + crop["side"] / 2, crop["top"] + crop["side"] / 2), abs=0.5)


@needs_browser
def test_chart_points_name_their_image_and_lead_to_it(tmp_path, browser):
    from selenium.webdriver import ActionChains

    df = _synthetic_report(tmp_path, 120)
    _open(browser, tmp_path / "report.html")
    gain = df["psnr_y"] - df["bicubic_psnr_y"]
    browser.find_element("id", "search").send_keys("no such name")  # hides every entry: the link must undo it
    worst = browser.find_element("css selector", "#chart-gain [data-i]:last-child")  # sorted best first
    i = int(worst.get_attribute("data-i"))
    assert gain[i] == gain.min()
    ActionChains(browser).move_to_element(worst).perform()
    tip = browser.find_element("id", "tip")
    assert tip.is_displayed() and tip.text.splitlines() == [df["rel"][i], f"gain {gain[i]:+.2f} dB"]
    ActionChains(browser).click().perform()
    hit = browser.find_element("css selector", ".entry.hit")
    assert hit.get_attribute("data-rel") == df["rel"][i]
    assert "page 3 of 3 (120 images)" in browser.find_element("id", "page").text  # the worst of 118 ok: page 3
    assert browser.execute_script("const r = arguments[0].getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight", hit)
    browser.execute_script("window.scrollTo(0, 0)")
    for chart, text in (("chart-scatter", lambda j: f"ZSSR {df['psnr_y'][j]:.2f} dB, bicubic {df['bicubic_psnr_y'][j]:.2f} dB"),
                        ("chart-time", lambda j: f"fit {df['fit_seconds'][j]:.1f} s")):
        point = browser.find_element("css selector", f"#{chart} [data-i]:last-child")
        ActionChains(browser).move_to_element(point).perform()
        j = int(point.get_attribute("data-i"))
        assert browser.find_element("id", "tip").text.splitlines() == [df["rel"][j], text(j)]


def test_charts_keep_one_image_visible_and_points_off_the_frame():
    bar = re.search(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" data-i="7"', ranked([4.2], keys=[7]))
    assert bar and float(bar[3]) >= 10 and float(bar[4]) > 50  # one fit time: one bar, not a line on the axis
    svg = scatter([20, 25, 30], [21, 27, 30], w=300, h=200, keys=[0, 1, 2])
    for cx, cy in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="3"', svg):
        assert 44 + 3 < float(cx) < 300 - 10 - 3 and 10 + 3 < float(cy) < 200 - 30 - 3  # inside the axes
    assert len(re.findall(r"<circle[^>]*data-i", ranked(list(range(100)), keys=list(range(100))))) == 100  # many: dots


def test_thumbs_write_the_full_bicubic_and_the_crop_box(tmp_path):
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(3, 40, 50, generator=g)
    bicubic = F.interpolate(lr[None], scale_factor=2, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    zssr = bicubic.clone()
    zssr[:, 10:30, 60:80] = 1.0  # where the two differ
    write_thumbs(tmp_path / "png", lr, bicubic, zssr, None, originals={"zssr": str(tmp_path / "o.png")})
    with Image.open(tmp_path / "png" / "full_bicubic.png") as im:
        assert im.size == (100, 80)
        assert np.abs(np.asarray(im, dtype=float) / 255 - bicubic.numpy().transpose(1, 2, 0)).max() <= 0.5 / 255 + 1e-6
    top, left, side = most_different_region(zssr, bicubic)
    assert json.loads((tmp_path / "png" / "crop.json").read_text()) == {
        "top": top, "left": left, "side": side, "height": 80, "width": 100}
    assert not (tmp_path / "png" / "full_zssr.png").exists()  # a browser shows the output itself
    write_thumbs(tmp_path / "tif", lr, bicubic, zssr, bicubic, originals={"zssr": str(tmp_path / "o.tif"), "gt": "s3://b/gt.png"})
    assert (tmp_path / "tif" / "full_zssr.png").is_file() and (tmp_path / "tif" / "full_gt.png").is_file()
