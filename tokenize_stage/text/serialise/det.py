"""det: object detections as ``v0=X0 v1=Y0 v2=X1 v3=Y1 <class>`` per box (4M-FACTS §3).

* Boxes with ``score < 0.6`` are dropped (a missing score counts as kept: parsed boxes have none).
* Coordinates are normalised to the crop and written as ``round(c * 999)`` (Python's round: halves to even,
  as the reference); parse returns ``q / 999``, so the round-trip error is at most ``0.5 / 999`` per coordinate.
* Boxes are ordered by the distance of (xmin, ymin) to the origin, computed on the normalised coordinates as
  the reference does, with a stable sort (equal distances keep the input order). Two boxes whose distances
  differ by less than a quantisation step can therefore swap in serialise -> parse -> serialise.
* 5 tokens per box; truncation keeps the first 51 boxes of that order (255 tokens + EOS = 256).
"""

from __future__ import annotations

import math

from fourm_core.structured import Box, Detections
from tokenize_stage.text.serialise._common import (
    Rng,
    WordReader,
    dequantise_unit,
    fit_units,
    join_units,
    parse_value_word,
    quantise_unit,
    token_budget,
    value_word,
)

MODALITY = "det"
SCORE_THRESHOLD = 0.6
TOKENS_PER_BOX = 5
MAX_ERROR = 0.5 / 999  # per coordinate, for parse(serialise(x)) against x


def units(dets: Detections, score_threshold: float = SCORE_THRESHOLD) -> list[list[str]]:
    """The kept boxes in serialisation order, one word list each (before truncation)."""
    kept = []
    for i, box in enumerate(dets.boxes):
        if box.score is not None and box.score < score_threshold:
            continue
        q = tuple(quantise_unit(c, f"boxes[{i}].xyxy[{j}]") for j, c in enumerate(box.xyxy))
        kept.append((math.sqrt(box.xyxy[0] ** 2 + box.xyxy[1] ** 2), q, box.class_name))
    kept.sort(key=lambda k: k[0])  # stable: ties keep the input order (the reference's sorted by distance)
    return [[value_word(a, v) for a, v in enumerate(q)] + [name] for _, q, name in kept]


def serialise(dets: Detections, rng: Rng = None, *, max_tokens: int | None = None,
              score_threshold: float = SCORE_THRESHOLD) -> str:
    """Detections to text; ``rng`` is unused (det order is deterministic). Empty string when no box is kept."""
    budget = token_budget(MODALITY) if max_tokens is None else max_tokens
    return join_units(fit_units(units(dets, score_threshold), budget))


def parse(text: str, *, strict: bool = True) -> Detections:
    """Text back to :class:`Detections` (dequantised coordinates, ``score=None``). ``strict=False`` (for
    model outputs) drops malformed boxes instead of raising."""
    r = WordReader(MODALITY, text, strict)

    def box(n: int) -> Box:
        xyxy = tuple(dequantise_unit(r.value(a, f"box {n} coordinate {a}")) for a in range(4))
        name = r.next("a class name")
        if parse_value_word(name) is not None:
            r.fail(f"expected a class name after v3=, got {name!r}", back=1)
        try:
            return Box(xyxy=xyxy, class_name=name)
        except ValueError as e:
            r.fail(f"box {n} is invalid: {_first_error(e)}", back=1)

    return Detections(boxes=r.units(lambda w: w.startswith("v0="), box))


def _first_error(e: ValueError) -> str:
    return e.errors()[0]["msg"] if hasattr(e, "errors") else str(e)
