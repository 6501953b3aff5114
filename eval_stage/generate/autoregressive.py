"""Autoregressive decoding of sequence targets (captions, det, ...), with or without a KV cache.

4M predicts a masked sequence T5-style (4M-FACTS §5), with the released models' conventions: the encoder
sees the sequence with its n masked spans replaced by sentinels [S_1] .. [S_n] (a sequence to write from
scratch is just "[S_1]"), and the decoder writes "[S_1] span_1 ... [S_n] span_n [S_{n+1}]" causally, slot t
being fed token t and predicting t+1. [EOS] is an ordinary token of the sequence (the last span of a
sequence written from scratch ends with it); decoding stops at the closing sentinel [S_{n+1}].
The encoder runs once; the decoder runs once per new token. With ``kv_cache`` the decoder keeps each
block's keys/values (:mod:`.kv_cache`); without it the model's full decoder reruns over the prefix
(the reference behaviour, kept as the ground truth for the cache and for the benchmark).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fourm_core.modalities import get_modality

from .adapter import EncoderSlots, ModelAdapter
from .guidance import Condition, combine, guided_slots
from .inputs import EOS, N_SENTINELS, PAD, SENTINEL0, closing_sentinel
from .kv_cache import KVCacheDecoder
from .sampling import sample
from .schedules import temperature_at


# (logits (B, V), target (B, T+1) so far, slot t, closing sentinels (B,)) -> logits (B, V) to sample from
# (e.g. with the tokens a grammar forbids at -inf)
LogitsProcessor = Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor]


@dataclass
class SequenceResult:
    """target (B, T+1): "[S_1] ... [S_{n+1}]" then PAD; logits (B, T, V) per decoded slot when recorded;
    confidence (B, T): the probability of each written token (``sampling.sample``'s confidence: under the
    processed logits when there is a ``process``), target[:, t + 1] <-> confidence[:, t]."""

    target: torch.Tensor
    logits: torch.Tensor | None = None
    confidence: torch.Tensor | None = None


@torch.no_grad()
def decode_sequence(adapter: ModelAdapter, slots: EncoderSlots, modality: str, generator: torch.Generator,
                    max_new_tokens: int | None = None, kv_cache: bool = True, temperature: float = 1.0,
                    temperature_end: float | None = None, temperature_schedule: str = "constant",
                    top_k: int | None = None, top_p: float | None = None, conditions: list[Condition] | None = None,
                    record_logits: bool = False, stop_at_end: bool = True, end: torch.Tensor | None = None,
                    process: LogitsProcessor | None = None) -> SequenceResult:
    """Decode the target sequence of ``modality`` for a batch of encoder slots (B, N_in).

    A row stops at its closing sentinel ``end`` (B,) (default [S_2]: the input had one span, "[S_1]");
    ``stop_at_end=False`` keeps decoding up to ``max_new_tokens`` (fixed-length benchmarks). ``process``
    (e.g. :func:`.det_grammar.det_grammar`) rewrites each step's logits before sampling."""
    mod = get_modality(modality)
    B = slots.tokens.shape[0]
    device = adapter.device
    T = min(max_new_tokens or mod.max_tokens, mod.max_tokens)  # one position per decoder slot
    P = 1 + len(conditions) if conditions else 1
    if conditions:
        slots = guided_slots(slots, conditions, keep_always=(modality,))
    ctx = adapter.encode(slots)
    target = torch.full((B, T + 1), PAD, dtype=torch.long, device=device)
    target[:, 0] = SENTINEL0 + 1
    end = torch.full((B,), closing_sentinel(1), device=device) if end is None else end.to(device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    cache = KVCacheDecoder(adapter, ctx, T) if kv_cache else None
    recorded = []
    confidence = torch.zeros(B, T, device=device)
    for t in range(T):
        if cache is not None:
            x = adapter.embed_decoder_tokens(modality, target[:, t:t + 1].repeat(P, 1),
                                             torch.full((P * B, 1), t, device=device))
            logits = adapter.to_logits(modality, cache.step(x))[:, 0]
        else:
            prefix = target[:, : t + 1].repeat(P, 1)
            pos = torch.arange(t + 1, device=device).expand(P * B, t + 1)
            y = adapter.decode_hidden(ctx, modality, prefix, pos, torch.ones_like(prefix, dtype=torch.bool))
            logits = adapter.to_logits(modality, y[:, -1])  # only the newest slot's prediction is needed
        logits = combine(logits, conditions) if conditions else logits.float()
        if process is not None:
            logits = process(logits, target, t, end)
        if record_logits:
            recorded.append(logits)
        temp = temperature_at(t, T, temperature, temperature_end, temperature_schedule)
        nxt, conf = sample(logits, temp, generator, top_k, top_p)
        confidence[:, t] = conf
        if stop_at_end:
            nxt = torch.where(finished, PAD, nxt)
            finished |= nxt == end
        target[:, t + 1] = nxt
        if stop_at_end and bool(finished.all()):
            break
    return SequenceResult(target, torch.stack(recorded, 1) if record_logits else None, confidence)


def merge_spans(given: torch.Tensor | None, target: torch.Tensor, max_len: int) -> torch.Tensor:
    """Fill the sentinels of the input with the spans of the decoded target.

    given (B, L) input ids with sentinels (None = "[S_1]"), target (B, T) "[S_1] span [S_2] span ... [S_{n+1}]"
    -> (B, L') completed ids up to (not including) the sequence's [EOS], right-padded with PAD, at most
    ``max_len`` long. A sentinel whose span the model did not write is dropped.
    """
    B = target.shape[0]
    rows = []
    for b in range(B):
        spans: dict[int, list[int]] = {}
        current = None
        src = [SENTINEL0 + 1] if given is None else [t for t in given[b].tolist() if t != PAD]
        end = closing_sentinel(sum(SENTINEL0 <= t < SENTINEL0 + N_SENTINELS for t in src))
        for tok in target[b].tolist():
            if tok in (end, PAD):
                break
            if SENTINEL0 <= tok < SENTINEL0 + N_SENTINELS:
                current = tok
                spans.setdefault(current, [])
            elif current is not None:
                spans[current].append(tok)
        out: list[int] = []
        for tok in src:
            out.extend(spans.get(tok, []) if SENTINEL0 <= tok < SENTINEL0 + N_SENTINELS else [tok])
        if EOS in out:  # the sequence ends there (inputs get their [EOS] back from build_slots)
            out = out[: out.index(EOS)]
        rows.append(out[:max_len])
    width = max(1, max(len(r) for r in rows))
    merged = torch.full((B, width), PAD, dtype=torch.long, device=target.device)
    for b, r in enumerate(rows):
        merged[b, : len(r)] = torch.tensor(r, dtype=torch.long)
    return merged
