"""Per-shard overhead of the commit protocol, on a local store and on S3 (SeaweedFS on 127.0.0.1).

For each store: write N shards of the same small table (a) bare: serialise to Parquet and put the bytes
at the final path in one write; (b) through ``run_unit``: cache check, data to a temporary name then the
final name (local) or one PUT (S3), the errors table, the manifest last, failure-record clean-up;
(c) ``run_unit`` again on committed shards (the cached path: one manifest read). Prints ms per shard and, on
S3, the requests one ``run_unit`` commit sends, by API call (counted at s3fs's ``_call_s3``).

    PYTHONPATH=. python bench/bench_commit.py [--shards 40] [--rows 1000] [--no-s3]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from fourm_core import ArtifactStore, Unit, UnitOutput, UnitStatus, run_unit
from fourm_core.store import table_to_parquet_bytes


def make_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({"sample_key": [f"k{i:08d}" for i in range(rows)],
                     "value": rng.standard_normal(rows).astype(np.float32),
                     "caption": [f"a caption of sample {i}" for i in range(rows)]})


def timed(n: int, fn: Callable[[int], Any]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def bench_store(label: str, store: ArtifactStore, table: pa.Table, shards: int) -> dict[str, float]:
    def bare(i: int) -> None:
        path = store.data_path("bench", "bare", i)
        if store.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        store.fs.pipe_file(path, table_to_parquet_bytes(table))

    def unit(i: int) -> Unit:
        return Unit(stage="bench", dataset="bench", artifacts=["committed"], shard=i, code_version="1",
                    config={"rows": table.num_rows})

    def committed(i: int) -> None:
        assert run_unit(store, unit(i), lambda: UnitOutput({"committed": table})).status is UnitStatus.DONE

    def cached(i: int) -> None:
        assert run_unit(store, unit(i), lambda: UnitOutput({"committed": table})).status is UnitStatus.CACHED

    def atomic(i: int) -> None:  # the store's own single-file write (local: temp name, fsync, rename)
        store.write_bytes(store.data_path("bench", "atomic", i), table_to_parquet_bytes(table))

    committed(shards + 1)  # warm-up: imports, git commit lookup, connection pool
    bare(shards + 1)
    res = {"bare": statistics.median(timed(shards, bare)), "atomic": statistics.median(timed(shards, atomic)),
           "commit": statistics.median(timed(shards, committed)), "cached": statistics.median(timed(shards, cached))}
    res["overhead"] = res["commit"] - res["bare"]
    print(f"{label:<6} bare write {res['bare']:7.2f} ms | one atomic write {res['atomic']:7.2f} ms | "
          f"run_unit commit {res['commit']:7.2f} ms | overhead {res['overhead']:+7.2f} ms "
          f"({res['commit'] / res['bare']:.1f}x) | cached re-run {res['cached']:6.2f} ms   (median per shard)")
    if not store.is_local:
        calls = s3_calls(store, lambda: committed(2 * shards + 2))
        print(f"{'':<6} S3 requests of one run_unit commit: {sum(calls.values())} "
              f"({', '.join(f'{n} {m}' for m, n in sorted(calls.items()))})")
    return res


def s3_calls(store: ArtifactStore, fn: Callable[[], Any]) -> collections.Counter:
    """The S3 API calls ``fn`` sends through the store's s3fs filesystem, by method name."""
    fs, calls = store.fs, collections.Counter()
    original = fs._call_s3

    async def counted(method, *args, **kwargs):
        calls[method] += 1
        return await original(method, *args, **kwargs)

    fs._call_s3 = counted
    try:
        fn()
    finally:
        del fs._call_s3  # the instance attribute shadowed the class's method
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=40)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args()
    table = make_table(args.rows)
    size = len(table_to_parquet_bytes(table))
    print(f"{args.shards} shards of {args.rows} rows ({size / 1024:.1f} KiB Parquet each)")
    with tempfile.TemporaryDirectory() as tmp:
        bench_store("local", ArtifactStore(str(Path(tmp) / "store")), table, args.shards)
        if not args.no_s3:
            from tests.servers import kill, start_seaweedfs  # a real S3 server on loopback

            server = start_seaweedfs(Path(tmp) / "s3")
            try:
                bench_store("s3", ArtifactStore(f"s3://{server.bucket}/bench", server.storage_options), table,
                            args.shards)
            finally:
                kill(server.proc)


if __name__ == "__main__":
    main()
