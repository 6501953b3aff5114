"""Canny, palette and metadata values against hand-computed cases."""

import numpy as np
import pytest

from pseudolabel.codecs import png_decode
from pseudolabel.labelers import meta_providers as mp
from pseudolabel.labelers.canny import CannyLabeler, CannySettings, canny_edges
from pseudolabel.labelers.palette import PaletteSettings, pack, palettes, unpack
from pseudolabel.spec import Batch


def test_canny_step_edge_and_flat_image():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 255  # a vertical step: grey gradient 4*255 at columns 15/16, far above 200
    e = canny_edges(img, CannySettings())
    cols = np.nonzero(e.any(axis=0))[0]
    assert set(cols) <= {15, 16} and e[:, cols[0]].sum() > 0
    assert e[2:-2, cols[0]].all()  # one continuous vertical edge line
    assert canny_edges(np.full((32, 32, 3), 77, np.uint8), CannySettings()).max() == 0
    # a weak step (10 grey levels -> Sobel magnitude 40) is below the low threshold 100, above 30
    weak = np.zeros((32, 32, 3), np.uint8)
    weak[:, 16:] = 10
    assert canny_edges(weak, CannySettings()).max() == 0
    assert canny_edges(weak, CannySettings(low=20, high=30)).max() == 255
    out = CannyLabeler().label_batch(Batch(["k"], [img], [None]))[0]["canny_edge"]
    assert (png_decode(out["edges"]) == e).all() and out["height"] == 32
    assert out["edge_fraction"] == pytest.approx((e > 0).mean())
    with pytest.raises(ValueError):
        CannySettings(low=300, high=200)


def test_palette_single_and_two_colours():
    one = np.zeros((20, 20, 3), np.uint8)
    one[:] = (200, 30, 60)
    for k, p in enumerate(palettes(one, PaletteSettings()), start=1):
        assert p.shape == (k, 3)
        assert np.abs(p.astype(int) - (200, 30, 60)).max() <= 1  # Lab round trip: at most 1 level
    two = np.zeros((20, 20, 3), np.uint8)
    two[:, :14] = (10, 20, 250)  # 70 % of pixels
    two[:, 14:] = (250, 250, 0)
    pals = palettes(two, PaletteSettings())
    assert np.abs(pals[1].astype(int) - [(10, 20, 250), (250, 250, 0)]).max() <= 1  # largest cluster first
    assert [len(p) for p in unpack(pack(pals))] == list(range(1, 8))
    assert all((a == b).all() for a, b in zip(unpack(pack(pals)), pals))


def test_image_stats_hand_computed():
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (255, 0, 0)  # red: grey 76 (0.299*255), S 255
    img[0, 1] = (255, 255, 255)
    # grey values: 76, 255, 0, 0 -> mean 82.75; std = sqrt(mean(x^2) - mean^2)
    s = mp.image_stats(img)
    grey = np.array([76, 255, 0, 0], float)
    assert s["brightness"] == pytest.approx(grey.mean())
    assert s["contrast"] == pytest.approx(grey.std())
    assert s["saturation"] == pytest.approx(255 / 4)
    assert s["entropy"] == pytest.approx(1.5)  # probabilities 1/4, 1/4, 1/2
    rg = np.array([255, 0, 0, 0], float)
    yb = np.array([127.5, 0, 0, 0], float)
    want = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    assert s["colorfulness"] == pytest.approx(want)
    assert mp.image_stats(np.full((4, 4, 3), 90, np.uint8))["colorfulness"] == 0


def test_caption_stats():
    assert mp.caption_stats("A cat. It sits on a mat! Why?") == {
        "caption_n_chars": 29, "caption_n_words": 8, "caption_n_sentences": 3}
    assert mp.caption_stats("no end mark here")["caption_n_sentences"] == 1
    assert mp.caption_stats("v1.2 is out")["caption_n_sentences"] == 1  # a dot inside a token ends nothing
    assert mp.caption_stats(None)["caption_n_chars"] is None


def test_semantic_stats():
    sem = np.zeros((10, 10), np.uint8)
    sem[:5] = 0 + 1  # person (thing) -> object, 50 %
    sem[5:8] = 100 + 1  # road: in list A (background) and walkable, 30 %
    sem[8:9] = 84 + 1  # counter: stuff but not in list A -> counts as object, 10 %
    # last row stays 0 (none), 10 %
    s = mp.semantic_stats(sem)
    assert s["objectness"] == pytest.approx(0.6)
    assert s["walkability"] == pytest.approx(0.3)
    assert s["semantic_diversity"] == 3


def test_geometric_metadata():
    flat = np.zeros((8, 8, 3), np.float32)
    flat[..., 2] = 1
    assert mp.geometric_complexity(flat) == pytest.approx(0.0)
    opposite = flat.copy()
    opposite[:4, :, 2] = -1  # half the normals point the other way: mean vector 0
    assert mp.geometric_complexity(opposite) == pytest.approx(1.0)
    depth = np.zeros((10, 10), np.float32)
    depth[:, 5:] = 1.0  # a depth step: Sobel/8 magnitude 0.5 in columns 4 and 5, 0 elsewhere
    assert mp.occlusion_score(depth) == pytest.approx(0.2)
    assert mp.occlusion_score(np.ones((4, 4))) == 0.0
