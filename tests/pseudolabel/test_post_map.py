"""Per-image post-processing spread over the actor's threads (``ModelLabeler.post_map``): same rows, same order."""

import threading

import numpy as np
import pytest
import torch

from pseudolabel.labelers.depth import DepthLabeler
from pseudolabel.labelers.normals import NormalsLabeler
from pseudolabel.labelers.semseg import SemsegLabeler
from pseudolabel.spec import Batch


@pytest.fixture
def four_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def test_post_map_keeps_order_and_uses_the_actors_threads(four_threads):
    seen = set()

    def work(i: int) -> int:
        seen.add(threading.current_thread().name)
        return i * i

    assert DepthLabeler().post_map(work, range(64)) == [i * i for i in range(64)]
    assert any(name.startswith("labeler-post") for name in seen)


def test_post_map_runs_in_the_caller_on_one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        names = DepthLabeler().post_map(lambda _: threading.current_thread().name, range(3))
    finally:
        torch.set_num_threads(before)
    assert set(names) == {threading.current_thread().name}


@pytest.mark.parametrize("cls", [DepthLabeler, NormalsLabeler, SemsegLabeler])
def test_rows_are_the_same_with_the_pool_and_with_a_loop(cls, four_threads):
    rng = np.random.default_rng(0)
    shapes = [(64, 85), (85, 64), (64, 64), (50, 125), (64, 85)]  # mixed sizes and orientations in one batch
    imgs = [np.clip(rng.normal(128, 60, (*s, 3)), 0, 255).astype(np.uint8) for s in shapes]
    batch = Batch(keys=[str(i) for i in range(len(imgs))], rgb=imgs, captions=[None] * len(imgs))
    lab = cls()
    lab.use_model(lab.seeded_tiny())
    pooled = lab.label_batch(batch)
    lab.post_map = lambda fn, items: [fn(x) for x in items]
    assert lab.label_batch(batch) == pooled
    assert [(r[cls.outputs[0]]["height"], r[cls.outputs[0]]["width"]) for r in pooled] == shapes


def test_one_pool_per_thread_count_whatever_the_batch_size(four_threads):
    from pseudolabel.labelers import model_base

    before = set(model_base._POOLS)
    lab = DepthLabeler()
    for n in (2, 3, 64, 5):  # a shard's short last batch must not start another pool
        lab.post_map(lambda x: x, range(n))
    assert 4 in model_base._POOLS and set(model_base._POOLS) - before <= {4}
