"""The evaluation stage's boxes task: RGB -> ``det`` sequences, scored by COCO AP (AP@[0.5:0.95], primary, and
AP@0.5), with two diagnostics that tell "wrong place" from "wrong object": AP@0.5 with the classes ignored and the
F1 of each image's predicted class multiset with the boxes ignored.

The model writes each sample's ``det`` sequence from scratch, autoregressively from the evaluation's condition
(eval_stage.generate, greedy), under the det grammar (eval_stage.generate.det_grammar: only tokens that keep the
box list parseable; ``cfg.boxes`` bounds the number of boxes); the text tokenizer the token shards were made with
turns the ids back into text, and the det serialiser's parser (tokenize_stage.text.serialise.det) into boxes.
The text carries no scores: each generated box is scored by the probability of its class token among the class
tokens, as sequence detectors rank their boxes (Pix2Seq). References, cropped like the tokens (crop 0):

* pseudo label: ``labels/det`` (the detection labeler's boxes);
* ground truth: the ``boxes`` column of ``ground_truth`` (synthetic scenes).

Beside the model: the tokenizer bound (the parsed stored ``det`` tokens: coordinate quantisation and the
score threshold of the tokenize stage; its boxes ranked by position, the k-th of n scoring 1 - k/(n+1)) and a
class-prior baseline (every class of the checkpoint's training references, as its mean box, scored by its
frequency).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fourm_core.manifest import Manifest, ModelRef
from fourm_core.modalities import label_artifact
from fourm_core.store import ArtifactStore

from .config import EvalConfig
from .metrics.boxes import Boxes, box_ap, class_agnostic, class_f1
from .plan import Plan
from .read import GT_ARTIFACT
from .sequences import decode_text, load_text_tokenizer, sequence_target_tokenizer

TASK = "boxes"
MODALITY = "det"
REFERENCES = ("pseudo label", "ground truth")


@dataclass
class BoxPlan:
    """What the boxes task reads, decided before the unit runs (so it is part of the cache key)."""

    text_tokenizer: ModelRef  # the WordPiece tokenizer of the det token shards
    keys: list[str]  # evaluated samples with a det token row
    refs: dict[str, dict[str, list[tuple[tuple[float, ...], str]]]]  # reference -> key -> [(xyxy, class)]
    fit: dict[str, list[list[tuple[tuple[float, ...], str]]]]  # reference -> training images' boxes


def _class_ids() -> dict[str, int]:
    from tokenize_stage.text.vocab import CLASS_TOKENS

    return {c: i for i, c in enumerate(CLASS_TOKENS)}


def _cropped(boxes: list[tuple[list[float], str]], crop) -> list[tuple[tuple[float, ...], str]]:
    from tokenize_stage.seq_geometry import crop_boxes

    if not boxes:
        return []
    xyxy, keep = crop_boxes(np.array([b for b, _ in boxes]), crop)
    names = [c for (_, c), k in zip(boxes, keep) if k]
    return [(tuple(float(v) for v in x), c) for x, c in zip(xyxy.tolist(), names)]


def _read_refs(store: ArtifactStore, dataset: str, shards: list[int], keys: set[str] | None, crops: dict,
               inputs: list[Manifest]) -> dict[str, dict[str, list]]:
    """reference -> key -> cropped [(xyxy, class)] for the samples ``keys`` (None: all) of ``shards``."""
    from tokenize_stage.crops import Crop

    full = Crop((0.0, 0.0, 1.0, 1.0), False)
    out: dict[str, dict[str, list]] = {r: {} for r in REFERENCES}
    for s in shards:
        m = store.read_manifest(dataset, label_artifact("det"), s)
        if m is not None:
            inputs.append(m)
            t = store.read_table(dataset, label_artifact("det"), s, columns=["sample_key", "det"])
            for k, v in zip(t.column("sample_key").to_pylist(), t.column("det").to_pylist()):
                if v is not None and (keys is None or k in keys):
                    boxes = [(b["xyxy"], b["class_name"]) for b in json.loads(v).get("boxes", [])]
                    out["pseudo label"][k] = _cropped(boxes, crops.get(k, full))
        m = store.read_manifest(dataset, GT_ARTIFACT, s)
        if m is not None and m.rows:
            inputs.append(m)
            t = store.read_table(dataset, GT_ARTIFACT, s, columns=["sample_key", "boxes"])
            for k, v in zip(t.column("sample_key").to_pylist(), t.column("boxes").to_pylist()):
                if v is not None and (keys is None or k in keys):
                    out["ground truth"][k] = _cropped([(b["xyxy"], b["class"]) for b in json.loads(v)],
                                                      crops.get(k, full))
    return out


def plan_boxes(store: ArtifactStore, cfg: EvalConfig, plan: Plan) -> BoxPlan | None:
    """The boxes task's plan when ``det`` is a target, or None with a note in ``plan.notes``."""
    text_tokenizer = sequence_target_tokenizer(store, cfg, plan, MODALITY)
    if text_tokenizer is None:
        return None
    keys = [k for k in plan.keys if k in plan.tokens[MODALITY]]
    inputs: list[Manifest] = []
    refs = _read_refs(store, cfg.dataset, plan.shards, set(keys), plan.crops, inputs)
    refs = {r: v for r, v in refs.items() if v}
    if not keys or not refs:
        plan.notes.append("target det: no evaluated sample has det tokens and reference boxes "
                          "(labels/det or ground truth); skipped")
        return None
    fit: dict[str, list[list]] = {r: [] for r in refs}
    for d, shards in plan.fit_shards.items():
        got = _read_refs(store, d, shards, None, plan.fit_crops.get(d, {}), inputs)
        for r in refs:
            fit[r].extend(got[r][k] for k in sorted(got[r])[: cfg.baseline_samples - len(fit[r])])
    plan.inputs.extend(inputs)
    return BoxPlan(text_tokenizer, keys, refs, fit)


def _to_boxes(items: list[tuple[tuple[float, ...], str]], ids: dict[str, int], ranked: bool | list[float]) -> Boxes:
    """Boxes for box_ap; ``ranked``: True scores the k-th box 1 - k/(n+1), a list gives the scores, False none."""
    n = len(items)
    scores = ranked if isinstance(ranked, list) else [1 - i / (n + 1) for i in range(n)] if ranked else None
    return Boxes(torch.tensor([list(b) for b, _ in items], dtype=torch.float64).reshape(n, 4),
                 torch.tensor([ids[c] for _, c in items], dtype=torch.long),
                 None if scores is None else torch.tensor(scores, dtype=torch.float64))


def parse_det(tokenizer, ids: torch.Tensor) -> list[tuple[tuple[float, ...], str]]:
    """One ``det`` id row (L,) -> [(xyxy, class)] in sequence order; malformed boxes are dropped."""
    from tokenize_stage.text.serialise import det

    text = decode_text(tokenizer, ids)
    return [(tuple(b.xyxy), b.class_name) for b in det.parse(text, strict=False).boxes]


def generate_boxes(model, cfg: EvalConfig, all_keys: list[str], keys: list[str], inputs: dict[str, torch.Tensor],
                   tokenizer, min_boxes: int = 0, max_boxes: int | None = None, coordinates: str = "greedy"
                   ) -> dict[str, list[tuple[tuple[float, ...], str, float]]]:
    """key -> [(xyxy, class, score)]: ``det`` written from scratch for ``keys`` (greedy, under the det grammar),
    each box scored by the probability of its class token among the class tokens (as sequence detectors rank
    boxes, Pix2Seq §2.3). ``inputs`` rows are in ``all_keys`` order."""
    from .generate import ModelAdapter, build_slots, decode_sequence
    from .generate.det_grammar import BOX_TOKENS, det_grammar
    from .generate.inputs import EOS, SENTINEL0

    adapter = ModelAdapter(model)
    was_training = model.training
    model.eval()
    index = {k: i for i, k in enumerate(all_keys)}
    out: dict[str, list] = {}
    try:
        for i in range(0, len(keys), cfg.batch_size):
            chunk_keys = keys[i:i + cfg.batch_size]
            sel = torch.tensor([index[k] for k in chunk_keys], dtype=torch.long)
            state = {c: v[sel] for c, v in inputs.items()}
            state[MODALITY] = torch.full((len(chunk_keys), 1), SENTINEL0 + 1, dtype=torch.long)  # "[S_1]"
            slots = build_slots(adapter, state, len(chunk_keys))
            res = decode_sequence(adapter, slots, MODALITY, torch.Generator().manual_seed(cfg.seed + i),
                                  temperature=0.0, process=det_grammar(min_boxes, max_boxes, coordinates))
            for b, k in enumerate(chunk_keys):
                row = res.target[b, 1:].cpu()
                ends = torch.nonzero(row == EOS)
                boxes = parse_det(tokenizer, row[: int(ends[0, 0]) if len(ends) else len(row)])
                conf = res.confidence[b, BOX_TOKENS - 1:: BOX_TOKENS].cpu().tolist()
                out[k] = [(xyxy, c, float(s)) for (xyxy, c), s in zip(boxes, conf)]
    finally:
        model.train(was_training)
    return out


def class_prior(fit: list[list[tuple[tuple[float, ...], str]]]) -> list[tuple[tuple[float, ...], str]]:
    """The baseline's prediction for any image: each training class's mean box, most frequent class first."""
    by: dict[str, list] = {}
    for boxes in fit:
        for b, c in boxes:
            by.setdefault(c, []).append(b)
    order = sorted(by, key=lambda c: (-len(by[c]), c))
    return [(tuple(np.mean(by[c], axis=0).tolist()), c) for c in order]


# COCO's AP@0.5 and AP@[0.5:0.95] (primary), then two diagnostics that split a miss into "where" and "what":
# AP@0.5 with the classes ignored (ap50_any_class) and the F1 of each image's predicted class multiset, boxes ignored
METRICS = ("ap50", "ap", "ap50_any_class", "class_f1")


def _scores(preds: list[Boxes], gts: list[Boxes]) -> dict[str, float]:
    """METRICS of one predictor over the evaluated images."""
    out = box_ap(preds, gts)
    out["ap50_any_class"] = box_ap([class_agnostic(p) for p in preds], [class_agnostic(g) for g in gts])["ap50"]
    out["class_f1"] = class_f1(preds, gts)
    return out


def box_rows(model, cfg: EvalConfig, plan: Plan, bp: BoxPlan,
             inputs: dict[str, torch.Tensor]) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """The boxes task's rows (METRICS per reference) and the generated boxes by key."""
    tokenizer = load_text_tokenizer(bp.text_tokenizer)
    generated = generate_boxes(model, cfg, plan.keys, bp.keys, inputs, tokenizer, cfg.boxes.min_boxes,
                               cfg.boxes.max_boxes, cfg.boxes.coordinates)
    ids = _class_ids()
    predicted = {k: [(b, c) for b, c, _ in generated[k]] for k in bp.keys}
    stored = {k: parse_det(tokenizer, torch.from_numpy(plan.tokens[MODALITY][k])) for k in bp.keys}
    rows = []
    for ref_name, boxes in bp.refs.items():
        keys = [k for k in bp.keys if k in boxes]
        if not keys:
            continue
        gts = [_to_boxes(boxes[k], ids, False) for k in keys]
        prior = class_prior(bp.fit[ref_name]) if bp.fit.get(ref_name) else []
        fit_from = f"{len(bp.fit[ref_name])} training samples" if prior else "no training references"
        m = _scores([_to_boxes(predicted[k], ids, [s for _, _, s in generated[k]]) for k in keys], gts)
        b = _scores([_to_boxes(stored[k], ids, True) for k in keys], gts)
        z = _scores([_to_boxes(prior, ids, True) for _ in keys], gts)
        for metric in METRICS:
            rows.append({"task": TASK, "target": MODALITY, "reference": ref_name, "metric": metric,
                         "higher_is_better": True, "primary": metric == "ap", "model": m[metric],
                         "tokenizer_bound": b[metric], "baseline": z[metric],
                         "baseline_kind": f"class-prior mean boxes, {fit_from}", "samples": len(keys)})
    return rows, predicted
