"""Held-out masked-token loss and accuracy per target modality (issue 7 point 4).

For modality m with K_m labelled decoder slots: loss_m = (1/K_m) Σ CE(logits_i, label_i) and
accuracy_m = (1/K_m) Σ [argmax logits_i = label_i]. Slots labelled ``ignore_index`` do not count.
Sums and counts are returned too so that several batches can be pooled exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the label of decoder slots without a loss (train_stage.batch.IGNORE)


def masked_token_metrics(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                         ignore_index: int = IGNORE_INDEX) -> dict[str, dict[str, float]]:
    """logits[m] (K, V), labels[m] (K,) -> {m: {"loss", "accuracy", "loss_sum", "correct", "count"}}."""
    out = {}
    for m, lg in logits.items():
        y = labels[m].long()
        keep = y != ignore_index
        lg, y = lg[keep].float(), y[keep]
        n = int(keep.sum())
        loss_sum = float(F.cross_entropy(lg, y, reduction="sum")) if n else 0.0
        correct = int((lg.argmax(-1) == y).sum()) if n else 0
        out[m] = {"loss": loss_sum / n if n else float("nan"), "accuracy": correct / n if n else float("nan"),
                  "loss_sum": loss_sum, "correct": correct, "count": n}
    return out


def pool_token_metrics(parts: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Combine per-batch results of :func:`masked_token_metrics` into dataset-level loss/accuracy."""
    tot: dict[str, dict[str, float]] = {}
    for part in parts:
        for m, r in part.items():
            t = tot.setdefault(m, {"loss_sum": 0.0, "correct": 0, "count": 0})
            for key in t:
                t[key] += r[key]
    for t in tot.values():
        n = t["count"]
        t["loss"] = t["loss_sum"] / n if n else float("nan")
        t["accuracy"] = t["correct"] / n if n else float("nan")
    return tot
