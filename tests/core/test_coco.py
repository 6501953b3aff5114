import json

from fourm_core.coco import COCO_PANOPTIC_CLASSES, COCO_THING_CLASSES, WALKABLE_IDS
from fourm_core.reference_data import reference_file


def test_thing_classes_match_the_reference_release():
    # The reference ships the COCO-80 names (alphabetically); ours are in COCO category order.
    ref = json.loads(reference_file("object_classes.json").read_text())["coco"]
    assert sorted(COCO_THING_CLASSES) == sorted(ref)
    assert len(set(COCO_THING_CLASSES)) == 80


def test_walkable_classes_are_ground_surfaces():
    names = {COCO_PANOPTIC_CLASSES[i] for i in WALKABLE_IDS}
    assert {"road", "sand", "snow", "grass-merged", "pavement-merged", "floor-wood"} <= names
    assert "person" not in names and len(COCO_PANOPTIC_CLASSES) == 133
