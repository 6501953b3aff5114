"""Running units: a lease with a heartbeat while a unit computes; status shows it running, and stale once
its worker is SIGKILLed (the heartbeat stops)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa

from fourm_core import ArtifactStore, Unit, UnitOutput, UnitStatus, lease, run_unit
from fourm_core.lineage import shard_status

REPO = Path(__file__).resolve().parents[2]


def _status(store: ArtifactStore) -> dict:
    rows = shard_status(store, "ls", {"w": ("a",)}, {"w": [0, 1, 2, 3]})
    return {r.shard: r for r in rows}


def test_running_unit_shows_as_running_then_done(store):
    go = threading.Event()

    def compute() -> UnitOutput:
        go.wait(30)
        return UnitOutput({"a": pa.table({"sample_key": ["k"]})})

    unit = Unit(stage="w", dataset="ls", artifacts=["a"], shard=1, code_version="w/1")
    results = []
    worker = threading.Thread(target=lambda: results.append(run_unit(store, unit, compute)))
    worker.start()
    deadline = time.monotonic() + 20
    while _status(store)[1].state != "running":
        assert time.monotonic() < deadline, "the running unit never showed"
        time.sleep(0.05)
    row = _status(store)[1]
    assert f"pid {os.getpid()}" in row.detail and _status(store)[0].state == "missing"
    go.set()
    worker.join(30)
    assert results[0].status is UnitStatus.DONE
    assert _status(store)[1].state == "done" and lease.running(store, "ls", "a") == {}


def test_killed_worker_leaves_a_stale_lease(store_root):
    env = {**os.environ, "PYTHONPATH": str(REPO), "FOURM_LEASE_HEARTBEAT_S": "0.2", "FOURM_LEASE_GRACE_S": "0.3"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.core.lease_worker", store_root], env=env,
                            stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    try:
        assert proc.stdout.readline().strip() == "computing"
        store = ArtifactStore(store_root)
        deadline = time.monotonic() + 20
        while 3 not in (leases := lease.running(store, "ls", "a", now=time.time())):  # written after the grace
            assert time.monotonic() < deadline, "the lease was never written"
            time.sleep(0.05)
        assert leases[3]["pid"] == proc.pid
        time.sleep(0.5)  # a few heartbeats
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    later = time.time() + lease.STALE_AFTER * 0.2 + 1.0  # as seen after the heartbeats stopped
    old = lease.HEARTBEAT_S
    try:
        lease.HEARTBEAT_S = 0.2
        assert lease.running(store, "ls", "a", now=later)[3]["state"] == "stale"
    finally:
        lease.HEARTBEAT_S = old


def test_one_heartbeat_thread_beats_every_held_lease_and_none_after_its_unit_ends(store, monkeypatch):
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.1)  # stale after 0.3 s: a loaded box's stall stays within it
    monkeypatch.setattr(lease, "GRACE_S", 0)  # written on entry
    beat = lease._Heartbeat()  # a fresh one: its thread reads the short heartbeat
    monkeypatch.setattr(lease, "_HEARTBEAT", beat)
    beats_before = [t.name for t in threading.enumerate()].count("fourm-lease")
    with lease.held(store, "ls", ["a"], 1, {"unit": "one"}), lease.held(store, "ls", ["a", "b"], 2, {"unit": "two"}):
        first = {p: v["heartbeat"] for p, v in lease.running(store, "ls", "a").items()}
        time.sleep(0.5)
        later = lease.running(store, "ls", "a")
        assert set(later) == {1, 2} and all(later[p]["heartbeat"] > first[p] for p in (1, 2))  # both rewritten
        assert lease.running(store, "ls", "b")[2]["state"] == "running"
        assert [t.name for t in threading.enumerate()].count("fourm-lease") == beats_before + 1  # one for all
    time.sleep(0.3)  # heartbeats after the units ended must not bring their leases back
    assert lease.running(store, "ls", "a") == {} and lease.running(store, "ls", "b") == {}


def test_a_unit_done_within_the_grace_writes_no_lease_and_a_longer_one_does(store, monkeypatch):
    monkeypatch.setattr(lease, "GRACE_S", 1.0)  # long enough that a stall on a loaded box stays within it
    beat = lease._Heartbeat()  # a fresh one, so no other test's leases share its thread
    monkeypatch.setattr(lease, "_HEARTBEAT", beat)
    leases = Path(lease.lease_dir(store, "ls", "a"))
    done = run_unit(store, Unit(stage="w", dataset="ls", artifacts=["a"], shard=0, code_version="w/1"),
                    lambda: UnitOutput({"a": pa.table({"sample_key": ["k"]})}))
    assert done.status is UnitStatus.DONE
    time.sleep(1.2)  # past the grace: the heartbeat thread must not write the finished unit's lease
    assert not leases.exists(), "a unit done within the grace wrote a lease file"
    with lease.held(store, "ls", ["a"], 1, {"unit": "slow"}):
        assert lease.running(store, "ls", "a") == {}  # still within the grace
        deadline = time.monotonic() + 20
        while 1 not in lease.running(store, "ls", "a"):
            assert time.monotonic() < deadline, "the lease of a unit running past the grace never showed"
            time.sleep(0.05)
    assert lease.running(store, "ls", "a") == {}


def test_a_heartbeat_that_lands_after_its_unit_ended_writes_nothing(store):
    """The heartbeat thread picks the due leases, then writes them outside its lock; a unit that ends in between
    must not have its lease written back after it was removed (it would show as stale forever)."""
    held = lease._Lease(store, [lease.lease_path(store, "ls", "a", 5)], {"unit": "x"})
    held.write()  # a heartbeat while the unit runs
    assert 5 in lease.running(store, "ls", "a")
    held.drop()  # the unit ends
    held.write()  # the heartbeat thread's late write, picked before the drop
    assert lease.running(store, "ls", "a") == {}
