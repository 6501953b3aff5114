"""The evaluation's masked-token task: held-out masked-token loss and accuracy per target modality, under the
checkpoint's masking mixture, beside the uniform predictor (loss log V, accuracy 1 / V)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fourm_core.modalities import ModalityKind, get_modality

from .config import EvalConfig
from .plan import Plan


def masked_token_rows(model, cfg: EvalConfig, plan: Plan) -> list[dict[str, Any]]:
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
