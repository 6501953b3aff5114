"""Helpers shared by the serialisers: value tokens, quantisation, truncation, and a word reader for parsing.

Every serialiser builds a list of *units* (a box, a chunk, a person, ...); each unit is a list of words and
each word is exactly one token of the shared vocabulary (value tokens, class names such as "traffic light",
and the structure words). So a serialiser knows its token count without a tokenizer, and the tests check
that count against the reference tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from fourm_core.modalities import get_modality
from fourm_core.structured import VQ_CODES
from tokenize_stage.text.vocab import CLASS_TOKENS, EOS, NUM_VALUE_AXES, NUM_VALUES

COORD_SCALE = 999  # normalised coordinates in [0, 1] map to value tokens 0..999
VQ_SPLIT = 512  # VQ code t is written v0=t for t < 512, else v1=t-512 (4M-FACTS §3)
EOS_RESERVE = 1  # the masking code appends [EOS]; budgets leave room for it (det: 51 boxes = 255 + 1 = 256)
# metadata is the exception: like the reference, its whole 2-token chunks fill all 40 slots when 20+ fields are
# present and the [EOS] chunk is the one dropped (the masking code truncates [EOS] away when there is no room)
NO_EOS_RESERVE = frozenset({"metadata"})

Rng = np.random.Generator | int | None
T = TypeVar("T")
_EOS = EOS.lower()  # words are lowercased like the tokenizer's normaliser does


class ParseError(ValueError):
    """Serialised text that does not follow the grammar of its modality."""


def coerce_rng(rng: Rng) -> np.random.Generator | None:
    """``None`` stays ``None`` (canonical, deterministic output); an int seeds a new generator."""
    if rng is None or isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def token_budget(modality: str) -> int:
    """Most tokens a serialisation may have: the registry's ``max_tokens`` minus the EOS slot (metadata: all of
    ``max_tokens``, see ``NO_EOS_RESERVE``)."""
    return get_modality(modality).max_tokens - (0 if modality in NO_EOS_RESERVE else EOS_RESERVE)


def quantise_unit(x: float, field: str) -> int:
    """A normalised coordinate in [0, 1] to 0..999: ``round(x * 999)`` with Python's round (halves to even, as
    the reference); error |x - q/999| <= 0.5/999."""
    if not (0.0 <= x <= 1.0):  # also catches NaN
        raise ValueError(f"{field}={x!r} is not a normalised coordinate in [0, 1]")
    return round(x * COORD_SCALE)


def dequantise_unit(q: int) -> float:
    return q / COORD_SCALE


def value_word(axis: int, value: int, field: str = "value") -> str:
    """The value token ``v{axis}={value}``, with an error naming ``field`` when it is out of range."""
    if not 0 <= value < NUM_VALUES:
        raise ValueError(f"{field}={value} does not fit a value token (0..{NUM_VALUES - 1})")
    return f"v{axis}={value}"


def vq_word(code: int, field: str = "code") -> str:
    """A VQ code as one value token: ``v0=t`` if t < 512 else ``v1=t-512``."""
    if not 0 <= code < VQ_CODES:
        raise ValueError(f"{field}={code} is not a VQ code in 0..{VQ_CODES - 1}")
    return f"v0={code}" if code < VQ_SPLIT else f"v1={code - VQ_SPLIT}"


def parse_value_word(word: str) -> tuple[int, int] | None:
    """``"v2=17"`` -> (2, 17); anything else -> None."""
    if len(word) < 4 or word[0] != "v" or word[2] != "=" or not word[1].isdigit():
        return None
    axis, digits = int(word[1]), word[3:]
    if axis >= NUM_VALUE_AXES or not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
        return None
    value = int(digits)
    return (axis, value) if value < NUM_VALUES else None


def fit_units(units: Sequence[Sequence[str]], budget: int) -> list[Sequence[str]]:
    """Truncation rule shared by all serialisers: keep the longest prefix of whole units within budget."""
    kept, used = [], 0
    for unit in units:
        if used + len(unit) > budget:
            break
        kept.append(unit)
        used += len(unit)
    return kept


def join_units(units: Sequence[Sequence[str]]) -> str:
    return " ".join(w for unit in units for w in unit)


# Multi-word class names ("traffic light") are one token; the word splitter keeps them together.
_SECOND_WORDS: dict[str, set[str]] = {}
for _name in CLASS_TOKENS:
    if " " in _name:
        _first, _second = _name.split(" ", 1)
        _SECOND_WORDS.setdefault(_first, set()).add(_second)


def split_words(text: str) -> list[str]:
    """Whitespace split that keeps two-word COCO class names together; input is lowercased, as the
    tokenizer's normaliser does."""
    raw = text.lower().split()
    out, i = [], 0
    while i < len(raw):
        if i + 1 < len(raw) and raw[i + 1] in _SECOND_WORDS.get(raw[i], ()):
            out.append(f"{raw[i]} {raw[i + 1]}")
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return out


class WordReader:
    """A cursor over the words of one serialised string, with errors that say where parsing failed.

    ``strict=False`` is for model outputs: the text ends at the first ``[EOS]``, other bracketed control
    tokens (padding, sentinels) are ignored, and :meth:`units` skips a malformed unit instead of raising.
    """

    def __init__(self, modality: str, text: str, strict: bool = True):
        if not isinstance(text, str):
            raise TypeError(f"{modality}: parse expects a str, got {type(text).__name__}")
        words = split_words(text)
        if not strict:
            if _EOS in words:
                words = words[: words.index(_EOS)]
            words = [w for w in words if not (w.startswith("[") and w.endswith("]"))]
        self.modality, self.words, self.pos, self.strict = modality, words, 0, strict

    def units(self, is_start: Callable[[str], bool], parse_unit: Callable[[int], T]) -> list[T]:
        """Parse units with ``parse_unit(index)`` until the text ends. Strict: the first error propagates.
        Lenient: a unit that fails is dropped and reading resumes at the next word where ``is_start`` holds."""
        out = []
        while not self.done():
            start = self.pos
            try:
                out.append(parse_unit(len(out)))
            except ParseError:
                if self.strict:
                    raise
                self.pos = start + 1
                while not self.done() and not is_start(self.words[self.pos]):
                    self.pos += 1
        return out

    def done(self) -> bool:
        return self.pos >= len(self.words)

    def peek(self) -> str | None:
        return None if self.done() else self.words[self.pos]

    def next(self, what: str) -> str:
        if self.done():
            self.fail(f"text ended, expected {what}")
        self.pos += 1
        return self.words[self.pos - 1]

    def expect(self, word: str) -> None:
        got = self.next(repr(word))
        if got != word:
            self.fail(f"expected {word!r}, got {got!r}", back=1)

    def value(self, axis: int, what: str) -> int:
        word = self.next(f"{what} (v{axis}=...)")
        parsed = parse_value_word(word)
        if parsed is None or parsed[0] != axis:
            self.fail(f"expected {what} as v{axis}=<0..999>, got {word!r}", back=1)
        return parsed[1]

    def vq(self, what: str) -> int:
        word = self.next(f"{what} (v0=t or v1=t-512)")
        parsed = parse_value_word(word)
        if parsed is None or parsed[0] > 1 or (parsed[0] == 1 and parsed[1] >= VQ_CODES - VQ_SPLIT):
            self.fail(f"expected {what} as v0=<t> or v1=<t-512>, got {word!r}", back=1)
        return parsed[1] + VQ_SPLIT * parsed[0]

    def fail(self, message: str, back: int = 0) -> None:
        raise ParseError(f"{self.modality}: {message} at word {self.pos - back}")
