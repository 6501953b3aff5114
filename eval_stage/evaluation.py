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
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from fourm_core.label_codec import image_decode, npy_decode
from fourm_core.manifest import Manifest, ModelRef
from fourm_core.modalities import ModalityKind, get_modality, label_artifact
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, UnitResult, run_unit

from .config import DEFAULT_CONDITIONS, EvalConfig

log = logging.getLogger(__name__)

STAGE = "evaluate"
CODE_VERSION = "evaluate/5"  # 4: generation with the reference's sentinel / [EOS] conventions; 5: masked-token
# loss under the numpy masking (same distributions, another random stream)
GT_ARTIFACT = "ground_truth"
GT_COLUMNS = {"depth": "depth", "normal": "normal", "semseg": "semseg"}  # tokenizer target -> ground_truth column
SCORED = ("depth", "normal", "semseg")  # tokenizer targets this stage scores
NUM_SEMSEG = 134  # 133 COCO panoptic classes + "none" (0), ids shifted by +1 (4M-FACTS §1)
# (metric, higher is better) leading each task's rows, as in the paper's table 1
PRIMARY = {"depth": ("abs_rel", False), "normal": ("mean", False), "semseg": ("miou", True)}
TASK = {"depth": "depth", "normal": "surface normals", "semseg": "semantic segmentation"}
ENSEMBLE_SEED_STRIDE = 1_000_003  # sample j of an ensemble draws with seed + i + j * stride


# ------------------------------------------------------------------------------------------- loading


def checkpoint_artifact(run: str, step: int) -> str:
    """Same layout as train_stage.trainer.checkpoint_artifact."""
    return f"checkpoints/{run}/step-{step:08d}"


def evaluation_artifact(run: str, step: int) -> str:
    return f"evaluations/{run}/step-{step:08d}"


def checkpoint_steps(store: ArtifactStore, namespace: str, run: str) -> list[int]:
    prefix = f"checkpoints/{run}/step-"
    return sorted(int(a[len(prefix):]) for a in store.artifacts(namespace) if a.startswith(prefix))


def find_checkpoint(store: ArtifactStore, cfg: EvalConfig) -> Manifest | None:
    """The checkpoint manifest the config names (latest step when none is given), or None."""
    ck = cfg.checkpoint
    step = ck.step
    if step is None:
        steps = checkpoint_steps(store, ck.namespace, ck.run)
        if not steps:
            return None
        step = steps[-1]
    return store.read_manifest(ck.namespace, checkpoint_artifact(ck.run, step), None)


def load_checkpoint(store: ArtifactStore, manifest: Manifest, device: str = "cpu"):
    """The FourM model of a committed checkpoint (weights verified against the manifest digest)."""
    from train_stage.model.hub import model_from_bytes

    ns, art = manifest.dataset, manifest.artifact
    config = store.read_bytes(store.data_path(ns, art, None, ".config.json"))
    weights = store.read_bytes(store.data_path(ns, art, None, ".safetensors"))
    import hashlib

    if hashlib.sha256(weights).hexdigest() != manifest.digest:
        raise IOError(f"{manifest.uri} does not match the digest of its manifest")
    model = model_from_bytes(config, weights, source=manifest.uri)
    return model.to(device).eval()


def _tokenizer_name(modality: str) -> str | None:
    from tokenize_stage.registry import _sub_tokenizer

    tok = get_modality(modality).tokenizer
    return _sub_tokenizer(tok) if tok else None


def _tokenizer_manifest(store: ArtifactStore, cfg: EvalConfig, modality: str) -> Manifest | None:
    from tokenize_stage.train_tokenizer import tokenizer_artifact

    name = _tokenizer_name(modality)
    if name is None:
        return None
    return store.read_manifest(cfg.tokenizer_dataset or cfg.dataset, tokenizer_artifact(name, cfg.tokenizer_profile),
                               None)


# ------------------------------------------------------------------------------------------- samples


@dataclass
class Samples:
    """The evaluated samples (crop 0 of each) and what was read for them."""

    keys: list[str]
    crops: dict[str, Any]  # key -> tokenize_stage.crops.Crop
    tokens: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # modality -> key -> tokens
    inputs: list[Manifest] = field(default_factory=list)  # every part read (lineage + cache key)


def _read_tokens(store: ArtifactStore, dataset: str, modality: str, shards: list[int],
                 inputs: list[Manifest]) -> dict[str, np.ndarray]:
    art = get_modality(modality).token_artifact
    out: dict[str, np.ndarray] = {}
    for s in shards:
        m = store.read_manifest(dataset, art, s)
        if m is None:
            continue
        inputs.append(m)
        t = store.read_table(dataset, art, s, columns=["sample_key", "crop", "tokens"])
        for k, c, tok in zip(t.column("sample_key").to_pylist(), t.column("crop").to_pylist(),
                             t.column("tokens").to_pylist()):
            if c == 0:
                out[k] = np.asarray(tok, dtype=np.int64)
    return out


def token_shards(store: ArtifactStore, dataset: str, modality: str) -> list[int]:
    return store.committed_shards(dataset, get_modality(modality).token_artifact)


def _crops(store: ArtifactStore, dataset: str, shards: list[int], inputs: list[Manifest]) -> dict[str, Any]:
    from tokenize_stage.crops import Crop

    out: dict[str, Any] = {}
    for s in shards:
        m = store.read_manifest(dataset, "tokens/_crops", s)
        if m is None:
            continue
        inputs.append(m)
        t = store.read_table(dataset, "tokens/_crops", s)
        for k, c, box, flip in zip(t.column("sample_key").to_pylist(), t.column("crop").to_pylist(),
                                   t.column("box").to_pylist(), t.column("flip").to_pylist()):
            if c == 0:
                out[k] = Crop(tuple(float(v) for v in box), bool(flip))
    return out


def _label_arrays(store: ArtifactStore, dataset: str, label: str, keys: set[str] | None, shards: list[int],
                  inputs: list[Manifest]) -> dict[str, np.ndarray]:
    """key -> label array of ``keys`` (None: every sample) in ``shards``."""
    from tokenize_stage.labels import iter_label_rows

    out: dict[str, np.ndarray] = {}
    for s in shards:
        m = store.read_manifest(dataset, label_artifact(label), s)
        if m is None:
            continue
        inputs.append(m)
        for k, arr in iter_label_rows(store, dataset, label, s):
            if (keys is None or k in keys) and arr is not None:
                out[k] = arr
    return out


def _ground_truth(store: ArtifactStore, dataset: str, column: str, keys: set[str] | None, shards: list[int],
                  inputs: list[Manifest]) -> dict[str, np.ndarray]:
    """key -> ground-truth array (``column``) of ``keys`` (None: every sample) in ``shards``."""
    out: dict[str, np.ndarray] = {}
    for s in shards:
        m = store.read_manifest(dataset, GT_ARTIFACT, s)
        if m is None or m.rows == 0:
            continue
        inputs.append(m)
        t = store.read_table(dataset, GT_ARTIFACT, s, columns=["sample_key", column])
        for k, v in zip(t.column("sample_key").to_pylist(), t.column(column).to_pylist()):
            if (keys is None or k in keys) and v is not None:
                out[k] = npy_decode(v)
    return out


def _images(store: ArtifactStore, dataset: str, keys: set[str], shards: list[int],
            inputs: list[Manifest] | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for s in shards:
        m = store.read_manifest(dataset, "images", s)
        if m is None:
            continue
        if inputs is not None:
            inputs.append(m)
        t = store.read_table(dataset, "images", s, columns=["sample_key", "image"])
        for k, v in zip(t.column("sample_key").to_pylist(), t.column("image").to_pylist()):
            if k in keys:
                out[k] = image_decode(v)
    return out


# ------------------------------------------------------------------------------------------- references


def prepare_reference(target: str, raw: np.ndarray, crop, size: int) -> torch.Tensor:
    """A raw label / ground-truth array -> the evaluation space at the tokenizer's resolution, after the
    sample's crop: depth (S, S) in its own units (metres for ground truth), normals (3, S, S) unit vectors,
    semseg (S, S) int64 ids (+1 shifted, 0 = none), rgb (3, S, S) in [0, 1], edge (S, S) in {0, 1}."""
    from tokenize_stage.crops import apply_crop

    a = apply_crop(np.asarray(raw), crop, target, None)
    if target == "semseg":
        x = torch.from_numpy(a.astype(np.int64))[None, None].float()
        return F.interpolate(x, size=(size, size), mode="nearest")[0, 0].long()
    if target == "edge":
        x = torch.from_numpy((a > 0).astype(np.float32))[None, None]
        return F.interpolate(x, size=(size, size), mode="nearest")[0, 0]
    if target == "depth":
        x = torch.from_numpy(a.astype(np.float32))[None, None]
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    if target in ("normal", "rgb"):
        x = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None]
        if target == "rgb":
            x = x / 255.0
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        return F.normalize(y, dim=0) if target == "normal" else y.clamp(0, 1)
    raise ValueError(f"no evaluation space for tokenizer target {target!r}")


def tokenizer_input(target: str, ref: torch.Tensor) -> torch.Tensor:
    """A reference from :func:`prepare_reference` -> the tokenizer's normalised input (tokenize_stage.normalize)."""
    from tokenize_stage.normalize import robust_standardize

    if target == "depth":
        return robust_standardize(ref[None])
    if target == "normal":
        return ref.clamp(-1, 1)
    if target == "semseg":
        return ref.long()
    if target == "edge":
        return ref[None] * 2 - 1
    if target == "rgb":
        return ref * 2 - 1
    raise ValueError(target)


def decoded_to_eval(target: str, x: torch.Tensor) -> torch.Tensor:
    """Tokenizer decoder output (B, ...) -> evaluation space: depth (B, S, S) (relative), normals (B, 3, S, S)."""
    if target == "depth":
        return x[:, 0].float()
    if target == "normal":
        return F.normalize(x.float(), dim=1)
    if target == "semseg":
        return x.long()
    if target == "edge":
        return (x[:, 0].float() + 1) / 2
    if target == "rgb":
        return ((x.float() + 1) / 2).clamp(0, 1)
    return x


def score(target: str, pred: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """eval_stage.metrics for one target: depth abs_rel/δ1 (affine-aligned), normals angular errors, mIoU."""
    from .metrics import depth_metrics, miou, normal_metrics

    if target == "depth":
        if not bool((ref > 0).any()):
            return {"abs_rel": math.nan, "delta1": math.nan}
        return depth_metrics(pred.float(), ref.float())
    if target == "normal":
        return normal_metrics(pred.float(), ref.float())
    if target == "semseg":
        r = miou(pred.long(), ref.long(), num_classes=NUM_SEMSEG, ignore_index=0)
        return {"miou": r["miou"], "pixel_acc": r["pixel_acc"]}
    raise ValueError(target)


def ensemble(target: str, preds: list[torch.Tensor]) -> torch.Tensor:
    """S decoded samples (each (B, ...), evaluation space) -> one (B, ...) prediction: mean depth (or any
    continuous map), renormalised mean normal, per-pixel majority class. One sample is returned as is."""
    from .metrics import ensemble_mean, ensemble_normals, ensemble_vote

    if len(preds) == 1:
        return preds[0]
    x = torch.stack(preds)
    if target == "normal":
        return ensemble_normals(x)
    if target == "semseg":
        return ensemble_vote(x, NUM_SEMSEG)
    return ensemble_mean(x)


def baseline_prediction(target: str, fit_refs: torch.Tensor, n: int) -> tuple[torch.Tensor, str]:
    """The trivial predictor fitted on references ``fit_refs`` (N, ...) repeated ``n`` times, and its name."""
    if target == "depth":
        valid = (fit_refs > 0).float()
        mean = (fit_refs * valid).sum(0) / valid.sum(0).clamp(min=1)
        return mean.expand(n, *mean.shape).clone(), "mean depth map"
    if target == "normal":
        mean = F.normalize(fit_refs.float().mean(0), dim=0)
        return mean.expand(n, *mean.shape).clone(), "mean normal map"
    if target == "semseg":
        ids = fit_refs[fit_refs > 0]
        majority = int(torch.bincount(ids.flatten()).argmax()) if ids.numel() else 0
        return torch.full((n, *fit_refs.shape[1:]), majority, dtype=torch.long), f"majority class ({majority - 1})"
    raise ValueError(target)


def _fit_references(store: ArtifactStore, plan: "_Plan", modality: str, target: str, ref_name: str, size: int,
                    limit: int) -> torch.Tensor | None:
    """References (pseudo labels or ground truth, crop 0, evaluation space) of up to ``limit`` of the
    checkpoint's training samples (``plan.fit_shards``): what the trivial baseline is fitted on; None if none."""
    from tokenize_stage.crops import Crop

    out: list[torch.Tensor] = []
    scratch: list[Manifest] = []  # the plan keyed these parts already
    for d, shards in plan.fit_shards.items():
        if ref_name == "pseudo label":
            arrays = _label_arrays(store, d, get_modality(modality).label, None, shards, scratch)
        elif target in GT_COLUMNS:
            arrays = _ground_truth(store, d, GT_COLUMNS[target], None, shards, scratch)
        else:
            arrays = {}
        crops = plan.fit_crops.get(d, {})
        for k in sorted(arrays)[: limit - len(out)]:
            out.append(prepare_reference(target, arrays[k], crops.get(k, Crop((0.0, 0.0, 1.0, 1.0), False)), size))
    return torch.stack(out) if out else None


# ------------------------------------------------------------------------------------------- the stage


@dataclass
class EvalOutcome:
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


def _enough(store: ArtifactStore, ds: str, modalities: list[str], shards: list[int], n: int) -> list[int]:
    """The leading ``shards`` whose token rows (per the manifests) add up to at least ``n`` samples."""
    mods = [m for m in modalities if get_modality(m).kind not in (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ)]
    out, rows = [], 0
    for s in shards:
        out.append(s)
        rows += max((m.rows for m in (store.read_manifest(ds, get_modality(x).token_artifact, s) for x in mods)
                     if m is not None), default=0)
        if rows >= n:
            break
    return sorted(out)


class _Plan:
    """What can be evaluated: condition, targets, tokenizers, samples; and the notes on what cannot."""

    def __init__(self, store: ArtifactStore, cfg: EvalConfig, ckpt: Manifest):
        self.notes: list[str] = []
        self.inputs: list[Manifest] = []
        ds = self.dataset = cfg.dataset
        model_cfg = json.loads(store.read_bytes(store.data_path(ckpt.dataset, ckpt.artifact, None, ".config.json")))
        self.domains_in = list(model_cfg["domains_in"])
        self.domains_out = list(model_cfg["domains_out"])
        self.train_config = ckpt.ingredients.config
        trained = {(r.dataset, r.artifact, r.shard) for r in ckpt.ingredients.inputs}
        # shards: explicit, else those of the dataset the checkpoint never read, else all (flagged)
        all_shards = sorted({s for m in self.domains_in + self.domains_out
                             if get_modality(m).kind not in (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ)
                             for s in token_shards(store, ds, m)})
        trained_shards = {s for (d, _, s) in trained if d == ds}
        if cfg.shards is not None:
            self.shards = sorted(cfg.shards)
        else:
            held = [s for s in all_shards if s not in trained_shards]
            # only as many shards as max_samples needs (a production dataset has thousands): the first
            # held-out ones, else the last ones
            self.shards = _enough(store, ds, self.domains_in + self.domains_out, held, cfg.max_samples) if held \
                else _enough(store, ds, self.domains_in + self.domains_out, all_shards[::-1], cfg.max_samples)
        seen = sorted(trained_shards & set(self.shards))
        self.held_out = not seen
        if seen:
            self.notes.append(f"shards {seen} of {ds} were read by the checkpoint's training run: these samples are "
                              f"not held out (the run trained on every shard; name held-out shards with `shards`)")
        if not self.shards:
            raise FileNotFoundError(f"dataset {ds!r} has no committed token shards of the checkpoint's modalities "
                                    f"({self.domains_in}) under {store.root_uri}")

        # token rows per usable modality (image-like rows must have the model's token count)
        self.tokens: dict[str, dict[str, np.ndarray]] = {}
        for m in dict.fromkeys(self.domains_in + self.domains_out):
            mod = get_modality(m)
            if mod.kind in (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ):
                continue
            rows = _read_tokens(store, ds, m, self.shards, self.inputs)
            if not rows:
                continue
            if mod.is_image_like:
                bad = {len(v) for v in rows.values()} - {mod.max_tokens}
                if bad:
                    self.notes.append(f"{m}: token rows have {sorted(bad)} tokens, the model's {m} has "
                                      f"{mod.max_tokens} (train_stage drops such rows): not evaluated")
                    continue
            self.tokens[m] = rows

        # condition
        requested = cfg.condition
        candidates = list(requested) if requested else list(DEFAULT_CONDITIONS)
        self.condition: list[str] = []
        for c in candidates:
            if c == "rgb@224" and requested and c in self.domains_in:
                self.condition.append(c)
            elif c in self.domains_in and c in self.tokens:
                self.condition.append(c)
            elif requested:
                self.notes.append(f"condition {c}: not in both the store ({ds}) and the checkpoint's inputs; dropped")
            if self.condition and not requested:
                break
        if not self.condition:
            raise ValueError(f"no conditioning input available: tried {candidates}; the checkpoint takes "
                             f"{self.domains_in}, {ds} shards {self.shards} have usable tokens of "
                             f"{sorted(self.tokens)}" + "".join(f"; {n}" for n in self.notes))
        if "tok_rgb@224" not in self.condition and "rgb@224" not in self.condition:
            where = [w for w, ok in (("the store", "tok_rgb@224" in self.tokens),
                                     ("the checkpoint", "tok_rgb@224" in self.domains_in)) if not ok]
            self.notes.append(f"RGB tokens (tok_rgb@224) are not in {' and '.join(where) or 'use'}: generation is "
                              f"conditioned on {', '.join(self.condition)} instead of RGB")

        # targets
        self.targets: list[str] = []
        self.tokenizers: dict[str, Manifest] = {}
        for t in cfg.targets:
            if get_modality(t).kind == ModalityKind.SEQUENCE:
                continue  # det / caption: the boxes and captioning tasks plan them below
            if t in self.condition:
                self.notes.append(f"target {t} is the condition; skipped")
                continue
            if t not in self.domains_out:
                self.notes.append(f"target {t}: not an output of the checkpoint (outputs: {self.domains_out}); skipped")
                continue
            if t not in self.tokens:
                self.notes.append(f"target {t}: no usable token shards of {ds} in shards {self.shards}; skipped")
                continue
            tm = _tokenizer_manifest(store, cfg, t)
            if tm is None:
                self.notes.append(f"target {t}: tokenizer {_tokenizer_name(t)} ({cfg.tokenizer_profile}) is not "
                                  f"committed under {cfg.tokenizer_dataset or ds}; skipped")
                continue
            self.targets.append(t)
            self.tokenizers[t] = tm
        for c in self.condition:  # the condition's tokenizer draws the input in the grid (optional)
            tm = _tokenizer_manifest(store, cfg, c) if get_modality(c).kind == ModalityKind.IMAGE_TOKENS else None
            if tm is not None:
                self.tokenizers[c] = tm
        self.inputs.extend(self.tokenizers.values())
        # the references read later (label shards, ground truth, images) are inputs of the cache key too

        for s in self.shards:
            for t in self.targets:
                m = store.read_manifest(ds, label_artifact(get_modality(t).label), s)
                if m is not None:
                    self.inputs.append(m)
            m = store.read_manifest(ds, GT_ARTIFACT, s)
            if m is not None and m.rows:
                self.inputs.append(m)
            m = store.read_manifest(ds, "images", s)  # RGB: a condition (rgb@224) or the grid's first column
            if m is not None:
                self.inputs.append(m)

        # the baseline is fitted on the checkpoint's own training samples ("the training-set mean depth /
        # majority class"): the leading shards of its token inputs, up to cfg.baseline_samples samples
        # (only the manifests of the shards taken are read: a production run trained on thousands)
        trained_tokens: dict[str, dict[int, str]] = {}  # dataset -> shard -> one token artifact of it
        for r in ckpt.ingredients.inputs:
            if r.shard is not None and r.artifact.startswith("tokens/tok_"):
                trained_tokens.setdefault(r.dataset, {}).setdefault(r.shard, r.artifact)
        self.fit_shards: dict[str, list[int]] = {}
        self.fit_crops: dict[str, dict[str, Any]] = {}  # dataset -> key -> crop 0 of the fit samples
        budget = cfg.baseline_samples
        for d, arts in sorted(trained_tokens.items()):
            for s in sorted(arts):
                if budget <= 0:
                    break
                self.fit_shards.setdefault(d, []).append(s)
                m = store.read_manifest(d, arts[s], s)
                budget -= m.rows if m is not None else 0
        for d, shards in self.fit_shards.items():
            self.fit_crops[d] = _crops(store, d, shards, self.inputs)
            for s in shards:
                for art in [label_artifact(get_modality(t).label) for t in self.targets] + [GT_ARTIFACT]:
                    m = store.read_manifest(d, art, s)
                    if m is not None and (art != GT_ARTIFACT or m.rows):
                        self.inputs.append(m)

        # samples: crop 0 of keys that have the condition and every target
        need = [c for c in self.condition if c != "rgb@224"] + self.targets
        common = set.intersection(*(set(self.tokens[m]) for m in need)) if need else set()
        self.keys = sorted(common)[: cfg.max_samples]
        if not self.keys:
            raise ValueError(f"no sample of {ds} shards {self.shards} has tokens of every one of {need}")
        self.crops = _crops(store, ds, self.shards, self.inputs)
        from .knn_eval import plan_knn

        self.knn = plan_knn(store, cfg, self)
        from .boxes_eval import plan_boxes

        self.boxes = plan_boxes(store, cfg, self)
        from .caption_eval import plan_captions

        self.captions = plan_captions(store, cfg, self)

    def crop(self, key: str):
        from tokenize_stage.crops import Crop

        return self.crops.get(key, Crop((0.0, 0.0, 1.0, 1.0), False))


def evaluation_unit(store: ArtifactStore, cfg: EvalConfig, ckpt: Manifest, plan: _Plan) -> Unit:
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
    plan = _Plan(store, cfg, ckpt)
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


def run_evaluation(store: ArtifactStore, cfg: EvalConfig, ckpt: Manifest, plan: _Plan) -> EvalOutcome:
    """The computation behind :func:`evaluate` (no caching, no commit)."""
    from tokenize_stage.models.base import Tokenizer

    from .generate import TargetStep, generate
    from .report import generation_grid, markdown_report

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    model = load_checkpoint(store, ckpt, cfg.device)
    tokenizers = {m: Tokenizer.from_pretrained(store.uri(store.artifact_dir(tm.dataset, tm.artifact)),
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
    images = _images(store, ds, keyset, plan.shards, scratch)  # the grid shows the ingested RGB crop
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
            "pseudo label": _label_arrays(store, ds, label, keyset, plan.shards, scratch)}
        if target in GT_COLUMNS:
            gt = _ground_truth(store, ds, GT_COLUMNS[target], keyset, plan.shards, scratch)
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
            fit = _fit_references(store, plan, t, target, ref_name, size, cfg.baseline_samples)
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
        from .boxes_eval import box_rows

        box, det_generated = box_rows(model, cfg, plan, plan.boxes, inputs)
        rows.extend(box)
        ref_name, ref_boxes = next(iter(sorted(plan.boxes.refs.items())))  # ground truth before pseudo label
        box_visuals = {"det: generated": det_generated, f"det: {ref_name}": ref_boxes}
    captions: list[dict[str, str]] = []
    if plan.captions is not None:
        from .caption_eval import caption_rows

        cap, generated_captions = caption_rows(model, cfg, plan, plan.captions, inputs)
        rows.extend(cap)
        captions = [{"key": k, "generated": generated_captions[k], "reference": plan.captions.refs[k]}
                    for k in plan.captions.keys[: cfg.grid_samples]]
    if plan.knn is not None:
        from .knn_eval import knn_rows

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
            cond_visual[c] = _sequence_texts(store, plan, c, inputs[c][: cfg.grid_samples])
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


def _sequence_texts(store: ArtifactStore, plan: _Plan, modality: str, ids: torch.Tensor) -> list[str]:
    """Rows (N, L) of a sequence condition -> text through the tokenizer its token shards were made with."""
    from .sequences import decode_text, load_text_tokenizer, token_shard_tokenizer

    ref = token_shard_tokenizer(store, plan.dataset, modality, plan.shards)
    if ref is None:  # no tokenizer recorded: show the ids themselves
        return [" ".join(str(int(i)) for i in row if int(i) > 0)[:120] for row in ids]
    tokenizer = load_text_tokenizer(ref)
    return [decode_text(tokenizer, row) for row in ids]


def masked_token_rows(model, cfg: EvalConfig, plan: _Plan) -> list[dict[str, Any]]:
    """Held-out masked-token loss / accuracy per target modality, under the checkpoint's masking mixture."""
    from train_stage.masking import Masker, RawBatch
    from train_stage.mixture import load_mixture

    from .generate import ModelAdapter
    from .metrics.tokens import masked_token_metrics, pool_token_metrics

    tc = plan.train_config or {}
    datasets = tc.get("datasets") or []
    mix_name = cfg.mixture or next((d.get("mixture") for d in datasets if d.get("name") == cfg.dataset
                                    and d.get("mixture")), None) or tc.get("mixture") or "demo"
    mods = list(dict.fromkeys(plan.domains_in + plan.domains_out))
    upd: dict[str, Any] = {"modalities": mods}
    if tc.get("input_budget"):
        upd["input_budget"] = tc["input_budget"]
    if tc.get("target_budget"):
        upd["target_budget"] = tc["target_budget"]
    masker = Masker([load_mixture(mix_name).model_copy(update=upd)], mods)
    keys = plan.keys
    seq_mods = [m for m in masker.modalities
                if get_modality(m).kind not in (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ)]
    adapter = ModelAdapter(model)
    parts = []
    for r in range(cfg.loss_repeats):
        g = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, 7, r]).integers(2**62)))
        for i in range(0, len(keys), cfg.batch_size):
            chunk = keys[i:i + cfg.batch_size]
            raw = RawBatch(dataset=torch.zeros(len(chunk), dtype=torch.long), keys=chunk)
            for m in seq_mods:
                mod = get_modality(m)
                L = mod.max_tokens
                tok = np.zeros((len(chunk), L), dtype=np.int64)
                n = np.zeros(len(chunk), dtype=np.int64)
                for j, k in enumerate(chunk):
                    t = plan.tokens.get(m, {}).get(k)
                    if t is None:
                        continue
                    t = t[:L]
                    tok[j, : len(t)] = t
                    n[j] = len(t) if not mod.is_image_like else (L if len(t) == L else 0)
                raw.tokens[m] = torch.from_numpy(tok)
                raw.lengths[m] = torch.from_numpy(n)
            batch = masker(raw, g).to(cfg.device)
            logits, labels = adapter.masked_logits(batch)
            parts.append(masked_token_metrics({m: v.cpu() for m, v in logits.items()},
                                              {m: v.cpu() for m, v in labels.items()}))
    pooled = pool_token_metrics(parts)
    rows = []
    for m in plan.domains_out:
        if m not in pooled or not pooled[m]["count"]:
            continue
        V = get_modality(m).vocab_size
        p = pooled[m]
        rows.append({"task": "masked tokens", "target": m, "reference": f"held-out tokens ({mix_name} masking)",
                     "metric": "loss", "higher_is_better": False, "primary": False, "model": p["loss"],
                     "tokenizer_bound": None, "baseline": math.log(V), "baseline_kind": "uniform",
                     "samples": int(p["count"])})
        rows.append({"task": "masked tokens", "target": m, "reference": f"held-out tokens ({mix_name} masking)",
                     "metric": "accuracy", "higher_is_better": True, "primary": False, "model": p["accuracy"],
                     "tokenizer_bound": None, "baseline": 1.0 / V, "baseline_kind": "uniform",
                     "samples": int(p["count"])})
    return rows


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
