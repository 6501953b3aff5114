"""Deterministic synthetic scenes: shapes on a floor in front of a wall or sky, with exact ground truth."""

from .render import Render, render
from .scene import Scene, make_scene

__all__ = ["Render", "Scene", "make_scene", "render"]
