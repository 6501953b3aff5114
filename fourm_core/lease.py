"""Leases of running units: what ``status`` shows as running, and as stale when the worker died.

While ``run_unit`` computes a unit it keeps ``<root>/<dataset>/_index/<artifact>/leases/<part>.json`` per
artifact (host, pid, flow run, start time, heartbeat), rewritten every ``HEARTBEAT_S`` by the process's
heartbeat thread (one daemon thread for every lease the process holds) and removed when the unit commits
or fails. ``status`` lists the (few) leases: a heartbeat younger than ``STALE_AFTER`` heartbeats is
``running``; an older one is ``stale`` (the worker was killed or lost: the unit will be redone by the next
run, its lease overwritten). Leases are advisory: nothing waits on them.

A lease is first written ``GRACE_S`` after its unit starts, by the heartbeat thread: a unit done sooner (a
small shard's labels, most cached-input units) writes and removes no lease file at all. That was one file
created, renamed and deleted per unit (two requests on S3), a third of a small unit's store operations; on
ext4 without a journal each deletion also slows every file created after it for a minute (the inode
allocator skips recently deleted inodes one by one). The price: a worker killed within ``GRACE_S`` of a
unit's start leaves no stale lease, so ``status`` shows that unit as missing, not stale; the next run
redoes it either way.
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
GRACE_S = float(os.environ.get("FOURM_LEASE_GRACE_S", "2"))  # a unit's age when its lease is first written


def lease_dir(store: "ArtifactStore", dataset: str, artifact: str) -> str:
    return posixpath.join(index_dir(store, dataset, artifact), "leases")


def lease_path(store: "ArtifactStore", dataset: str, artifact: str, part: int | None) -> str:
    """Where the lease of one unit's artifact lives: ``<lease_dir>/<part:05d>.json``, ``whole.json`` unpartitioned."""
    return posixpath.join(lease_dir(store, dataset, artifact), "whole.json" if part is None else f"{part:05d}.json")


class _Lease:
    """One unit's lease files; ``write`` and ``drop`` exclude each other, so no heartbeat lands after the drop."""

    def __init__(self, store: "ArtifactStore", paths: list[str], info: dict[str, Any]):
        self.store, self.paths, self.info = store, paths, info
        self.started = time.time()
        self.due = time.monotonic()  # when the heartbeat thread writes it next
        self.lock = threading.Lock()
        self.live = True
        self.written = False

    def write(self) -> None:
        with self.lock:
            if not self.live:
                return
            self.written = True  # before the write: a write that fails half-way may still have left a file
            body = json.dumps({**self.info, "pid": os.getpid(), "started": self.started,
                               "heartbeat": time.time()}).encode()
            for p in self.paths:
                self.store.write_bytes(p, body, durable=False)  # advisory: a lost lease only hides a running unit

    def drop(self) -> None:
        with self.lock:
            self.live = False
            written = self.written
        if written:  # a unit done within the grace never wrote its lease: nothing to remove
            for p in self.paths:
                self.store.remove(p)


class _Heartbeat:
    """The process's one heartbeat thread: it writes each held lease when it is due, ``GRACE_S`` after its unit
    started, then every ``HEARTBEAT_S``. A thread per unit cost a start and a join per unit (~0.3 ms CPU, next
    to a few ms of commit for a small shard). Started on first use; a forked child starts its own (the parent's
    thread and leases are not the child's). Leases are written one after another: a slow store delays the
    later ones by the earlier ones' writes, far below ``STALE_AFTER`` heartbeats."""

    def __init__(self) -> None:
        self.forked()

    def forked(self) -> None:
        # in a child: the parent's lock may have been held by a thread absent here
        self.wake = threading.Condition(threading.Lock())
        self.leases: dict[int, _Lease] = {}
        self.started = False

    def add(self, lease: _Lease, delay: float) -> None:
        with self.wake:
            if not self.started:
                threading.Thread(target=self._beat, name="fourm-lease", daemon=True).start()
                self.started = True
            lease.due = time.monotonic() + delay
            self.leases[id(lease)] = lease
            self.wake.notify()  # it may be due before whatever the thread sleeps towards

    def remove(self, lease: _Lease) -> None:
        with self.wake:
            self.leases.pop(id(lease), None)

    def _beat(self) -> None:
        while True:
            with self.wake:
                now = time.monotonic()
                due = [lease for lease in self.leases.values() if lease.due <= now]
                if not due:
                    self.wake.wait(min((lease.due for lease in self.leases.values()), default=now + 3600) - now)
                    continue
                for lease in due:
                    lease.due = now + HEARTBEAT_S  # read each time: tests shorten it
            for lease in due:
                try:
                    lease.write()
                except Exception:  # noqa: BLE001 - a missed heartbeat only makes the unit look stale
                    pass


_HEARTBEAT = _Heartbeat()
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_HEARTBEAT.forked)


@contextmanager
def held(store: "ArtifactStore", dataset: str, artifacts: list[str], part: int | None,
         info: dict[str, Any]) -> Iterator[None]:
    """Hold the leases of one unit's artifacts while the block runs: written ``GRACE_S`` into it and then every
    ``HEARTBEAT_S`` by the process's heartbeat thread (at once when ``GRACE_S`` is 0), removed at the end."""
    lease = _Lease(store, [lease_path(store, dataset, a, part) for a in artifacts], info)
    grace = GRACE_S  # read each time: tests set it to 0
    if grace <= 0:
        try:
            lease.write()
        except Exception:  # noqa: BLE001 - leases are advisory; the unit still runs
            yield
            return
    _HEARTBEAT.add(lease, grace if grace > 0 else HEARTBEAT_S)
    try:
        yield
    finally:
        _HEARTBEAT.remove(lease)
        lease.drop()


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
