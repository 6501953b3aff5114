"""Crop settings and geometry live in the shared package (``fourm_core.crops``): the tokenize stage draws the
crops, the training loader crops RGB pixels with the same boxes. Re-exported here for the stage's modules."""

from fourm_core.crops import Crop, CropConfig, apply_crop, crop_for

__all__ = ["Crop", "CropConfig", "apply_crop", "crop_for"]
