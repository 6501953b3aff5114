"""Evaluation report (Markdown, table 1 layout of the 4M-21 paper) and the generation grid (PNG)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch

_ARROW = {True: "↑", False: "↓"}


def fmt(v: Any, metric: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    v = float(v)
    if metric.startswith("pct_"):
        return f"{v:.1f}"
    if metric in ("mean", "median"):
        return f"{v:.2f}°"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def _better(row: dict[str, Any], a: Any, b: Any) -> bool | None:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        return None
    return a > b if row["higher_is_better"] else a < b


def metric_table(rows: list[dict[str, Any]], primary_only: bool = False) -> list[str]:
    out = ["| task | reference | metric | 4M (this checkpoint) | tokenizer bound | baseline | beats baseline | samples |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if primary_only and not (r["primary"] or r["metric"] == "delta1"):
            continue
        beats = _better(r, r["model"], r["baseline"])
        out.append(f"| {r['task']} ({r['target']}) | {r['reference']} | {r['metric']} {_ARROW[r['higher_is_better']]} "
                   f"| {fmt(r['model'], r['metric'])} | {fmt(r['tokenizer_bound'], r['metric'])} "
                   f"| {fmt(r['baseline'], r['metric'])} ({r['baseline_kind']}) "
                   f"| {'n/a' if beats is None else ('yes' if beats else 'no')} | {r['samples']} |")
    return out


# The columns of the 4M-21 paper's table 1 (4M-FACTS §8): (header, task, metric); None = not measured here.
PAPER_COLUMNS: tuple[tuple[str, str | None, str | None], ...] = (
    ("Normals: mean angle ↓", "surface normals", "mean"),
    ("Depth: abs_rel ↓", "depth", "abs_rel"),
    ("Sem. seg.: mIoU ↑", "semantic segmentation", "miou"),
    ("Inst. seg.: mAP ↑", None, None),
    ("IN1K-style kNN: top-1 ↑", "kNN classification", "top1"),
    ("3DHP: MPJPE ↓", None, None),
)


def paper_table(rows: list[dict[str, Any]]) -> list[str]:
    """The paper's table 1 (rows = predictors, columns = tasks) from the metric rows: ground truth where the
    dataset has it, else pseudo labels. Instance segmentation (SAM prompted with boxes) and 3D human
    keypoints are not measured by this stage ("–"); box AP, which is, gets its own column."""
    def cell(task: str | None, metric: str | None, col: str) -> str:
        if task is None:
            return "–"
        found = [r for r in rows if r["task"] == task and r["metric"] == metric]
        found.sort(key=lambda r: not r["reference"].startswith("ground truth"))
        return fmt(found[0][col], metric or "") if found else "–"

    cols = PAPER_COLUMNS + (("Boxes: AP ↑", "boxes", "ap"),)
    out = ["| | " + " | ".join(h for h, _, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, col in (("4M (this checkpoint)", "model"), ("tokenizer bound", "tokenizer_bound"),
                      ("trivial baseline", "baseline")):
        out.append(f"| {name} | " + " | ".join(cell(t, m, col) for _, t, m in cols) + " |")
    return out


def token_table(rows: list[dict[str, Any]]) -> list[str]:
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["target"], {})[r["metric"]] = r
    out = ["| modality | loss ↓ | accuracy ↑ | uniform loss | uniform accuracy | scored tokens |",
           "|---|---|---|---|---|---|"]
    for m, d in by.items():
        loss, acc = d.get("loss", {}), d.get("accuracy", {})
        out.append(f"| {m} | {fmt(loss.get('model'))} | {fmt(acc.get('model'))} | {fmt(loss.get('baseline'))} "
                   f"| {fmt(acc.get('baseline'))} | {loss.get('samples', 0)} |")
    return out


def markdown_report(info: dict[str, Any], rows: list[dict[str, Any]], token_rows: list[dict[str, Any]],
                    notes: list[str]) -> str:
    ck = info["checkpoint"]
    lines = [
        f"# Evaluation: {ck['namespace']}/{ck['artifact']} on {info['dataset']}",
        "",
        f"* checkpoint: `{ck['uri']}` (sha256 {ck['digest'][:16]}, step {ck.get('step')}, "
        f"final training loss {fmt(ck.get('train_loss'))}); inputs {', '.join(ck['domains_in'])}; "
        f"outputs {', '.join(ck['domains_out'])}",
        f"* samples: {info['samples']} (crop 0) from shards {info['shards']} of `{info['dataset']}` — "
        + ("held out from training" if info["held_out"] else "**not held out** (the checkpoint trained on them)"),
        f"* one-to-all generation from **{', '.join(info['condition'])}** to {', '.join(info['targets']) or 'nothing'}: "
        f"MaskGIT, {info['generation']['steps']} steps, {info['generation']['token_schedule']} schedule, "
        f"temperature {info['generation']['temperature']}"
        + (f", ensemble of {info['ensemble']} samples per target" if info.get("ensemble", 1) > 1 else "")
        + "; decoded with the committed tokenizers "
        + ", ".join(f"`{v['artifact']}`" for v in info["tokenizers"].values()),
        "* tokenizer bound: the same metric on the tokenizer's reconstruction of the reference (pseudo label: "
        "its stored tokens; ground truth: encode + decode); baseline: the mean map / majority class of the "
        "checkpoint's training samples (the baseline column says how many)",
        f"* wall time: {info['seconds'].get('total', 0):.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in info['seconds'].items() if k != 'total')})",
        "",
        "## Paper table 1",
        "",
        *paper_table(rows),
        "",
        "Against the ground truth where the dataset has it, else the pseudo labels (the paper: DIODE normals and "
        "depth, COCO semantic / instance segmentation, ImageNet-1K kNN, 3DPW). – = not measured by this stage.",
        "",
        "## Primary metrics by reference",
        "",
        *(metric_table(rows, primary_only=True) if rows else ["(no target could be scored; see the notes)"]),
        "",
        "## Held-out masked-token loss and accuracy",
        "",
        *(token_table(token_rows) if token_rows else ["(no target modality had held-out tokens)"]),
        "",
        "## Generation grid",
        "",
        "![one-to-all generation](data.grid.png)",
        "",
        "Row = one sample; first the RGB crop and the conditioning input, then per target: generated, "
        "tokenizer reconstruction of the pseudo label, and the reference (ground truth when the dataset has it).",
        "",
    ]
    if info.get("captions"):
        lines += ["## Captions", "", "| sample | generated | source caption |", "|---|---|---|",
                  *[f"| `{c['key']}` | {table_cell(c['generated'])} | {table_cell(c['reference'])} |" for c in info["captions"]],
                  ""]
    if rows:
        lines += ["## All metrics", "", *metric_table(rows), ""]
    if notes:
        lines += ["## Notes", "", *[f"* {n}" for n in notes], ""]
    return "\n".join(lines)


def table_cell(text: str, limit: int = 200) -> str:
    """Free text as one Markdown table cell: no pipes or line breaks, at most ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text.replace("|", "\\|") or "(empty)"


# ------------------------------------------------------------------------------------------- grid

_PALETTE = np.random.default_rng(0).integers(30, 256, (256, 3)).astype(np.uint8)
_PALETTE[0] = 0


def to_image(kind: str, x: torch.Tensor | None) -> np.ndarray | None:
    """One evaluation-space sample -> an (H, W, 3) float image in [0, 1]."""
    if x is None:
        return None
    import matplotlib

    if kind == "depth":
        d = x.float().numpy()
        lo, hi = np.percentile(d, 2), np.percentile(d, 98)
        return matplotlib.colormaps["viridis"](np.clip((d - lo) / (hi - lo + 1e-8), 0, 1))[..., :3]
    if kind == "normal":
        return ((x.float().permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
    if kind == "semseg":
        return _PALETTE[x.long().numpy() % 256].astype(np.float32) / 255
    if kind == "edge":
        e = x.float().numpy().clip(0, 1)
        return np.stack([e] * 3, -1)
    if kind == "rgb":
        return x.float().permute(1, 2, 0).numpy().clip(0, 1)
    return None


def generation_grid(keys: list[str], rgb: list[torch.Tensor | None], condition: list[str],
                    cond_visual: dict[str, Any], targets: list[str], visuals: dict[str, dict[str, torch.Tensor]],
                    kinds: dict[str, str], boxes: dict[str, dict[str, list]] | None = None) -> bytes:
    """PNG: one row per sample — RGB crop, condition, then per target generated / tokenizer recon / reference;
    ``boxes`` (column title -> key -> [(xyxy normalised, class)]) are drawn over the RGB crop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols: list[tuple[str, Any]] = [("RGB (crop)", lambda i: ("rgb", rgb[i] if i < len(rgb) else None))]
    for c in condition:
        v = cond_visual.get(c)
        if isinstance(v, list):
            cols.append((f"input: {c}", lambda i, v=v: ("text", v[i] if i < len(v) else "")))
        elif v is not None:
            kind = "edge" if v.dim() == 3 else "rgb"
            cols.append((f"input: {c}", lambda i, v=v, kind=kind: (kind, v[i] if i < len(v) else None)))
        else:
            cols.append((f"input: {c}", lambda i: ("text", "(no decoder)")))

    def ref_col(t: str, name: str, idx_name: str):
        def get(i: int):
            vis = visuals[t]
            if name not in vis:
                return (kinds[t], None)
            pos = (vis[idx_name] == i).nonzero()
            return (kinds[t], vis[name][int(pos[0, 0])] if len(pos) else None)
        return get

    for t in targets:
        short = t.replace("tok_", "").replace("@224", "")
        cols.append((f"{short}: generated", lambda i, t=t: (kinds[t], visuals[t]["generated"][i])))
        cols.append((f"{short}: tokenizer", lambda i, t=t: (kinds[t], visuals[t]["tokenizer"][i])))
        if "ground truth" in visuals[t]:
            cols.append((f"{short}: ground truth", ref_col(t, "ground truth", "gt_index")))
        else:
            cols.append((f"{short}: pseudo label", ref_col(t, "pseudo label", "pseudo_index")))
    for title, by_key in (boxes or {}).items():
        cols.append((title, lambda i, b=by_key: ("boxes", (rgb[i] if i < len(rgb) else None,
                                                          b.get(keys[i]) if i < len(keys) else None))))
    n_rows, n_cols = max(1, len(keys)), len(cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.7 * n_rows + 0.3), squeeze=False)
    for i in range(n_rows):
        for j, (title, get) in enumerate(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            kind, x = get(i)
            if kind == "text":
                ax.text(0.02, 0.5, wrap_text(str(x)), fontsize=5, va="center", ha="left", transform=ax.transAxes)
            elif kind == "boxes":
                _draw_boxes(ax, *x)
            else:
                img = to_image(kind, x)
                if img is not None:
                    ax.imshow(img, interpolation="nearest")
                else:
                    ax.text(0.5, 0.5, "n/a", fontsize=6, ha="center", va="center", transform=ax.transAxes)
            if i == 0:
                ax.set_title(title, fontsize=6)
            if j == 0 and i < len(keys):
                ax.set_ylabel(keys[i][-18:], fontsize=5)
    fig.tight_layout(pad=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _draw_boxes(ax, rgb: torch.Tensor | None, boxes: list | None) -> None:
    """Normalised xyxy boxes with class names over the RGB crop (3, S, S) in [0, 1]."""
    from matplotlib.patches import Rectangle

    if rgb is None or boxes is None:
        ax.text(0.5, 0.5, "n/a", fontsize=6, ha="center", va="center", transform=ax.transAxes)
        return
    img = to_image("rgb", rgb)
    ax.imshow(img, interpolation="nearest")
    h, w = img.shape[:2]
    for (x0, y0, x1, y1), name in boxes:
        ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, lw=0.8, color="yellow"))
        ax.text(x0 * w, y0 * h, name, fontsize=4, color="black", va="bottom",
                bbox={"facecolor": "yellow", "pad": 0.5, "lw": 0})


def wrap_text(text: str, width: int = 22, lines: int = 8) -> str:
    words, out, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width:
            out.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    out.append(cur)
    return "\n".join(out[:lines])
