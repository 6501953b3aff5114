"""Fixtures of the pseudolabel tests: committed test image shards."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

PLUGIN = "tests.pseudolabel.plugins:FaultyLabeler"


@pytest.fixture
def images_store(store):
    """A store with two committed `images` shards of 4 samples (skimage photos + synthetic shapes)."""
    from pseudolabel.testing import commit_images, demo_samples

    commit_images(store, "demo", 0, demo_samples(0, 4, size=96))
    commit_images(store, "demo", 1, demo_samples(1, 4, size=96, photos=False))
    return store


def dataset_config(**pseudolabel):
    from fourm_core import DatasetConfig

    return DatasetConfig(name="demo", sources=[{"kind": "synthetic"}], pseudolabel=pseudolabel)


# ray_session: the one Ray runtime of the test session lives in tests/conftest.py.


@pytest.fixture(autouse=True)
def _free_labeler_actors():
    """Labeler actor pools outlive a shard by design; a test's pools end with the test (they hold CPUs)."""
    yield
    from pseudolabel.actor_pool import release_pools

    release_pools()
