"""Runs a set of labelers over one shard: decode once, fan the batch out, collect per-labeler tables.

The shard travels as an Arrow table. Step 1 decodes every image once into raw pixels (``_rgb`` bytes +
``_h``/``_w``); each labeler step then appends its output columns ``<label>.<col>`` and an error column
``_err.<labeler>``. Labelers run in dependency order, so a labeler that needs another's output finds its
columns already in the table. The same steps run in-process (``local``) or on Ray (``ray``: model labelers
as actor pools that live across the shards of a run, :mod:`pseudolabel.actor_pool`; the rest as tasks).
"""

from __future__ import annotations

import functools
import itertools
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from fourm_core.image_decode import decode_image
from fourm_core.units import SampleError

from .spec import CAPTION, GROUND_TRUTH, RGB, Batch, Labeler, SampleFailure

ERR = "_err."
META_COLUMNS = ("orig_width", "orig_height")


@dataclass
class LabelerRun:
    """What the runner needs to rebuild a labeler in a worker: its name, settings and the available labels."""

    name: str
    settings: dict[str, Any]
    available: frozenset[str]
    registry_plugins: tuple[str, ...] = ()

    def build(self) -> Labeler:
        from .registry import labeler_class

        cls = labeler_class(self.name, self.registry_plugins)
        return cls(cls.Settings.model_validate(self.settings), available=self.available)


@dataclass
class ShardResult:
    """Per labeler: label -> table (sample_key + columns) of the samples it labeled, and its sample errors."""

    tables: dict[str, dict[str, pa.Table]] = field(default_factory=dict)
    errors: dict[str, list[SampleError]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- decode


def needs_pixels(labelers: list[Labeler]) -> bool:
    """Whether any of the labelers reads the image (a caption-only pass, e.g. T5, skips the JPEG decode)."""
    return any(RGB in lab.active_needs() for lab in labelers)


def decode_step(table: pa.Table, pixels: bool = True) -> pa.Table:
    """Add ``_rgb`` (raw H×W×3 uint8 bytes), ``_h``, ``_w`` and ``_decode_error`` columns.

    ``pixels=False`` (no labeler of the pass reads the image): the same columns, empty, without decoding."""
    if not pixels:
        n = table.num_rows
        table = table.drop_columns([c for c in ("image",) if c in table.column_names])
        return (table.append_column("_rgb", pa.nulls(n, pa.large_binary()))
                .append_column("_h", pa.array([0] * n, pa.int32())).append_column("_w", pa.array([0] * n, pa.int32()))
                .append_column("_decode_error", pa.nulls(n, pa.string())))
    raw, hs, ws, errs = [], [], [], []
    for data in table.column("image").to_pylist():
        try:
            if data is None:
                raise ValueError("no image bytes")
            arr = decode_image(data)
            raw.append(arr.tobytes())
            hs.append(arr.shape[0])
            ws.append(arr.shape[1])
            errs.append(None)
        except Exception as exc:  # per-row: an undecodable image is a sample error, not a shard failure
            raw.append(None)
            hs.append(0)
            ws.append(0)
            errs.append(f"{type(exc).__name__}: {exc}")
    table = table.drop_columns([c for c in ("image",) if c in table.column_names])
    return (table.append_column("_rgb", pa.array(raw, pa.large_binary()))
            .append_column("_h", pa.array(hs, pa.int32())).append_column("_w", pa.array(ws, pa.int32()))
            .append_column("_decode_error", pa.array(errs, pa.string())))


def _rgb_list(table: pa.Table) -> list[np.ndarray | None]:
    """Per row, the decoded H×W×3 uint8 pixels (None where the decode failed): read-only views of the column's
    Arrow buffer (``to_pylist`` copied every image into a Python bytes object first: ~0.9 ms per 32 224² images,
    in the actor, on the model's path)."""
    hs, ws = table.column("_h").to_pylist(), table.column("_w").to_pylist()
    out: list[np.ndarray | None] = []
    for chunk in table.column("_rgb").chunks:
        valid = chunk.is_valid().to_pylist()
        _, offsets, data = chunk.buffers()  # large_binary: validity, int64 offsets, bytes
        starts = np.frombuffer(offsets, np.int64, len(chunk) + 1, chunk.offset * 8) if len(chunk) else []
        for i, ok in enumerate(valid):
            if not ok:
                out.append(None)
                continue
            h, w = hs[len(out)], ws[len(out)]
            start, end = int(starts[i]), int(starts[i + 1])
            rgb = np.frombuffer(data, np.uint8, end - start, start).reshape(h, w, 3)
            rgb.flags.writeable = False  # as bytes-backed arrays were: the next labeler of the pass reads them too
            out.append(rgb)
    return out


# -------------------------------------------------------------------------------------- one labeler


def _dep_rows(table: pa.Table, label: str) -> list[dict[str, Any] | None]:
    prefix = label + "."
    cols = [c for c in table.column_names if c.startswith(prefix)]
    if not cols:
        raise KeyError(f"no columns for needed label '{label}' in the shard table")
    values = {c[len(prefix):]: table.column(c).to_pylist() for c in cols}
    ok = table.column(f"{prefix}__ok").to_pylist() if f"{prefix}__ok" in table.column_names else None
    rows = []
    for i in range(table.num_rows):
        if ok is not None and not ok[i]:
            rows.append(None)
        else:
            rows.append({k: v[i] for k, v in values.items() if k != "__ok"})
    return rows


def label_step(labeler: Labeler, table: pa.Table) -> pa.Table:
    """Run one labeler on a batch table; append its columns and its per-row error column."""
    n = table.num_rows
    needs = labeler.active_needs()
    rgb = _rgb_list(table) if RGB in needs else [None] * n
    captions = table.column("caption").to_pylist() if "caption" in table.column_names else [None] * n
    deps = {d: _dep_rows(table, d) for d in needs if d not in (RGB, CAPTION)}
    decode_err = table.column("_decode_error").to_pylist()
    meta = {m: table.column(m).to_pylist() for m in META_COLUMNS if m in table.column_names}
    errors: list[str | None] = [None] * n
    ready = []
    for i in range(n):
        if RGB in needs and rgb[i] is None:
            errors[i] = f"decode_error\t{decode_err[i]}"
        elif missing := [d for d, rows in deps.items() if rows[i] is None]:
            errors[i] = f"missing_input\tneeded label(s) {', '.join(missing)} failed for this sample"
        else:
            ready.append(i)
    results: dict[int, dict] = {}
    oracle = _oracle_rows(labeler, table)
    for i in [i for i in ready if oracle[i] is not None]:  # ground truth: no model run for these samples
        ready.remove(i)
        try:
            results[i] = labeler.oracle_label(oracle[i])
        except Exception as exc:
            errors[i] = _error_text(exc)
    if ready:
        batch = Batch([table.column("sample_key")[i].as_py() for i in ready], [rgb[i] for i in ready],
                      [captions[i] for i in ready], {d: [rows[i] for i in ready] for d, rows in deps.items()},
                      {m: [meta[m][i] for i in ready] for m in meta})
        for pos, res in zip(ready, _label_isolating(labeler, batch)):
            if isinstance(res, BaseException):
                errors[pos] = _error_text(res)
            else:
                results[pos] = res
    for label, schema in labeler.schema().items():
        for f in schema:
            values = [results[i][label][f.name] if i in results else None for i in range(n)]
            table = table.append_column(f"{label}.{f.name}", pa.array(values, f.type))
        table = table.append_column(f"{label}.__ok", pa.array([i in results for i in range(n)], pa.bool_()))
    return table.append_column(ERR + labeler.name, pa.array(errors, pa.string()))


def _error_text(exc: BaseException) -> str:
    """A per-sample exception -> the ``reason\tdetail`` cell of the error column."""
    if isinstance(exc, SampleFailure):
        return f"{exc.reason}\t{exc.detail}"
    return f"labeler_error\t{type(exc).__name__}: {exc}"


def _oracle_rows(labeler: Labeler, table: pa.Table) -> list[dict[str, Any] | None]:
    """Per row: its ``ground_truth`` row when the labeler runs as an oracle and the sample has one, else None."""
    if not getattr(labeler, "oracle_active", False) or f"{GROUND_TRUTH}.__ok" not in table.column_names:
        return [None] * table.num_rows
    return _dep_rows(table, GROUND_TRUTH)


def _label_isolating(labeler: Labeler, batch: Batch) -> list:
    """Label a batch; if the batch as a whole raises, label sample by sample so one bad sample fails alone."""
    try:
        out = labeler.label_batch(batch)
        if len(out) != len(batch):
            raise RuntimeError(f"labeler {labeler.name} returned {len(out)} results for {len(batch)} samples")
        return out
    except Exception:
        if len(batch) == 1:
            return [SampleFailure("labeler_error", traceback.format_exc(limit=3).strip().splitlines()[-1])]
        out = []
        for i in range(len(batch)):
            try:
                out.extend(labeler.label_batch(batch.subset([i])))
            except Exception as exc:
                out.append(exc)
        return out


# --------------------------------------------------------------------------------------- split out


_SCHEMAS: dict[tuple[type, str, tuple[str, ...]], dict[str, pa.Schema]] = {}


def _schema(lab: Labeler) -> dict[str, pa.Schema]:
    """``lab.schema()``, once per labeler identity in this process: the driver builds its labelers afresh for
    every shard, and a model labeler's schema builds its model config (transformers: ~10 ms per shard)."""
    key = (type(lab), lab.settings.model_dump_json(), tuple(sorted(lab.available)))
    if key not in _SCHEMAS:
        _SCHEMAS[key] = lab.schema()
    return _SCHEMAS[key]


def split_results(table: pa.Table, labelers: list[Labeler]) -> ShardResult:
    """Per labeler: the rows it labeled, as one table per output label, and its errors (by sample key)."""
    keys = table.column("sample_key")
    result = ShardResult()
    for lab in labelers:
        errs = table.column(ERR + lab.name).to_pylist()
        result.errors[lab.name] = [SampleError(k, *e.split("\t", 1)) for k, e in zip(keys.to_pylist(), errs)
                                   if e is not None]
        result.tables[lab.name] = {}
        for label, schema in _schema(lab).items():
            ok = table.column(f"{label}.__ok")
            sub = table.filter(ok)
            cols = {"sample_key": sub.column("sample_key")}
            cols.update({f.name: sub.column(f"{label}.{f.name}") for f in schema})
            result.tables[lab.name][label] = pa.table(cols, schema=pa.schema([pa.field("sample_key", pa.string())]
                                                                             + list(schema)))
    return result


# --------------------------------------------------------------------------------------------- local


def run_local(table: pa.Table, runs: list[LabelerRun]) -> tuple[pa.Table, list[Labeler]]:
    """In-process execution of the same steps (no Ray): decode once, then every labeler in order."""
    labelers = [r.build() for r in runs]
    _one_matmul_precision(labelers)
    for lab in labelers:
        lab.setup()
    bs = min([lab.batch_size for lab in labelers] or [16])
    pixels = needs_pixels(labelers)
    out = []
    for start in range(0, table.num_rows, bs):
        part = decode_step(table.slice(start, bs), pixels)
        for lab in labelers:
            part = label_step(lab, part)
        out.append(part)
    return finish(pa.concat_tables(out)), labelers


def _one_matmul_precision(labelers: list[Labeler]) -> None:
    """One process holds one torch fp32 matmul precision: labelers that run together must ask for the same."""
    asked = {lab.name: lab.settings.matmul_precision for lab in labelers if hasattr(lab.settings, "matmul_precision")}
    if len(set(asked.values())) > 1:
        listed = ", ".join(f"{n}: {p}" for n, p in sorted(asked.items()))
        raise ValueError(f"the local runner labels in one process, where torch's fp32 matmul precision is a single "
                         f"setting, but the labelers ask for different ones ({listed}): give them the same "
                         f"matmul_precision in pseudolabel.settings, or run on Ray (one process per labeler)")


def finish(table: pa.Table) -> pa.Table:
    """The pass's rows back in shard order, without the decoded pixels (the labels are what the stage commits)."""
    table = table.sort_by("_idx")
    return table.drop_columns([c for c in ("_rgb", "_h", "_w") if c in table.column_names])


# ----------------------------------------------------------------------------------------------- ray


def to_wire(table: pa.Table) -> pa.Buffer:
    """A batch table as Arrow IPC stream bytes, the form every table takes between the steps of the Ray pass.

    Ray would otherwise pickle the ``pa.Table`` itself: pyarrow's pickling rebuilds every column and chunk
    through Python (several ms per call for the output of a labeler with many list columns, 2-core box), and
    of a slice it may ship the whole parent buffers. The IPC stream holds only the rows of the table, in one
    buffer Ray passes out of band; :func:`from_wire` reads it back without copying. Schema (metadata included),
    types, values and chunking come back as they went in, so what the stage commits is byte-identical."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_wire(data: pa.Buffer | bytes) -> pa.Table:
    """:func:`to_wire`'s bytes -> the table."""
    return pa.ipc.open_stream(data).read_all()



@functools.cache
def _decode_thread() -> ThreadPoolExecutor:
    """This process's decode thread (a Ray actor's or task worker's: one per process, started on first use)."""
    return ThreadPoolExecutor(1, thread_name_prefix="pseudolabel-decode")


def decoded_batches(table: pa.Table, batch: int, pixels: bool) -> Iterator[pa.Table]:
    """``table`` in slices of ``batch`` rows through :func:`decode_step`, slice k+1 decoded in a background thread
    while the caller labels slice k: Pillow releases the GIL while it decodes, so where a core is spare the decode
    stays off the model's path (only the first slice's decode is on it), as with separate decode tasks, without
    their Ray hop."""
    slices = [table.slice(s, batch) for s in range(0, table.num_rows, batch)]
    if not pixels or len(slices) < 2:
        yield from (decode_step(t, pixels) for t in slices)
        return
    pool = _decode_thread()
    ahead = pool.submit(decode_step, slices[0])
    for k in range(len(slices)):
        current = ahead.result()
        if k + 1 < len(slices):
            ahead = pool.submit(decode_step, slices[k + 1])
        yield current


def label_range(labeler: Labeler, offset: int, length: int, drop_pixels: bool, tables,
                decode: bool | None = None, model_lock: AbstractContextManager | None = None) -> pa.Table:
    """One step of the Ray pass: rows ``[offset, offset + length)`` of the concatenated ``tables`` (consecutive
    chunks of the previous step), labelled in the labeler's own batch size; raw pixels dropped after the last
    step (the driver needs only the labels).

    ``decode``: None when the rows are decoded already (a later step); else this is the pass's first step and
    decodes them first (:func:`decode_step`, ``decode`` = whether the pass reads pixels at all).

    ``model_lock``: held while labelling (an actor running two calls at once: :mod:`pseudolabel.actor_pool`);
    the call's rows are unpacked and its first batch decoded before it is taken, i.e. while the other call
    still labels, so that work stays off the model's path."""
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    if offset or length != table.num_rows:
        table = table.slice(offset, length)
    bs = labeler.batch_size
    batches = (table.slice(s, bs) for s in range(0, table.num_rows, bs)) if decode is None else \
        decoded_batches(table, bs, decode)
    first = next(batches)  # a step has rows (an empty shard never reaches one: run_empty)
    with model_lock or nullcontext():
        parts = [label_step(labeler, batch) for batch in itertools.chain([first], batches)]
    out = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
    return out.drop_columns(["_rgb", "_h", "_w"]) if drop_pixels else out


def run_empty(table: pa.Table, labelers: list[Labeler]) -> pa.Table:
    """An empty shard through every step without loading a model (no row reaches ``label_batch``)."""
    out = decode_step(table)
    for lab in labelers:
        out = label_step(lab, out)
    return finish(out)
