"""The README's first command, end to end: ``python -m pipelines demo`` on a fresh store, then again.

build-dataset (every stage) of demo and of its held-out scenes (demo-heldout), pretrain/demo, the evaluation on the
held-out scenes and the chained example; the demo learns: on the held-out scenes the report says the model beats
the trivial baselines on depth, semantic segmentation and captioning (with captions that name objects). The second
run must do no work: every unit, the checkpoint, the evaluation and the chained example are reported cached.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# the demo's first run is the long one (build, 500 training steps, evaluation; README "What the demo does" has its
# measured wall times), the second is all cached: its own timeout, not the suite's 600 s default for ordinary tests
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]


def _demo(root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "pipelines", "demo", "--root", str(root)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, f"demo failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def _report_rows(text: str) -> dict[tuple[str, str, str], list[str]]:
    """(task (target), reference, metric) -> the cells of the report's primary-metric table rows."""
    rows = {}
    for line in text.split("## Primary metrics by reference")[1].split("\n## ")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0] != "task" and not cells[0].startswith("---"):
            rows[(cells[0], cells[1], cells[2].split()[0])] = cells
    return rows


def test_demo_builds_every_stage_learns_then_reruns_from_cache(tmp_path):
    first = _demo(tmp_path / "store")
    counts = re.findall(r"(\d+) done, (\d+) cached, (\d+) failed, (\d+) missing", first)
    assert len(counts) == 2, first[-3000:]  # demo, then demo-heldout
    (done, _, failed, missing), (held_done, _, held_failed, held_missing) = counts
    assert int(done) > 100 and failed == "0" and missing == "0", first[-3000:]
    assert int(held_done) > 20 and held_failed == "0" and held_missing == "0", first[-3000:]
    assert re.search(r"build-dataset demo-heldout: \d+ units done", first)
    for artifact in ("images", "labels/sam_instance", "labels/human_poses", "tokenizers/rgb_diffusion-tiny",
                     "tokens/tok_rgb-224", "tokens/tok_sam_edge-224", "tokens/det", "tokens/sam_instance"):
        assert re.search(rf"\s{re.escape(artifact)}\s", first), f"{artifact} not in the status table"
    assert re.search(r"pretrain checkpoints/demo/step-\d+: done \(\d+ steps, loss ([\d.]+) -> ([\d.]+)\)", first)
    start, end = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", first).groups())
    assert end < start - 2  # the tiny model learns from the demo's tokens
    assert re.search(r"evaluate demo-heldout/evaluations/demo/step-\d+\S*: done", first), first[-3000:]
    report = re.search(r"report: (\S+data\.report\.md)", first)
    grid = re.search(r"grid:\s+(\S+data\.grid\.png)", first)
    assert report and grid and Path(grid.group(1)).stat().st_size > 10_000
    text = Path(report.group(1)).read_text()
    # every task the evaluation stage scores runs on the demo: maps, boxes, captions and kNN on predicted globals
    for row in ("| depth (tok_depth@224) | ground truth |", "| boxes (det) | pseudo label | ap ↑ |",
                "| captioning (caption) | source caption | bleu4 ↑ |",
                "| kNN classification (tok_dinov2_global) | ground truth 'label'"):
        assert row in text, row
    # ... on the held-out scenes, which the checkpoint never read, and it beats the trivial baselines there
    assert "of `demo-heldout` — held out from training" in text, text[:2000]
    rows = _report_rows(text)
    for task, metric in (("depth (tok_depth@224)", "abs_rel"), ("depth (tok_depth@224)", "delta1"),
                         ("semantic segmentation (tok_semseg@224)", "miou")):
        cells = rows[(task, "ground truth", metric)]
        assert "training samples" in cells[5] and cells[7] == "16", cells  # fitted on demo, scored on 16 scenes
        assert cells[6] == "yes", f"{task} {metric}: model {cells[3]} vs baseline {cells[5]}"
    # captions written from the RGB alone beat the most frequent training caption (BLEU-4) and name objects
    cells = rows[("captioning (caption)", "source caption", "bleu4")]
    assert "training samples" in cells[5] and cells[7] == "16" and cells[6] == "yes", cells
    generated = re.findall(r"^\| `synthetic-s1-\d+` \| ([^|]*) \|", text.split("## Captions")[1], re.M)
    assert len(generated) >= 4 and all(re.search(r"\b(cup|bottle|book|suitcase|sports ball)\b", g)
                                       for g in generated), generated
    # the chained any-to-any example on held-out scenes: RGB -> semseg -> RGB and RGB -> caption -> RGB
    chain = re.search(r"chain demo-heldout/evaluations/demo-chain/step-\d+: done", first)
    chain_grid = re.search(r"grid:\s+(\S+data\.chain\.png)", first)
    assert chain and chain_grid and Path(chain_grid.group(1)).stat().st_size > 10_000, first[-3000:]
    assert re.search(r"synthetic-s1-\d+: RGB -> semseg -> RGB; RGB -> caption '", first), first[-3000:]

    second = _demo(tmp_path / "store")
    assert re.search(r"build-dataset demo: 0 units done, \d+ cached", second), second[-3000:]
    assert re.search(r"build-dataset demo-heldout: 0 units done, \d+ cached", second), second[-3000:]
    counts = re.findall(r"(\d+) done, (\d+) cached, (\d+) failed, (\d+) missing", second)
    assert len(counts) == 2 and all(c[2] == "0" and c[3] == "0" for c in counts), counts
    # status rows not cached: only the evaluation and the chained example (the held-out status lists them, made
    # outside build-dataset)
    not_cached = [line for line in second.splitlines()
                  if re.match(r"^\S+\s+\S+\s+(\d{5}|-)\s+(done|failed|missing)\s", line)]
    assert all(line.startswith(("evaluate ", "evaluate.chain ")) for line in not_cached), not_cached
    assert re.search(r"pretrain checkpoints/demo/step-\d+: cached", second), second[-3000:]
    assert re.search(r"evaluate demo-heldout/evaluations/demo/\S+: cached", second), second[-3000:]
    assert re.search(r"chain demo-heldout/evaluations/demo-chain/\S+: cached", second), second[-3000:]
