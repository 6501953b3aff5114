"""Curation rules: caption cleaning, image geometry, source score columns, and Gopher-style text quality.

Each refusal is a :class:`SampleFailure` with a stable reason code (``too_small``, ``aspect_ratio``,
``score_filter``, ``no_caption``, ``low_quality``); settings come from ``ingest.filters`` and ``ingest.text``
and are part of the cache key, so they are recorded in every manifest's lineage.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from functools import lru_cache
from typing import Any

from fourm_core.config import ImageFilterConfig, TextFilterConfig

from .samples import SampleFailure

_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>", re.S)  # tags, not "a < b > c"
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\S+")


def clean_caption(text: str | None) -> str | None:
    """HTML entities unescaped (twice, for ``&amp;quot;``), tags and comments removed, whitespace collapsed.
    None for a missing or blank caption."""
    if text is None:
        return None
    for _ in range(2):
        if "&" not in text:
            break
        text = html.unescape(text)
    text = _SPACE.sub(" ", _TAG.sub(" ", text)).strip()
    return text or None


def clean_document(text: str) -> str:
    """Like :func:`clean_caption` for documents: entities and tags, but line breaks are kept (paragraphs
    matter to the quality rules and to readers); runs of spaces collapse and blank lines are dropped."""
    if "&" in text:
        text = html.unescape(text)
    text = _TAG.sub(" ", text)
    lines = (re.sub(r"[ \t\f\v]+", " ", ln).strip() for ln in text.splitlines())
    return "\n".join(ln for ln in lines if ln)


def geometry_crop(width: int, height: int, cfg: ImageFilterConfig) -> tuple[int, int] | None:
    """Check an image's (oriented, original) size. Returns None when it passes as is, or the (w, h) to
    centre-crop it to when it is longer than ``max_aspect_ratio`` allows and ``aspect_action`` is crop.

    Raises ``too_small`` (shorter side < ``min_side``) or ``aspect_ratio`` (``aspect_action`` reject).
    """
    short, long_ = min(width, height), max(width, height)
    if short < cfg.min_side:
        raise SampleFailure("too_small", f"{width}x{height}: shorter side {short} < ingest.filters.min_side "
                                         f"{cfg.min_side}")
    bound = cfg.max_aspect_ratio
    if bound is None or long_ <= short * bound:
        return None
    if cfg.aspect_action == "reject":
        raise SampleFailure("aspect_ratio", f"{width}x{height}: aspect ratio {long_ / short:.2f} > "
                                            f"ingest.filters.max_aspect_ratio {bound}")
    keep = max(short, math.floor(short * bound))
    return (keep, height) if width > height else (width, keep)


def check_scores(meta: dict[str, Any] | None, cfg: ImageFilterConfig) -> None:
    """Refuse a sample whose kept source column is outside [min_scores, max_scores] (``score_filter``).
    A filtered column that the sample lacks (or holds null) is refused too: unknown is not 'passes'."""
    for col, lo in cfg.min_scores.items():
        v = (meta or {}).get(col)
        if v is None or not v >= lo:
            raise SampleFailure("score_filter", f"{col} = {v} < {lo} (ingest.filters.min_scores)")
    for col, hi in cfg.max_scores.items():
        v = (meta or {}).get(col)
        if v is None or not v <= hi:
            raise SampleFailure("score_filter", f"{col} = {v} > {hi} (ingest.filters.max_scores)")


# Gopher quality rules (Rae et al. 2021, appendix A; the same rules and thresholds as datatrove's
# GopherQualityFilter and GopherRepetitionFilter).
_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_SYMBOLS = ("#", "...", "…")
_BULLETS = ("•", "-", "*", "·", "‣", "◦", "⁃")


def _top_ngram_char_frac(words: list[str], n: int) -> float:
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return count * sum(len(w) for w in gram) / max(1, sum(len(w) for w in words))


def _dup_ngram_char_frac(words: list[str], n: int) -> float:
    """Fraction of characters inside n-grams that occur more than once (each word counted once)."""
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            for j in range(i, i + n):
                covered[j] = True
    return sum(len(w) for w, c in zip(words, covered) if c) / max(1, sum(len(w) for w in words))


@lru_cache(maxsize=1)
def _language_identifier():
    """py3langid's bundled model (numpy arrays, no pickle), loaded once per process (~0.7 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of ``text``'s language."""
    lang, prob = _language_identifier().classify(text)
    return lang, float(prob)


def quality_failure(text: str, cfg: TextFilterConfig) -> str | None:
    """The first rule ``text`` fails (language, then Gopher's), as ``"rule: value vs bound"``; None when it passes
    every rule."""
    if cfg.languages:
        lang, prob = identify_language(text)
        if lang not in cfg.languages or prob < cfg.min_language_prob:
            return f"language: {lang} (p={prob:.2f}) not in {cfg.languages} with p >= {cfg.min_language_prob}"
    words = _WORD.findall(text)
    n = len(words)
    if not cfg.min_words <= n <= cfg.max_words:
        return f"words: {n} not in [{cfg.min_words}, {cfg.max_words}]"
    mean_len = sum(len(w) for w in words) / n
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return f"mean_word_length: {mean_len:.2f} not in [{cfg.min_mean_word_length}, {cfg.max_mean_word_length}]"
    symbols = sum(text.count(s) for s in _SYMBOLS)
    if symbols / n > cfg.max_symbol_word_ratio:
        return f"symbol_word_ratio: {symbols / n:.3f} > {cfg.max_symbol_word_ratio}"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines:
        bullets = sum(ln.lstrip().startswith(_BULLETS) for ln in lines) / len(lines)
        if bullets > cfg.max_bullet_lines_frac:
            return f"bullet_lines_frac: {bullets:.2f} > {cfg.max_bullet_lines_frac}"
        ellipsis = sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines)
        if ellipsis > cfg.max_ellipsis_lines_frac:
            return f"ellipsis_lines_frac: {ellipsis:.2f} > {cfg.max_ellipsis_lines_frac}"
    alpha = sum(any(c.isalpha() for c in w) for w in words) / n
    if alpha < cfg.min_alpha_words_frac:
        return f"alpha_words_frac: {alpha:.2f} < {cfg.min_alpha_words_frac}"
    stops = len({w.lower() for w in words} & _STOP_WORDS)
    if stops < cfg.min_stop_words:
        return f"stop_words: {stops} < {cfg.min_stop_words}"
    if lines:
        line_counts = Counter(lines)
        dup_lines = sum(c for c in line_counts.values() if c > 1) - sum(1 for c in line_counts.values() if c > 1)
        if dup_lines / len(lines) > cfg.max_dup_line_frac:
            return f"dup_line_frac: {dup_lines / len(lines):.2f} > {cfg.max_dup_line_frac}"
        dup_chars = sum(len(ln) * (c - 1) for ln, c in line_counts.items() if c > 1)
        if dup_chars / max(1, len(text)) > cfg.max_dup_line_char_frac:
            return f"dup_line_char_frac: {dup_chars / len(text):.2f} > {cfg.max_dup_line_char_frac}"
    lowered = [w.lower() for w in words]
    for k, bound in ((2, cfg.max_top_2gram_char_frac), (3, cfg.max_top_3gram_char_frac),
                     (4, cfg.max_top_4gram_char_frac)):
        frac = _top_ngram_char_frac(lowered, k)
        if frac > bound:
            return f"top_{k}gram_char_frac: {frac:.2f} > {bound}"
    frac = _dup_ngram_char_frac(lowered, 5)
    if frac > cfg.max_dup_5gram_char_frac:
        return f"dup_5gram_char_frac: {frac:.2f} > {cfg.max_dup_5gram_char_frac}"
    return None
