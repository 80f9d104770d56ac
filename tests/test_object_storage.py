"""``zssr-batch run`` with its inputs, outputs and report in an object store: a real S3-compatible
server (moto's) started by the test on 127.0.0.1, reached through fsspec/s3fs as users reach S3."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ray_nodes import free_port

SMALL = ("--gpus", "0", "--workers", "1", "--threads", "1", "--max-iters", "300", "--crop", "16", "--width", "8",
         "--back-projection-iters", "1", "--ensemble", "none", "--pack", "1", "--no-progress")


@pytest.fixture
def s3(tmp_path):
    """A moto S3 server on 127.0.0.1, and the environment that points fsspec at it."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    try:
        yield env
    finally:
        server.terminate()
        server.wait()


def _fs(env):
    import s3fs

    return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=env["FSSPEC_S3_ENDPOINT_URL"])


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _run(env, *args: str, **kw) -> list[str]:
    return [sys.executable, "-m", "zssr_batch", "run", *args, *SMALL]


def _staged_rows(env) -> int:
    """Rows of the report the driver keeps on its own disk while it runs (``run.mirror``)."""
    found = list(Path(env["XDG_CACHE_HOME"]).rglob("report.csv"))
    if not found:
        return 0
    with open(found[0], newline="") as f:
        return len(list(csv.DictReader(f)))


@pytest.mark.slow
def test_a_run_from_a_bucket_into_a_bucket_resumes_after_a_kill(s3, tmp_path):
    fs = _fs(s3)
    fs.mkdir("zssr")
    for i in range(6):
        fs.pipe_file(f"zssr/in/{i}.png", _png(i))
    fs.pipe_file("zssr/in/.hidden.png", _png(9))
    args = ("--input", "s3://zssr/in", "--output", "s3://zssr/out")

    proc = subprocess.Popen(_run(s3, *args), env=s3, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    t0 = time.time()
    while _staged_rows(s3) < 2 and proc.poll() is None and time.time() - t0 < 180:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray, at once: no end files, no last copy
    proc.wait()
    done = _staged_rows(s3)
    assert 2 <= done < 6

    rerun = subprocess.run(_run(s3, *args), env=s3, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done} already done" in rerun.stdout  # the rows the killed run kept, read back
    fs.invalidate_cache()
    with fs.open("zssr/out/report.csv", "r", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["input"] for r in rows) == [f"s3://zssr/in/{i}.png" for i in range(6)]
    assert all(r["status"] == "ok" and r["output"].startswith("s3://zssr/out/") for r in rows), rows
    for r in rows:  # each output is a whole PNG at twice the size, in the bucket
        with Image.open(io.BytesIO(fs.cat_file(r["output"][5:]))) as im:
            assert im.size == (48, 48)
    for name in ("summary.csv", "run.json", "report.html"):
        assert fs.exists(f"zssr/out/{name}")
    assert json.loads(fs.cat_file("zssr/out/run.json"))["images"]["ok"] == 6 - done
    assert not fs.exists("zssr/out/.hidden.png")

    # Another machine (another local folder for the report): it reads the bucket's report and redoes nothing.
    elsewhere = {**s3, "XDG_CACHE_HOME": str(tmp_path / "cache2")}
    again = subprocess.run(_run(elsewhere, *args), env=elsewhere, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "6 already done" in again.stdout, again.stdout + again.stderr
