"""ArtifactStore.write_files: parallel writes on the process's reused writer threads, all done or it raises."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from fourm_core.store import ArtifactStore


class _Recording(ArtifactStore):
    def __init__(self, root: str, fail: str | None = None):
        super().__init__(root)
        self.threads: set[str] = set()
        self.done: list[str] = []
        self.fail = fail

    def write_bytes(self, path: str, data: bytes) -> None:
        self.threads.add(threading.current_thread().name)
        if path.endswith(self.fail or "\0"):
            raise OSError(f"disk full writing {path}")
        time.sleep(0.02)
        super().write_bytes(path, data)
        self.done.append(path)


def test_all_files_are_written_on_reused_writer_threads(tmp_path):
    store = _Recording(str(tmp_path))
    for call in range(5):
        items = {str(tmp_path / f"c{call}-{i}.bin"): bytes([call, i]) * 100 for i in range(3)}
        store.write_files(items)
        for path, data in items.items():  # every file complete when the call returns
            assert store.read_bytes(path) == data
    assert all(t.startswith(ArtifactStore._WRITER_PREFIX) for t in store.threads)
    assert len(store.threads) <= ArtifactStore.WRITER_THREADS  # the same few threads served all five calls
    assert ArtifactStore._writer_pool() is ArtifactStore._writer_pool()


def test_a_failed_write_raises_after_the_others_finished(tmp_path):
    store = _Recording(str(tmp_path), fail="bad.bin")
    items = {str(tmp_path / n): b"x" for n in ("a.bin", "bad.bin", "b.bin", "c.bin")}
    with pytest.raises(OSError, match="disk full"):
        store.write_files(items)
    assert sorted(p.rsplit("/", 1)[-1] for p in store.done) == ["a.bin", "b.bin", "c.bin"]  # none left in flight


def test_concurrent_and_nested_calls_do_not_deadlock(tmp_path):
    store = _Recording(str(tmp_path))

    def nested() -> None:  # write_files from a writer thread writes in place instead of waiting on the pool
        store.write_files({str(tmp_path / f"n{i}.bin"): b"n" for i in range(3)})

    futures = [ArtifactStore._writer_pool().submit(nested) for _ in range(ArtifactStore.WRITER_THREADS * 2)]
    callers = [threading.Thread(target=store.write_files,
                                args=({str(tmp_path / f"t{k}-{i}.bin"): b"t" for i in range(3)},)) for k in range(6)]
    for t in callers:
        t.start()
    for f in futures:
        f.result(timeout=30)
    for t in callers:
        t.join(30)
        assert not t.is_alive()
    assert len(list(tmp_path.glob("t*.bin"))) == 18


def _child(root: str, q) -> None:
    ArtifactStore(root).write_files({f"{root}/child-{i}.bin": b"c" for i in range(3)})
    q.put(sorted(p.name for p in __import__("pathlib").Path(root).glob("child-*")))


def test_a_forked_child_starts_its_own_writer_threads(tmp_path):
    ArtifactStore(str(tmp_path)).write_files({str(tmp_path / f"p{i}.bin"): b"p" for i in range(2)})  # parent's pool
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(str(tmp_path), q))
    proc.start()
    assert q.get(timeout=60) == ["child-0.bin", "child-1.bin", "child-2.bin"]
    proc.join(30)
    assert proc.exitcode == 0
