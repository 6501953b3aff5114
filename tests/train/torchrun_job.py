"""Launching ``python -m train_stage train`` under torchrun the way the pretrain flow does, and killing it.

Shared by the multi-node and the kill/resume tests. torchrun starts each worker in its own session, so a
kill of "the job" (what a lost node does) SIGKILLs torchrun's process group and every descendant's group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from pipelines.pretrain import torchrun_command
from train_stage.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def launch(cfg: TrainConfig, store_root: str, workdir: Path, torchrun_args: list[str] | None = None,
           nproc_per_node: int = 2, env: dict[str, str] | None = None, tag: str = "job") -> subprocess.Popen:
    """Start the job in its own process group; output goes to ``workdir/<tag>.log``."""
    config = workdir / f"{tag}.yaml"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    cmd = torchrun_command(config, store_root, None, None, False, nproc_per_node, torchrun_args)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    with open(workdir / f"{tag}.log", "wb") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish(proc: subprocess.Popen, workdir: Path, tag: str = "job", timeout: float = 300) -> str:
    proc.wait(timeout)
    out = (workdir / f"{tag}.log").read_text(errors="replace")
    assert proc.returncode == 0, out[-4000:]
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and all its workers at once, as when the node goes away."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)


def wait_for(paths: list[Path], proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert proc.poll() is None, f"the job ended before the pause point:\n{log.read_text(errors='replace')[-4000:]}"
        assert time.monotonic() < deadline, f"no pause within {timeout}s:\n{log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.05)
