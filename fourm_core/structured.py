"""Structured forms of the sequence modalities: what labelers write and what ``parse()`` gives back.

The pseudo-label stage produces these, the pre-tokenization stage serialises them (stored as JSON beside the
text, docs/data-format.md ``structured``; tokenize_stage.text.serialise), and the evaluation stage parses
model outputs back into them: a data format shared by three stages, so it lives here.
Coordinates are normalised to the (cropped) image, ``[0, 1]``, ``(x0, y0, x1, y1)`` = (left, top, right,
bottom), except for SAM instances, which use integer pixels of the 224x224 crop as the reference does.
All models are frozen and reject unknown fields; numpy scalars and arrays are accepted and converted.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, NonNegativeInt, field_validator, model_validator

from fourm_core.coco import COCO_THING_CLASSES

VQ_CODES = 1024  # largest codebook the two value axes of a sequence can hold (the pose and mask VQs have ~1k codes)


def _plain(v: Any) -> Any:
    """numpy arrays/scalars to Python lists/numbers, so pydantic validates them like any input."""
    return v.tolist() if hasattr(v, "tolist") else v


Float = Annotated[float, BeforeValidator(_plain)]
Unit = Annotated[float, BeforeValidator(_plain), Field(ge=0.0, le=1.0)]
Code = Annotated[int, BeforeValidator(_plain), Field(ge=0, lt=VQ_CODES)]
Channel = Annotated[int, BeforeValidator(_plain), Field(ge=0, le=255)]
Pixel = Annotated[int, BeforeValidator(_plain), Field(ge=0, le=999)]  # 224 crop; any size up to the value range
XYXY = Annotated[tuple[Unit, Unit, Unit, Unit], BeforeValidator(_plain)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_xyxy(box: tuple[float, float, float, float] | tuple[int, int, int, int], field: str) -> None:
    x0, y0, x1, y1 = box
    if x0 > x1 or y0 > y1:
        raise ValueError(f"{field}={tuple(box)} has x0 > x1 or y0 > y1")


# ------------------------------------------------------------------------------------------------ det


class Box(_Model):
    """One detection: normalised ``xyxy``, a COCO-80 class name (lowercase, e.g. "traffic light"), and the
    detector score (``None`` after parsing: the text does not carry it)."""

    xyxy: XYXY
    class_name: str
    score: Float | None = None

    @field_validator("class_name")
    @classmethod
    def _coco(cls, v: str) -> str:
        if v not in _COCO:
            raise ValueError(f"class_name={v!r} is not a COCO-80 class name (lowercase, space separated)")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        _check_xyxy(self.xyxy, "xyxy")
        return self


class Detections(_Model):
    boxes: list[Box] = Field(default_factory=list)


_COCO = frozenset(COCO_THING_CLASSES)

# ----------------------------------------------------------------------------------------- color palette


RGB = Annotated[tuple[Channel, Channel, Channel], BeforeValidator(_plain)]
MAX_PALETTE = 7


class ColorPalette(_Model):
    """k = 1..7 colours as integer RGB (0-255), most representative first as the labeler ranks them."""

    colors: Annotated[list[RGB], BeforeValidator(_plain), Field(min_length=1, max_length=MAX_PALETTE)]


class ColorPaletteSet(_Model):
    """What the palette labeler stores per image: one palette per k (any subset of k = 1..7)."""

    palettes: Annotated[list[ColorPalette], Field(min_length=1, max_length=MAX_PALETTE)]

    @model_validator(mode="after")
    def _distinct_k(self) -> ColorPaletteSet:
        ks = [len(p.colors) for p in self.palettes]
        if len(set(ks)) != len(ks):
            raise ValueError(f"palettes must have distinct sizes k, got k={ks}")
        return self


# ---------------------------------------------------------------------------------------------- metadata

NonNegInt = Annotated[NonNegativeInt, BeforeValidator(_plain)]
Finite = Annotated[float, BeforeValidator(_plain), Field(allow_inf_nan=False)]
Count = Annotated[int, BeforeValidator(_plain)]  # any integer: serialised clipped to 0..999 like the reference


class Metadata(_Model):
    """Image metadata (4M-FACTS §4); every field optional, absent fields are not serialised.

    Raw values, not bins: sizes in pixels, counts as integers, float statistics in their natural units (they
    are clipped to the binning range when serialised), watermark score in [0, 1], aesthetic score (LAION
    predictor scale, about 1-10). ``parse`` returns bin representatives (see metadata.py).
    """

    original_width: NonNegInt | None = None
    original_height: NonNegInt | None = None
    caption_n_chars: Count | None = None
    caption_n_words: Count | None = None
    caption_n_sentences: Count | None = None
    n_humans: Count | None = None
    n_sam_instances: Count | None = None
    n_coco_instances: Count | None = None
    coco_instance_diversity: Count | None = None
    colorfulness: Finite | None = None
    brightness: Finite | None = None
    contrast: Finite | None = None
    saturation: Finite | None = None
    entropy: Finite | None = None
    walkability: Finite | None = None
    objectness: Finite | None = None
    semantic_diversity: Count | None = None
    geometric_complexity: Finite | None = None
    occlusion_score: Finite | None = None
    watermark_score: Finite | None = None
    aesthetic_score: Finite | None = None


# ------------------------------------------------------------------------------------------- human poses


def _vec(n: int):
    return Annotated[tuple[Float, ...], BeforeValidator(_plain), Field(min_length=n, max_length=n)]


class Person(_Model):
    """One SMPL person from the pose labeler (4D-Humans/HMR2.0).

    ``bbox`` normalised xyxy; ``pose_tokens`` the 8 codes of the pose VQ (body pose, 207-d); ``global_orient``
    the 3x3 root rotation matrix flattened row-major (entries in [-1, 1]); ``betas`` the 10 SMPL shape
    coefficients (serialised range [-3, 3]); ``camera`` the 3 weak-perspective camera values (range [-1, 19]).
    Values outside their range are clipped when serialised.
    """

    bbox: XYXY
    pose_tokens: Annotated[tuple[Code, ...], BeforeValidator(_plain), Field(min_length=8, max_length=8)]
    global_orient: _vec(9)
    betas: _vec(10)
    camera: _vec(3)

    @model_validator(mode="after")
    def _check(self) -> Person:
        _check_xyxy(self.bbox, "bbox")
        for name in ("global_orient", "betas", "camera"):
            for i, v in enumerate(getattr(self, name)):
                if not math.isfinite(v):
                    raise ValueError(f"{name}[{i}]={v} is not finite")
        return self


class HumanPoses(_Model):
    persons: list[Person] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------ SAM instances


class SamInstance(_Model):
    """One SAM mask: ``bbox`` (xmin, ymin, xmax, ymax) in integer pixels of the 224x224 crop and the 16 codes
    of the mask VQ (the 64x64 mask inside the box)."""

    bbox: Annotated[tuple[Pixel, Pixel, Pixel, Pixel], BeforeValidator(_plain)]
    mask_tokens: Annotated[tuple[Code, ...], BeforeValidator(_plain), Field(min_length=16, max_length=16)]

    @model_validator(mode="after")
    def _ordered(self) -> SamInstance:
        _check_xyxy(self.bbox, "bbox")
        return self


class SamPoint(_Model):
    """A query point (pixel ``y``, ``x`` of the 224 crop) and the instances containing it (may be empty)."""

    y: Pixel
    x: Pixel
    instances: list[SamInstance] = Field(default_factory=list)


class SamInstances(_Model):
    """The queried form of SAM instances that sam_instance serialises: usually 7 points."""

    points: list[SamPoint] = Field(default_factory=list)
