"""The fine-tuning's evaluation: the fine-tuned checkpoint against the checkpoint it started from, on the
fine-tuning's own task, through the evaluate stage (``pipelines.evaluate.evaluate_unit``, i.e.
``eval_stage.evaluation.evaluate``: two cached evaluation units, one per checkpoint).

The task comes from the train config: the condition is what the fine-tuning's masking feeds the encoder, the
targets what it asks the decoder for, the held-out token loss uses the same masking mixture, and the samples
are the first dataset's (an eval preset and dotted overrides change any of it, e.g. a held-out dataset).
Both evaluations are committed under ``<dataset>-<run>-comparison`` so that the starting checkpoint's does not
replace an evaluation the ``evaluate`` flow made of it with another config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from train_stage.config import TrainConfig

if TYPE_CHECKING:
    from eval_stage.config import EvalConfig

# an evaluation row is identified by these; "model" holds its value
ROW_KEY = ("task", "target", "reference", "metric")


def task_modalities(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """(inputs, targets) of the fine-tuning: the first dataset's modalities that its masking mixture gives a
    non-zero input / target Dirichlet alpha in some component."""
    from train_stage.mixture import load_mixture

    data = cfg.datasets[0]
    mixture = load_mixture(data.mixture or cfg.mixture)
    mods = data.modalities or []
    inputs = [m for m in mods if any(c.alpha(m, target=False) > 0 for c in mixture.components)]
    targets = [m for m in mods if any(c.alpha(m, target=True) > 0 for c in mixture.components)]
    return inputs, targets


def comparison_overrides(cfg: TrainConfig, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Eval-config overrides for evaluating ``cfg``'s task (``overrides`` win), without the checkpoint."""
    inputs, targets = task_modalities(cfg)
    data = cfg.datasets[0]
    out: dict[str, Any] = {"dataset": data.name, "condition": inputs, "targets": targets,
                           "mixture": data.mixture or cfg.mixture, "knn": None}
    out.update(overrides or {})
    out.setdefault("namespace", f"{out['dataset']}-{cfg.run_name}-comparison")
    return out


def comparison_configs(cfg: TrainConfig, evaluation: str,
                       overrides: dict[str, Any] | None) -> dict[str, "EvalConfig"]:
    """The two eval configs, ``finetuned`` (the run's final checkpoint) and ``pretrained`` (``cfg.init_from``):
    the preset / YAML ``evaluation`` with :func:`comparison_overrides`. Built before training, so a bad
    evaluation config fails before any work."""
    from eval_stage.config import load_eval_config

    base = comparison_overrides(cfg, overrides)
    start = cfg.init_from
    if start is None:
        raise ValueError(f"train config of run {cfg.run_name!r} has no init_from: nothing to compare against")
    return {which: load_eval_config(evaluation, {**base, "checkpoint.namespace": ns, "checkpoint.run": run,
                                                 "checkpoint.step": step})
            for which, (ns, run, step) in {"finetuned": (cfg.namespace, cfg.run_name, cfg.steps),
                                           "pretrained": (start.namespace, start.run, start.step)}.items()}


def compare_rows(tuned: list[dict[str, Any]], start: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows both evaluations have, side by side: ``better`` is True when the fine-tuned model's value is better
    (lower, or higher where ``higher_is_better``), None when either value is missing."""
    before = {tuple(r[k] for k in ROW_KEY): r for r in start}
    rows = []
    for r in tuned:
        s = before.get(tuple(r[k] for k in ROW_KEY))
        if s is None:
            continue
        a, b = r["model"], s["model"]
        better = None if a is None or b is None else (a > b if r["higher_is_better"] else a < b)
        rows.append({**{k: r[k] for k in ROW_KEY}, "higher_is_better": r["higher_is_better"], "primary": r["primary"],
                     "finetuned": a, "pretrained": b, "better": better, "samples": r["samples"]})
    return rows


def comparison_markdown(run: str, start: str, rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (a Prefect artifact of the finetune flow run)."""
    def f(v):
        return "–" if v is None else f"{v:.4g}"

    lines = [f"# {run} vs {start} (the checkpoint it started from)", "",
             "| task | target | reference | metric | fine-tuned | pre-trained | better |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['target']} | {r['reference']} | {r['metric']}{' ↑' if r['higher_is_better'] else ' ↓'}"
              f" | {f(r['finetuned'])} | {f(r['pretrained'])} | {'–' if r['better'] is None else ('yes' if r['better'] else 'no')} |"
              for r in rows]
    return "\n".join(lines)
