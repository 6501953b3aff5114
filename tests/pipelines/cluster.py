"""A Prefect cluster in a box for tests and bench/: a real server, the two work pools of prefect.yaml, the
deployments made by ``prefect deploy --all`` from a clone, and one process worker per pool, each in its own
empty folder, with no path to this checkout: flow runs get the code through the deployment's pull step
(``git_clone`` of a bare repository holding a snapshot of this working tree).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import BIN, PrefectServer, kill, start

REPO = Path(__file__).resolve().parents[2]
POOLS = ("fourm-cpu", "fourm-gpu")
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _git(*args: str, cwd: Path = REPO, env: dict | None = None) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr}")
    return res.stdout.strip()


def snapshot_repository(bare: Path) -> str:
    """A bare repository at ``bare`` whose ``main`` is one commit holding this working tree as it is (tracked
    and untracked files, minus .gitignore'd ones), so uncommitted work is what the workers run. Returns the
    commit sha. The working tree, its index and its refs are not touched (a temporary index file is used)."""
    index = bare.parent / f"{bare.name}.index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index), "GIT_AUTHOR_NAME": "fourm-test",
           "GIT_AUTHOR_EMAIL": "test@fourm.invalid", "GIT_COMMITTER_NAME": "fourm-test",
           "GIT_COMMITTER_EMAIL": "test@fourm.invalid"}
    _git("read-tree", "HEAD", env=env)
    _git("add", "-A", env=env)
    tree = _git("write-tree", env=env)
    sha = _git("commit-tree", tree, "-p", "HEAD", "-m", "test snapshot of the working tree", env=env)
    _git("init", "-q", "--bare", "--initial-branch=main", str(bare))
    _git("push", "-q", str(bare), f"{sha}:refs/heads/main")
    index.unlink(missing_ok=True)
    return sha


def prefect(env: dict, *args: str, cwd: Path = REPO, timeout: float = 180) -> str:
    res = subprocess.run([str(BIN / "prefect"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"prefect {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def api(api_url: str, path: str, body: dict | list | None = None, method: str | None = None):
    """GET (or POST ``body``) the Prefect REST API; the JSON answer (None when empty)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{api_url}/{path}", data=data, headers={"Content-Type": "application/json"},
                                 method=method)
    for attempt in range(5):
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
            break
        except urllib.error.HTTPError as err:
            # 503: the SQLite-backed test server was busy (database locked) on a loaded machine; ask again
            if err.code == 503 and attempt < 4:
                time.sleep(1 + attempt)
                continue
            raise AssertionError(f"{method or ('POST' if data else 'GET')} {path}: HTTP {err.code}: "
                                 f"{err.read()[:2000]!r}") from None  # the server says why in the body
        except (TimeoutError, urllib.error.URLError):  # an overloaded test server did not answer in 30 s
            if attempt == 4:
                raise
            time.sleep(1 + attempt)
    return json.loads(raw) if raw else None


@dataclass
class Cluster:
    server: PrefectServer
    commit: str  # the snapshot commit the deployments pull
    deploy_output: str
    workdir: Path
    env: dict[str, str]  # the workers' environment (also fine for CLI calls)
    workers: dict[str, object] = field(default_factory=dict)  # pool -> Popen

    def log(self, pool: str) -> str:
        return (self.workdir / f"worker-{pool}.log").read_text(errors="replace")

    def server_log(self) -> str:
        # start_prefect_server keeps its log beside PREFECT_HOME
        return (Path(self.server.env["PREFECT_HOME"]).parent / "prefect-server.log").read_text(errors="replace")

    def run(self, name: str, params: dict, timeout: float = 300) -> str:
        """``prefect deployment run <name>`` with ``params`` (JSON-encoded -p values); wait until the run
        COMPLETES; its id."""
        args = [a for k, v in params.items() for a in ("--param", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
        out = prefect(self.env, "deployment", "run", name, *args)
        flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        state = self.wait(flow_run_id, timeout)
        assert state == "COMPLETED", f"{name} ended {state}:\n" + "\n".join(self.log(p)[-4000:] for p in self.workers)
        return flow_run_id

    def wait(self, flow_run_id: str, timeout: float = 300) -> str:
        deadline, state = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            state = api(self.server.api_url, f"flow_runs/{flow_run_id}")["state"]["type"]
            if state in FINAL:
                break
            time.sleep(1)
        return state

    def stop(self) -> None:
        for proc in self.workers.values():
            kill(proc)


def flow_run_logs(api_url: str, flow_run_id: str, until: str | None = None, timeout: float = 60) -> str:
    """The flow run's log lines as the Prefect server stored them (what the UI shows), oldest first. Logs reach
    the server in batches, after the run's final state: with ``until``, wait up to ``timeout`` s for that text."""
    deadline = time.monotonic() + timeout
    while True:
        logs = api(api_url, "logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                            "sort": "TIMESTAMP_ASC", "limit": 200})
        text = "\n".join(entry["message"] for entry in logs)
        if until is None or until in text or time.monotonic() > deadline:
            return text
        time.sleep(1)


def start_cluster(server: PrefectServer, workdir: Path, extra_env: dict[str, str] | None = None,
                  pools: tuple[str, ...] = POOLS) -> Cluster:
    """Pools, deployments (``prefect deploy --all`` from a clone of a snapshot of this tree) and one worker per
    pool in ``pools``, each started in its own empty folder with no PYTHONPATH: the code comes from the pull
    step."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in server.env.items() if k != "PYTHONPATH"}
    env.update({"OMP_NUM_THREADS": "1", "PREFECT_WORKER_QUERY_SECONDS": "2", **(extra_env or {})})
    for pool in POOLS:
        prefect(env, "work-pool", "create", pool, "--type", "process", "--overwrite")
    cluster = Cluster(server, "", "", workdir, env)
    try:
        for pool in pools:  # workers import for seconds while the deployments are made
            folder = workdir / f"worker-{pool}"
            folder.mkdir(exist_ok=True)
            cluster.workers[pool] = start([str(BIN / "prefect"), "worker", "start", "--pool", pool],
                                          workdir / f"worker-{pool}.log", env=env, cwd=str(folder))
        cluster.commit = snapshot_repository(workdir / "fourm.git")
        _git("clone", "-q", str(workdir / "fourm.git"), str(workdir / "deployer"))
        cluster.deploy_output = prefect(env, "--no-prompt", "deploy", "--all", cwd=workdir / "deployer")
    except BaseException:
        cluster.stop()
        raise
    return cluster
