"""The labeler registry and the dependency graph.

Labelers are registered by import path so that listing them imports no model code. Plugins (extra
labelers, e.g. in tests or in a user's package) are ``module:Class`` strings from the config.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from .spec import CAPTION, RGB, Labeler

LABELERS: dict[str, str] = {
    "canny": "pseudolabel.labelers.canny:CannyLabeler",
    "color_palette": "pseudolabel.labelers.palette:PaletteLabeler",
    "depth": "pseudolabel.labelers.depth:DepthLabeler",
    "normals": "pseudolabel.labelers.normals:NormalsLabeler",
    "semseg": "pseudolabel.labelers.semseg:SemsegLabeler",
    "clip": "pseudolabel.labelers.clip:ClipLabeler",
    "dinov2": "pseudolabel.labelers.dinov2:Dinov2Labeler",
    "imagebind": "pseudolabel.labelers.imagebind:ImageBindLabeler",
    "t5": "pseudolabel.labelers.t5:T5Labeler",
    "sam": "pseudolabel.labelers.sam:SamLabeler",
    "detection": "pseudolabel.labelers.detection:DetectionLabeler",
    "human_poses": "pseudolabel.labelers.human_poses:HumanPosesLabeler",
    "metadata": "pseudolabel.labelers.metadata:MetadataLabeler",
}


class LabelerGraphError(ValueError):
    pass


@lru_cache(maxsize=None)
def _load(path: str) -> type[Labeler]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def plugin_map(plugins: tuple[str, ...] = ()) -> dict[str, str]:
    """Registry plus plugins (``module:Class``), keyed by labeler name."""
    out = dict(LABELERS)
    for p in plugins:
        out[_load(p).name] = p
    return out


def labeler_class(name: str, plugins: tuple[str, ...] = ()) -> type[Labeler]:
    table = plugin_map(plugins)
    if name not in table:
        raise KeyError(f"unknown labeler {name!r}; known: {', '.join(sorted(table))}")
    return _load(table[name])


# label -> labeler, for the built-in labelers (static, so resolving the graph imports no model code)
BUILTIN_OUTPUTS: dict[str, tuple[str, ...]] = {
    "canny": ("canny_edge",), "color_palette": ("color_palette",), "depth": ("depth",), "normals": ("normal",),
    "semseg": ("semseg",), "clip": ("clip_features",), "dinov2": ("dinov2_features", "dinov2_global"),
    "imagebind": ("imagebind_features", "imagebind_global"), "t5": ("t5_caption",), "metadata": ("metadata",),
    "sam": ("sam_instance", "sam_edge"), "detection": ("det",), "human_poses": ("human_poses",),
}


def producers(plugins: tuple[str, ...] = ()) -> dict[str, str]:
    """label name -> labeler that produces it."""
    out = {label: name for name, labels in BUILTIN_OUTPUTS.items() for label in labels}
    for p in plugins:
        cls = _load(p)
        out.update({label: cls.name for label in cls.outputs})
    return out


def resolve_order(selected: list[str], plugins: tuple[str, ...] = ()) -> list[str]:
    """Topological order of the selected labelers; a hard need on an unselected labeler is an error."""
    prod = producers(plugins)
    available = {label for n in selected for label in labeler_class(n, plugins).outputs}
    deps: dict[str, set[str]] = {}
    for n in selected:
        cls = labeler_class(n, plugins)
        deps[n] = set()
        for need in cls.needs:
            if need in (RGB, CAPTION):
                continue
            if need not in available:
                raise LabelerGraphError(f"labeler '{n}' needs label '{need}', made by labeler "
                                        f"'{prod.get(need, '?')}', which is not selected")
            deps[n].add(prod[need])
        deps[n] |= {prod[o] for o in cls.optional_needs if o in available}
    order: list[str] = []
    temp: set[str] = set()

    def visit(n: str) -> None:
        if n in order:
            return
        if n in temp:
            raise LabelerGraphError(f"dependency cycle through labeler '{n}'")
        temp.add(n)
        for d in sorted(deps[n]):
            visit(d)
        temp.discard(n)
        order.append(n)

    for n in selected:
        visit(n)
    return order
