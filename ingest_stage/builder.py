"""Build one shard's tables from its samples: fetch/load, validate, normalise, de-duplicate, collect errors.

Work runs in a thread pool: downloads wait on sockets and PIL releases the GIL while decoding, resizing
and encoding, so threads overlap network I/O with pixel work without the cost of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import nullcontext
from typing import Callable

import numpy as np
import pyarrow as pa

from fourm_core.label_codec import npy_encode
from fourm_core.config import IngestConfig, TextFilterConfig
from fourm_core.store import table_to_parquet_bytes
from fourm_core.units import SampleError, UnitOutput

from .download import Downloader
from .filters import check_scores, clean_caption, clean_document, quality_failure
from .imageproc import process_array, process_bytes, target_size
from .plan import Plan, Slice
from .samples import ImageRow, SampleFailure, SampleRef, SceneSample
from .synthetic import render

Progress = Callable[[int], None]

IMAGES_SCHEMA = pa.schema([
    ("sample_key", pa.string()), ("image", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
    ("orig_width", pa.int32()), ("orig_height", pa.int32()), ("caption", pa.string()), ("source", pa.string()),
    ("url", pa.string()), ("digest", pa.string()), ("meta", pa.string()),
])
GROUND_TRUTH_SCHEMA = pa.schema([
    ("sample_key", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("depth", pa.binary()),
    ("normal", pa.binary()), ("semseg", pa.binary()), ("boxes", pa.string()), ("label", pa.string()),
])
TEXTS_SCHEMA = pa.schema([("sample_key", pa.string()), ("caption", pa.string()), ("source", pa.string()),
                          ("digest", pa.string())])
# The per-shard digest file committed beside each images/texts part (``shard-N.digests.parquet``, listed in
# its manifest): what cross-shard and cross-dataset de-duplication reads instead of the image shards.
DIGESTS_SCHEMA = pa.schema([("sample_key", pa.string()), ("digest", pa.string()), ("phash", pa.int64())])
DIGESTS_SUFFIX = ".digests.parquet"


def _scene_row(ref: SampleRef, scene: SceneSample, cfg: IngestConfig) -> ImageRow:
    """Render the scene; the ground truth is rendered at the stored resolution so it is exact for its pixels."""
    full = render(scene.scene, scene.size, scene.size)
    img = process_array(full.rgb, cfg)
    w, h = target_size(scene.size, scene.size, cfg.shorter_side)
    gt = full if (w, h) == (scene.size, scene.size) else render(scene.scene, w, h)
    ground_truth = {"sample_key": ref.key, "width": w, "height": h, "depth": npy_encode(gt.depth),
                    "normal": npy_encode(gt.normal), "semseg": npy_encode(gt.semseg), "boxes": json.dumps(gt.boxes),
                    "label": scene.scene.setting}  # the image's class (kNN evaluation): wood / tiles / grass
    return ImageRow(ref.key, img.data, img.width, img.height, img.orig_width, img.orig_height, gt.caption, ref.source,
                    None, img.digest, None, img.phash, img.cropped, ground_truth)


def _image_row(sl: Slice, ref: SampleRef, cfg: IngestConfig, downloader: Downloader | None,
               cpu_slots: threading.Semaphore | None = None) -> ImageRow:
    src = sl.source
    if src.remote:
        assert downloader is not None and ref.url is not None
        data = downloader.fetch(ref.url).data
        # Many threads wait on sockets, but only as many as there are cores decode at once: more would
        # only fight over the cores (and the GIL between PIL calls) and delay every image in flight.
        with cpu_slots or nullcontext():
            img = process_bytes(data, cfg)
    else:
        payload = src.load(ref)
        if isinstance(payload, SceneSample):
            return _scene_row(ref, payload, cfg)
        img = process_array(payload, cfg) if isinstance(payload, np.ndarray) else process_bytes(payload, cfg)
    caption = clean_caption(ref.caption) if cfg.text.clean else ref.caption
    meta = json.dumps(ref.meta, sort_keys=True, default=str) if ref.meta is not None else None
    return ImageRow(ref.key, img.data, img.width, img.height, img.orig_width, img.orig_height, caption, ref.source,
                    ref.url, img.digest, meta, img.phash, img.cropped)


def _guarded(fn: Callable[[], ImageRow | str]) -> ImageRow | str | SampleFailure:
    """Run one sample's work; every failure becomes a SampleFailure (a sample never fails its shard)."""
    try:
        return fn()
    except SampleFailure as exc:
        return exc
    except Exception as exc:  # a bug or an unforeseen input: recorded per sample, visible in the errors table
        return SampleFailure("internal_error", f"{type(exc).__name__}: {exc}")


def _prefilter(plan: Plan, items: list[tuple[int, Slice, SampleRef]]) -> dict[int, SampleFailure]:
    """Samples refused before any work (nothing fetched or decoded): dataset-wide duplicate URLs, repeated keys
    within the shard, and for images the source's score columns and a required caption."""
    refused: dict[int, SampleFailure] = {}
    seen: set[str] = set()
    filters, text = plan.config.ingest.filters, plan.config.ingest.text
    scores = bool(filters.min_scores or filters.max_scores) and not plan.config.text_only
    for pos, (g, sl, ref) in enumerate(items):
        if plan.first_of is not None and plan.first_of[g] not in (-1, g):
            first = int(plan.first_of[g])
            refused[pos] = SampleFailure("duplicate_url", f"same URL as sample {first} (shard {first // plan.shard_size})")
        elif ref.key in seen:
            refused[pos] = SampleFailure("duplicate_key", f"key {ref.key} repeats within the shard")
        elif text.require_caption and not plan.config.text_only and not sl.source.has_ground_truth \
                and clean_caption(ref.caption) is None:  # synthetic scenes get their caption from the renderer
            refused[pos] = SampleFailure("no_caption", "the source gives this image no caption "
                                                       "(ingest.text.require_caption)")
        elif scores:
            try:
                check_scores(ref.meta, filters)
            except SampleFailure as exc:
                refused[pos] = exc
        seen.add(ref.key)
    return refused


def _listing_stats(items: list[tuple[int, Slice, SampleRef]]) -> Counter[str]:
    """Listing counts of the sources whose first sample is in this shard (each source reports them once)."""
    out: Counter[str] = Counter()
    for sl in {id(sl): sl for _, sl, _ in items}.values():
        if sl.start == 0:
            out.update(sl.source.listing_stats())
    return out


def _digests_file(rows: list[dict]) -> dict[str, bytes]:
    table = pa.Table.from_pylist([{"sample_key": r["sample_key"], "digest": r["digest"], "phash": r.get("phash")}
                                  for r in rows], schema=DIGESTS_SCHEMA)
    return {DIGESTS_SUFFIX: table_to_parquet_bytes(table)}


def build_image_shard(plan: Plan, shard: int, progress: Progress | None = None,
                      downloader_factory: Callable[[], Downloader] | None = None) -> UnitOutput:
    """The ``images`` (and, with synthetic sources, ``ground_truth``) tables of one shard."""
    cfg = plan.config.ingest
    t0 = time.perf_counter()
    items = plan.items(shard)
    results: list[ImageRow | SampleFailure | None] = [None] * len(items)
    results_refused = _prefilter(plan, items)
    for pos, failure in results_refused.items():
        results[pos] = failure
    remote = any(sl.source.remote for _, sl, _ in items)
    downloader = (downloader_factory or (lambda: Downloader(cfg.download)))() if remote else None
    # Remote work is mostly waiting: use download.concurrency threads. Local work is pixel work: one thread
    # per core (PIL releases the GIL) is all that helps.
    cores = max(1, min(8, _usable_cores()))
    workers = cfg.download.concurrency if remote else cores
    cpu_slots = threading.Semaphore(cores)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
            futures = {pool.submit(_guarded, lambda sl=sl, ref=ref: _image_row(sl, ref, cfg, downloader, cpu_slots)): pos
                       for pos, (_, sl, ref) in enumerate(items) if pos not in results_refused}
            if progress and results_refused:
                progress(len(results_refused))
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if progress:
                    progress(1)
    finally:
        if downloader is not None:
            downloader.close()

    rows, gt_rows, errors = [], [], []
    digests: dict[str, str] = {}
    ok_by_source: Counter[str] = Counter()
    counts = _listing_stats(items)
    for (_, _, ref), res in zip(items, results):
        if isinstance(res, SampleFailure):
            errors.append(SampleError(ref.key, res.reason, res.detail[:500]))
            continue
        assert isinstance(res, ImageRow)
        if cfg.dedupe and res.digest in digests:
            errors.append(SampleError(ref.key, "duplicate_content", f"same pixels as {digests[res.digest]}"))
            continue
        digests[res.digest] = ref.key
        ok_by_source[res.source] += 1
        counts["no_caption"] += res.caption is None
        counts["cropped_aspect"] += res.cropped
        gt = res.ground_truth
        rows.append({k: v for k, v in res.__dict__.items() if k not in ("ground_truth", "cropped")})
        if gt is not None:
            gt_rows.append(gt)
    tables = {"images": pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA),
              "ground_truth": pa.Table.from_pylist(gt_rows, schema=GROUND_TRUTH_SCHEMA)}
    stats = {**_stats(len(items), len(rows), errors, ok_by_source, t0), **counts}
    if downloader is not None:
        stats.update(retries=downloader.counters["retries"], bytes_downloaded=downloader.counters["bytes"])
    return UnitOutput(tables, errors, stats, {"images": _digests_file(rows)})


def build_text_shard(plan: Plan, shard: int, progress: Progress | None = None) -> UnitOutput:
    """The ``texts`` table of one shard of a text-only dataset."""
    t0 = time.perf_counter()
    items = plan.items(shard)
    refused = _prefilter(plan, items)
    rows, errors = [], []
    digests: dict[str, str] = {}
    ok_by_source: Counter[str] = Counter()
    text_cfg = plan.config.ingest.text
    for pos, (_, sl, ref) in enumerate(items):
        res = refused.get(pos) or _guarded(lambda: _text(sl, ref, text_cfg))
        if progress:
            progress(1)
        if isinstance(res, SampleFailure):
            errors.append(SampleError(ref.key, res.reason, res.detail[:500]))
            continue
        digest = hashlib.sha256(res.encode()).hexdigest()
        if plan.config.ingest.dedupe and digest in digests:
            errors.append(SampleError(ref.key, "duplicate_content", f"same text as {digests[digest]}"))
            continue
        digests[digest] = ref.key
        ok_by_source[ref.source] += 1
        rows.append({"sample_key": ref.key, "caption": res, "source": ref.source, "digest": digest})
    return UnitOutput({"texts": pa.Table.from_pylist(rows, schema=TEXTS_SCHEMA)}, errors,
                      _stats(len(items), len(rows), errors, ok_by_source, t0), {"texts": _digests_file(rows)})


def _text(sl: Slice, ref: SampleRef, cfg: TextFilterConfig) -> str:
    """One document: loaded, cleaned, checked against the quality rules, then truncated to the source's
    ``max_chars`` (the rules see the whole document)."""
    text = sl.source.load(ref)
    if cfg.clean:
        text = clean_document(text)
        if not text:
            raise SampleFailure("empty_text", "nothing is left after removing HTML tags and whitespace")
    if cfg.quality and (rule := quality_failure(text, cfg)) is not None:
        raise SampleFailure("low_quality", rule)
    limit = getattr(sl.source.cfg, "max_chars", None)
    return text[:limit] if limit else text


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under a scheduler), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _stats(n: int, ok: int, errors: list[SampleError], ok_by_source: Counter[str], t0: float) -> dict:
    return {"samples": n, "ok": ok, "failed": len(errors), "by_reason": dict(Counter(e.reason for e in errors)),
            "ok_by_source": dict(ok_by_source), "work_seconds": round(time.perf_counter() - t0, 3)}
