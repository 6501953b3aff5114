"""The README's first command, end to end: ``python -m pipelines demo`` on a fresh store, then again.

build-dataset (every stage), pretrain/demo and the evaluation; the second run must do no work: every
unit, the checkpoint and the evaluation are reported cached.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# the demo's two runs take ~7 min on 2 idle cores (12 min measured beside another test): its own timeout, matching
# the subprocess's, not the suite's 600 s default for ordinary tests
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def _demo(root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "pipelines", "demo", "--root", str(root)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, f"demo failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def test_demo_builds_every_stage_then_reruns_from_cache(tmp_path):
    first = _demo(tmp_path / "store")
    m = re.search(r"(\d+) done, (\d+) cached, (\d+) failed, (\d+) missing", first)
    assert m and int(m.group(1)) > 100 and m.group(3) == "0" and m.group(4) == "0", first[-3000:]
    for artifact in ("images", "labels/sam_instance", "labels/human_poses", "tokenizers/rgb_diffusion-tiny",
                     "tokens/tok_rgb-224", "tokens/tok_sam_edge-224", "tokens/det", "tokens/sam_instance"):
        assert re.search(rf"\s{re.escape(artifact)}\s", first), f"{artifact} not in the status table"
    assert re.search(r"pretrain checkpoints/demo/step-\d+: done \(\d+ steps, loss ([\d.]+) -> ([\d.]+)\)", first)
    start, end = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", first).groups())
    assert end < start - 2  # the tiny model learns from the demo's tokens
    report = re.search(r"report: (\S+data\.report\.md)", first)
    grid = re.search(r"grid:\s+(\S+data\.grid\.png)", first)
    assert report and grid and Path(grid.group(1)).stat().st_size > 10_000
    text = Path(report.group(1)).read_text()
    # every task the evaluation stage scores runs on the demo: maps, boxes, captions and kNN on predicted globals
    for row in ("| depth (tok_depth@224) | ground truth |", "| boxes (det) | pseudo label | ap ↑ |",
                "| captioning (caption) | source caption | bleu4 ↑ |",
                "| kNN classification (tok_dinov2_global) | ground truth 'label'"):
        assert row in text, row

    second = _demo(tmp_path / "store")
    assert re.search(r"build-dataset demo: 0 units done, \d+ cached", second), second[-3000:]
    m = re.search(r"(\d+) done, (\d+) cached, (\d+) failed, (\d+) missing", second)
    assert m.group(3) == "0" and m.group(4) == "0"
    # status rows not cached: only the evaluation (the status lists it, made by the evaluate flow's own record)
    not_cached = [line for line in second.splitlines()
                  if re.match(r"^\S+\s+\S+\s+(\d{5}|-)\s+(done|failed|missing)\s", line)]
    assert all(line.startswith("evaluate ") for line in not_cached), not_cached
    assert re.search(r"pretrain checkpoints/demo/step-\d+: cached", second), second[-3000:]
    assert re.search(r"evaluate demo/evaluations/\S+: cached", second), second[-3000:]
