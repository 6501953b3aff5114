"""Plain-text and Markdown renderings of unit summaries and status rows (no Prefect, no Ray)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

from fourm_core.gcpause import gc_paused
from fourm_core.lineage import StatusRow
from fourm_core.progress import DEFAULT_EVERY_S, ProgressMeter


PROGRESS_EVERY_S = DEFAULT_EVERY_S  # the flow logs each stage's progress at least this often


class Progress(ProgressMeter):
    """Shards done / total, samples per second and ETA of one stage, for the run log (and a tqdm bar when the
    flow runs in a terminal). The figures are fourm_core.progress's, shared with the stages' own progress."""

    def __init__(self, stage: str, total: int):
        import sys

        super().__init__(stage, total, unit="shard")
        self.stage, self.failed = stage, 0
        self._bar = None
        if total and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=stage, unit="shard", leave=False)

    def update(self, units: list[dict[str, Any]]) -> None:
        self.done += 1
        self.failed += any(u["status"] == "failed" for u in units)
        self.samples += sum(u.get("rows", 0) for u in units[:1])  # a shard's samples: its first unit's rows
        if self._bar is not None:
            self._bar.update(1)

    def line(self) -> str:
        return (f"stage {self.stage}: {self.done}/{self.total} shards" + (f" ({self.failed} failed)" if self.failed else "")
                + f", {self.samples} samples, {self.samples_per_s():.1f} samples/s, {self.elapsed():.0f}s elapsed, "
                  f"ETA {self.eta_text()}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def artifact_key(*parts: str, store_root: str | None = None) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from ``parts`` and, when given, a short digest
    of the store root: runs on two stores keep their own "latest" instead of overwriting each other's."""
    import hashlib

    key = "-".join("".join(c if c.isalnum() else "-" for c in p.lower()) for p in parts).strip("-")
    return f"{key}-{hashlib.sha256(store_root.encode()).hexdigest()[:8]}" if store_root else key


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A fixed-width text table."""
    with gc_paused():  # `status` formats one row per committed unit (300 000 at CC12M scale): only strings
        rows = [[("" if v is None else str(v)) for v in r] for r in rows]
        widths = [max(len(h), max(map(len, col), default=0)) for h, col in zip(headers, zip(*rows) if rows else
                                                                               [() for _ in headers])]
        # one format string for every line: a str.format call per row instead of a ljust per cell
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()]
        lines += [fmt.format(*r).rstrip() for r in rows]
        return "\n".join(lines)


def status_table(rows: list[StatusRow]) -> str:
    with gc_paused():
        body = [(r.stage, r.artifact, "-" if r.shard is None else f"{r.shard:05d}", r.state, r.rows, r.errors,
                 f"{r.seconds:.2f}" if r.state in ("done", "cached", "running", "stale") else "", _clip(r.detail, 70))
                for r in rows]
        return format_table(["stage", "artifact", "shard", "state", "rows", "errors", "seconds", "detail"], body)


def status_counts(rows: list[StatusRow]) -> str:
    counts = Counter(r.state for r in rows)
    states = ("done", "cached", "failed", "missing") + tuple(s for s in ("running", "stale", "unreadable")
                                                             if counts.get(s))
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in states)


def unit_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for Prefect's table artifact: one per unit, JSON-friendly."""
    return [{"stage": s["stage"], "shard": s["shard"], "artifacts": "+".join(s["artifacts"]), "status": s["status"],
             "rows": s.get("rows", 0), "errors": s.get("errors", 0), "seconds": s.get("seconds", 0),
             "error": _clip(s.get("error") or "", 200)} for s in summaries]


def markdown_summary(dataset: str, store_root: str, flow_run_id: str | None,
                     summaries: list[dict[str, Any]]) -> str:
    by_stage: dict[str, Counter] = {}
    for s in summaries:
        by_stage.setdefault(s["stage"], Counter())[s["status"]] += 1
    lines = [f"# build-dataset `{dataset}`", "", f"Store: `{store_root}`  ", f"Flow run: `{flow_run_id or '-'}`", "",
             "| stage | done | cached | failed | rows | sample errors |", "|---|---|---|---|---|---|"]
    for stage, c in by_stage.items():
        rows = sum(s.get("rows", 0) for s in summaries if s["stage"] == stage)
        errs = sum(s.get("errors", 0) for s in summaries if s["stage"] == stage)
        lines.append(f"| {stage} | {c['done']} | {c['cached']} | {c['failed']} | {rows} | {errs} |")
    failed = [s for s in summaries if s["status"] == "failed"]
    if failed:
        lines += ["", "## Failed units", ""] + [f"* `{s['unit']}`: {_clip(s.get('error') or '', 300)}" for s in failed]
        lines += ["", f"Re-run one: `python -m pipelines rerun --dataset {dataset} --stage <stage> --shard <n> "
                      f"--root {store_root}`"]
    return "\n".join(lines)


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."
