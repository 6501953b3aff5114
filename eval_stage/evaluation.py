"""The evaluation stage (issue 7 point 4): a pretrain checkpoint against pseudo labels, ground truth, the
tokenizer bound and a trivial baseline, committed as one cached unit with lineage.

    result = evaluate(store, load_eval_config("demo"))

Steps (all on held-out samples, crop 0 of each, as the tokenize stage cropped them):

1. load the checkpoint (``<ns>/checkpoints/<run>/step-N``, train_stage.trainer) and the committed tokenizers;
2. pick the conditioning input (tok_rgb@224 when the store and model have it, else the first available of
   ``config.DEFAULT_CONDITIONS``) and the targets that exist in both the store and the checkpoint; everything
   skipped is written down in the report's notes;
3. for each target: MaskGIT generation from the condition alone (eval_stage.generate), decode with the
   target's tokenizer, and score with eval_stage.metrics against the pseudo label and, where the dataset
   has it (the demo's synthetic scenes), the ground truth; beside it the tokenizer bound (the same metric
   on the tokenizer's reconstruction of that reference) and a trivial baseline (mean depth / mean normal
   map / majority class);
4. held-out masked-token loss and accuracy per modality (the checkpoint's masking mixture);
5. commit ``<namespace>/evaluations/<run>/step-NNNNNNNN`` via fourm_core.units.run_unit: ``data.parquet``
   (one row per task x reference x metric), ``data.metrics.json``, ``data.report.md``, ``data.grid.png``.

Cache key: the checkpoint's digest (ModelRef), the digests of every tokenizer, token/label/ground-truth
shard read (inputs, which are also the lineage), the eval config (minus the device) and CODE_VERSION.

Modules, by job: ``checkpoints`` (find and load the checkpoint), ``read`` (store readers), ``plan`` and
``tasks`` (what is evaluated: :class:`~eval_stage.tasks.EvalPlan`), ``score`` and ``baselines`` (evaluation
space, metrics, trivial predictors), ``knn_eval`` / ``boxes_eval`` / ``caption_eval`` / ``tokens_eval`` (the
tasks beyond the dense maps), ``run`` (the computation) and this module (the cached unit and its commit).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa

from fourm_core.manifest import Manifest, ModelRef
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, UnitResult, run_unit

from .checkpoints import find_checkpoint
from .config import EvalConfig
from .run import run_evaluation
from .tasks import EvalPlan

STAGE = "evaluate"
CODE_VERSION = "evaluate/7"  # 4: generation with the reference's sentinel / [EOS] conventions; 5: masked-token
# loss under the numpy masking (same distributions, another random stream); 6: boxes decoded under the det grammar
# and scored by their class token's probability (config ``boxes``); 7: boxes also report class-agnostic AP@0.5 and
# the class-multiset F1


def evaluation_artifact(run: str, step: int) -> str:
    """Where the evaluation of checkpoint ``run``/``step`` is committed (under the eval namespace)."""
    return f"evaluations/{run}/step-{step:08d}"


def evaluation_unit(store: ArtifactStore, cfg: EvalConfig, ckpt: Manifest, plan: EvalPlan) -> Unit:
    """The unit: keyed on the checkpoint, every part the plan read, the config (minus device) and CODE_VERSION."""
    inputs = [ckpt.as_input()] + [m.as_input() for m in plan.inputs]
    seen: set[tuple] = set()
    uniq = []
    for r in inputs:
        k = (r.dataset, r.artifact, r.shard)
        if k not in seen:
            seen.add(k)
            uniq.append(r)
    return Unit(stage=STAGE, dataset=cfg.namespace or cfg.dataset,
                artifacts=[evaluation_artifact(cfg.checkpoint.run, int(ckpt.artifact.rsplit("-", 1)[1]))],
                shard=None, code_version=CODE_VERSION, config=cfg.key_config(), inputs=uniq,
                model=ModelRef(id=f"4m:{cfg.checkpoint.run}@{ckpt.artifact.rsplit('/', 1)[1]}",
                               source=ckpt.uri, digest=ckpt.digest))


def evaluate(store: ArtifactStore, cfg: EvalConfig, *, force: bool = False) -> UnitResult:
    """Run (or find cached) the evaluation of ``cfg.checkpoint`` on ``cfg.dataset``; see the module doc."""
    ckpt = find_checkpoint(store, cfg)
    if ckpt is None:
        ck = cfg.checkpoint
        raise FileNotFoundError(f"no checkpoint {ck.namespace}/checkpoints/{ck.run}/"
                                f"{'step-%08d' % ck.step if ck.step else '<latest>'} under {store.root_uri}; "
                                f"train one first (python -m train_stage demo --store ...)")
    plan = EvalPlan(store, cfg, ckpt)
    unit = evaluation_unit(store, cfg, ckpt, plan)
    artifact = unit.artifacts[0]

    def compute() -> UnitOutput:
        out = run_evaluation(store, cfg, ckpt, plan)
        table = pa.Table.from_pylist([{**r, "model": _f(r["model"]), "tokenizer_bound": _f(r["tokenizer_bound"]),
                                       "baseline": _f(r["baseline"])} for r in out.rows + out.token_rows],
                                     schema=ROWS_SCHEMA)
        metrics = {"rows": out.rows, "tokens": out.token_rows, "notes": out.notes, "info": out.info}
        files = {".metrics.json": json.dumps(metrics, indent=2, default=_json_default).encode(),
                 ".report.md": out.report_md.encode(), ".grid.png": out.grid_png}
        stats = {"primary": {f"{r['target']}|{r['reference']}|{r['metric']}": _f(r["model"]) for r in out.rows
                             if r["primary"]},
                 "seconds": out.info["seconds"], "samples": len(plan.keys), "notes": len(out.notes)}
        return UnitOutput({artifact: table}, stats=stats, extra_files={artifact: files})

    return run_unit(store, unit, compute, force=force)


ROWS_SCHEMA = pa.schema([
    ("task", pa.string()), ("target", pa.string()), ("reference", pa.string()), ("metric", pa.string()),
    ("higher_is_better", pa.bool_()), ("primary", pa.bool_()), ("model", pa.float64()),
    ("tokenizer_bound", pa.float64()), ("baseline", pa.float64()), ("baseline_kind", pa.string()),
    ("samples", pa.int64()),
])


def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def result_summary(store: ArtifactStore, result: UnitResult) -> dict[str, Any]:
    """A small serialisable record of an evaluation unit: URIs, status, metric rows, report Markdown."""
    m = result.manifests[0]
    rows = store.read_table(m.dataset, m.artifact, None).to_pylist()
    report = store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".report.md")).decode()
    return {**result.summary(), "uri": m.uri, "dataset": m.dataset, "artifact": m.artifact,
            "report": store.uri(store.data_path(m.dataset, m.artifact, None, ".report.md")),
            "grid": store.uri(store.data_path(m.dataset, m.artifact, None, ".grid.png")),
            "metrics": store.uri(store.data_path(m.dataset, m.artifact, None, ".metrics.json")),
            "made_seconds": m.timings.seconds, "rows": rows, "report_markdown": report}
