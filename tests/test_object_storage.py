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

SMALL = ("--gpus", "0", "--workers", "1", "--threads", "1", "--max-iters", "30", "--crop", "16", "--width", "8",
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

    # ~1 s an image (waited as each is read, not computed), so that the kill comes mid-run
    proc = subprocess.Popen(_run(s3, *args), env={**s3, "ZSSR_BATCH_FAULT": "slow:.png:1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
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


def _moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def test_a_store_that_cannot_be_reached_or_written_is_one_line_before_any_work(s3, tmp_path):
    fs = _fs(s3)
    fs.mkdir("zssr")
    fs.pipe_file("zssr/in/0.png", _png(0))
    cases = [  # (environment, --output, what the line must say)
        (s3, "s3://nobucket/out", "s3://nobucket/out"),  # a bucket that is not there: not after every fit
        ({**s3, "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}, "s3://zssr/out", "s3://zssr/in"),
        ({k: v for k, v in s3.items() if not k.startswith("AWS_")} | {"AWS_EC2_METADATA_DISABLED": "true",
                                                                     "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"},
         "s3://zssr/out", "NoCredentialsError"),
    ]
    for env, out, says in cases:
        res = subprocess.run(_run(env, "--input", "s3://zssr/in", "--output", out), env=env, capture_output=True,
                             text=True, timeout=120)
        err = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(err) == 1 and says in err[0] and "Traceback" not in res.stderr, res.stderr


@pytest.mark.slow
def test_a_node_that_reads_another_store_stops_the_run_before_any_work(s3, tmp_path):
    # The driver's settings point at one store; the cluster's node was started pointing at another
    # (its workers get its environment, not the driver's). Before, an image found in both was read
    # from the wrong one, fitted, written there, and its row said ok.
    from ray_nodes import RayNode, wait_for_nodes

    other_port = free_port()
    other = _moto(other_port)
    try:
        for seed, env in enumerate((s3, {**s3, "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{other_port}"})):
            fs = _fs(env)
            fs.mkdir("zssr")
            fs.pipe_file("zssr/in/0.png", _png(seed))  # another picture in each
        # what the node starts with: the same credentials, another endpoint
        node_env = {k: v for k, v in s3.items() if k.startswith(("AWS_", "FSSPEC_"))}
        node_env["FSSPEC_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{other_port}"
        saved = {k: os.environ.get(k) for k in node_env}
        os.environ.update(node_env)
        try:
            head = RayNode(tmp_path / "head")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        try:
            wait_for_nodes(head.address, 1)
            res = subprocess.run(_run(s3, "--input", "s3://zssr/in", "--output", "s3://zssr/out", "--address",
                                      head.address), env=s3, capture_output=True, text=True, timeout=300)
        finally:
            head.stop()
    finally:
        other.terminate()
        other.wait()
    assert res.returncode == 2, res.stderr
    line = [ln for ln in res.stderr.splitlines() if "cannot see" in ln]
    # the input: another object (an ETag of its own), not an unreadable one
    assert len(line) == 1 and "s3://zssr/in/0.png (it reads " in line[0], res.stderr
    assert "s3://zssr/in/0.png (it reads nothing" not in line[0], res.stderr
    assert not _fs(s3).exists("zssr/out/0.png")
