"""A multi-node Ray cluster on one host, for tests and benchmarks: ``ray start --head`` plus ``ray start
--address`` per extra node, each with its own CPUs and a custom resource naming it, token authentication on.

Every ``ray start`` runs with ``--block`` in its own process group, so the node's daemons (GCS, raylet,
dashboard, workers) die with a SIGKILL of that group. Never ``ray stop``: it kills every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.servers import BIN, free_port, kill, kill_group, start, wait_until

REPO = str(Path(__file__).resolve().parents[1])

# What a client of the cluster (the flow process, a state query) needs in its environment: the token.
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")


@dataclass
class RayCluster:
    address: str  # the head's GCS address, host:port (what FOURM_RAY_ADDRESS gets)
    dashboard_url: str
    env: dict[str, str]  # environment for processes that join the cluster (auth token, PYTHONPATH)
    nodes: list[subprocess.Popen] = field(default_factory=list)
    temp_dir: str = ""

    def stop(self) -> None:
        for proc in reversed(self.nodes):
            kill(proc)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def state(self) -> dict[str, Any]:
        """Nodes, tasks, actors and jobs from Ray's state API (in a subprocess: the test process may hold a
        local Ray of its own)."""
        script = (
            "import json, sys\n"
            "from ray.util.state import list_actors, list_jobs, list_nodes, list_tasks\n"
            "a = sys.argv[1]\n"
            "dump = lambda xs: [x if isinstance(x, dict) else x.__dict__ for x in xs]\n"
            "print(json.dumps({'nodes': dump(list_nodes(address=a, limit=100)),\n"
            "  'tasks': dump(list_tasks(address=a, detail=True, limit=10000, raise_on_missing_output=False)),\n"
            "  'actors': dump(list_actors(address=a, detail=True, limit=10000, raise_on_missing_output=False)),\n"
            "  'jobs': dump(list_jobs(address=a))}, default=str))\n")
        res = subprocess.run([sys.executable, "-c", script, self.dashboard_url], env=self.env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads(res.stdout.strip().splitlines()[-1])


def _node_args(num_cpus: int, name: str) -> list[str]:
    # Every port explicit or random: other Ray clusters may run on this host (the defaults collide).
    return ["--num-cpus", str(num_cpus), "--num-gpus", "0", "--resources", json.dumps({name: 1}),
            "--node-ip-address", "127.0.0.1", "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port()), "--disable-usage-stats", "--block"]


# A joining node gives up when the head does not see it registered within 30 s (hard-coded in Ray's node.py:
# "The current node timed out during startup"): on a loaded shared box that happens, so a node is started anew.
NODE_ATTEMPTS = 3


def _start_node(make_cmd: Callable[[], list[str]], log: Path, env: dict[str, str], timeout: float, what: str,
                attempts: int) -> subprocess.Popen:
    """``ray start ... --block`` until it reports the runtime started; a node that exits first is retried (with
    fresh ports: the killed raylet may not have let go of its own yet)."""
    for attempt in range(1, attempts + 1):
        proc = start(make_cmd(), log, env=env)
        try:
            wait_until(lambda: "Ray runtime started" in log.read_text(errors="replace"), timeout, what, proc, log)
            return proc
        except RuntimeError:  # exited: its raylet may still run in its process group
            kill_group(proc)
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def start_ray_cluster(workdir: Path, cpus_per_node: list[int], timeout: float = 180,
                      worker_niceness: int | None = None) -> RayCluster:
    """Start ``len(cpus_per_node)`` nodes (the first is the head); node ``i`` has the resource ``node_i``.

    ``worker_niceness``: the nice value of the nodes' worker processes (Ray's default: 15). Benchmarks that compare
    work done in Ray workers with work done in the (nice 0) driver set 0, or the workers only get the CPU that the
    driver and everyone else on the box leave."""
    token = workdir / "ray-auth-token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FOURM_RAY"))}
    env.update(PYTHONPATH=REPO, OMP_NUM_THREADS="1", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               RAY_USAGE_STATS_ENABLED="0")
    if worker_niceness is not None:
        env["RAY_worker_niceness"] = str(worker_niceness)
    # Unix socket paths must stay short: a test's tmp_path is too deep for them.
    temp_dir = tempfile.mkdtemp(prefix="fourm-ray-", dir="/tmp")
    port, dash = free_port(), free_port()
    cluster = RayCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", env, temp_dir=temp_dir)
    ray = str(BIN / "ray")
    try:
        for i, cpus in enumerate(cpus_per_node):
            log = workdir / f"ray-node-{i}.log"
            if i == 0:
                cmd = [ray, "start", "--head", "--port", str(port), "--temp-dir", temp_dir, "--include-dashboard",
                       "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                       "--ray-client-server-port", str(free_port()), *_node_args(cpus, f"node_{i}")]
                cluster.nodes.append(_start_node(lambda: cmd, log, env, timeout, f"ray node {i}", attempts=1))
            else:
                def joining(cpus=cpus, i=i) -> list[str]:
                    return [ray, "start", "--address", cluster.address, *_node_args(cpus, f"node_{i}")]

                cluster.nodes.append(_start_node(joining, log, env, timeout, f"ray node {i}", attempts=NODE_ATTEMPTS))
    except BaseException:
        cluster.stop()
        raise
    return cluster
