"""Every labeler's default model is the one docs/labelers.md documents: a published repository of that model, or a
local directory that a documented command writes. A placeholder id fails here, not at a user's first run."""

import re
from pathlib import Path

import pytest

from pseudolabel import models
from pseudolabel.registry import LABELERS, labeler_class

DOCS = Path(__file__).parents[2] / "docs" / "labelers.md"

# Published repositories a default may name, with what they hold (checked against their model cards when added).
PUBLISHED = {
    "facebook/mask2former-swin-base-coco-panoptic": "Mask2Former Swin-B, COCO panoptic",
    "openai/clip-vit-base-patch16": "CLIP ViT-B/16",
    "facebook/dinov2-base": "DINOv2 ViT-B/14",
    "google/t5-v1_1-xxl": "T5 v1.1 XXL",
    "PekingU/rtdetr_r101vd_coco_o365": "RT-DETR R101, COCO + Objects365",
}


def _documented_defaults() -> dict[str, str]:
    """labeler -> the 'production default' cell of the docs table."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1] in LABELERS:
            rows.setdefault(cells[1], cells[2])  # the first table is the production-defaults one
    return rows


MODEL_LABELERS = [n for n in LABELERS if "model" in labeler_class(n).Settings.model_fields]


@pytest.mark.parametrize("name", MODEL_LABELERS)
def test_default_model_is_the_documented_one(name):
    default = labeler_class(name).Settings.model_fields["model"].default
    cell = _documented_defaults()[name]
    assert f"`{default}`" in cell, f"{name}: default {default!r} is not the one docs/labelers.md documents ({cell})"
    assert "placeholder" not in cell.lower()
    if default.startswith(("./", "/")):
        # a local directory: the docs say which command writes it, and it can never be mistaken for a hub id
        assert re.search(rf"python -m pseudolabel convert-\w+ \S+ {re.escape(default)}", cell)
    else:
        assert models._HUB_ID.match(default), f"{name}: {default!r} is neither a local path nor a hub id"
        assert default in PUBLISHED, f"{name}: {default!r} is not a published repository of the documented model"
