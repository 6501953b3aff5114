"""The control plane at scale: ``status``, a fully-cached re-run's planning + cached check, and ``lineage``
of one token shard, on a synthetic store of N shards x 30 artifacts, on local disk and on S3 (SeaweedFS
on 127.0.0.1, tests/servers.py).

The synthetic dataset has three stages with the real stages' shape (``StageSpec`` with ``plan_shards`` and
``shard_units``): ``images`` (1 unit per shard), 19 ``labels/lNN`` (inputs: the images part) and 10
``tokens/tNN`` (inputs: one label part each) — 30 committed units per shard, cache keys computed by
``Unit.ingredients()`` exactly as ``run_unit`` does, so a re-run finds every unit cached.

The store is written as the commit protocol plus one compaction leave it: every artifact's index
snapshot, every part's data file and manifest, and a fully-cached run record. ``old status`` extrapolates
the pre-index cost (one manifest GET per unit) from timed GETs of real manifests.

Building the S3 store: through the S3 gateway SeaweedFS takes ~200 PUT/s here (1.7 ms of its CPU per PUT), so
10 000 shards = 600 000 objects took over an hour. The build therefore writes the objects through SeaweedFS's
filer HTTP API (``/buckets/<bucket>/<key>`` is the same object S3 serves) from many connections, with a server
started with ``-filer.saveToFilerLimit`` (small objects kept in the filer's store, no volume-server hop):
~1 000 objects/s on the loaded 2-core box. The measurements then run against a fresh server on the same data
started exactly as the tests start it, through S3 only.

    PYTHONPATH=. python bench/bench_control_plane.py [--shards 1000 3000 10000] [--s3-shards 1000 3000]
        [--no-s3] [--no-local] [--workdir DIR]

``--workdir DIR`` keeps the built stores (local folders and the S3 server's data) there, and a later run with
the same ``DIR`` measures them again without rebuilding (a marker object records a finished build).

Each line printed gives the load average, wall seconds and this process's CPU seconds (the load-independent
part on a shared box); on S3 also the server's CPU seconds during the re-run (its size listings: SeaweedFS
spends ~25-45 us of CPU per listed key, on the same two cores). Figures at 1 000 / 3 000 / 10 000 shards, and where the time goes: docs/operations.md.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import tempfile
import threading
import time
import urllib.parse
from contextlib import nullcontext
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from fourm_core import index as ix
from fourm_core.config import DatasetConfig
from fourm_core.manifest import FileEntry, Manifest, Timings
from fourm_core.stage import StageSpec
from fourm_core.store import ArtifactStore, table_to_parquet_bytes
from fourm_core.units import Unit

DATASET = "cp"
IMAGES = "images"
LABELS = [f"labels/l{i:02d}" for i in range(1, 20)]
TOKENS = [f"tokens/t{i:02d}" for i in range(1, 11)]


# ------------------------------------------------------------------------------ the synthetic stages

def _n_shards(config: DatasetConfig) -> int:
    return config.sources[0].n_samples  # one shard per "sample" of the synthetic source


def _images_units(store: ArtifactStore, config: DatasetConfig, shard: int) -> list[Unit]:
    return [Unit(stage="synth-ingest", dataset=config.name, artifacts=[IMAGES], shard=shard, code_version="si/1",
                 config={"shard_size": 1000, "slice": [shard * 1000, shard * 1000 + 1000]})]


def _label_units(store: ArtifactStore, config: DatasetConfig, shard: int) -> list[Unit]:
    ref = store.input_ref(config.name, IMAGES, shard)  # as the real stages name their inputs
    assert ref is not None
    return [Unit(stage="synth-label", dataset=config.name, artifacts=[a], shard=shard, code_version=f"{a}/1",
                 config={"labeler": a, "batch_size": 32}, inputs=[ref]) for a in LABELS]


def _token_units(store: ArtifactStore, config: DatasetConfig, shard: int) -> list[Unit]:
    out = []
    for label, token in zip(LABELS, TOKENS):
        ref = store.input_ref(config.name, label, shard)
        assert ref is not None
        out.append(Unit(stage="synth-tokenize", dataset=config.name, artifacts=[token], shard=shard,
                        code_version="st/1", config={"modality": token, "crops": {"n": 1}}, inputs=[ref]))
    return out


def _no_run(*args: Any, **kwargs: Any) -> list:
    raise AssertionError("the benchmark re-run must find every unit cached")


STAGES = [
    StageSpec(name="synth-ingest", plan_shards=lambda store, config: list(range(_n_shards(config))),
              run_shard=_no_run, artifacts=(IMAGES,), shard_units=_images_units),
    StageSpec(name="synth-label", plan_shards=lambda store, config: store.committed_shards(config.name, IMAGES),
              run_shard=_no_run, artifacts=tuple(LABELS), shard_units=_label_units),
    StageSpec(name="synth-tokenize", plan_shards=lambda store, config: store.committed_shards(config.name, LABELS[0]),
              run_shard=_no_run, artifacts=tuple(TOKENS), shard_units=_token_units),
]


def _config(n: int) -> DatasetConfig:
    return DatasetConfig.model_validate({"name": DATASET, "sources": [{"kind": "synthetic", "n_samples": n}]})


# ------------------------------------------------------------------------------------- the store

def _data(shard: int) -> bytes:
    return table_to_parquet_bytes(pa.table({"sample_key": [f"s{shard}-{i}" for i in range(4)], "v": [1, 2, 3, 4]}))


BUILT = "_bench/built.json"  # written last by build_store: the store at this root is complete


class FilerWriter:
    """PUTs objects through a SeaweedFS filer's HTTP API, one keep-alive connection per thread (the bulk build's
    fast path; see the module docstring). ``path`` is the store's ``bucket/key`` path."""

    def __init__(self, filer_url: str):
        url = urllib.parse.urlsplit(filer_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.local = threading.local()

    def put(self, path: str, data: bytes) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        conn.request("PUT", "/buckets/" + urllib.parse.quote(path), body=data)
        response = conn.getresponse()
        body = response.read()
        if response.status not in (200, 201):
            raise OSError(f"filer PUT {path}: HTTP {response.status} {body[:200]!r}")


def build_store(root: str, options: dict | None, n: int, manifest_shards: int,
                filer_url: str = "") -> dict[str, float]:
    """Write the synthetic store: every artifact's index snapshot, and data + manifest files of the first
    ``manifest_shards`` shards. Returns timings of the build (zeros when a finished build is already there).
    On S3, ``filer_url`` (SeaweedFS's filer) takes the bulk writes instead of the S3 gateway.

    Shard by shard, writing as it goes: memory holds only the snapshot rows (one manifest JSON per unit), not
    every file and parsed manifest of the store (10 000 shards did not fit a shared 24 GB box that way)."""
    store = ArtifactStore(root, options)
    marker = store.path(DATASET, BUILT)
    if store.exists(marker):
        return {"generate_s": 0.0, "write_s": 0.0, **json.loads(store.read_bytes(marker))}
    cfg = _config(n)
    t0 = time.perf_counter()
    now = datetime.now(timezone.utc)
    snapshots: dict[str, list[ix.PartEntry]] = {}
    upstream: dict[str, Manifest] = {}  # this shard's manifests, for the next stage's units

    class Lookup(ArtifactStore):  # the synthetic stages' units read upstream manifests from memory here
        def read_manifest(self, dataset: str, artifact: str, shard: int | None) -> Manifest | None:
            return upstream.get(artifact)

    filer = FilerWriter(filer_url) if filer_url and not store.is_local else None

    def write(files: list[tuple[str, bytes]]) -> None:
        for path, data in files:
            if store.is_local:  # no fsync per file: a benchmark fixture, not a commit
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_bytes(data)
            elif filer is not None:
                filer.put(path, data)
            else:
                store.write_bytes(path, data)

    lookup = Lookup(root, options)
    objects = 0
    pending: set = set()
    with ThreadPoolExecutor(4 if store.is_local else 16) as pool:
        for shard in range(n):
            data = _data(shard)
            digest = hashlib.sha256(data).hexdigest()
            upstream.clear()
            files: list[tuple[str, bytes]] = []
            for spec in STAGES:
                for unit in spec.shard_units(lookup, cfg, shard):  # type: ignore[misc]
                    artifact = unit.artifacts[0]
                    ing = unit.ingredients()
                    data_path = store.data_path(DATASET, artifact, shard)
                    m = Manifest(dataset=DATASET, artifact=artifact, shard=shard, uri=store.uri(data_path),
                                 digest=digest, files=[FileEntry(name=Path(data_path).name, digest=digest, bytes=len(data))],
                                 rows=4, schema={"sample_key": "string", "v": "int64"}, cache_key=ing.cache_key(),
                                 ingredients=ing, timings=Timings(started=now, finished=now, seconds=1.5), host="bench")
                    upstream[artifact] = m
                    text = m.to_json()
                    snapshots.setdefault(artifact, []).append(ix.PartEntry(
                        part=shard, has_manifest=True, cache_key=m.cache_key, digest=digest, rows=m.rows,
                        seconds=m.timings.seconds, stage=ing.stage, data_bytes=len(data), uri=m.uri, _json=text))
                    if shard < manifest_shards:
                        files += [(data_path, data), (store.manifest_path(DATASET, artifact, shard), text.encode())]
            objects += len(files)
            pending.add(pool.submit(write, files))
            if len(pending) >= 64:  # bounded: the writes keep up with the generation, memory stays flat
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    f.result()
        for f in pending:
            f.result()
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    files = []
    watermark = ix.now_us() - ix.MARGIN_US
    for artifact, entries in snapshots.items():
        files += ix.snapshot_files(store, DATASET, artifact, entries, watermark)
    # the record a fully-cached run writes (cached units compactly)
    record = {"dataset": DATASET, "stages": [s.name for s in STAGES], "plan": {s.name: list(range(n)) for s in STAGES},
              "stage_artifacts": {s.name: list(s.artifacts) for s in STAGES}, "units": [],
              "cached": {a: list(range(n)) for a in [IMAGES, *LABELS, *TOKENS]}, "finished": now.isoformat()}
    files.append((store.path(DATASET, "_runs", "00000000T000000-bench.json"), json.dumps(record).encode()))
    write(files)
    objects += len(files)
    store.write_bytes(marker, json.dumps({"objects": objects}).encode())
    return {"generate_s": t_gen, "write_s": time.perf_counter() - t1, "objects": objects}


# --------------------------------------------------------------------------------- measurements

CPU: dict[str, float] = {}  # this process's CPU seconds per measurement (load-independent on a shared box)


def _timed(fn, name: str = "") -> tuple[float, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if name:
        CPU[name] = time.process_time() - c0
    return time.perf_counter() - t0, out


def proc_cpu(pid: int | str | None) -> float:
    """CPU seconds (user + system) of process ``pid`` so far (0 when there is none or it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, TypeError):
        return 0.0


def measure(root: str, options: dict | None, n: int, manifest_shards: int,
            server_pid: int | None = None) -> dict[str, Any]:
    """The timings of one store; ``server_pid`` (the S3 server): its CPU seconds during the re-run are reported
    too (on this box the server's listing work and this process's unit building share the same two cores)."""
    from pipelines.ops import dataset_status, lineage_text
    from pipelines.planning import split_cached
    from pipelines.report import status_counts, status_table

    def status() -> int:
        rows, _ = dataset_status(ArtifactStore(root, options, use_index=True), DATASET)
        status_table(rows)
        status_counts(rows)
        return len(rows)

    def rerun_check() -> int:
        cfg = _config(n)
        cached_units = 0
        for spec in STAGES:
            store = ArtifactStore(root, options, use_index=True)  # as plan_job and the flow make theirs
            planned = spec.plan_shards(store, cfg)
            cached, to_run = split_cached(store, spec, cfg, list(planned), force=False)
            assert not to_run and len(planned) == n, (spec.name, len(planned), to_run[:5])
            cached_units += len(cached)
        return cached_units

    store = ArtifactStore(root, options)
    token_part = store.uri(store.data_path(DATASET, TOKENS[0], 0))
    out: dict[str, Any] = {}
    out["status_s"], rows = _timed(status, "status")
    assert rows == 30 * n, rows
    server_cpu = proc_cpu(server_pid)
    out["rerun_plan_and_cached_check_s"], units = _timed(rerun_check, "rerun")
    CPU["rerun_server"] = proc_cpu(server_pid) - server_cpu
    assert units == 30 * n, units
    out["lineage_s"], text = _timed(lambda: lineage_text(token_part, None, options))
    assert "images shard 0" in text, text
    # the pre-index cost: one manifest GET per unit (what status and the cached check each did)
    k = min(manifest_shards, 20)
    paths = [store.manifest_path(DATASET, a, s) for s in range(k) for a in [IMAGES, *LABELS, *TOKENS]]
    t, _ = _timed(lambda: [store.read_bytes(p) for p in paths])
    out["old_status_extrapolated_s"] = t / len(paths) * 30 * n
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, nargs="+", default=[1000, 3000, 10000], help="local-disk sizes")
    p.add_argument("--s3-shards", type=int, nargs="+", default=[1000, 3000, 10000], help="S3 sizes")
    p.add_argument("--no-s3", action="store_true")
    p.add_argument("--no-local", action="store_true")
    p.add_argument("--workdir", type=Path, help="keep the built stores here and reuse them on the next run")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() if args.workdir is None else nullcontext(str(args.workdir)) as tmp:
        if not args.no_local:
            for n in args.shards:
                root = str(Path(tmp) / f"local-{n}")
                build = build_store(root, None, n, n)
                results.append(("local", n, build, measure(root, None, n, n)))
                print(_line(*results[-1]), flush=True)
        if not args.no_s3:
            from tests.servers import kill, start_seaweedfs

            builds = {}
            server = start_seaweedfs(Path(tmp) / "s3", extra_args=("-filer.saveToFilerLimit=65536",))
            try:  # build (or find built) every size first, on the build server
                for n in args.s3_shards:
                    builds[n] = build_store(f"s3://{server.bucket}/cp-{n}", server.storage_options, n, n, server.filer_url)
                    print(f"[load {os.getloadavg()[0]:.1f}] s3 {n} shards built: {builds[n]}", flush=True)
            finally:
                kill(server.proc)
            server = start_seaweedfs(Path(tmp) / "s3")  # the same data, served as the tests' server serves it
            try:
                for n in args.s3_shards:
                    root = f"s3://{server.bucket}/cp-{n}"
                    results.append(("s3", n, builds[n], measure(root, server.storage_options, n, n, server.proc.pid)))
                    print(_line(*results[-1]), flush=True)
            finally:
                kill(server.proc)


def _line(where: str, n: int, build: dict, m: dict) -> str:
    server = f", S3 server cpu {CPU['rerun_server']:.2f}" if where == "s3" else ""
    return (f"[load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores] {where:5s} {n:6d} shards ({30 * n:7d} units): "
            f"status {m['status_s']:6.2f} s (cpu {CPU['status']:.2f}) | re-run plan + cached check "
            f"{m['rerun_plan_and_cached_check_s']:6.2f} s (cpu {CPU['rerun']:.2f}{server}) | lineage {m['lineage_s']:5.2f} s | old status "
            f"(1 GET/unit, extrapolated) {m['old_status_extrapolated_s']:7.1f} s | built in "
            f"{build['generate_s']:.0f} s (shards) + {build['write_s']:.0f} s (snapshots), {build['objects']} objects")


if __name__ == "__main__":
    main()
