"""sam_instance: 7 query points, each ``point v0=y v1=x`` followed, for every instance whose mask contains
the point, by ``polygon v0=xmin v1=ymin v2=xmax v3=ymax`` + 16 mask-VQ codes (``v0=t`` / ``v1=t-512``), or by
``none`` when no instance contains it (4M-FACTS §3).

Coordinates are integer pixels of the 224x224 crop, so the round trip is exact. A point group is 3 tokens
plus 21 per instance (4 with ``none``). :func:`query` builds the structured form from instance masks: it
draws the points with ``rng`` and lists the containing instances smallest first (the most specific mask
first, ties by instance index). Truncation keeps the longest prefix of whole units within 289 tokens, where a
unit is one instance (the point header travels with the point's first instance, or with ``none``); so the
last kept point may lose its later instances, but no point is written without any of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fourm_core.structured import SamInstance, SamInstances, SamPoint
from tokenize_stage.text.serialise._common import (
    Rng,
    WordReader,
    coerce_rng,
    fit_units,
    join_units,
    token_budget,
    value_word,
    vq_word,
)

MODALITY = "sam_instance"
NONE = "none"
N_POINTS = 7
IMAGE_SIZE = 224
TOKENS_PER_INSTANCE = 21
MAX_ERROR = 0  # integer pixels and codes round-trip exactly


def units(sam: SamInstances) -> list[list[str]]:
    out = []
    for i, pt in enumerate(sam.points):
        header = ["point", value_word(0, pt.y, f"points[{i}].y"), value_word(1, pt.x, f"points[{i}].x")]
        if not pt.instances:
            out.append(header + [NONE])
        for j, inst in enumerate(pt.instances):
            words = ["polygon"] + [value_word(a, c, f"points[{i}].instances[{j}].bbox[{a}]")
                                   for a, c in enumerate(inst.bbox)]
            words += [vq_word(t, f"points[{i}].instances[{j}].mask_tokens[{k}]")
                      for k, t in enumerate(inst.mask_tokens)]
            out.append((header if j == 0 else []) + words)
    return out


def serialise(sam: SamInstances, rng: Rng = None, *, max_tokens: int | None = None) -> str:
    """The queried instances to text; ``rng`` is unused (points are drawn by :func:`query`)."""
    if not isinstance(sam, SamInstances):
        raise TypeError(f"{MODALITY}: expected SamInstances, got {type(sam).__name__}")
    budget = token_budget(MODALITY) if max_tokens is None else max_tokens
    return join_units(fit_units(units(sam), budget))


def parse(text: str, *, strict: bool = True) -> SamInstances:
    """Text back to :class:`SamInstances`. ``strict=False`` (for model outputs) drops malformed points."""
    r = WordReader(MODALITY, text, strict)

    def point(n: int) -> SamPoint:
        r.expect("point")
        y, x = r.value(0, f"point {n} y"), r.value(1, f"point {n} x")
        instances = []
        if r.peek() == NONE:
            r.next(NONE)
        else:
            while r.peek() == "polygon" or not instances:
                r.expect("polygon")
                bbox = tuple(r.value(a, f"point {n} instance {len(instances)} bbox") for a in range(4))
                codes = tuple(r.vq(f"point {n} instance {len(instances)} mask code") for _ in range(16))
                try:
                    instances.append(SamInstance(bbox=bbox, mask_tokens=codes))
                except ValueError as e:
                    r.fail(f"point {n} instance {len(instances)} is invalid: {e}")
        return SamPoint(y=y, x=x, instances=instances)

    return SamInstances(points=r.units(lambda w: w == "point", point))


def query(masks: np.ndarray, mask_tokens: Sequence[Sequence[int]] | np.ndarray, rng: Rng,
          n_points: int = N_POINTS, boxes: Sequence[Sequence[int]] | None = None) -> SamInstances:
    """Draw ``n_points`` query points and list the instances containing each.

    ``masks``: bool (N, 224, 224) instance masks of the crop; ``mask_tokens``: (N, 16) codes of each mask from
    the mask VQ; ``boxes``: optional (N, 4) integer xyxy, otherwise the tight box of each mask (xmax/ymax
    inclusive). ``rng`` is required: the points are the random part of this modality.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{MODALITY}: masks must be (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {masks.shape}")
    codes = np.asarray(mask_tokens, dtype=np.int64).reshape(len(masks), -1) if len(masks) else np.zeros((0, 16))
    if codes.shape[1] != 16:
        raise ValueError(f"{MODALITY}: mask_tokens must be (N, 16), got {codes.shape}")
    gen = coerce_rng(rng)
    if gen is None:
        raise ValueError(f"{MODALITY}: query() needs an rng to draw the points")
    if boxes is None:
        boxes = [_tight_box(m) for m in masks]
    instances = [SamInstance(bbox=tuple(int(c) for c in b), mask_tokens=codes[i]) for i, b in enumerate(boxes)]
    order = np.argsort(masks.sum(axis=(1, 2)), kind="stable")  # smallest mask first
    ys, xs = gen.integers(IMAGE_SIZE, size=n_points), gen.integers(IMAGE_SIZE, size=n_points)
    points = [SamPoint(y=int(y), x=int(x), instances=[instances[i] for i in order if masks[i, y, x]])
              for y, x in zip(ys, xs)]
    return SamInstances(points=points)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return (0, 0, 0, 0)
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
