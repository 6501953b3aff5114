"""Vectorised 4M multimodal masking (4M-FACTS §5): a whole batch in a few array ops.

Per sample: pick a mixture component, draw Dirichlet input/target budgets over the modalities the
sample has, cap them by what each modality can give, then pick disjoint random input/target positions
for image-like modalities and T5-style span masking with sentinels for sequences (chunk-wise for
metadata; zeroed spans for T5 embeddings). The result is a :class:`~train_stage.batch.MaskedBatch` with
``input_budget`` / ``target_budget`` slots per sample (``budget_mode: reference``: what a cap removes
stays unused; ``fill``: it is redistributed).

There is no per-sample Python loop: loops run over modalities (a fixed, small number) only. The work is
done in numpy, whose calls cost a fraction of torch's at these sizes (a few hundred rows); the caller's
torch generator seeds a numpy generator, so a seeded call stays deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fourm_core.modalities import ModalityKind, get_modality

from .batch import IGNORE, MODALITY_INDEX, MaskedBatch
from .mixture import MixtureConfig
from .span_masking import EOS, N_SENTINELS, PAD, SENTINEL0  # noqa: F401  (re-exported: ids used with batches)
from .span_masking import FirstDraw, decay, shown_target_length, span_mask, target_window, with_eos

_KEEP_CODES = {"random": 0, "all": 1, "binary": 2}
_EMB_OFFSET = 1 << 20  # T5 embedding rows are masked as ids past every sentinel id


@dataclass
class RawBatch:
    """Unmasked samples. For each modality the sample has (absent modalities have length 0):

    tokens[m] (B, L_m) int64: image-like: the full grid (row-major); sequences: padded with PAD.
    lengths[m] (B,) int64: valid tokens (image-like: L_m or 0).
    pixels[m] (B, n_patches, C*P*P) float for pixel modalities; embeddings[m] (B, L_m, F) for T5.
    present[m] (B,) bool: the sample has the modality (an empty sequence such as "no boxes" is present and
        masked as "[EOS]"); when not given, ``lengths > 0``.
    dataset (B,) int64: index of the dataset (row of the masker's mixture table).
    """

    tokens: dict[str, torch.Tensor] = field(default_factory=dict)
    lengths: dict[str, torch.Tensor] = field(default_factory=dict)
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    present: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) bool; default: lengths > 0
    dataset: torch.Tensor | None = None
    keys: list[str] | None = None  # sample keys, for tracing (not used by the masking)

    @property
    def batch_size(self) -> int:
        for d in (self.lengths, self.tokens):
            for v in d.values():
                return v.shape[0]
        raise ValueError("empty batch")


# ---------------------------------------------------------------------------------------- helpers


def numpy_rng(generator: torch.Generator | np.random.Generator) -> np.random.Generator:
    """A numpy generator seeded from the caller's torch generator (one draw from it), or the one given."""
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


def _np(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def log_gamma(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """log of Gamma(alpha, 1) draws, any shape; -inf where alpha == 0.

    Drawn as log G(alpha + 1) + log(U) / alpha, which stays finite for tiny alpha (G(0.01) itself is 0 in
    float64 about once in a thousand draws).
    """
    allowed = alpha > 0
    a = np.where(allowed, alpha, 1.0)
    g1 = rng.standard_gamma(a + 1.0)
    u = np.maximum(rng.random(alpha.shape), 1e-300)
    return np.where(allowed, np.log(g1) + np.log(u) / a, -np.inf)


def _dirichlet(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(B, M) Dirichlet draws (normalised Gammas, in log space); α = 0 entries and all-zero rows get 0."""
    lg = log_gamma(alpha, rng)
    has = (alpha > 0).any(1, keepdims=True)
    lg = np.where(has, lg, 0.0)
    e = np.exp(lg - lg.max(1, keepdims=True))
    return np.where(has, e / e.sum(1, keepdims=True), 0.0)


def sample_dirichlet(alpha: torch.Tensor, generator: torch.Generator | np.random.Generator) -> torch.Tensor:
    """Batched Dirichlet (B, M) float64 allowing α = 0 entries (they get 0); an all-zero row gives zeros.

    Normalised Gamma variables computed from their logarithms (see :func:`log_gamma`), so α = 0.01 never
    underflows to an all-zero row."""
    return torch.from_numpy(_dirichlet(_np(alpha).astype(np.float64), numpy_rng(generator)))


def dirichlet_budgets(alpha: np.ndarray, total: int, cap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The reference's token budgets: (B, M) alphas (0: no tokens), (B, M) caps -> (B, M) int64.

    ``floor(p * total)`` for a Dirichlet draw p, then the tokens the floors lost go one each to the argmax of
    fresh Dirichlet draws (so modalities with a tiny alpha rarely get them), then each budget is capped.
    What a cap removes is not given to anyone: a sample can use fewer than ``total`` tokens.
    """
    B, M = alpha.shape
    allowed = alpha > 0
    has = allowed.any(1)
    k = np.floor(_dirichlet(alpha, rng) * total).astype(np.int64)
    diff = np.where(has, total - k.sum(1), 0)
    D = int(diff.max()) if B else 0
    if D > 0:  # argmax of a Dirichlet draw = argmax of its Gamma draws (the normalisation does not move it)
        # rows whose allowed alphas are all equal: by symmetry the argmax is uniform over the allowed ones
        symmetric = (~allowed | (alpha == alpha.max(1, keepdims=True))).all(1)
        allowed_cols = np.argsort(~allowed, axis=1, kind="stable")  # each row's allowed columns first, in order
        pick = (rng.random((B, D)) * allowed.sum(1)[:, None]).astype(np.int64)  # the pick-th allowed one
        winners = np.take_along_axis(allowed_cols, np.minimum(pick, M - 1), 1)
        rows = np.flatnonzero(~symmetric & has)
        if rows.size:
            winners[rows] = log_gamma(np.broadcast_to(alpha[rows, None, :], (rows.size, D, M)), rng).argmax(2)
        use = np.arange(D)[None] < diff[:, None]
        k += np.bincount((np.arange(B)[:, None] * M + winners)[use], minlength=B * M).reshape(B, M)
    return np.minimum(k, cap)


def allocate(p: torch.Tensor, cap: torch.Tensor, budget: int) -> torch.Tensor:
    """Integer budgets (B, M) proportional to ``p`` with k <= cap and sum = min(budget, Σ cap where p > 0).

    Water filling: find t with Σ min(cap, t p) = budget (modalities whose share exceeds their cap are
    capped and the excess is redistributed to the others in proportion to p), then round with the
    largest-remainder rule, which never breaks a cap.
    """
    p = p.double()
    cap = torch.where(p > 0, cap, torch.zeros_like(cap)).double()
    B, M = p.shape
    ratio = torch.where(p > 0, cap / p.clamp(min=1e-300), torch.full_like(p, float("inf")))
    ratio_s, order = ratio.sort(1)
    cap_s, p_s = cap.gather(1, order), p.gather(1, order)
    cap_before = cap_s.cumsum(1) - cap_s  # capacity of the modalities capped before index k
    p_rest = p_s.flip(1).cumsum(1).flip(1)  # share of the modalities from index k on
    t_k = (budget - cap_before) / p_rest.clamp(min=1e-300)
    ok = (t_k <= ratio_s) & (p_s > 0)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((B,), M - 1, device=p.device))
    t = t_k.gather(1, first[:, None])
    t = torch.where(ok.any(1, keepdim=True), t, torch.full_like(t, float("inf")))
    share = torch.minimum(cap, torch.nan_to_num(t * p, nan=0.0, posinf=float("inf")))
    share = torch.where(p > 0, share, torch.zeros_like(share))
    k = torch.floor(share + 1e-9).clamp(max=cap)
    target = torch.minimum(torch.full((B, 1), float(budget), dtype=k.dtype, device=k.device), cap.sum(1, keepdim=True))
    remainder = (target - k.sum(1, keepdim=True)).clamp(min=0)
    frac = torch.where(k < cap, share - k, torch.full_like(share, -1.0))
    rank = frac.argsort(1, descending=True).argsort(1)
    k = k + ((rank < remainder) & (k < cap)).to(k.dtype)
    return k.long()


def split_cells(k_in: np.ndarray, k_all: np.ndarray, L: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint uniform input / target cells of B grids of L cells: k_in (B,) inputs, k_all - k_in targets.

    Each cell gets a random key; a row's k_in lowest keys are its inputs, the next ones up to k_all its
    targets. One row-wise sort gives the thresholds (the (k+1)-th lowest key), one scan the selected cells.
    Returns the selected cells as flat indices into (B, L), ascending, and whether each is an input. A tie at
    a threshold (float32 keys: about one row in 10^5) would select one cell too many or too few: such rows
    are drawn again, which keeps the subsets uniform.
    """
    B = k_in.shape[0]
    rows = np.arange(B)
    out_f, out_in = [], []
    todo = rows
    while todo.size:
        n = todo.size
        keys = rng.random((n, L), dtype=np.float32)
        ordered = np.sort(keys, axis=1)
        at = np.arange(n) * L
        thr_in = np.where(k_in[todo] < L, ordered.reshape(-1)[at + np.minimum(k_in[todo], L - 1)], np.inf)
        thr_all = np.where(k_all[todo] < L, ordered.reshape(-1)[at + np.minimum(k_all[todo], L - 1)], np.inf)
        f = np.flatnonzero(keys < thr_all.astype(np.float32)[:, None])
        r = f // L
        is_in = keys.reshape(-1)[f] < thr_in[r]
        ok = (np.bincount(r, minlength=n) == k_all[todo]) & (np.bincount(r[is_in], minlength=n) == k_in[todo])
        if n == B and ok.all():
            return f, is_in
        keep = ok[r]
        out_f.append(todo[r[keep]] * L + f[keep] % L)
        out_in.append(is_in[keep])
        todo = todo[~ok]
    f, is_in = np.concatenate(out_f), np.concatenate(out_in)
    order = np.argsort(f)
    return f[order], is_in[order]


# ----------------------------------------------------------------------------------------- masker


class Masker:
    """The §5 masking for a set of datasets, each with its own mixture.

    ``mixtures[i]`` is the mixture of dataset ``i``; all must share the budgets and the budget mode.
    ``modalities`` fixes the modality order of the flat layout (default: the first mixture's list).
    """

    def __init__(self, mixtures: list[MixtureConfig] | MixtureConfig, modalities: list[str] | None = None):
        mixtures = [mixtures] if isinstance(mixtures, MixtureConfig) else list(mixtures)
        first = mixtures[0]
        if any((m.input_budget, m.target_budget) != (first.input_budget, first.target_budget) for m in mixtures):
            raise ValueError("all mixtures of one masker must use the same input/target budgets")
        if any(m.budget_mode != first.budget_mode for m in mixtures):
            raise ValueError(f"all mixtures of one masker must use the same budget_mode, got "
                             f"{ {m.name: m.budget_mode for m in mixtures} }; set budget_mode in the mixture files")
        self.input_budget, self.target_budget = first.input_budget, first.target_budget
        self.budget_mode = first.budget_mode
        self.metadata_chunk = first.metadata_chunk
        self.modalities = list(modalities or first.modalities)
        self.mods = [get_modality(m) for m in self.modalities]
        comps = [(d, c) for d, mix in enumerate(mixtures) for c in mix.components]
        C = len(comps)
        self.component_names = [c.name for _, c in comps]
        # reference mode: the tables as written (a target alpha of a modality that cannot be a target draws
        # budget that stays unused, as in the reference); fill mode: such alphas are 0
        table = self.budget_mode == "reference"
        self.alpha_in = torch.tensor([[c.alpha(m, False, table) for m in self.modalities] for _, c in comps])
        self.alpha_out = torch.tensor([[c.alpha(m, True, table) for m in self.modalities] for _, c in comps])
        self.keep = torch.tensor([[_KEEP_CODES[c.keep_mode(m)] for m in self.modalities] for _, c in comps])
        self.weights = torch.zeros(len(mixtures), C, dtype=torch.float64)
        for j, (d, c) in enumerate(comps):
            self.weights[d, j] = c.weight
        self.image_idx = [i for i, m in enumerate(self.mods) if m.is_image_like]
        self.seq_idx = [i for i, m in enumerate(self.mods) if not m.is_image_like]
        self.max_tokens = torch.tensor([m.max_tokens for m in self.mods])
        self.is_image = torch.tensor([m.is_image_like for m in self.mods])
        # numpy copies of the static tables: real copies, not .numpy() views, because sending the masker to a loader
        # worker moves the tensors' storage into shared memory and a view would keep pointing at the freed buffer
        self._alpha_in = self.alpha_in.double().numpy().copy()
        self._alpha_out = self.alpha_out.double().numpy().copy()
        self._keep = self.keep.numpy().copy()
        w = self.weights.numpy()
        cdf = np.cumsum(w, 1) / w.sum(1, keepdims=True)
        for d in range(len(mixtures)):  # no rounding can pick a component past the dataset's last one
            cdf[d, int(np.flatnonzero(w[d] > 0)[-1]):] = 1.0
        self._cdf = cdf
        self._max_tokens = self.max_tokens.numpy().copy()
        self._is_image = self.is_image.numpy().copy()
        self._mids = [MODALITY_INDEX[m] for m in self.modalities]

    # ---------------------------------------------------------------------------------- pieces

    def sample_components(self, dataset: torch.Tensor, g: torch.Generator | np.random.Generator) -> torch.Tensor:
        """(B,) dataset index -> (B,) mixture component, drawn by the dataset's component weights."""
        return torch.from_numpy(self._components(_np(dataset).astype(np.int64), numpy_rng(g)))

    def _components(self, dataset: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(dataset.shape[0])
        return (u[:, None] >= self._cdf[dataset]).sum(1)

    def _present(self, raw: RawBatch, B: int) -> np.ndarray:
        """(B, M) whether each sample has each modality (an empty sequence is present: it is "[EOS]")."""
        out = np.zeros((B, len(self.mods)), dtype=bool)
        for i, m in enumerate(self.mods):
            if m.name in raw.present:
                out[:, i] = _np(raw.present[m.name]).astype(bool)
            elif m.name in raw.lengths:
                out[:, i] = _np(raw.lengths[m.name]) > 0
        return out

    def _lengths(self, raw: RawBatch, B: int) -> np.ndarray:
        """(B, M) valid tokens per modality (0 when absent)."""
        out = np.zeros((B, len(self.mods)), dtype=np.int64)
        for i, m in enumerate(self.mods):
            if m.name in raw.lengths:
                out[:, i] = np.minimum(_np(raw.lengths[m.name]), m.max_tokens)
        return out

    def _sequence(self, i: int, raw: RawBatch, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sequence modality ``i`` as masked: (B, L) ids with [EOS] appended and (B,) lengths.

        T5 embeddings have no [EOS]; their "ids" are row numbers offset past the sentinel ids (see
        ``_EMB_OFFSET``) so a sentinel can be told apart from a row.
        """
        mod = self.mods[i]
        B = present.shape[0]
        n = _np(raw.lengths[mod.name]).astype(np.int64) if mod.name in raw.lengths else np.zeros(B, np.int64)
        if mod.kind == ModalityKind.EMBEDDING_SEQ:
            L = min(raw.embeddings[mod.name].shape[1], mod.max_tokens) if mod.name in raw.embeddings else 1
            tok = np.broadcast_to(np.arange(L, dtype=np.int32) + _EMB_OFFSET, (B, L))
            return tok, np.where(present, np.minimum(n, L), 0)
        tok = _np(raw.tokens[mod.name]) if mod.name in raw.tokens else np.zeros((B, 1), dtype=np.int64)
        return with_eos(tok, n, present, mod.max_tokens)

    def _grid_ids(self, i: int, raw: RawBatch, B: int) -> np.ndarray:
        """(B, L) ids of image-like modality ``i``: its tokens, or the patch index for pixels."""
        mod = self.mods[i]
        L = mod.max_tokens
        if mod.kind == ModalityKind.PIXELS:
            return np.broadcast_to(np.arange(L, dtype=np.int64), (B, L))
        if mod.name in raw.tokens:
            return _np(raw.tokens[mod.name])
        return np.zeros((B, L), dtype=np.int64)

    # ---------------------------------------------------------------------------------- call

    def __call__(self, raw: RawBatch, generator: torch.Generator | None = None) -> MaskedBatch:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        rng = numpy_rng(g)
        B = raw.batch_size
        dataset = _np(raw.dataset).astype(np.int64) if raw.dataset is not None else np.zeros(B, dtype=np.int64)
        comp = self._components(dataset, rng)
        present = self._present(raw, B)
        n = self._lengths(raw, B)
        a_in = np.where(present, self._alpha_in[comp], 0.0)
        a_out = np.where(present, self._alpha_out[comp], 0.0)
        max_tokens = np.broadcast_to(self._max_tokens, (B, len(self.mods)))
        reference = self.budget_mode == "reference"
        if reference:  # budgets first, from the Dirichlet draws alone; sequences then fit into them
            k_in = dirichlet_budgets(a_in, self.input_budget, max_tokens, rng)
            cap_out = np.where(self._is_image, max_tokens - k_in, max_tokens)
            k_out = dirichlet_budgets(a_out, self.target_budget, cap_out, rng)

        seqs, draws = {}, {}
        for i in self.seq_idx:
            mod = self.mods[i]
            tok, n_seq = self._sequence(i, raw, present[:, i])
            keep = self._keep[comp, i]
            u = rng.random(B)
            r = np.where(keep == 1, 1.0, np.where(keep == 2, (u < 0.5).astype(np.float64), u))
            if reference:
                budget_in = k_in[:, i]
            else:  # fill: no target wanted -> keep all; no input wanted -> mask all; inputs are cut later
                if mod.is_target:
                    r = np.where(a_out[:, i] == 0, 1.0, r)
                r = np.where(a_in[:, i] == 0, 0.0, r)
                budget_in = np.where(a_in[:, i] == 0, 0, 2 * tok.shape[1] + 2)
            chunk = self.metadata_chunk if mod.name == "metadata" else 1
            draws[i] = (FirstDraw(n_seq, r, budget_in, tok.shape[1], chunk, rng), tok, n_seq, budget_in)
        # the keep-probability decay of the rows over budget, all sequence modalities in one call
        over = [d[0] for d in draws.values() if d[0].rows.size]
        if over:
            units = decay(*(np.concatenate(x) for x in zip(*(d.decay_args() for d in over))), rng)
            at = np.cumsum([0] + [d.rows.size for d in over])
            for d, lo, hi in zip(over, at[:-1], at[1:]):
                d.set_units(units[lo:hi])
        for i, (draw, tok, n_seq, budget_in) in draws.items():
            seqs[i] = span_mask(tok, n_seq, draw.kept, budget_in)
        if not reference:
            cap_in = n.copy()  # image-like: the grid (0 when absent)
            cap_out = np.zeros_like(n)
            for i in self.seq_idx:
                cap_in[:, i] = seqs[i].in_len
                cap_out[:, i] = seqs[i].tgt_len if self.mods[i].is_target else 0
            k_in = allocate(torch.from_numpy(_dirichlet(a_in, rng)), torch.from_numpy(cap_in),
                            self.input_budget).numpy()
            for i in self.image_idx:
                cap_out[:, i] = n[:, i] - k_in[:, i]  # targets come from the positions inputs left
            for i in self.seq_idx:  # a sequence input cut to its budget: targets only for the spans it shows
                if not self.mods[i].is_target:
                    continue
                shown = np.minimum(seqs[i].in_len, k_in[:, i])
                draw, tok, n_seq, budget_in = draws[i]
                blind = (shown == 0) & draw.kept.any(1)
                if blind.any():  # cut away entirely: the input shows nothing, the whole sequence is the target
                    seqs[i] = span_mask(tok, n_seq, draw.kept & ~blind[:, None], budget_in)
                cap_out[:, i] = shown_target_length(seqs[i], shown)
            k_out = allocate(torch.from_numpy(_dirichlet(a_out, rng)), torch.from_numpy(cap_out),
                             self.target_budget).numpy()

        enc = _Layout(B, self.input_budget, len(self.mods))
        dec = _Layout(B, self.target_budget, len(self.mods))
        # image-like modalities: uniform disjoint input / target cells per sample (see split_cells)
        for i in self.image_idx:
            L = self.mods[i].max_tokens
            kin = np.where(present[:, i], k_in[:, i], 0)
            kall = kin + np.where(present[:, i], k_out[:, i], 0)
            f, inp = split_cells(kin, kall, L, rng)
            b, c = np.divmod(f, L)
            tok = self._grid_ids(i, raw, B).reshape(-1)[f].astype(np.int64, copy=False)
            enc.add_cells(i, self._mids[i], b[inp], c[inp], tok[inp])
            if self.mods[i].is_target:
                out = ~inp
                dec.add_cells(i, self._mids[i], b[out], c[out], tok[out])

        for i in self.seq_idx:
            mod, sp = self.mods[i], seqs[i]
            in_ids = sp.in_ids
            if mod.kind == ModalityKind.EMBEDDING_SEQ:  # row L (a zero vector) stands for a masked span
                in_ids = np.where(in_ids >= _EMB_OFFSET, in_ids - _EMB_OFFSET, in_ids.shape[1])
            shown = np.minimum(sp.in_len, k_in[:, i])
            enc.add_prefix(i, self._mids[i], in_ids, shown)
            if not mod.is_target:
                continue
            if reference:
                start, width = target_window(sp.tgt_len, sp.sent_pos, sp.n_sent, k_out[:, i], rng.random(B))
            else:  # k_out is capped by the spans the shown input names (see the allocation above)
                start, width = np.zeros_like(sp.tgt_len), np.minimum(sp.tgt_len, k_out[:, i])
            # sequence targets are predicted next-token: slot j is fed token j and predicts j + 1; as in the
            # reference, the last target token (nothing to predict after it) takes no decoder slot
            n_dec = np.clip(np.minimum(width - 1, min(mod.max_tokens + 1, self.target_budget)), 0, None)
            Lw = int(n_dec.max()) if B else 0
            W = sp.tgt.shape[1]
            at = np.minimum(start[:, None] + np.arange(Lw + 1)[None], W - 1) + (np.arange(B) * W)[:, None]
            window = sp.tgt.reshape(-1)[at]  # (B, Lw + 1): the window and the token after it
            here, after = window[:, :-1], window[:, 1:]
            dec.add_prefix(i, self._mids[i], here, n_dec, after)

        enc_tokens, enc_positions, enc_modality, _, enc_valid = enc.assemble(with_labels=False)
        dec_tokens, dec_positions, dec_modality, labels, dec_valid = dec.assemble()
        pixels = {m: v for m, v in raw.pixels.items() if m in self.modalities}
        embeddings = {m: v for m, v in raw.embeddings.items() if m in self.modalities}
        return MaskedBatch(
            enc_tokens=enc_tokens, enc_positions=enc_positions, enc_modality=enc_modality, enc_valid=enc_valid,
            dec_tokens=dec_tokens, dec_positions=dec_positions, dec_modality=dec_modality, dec_valid=dec_valid,
            dec_labels=labels, pixels=pixels, embeddings=embeddings,
        ).with_slot_index()  # here on the CPU, so the model on a GPU selects each modality's slots without a sync


class _Layout:
    """The flat slots of one side (encoder or decoder): each modality's selected tokens, in modality order.

    Modalities register their tokens as a row-wise selection first (``add_cells``: selected grid cells, in
    cell order; ``add_prefix``: the first ``count`` columns); ``assemble`` then knows every row's count per
    modality, hence where each modality's block starts, and writes every token straight to its slot.
    """

    def __init__(self, B: int, n: int, n_mods: int) -> None:
        self.B, self.n = B, n
        self.counts = np.zeros((B, n_mods), dtype=np.int64)
        self.blocks: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add_cells(self, i: int, mid: int, rows: np.ndarray, cells: np.ndarray, tok: np.ndarray) -> None:
        """Modality ``i`` (registry index ``mid``) takes grid cells (rows and cells sorted row by row, cells
        ascending within a row) with their tokens; the label of a cell is its token."""
        count = np.bincount(rows, minlength=self.B)
        rank = np.arange(rows.shape[0]) - (np.cumsum(count) - count)[rows]  # slot within the row's block
        self.counts[:, i] = count
        self.blocks.append((i, mid, rows, rank, tok, cells, tok))

    def add_prefix(self, i: int, mid: int, values: np.ndarray, count: np.ndarray,
                   labels: np.ndarray | None = None) -> None:
        """Modality ``i`` takes the first ``count`` (B,) columns of ``values`` (B, W) (positions 0..count-1)."""
        W = values.shape[1]
        count = np.minimum(count, W)
        f = np.flatnonzero(np.arange(W)[None] < count[:, None])
        rows, cols = f // W, f % W
        self.counts[:, i] = count
        tok = values.reshape(-1)[f]
        self.blocks.append((i, mid, rows, cols, tok, cols, tok if labels is None else labels.reshape(-1)[f]))

    def assemble(self, with_labels: bool = True):
        """-> tokens, positions, modality (-1 for padding), labels (IGNORE for padding; None without
        ``with_labels``), valid; each (B, n)."""
        B, n = self.B, self.n
        total = self.counts.sum(1)
        if B and int(total.max()) > n:  # the budgets make this impossible; a bug must not spill into the next row
            raise RuntimeError(f"masking selected {int(total.max())} tokens for {n} slots")
        offset = np.cumsum(self.counts, 1) - self.counts  # (B, M) first slot of each modality's block
        valid = np.arange(n)[None] < total[:, None]
        # the modality of each valid slot: each row's blocks in modality order, as long as their counts
        modality = np.full((B, n), -1, dtype=np.int64)
        mids = np.zeros(self.counts.shape[1], dtype=np.int64)
        for i, mid, *_ in self.blocks:
            mids[i] = mid
        modality[valid] = np.repeat(np.broadcast_to(mids, self.counts.shape).reshape(-1), self.counts.reshape(-1))
        tokens = np.zeros(B * n, dtype=np.int64)
        positions = np.zeros(B * n, dtype=np.int64)
        labels = np.full(B * n, IGNORE, dtype=np.int64) if with_labels else None
        for i, _, rows, slot, tok, pos, lab in self.blocks:
            dest = rows * n + offset[:, i][rows] + slot
            tokens[dest] = tok
            positions[dest] = pos
            if with_labels:
                labels[dest] = lab
        return (torch.from_numpy(tokens.reshape(B, n)), torch.from_numpy(positions.reshape(B, n)),
                torch.from_numpy(modality), None if labels is None else torch.from_numpy(labels.reshape(B, n)),
                torch.from_numpy(valid))
