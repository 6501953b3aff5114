"""Tokenizer reports: a PNG of originals beside reconstructions, and a model card."""

from __future__ import annotations

import io
import json
from typing import Any

import torch

from .normalize import to_display


def comparison_png(target: str, originals: torch.Tensor, reconstructions: torch.Tensor, n: int = 6) -> bytes:
    """PNG bytes: row 1 originals, row 2 reconstructions, ``n`` held-out samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, originals.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 3.8), squeeze=False)
    for i in range(n):
        for row, (title, batch) in enumerate((("original", originals), ("reconstruction", reconstructions))):
            ax = axes[row][i]
            img = to_display(target, batch[i])
            kw: dict[str, Any] = {}
            if target == "semseg":
                kw = dict(cmap="nipy_spectral", vmin=0, vmax=133, interpolation="nearest")
            elif img.ndim == 2:
                kw = dict(cmap="gray" if target in ("edge", "mask") else "viridis")
                if target in ("pose", "global"):
                    kw["aspect"] = "auto"
            ax.imshow(img, **kw)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def model_card(config: dict[str, Any], train: dict[str, Any], data: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown model card: what the tokenizer is, what it was trained on, how long, how well."""
    lines = [f"# {config['name']} ({config['profile']})", "",
             f"Architecture `{config['architecture']}`, reconstructs `{config['target']}` for modality "
             f"`{config['modality']}`; {config['codebook_size']} codes.", "", "## Data", ""]
    lines += [f"- {k}: {v}" for k, v in data.items()]
    lines += ["", "## Training", ""] + [f"- {k}: {v}" for k, v in train.items()]
    lines += ["", "## Tokenizer bound (held-out)", "", "| metric | tokenizer | baseline |", "|---|---|---|"]
    for k, v in metrics["model"].items():
        b = metrics["baseline"].get(k)
        lines.append(f"| {k} | {v:.4f} | {'' if b is None else f'{b:.4f}'} |")
    lines += ["", f"Baseline: {metrics['baseline_kind']}. Beats baseline on `{metrics['primary']}`: "
              f"**{metrics['beats_baseline']}**.", "", "## Config", "", "```json",
              json.dumps(config, indent=2), "```", ""]
    return "\n".join(lines)
