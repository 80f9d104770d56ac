"""report.html in headless Chromium: rows, charts, sorting, filtering, no network, 10,000 rows fast."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import hr_path, lr_path, names, needs_data
from zssr_batch.cli import main
from zssr_batch.report.html import write_html_report
from zssr_batch.report.table import COLUMNS

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
                 "--window-size=1280,1600", "--disable-dev-shm-usage"):
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


def _gains(drv) -> list[float]:
    return [float(g) for g in drv.execute_script(
        "return [...document.querySelectorAll('.entry')].map(e => e.dataset.gain).filter(g => g !== '')")]


@needs_browser
@needs_data
def test_report_of_a_real_run_renders_sorts_and_stays_offline(tmp_path, browser):
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
    for chart in ("chart-gain", "chart-scatter", "chart-time"):
        assert browser.execute_script(f"return document.querySelectorAll('#{chart} path, #{chart} circle').length") > 0
    assert browser.execute_script("return document.querySelectorAll('#chart-scatter circle').length") == 5
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

    urls = _requested_urls(browser)
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), [u for u in urls if not u.startswith("file")]
    ARTIFACTS.mkdir(exist_ok=True)
    Select(browser.find_element("id", "status")).select_by_value("")
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(ARTIFACTS / "report.png"))


@needs_browser
def test_report_over_10000_rows_opens_in_seconds(tmp_path, browser):
    rng = np.random.default_rng(0)
    n = 10_000
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
    df.to_csv(tmp_path / "report.csv", index=False)
    write_html_report(tmp_path)
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
