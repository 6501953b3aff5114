"""Serialisers of the structured sequence modalities to text for the shared WordPiece tokenizer.

Each module has ``serialise(structured, rng=None, ...) -> str`` and ``parse(text, strict=True) ->
structured``; :data:`SERIALISERS` maps modality names (as in :mod:`fourm_core.modalities`) to them, and
:data:`STRUCTURED_TYPES` / :data:`PARSED_TYPES` to their structured types (:mod:`fourm_core.structured`).
"""

from __future__ import annotations

from types import ModuleType

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
from tokenize_stage.text.serialise import color_palette, det, human_poses, metadata, sam_instance
from tokenize_stage.text.serialise._common import EOS_RESERVE, ParseError, token_budget

SERIALISERS: dict[str, ModuleType] = {
    "det": det,
    "color_palette": color_palette,
    "metadata": metadata,
    "human_poses": human_poses,
    "sam_instance": sam_instance,
}

# What the labelers store per sample (validate stored JSON with ``STRUCTURED_TYPES[m].model_validate_json``)
# and what ``parse`` returns; they differ only for color_palette (all k stored, one k serialised).
STRUCTURED_TYPES: dict[str, type] = {"det": Detections, "color_palette": ColorPaletteSet, "metadata": Metadata,
                                     "human_poses": HumanPoses, "sam_instance": SamInstances}
PARSED_TYPES: dict[str, type] = STRUCTURED_TYPES | {"color_palette": ColorPalette}

__all__ = [
    "EOS_RESERVE", "PARSED_TYPES", "SERIALISERS", "STRUCTURED_TYPES", "Box", "ColorPalette", "ColorPaletteSet",
    "Detections", "HumanPoses", "Metadata", "ParseError", "Person", "SamInstance", "SamInstances", "SamPoint",
    "token_budget",
]
