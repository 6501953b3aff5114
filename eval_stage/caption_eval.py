"""The evaluation stage's captioning task: condition -> ``caption``, scored by BLEU against the source caption.

The model writes each sample's caption autoregressively from the evaluation's condition (greedy, KV cache);
the text tokenizer of the ``tokens/caption`` shards turns the ids back into text. The reference is the
sample's own caption as ingested (the ``text`` column of ``tokens/caption``: alt-text for web datasets, the
scene description for the demo's synthetic scenes). Scores: standard corpus BLEU-4 (primary) and BLEU-1
(torchmetrics ``bleu_score``, no smoothing: 0 when some n-gram order has no match) on lowercased words and
punctuation.

Beside the model: the tokenizer bound (the decoded stored tokens: WordPiece normalisation and truncation)
and a baseline that answers every image with the most frequent caption of the checkpoint's training samples.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from fourm_core.manifest import Manifest, ModelRef
from fourm_core.modalities import get_modality
from fourm_core.store import ArtifactStore

from .config import EvalConfig
from .plan import Plan
from .sequences import decode_text, generate_sequences, load_text_tokenizer, sequence_target_tokenizer

TASK = "captioning"
MODALITY = "caption"
REFERENCE = "source caption"
METRICS = {"bleu4": 4, "bleu1": 1}  # name -> n-gram order


@dataclass
class CaptionPlan:
    """What the captioning task reads, decided before the unit runs (so it is part of the cache key)."""

    text_tokenizer: ModelRef  # the WordPiece tokenizer of the caption token shards
    keys: list[str]  # evaluated samples with caption tokens and a source caption
    refs: dict[str, str]  # key -> source caption
    fit: list[str]  # captions of the checkpoint's training samples (the baseline's)


def _read_captions(store: ArtifactStore, dataset: str, shards: list[int], keys: set[str] | None,
                   inputs: list[Manifest]) -> dict[str, str]:
    """key -> source caption (``tokens/caption`` text column) for ``keys`` (None: all) of ``shards``."""
    artifact = get_modality(MODALITY).token_artifact
    out: dict[str, str] = {}
    for s in shards:
        m = store.read_manifest(dataset, artifact, s)
        if m is None:
            continue
        inputs.append(m)
        t = store.read_table(dataset, artifact, s, columns=["sample_key", "text"])
        for k, v in zip(t.column("sample_key").to_pylist(), t.column("text").to_pylist()):
            if v and (keys is None or k in keys):
                out[k] = v
    return out


def plan_captions(store: ArtifactStore, cfg: EvalConfig, plan: Plan) -> CaptionPlan | None:
    """The captioning task's plan when ``caption`` is a target, or None with a note in ``plan.notes``."""
    text_tokenizer = sequence_target_tokenizer(store, cfg, plan, MODALITY)
    if text_tokenizer is None:
        return None
    inputs: list[Manifest] = []
    candidates = [k for k in plan.keys if k in plan.tokens[MODALITY]]
    refs = _read_captions(store, cfg.dataset, plan.shards, set(candidates), inputs)
    keys = [k for k in candidates if k in refs]
    if not keys:
        plan.notes.append("target caption: no evaluated sample has caption tokens and a source caption; skipped")
        return None
    fit: list[str] = []
    for d, shards in plan.fit_shards.items():
        got = _read_captions(store, d, shards, None, inputs)
        fit.extend(got[k] for k in sorted(got)[: cfg.baseline_samples - len(fit)])
    plan.inputs.extend(inputs)
    return CaptionPlan(text_tokenizer, keys, refs, fit)


def words(text: str) -> str:
    """Lowercased words and punctuation marks separated by single spaces (what BLEU counts)."""
    return " ".join(re.findall(r"\w+|[^\w\s]", text.lower()))


def bleu(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU-4 and BLEU-1 of ``hypotheses`` against one reference each, in [0, 1]."""
    from torchmetrics.functional.text import bleu_score

    hyp = [words(h) for h in hypotheses]
    ref = [[words(r)] for r in references]
    return {name: float(bleu_score(hyp, ref, n_gram=n)) for name, n in METRICS.items()}


def most_frequent(captions: list[str]) -> str:
    """The baseline's answer for every image (ties: the alphabetically first)."""
    counts = Counter(captions)
    return min(counts, key=lambda c: (-counts[c], c))


def caption_rows(model, cfg: EvalConfig, plan: Plan, cp: CaptionPlan,
                 inputs: dict[str, torch.Tensor]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The captioning rows (BLEU-4, BLEU-1) and the generated caption of each evaluated key."""
    tokenizer = load_text_tokenizer(cp.text_tokenizer)
    generated = generate_sequences(model, cfg, plan.keys, cp.keys, MODALITY, inputs)
    predicted = {k: decode_text(tokenizer, g) for k, g in zip(cp.keys, generated)}
    stored = [decode_text(tokenizer, torch.from_numpy(plan.tokens[MODALITY][k])) for k in cp.keys]
    refs = [cp.refs[k] for k in cp.keys]
    fit = cp.fit or refs
    fit_from = f"{len(cp.fit)} training samples" if cp.fit else "the evaluated captions: no training captions"
    m = bleu([predicted[k] for k in cp.keys], refs)
    b = bleu(stored, refs)
    z = bleu([most_frequent(fit)] * len(refs), refs)
    rows = [{"task": TASK, "target": MODALITY, "reference": REFERENCE, "metric": metric, "higher_is_better": True,
             "primary": metric == "bleu4", "model": m[metric], "tokenizer_bound": b[metric], "baseline": z[metric],
             "baseline_kind": f"most frequent caption, {fit_from}", "samples": len(cp.keys)} for metric in METRICS]
    return rows, predicted
