"""T5-style span masking of sequence modalities with the reference's conventions, a batch at a time.

Conventions (those of the released 4M models, checked against the reference vectors in
``tests/fixtures/ml4m/text``):

* the sequence is its tokens followed by ``[EOS]``, truncated to ``max_tokens`` (so a full sequence loses
  its ``[EOS]``); metadata is masked in whole 2-token chunks and ``[EOS]`` is a chunk of its own;
* a unit is kept when ``u <= keep_prob`` (u uniform); masked runs are spans ``1..n``: the input replaces
  span k by sentinel ``[S_k]`` (id ``4 + k``), the target is ``[S_1] span_1 ... [S_n] span_n [S_{n+1}]``
  (it ends with the next sentinel; ``[EOS]`` stays inside the sequence, in the input or in a span);
* an input longer than its budget is masked again with ``keep_prob * 0.9`` until it fits; a zero input
  budget masks everything and keeps no input;
* a target longer than its budget is cut to a window that starts at a sentinel drawn among all but the
  last one, or, when less than the budget is left from there, at the first sentinel after which the rest
  fits.

Everything is vectorised over the batch: the keep-probability decay redraws only the rows still over
their budget.
"""

from __future__ import annotations

import numpy as np
import torch

PAD, EOS, SENTINEL0, N_SENTINELS = 0, 3, 4, 200  # 4M-FACTS §2: [S_k] is id 4 + k
KEEP_DECAY = 0.9
DECAY_ROUNDS = 32  # keep-probability redraws screened together (see _redraw)
REALISED = 4  # of which at most this many are realised per row and pass


def sentinel(k: torch.Tensor) -> torch.Tensor:
    """Id of sentinel ``[S_k]``, k clamped to the 200 the vocabulary has."""
    return SENTINEL0 + k.clamp(0, N_SENTINELS - 1)


def with_eos(tok: torch.Tensor, length: torch.Tensor, present: torch.Tensor, max_tokens: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Append ``[EOS]`` and truncate to ``max_tokens``: (B, W) ids + (B,) lengths -> (B, max_tokens), (B,).

    Absent rows (``present`` False) get length 0. ``tok`` may be narrower than ``max_tokens`` (unpadded).
    """
    B, W = tok.shape
    out = tok.new_zeros((B, max_tokens + 1))
    w = min(W, max_tokens)
    out[:, :w] = tok[:, :w]
    n = length.long().clamp(max=max_tokens)
    out.scatter_(1, n[:, None], torch.full((B, 1), EOS, dtype=out.dtype))
    n = torch.where(present, (n + 1).clamp(max=max_tokens), torch.zeros_like(n))
    return out[:, :max_tokens], n


def input_length(kept: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, L) kept / valid tokens -> (B,) input length: kept tokens + one sentinel per masked span."""
    masked = valid & ~kept
    start = masked.clone()
    start[:, 1:] &= ~masked[:, :-1]
    return kept.sum(1) + start.sum(1)


def draw_kept(n: torch.Tensor, keep_prob: torch.Tensor, budget: torch.Tensor, L: int, chunk: int,
              generator: torch.Generator) -> torch.Tensor:
    """Which of the ``n`` valid tokens of each row stay in the input: (B, L) bool.

    Units of ``chunk`` tokens are kept with ``keep_prob`` (B,); rows whose input (kept tokens + span
    sentinels) exceeds ``budget`` (B,) are redrawn with ``keep_prob * 0.9`` until it fits. Rows with a zero
    budget keep nothing (their input is empty, see :func:`span_mask`).
    """
    B = n.shape[0]
    n_units = (L + chunk - 1) // chunk
    unit = torch.arange(L) // chunk

    def spread(k: torch.Tensor) -> torch.Tensor:  # unit flags -> token flags
        return k if chunk == 1 else k[..., unit]

    valid = torch.arange(L)[None] < n[:, None]
    p = torch.where(budget > 0, keep_prob.float(), torch.zeros_like(keep_prob, dtype=torch.float32))
    # float32 uniforms compared with <=, as the reference's torch.rand(n) <= keep_prob
    kept = spread(torch.rand(B, n_units, generator=generator) <= p[:, None]) & valid
    rows = torch.nonzero((input_length(kept, valid) > budget) & (budget > 0)).flatten()
    if rows.numel():
        _redraw(kept, rows, p, (n + chunk - 1) // chunk, valid, budget, n_units, spread, generator)
    return kept


def _redraw(kept: torch.Tensor, rows: torch.Tensor, p: torch.Tensor, n_valid_units: torch.Tensor,
            valid: torch.Tensor, budget: torch.Tensor, n_units: int, spread, generator: torch.Generator) -> None:
    """The keep-probability decay of :func:`draw_kept` for the rows over budget, in place.

    A Bernoulli(p) keep pattern is the same as a kept count c ~ Binomial(units, p) and then a uniform c-subset
    of the units. An attempt with c > budget certainly fails (the input has at least c tokens), so DECAY_ROUNDS
    attempts are screened at once by drawing only their counts; the first REALISED attempts that pass are
    realised (their sentinels may still push them over budget) and the first that fits is kept; a row with
    none goes on from the last attempt examined. The result has the distribution of drawing whole patterns
    one attempt at a time, at a fraction of the random numbers and tensor operations.
    """
    decay = KEEP_DECAY ** torch.arange(1, DECAY_ROUNDS + 1, dtype=torch.float64)
    K = DECAY_ROUNDS
    while rows.numel():
        R = rows.numel()
        probs = p[rows, None].double() * decay[None]  # (R, K)
        count = torch.binomial(n_valid_units[rows, None].expand(R, K).double(), probs, generator=generator)
        # the first REALISED candidate attempts (count within budget) of each row are realised together
        cand = count <= budget[rows, None]
        rank = cand.long().cumsum(1) - 1
        chosen = cand & (rank < REALISED)
        r_idx, k_idx = chosen.nonzero(as_tuple=True)  # row-major: each row's attempts in order
        fit = torch.zeros(R, K, dtype=torch.bool)
        patterns = None
        if r_idx.numel():
            M = r_idx.numel()
            # a uniform c-subset of the row's valid units: those of the c lowest ranks
            order_rank = random_ranks(M, n_units, generator, n_valid_units[rows[r_idx]])
            patterns = spread(order_rank < count[r_idx, k_idx].long()[:, None]) & valid[rows[r_idx]]
            fit[r_idx, k_idx] = input_length(patterns, valid[rows[r_idx]]) <= budget[rows[r_idx]]
        done = fit.any(1)
        first = fit.long().argmax(1)
        # the attempts examined: up to the first that fits; else up to the last realised candidate when a
        # row had more candidates than were realised, else all K (the others failed on their count)
        n_cand = cand.sum(1)
        last_realised = torch.where(chosen, torch.arange(K)[None], -1).max(1).values
        last = torch.where(done, first, torch.where(n_cand > REALISED, last_realised, K - 1))
        p[rows] = probs[torch.arange(R), last].float()
        if bool(done.any()):
            pick = fit[r_idx, k_idx] & (k_idx == first[r_idx]) & done[r_idx]
            kept[rows[r_idx[pick]]] = patterns[pick]
        rows = rows[~done]


def random_ranks(n: int, L: int, generator: torch.Generator, n_valid: torch.Tensor | None = None) -> torch.Tensor:
    """(n, L) int64: each row the ranks of a uniform random order of its entries (rank r = r-th in a shuffle).

    With ``n_valid`` (n,), only the first n_valid entries of a row are shuffled: they get ranks 0..n_valid-1,
    the rest rank after them. Sorting random keys is a cost centre of the masking, so the keys are 31-bit
    integers and the sort is numpy's radix sort (``kind="stable"`` on integers), several times faster than a
    float argsort. Equal keys (about one row of 196 in 10^5 has a pair) keep their index order, a negligible bias.
    """
    keys = torch.randint(0, 2**31 - 1, (n, L), generator=generator, dtype=torch.int32)
    if n_valid is not None:
        keys.masked_fill_(torch.arange(L)[None] >= n_valid[:, None], 2**31 - 1)
    perm = torch.from_numpy(np.argsort(keys.numpy(), axis=1, kind="stable"))
    return torch.empty_like(perm).scatter_(1, perm, torch.arange(L).expand(n, L))


def span_mask(tok: torch.Tensor, n: torch.Tensor, kept: torch.Tensor, budget_in: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs and targets of span masking with the kept pattern given.

    tok (B, L) ids, n (B,) valid lengths, kept (B, L) bool, budget_in (B,) (0: no input at all).
    Returns input ids (B, L) + lengths (B,), target ids (B, 2L + 1) + lengths (B,), and is_sentinel
    (B, 2L + 1) marking the target's sentinels. Absent rows (n = 0) have empty input and target.
    """
    B, L = tok.shape
    valid = torch.arange(L)[None] < n[:, None]
    kept = kept & valid
    masked = valid & ~kept
    start = masked.clone()
    start[:, 1:] &= ~masked[:, :-1]
    span = start.cumsum(1)  # 1-based span number of each masked token
    tok = tok.long()
    in_keep = kept | start
    in_vals = torch.where(kept, tok, sentinel(span))
    in_ids = _compact(in_vals, in_keep, L)
    in_len = torch.where(budget_in > 0, in_keep.sum(1), torch.zeros_like(n))
    # target: (sentinel, token) pairs, then the closing sentinel [S_{n+1}]
    pair_vals = torch.stack([sentinel(span), tok], 2).reshape(B, 2 * L)
    pair_keep = torch.stack([start, masked], 2).reshape(B, 2 * L)
    pair_sent = torch.stack([start, torch.zeros_like(start)], 2).reshape(B, 2 * L)
    body = pair_keep.sum(1)
    tgt = _compact(pair_vals, pair_keep, 2 * L + 1)
    is_sent = _compact(pair_sent, pair_keep, 2 * L + 1).bool()
    has = n > 0
    tgt.scatter_(1, body[:, None], torch.where(has, sentinel(span[:, -1] + 1), PAD)[:, None])
    is_sent.scatter_(1, body[:, None], has[:, None])
    tgt_len = torch.where(has, body + 1, torch.zeros_like(body))
    return in_ids, in_len, tgt, tgt_len, is_sent


def target_window(tgt_len: torch.Tensor, is_sent: torch.Tensor, budget: torch.Tensor, u: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and length of the part of each target that fits ``budget`` (B,): (B,), (B,).

    ``u`` (B,) uniform in [0, 1) picks the start sentinel among all but the last (the reference's
    ``np.random.randint(max(1, n_sentinels - 1))``); a target within budget starts at 0.
    """
    B, W = is_sent.shape
    over = tgt_len > budget
    n_sent = is_sent.sum(1)
    choice = (u * (n_sent - 1).clamp(min=1)).long()
    rank = is_sent.long().cumsum(1) - 1  # rank of each sentinel among the row's sentinels
    pos = torch.arange(W)[None].expand(B, W)
    chosen = torch.where(is_sent & (rank == choice[:, None]), pos, W).min(1).values
    # too little left after the chosen sentinel: the first sentinel from which the rest fits
    fits = is_sent & (pos >= (tgt_len - budget)[:, None])
    first_fit = torch.where(fits, pos, W).min(1).values
    start = torch.where(tgt_len - chosen >= budget, chosen, first_fit)
    start = torch.where(over, start, torch.zeros_like(start))
    return start, torch.where(over, torch.minimum(tgt_len - start, budget), tgt_len)


def _compact(values: torch.Tensor, keep: torch.Tensor, n: int) -> torch.Tensor:
    """The kept entries of each row moved to the front, in order, PAD after: (B, W) -> (B, n).

    A cumsum gives each kept entry its destination and one scatter writes it (no sort); dropped entries
    go to a spare column that is cut off.
    """
    B = keep.shape[0]
    dest = keep.long().cumsum(1) - 1
    dest = torch.where(keep & (dest < n), dest, torch.full_like(dest, n))
    out = values.new_zeros((B, n + 1))
    out.scatter_(1, dest, values)
    return out[:, :n]
