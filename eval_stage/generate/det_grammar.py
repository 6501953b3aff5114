"""Grammar-constrained decoding of ``det`` written from scratch (decoder "[S_1] box ... box [EOS] [S_2]").

The det serialisation (4M-FACTS §3, tokenize_stage.text.serialise.det) is a list of 5-token boxes
``v0=X0 v1=Y0 v2=X1 v3=Y1 <class>`` then ``[EOS]``. A free decoder can write what the parser then drops
(a class word where a coordinate belongs, ``v2`` < ``v0``, a non-class word): :func:`det_allowed` allows at each
step only the tokens that keep the sequence parseable, as sequence detectors decode (Pix2Seq's constrained
token types). Among the allowed tokens the model's own ranking is kept.

Per row, with n tokens written after "[S_1]": at a box boundary (n % 5 == 0) a ``v0=`` value or ``[EOS]``
(after ``[EOS]``: only the closing sentinel); then ``v1=`` any, ``v2=`` >= X0, ``v3=`` >= Y0, then one of the
80 COCO class tokens.

Coordinates are 1000 ordered bins whose output embeddings the model learns independently: a model that has
only roughly located an object spreads its probability over many neighbouring bins, and greedy decoding picks
one spike of that spread. ``coordinates="median"`` writes the median bin of the allowed distribution instead
(the value that minimises the expected absolute error under the model's distribution); class tokens and
``[EOS]`` stay greedy.
"""

from __future__ import annotations

from typing import Literal

import torch

from tokenize_stage.text.vocab import CLASS_OFFSET, CLASS_TOKENS, NUM_VALUES, VALUE_OFFSET

from .autoregressive import LogitsProcessor
from .inputs import EOS

BOX_TOKENS = 5


def det_grammar(min_boxes: int = 0, max_boxes: int | None = None,
                coordinates: Literal["greedy", "median"] = "greedy") -> LogitsProcessor:
    """The det grammar as a logits processor for :func:`.autoregressive.decode_sequence`: the tokens
    :func:`det_allowed` forbids at -inf, ``[EOS]`` forbidden before ``min_boxes`` boxes and forced after
    ``max_boxes`` (None: wherever the model writes it); ``coordinates="median"`` see the module doc."""

    def process(logits: torch.Tensor, target: torch.Tensor, t: int, end: torch.Tensor) -> torch.Tensor:
        allowed = det_allowed(target, t, logits.shape[-1], end)
        if t % BOX_TOKENS == 0:
            boxes = t // BOX_TOKENS
            open_rows = ~(target[:, 1: t + 1] == EOS).any(1) if t else torch.ones_like(allowed[:, 0])
            if boxes < min_boxes:
                allowed[open_rows, EOS] = False
            elif max_boxes is not None and boxes >= max_boxes:
                allowed[open_rows] = False
                allowed[open_rows, EOS] = True
        out = logits.masked_fill(~allowed, float("-inf"))
        if coordinates == "median" and t % BOX_TOKENS in (1, 2, 3):  # v0 (slot 0) competes with [EOS]: below
            out = _median_only(out, slice(VALUE_OFFSET + (t % BOX_TOKENS) * NUM_VALUES,
                                          VALUE_OFFSET + (t % BOX_TOKENS + 1) * NUM_VALUES))
        elif coordinates == "median" and t % BOX_TOKENS == 0:
            out = _median_unless_end(out)
        return out

    return process


def _median_only(logits: torch.Tensor, axis: slice) -> torch.Tensor:
    """Keep only the median bin of ``axis`` (its logit unchanged, so its confidence is still the model's)."""
    p = logits[:, axis].softmax(-1)
    median = (p.cumsum(-1) < 0.5).sum(-1).clamp(max=NUM_VALUES - 1)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep[torch.arange(len(logits)), axis.start + median] = True
    return logits.masked_fill(~keep, float("-inf"))


def _median_unless_end(logits: torch.Tensor) -> torch.Tensor:
    """At a box boundary: [EOS] when the model's greedy choice is [EOS], else the median ``v0=`` bin (rows after
    [EOS], whose only allowed token is the closing sentinel, are left as they are)."""
    axis = slice(VALUE_OFFSET, VALUE_OFFSET + NUM_VALUES)
    has_box = torch.isfinite(logits[:, axis]).any(-1)
    ends = logits.argmax(-1) == EOS
    median = _median_only(logits, axis)
    return torch.where((has_box & ~ends)[:, None], median, logits)


def det_allowed(target: torch.Tensor, t: int, vocab: int, end: torch.Tensor) -> torch.Tensor:
    """Allowed next tokens (B, V) bool for the prefix ``target[:, : t + 1]`` ("[S_1]" then t tokens).

    ``end`` (B,) is each row's closing sentinel."""
    B = target.shape[0]
    device = target.device
    allowed = torch.zeros(B, vocab, dtype=torch.bool, device=device)
    written = target[:, 1: t + 1]
    done = (written == EOS).any(1) if t else torch.zeros(B, dtype=torch.bool, device=device)
    phase = t % BOX_TOKENS
    values = torch.arange(NUM_VALUES, device=device)
    if phase == 0:
        allowed[:, VALUE_OFFSET: VALUE_OFFSET + NUM_VALUES] = True
        allowed[:, EOS] = True
    elif phase == 4:
        allowed[:, CLASS_OFFSET: CLASS_OFFSET + len(CLASS_TOKENS)] = True
    else:
        lo = torch.zeros(B, dtype=torch.long, device=device)
        if phase >= 2:  # x1 >= x0, y1 >= y0: the parser drops the other boxes
            lo = (written[:, t - 2] - VALUE_OFFSET - (phase - 2) * NUM_VALUES).clamp(0, NUM_VALUES - 1)
        start = VALUE_OFFSET + phase * NUM_VALUES
        allowed[:, start: start + NUM_VALUES] = values[None] >= lo[:, None]
    # after [EOS] only the closing sentinel
    allowed[done] = False
    allowed[done, end[done]] = True
    return allowed
