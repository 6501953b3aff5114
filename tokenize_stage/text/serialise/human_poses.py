"""human_poses: per person ``human v0=X0 v1=Y0 v2=X1 v3=Y1`` then four groups in random order
(4M-FACTS §3):

* ``pose`` + the 8 pose-VQ codes, each ``v0=t`` (t < 512) or ``v1=t-512``;
* ``global`` + 9 root-rotation entries g, ``v0=round(499.5 g + 499.5)``;
* ``shape`` + 10 betas b, ``v0=round(166.5 b + 499.5)``;
* ``camera`` + 3 values c, clipped to [-1, 19], ``v0=round(49.95 c + 49.95)``.

Rounding is Python's (halves to even) and only the camera values are clipped, as in the reference: a beta
outside [-3, 3] (or a global entry outside [-1, 1]) is written as the out-of-vocabulary word the reference
writes (``v0=1166``), which the tokenizer splits into word pieces; parse rejects it.

39 tokens per person; the text is ``none`` when there is nobody. Parse inverts the affine maps; errors for
in-range values are at most half a step: 0.5/499.5 (global), 0.5/166.5 (betas), 0.5/49.95 (camera),
0.5/999 (bbox); codes are exact. ``rng`` draws each person's group order (None: pose, global, shape, camera);
``group_orders`` gives them explicitly (one list of the four group words per person).
Persons keep the labeler's order; truncation keeps the first 7 (273 tokens + EOS <= 275).
"""

from __future__ import annotations

from dataclasses import dataclass

from fourm_core.structured import HumanPoses, Person
from tokenize_stage.text.serialise._common import (
    Rng,
    WordReader,
    coerce_rng,
    dequantise_unit,
    fit_units,
    join_units,
    quantise_unit,
    token_budget,
    value_word,
    vq_word,
)

MODALITY = "human_poses"
NONE = "none"
TOKENS_PER_PERSON = 39


@dataclass(frozen=True)
class AffineBins:
    """v = round(scale * x + offset), x clipped to [lo, hi] when ``clip``; maps [lo, hi] onto 0..999."""

    scale: float
    offset: float
    lo: float
    hi: float
    clip: bool = False

    def quantise(self, x: float) -> int:
        if self.clip:
            x = min(max(x, self.lo), self.hi)
        return round(self.scale * x + self.offset)

    def dequantise(self, v: int) -> float:
        return (v - self.offset) / self.scale

    @property
    def max_error(self) -> float:
        return 0.5 / self.scale


GLOBAL = AffineBins(499.5, 499.5, -1.0, 1.0)
BETAS = AffineBins(166.5, 499.5, -3.0, 3.0)
CAMERA = AffineBins(49.95, 49.95, -1.0, 19.0, clip=True)
BBOX_MAX_ERROR = 0.5 / 999

# group word -> (Person field, length, bins or None for VQ codes)
GROUPS: dict[str, tuple[str, int, AffineBins | None]] = {
    "pose": ("pose_tokens", 8, None),
    "global": ("global_orient", 9, GLOBAL),
    "shape": ("betas", 10, BETAS),
    "camera": ("camera", 3, CAMERA),
}


def person_words(p: Person, i: int, group_order: list[str]) -> list[str]:
    """The 39 words of person ``i`` with its groups in ``group_order``."""
    words = ["human"] + [value_word(a, quantise_unit(c, f"persons[{i}].bbox[{a}]")) for a, c in enumerate(p.bbox)]
    for group in group_order:
        field, _, bins = GROUPS[group]
        values = getattr(p, field)
        words.append(group)
        if bins is None:
            words += [vq_word(t, f"persons[{i}].{field}[{j}]") for j, t in enumerate(values)]
        else:
            # unclipped groups write any integer, as the reference does (out of range: not a vocabulary word)
            words += [f"v0={bins.quantise(x)}" for x in values]
    return words


def serialise(poses: HumanPoses, rng: Rng = None, *, max_tokens: int | None = None,
              group_orders: list[list[str]] | None = None) -> str:
    budget = token_budget(MODALITY) if max_tokens is None else max_tokens
    persons = poses.persons[: budget // TOKENS_PER_PERSON]  # truncate first so rng draws only kept persons
    if not persons:
        return NONE
    gen = coerce_rng(rng)
    order = list(GROUPS)
    if group_orders is not None and (len(group_orders) < len(persons)
                                     or any(sorted(g) != sorted(order) for g in group_orders)):
        raise ValueError(f"group_orders must give each of the {len(persons)} persons an order of {order}")
    units = []
    for i, p in enumerate(persons):
        if group_orders is not None:
            groups = list(group_orders[i])
        else:
            groups = order if gen is None else [order[j] for j in gen.permutation(len(order))]
        units.append(person_words(p, i, groups))
    # the reference ends every person with a space, so its text has a trailing one: kept, byte for byte
    return join_units(fit_units(units, budget)) + " "


def parse(text: str, *, strict: bool = True) -> HumanPoses:
    """Text back to :class:`HumanPoses`. ``strict=False`` (for model outputs) drops malformed persons."""
    r = WordReader(MODALITY, text, strict)
    if r.peek() == NONE:
        r.next(NONE)
        if not r.done() and strict:
            r.fail(f"unexpected {r.peek()!r} after 'none'")
        return HumanPoses()

    def person(n: int) -> Person:
        r.expect("human")
        fields: dict[str, object] = {"bbox": tuple(dequantise_unit(r.value(a, f"person {n} bbox")) for a in range(4))}
        for _ in GROUPS:
            group = r.next("a group word (pose, global, shape, camera)")
            if group not in GROUPS:
                r.fail(f"expected pose, global, shape or camera, got {group!r}", back=1)
            field, length, bins = GROUPS[group]
            if field in fields:
                r.fail(f"group {group!r} appears twice for person {n}", back=1)
            if bins is None:
                fields[field] = tuple(r.vq(f"person {n} {group} code") for _ in range(length))
            else:
                fields[field] = tuple(bins.dequantise(r.value(0, f"person {n} {group} value")) for _ in range(length))
        try:
            return Person(**fields)
        except ValueError as e:
            r.fail(f"person {n} is invalid: {e}")

    return HumanPoses(persons=r.units(lambda w: w == "human", person))
