"""Real Ray nodes for the cluster tests: each one a ``ray start --block`` process of its own, with its
own temp folder, ports and working directory, as a user starts a head and a worker on two machines.

``ray start --block`` stays in the foreground and stops its node's processes when it is ended, so a
test cleans up by ending it, never by ``ray stop`` (which would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def ensure_token() -> None:
    """Ray's token authentication, on as Ray turns it on: a token in ~/.ray/auth_token (any local
    Ray writes one; ``ray get-auth-token --generate`` writes one if there is none) that every node
    uses with RAY_AUTH_MODE=token, and that the driver finds (``run.cluster.use_token_if_any``)."""
    subprocess.run([RAY, "get-auth-token", "--generate"], capture_output=True, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class RayNode:
    """One node: the head (``address`` None) or a worker joining ``address``; ``cwd`` is the folder
    it is started from."""

    def __init__(self, cwd: Path, num_cpus: int = 1, address: str | None = None, num_gpus: int = 0,
                 job_server: bool = False, wrap: list[str] | None = None) -> None:
        # A short temp folder: Ray's socket paths must fit in 107 bytes (pytest's tmp_path does not).
        self.temp = tempfile.mkdtemp(prefix="zr", dir="/tmp")
        self.port = free_port() if address is None else None
        cmd = [RAY, "start", "--block", "--temp-dir", self.temp, "--num-cpus", str(num_cpus),
               "--num-gpus", str(num_gpus), "--disable-usage-stats",
               "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
               "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
               "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]
        # the head's job server, when asked, as cluster.yaml starts it: on 127.0.0.1 only
        self.dashboard_port = free_port() if job_server else None
        dashboard = ["--include-dashboard=true", "--dashboard-host=127.0.0.1", "--dashboard-port",
                     str(self.dashboard_port)] if job_server else ["--include-dashboard=false"]
        cmd += ["--head", "--port", str(self.port), *dashboard] if address is None else ["--address", address]
        cwd.mkdir(parents=True, exist_ok=True)
        self.log = open(Path(self.temp) / "start.log", "w")
        ensure_token()
        # a worker joins the head only with the token: `ray start --address` sends it only in token mode
        # and its python is the one with the project installed, as cluster.yaml's nodes' is (a Job's
        # entry point runs `python3` from the node's PATH)
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        # wrap: a command the node starts under (e.g. a mount namespace of its own), given the node's as "$@"
        self.proc = subprocess.Popen([*(wrap or []), *cmd], cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    @property
    def address(self) -> str:
        """The head's GCS address, as the machine's own IP (Ray's nodes advertise that one)."""
        from ray._private.services import get_node_ip_address

        return f"{get_node_ip_address()}:{self.port}"

    def pids(self, name: str) -> list[int]:
        """The node's processes whose command line holds ``name`` (e.g. 'raylet', 'gcs_server')."""
        out = subprocess.run(["pgrep", "-f", f"{name}.*{self.temp}"], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self, name: str) -> None:
        for pid in self.pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # gone between pgrep and now (a raylet ends when its GCS does)
                pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # whatever outlived it (workers of a killed raylet), found by the temp folder in their command lines
        subprocess.run(["pkill", "-9", "-f", self.temp], capture_output=True)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def wait_for_nodes(address: str, n: int, limit: float = 90) -> None:
    """Until the cluster at ``address`` has ``n`` live nodes (one subprocess that joins once the head
    answers and reads the nodes until there are ``n``: the test's own process stays out of Ray)."""
    probe = ("import sys,time,ray\n"
             "from zssr_batch.run.cluster import start_ray\n"
             "n, limit, t0 = int(sys.argv[2]), float(sys.argv[3]), time.time()\n"
             "start_ray(sys.argv[1])\n"
             "while sum(1 for x in ray.nodes() if x['Alive']) != n and time.time() - t0 < limit:\n"
             "    time.sleep(0.5)\n"
             "print(sum(1 for x in ray.nodes() if x['Alive']))")
    t0 = time.time()
    while time.time() - t0 < limit:
        res = subprocess.run([sys.executable, "-c", probe, address, str(n), str(limit)], capture_output=True,
                             text=True, timeout=limit + 120)
        if res.returncode == 0 and res.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)  # the head did not answer yet
    raise TimeoutError(f"the cluster at {address} did not reach {n} nodes in {limit:.0f} s")
