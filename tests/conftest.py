"""Shared fixtures: the benchmark images in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

# Before torch is imported, here and in every process the tests start (Ray's workers inherit it): the
# suite runs three test processes on two cores, each with torch's OpenMP threads, and an OpenMP thread
# that waits spins by default, burning the core another process needs. Measured on a CPU-heavy quarter
# of the suite (-n 3, 2 cores, 2026-12-07): 135 s and 140 user CPU-s spinning, 107 s and 116 passive.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DATA = Path(os.environ.get("ZSSR_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def have_data() -> bool:
    return (DATA / "Set5" / "HR").is_dir()


needs_data = pytest.mark.skipif(
    not have_data(), reason=f"benchmark images not found at {DATA} (set ZSSR_DATA to the shared/data folder)"
)


def lr_path(set_name: str, name: str, scale: int) -> Path:
    return DATA / set_name / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"


def hr_path(set_name: str, name: str) -> Path:
    return DATA / set_name / "HR" / f"{name}.png"


def names(set_name: str) -> list[str]:
    return sorted(p.stem for p in (DATA / set_name / "HR").glob("*.png"))


@pytest.fixture(scope="session")
def one_ray():
    """One local Ray for the in-process ``run``s of a test process (a pytest-xdist worker), started
    as ``run`` starts its own (``start_ray``: same CPUs, no GPUs on a CPU box). ``run`` joins a Ray
    already up and leaves it up, killing its actors as always, so the suite pays Ray's start (some
    9 CPU-seconds of its processes) once a process, not once a run. Later in-process runs of that
    process join it too; a test that needs a Ray of other resources takes ``own_ray``."""
    import ray

    from zssr_batch.run.cluster import start_ray

    started = start_ray(None)
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def joining_one_ray(one_ray):
    """The environment of a driver that must be a process of its own (a test signals it) but need
    not start a Ray of its own: it joins this process's (``one_ray``, by RAY_ADDRESS), as a driver
    joins a cluster, and saves a local Ray's start (some 7 CPU-seconds)."""
    import ray

    return {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}


@contextlib.contextmanager
def own_ray(**init):
    """A Ray of the test's own (``ray.init(**init)``, a new local one as ``start_ray`` starts it,
    whatever cluster was last started on the machine) for the block; the shared one (``one_ray``)
    is stopped for it and started again after."""
    import ray

    from zssr_batch.run.cluster import start_ray

    shared = ray.is_initialized()
    if shared:
        ray.shutdown()
    ray.init(address="local", **init)
    try:
        yield
    finally:
        ray.shutdown()
        if shared:
            start_ray(None)


def run_here(capsys, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``zssr-batch run ARGS`` in this process, joining its Ray (``one_ray``), as the command line's
    CompletedProcess: a rerun that needs no process of its own (a kill, a terminal, a memory
    reading) costs no interpreter and no Ray start."""
    from zssr_batch.cli import main

    capsys.readouterr()  # what came before is not this run's
    here = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        rc = main(["run", *args])
    finally:
        os.chdir(here)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["zssr-batch", "run", *args], rc, out, err)


def pytest_configure(config):
    """Once, before any test process starts: Ray's auth token, which every local Ray and every
    `ray start` node of the tests reads from ~/.ray/auth_token. Each writes one if there is none;
    two test processes doing so at once (pytest -n 3 on a fresh machine) could leave one with
    another's token."""
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller has done it
        return
    import sys

    subprocess.run([str(Path(sys.executable).with_name("ray")), "get-auth-token", "--generate"],
                   capture_output=True, check=False)


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    """The slow tests first: with several test processes (-n 3), the long ones (real clusters, killed
    workers, an S3 server) then run side by side from the start and the short ones fill the gaps,
    instead of one long test starting last and running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
