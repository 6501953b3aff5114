"""color_palette: ``v1=k`` then k colours ``v0=R v0=G v0=B`` (0-255), k = 1..7 (4M-FACTS §3).

The labeler stores one palette per k (:class:`ColorPaletteSet`); serialising a set draws k uniformly from the
stored sizes with ``rng`` (the largest k when ``rng`` is None). A single :class:`ColorPalette` is written as is.
Colours are integers, so the round trip is exact. At most 1 + 3*7 = 22 tokens (+ EOS = 23): never truncated.
"""

from __future__ import annotations

from fourm_core.structured import MAX_PALETTE, ColorPalette, ColorPaletteSet
from tokenize_stage.text.serialise._common import Rng, WordReader, coerce_rng, parse_value_word, value_word

MODALITY = "color_palette"
MAX_ERROR = 0  # integer colours round-trip exactly


def choose(palettes: ColorPalette | ColorPaletteSet, rng: Rng = None) -> ColorPalette:
    """The palette to serialise: a drawn k for a set, the palette itself otherwise."""
    if isinstance(palettes, ColorPalette):
        return palettes
    if not isinstance(palettes, ColorPaletteSet):
        raise TypeError(f"{MODALITY}: expected ColorPalette or ColorPaletteSet, got {type(palettes).__name__}")
    gen = coerce_rng(rng)
    by_k = sorted(palettes.palettes, key=lambda p: len(p.colors))
    return by_k[-1] if gen is None else by_k[int(gen.integers(len(by_k)))]


def serialise(palettes: ColorPalette | ColorPaletteSet, rng: Rng = None) -> str:
    palette = choose(palettes, rng)
    words = [value_word(1, len(palette.colors), "k")]
    words += [value_word(0, c) for rgb in palette.colors for c in rgb]
    return " ".join(words)


def parse(text: str, *, strict: bool = True) -> ColorPalette:
    """Text back to :class:`ColorPalette`. ``strict=False`` (for model outputs) keeps the complete colours
    that follow ``v1=k`` (at most 7) whatever k says, and fails only when there is none."""
    r = WordReader(MODALITY, text, strict)
    if not strict:
        return _parse_lenient(r)
    k = r.value(1, "the palette size k")
    if not 1 <= k <= MAX_PALETTE:
        r.fail(f"palette size k={k} is not in 1..{MAX_PALETTE}", back=1)
    colors = []
    for i in range(k):
        rgb = tuple(r.value(0, f"colour {i} channel {c}") for c in "RGB")
        if max(rgb) > 255:
            r.fail(f"colour {i}={rgb} has a channel above 255")
        colors.append(rgb)
    if not r.done():
        r.fail(f"unexpected {r.peek()!r} after {k} colours")
    return ColorPalette(colors=colors)


def _parse_lenient(r: WordReader) -> ColorPalette:
    values = [v for w in r.words if (v := parse_value_word(w)) is not None and v[0] == 0 and v[1] <= 255]
    colors = [tuple(c for _, c in values[i:i + 3]) for i in range(0, len(values) - 2, 3)][:MAX_PALETTE]
    if not colors:
        r.fail("no complete colour in the text")
    return ColorPalette(colors=colors)
