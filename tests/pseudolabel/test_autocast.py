"""``autocast: bf16``: the model labelers run under bfloat16 autocast, labels stay close, the cache key says so."""

import numpy as np
import pytest

from pseudolabel.registry import labeler_class
from pseudolabel.spec import Batch
from pseudolabel.testing import photo, synthetic_image

MODEL_LABELERS = ["depth", "normals", "semseg", "clip", "dinov2", "imagebind", "t5"]
FEATURES = {"clip": ("clip_features", "features"), "dinov2": ("dinov2_features", "features"),
            "imagebind": ("imagebind_features", "features"), "t5": ("t5_caption", "embedding"),
            "depth": ("depth", "depth")}


@pytest.fixture(scope="module")
def batch():
    return Batch(["a", "b"], [photo("chelsea", 64), synthetic_image(3, 48)], ["A cat on a rug.", "Two shapes."])


def _labeler(name: str, autocast: str):
    cls = labeler_class(name)
    lab = cls(cls.Settings(model="tiny", device="cpu", autocast=autocast), available=frozenset(cls.needs))
    lab.use_model(lab.seeded_tiny())
    return lab


@pytest.mark.parametrize("name", MODEL_LABELERS)
def test_bf16_is_part_of_the_cache_key_and_off_keeps_the_old_key(name):
    cls = labeler_class(name)
    off, bf16 = (cls(cls.Settings(model="tiny", autocast=a), available=frozenset(cls.needs)).config_for_key()
                 for a in ("off", "bf16"))
    assert "autocast" not in off  # the keys of every dataset labelled before the setting existed
    assert bf16 == off | {"autocast": "bf16"}


@pytest.mark.parametrize("name", MODEL_LABELERS)
def test_bf16_labels_have_the_fp32_layout_and_stay_close(name, batch):
    fp32 = _labeler(name, "off").label_batch(batch)
    bf16 = _labeler(name, "bf16").label_batch(batch)
    for a, b in zip(fp32, bf16):
        assert a.keys() == b.keys()
        for label in a:
            assert a[label].keys() == b[label].keys()
            for col, v in a[label].items():
                assert type(v) is type(b[label][col]) and (not isinstance(v, int) or v == b[label][col])
    if name in FEATURES:
        label, col = FEATURES[name]
        for a, b in zip(fp32, bf16):
            x = np.frombuffer(a[label][col], "<f2").astype(np.float64)
            y = np.frombuffer(b[label][col], "<f2").astype(np.float64)
            assert x.shape == y.shape and not np.array_equal(x, y)  # bf16 did run
            cos = x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
            assert cos > 0.99, f"{name}: cosine {cos:.4f} between fp32 and bf16 labels"


@pytest.mark.parametrize("name", ["sam", "detection", "human_poses"])
def test_labelers_without_a_bf16_path_refuse_it_by_name(name):
    cls = labeler_class(name)
    with pytest.raises(ValueError, match=f"remove `autocast: bf16` from pseudolabel.settings.{name}"):
        cls(cls.Settings(autocast="bf16"))
    cls(cls.Settings())  # the default stays accepted
