"""What an evaluation can evaluate, decided before the unit runs (so all of it is part of the cache key).

:class:`Plan` picks the shards (held out from the checkpoint's training run where possible), the token rows
per modality, the conditioning input, the dense targets and their tokenizers, the samples (crop 0 of keys
that have the condition and every target), the training shards the baselines are fitted on, and every
manifest read on the way (``inputs``); whatever cannot be evaluated is written down in ``notes``. The tasks
beyond the dense maps (kNN, boxes, captions) plan on top of it: eval_stage.tasks.EvalPlan.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from fourm_core.manifest import Manifest
from fourm_core.modalities import ModalityKind, get_modality, label_artifact
from fourm_core.store import ArtifactStore

from .config import DEFAULT_CONDITIONS, EvalConfig
from .read import GT_ARTIFACT, read_crops, read_tokens, token_shards, tokenizer_manifest, tokenizer_name


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


class Plan:
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
            rows = read_tokens(store, ds, m, self.shards, self.inputs)
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
                continue  # det / caption: the boxes and captioning tasks plan them (eval_stage.tasks)
            if t in self.condition:
                self.notes.append(f"target {t} is the condition; skipped")
                continue
            if t not in self.domains_out:
                self.notes.append(f"target {t}: not an output of the checkpoint (outputs: {self.domains_out}); skipped")
                continue
            if t not in self.tokens:
                self.notes.append(f"target {t}: no usable token shards of {ds} in shards {self.shards}; skipped")
                continue
            tm = tokenizer_manifest(store, cfg, t)
            if tm is None:
                self.notes.append(f"target {t}: tokenizer {tokenizer_name(t)} ({cfg.tokenizer_profile}) is not "
                                  f"committed under {cfg.tokenizer_dataset or ds}; skipped")
                continue
            self.targets.append(t)
            self.tokenizers[t] = tm
        for c in self.condition:  # the condition's tokenizer draws the input in the grid (optional)
            tm = tokenizer_manifest(store, cfg, c) if get_modality(c).kind == ModalityKind.IMAGE_TOKENS else None
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
            self.fit_crops[d] = read_crops(store, d, shards, self.inputs)
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
        self.crops = read_crops(store, ds, self.shards, self.inputs)

    def crop(self, key: str):
        """Crop 0 of an evaluated sample (the full image when the shard has no crop row for it)."""
        from tokenize_stage.crops import Crop

        return self.crops.get(key, Crop((0.0, 0.0, 1.0, 1.0), False))
