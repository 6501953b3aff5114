"""Random structured samples for the serialiser tests (seeded numpy generators; no hypothesis dependency)."""

from __future__ import annotations

import numpy as np

from fourm_core.coco import COCO_THING_CLASSES
from tokenize_stage.text.serialise import metadata as meta_mod
from fourm_core.structured import (
    Box,
    ColorPalette,
    ColorPaletteSet,
    Detections,
    HumanPoses,
    Metadata,
    Person,
    SamInstance,
    SamInstances,
    SamPoint,
)


def xyxy(g: np.random.Generator) -> list[float]:
    x, y = np.sort(g.random(2)), np.sort(g.random(2))
    return [x[0], y[0], x[1], y[1]]


def detections(g: np.random.Generator, n: int | None = None) -> Detections:
    n = int(g.integers(0, 70)) if n is None else n
    return Detections(boxes=[Box(xyxy=xyxy(g), class_name=str(g.choice(COCO_THING_CLASSES)), score=g.random())
                             for _ in range(n)])


def palette_set(g: np.random.Generator) -> ColorPaletteSet:
    ks = sorted(g.choice(np.arange(1, 8), size=int(g.integers(1, 8)), replace=False))
    return ColorPaletteSet(palettes=[ColorPalette(colors=g.integers(0, 256, size=(k, 3))) for k in ks])


def metadata(g: np.random.Generator, p_present: float = 0.7) -> Metadata:
    values = {}
    for t in meta_mod.METADATA_TYPES:
        if g.random() > p_present:
            continue
        if t.kind == "size":
            values[t.name] = int(g.integers(1, 8000))
        elif t.kind == "count":
            values[t.name] = int(g.integers(0, 1300))
        elif t.kind == "bins":
            span = t.vmax - t.vmin
            values[t.name] = float(g.uniform(t.vmin - 0.1 * span, t.vmax + 0.1 * span))
        elif t.kind == "watermark":
            values[t.name] = float(g.random())
        else:
            values[t.name] = float(g.uniform(1, 10))
    return Metadata(**values)


def person(g: np.random.Generator) -> Person:
    return Person(bbox=xyxy(g), pose_tokens=g.integers(0, 1024, 8), global_orient=g.uniform(-1, 1, 9),
                  betas=g.uniform(-3, 3, 10), camera=g.uniform(-2, 21, 3))


def human_poses(g: np.random.Generator, n: int | None = None) -> HumanPoses:
    n = int(g.integers(0, 9)) if n is None else n
    return HumanPoses(persons=[person(g) for _ in range(n)])


def sam_instance(g: np.random.Generator) -> SamInstance:
    x, y = np.sort(g.integers(0, 224, 2)), np.sort(g.integers(0, 224, 2))
    return SamInstance(bbox=(x[0], y[0], x[1], y[1]), mask_tokens=g.integers(0, 1024, 16))


def sam_instances(g: np.random.Generator, max_per_point: int = 3) -> SamInstances:
    return SamInstances(points=[
        SamPoint(y=int(g.integers(224)), x=int(g.integers(224)),
                 instances=[sam_instance(g) for _ in range(int(g.integers(0, max_per_point + 1)))])
        for _ in range(7)])
