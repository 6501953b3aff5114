"""Serialisers of the structured sequence modalities to text for the shared WordPiece tokenizer.

Each module has ``serialise(structured, rng=None, ...) -> str`` and ``parse(text) -> structured``;
:data:`SERIALISERS` maps modality names (as in :mod:`fourm_core.modalities`) to them. Types: :mod:`.types`.
"""

from __future__ import annotations

from types import ModuleType

from tokenize_stage.text.serialise import color_palette, det, human_poses, metadata, sam_instance
from tokenize_stage.text.serialise._common import EOS_RESERVE, ParseError, token_budget
from tokenize_stage.text.serialise.types import (
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

SERIALISERS: dict[str, ModuleType] = {
    "det": det,
    "color_palette": color_palette,
    "metadata": metadata,
    "human_poses": human_poses,
    "sam_instance": sam_instance,
}

__all__ = [
    "EOS_RESERVE", "SERIALISERS", "Box", "ColorPalette", "ColorPaletteSet", "Detections", "HumanPoses",
    "Metadata", "ParseError", "Person", "SamInstance", "SamInstances", "SamPoint", "token_budget",
]
