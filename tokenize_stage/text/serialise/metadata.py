"""metadata: chunks ``v1=<type id> v0=<value>``, chunk order shuffled (4M-FACTS §3-§4).

Binning per type (ids 0-20, the table below):

* ``size``: ``value // 32`` (original width/height in pixels), clipped to 999; parse gives the bin centre
  ``32 q + 16`` (error <= 16 px below 31 984 px).
* ``count``: integers clipped to 0..999 (negative counts give 0); exact in 0..999.
* ``bins``: floats clipped to (vmin, vmax), then ``int((v - vmin) / (vmax - vmin) * 49)`` (the reference's
  ``int(frac * (bins - 1))``: only vmax reaches bin 49), so 0..49; parse gives a value inside the bin.
* ``threshold``: watermark ``v >= 0.5`` -> 1 else 0; aesthetic ``< 4.5`` -> 0, ``< 5.5`` -> 1, else 2; parse
  gives a representative of the class (watermark 0.0 / 1.0, aesthetic 4.0 / 5.0 / 6.0) that bins back to it.

``rng`` shuffles the chunks (None keeps type-id order; ``order`` gives the type ids explicitly); truncation
keeps the first 20 chunks of the shuffled order (40 tokens), i.e. drops one random type when all 21 are
present, and the masking code then has no room for [EOS] (the reference drops its EOS chunk the same way).
Masking works chunk-wise, so :func:`chunks` returns the chunk strings too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fourm_core.structured import Metadata
from tokenize_stage.text.serialise._common import (
    Rng,
    WordReader,
    coerce_rng,
    fit_units,
    token_budget,
    value_word,
)

MODALITY = "metadata"
N_BINS = 50
SIZE_STEP = 32
MAX_INT = 999
WATERMARK_THRESHOLD = 0.5
AESTHETIC_THRESHOLDS = (4.5, 5.5)


@dataclass(frozen=True)
class MetaType:
    """How one metadata type is binned: kind is size | count | bins | watermark | aesthetic."""

    type_id: int
    name: str
    kind: str
    vmin: float = 0.0
    vmax: float = 0.0

    @property
    def max_error(self) -> float:
        """Largest |parse(serialise(v)) - v| for an in-range value (threshold kinds: None, class only)."""
        return {"size": SIZE_STEP / 2, "count": 0.0, "bins": (self.vmax - self.vmin) / (N_BINS - 1)}.get(
            self.kind, math.nan)


METADATA_TYPES: tuple[MetaType, ...] = (
    MetaType(0, "original_width", "size"),
    MetaType(1, "original_height", "size"),
    MetaType(2, "caption_n_chars", "count"),
    MetaType(3, "caption_n_words", "count"),
    MetaType(4, "caption_n_sentences", "count"),
    MetaType(5, "n_humans", "count"),
    MetaType(6, "n_sam_instances", "count"),
    MetaType(7, "n_coco_instances", "count"),
    MetaType(8, "coco_instance_diversity", "count"),
    MetaType(9, "colorfulness", "bins", 0, 150),
    MetaType(10, "brightness", "bins", 0, 255),
    MetaType(11, "contrast", "bins", 0, 127),
    MetaType(12, "saturation", "bins", 0, 255),
    MetaType(13, "entropy", "bins", 0, 10),
    MetaType(14, "walkability", "bins", 0, 1),
    MetaType(15, "objectness", "bins", 0, 1),
    MetaType(16, "semantic_diversity", "count"),
    MetaType(17, "geometric_complexity", "bins", 0, 0.75),
    MetaType(18, "occlusion_score", "bins", 0, 0.25),
    MetaType(19, "watermark_score", "watermark"),
    MetaType(20, "aesthetic_score", "aesthetic"),
)
BY_NAME = {t.name: t for t in METADATA_TYPES}
assert tuple(BY_NAME) == tuple(Metadata.model_fields) and [t.type_id for t in METADATA_TYPES] == list(range(21))

_AESTHETIC_REPR = (4.0, 5.0, 6.0)


def quantise(t: MetaType, value: float) -> int:
    """The v0 value written for ``value`` of type ``t``."""
    if t.kind == "size":
        return min(int(value) // SIZE_STEP, MAX_INT)
    if t.kind == "count":
        return min(max(int(value), 0), MAX_INT)
    if t.kind == "bins":
        # the reference's order of operations (fraction first), so values on a bin edge land where its do
        frac = (min(max(value, t.vmin), t.vmax) - t.vmin) / (t.vmax - t.vmin)
        return int(frac * (N_BINS - 1))
    if t.kind == "watermark":
        return int(value >= WATERMARK_THRESHOLD)
    return sum(value >= th for th in AESTHETIC_THRESHOLDS)  # aesthetic: 0, 1, 2


def dequantise(t: MetaType, q: int) -> float | int:
    """A representative raw value for bin ``q`` that :func:`quantise` maps back to ``q``."""
    limit = {"bins": N_BINS - 1, "watermark": 1, "aesthetic": 2}.get(t.kind, MAX_INT)
    if not 0 <= q <= limit:
        raise ValueError(f"{t.name}: value {q} is outside 0..{limit}")
    if t.kind == "size":
        return q * SIZE_STEP + SIZE_STEP // 2
    if t.kind == "count":
        return q
    if t.kind == "bins":
        # the middle of [q, q + 1) / 49, except the last bin, which only vmax reaches
        return t.vmax if q == N_BINS - 1 else t.vmin + (q + 0.5) * (t.vmax - t.vmin) / (N_BINS - 1)
    if t.kind == "watermark":
        return float(q)
    return _AESTHETIC_REPR[q]


def units(meta: Metadata, rng: Rng = None, order: list[int] | None = None) -> list[list[str]]:
    """One ``[v1=<id>, v0=<value>]`` chunk per present field, shuffled by ``rng`` or in ``order`` (type ids)."""
    by_id = {t.type_id: [value_word(1, t.type_id), value_word(0, quantise(t, v), t.name)]
             for t in METADATA_TYPES if (v := getattr(meta, t.name)) is not None}
    if order is not None:
        if sorted(order) != sorted(by_id):
            raise ValueError(f"order {order} must list exactly the present metadata type ids {sorted(by_id)}")
        return [by_id[i] for i in order]
    chunks = list(by_id.values())
    gen = coerce_rng(rng)
    if gen is not None:
        chunks = [chunks[i] for i in gen.permutation(len(chunks))]
    return chunks


def chunks(meta: Metadata, rng: Rng = None, *, max_tokens: int | None = None,
           order: list[int] | None = None) -> list[str]:
    """The kept chunks as strings, in serialisation order (for chunk-wise masking)."""
    budget = token_budget(MODALITY) if max_tokens is None else max_tokens
    return [" ".join(c) for c in fit_units(units(meta, rng, order), budget)]


def serialise(meta: Metadata, rng: Rng = None, *, max_tokens: int | None = None,
              order: list[int] | None = None) -> str:
    """Metadata to text; empty string when no field is set."""
    return " ".join(chunks(meta, rng, max_tokens=max_tokens, order=order))


def parse(text: str, *, strict: bool = True) -> Metadata:
    """Text back to :class:`Metadata` holding bin representatives; each type may appear once.
    ``strict=False`` (for model outputs) drops malformed or repeated chunks instead of raising."""
    r = WordReader(MODALITY, text, strict)
    values: dict[str, float | int] = {}

    def chunk(_: int) -> None:
        type_id = r.value(1, "a metadata type id")
        if type_id >= len(METADATA_TYPES):
            r.fail(f"unknown metadata type id {type_id} (0..{len(METADATA_TYPES) - 1})", back=1)
        t = METADATA_TYPES[type_id]
        if t.name in values:
            r.fail(f"metadata type {t.name} (id {type_id}) appears twice", back=1)
        q = r.value(0, f"the value of {t.name}")
        try:
            values[t.name] = dequantise(t, q)
        except ValueError as e:
            r.fail(str(e), back=1)

    r.units(lambda w: w.startswith("v1="), chunk)
    return Metadata(**values)
