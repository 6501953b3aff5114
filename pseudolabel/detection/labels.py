"""Map a detector's own label space onto COCO-80 by class *name* (never by index).

Checkpoints number COCO differently: DETR keeps the 91 original COCO category ids with "N/A" gaps, RT-DETR
uses contiguous 0..79, others add a background class. Names are the stable part, so we normalise them
(lowercase, ``_``/``-`` to spaces) and apply a few aliases from other datasets' spellings (VOC-style
"tvmonitor", "motorbike", ...). Classes that do not map (e.g. "N/A", "background") are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from fourm_core.coco import COCO_THING_CLASSES

_COCO_INDEX = {name: i for i, name in enumerate(COCO_THING_CLASSES)}

# Spellings seen in detector configs -> COCO-80 name (fourm_core.coco).
ALIASES: dict[str, str] = {
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "tvmonitor": "tv",
    "tv monitor": "tv",
    "television": "tv",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "hair dryer": "hair drier",
    "cellphone": "cell phone",
    "mobile phone": "cell phone",
    "doughnut": "donut",
    "ball": "sports ball",
    "teddybear": "teddy bear",
}


def normalise_name(name: str) -> str:
    """``"Traffic_Light"`` -> ``"traffic light"``; then aliases."""
    n = " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())
    return ALIASES.get(n, n)


def coco_index_map(id2label: Mapping[int | str, str]) -> dict[int, int]:
    """Model class id -> COCO-80 index (position in ``COCO_THING_CLASSES``) for every class that maps.

    Raises ``ValueError`` if two model classes map to the same COCO class (an ambiguous checkpoint) or if
    nothing maps at all (the checkpoint is not a COCO detector).
    """
    out: dict[int, int] = {}
    seen: dict[int, int] = {}
    for k, name in id2label.items():
        coco = _COCO_INDEX.get(normalise_name(str(name)))
        if coco is None:
            continue
        if coco in seen:
            raise ValueError(f"model classes {seen[coco]} and {k} both map to COCO class "
                             f"{COCO_THING_CLASSES[coco]!r}")
        seen[coco] = int(k)
        out[int(k)] = coco
    if not out:
        raise ValueError("no class of the model's id2label maps to a COCO-80 class name")
    return out


def coco80_id2label() -> dict[int, str]:
    """The id2label of our tiny profiles: contiguous 0..79 in COCO order."""
    return dict(enumerate(COCO_THING_CLASSES))
