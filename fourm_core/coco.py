"""COCO label spaces: the 80 detection ("thing") classes and the 133-class COCO-panoptic space.

Contiguous ids follow the COCO-panoptic convention used by Mask2Former: 0-79 are the things in COCO
category order, 80-132 the merged stuff classes. Semantic maps store ``id + 1`` (0 = none), so a map has
134 labels (4M-FACTS §1). The class-index lists for objectness and walkability (4M-FACTS §4) index this
133-class list.
"""

from __future__ import annotations

COCO_THING_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

COCO_STUFF_CLASSES: tuple[str, ...] = (
    "banner", "blanket", "bridge", "cardboard", "counter", "curtain", "door-stuff", "floor-wood", "flower",
    "fruit", "gravel", "house", "light", "mirror-stuff", "net", "pillow", "platform", "playingfield", "railroad",
    "river", "road", "roof", "sand", "sea", "shelf", "snow", "stairs", "tent", "towel", "wall-brick",
    "wall-stone", "wall-tile", "wall-wood", "water-other", "window-blind", "window-other", "tree-merged",
    "fence-merged", "ceiling-merged", "sky-other-merged", "cabinet-merged", "table-merged", "floor-other-merged",
    "pavement-merged", "mountain-merged", "grass-merged", "dirt-merged", "paper-merged", "food-other-merged",
    "building-other-merged", "rock-merged", "wall-other-merged", "rug-merged",
)

COCO_PANOPTIC_CLASSES: tuple[str, ...] = COCO_THING_CLASSES + COCO_STUFF_CLASSES
NUM_PANOPTIC = len(COCO_PANOPTIC_CLASSES)  # 133
SEMSEG_NONE = 0  # stored semantic maps use panoptic id + 1; 0 means no label

# 4M-21 appendix D.1 index lists into COCO_PANOPTIC_CLASSES (4M-FACTS §4).
PANOPTIC_LIST_A: tuple[int, ...] = (87, 90, *range(96, 104), 105, 106, *range(109, 114), 117, 118, 119,
                                    *range(122, 127), 129, 131, 132)
WALKABLE_IDS: tuple[int, ...] = (87, 90, 97, 100, 102, 105, 106, 122, 123, 125, 126, 132)

assert len(COCO_THING_CLASSES) == 80 and len(COCO_STUFF_CLASSES) == 53
# Note on PANOPTIC_LIST_A: 4M-FACTS calls it the "countable" list, yet every index in it is a stuff class
# (floor-wood, gravel, road, sky, wall-*, ...). Whoever implements objectness must decide from the paper's
# definition (share of pixels in countable *object* classes) how to use it, and document the choice.
