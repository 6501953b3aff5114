"""T5-style span masking of sequence modalities with the reference's conventions, a batch at a time (numpy).

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

Everything is vectorised over the batch with numpy (at these sizes a numpy call costs a fraction of a torch
call); the keep-probability decay is sampled exactly without realising the rejected patterns (see
:func:`_decay`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD, EOS, SENTINEL0, N_SENTINELS = 0, 3, 4, 200  # 4M-FACTS §2: [S_k] is id 4 + k
KEEP_DECAY = 0.9
DECAY_ROUNDS = 16  # keep-probability attempts screened together (see _decay)


def sentinel(k: np.ndarray) -> np.ndarray:
    """Id of sentinel ``[S_k]``, k clamped to the 200 the vocabulary has."""
    return SENTINEL0 + np.clip(k, 0, N_SENTINELS - 1)


def with_eos(tok: np.ndarray, length: np.ndarray, present: np.ndarray, max_tokens: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Append ``[EOS]`` and truncate to ``max_tokens``: (B, W) ids + (B,) lengths -> (B, L) int32, (B,) int64.

    Absent rows (``present`` False) get length 0. ``tok`` may be narrower than ``max_tokens`` (unpadded).
    The width L is what the longest row needs (at most ``max_tokens``): nothing downstream depends on it.
    """
    B, W = tok.shape
    n = np.minimum(np.asarray(length, dtype=np.int64), max_tokens)
    out_len = np.where(present, np.minimum(n + 1, max_tokens), 0)
    L = max(1, int(out_len.max()) if B else 1)
    out = np.zeros((B, L + 1), dtype=np.int32)  # ids fit in 32 bits; half the memory traffic
    w = min(W, L)
    out[:, :w] = tok[:, :w]
    out[:, w:] = PAD  # columns past an unpadded input
    out[np.arange(B), np.minimum(n, L)] = EOS  # a row at max_tokens puts it in the spare column (cut)
    valid = np.arange(L + 1)[None] < out_len[:, None]
    out = np.where(valid, out, PAD)
    return out[:, :L], out_len


def input_length(kept: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, L) kept / valid tokens -> (B,) input length: kept tokens + one sentinel per masked span."""
    masked = valid & ~kept
    starts = masked[:, 0].astype(np.int64) + (masked[:, 1:] & ~masked[:, :-1]).sum(1)
    return kept.sum(1) + starts


def random_subset(size: np.ndarray, k: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """(R, width) bool: per row a uniform k-subset of ``range(size)`` (size, k: (R,) with k <= size <= width).

    The k lowest of ``size`` uniform float32 keys: below the (k+1)-th lowest, found by one row-wise sort
    (vectorised in numpy). A tie at that threshold (about one row in 10^5) would take one too few: such rows
    are drawn again, which keeps the subsets uniform.
    """
    R = size.shape[0]
    out = np.zeros((R, width), dtype=bool)
    todo = np.arange(R)
    while todo.size and width:
        n = todo.size
        keys = rng.random((n, width), dtype=np.float32)
        keys[np.arange(width)[None] >= size[todo, None]] = 2.0  # never chosen
        kk = k[todo]
        thr = np.sort(keys, axis=1).reshape(-1)[np.arange(n) * width + np.minimum(kk, width - 1)]
        chosen = keys < np.where(kk < width, thr, np.float32(3.0))[:, None]
        ok = chosen.sum(1) == kk
        out[todo[ok]] = chosen[ok]
        todo = todo[~ok]
    return out


def _spread(units: np.ndarray, chunk: int, L: int) -> np.ndarray:
    """Unit flags (B, U) -> token flags (B, L) (units past U: not kept)."""
    if units.shape[1] * chunk < L:
        units = np.pad(units, ((0, 0), (0, -(-L // chunk) - units.shape[1])))
    return units[:, :L] if chunk == 1 else units[:, np.arange(L) // chunk]


def draw_kept(n: np.ndarray, keep_prob: np.ndarray, budget: np.ndarray, L: int, chunk: int,
              rng: np.random.Generator) -> np.ndarray:
    """Which of the ``n`` valid tokens of each row stay in the input: (B, L) bool.

    Units of ``chunk`` tokens are kept with ``keep_prob`` (B,); rows whose input (kept tokens + span
    sentinels) exceeds ``budget`` (B,) are redrawn with ``keep_prob * 0.9`` until it fits. Rows with a zero
    budget keep nothing (their input is empty, see :func:`span_mask`).
    """
    draw = FirstDraw(n, keep_prob, budget, L, chunk, rng)
    if draw.rows.size:
        draw.set_units(decay(*draw.decay_args(), rng))
    return draw.kept


class FirstDraw:
    """The first keep pattern of each row (Bernoulli units, float32 uniforms compared with ``<=`` as the
    reference's ``torch.rand(n) <= keep_prob``) and the rows whose input it puts over budget (``rows``).

    Those rows' decay (:func:`decay`) can be drawn for several modalities at once (its Python overhead is
    per call); ``set_units`` then puts the unit patterns it returns in place.
    """

    def __init__(self, n: np.ndarray, keep_prob: np.ndarray, budget: np.ndarray, L: int, chunk: int,
                 rng: np.random.Generator) -> None:
        B = n.shape[0]
        self.n, self.budget, self.L, self.chunk = n, budget, L, chunk
        n_units = (L + chunk - 1) // chunk
        self.valid = np.arange(L)[None] < n[:, None]
        self.p = np.where(budget > 0, keep_prob, 0.0).astype(np.float64)
        u = rng.random((B, n_units), dtype=np.float32)
        self.kept = _spread(u <= self.p.astype(np.float32)[:, None], chunk, L) & self.valid
        self.rows = np.flatnonzero((input_length(self.kept, self.valid) > budget) & (budget > 0))

    def decay_args(self) -> tuple[np.ndarray, ...]:
        """(n, keep_prob, budget, chunk) of the over-budget rows, for :func:`decay`."""
        r = self.rows
        return self.n[r], self.p[r], self.budget[r], np.full(r.size, self.chunk)

    def set_units(self, units: np.ndarray) -> None:
        """Put the decayed unit patterns (len(rows), >= units of the longest row) of the over-budget rows."""
        self.kept[self.rows] = _spread(units, self.chunk, self.L) & self.valid[self.rows]


def decay(n: np.ndarray, p: np.ndarray, budget: np.ndarray, chunk: np.ndarray, rng: np.random.Generator
          ) -> np.ndarray:
    """The keep-probability decay for rows whose first pattern was over budget: (R, U) kept units.

    n (R,) valid tokens, p (R,) the first keep probability, budget (R,) >= 1, chunk (R,) tokens per unit
    (rows of several modalities can be drawn together); U = the most units of a row.

    Attempt t keeps each unit with p * 0.9^t and stops at the first pattern that fits. Only the input length
    of an attempt decides whether it fits, and that length has an exact distribution that needs no pattern:
    a Bernoulli pattern of ``nu`` units keeps c ~ Binomial(nu, p) units, uniformly placed; the masked units
    then form j runs with P(j | c) = C(c+1, j) C(nu-c-1, j-1) / C(nu, c), a hypergeometric law (j of the
    c+1 gaps around the kept units are non-empty); the input length is the kept tokens plus j. With chunks
    whose last one is short (metadata's lone [EOS]), the kept tokens also depend on whether the last unit is
    kept, i.e. the last gap is empty: probability (c+1-j)/(c+1). So DECAY_ROUNDS attempts are screened at
    once from these few numbers, and only the accepted attempt's pattern is realised, uniformly among the
    patterns with its (c, j, last unit kept): exactly the distribution of drawing attempt after attempt.
    """
    R = n.shape[0]
    nu = (n + chunk - 1) // chunk
    last = n - chunk * (nu - 1)  # tokens of the last unit
    partial = last < chunk
    p = p.copy()
    decay_t = KEEP_DECAY ** np.arange(1, DECAY_ROUNDS + 1, dtype=np.float64)
    c_acc = np.zeros(R, dtype=np.int64)
    j_acc = np.zeros(R, dtype=np.int64)
    lk_acc = np.zeros(R, dtype=bool)
    pending = np.arange(R)
    while pending.size:
        probs = p[pending, None] * decay_t[None]  # (P, K)
        nup = nu[pending, None]
        ch = chunk[pending, None]
        c = rng.binomial(np.broadcast_to(nup, probs.shape), probs)
        # an attempt certainly fails when even its fewest possible input tokens exceed the budget
        least = np.maximum(ch * c - (ch - 1), 0) + (c < nup)
        cand = least <= budget[pending, None]
        j = np.zeros_like(c)
        lk = np.zeros(c.shape, dtype=bool)
        if cand.any():
            cc, nn = c[cand], np.broadcast_to(nup, c.shape)[cand]
            full = cc >= nn
            jj = rng.hypergeometric(cc + 1, np.where(full, 0, nn - cc - 1), np.where(full, 0, nn - cc))
            j[cand] = jj
            lk[cand] = rng.random(jj.shape) * (cc + 1) < (cc + 1 - jj)
        kept_tokens = ch * c - np.where(partial[pending, None] & lk, ch - last[pending, None], 0)
        fit = cand & (kept_tokens + j <= budget[pending, None])
        done = fit.any(1)
        first = fit.argmax(1)
        idx = pending[done]
        c_acc[idx] = c[done, first[done]]
        j_acc[idx] = j[done, first[done]]
        lk_acc[idx] = lk[done, first[done]]
        p[pending[~done]] *= decay_t[-1]
        pending = pending[~done]
    return _realise(nu, c_acc, j_acc, lk_acc & partial, partial, rng)


def _realise(nu: np.ndarray, c: np.ndarray, j: np.ndarray, last_kept: np.ndarray, partial: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """A uniform pattern of ``nu`` units with c kept and the masked ones in j runs: (R, max nu) kept units.

    Which gaps (around the kept units) hold the runs is a uniform j-subset of the c+1 gaps (for rows with a
    short last unit, the last gap is held or not as ``last_kept`` says); the run lengths are a uniform
    composition of the nu - c masked units into j positive parts (a uniform (j-1)-subset of the cut points).
    """
    R = nu.shape[0]
    m = nu - c
    force_last = partial & ~last_kept & (j > 0)  # the last gap holds a run
    n_free = np.where(partial, c, c + 1)
    G = int((c + 1).max()) if R else 1
    gaps = random_subset(n_free, j - force_last, G, rng)
    gaps[force_last, c[force_last]] = True
    # gap_of_run[r, q]: index of the q-th non-empty gap
    f = np.flatnonzero(gaps)
    rank = np.cumsum(gaps, 1, dtype=np.int64).ravel()[f] - 1
    gap_of_run = np.zeros((R, G), dtype=np.int64)
    gap_of_run.ravel()[(f // G) * G + rank] = f % G
    M = max(int(m.max()), 1) if R else 1
    cuts = random_subset(np.maximum(m - 1, 0), np.maximum(j - 1, 0), M - 1, rng)  # cut after masked unit x
    run = np.zeros((R, M), dtype=np.int64)
    run[:, 1:] = np.cumsum(cuts, 1, dtype=np.int64)
    # masked unit x sits after the kept units of the gaps before its run's gap
    f = np.flatnonzero(np.arange(M)[None] < m[:, None])
    r = f // M
    pos = f % M + gap_of_run.ravel()[r * G + run.ravel()[f]]
    U = max(int(nu.max()), 1) if R else 1
    units = np.ones((R, U), dtype=bool)
    units.ravel()[r * U + pos] = False
    return units


@dataclass
class Spans:
    """Span masking of a batch of sequences (B rows, width L).

    in_ids (B, L) int32: the input (kept tokens and span sentinels), PAD after; in_len (B,) its length.
    tgt (B, 2L + 2) int32: ``[S_1] span_1 ... [S_n] span_n [S_{n+1}]``, PAD after; tgt_len (B,) its length.
    sent_pos (B, L + 2) int32: positions in ``tgt`` of its sentinels in order, ``2L + 2`` after; n_sent (B,).
    """

    in_ids: np.ndarray
    in_len: np.ndarray
    tgt: np.ndarray
    tgt_len: np.ndarray
    sent_pos: np.ndarray
    n_sent: np.ndarray


def span_mask(tok: np.ndarray, n: np.ndarray, kept: np.ndarray, budget_in: np.ndarray) -> Spans:
    """Inputs and targets of span masking with the kept pattern given.

    tok (B, L) ids, n (B,) valid lengths, kept (B, L) bool, budget_in (B,) (0: no input at all). Absent
    rows (n = 0) have empty input and target. Each target entry is written straight to its position: a
    masked token at i goes to (masked tokens up to i) - 1 + (its span number), a span's sentinel just before
    its first token.
    """
    B, L = tok.shape
    rows_b = np.arange(B)
    valid = np.arange(L)[None] < n[:, None]
    kept = kept & valid
    masked = valid & ~kept
    start = masked.copy()
    start[:, 1:] &= ~masked[:, :-1]
    span = np.cumsum(start, 1, dtype=np.int32)  # 1-based span number of each masked token
    in_keep = kept | start
    slot = np.cumsum(in_keep, 1, dtype=np.int32)  # 1-based input slot of each kept token / span sentinel
    tok_f, span_f = tok.ravel(), span.ravel()
    f = np.flatnonzero(in_keep)
    in_ids = np.zeros(B * L, dtype=np.int32)
    in_ids[(f // L) * L + slot.ravel()[f] - 1] = np.where(kept.ravel()[f], tok_f[f], sentinel(span_f[f]))
    in_len = np.where(budget_in > 0, slot[:, -1], 0)
    n_spans = span[:, -1]
    mcount = np.cumsum(masked, 1, dtype=np.int32)
    body = mcount[:, -1] + n_spans
    W = 2 * L + 2
    tgt = np.zeros(B * W, dtype=np.int32)
    f = np.flatnonzero(masked)
    tgt[(f // L) * W + mcount.ravel()[f] - 1 + span_f[f]] = tok_f[f]
    f = np.flatnonzero(start)
    r = f // L
    s_num = span_f[f]
    s_at = mcount.ravel()[f] + s_num - 2
    tgt[r * W + s_at] = sentinel(s_num)
    has = n > 0
    tgt[rows_b * W + body] = np.where(has, sentinel(n_spans + 1), PAD)
    sent_pos = np.full(B * (L + 2), W, dtype=np.int32)
    sent_pos[r * (L + 2) + s_num - 1] = s_at
    sent_pos[rows_b * (L + 2) + n_spans] = np.where(has, body, W)
    return Spans(in_ids.reshape(B, L), in_len, tgt.reshape(B, W), np.where(has, body + 1, 0),
                 sent_pos.reshape(B, L + 2), np.where(has, n_spans + 1, 0))


def shown_target_length(spans: Spans, shown: np.ndarray) -> np.ndarray:
    """(B,) length of the target prefix that asks only for spans the input shows when only its first ``shown``
    (B,) slots reach the encoder: ``[S_1] span_1 ... [S_k] span_k [S_{k+1}]`` for the k sentinels among those
    slots (the closing sentinel ends span k, as ``[S_{n+1}]`` ends a whole target), so a cut input's later
    spans are not asked for behind sentinels the encoder never saw. An input that shows nothing (``shown`` 0)
    keeps its first span: with every token masked (one span) that is the whole sequence as the target."""
    B, L = spans.in_ids.shape
    sentinel_ids = (spans.in_ids >= SENTINEL0) & (spans.in_ids < SENTINEL0 + N_SENTINELS)
    k = (sentinel_ids & (np.arange(L)[None] < shown[:, None])).sum(1)
    k = np.where(shown == 0, 1, k)
    S = spans.sent_pos.shape[1]
    closing = spans.sent_pos[np.arange(B), np.minimum(k, S - 1)] + 1
    return np.where(k < spans.n_sent, np.minimum(closing, spans.tgt_len), spans.tgt_len)


def target_window(tgt_len: np.ndarray, sent_pos: np.ndarray, n_sent: np.ndarray, budget: np.ndarray,
                  u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of the part of each target that fits ``budget`` (B,): (B,), (B,).

    ``u`` (B,) uniform in [0, 1) picks the start sentinel among all but the last (the reference's
    ``np.random.randint(max(1, n_sentinels - 1))``); a target within budget starts at 0.
    """
    B, S = sent_pos.shape
    rows = np.arange(B)
    none = sent_pos[0, -1] if B else 0  # the "no sentinel" position (past the target)
    over = tgt_len > budget
    choice = (u * np.maximum(n_sent - 1, 1)).astype(np.int64)
    chosen = np.where(choice < n_sent, sent_pos[rows, np.minimum(choice, S - 1)], none)
    # too little left after the chosen sentinel: the first sentinel from which the rest fits
    k = (sent_pos < (tgt_len - budget)[:, None]).sum(1)
    first_fit = np.where(k < n_sent, sent_pos[rows, np.minimum(k, S - 1)], none)
    start = np.where(tgt_len - chosen >= budget, chosen, first_fit)
    start = np.where(over, start, 0)
    return start, np.where(over, np.minimum(tgt_len - start, budget), tgt_len)
