"""The fixed head of the shared text vocabulary (4M-FACTS §2).

Ids 0-4283 are identical in every 4M text tokenizer, whatever corpus its remaining WordPiece entries were
learnt from: the masking code, the model's output heads and every serialiser rely on them. This module is the
single definition of that layout; ``wordpiece.py`` trains and checks tokenizers against it.
"""

from __future__ import annotations

from fourm_core.coco import COCO_THING_CLASSES

PAD, UNK, SOS, EOS = "[PAD]", "[UNK]", "[SOS]", "[EOS]"
CONTROL_TOKENS: tuple[str, ...] = (PAD, UNK, SOS, EOS)  # ids 0-3

NUM_SENTINELS = 200  # [S_0]..[S_199], ids 4-203: T5-style span-masking sentinels
SENTINEL_TOKENS: tuple[str, ...] = tuple(f"[S_{i}]" for i in range(NUM_SENTINELS))

NUM_VALUE_AXES = 4  # v0= .. v3=
NUM_VALUES = 1000  # each axis holds the integers 0..999
VALUE_TOKENS: tuple[str, ...] = tuple(f"v{a}={v}" for a in range(NUM_VALUE_AXES) for v in range(NUM_VALUES))

# The reference release lists the 80 COCO names alphabetically (Python string order), one token each, with the
# multi-word names spelt with a single space ("traffic light"); COCO category order is NOT used here.
CLASS_TOKENS: tuple[str, ...] = tuple(sorted(COCO_THING_CLASSES))

SPECIAL_TOKENS: tuple[str, ...] = CONTROL_TOKENS + SENTINEL_TOKENS + VALUE_TOKENS + CLASS_TOKENS

SENTINEL_OFFSET = len(CONTROL_TOKENS)  # 4
VALUE_OFFSET = SENTINEL_OFFSET + NUM_SENTINELS  # 204
CLASS_OFFSET = VALUE_OFFSET + NUM_VALUE_AXES * NUM_VALUES  # 4204
NUM_FIXED_IDS = CLASS_OFFSET + len(CLASS_TOKENS)  # 4284: ids below this are the same in every tokenizer

# Words the serialisers use that are ordinary (learnt) vocabulary, not part of the fixed head.
STRUCTURE_WORDS: tuple[str, ...] = ("human", "pose", "global", "shape", "camera", "point", "polygon", "none")

assert NUM_FIXED_IDS == 4284 and len(SPECIAL_TOKENS) == NUM_FIXED_IDS


def fixed_id(token: str) -> int:
    """Id of a token of the fixed head (control, sentinel, value or class token)."""
    try:
        return _FIXED_IDS[token]
    except KeyError:
        raise KeyError(f"{token!r} is not one of the {NUM_FIXED_IDS} fixed tokens of the text vocabulary") from None


def value_token_id(axis: int, value: int) -> int:
    """Id of ``v{axis}={value}`` without a tokenizer (axis 0-3, value 0-999)."""
    if not 0 <= axis < NUM_VALUE_AXES or not 0 <= value < NUM_VALUES:
        raise ValueError(f"value token v{axis}={value} is outside v0..v3 = 0..999")
    return VALUE_OFFSET + axis * NUM_VALUES + value


_FIXED_IDS: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
