"""Leases of running units: what ``status`` shows as running, and as stale when the worker died.

While ``run_unit`` computes a unit it keeps ``<root>/<dataset>/_index/<artifact>/leases/<part>.json`` per
artifact (host, pid, flow run, start time, heartbeat), rewritten every ``HEARTBEAT_S`` by a daemon thread
and removed when the unit commits or fails. ``status`` lists the (few) leases: a heartbeat younger than
``STALE_AFTER`` heartbeats is ``running``; an older one is ``stale`` (the worker was killed or lost: the
unit will be redone by the next run, its lease overwritten). Leases are advisory: nothing waits on them.
"""

from __future__ import annotations

import json
import os
import posixpath
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from .index import index_dir

if TYPE_CHECKING:
    from .store import ArtifactStore

HEARTBEAT_S = float(os.environ.get("FOURM_LEASE_HEARTBEAT_S", "30"))
STALE_AFTER = 3  # heartbeats missed before a lease counts as stale


def lease_dir(store: "ArtifactStore", dataset: str, artifact: str) -> str:
    return posixpath.join(index_dir(store, dataset, artifact), "leases")


def _name(part: int | None) -> str:
    return "whole.json" if part is None else f"{part:05d}.json"


@contextmanager
def held(store: "ArtifactStore", dataset: str, artifacts: list[str], part: int | None,
         info: dict[str, Any]) -> Iterator[None]:
    """Hold the leases of one unit's artifacts while the block runs (heartbeat thread; removed at the end)."""
    started = time.time()
    paths = [posixpath.join(lease_dir(store, dataset, a), _name(part)) for a in artifacts]

    def write() -> None:
        body = json.dumps({**info, "pid": os.getpid(), "started": started, "heartbeat": time.time()}).encode()
        for p in paths:
            store.write_bytes(p, body, durable=False)  # advisory: a lost lease only hides a running unit

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                write()
            except Exception:  # noqa: BLE001 - a missed heartbeat only makes the unit look stale
                pass

    try:
        write()
    except Exception:  # noqa: BLE001 - leases are advisory; the unit still runs
        yield
        return
    thread = threading.Thread(target=beat, name="fourm-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        for p in paths:
            store.remove(p)


def running(store: "ArtifactStore", dataset: str, artifact: str, now: float | None = None) -> dict[int | None, dict]:
    """part -> lease (with ``state`` running | stale and ``age_s`` since the last heartbeat), from one listing."""
    now = time.time() if now is None else now
    d = lease_dir(store, dataset, artifact)
    try:
        names = [posixpath.basename(p) for p in store.fs.ls(d, detail=False, refresh=True)]
    except FileNotFoundError:
        return {}
    out: dict[int | None, dict] = {}
    for n in names:
        if not n.endswith(".json"):
            continue
        try:
            lease = json.loads(store.read_bytes(posixpath.join(d, n)))
        except (FileNotFoundError, ValueError):  # finished meanwhile, or half-written on a local disk
            continue
        age = now - float(lease.get("heartbeat", 0))
        lease["age_s"] = age
        lease["state"] = "running" if age <= STALE_AFTER * HEARTBEAT_S else "stale"
        out[None if n == "whole.json" else int(n[:5])] = lease
    return out
