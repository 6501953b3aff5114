"""The evaluation stage's kNN task: ImageNet-style classification on predicted global embeddings.

DINOv2 protocol (k = 20, T = 0.07; 4M-FACTS §8) on what a 4M model predicts: the gallery is up to
``knn.gallery_samples`` of the checkpoint's training samples, the queries are the evaluated samples; both
are embedded the same way (global tokens generated from the evaluation's condition, detokenized by the
modality's MLP+Memcodes tokenizer: eval_stage.retrieval). Class labels come from the dataset's ground
truth (``knn.label_column``; the synthetic scenes' label is their setting). Beside the model:

* tokenizer bound: the same kNN on the detokenized *stored* tokens (the pseudo-label embedding as the
  tokenizer reconstructs it) for gallery and queries;
* baseline: always answer the gallery's most frequent classes (top-1: the majority class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fourm_core.manifest import Manifest
from fourm_core.modalities import ModalityKind, get_modality
from fourm_core.store import ArtifactStore

from .config import EvalConfig
from .plan import Plan
from .read import GT_ARTIFACT, read_tokens, tokenizer_manifest, tokenizer_name

TASK = "kNN classification"


@dataclass
class KnnPlan:
    """Everything the kNN task reads, decided before the unit runs (so it is part of the cache key)."""

    modality: str
    tokenizer: Manifest
    classes: list[str]  # label strings, sorted: class id = index
    query_keys: list[str]
    query_labels: list[int]
    gallery_keys: list[str]
    gallery_labels: list[int]
    gallery_tokens: dict[str, dict[str, np.ndarray]]  # modality -> key -> tokens (condition + knn modality)


def labels_of(store: ArtifactStore, dataset: str, column: str, shards: list[int],
              inputs: list[Manifest]) -> dict[str, str]:
    """key -> class label (a string column of the ``ground_truth`` artifact) of ``shards``."""
    out: dict[str, str] = {}
    for s in shards:
        m = store.read_manifest(dataset, GT_ARTIFACT, s)
        if m is None or not m.rows or column not in m.schema_:
            continue
        inputs.append(m)
        t = store.read_table(dataset, GT_ARTIFACT, s, columns=["sample_key", column])
        for k, v in zip(t.column("sample_key").to_pylist(), t.column(column).to_pylist()):
            if v is not None:
                out[k] = str(v)
    return out


def plan_knn(store: ArtifactStore, cfg: EvalConfig, plan: Plan) -> KnnPlan | None:
    """The kNN task's plan, or None with a note in ``plan.notes`` saying what is missing."""
    spec = cfg.knn
    if spec is None:
        return None
    mod = spec.modality
    if get_modality(mod).kind != ModalityKind.GLOBAL_TOKENS:
        plan.notes.append(f"kNN: {mod} is not a global-token modality; skipped")
        return None
    if mod not in plan.domains_out:
        plan.notes.append(f"kNN on {mod}: not an output of the checkpoint; skipped")
        return None
    tm = tokenizer_manifest(store, cfg, mod)
    if tm is None:
        plan.notes.append(f"kNN on {mod}: tokenizer {tokenizer_name(mod)} ({cfg.tokenizer_profile}) is not "
                          f"committed under {cfg.tokenizer_dataset or cfg.dataset}; skipped")
        return None
    if "rgb@224" in plan.condition:
        plan.notes.append("kNN: the gallery is embedded from token inputs only; an rgb@224 condition is not "
                          "supported for it yet; skipped")
        return None
    inputs: list[Manifest] = []
    query_names = labels_of(store, cfg.dataset, spec.label_column, plan.shards, inputs)
    gallery_names: dict[str, str] = {}
    gallery_tokens: dict[str, dict[str, np.ndarray]] = {}
    need = [c for c in plan.condition if c != "rgb@224"] + [mod]
    for d, shards in plan.fit_shards.items():
        names = labels_of(store, d, spec.label_column, shards, inputs)
        toks = {m: read_tokens(store, d, m, shards, inputs) for m in need}
        for k in sorted(names):
            if len(gallery_names) < spec.gallery_samples and all(k in toks[m] for m in need):
                gallery_names[k] = names[k]
                for m in need:
                    gallery_tokens.setdefault(m, {})[k] = toks[m][k]
    query_keys = [k for k in plan.keys if k in query_names and k in plan.tokens.get(mod, {})]
    if not query_keys or not gallery_names:
        plan.notes.append(f"kNN on {mod}: no {'queries' if not query_keys else 'gallery samples'} with a "
                          f"ground-truth '{spec.label_column}' and {mod} tokens; skipped")
        return None
    classes = sorted(set(gallery_names.values()) | {query_names[k] for k in query_keys})
    cid = {c: i for i, c in enumerate(classes)}
    plan.inputs.extend(inputs)
    plan.tokenizers[mod] = tm
    plan.inputs.append(tm)
    gkeys = list(gallery_names)
    return KnnPlan(mod, tm, classes, query_keys, [cid[query_names[k]] for k in query_keys], gkeys,
                   [cid[gallery_names[k]] for k in gkeys], gallery_tokens)


def _stack(rows: dict[str, np.ndarray], keys: list[str]) -> torch.Tensor:
    return torch.from_numpy(np.stack([rows[k] for k in keys])).long()


def knn_rows(model, tokenizer, cfg: EvalConfig, plan: Plan, kp: KnnPlan) -> tuple[list[dict[str, Any]], int]:
    """The kNN task's result rows (top-1 / top-5 in %) and the number of out-of-vocabulary ids clamped."""
    from .generate import TargetStep
    from .retrieval import Gallery, embed_tokens, predict_global_tokens

    spec = cfg.knn
    assert spec is not None
    g = cfg.generation
    step = TargetStep(kp.modality, steps=g.steps, token_schedule=g.token_schedule, temperature=g.temperature,
                      top_k=g.top_k, top_p=g.top_p)
    cond = [c for c in plan.condition if c != "rgb@224"]
    V = tokenizer.config.codebook_size

    def predicted(tokens: dict[str, dict[str, np.ndarray]], keys: list[str]) -> tuple[torch.Tensor, int]:
        ids = predict_global_tokens(model, {c: _stack(tokens[c], keys) for c in cond}, kp.modality, step=step,
                                    seed=cfg.seed, batch_size=cfg.batch_size)
        return embed_tokens(tokenizer, ids.clamp(max=V - 1), kp.modality), int((ids >= V).sum())

    q_pred, oov_q = predicted(plan.tokens, kp.query_keys)
    g_pred, oov_g = predicted(kp.gallery_tokens, kp.gallery_keys)
    q_bound = embed_tokens(tokenizer, _stack(plan.tokens[kp.modality], kp.query_keys), kp.modality)
    g_bound = embed_tokens(tokenizer, _stack(kp.gallery_tokens[kp.modality], kp.gallery_keys), kp.modality)
    ql, gl = torch.tensor(kp.query_labels), torch.tensor(kp.gallery_labels)
    C = len(kp.classes)
    k = min(spec.k, len(kp.gallery_keys))
    model_acc = Gallery(g_pred, kp.gallery_keys, gl).knn_accuracy(q_pred, ql, C, k, spec.temperature)
    bound_acc = Gallery(g_bound, kp.gallery_keys, gl).knn_accuracy(q_bound, ql, C, k, spec.temperature)
    # baseline: rank classes by their frequency in the gallery (ties to the lower id)
    ranked = torch.sort(torch.bincount(gl, minlength=C), descending=True, stable=True).indices
    base = {f"top{t}": float((ranked[:t][None] == ql[:, None]).any(1).double().mean() * 100) for t in (1, 5)}
    majority = kp.classes[int(ranked[0])]
    rows = [{"task": TASK, "target": kp.modality, "reference": f"ground truth '{spec.label_column}' "
             f"({C} classes, gallery {len(kp.gallery_keys)}, k {k})", "metric": metric, "higher_is_better": True,
             "primary": metric == "top1", "model": model_acc[metric], "tokenizer_bound": bound_acc[metric],
             "baseline": base[metric], "baseline_kind": f"most frequent gallery classes ({majority})",
             "samples": len(kp.query_keys)} for metric in ("top1", "top5")]
    return rows, oov_q + oov_g
