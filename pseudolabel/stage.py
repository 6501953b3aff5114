"""The pseudolabel stage: per images shard, one cached unit per enabled labeler.

``run_shard`` decides which labelers are stale (cache key differs or ``force``), runs all of them in one
pass over the shard (decode once, fan out; on Ray through actor pools that live across the shards of the run,
or in-process), then commits one unit per labeler in
dependency order through :func:`fourm_core.units.run_unit`. A labeler whose model cannot be resolved
fails its own unit (and its dependents') with a message naming the model source; the other labelers
still commit; ``run_shard`` raises at the end so the orchestrator retries.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fourm_core import ArtifactStore, DatasetConfig, NotCommittedError, Unit, UnitOutput, UnitResult, run_unit
from fourm_core.manifest import InputRef, ModelRef
from fourm_core.modalities import label_artifact
from fourm_core.ray_address import resolve_ray_address
from fourm_core.stage import StageSpec
from fourm_core.units import UnitStatus, is_cached

from .config import PseudolabelConfig, pseudolabel_config
from .registry import BUILTIN_OUTPUTS, resolve_order
from .actor_pool import release_pools
from .ray_pass import run_ray
from .runner import LabelerRun, needs_pixels, run_local, split_results
from .spec import CAPTION, GROUND_TRUTH, RGB, Labeler

log = logging.getLogger(__name__)

STAGE_NAME = "pseudolabel"
IMAGES = "images"


class PseudolabelUnitsFailed(RuntimeError):
    def __init__(self, results: list[UnitResult]):
        self.results = results
        failed = [r for r in results if r.status is UnitStatus.FAILED]
        super().__init__("pseudolabel units failed: " + "; ".join(f"{r.unit}: {r.error}" for r in failed))


def plan_shards(store: ArtifactStore, config: DatasetConfig) -> list[int]:
    """The committed `images` shards of the dataset."""
    pseudolabel_config(config)  # a bad section fails before any work
    return store.committed_shards(config.name, IMAGES)


def build_labelers(cfg: PseudolabelConfig, shard: int, only: list[str] | None = None, *,
                   ground_truth: bool = False) -> list[Labeler]:
    """The enabled labelers for a shard, in dependency order (heavy outputs only on the feature subset).

    ``ground_truth``: the shard has ground-truth rows (synthetic scenes); only then do oracle labelers use them.
    """
    plugins = tuple(cfg.plugins)
    names = resolve_order(cfg.labelers, plugins)
    if not cfg.feature_subset.contains(shard):
        from .registry import labeler_class

        names = [n for n in names if not labeler_class(n, plugins).heavy_output]
    from .registry import labeler_class

    available = frozenset(label for n in names for label in labeler_class(n, plugins).outputs)
    out = [labeler_class(n, plugins)(cfg.settings_for(n, ground_truth=ground_truth), available=available)
           for n in names]
    if only is not None:
        keep = set(only)
        out = [lab for lab in out if lab.name in keep]
    return out


def _oracle(lab: Labeler) -> bool:
    return bool(getattr(lab, "oracle_active", False))


def _unit(dataset: str, shard: int, lab: Labeler, images: InputRef, deps: list[InputRef],
          model: ModelRef | None, gt: InputRef | None) -> Unit:
    """An oracle labeler's unit has the shard's ground truth as an input (its digest is in the cache key)."""
    oracle = [gt] if gt is not None and _oracle(lab) else []
    return Unit(stage=STAGE_NAME, dataset=dataset, artifacts=[label_artifact(o) for o in lab.outputs], shard=shard,
                code_version=f"{lab.name}/{lab.code_version}", config=lab.config_for_key(),
                inputs=[images, *deps, *oracle], model=model)


def run_shard(store: ArtifactStore, config: DatasetConfig, shard: int, *, force: bool = False,
              labelers: list[str] | None = None, overrides: dict[str, Any] | None = None) -> list[UnitResult]:
    """Run every enabled labeler's unit for one `images` shard, skipping cached ones."""
    cfg = pseudolabel_config(config, overrides)
    return run_labelers(store, config.name, shard, cfg, force=force, only=labelers)


def _shard_inputs(store: ArtifactStore, dataset: str, shard: int) -> tuple[InputRef, InputRef | None]:
    """The shard's images part and its ground truth (None for photos: ingest commits 0 rows for them), as input
    refs (through the index: from its columns, no manifest parsed)."""
    images_ref = store.input_ref(dataset, IMAGES, shard)
    if images_ref is None:
        raise NotCommittedError(f"{dataset}/{IMAGES} shard {shard} is not committed; run ingest first")
    gt_ref = store.input_ref(dataset, GROUND_TRUTH, shard)
    if gt_ref is not None and not store.committed_rows(dataset, GROUND_TRUTH, shard):
        gt_ref = None
    return images_ref, gt_ref


def _labeler_unit(store: ArtifactStore, dataset: str, shard: int, lab: Labeler, by_label: dict[str, Labeler],
                  images_ref: InputRef, model: ModelRef | None, gt_ref: InputRef | None) -> Unit:
    """A labeler's unit as it is committed: the committed labels of its needs made on this shard are inputs."""
    deps = [_label_ref(store, dataset, shard, d) for d in lab.active_needs() if d in by_label]
    return _unit(dataset, shard, lab, images_ref, [d for d in deps if d is not None], model, gt_ref)


def shard_units(store: ArtifactStore, config: DatasetConfig, shard: int) -> list[Unit]:
    """Every enabled labeler's unit of one shard, as :func:`run_labelers` commits them, without running anything:
    the orchestrator's cached check, so that a fully labelled shard is neither dispatched nor starts Ray."""
    cfg = pseudolabel_config(config)
    images_ref, gt_ref = _shard_inputs(store, config.name, shard)
    labs = build_labelers(cfg, shard, ground_truth=gt_ref is not None)
    by_label = {o: lab for lab in labs for o in lab.outputs}
    return [_labeler_unit(store, config.name, shard, lab, by_label, images_ref, lab.model_ref(), gt_ref)
            for lab in labs]


def run_labelers(store: ArtifactStore, dataset: str, shard: int, cfg: PseudolabelConfig, *, force: bool = False,
                 only: list[str] | None = None) -> list[UnitResult]:
    images_ref, gt_ref = _shard_inputs(store, dataset, shard)
    labs = build_labelers(cfg, shard, ground_truth=gt_ref is not None)
    by_label = {o: lab for lab in labs for o in lab.outputs}
    selected = {lab.name for lab in labs} if only is None else set(only)
    if unknown := selected - {lab.name for lab in labs}:
        raise ValueError(f"labelers {sorted(unknown)} are not enabled for shard {shard} of {dataset}; "
                         f"enabled: {[lab.name for lab in labs]}")

    # 1. resolve models in the driver (fail fast, digests for cache keys); decide who is stale
    failures: dict[str, Exception] = {}
    models: dict[str, ModelRef | None] = {}
    stale: list[Labeler] = []
    for lab in labs:
        if lab.name not in selected and only is not None:
            continue
        bad_deps = [by_label[d].name for d in lab.active_needs() if d in by_label and by_label[d].name in failures]
        if bad_deps:
            failures[lab.name] = RuntimeError(f"needed labeler(s) {', '.join(bad_deps)} failed")
            continue
        try:
            models[lab.name] = lab.model_ref()
        except Exception as exc:
            failures[lab.name] = exc
            continue
        upstream_stale = any(by_label[d] in stale for d in lab.active_needs() if d in by_label)
        if force or upstream_stale or not _cached(store, dataset, shard, lab, images_ref, models[lab.name], gt_ref):
            stale.append(lab)

    # 2. one pass over the shard for every stale labeler (plus committed inputs of their needs)
    result = None
    rows_in = 0  # the images part's rows: the pass's input table holds them all (no second manifest read)
    run_error: Exception | None = None
    t0 = time.perf_counter()
    if stale:
        try:
            table = _input_table(store, dataset, shard, stale, by_label, gt_ref is not None)
            rows_in = table.num_rows
            runs = [LabelerRun(lab.name, lab.settings.model_dump(mode="json"), lab.available, tuple(cfg.plugins))
                    for lab in stale]
            if cfg.runner == "ray":
                _ensure_ray(cfg.ray_address)
                out, _ = run_ray(table, runs)
            else:
                out, _ = run_local(table, runs)
            result = split_results(out, stale)
        except Exception as exc:  # the pass failed as a whole: every stale labeler's unit fails with it
            run_error = exc
    seconds = time.perf_counter() - t0

    # 3. commit per labeler, in dependency order, through run_unit
    gt_keys = set(store.read_table(dataset, GROUND_TRUTH, shard, columns=["sample_key"]).column(
        "sample_key").to_pylist()) if gt_ref is not None and any(_oracle(lab) for lab in stale) else set()
    results: list[UnitResult] = []
    for lab in labs:
        if lab.name not in selected:
            continue
        unit = _labeler_unit(store, dataset, shard, lab, by_label, images_ref, models.get(lab.name), gt_ref)
        err = failures.get(lab.name) or (run_error if lab in stale else None)

        def compute(lab=lab, err=err) -> UnitOutput:
            if err is not None:
                raise err
            if result is None or lab.name not in result.tables:
                raise RuntimeError(f"labeler {lab.name} was not run for this shard")
            tables = {label_artifact(k): v for k, v in result.tables[lab.name].items()}
            stats = {"rows_in": rows_in, "labeled": next(iter(tables.values())).num_rows,
                     "shard_pass_seconds": round(seconds, 3), "labelers_in_pass": len(stale)}
            if _oracle(lab):  # how many of the labels are the scenes' ground truth (the rest: the model's)
                labeled = set(next(iter(tables.values())).column("sample_key").to_pylist())
                stats["from_ground_truth"] = len(labeled & gt_keys)
            # The shared pass did this unit's work: its share of the pass is the unit's duration (status, Prefect).
            return UnitOutput(tables, errors=result.errors[lab.name], stats=stats, seconds=seconds / max(len(stale), 1))

        results.append(run_unit(store, unit, compute, force=force and lab in stale, raise_on_failure=False))
    if any(r.status is UnitStatus.FAILED for r in results):
        raise PseudolabelUnitsFailed(results)
    return results


def _cached(store, dataset, shard, lab, images_ref, model, gt_ref) -> bool:
    deps = []
    for d in lab.active_needs():
        if d in (RGB, CAPTION):
            continue
        ref = store.input_ref(dataset, label_artifact(d), shard)
        if ref is None:
            return False
        deps.append(ref)
    return is_cached(store, _unit(dataset, shard, lab, images_ref, deps, model, gt_ref)) is not None


def _label_ref(store: ArtifactStore, dataset: str, shard: int, label: str) -> InputRef | None:
    """The committed manifest of a needed label (read after its producer committed in this run)."""
    return store.input_ref(dataset, label_artifact(label), shard)


def _input_table(store: ArtifactStore, dataset: str, shard: int, stale: list[Labeler],
                 by_label: dict[str, Labeler], has_gt: bool) -> pa.Table:
    """The images shard plus, for needs made by labelers that are *not* re-run now, their committed columns,
    and, for oracle labelers, the shard's ground-truth columns (``ground_truth.<col>``, null for photos)."""
    # a caption-only pass (e.g. T5) never reads the image bytes: the bulk of the images part, left unread
    wanted = ("sample_key", "image", "caption", "orig_width", "orig_height") if needs_pixels(stale) else \
        ("sample_key", "caption", "orig_width", "orig_height")
    images = store.read_table(dataset, IMAGES, shard, columns=list(wanted), missing_ok=True)
    images = images.append_column("_idx", pa.array(range(images.num_rows), pa.int64()))
    stale_labels = {o for lab in stale for o in lab.outputs}
    needed = {d for lab in stale for d in lab.active_needs() if d not in (RGB, CAPTION)} - stale_labels
    for label in sorted(needed):
        images = _join(images, store.read_table(dataset, label_artifact(label), shard), label)
    if has_gt and any(_oracle(lab) for lab in stale):
        images = _join(images, store.read_table(dataset, GROUND_TRUTH, shard), GROUND_TRUTH)
    return images


def _join(images: pa.Table, dep: pa.Table, prefix: str) -> pa.Table:
    """Append ``dep``'s columns as ``<prefix>.<col>`` aligned on sample_key, plus ``<prefix>.__ok`` (row present)."""
    keys = images.column("sample_key").to_pylist()
    index = {k: i for i, k in enumerate(dep.column("sample_key").to_pylist())}
    rows = [index.get(k) for k in keys]
    take = pa.array([r if r is not None else 0 for r in rows], pa.int64())
    mask = pa.array([r is None for r in rows])
    for name in dep.column_names:
        if name == "sample_key":
            continue
        col = dep.column(name).take(take) if dep.num_rows else pa.nulls(len(keys), dep.schema.field(name).type)
        images = images.append_column(f"{prefix}.{name}", pc.if_else(mask, pa.nulls(len(keys), col.type), col))
    return images.append_column(f"{prefix}.__ok", pa.array([r is not None for r in rows], pa.bool_()))


def _ensure_ray(address: str | None) -> None:
    """Join Ray for the Ray runner: the runtime this process already joined (build-dataset joins its
    ``ray_address`` / ``FOURM_RAY_ADDRESS`` before calling the stage), else ``pseudolabel.ray_address``, else
    ``FOURM_RAY_ADDRESS``, else a local runtime (resolved in one place: :mod:`fourm_core.ray_address`)."""
    resolve_ray_address(address, "pseudolabel.ray_address").join()


def artifacts_for(config: DatasetConfig) -> list[str]:
    """The label artifacts of the dataset's configured labelers, in dependency order."""
    from .registry import labeler_class

    cfg = pseudolabel_config(config)
    plugins = tuple(cfg.plugins)
    return [label_artifact(o) for n in resolve_order(cfg.labelers, plugins) for o in labeler_class(n, plugins).outputs]


def artifact_shards(config: DatasetConfig, artifact: str, shards: list[int]) -> list[int]:
    """Heavy outputs (raw features) exist only on the feature subset; every other label on every shard."""
    from .registry import labeler_class, producers

    cfg = pseudolabel_config(config)
    label = artifact.removeprefix("labels/")
    name = producers(tuple(cfg.plugins)).get(label)
    if name is None or not labeler_class(name, tuple(cfg.plugins)).heavy_output:
        return shards
    return [s for s in shards if cfg.feature_subset.contains(s)]


STAGE = StageSpec(
    name=STAGE_NAME,
    plan_shards=plan_shards,
    run_shard=run_shard,
    artifacts=tuple(label_artifact(label) for labels in BUILTIN_OUTPUTS.values() for label in labels),
    artifacts_for=artifacts_for,
    artifact_shards=artifact_shards,
    # run_shard itself drives Ray (labeler actor pools that live across the run's shards, in this process's
    # registry): the orchestrator calls it in-process (a thread per shard), not as a Ray task.
    heavy=False,
    num_cpus=0.0,
    uses_ray=lambda config: pseudolabel_config(config).runner == "ray",
    shard_units=shard_units,
    after=("ingest",),  # images and ground truth; not dedup (it drops nothing)
    release=release_pools,
)
