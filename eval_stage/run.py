"""The evaluation's computation (no caching, no commit; eval_stage.evaluation wraps it in a unit).

Given an :class:`~eval_stage.tasks.EvalPlan`: load the checkpoint and the tokenizers; generate each dense
target from the condition (MaskGIT, ``cfg.ensemble`` samples), decode it, and score it against each reference
beside the tokenizer bound and the trivial baseline; run the tasks beyond the dense maps (boxes, captions,
kNN) and the held-out masked-token task; render the Markdown report and the generation grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fourm_core.manifest import Manifest
from fourm_core.modalities import ModalityKind, get_modality
from fourm_core.store import ArtifactStore

from .baselines import baseline_prediction, fit_references
from .boxes_eval import box_rows
from .caption_eval import caption_rows
from .checkpoints import load_checkpoint
from .config import EvalConfig
from .knn_eval import knn_rows
from .plan import Plan
from .read import GT_COLUMNS, read_ground_truth, read_images, read_label_arrays
from .score import PRIMARY, SCORED, TASK, decoded_to_eval, ensemble, prepare_reference, score, tokenizer_input
from .sequences import decode_text, load_text_tokenizer, token_shard_tokenizer
from .tasks import EvalPlan
from .tokens_eval import masked_token_rows

ENSEMBLE_SEED_STRIDE = 1_000_003  # sample j of an ensemble draws with seed + i + j * stride


@dataclass
class Samples:
    """The evaluated samples (crop 0 of each) and what was read for them."""

    keys: list[str]
    crops: dict[str, Any]  # key -> tokenize_stage.crops.Crop
    tokens: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # modality -> key -> tokens
    inputs: list[Manifest] = field(default_factory=list)  # every part read (lineage + cache key)


@dataclass
class EvalOutcome:
    """What :func:`run_evaluation` computed: metric rows, masked-token rows, notes, info, report and grid."""

    rows: list[dict[str, Any]]
    token_rows: list[dict[str, Any]]
    notes: list[str]
    info: dict[str, Any]
    report_md: str
    grid_png: bytes


def _batched(fn, *tensors: torch.Tensor, batch_size: int) -> torch.Tensor:
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[i:i + batch_size] for t in tensors)) for i in range(0, n, batch_size)])


def _decode(tok, tokens: torch.Tensor, cfg: EvalConfig) -> torch.Tensor:
    kwargs = {"steps": cfg.decode_steps, "seed": cfg.seed} if tok.config.architecture == "diffusion_vq" else {}
    with torch.no_grad():
        return _batched(lambda t: tok.decode(t.to(cfg.device), **kwargs).cpu(), tokens, batch_size=cfg.batch_size)


def _stack_tokens(samples: Samples, modality: str, keys: list[str]) -> torch.Tensor:
    rows = [samples.tokens[modality][k] for k in keys]
    mod = get_modality(modality)
    if mod.kind == ModalityKind.SEQUENCE:
        L = min(mod.max_tokens, max(len(r) for r in rows))
        out = torch.zeros(len(rows), L, dtype=torch.long)  # [PAD] = 0
        for i, r in enumerate(rows):
            out[i, : min(L, len(r))] = torch.from_numpy(r[:L])
        return out
    return torch.from_numpy(np.stack(rows)).long()


def run_evaluation(store: ArtifactStore, cfg: EvalConfig, ckpt: Manifest, plan: EvalPlan) -> EvalOutcome:
    """The computation behind eval_stage.evaluation.evaluate (no caching, no commit)."""
    from tokenize_stage.models.hub import from_pretrained

    from .generate import TargetStep, generate
    from .report import generation_grid, markdown_report

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    model = load_checkpoint(store, ckpt, cfg.device)
    tokenizers = {m: from_pretrained(store.uri(store.artifact_dir(tm.dataset, tm.artifact)),
                                     **store.storage_options).to(cfg.device).eval()
                  for m, tm in plan.tokenizers.items()}
    timings["load"] = time.perf_counter() - t_start
    ds, keys = cfg.dataset, plan.keys
    keyset = set(keys)
    samples = Samples(keys, {k: plan.crop(k) for k in keys}, plan.tokens)

    # ---------------------------------------------------------------- generation from the condition
    t0 = time.perf_counter()
    inputs: dict[str, torch.Tensor] = {}
    images: dict[str, np.ndarray] = {}
    scratch: list[Manifest] = []  # parts read below; the plan already keyed them
    images = read_images(store, ds, keyset, plan.shards, scratch)  # the grid shows the ingested RGB crop
    for c in plan.condition:
        if c == "rgb@224":  # the same pixels the training loader feeds (train_stage.pixels)
            from train_stage.pixels import crop_rgb, normalize_rgb

            inputs[c] = torch.stack([normalize_rgb(crop_rgb(images[k], samples.crops[k], 224)) for k in keys])
        else:
            inputs[c] = _stack_tokens(samples, c, keys)
    g = cfg.generation
    generated: dict[str, list[torch.Tensor]] = {}  # target -> cfg.ensemble samples of tokens (N, L)
    oov: dict[str, int] = {}
    for t in plan.targets:
        step = TargetStep(t, steps=g.steps, token_schedule=g.token_schedule, temperature=g.temperature,
                          top_k=g.top_k, top_p=g.top_p, guidance_scale=g.guidance_scale)
        V = tokenizers[t].vocab_size
        generated[t], oov[t] = [], 0
        for j in range(cfg.ensemble):
            outs = []
            for i in range(0, len(keys), cfg.batch_size):
                chunk = {c: v[i:i + cfg.batch_size] for c, v in inputs.items()}
                outs.append(generate(model, chunk, [step], seed=cfg.seed + i + ENSEMBLE_SEED_STRIDE * j)[t].cpu())
            tok = torch.cat(outs)
            oov[t] += int((tok >= V).sum())
            generated[t].append(tok.clamp(max=V - 1))
        if oov[t]:
            plan.notes.append(f"{t}: {oov[t]} of {tok.numel() * cfg.ensemble} generated tokens are outside the "
                              f"tokenizer's vocabulary ({V}); clamped to {V - 1}")
    timings["generate"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- decode and score
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    visuals: dict[str, dict[str, torch.Tensor]] = {}
    for t in plan.targets:
        tok = tokenizers[t]
        target = tok.config.target
        size = tok.config.image_size
        pred = ensemble(target, [decoded_to_eval(target, _decode(tok, x, cfg)) for x in generated[t]])
        recon_pseudo = decoded_to_eval(target, _decode(tok, _stack_tokens(samples, t, keys), cfg))
        visuals[t] = {"generated": pred, "tokenizer": recon_pseudo}
        if target not in SCORED:
            plan.notes.append(f"{t}: tokenizer target {target!r} has no scored metric here; shown in the grid only")
            continue
        label = get_modality(t).label
        refs: dict[str, dict[str, np.ndarray]] = {
            "pseudo label": read_label_arrays(store, ds, label, keyset, plan.shards, scratch)}
        if target in GT_COLUMNS:
            gt = read_ground_truth(store, ds, GT_COLUMNS[target], keyset, plan.shards, scratch)
            if gt:
                refs["ground truth"] = gt
        for ref_name, arrays in refs.items():
            idx = [i for i, k in enumerate(keys) if k in arrays]
            if not idx:
                continue
            ref = torch.stack([prepare_reference(target, arrays[keys[i]], samples.crops[keys[i]], size) for i in idx])
            if ref_name == "pseudo label":
                bound_pred = recon_pseudo[idx]  # the stored tokens are the tokenizer's encoding of this label
            else:
                x = torch.stack([tokenizer_input(target, r) for r in ref])
                with torch.no_grad():
                    codes = _batched(lambda b: tok.encode(b.to(cfg.device)).cpu(), x, batch_size=cfg.batch_size)
                bound_pred = decoded_to_eval(target, _decode(tok, codes, cfg))
                visuals[t]["ground truth"] = ref
                visuals[t]["gt_index"] = torch.tensor(idx)
            if ref_name == "pseudo label":
                visuals[t]["pseudo label"] = ref
                visuals[t]["pseudo_index"] = torch.tensor(idx)
            fit = fit_references(store, plan, t, target, ref_name, size, cfg.baseline_samples)
            if fit is None:
                fit_from = "fitted on the evaluated references: the checkpoint's training samples have none"
                fit = ref
            else:
                fit_from = f"{len(fit)} training samples"
            base_pred, base_kind = baseline_prediction(target, fit, len(idx))
            base_kind = f"{base_kind}, {fit_from}"
            m = score(target, pred[idx], ref)
            b = score(target, bound_pred, ref)
            z = score(target, base_pred, ref)
            primary, higher = PRIMARY[target]
            for metric in m:
                hib = higher if metric == primary else metric not in ("median", "abs_rel")
                rows.append({"task": TASK[target], "target": t, "reference": ref_name, "metric": metric,
                             "higher_is_better": bool(hib), "primary": metric == primary, "model": m[metric],
                             "tokenizer_bound": b[metric], "baseline": z[metric], "baseline_kind": base_kind,
                             "samples": len(idx)})
    box_visuals: dict[str, dict[str, list]] = {}
    if plan.boxes is not None:
        box, det_generated = box_rows(model, cfg, plan, plan.boxes, inputs)
        rows.extend(box)
        ref_name, ref_boxes = next(iter(sorted(plan.boxes.refs.items())))  # ground truth before pseudo label
        box_visuals = {"det: generated": det_generated, f"det: {ref_name}": ref_boxes}
    captions: list[dict[str, str]] = []
    if plan.captions is not None:
        cap, generated_captions = caption_rows(model, cfg, plan, plan.captions, inputs)
        rows.extend(cap)
        captions = [{"key": k, "generated": generated_captions[k], "reference": plan.captions.refs[k]}
                    for k in plan.captions.keys[: cfg.grid_samples]]
    if plan.knn is not None:
        knn, oov[plan.knn.modality] = knn_rows(model, tokenizers[plan.knn.modality], cfg, plan, plan.knn)
        rows.extend(knn)
        if oov[plan.knn.modality]:
            plan.notes.append(f"{plan.knn.modality}: {oov[plan.knn.modality]} generated tokens are outside the "
                              f"tokenizer's vocabulary; clamped")
    timings["score"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- held-out masked-token loss
    t0 = time.perf_counter()
    token_rows = masked_token_rows(model, cfg, plan)
    timings["tokens"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- report and grid
    t0 = time.perf_counter()
    cond_visual: dict[str, Any] = {}
    for c in plan.condition:
        if c in tokenizers:
            ctok = tokenizers[c]
            cond_visual[c] = decoded_to_eval(ctok.config.target, _decode(ctok, inputs[c][: cfg.grid_samples], cfg))
        elif get_modality(c).kind == ModalityKind.SEQUENCE:
            cond_visual[c] = sequence_texts(store, plan, c, inputs[c][: cfg.grid_samples])
    rgb = [prepare_reference("rgb", images[k], samples.crops[k], 96) if k in images else None
           for k in keys[: cfg.grid_samples]]
    info = {
        "checkpoint": {"uri": ckpt.uri, "digest": ckpt.digest, "namespace": ckpt.dataset, "artifact": ckpt.artifact,
                       "step": ckpt.stats.get("step"), "train_loss": ckpt.stats.get("loss"),
                       "domains_in": plan.domains_in, "domains_out": plan.domains_out},
        "dataset": ds, "shards": plan.shards, "held_out": plan.held_out, "samples": len(keys),
        "condition": plan.condition, "targets": plan.targets + (["det"] if plan.boxes is not None else [])
        + (["caption"] if plan.captions is not None else []), "captions": captions,
        "tokenizers": {m: {"artifact": tm.artifact, "digest": tm.digest} for m, tm in plan.tokenizers.items()},
        "generation": cfg.generation.model_dump(mode="json"), "decode_steps": cfg.decode_steps, "ensemble": cfg.ensemble,
        "out_of_vocab_tokens": oov, "config": cfg.key_config(),
    }
    grid = generation_grid(keys[: cfg.grid_samples], rgb, plan.condition, cond_visual, plan.targets, visuals,
                           {t: tokenizers[t].config.target for t in plan.targets}, box_visuals)
    timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    info["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    md = markdown_report(info, rows, token_rows, plan.notes)
    return EvalOutcome(rows, token_rows, list(plan.notes), info, md, grid)


def sequence_texts(store: ArtifactStore, plan: Plan, modality: str, ids: torch.Tensor) -> list[str]:
    """Rows (N, L) of a sequence condition -> text through the tokenizer its token shards were made with."""
    ref = token_shard_tokenizer(store, plan.dataset, modality, plan.shards)
    if ref is None:  # no tokenizer recorded: show the ids themselves
        return [" ".join(str(int(i)) for i in row if int(i) > 0)[:120] for row in ids]
    tokenizer = load_text_tokenizer(ref)
    return [decode_text(tokenizer, row) for row in ids]

