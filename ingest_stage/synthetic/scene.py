"""Scene sampling and captions. A scene is a small, fully explicit description; the renderer is pure.

World frame: X right, Y up, Z forward along the floor; the floor is the plane Y = 0, the camera sits at
(0, H, 0) and looks forward, pitched down. Objects stand on the floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# name -> linear RGB albedo. Names are what captions say, so keep them plain and distinguishable.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.06, 0.05), "green": (0.08, 0.55, 0.10), "blue": (0.06, 0.15, 0.80),
    "yellow": (0.90, 0.78, 0.05), "orange": (0.95, 0.35, 0.02), "purple": (0.40, 0.08, 0.60),
    "white": (0.85, 0.85, 0.85), "pink": (0.95, 0.40, 0.55),
}

# object kind -> (shape, COCO thing class, size ranges in metres)
OBJECTS: dict[str, tuple[str, str, dict[str, tuple[float, float]]]] = {
    "ball": ("sphere", "sports ball", {"r": (0.14, 0.30)}),
    "cup": ("cylinder", "cup", {"r": (0.12, 0.20), "h": (0.20, 0.34)}),
    "bottle": ("cylinder", "bottle", {"r": (0.06, 0.10), "h": (0.40, 0.65)}),
    "book": ("box", "book", {"w": (0.30, 0.45), "h": (0.05, 0.10), "d": (0.40, 0.55)}),
    "suitcase": ("box", "suitcase", {"w": (0.45, 0.65), "h": (0.40, 0.60), "d": (0.18, 0.26)}),
}

# setting -> (floor class, floor words, background class, background words)
SETTINGS: dict[str, tuple[str, str, str, str]] = {
    "wood": ("floor-wood", "on a wooden floor", "wall-other-merged", "in front of a {wall} wall"),
    "tiles": ("floor-other-merged", "on a tiled floor", "wall-other-merged", "in front of a {wall} wall"),
    "grass": ("grass-merged", "on the grass", "sky-other-merged", "under a blue sky"),
}
WALL_COLORS: dict[str, tuple[float, float, float]] = {
    "grey": (0.45, 0.45, 0.47), "beige": (0.70, 0.60, 0.45), "light blue": (0.45, 0.58, 0.75),
    "white": (0.78, 0.78, 0.76),
}


@dataclass(frozen=True)
class Obj:
    kind: str  # key of OBJECTS
    color: str  # key of COLORS
    x: float
    z: float
    dims: dict[str, float]
    yaw: float  # radians, boxes only

    @property
    def shape(self) -> str:
        return OBJECTS[self.kind][0]

    @property
    def coco_class(self) -> str:
        return OBJECTS[self.kind][1]


@dataclass(frozen=True)
class Scene:
    seed: int
    index: int
    setting: str
    wall: str
    cam_height: float
    pitch: float  # radians, downwards
    fov: float  # horizontal field of view, radians
    wall_z: float  # distance of the back wall / sky backdrop
    light: tuple[float, float, float]  # unit vector towards the light (world)
    texture_seed: int
    objects: tuple[Obj, ...]


def make_scene(seed: int, index: int, objects: tuple[int, int] = (1, 4), object_scale: float = 1.0) -> Scene:
    """The scene for (seed, index): a pure function, so the same arguments always give the same scene.

    ``objects`` is the (fewest, most) objects asked for; ``object_scale`` multiplies every size range of OBJECTS.
    The defaults draw the scenes this generator always drew (same random stream).
    """
    rng = np.random.default_rng([seed, index, 0x5CE7E])
    setting = str(rng.choice(list(SETTINGS)))
    wall = str(rng.choice(list(WALL_COLORS)))
    cam_height = float(rng.uniform(1.0, 1.5))
    pitch = math.radians(float(rng.uniform(18, 30)))
    fov = math.radians(float(rng.uniform(50, 62)))
    n = int(rng.integers(objects[0], objects[1] + 1))
    objs: list[Obj] = []
    tries = 0
    while len(objs) < n and tries < 200:
        tries += 1
        kind = str(rng.choice(list(OBJECTS)))
        dims = {k: float(rng.uniform(*rng_range)) * object_scale for k, rng_range in OBJECTS[kind][2].items()}
        z = float(rng.uniform(1.5, 3.0))  # close enough that objects fill a fair part of the frame
        x = float(rng.uniform(-0.55, 0.55) * z * math.tan(fov / 2))
        foot = _footprint(kind, dims)
        if any(math.hypot(x - o.x, z - o.z) < foot + _footprint(o.kind, o.dims) + 0.05 for o in objs):
            continue  # objects must not intersect: the ground truth assumes disjoint solids
        objs.append(Obj(kind, str(rng.choice(list(COLORS))), x, z, dims, float(rng.uniform(0, math.pi))))
    az, el = float(rng.uniform(-1.0, 1.0)), float(rng.uniform(0.7, 1.2))
    light = np.array([math.sin(az) * math.cos(el), math.sin(el), -math.cos(az) * math.cos(el) * 0.5])
    light /= np.linalg.norm(light)
    return Scene(seed, index, setting, wall, cam_height, pitch, fov, float(rng.uniform(6.0, 9.0)) if setting != "grass"
                 else 80.0, tuple(float(v) for v in light), int(rng.integers(0, 2**31 - 1)), tuple(objs))


def _footprint(kind: str, dims: dict[str, float]) -> float:
    """Radius of a circle on the floor that contains the object (for non-overlap)."""
    if "r" in dims:
        return dims["r"]
    return 0.5 * math.hypot(dims["w"], dims["d"])


def caption(scene: Scene, visible: list[Obj]) -> str:
    """'a red sports ball and a blue cup on a wooden floor in front of a grey wall' (objects left to right)."""
    words = [f"{'an' if o.color[0] in 'aeiou' else 'a'} {o.color} {o.coco_class}" for o in visible]
    if not words:
        things = "an empty scene"
    elif len(words) == 1:
        things = words[0]
    else:
        things = ", ".join(words[:-1]) + " and " + words[-1]
    _, floor_words, _, back_words = SETTINGS[scene.setting]
    return f"{things} {floor_words} {back_words.format(wall=scene.wall)}"
