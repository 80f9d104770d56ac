"""The repository's promises: README commands match CI, cluster.yaml is a valid Ray config, jobs run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import DATA, needs_data

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up and try it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "zssr-batch run" in cmds[0] and "pytest" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert cmds[1] in ci


def test_cluster_yaml_validates_against_rays_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(cfg, schema)
    # The project on every node: the head with the job server's extra, the GPU workers with CUDA torch.
    assert any('pip install -e "~/zssr-batch[cluster,s3]"' in c for c in cfg["head_setup_commands"])
    assert any('pip install -e "~/zssr-batch[s3]"' in c for c in cfg["worker_setup_commands"])


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [str(node)]


def test_cluster_yaml_exposes_nothing_and_pins_what_the_driver_runs():
    import tomllib

    import ray

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    text = _strings(cfg)
    # No service on every interface: the job server runs any code it is sent ("ShadowRay").
    assert not [s for s in text if "0.0.0.0" in s or "[::]" in s], "a service bound to every interface"
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    head = [c for c in starts if "ray start --head" in c]
    assert len(head) == 1 and "--dashboard-host=127.0.0.1" in head[0]
    assert all("RAY_AUTH_MODE=token" in c and "ulimit -n" in c for c in starts if "ray start" in c)
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    # One Ray version everywhere: pyproject pins it, every node installs the project, and it is this one.
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"ray=={ray.__version__}" in [d.split("#")[0].strip() for d in deps["dependencies"]]
    assert deps["optional-dependencies"]["cluster"] == [f"ray[default]=={ray.__version__}"]
    # torch: the README's pin; the CPU build on the head only, PyPI's CUDA build on the GPU workers.
    pin = re.search(r"torch==[\d.]+", (ROOT / ".ci" / "run").read_text()).group(0)
    assert any(pin in c and "whl/cpu" in c for c in cfg["head_setup_commands"])
    assert any(pin in c and "whl/cpu" not in c for c in cfg["worker_setup_commands"])
    assert not any("torch" in c for c in cfg["setup_commands"])
    # A GPU worker only when a run asks for GPUs; the head runs no actor (no CPU offered).
    assert cfg["available_node_types"]["gpu_worker"]["min_workers"] == 0
    assert cfg["available_node_types"]["head"]["resources"] == {"CPU": 0}


@pytest.mark.slow
def test_cluster_yaml_setup_commands_resolve(tmp_path):
    # The nodes' project install, dry-run here: the extras it names exist and every pin resolves.
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for cmd in cfg["head_setup_commands"] + cfg["worker_setup_commands"]:
        if "~/zssr-batch" not in cmd:
            continue
        args = cmd.split("pip install", 1)[1].replace("~/zssr-batch", str(ROOT)).replace('"', "").split()
        res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", *args],
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, (cmd, res.stderr[-2000:])


def test_samples_command_writes_pictures(tmp_path):
    out = subprocess.run([sys.executable, "-m", "zssr_batch", "samples", str(tmp_path)], capture_output=True,
                         text=True)
    assert out.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bricks.png", "rings.png", "text.png", "tiles.png"]


@needs_data
def test_benchmark_tables_job_writes_a_table(tmp_path):
    sys.path.insert(0, str(ROOT / "jobs"))
    try:
        import benchmark_tables
    finally:
        sys.path.pop(0)
    code = benchmark_tables.main(["--data", str(DATA), "--output", str(tmp_path), "--sets", "Set5", "--scales", "3",
                                  "--", "--gpus", "0", "--max-iters", "0", "--width", "8", "--ensemble", "none",
                                  "--back-projection-iters", "0"])  # (an untrained network still runs: keep it small)
    assert code == 0
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| Set5 | x3 | paper | 5 |" in table and "30.39" in table  # the published bicubic figure beside ours
    assert len(pd.read_csv(tmp_path / "Set5" / "x3" / "paper" / "report.csv")) == 5


def test_a_ray_job_refuses_relative_paths_in_one_line(tmp_path):
    # A Job reads its paths in a folder Ray makes for it: a relative --output wrote the outputs into
    # Ray's package cache, where they went with the session, and the job said it succeeded.
    for script in ("upscale_dataset.py", "benchmark_tables.py"):
        res = subprocess.run([sys.executable, str(ROOT / "jobs" / script), "--input", "/abs/in", "--data", "/abs",
                              "--output", "relout"], capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 2 and "--output relout" in res.stderr and "absolute, or s3://" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
