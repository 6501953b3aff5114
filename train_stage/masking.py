"""Vectorised 4M multimodal masking (4M-FACTS §5): a whole batch in a few tensor ops.

Per sample: pick a mixture component, draw Dirichlet input/target budgets over the modalities the
sample has, cap them by what each modality can give (redistributing the excess), then pick disjoint
random input/target positions for image-like modalities and T5-style span masking with sentinels
for sequences (chunk-wise for metadata; zeroed spans for T5 embeddings). The result is a
:class:`~train_stage.batch.MaskedBatch` with exactly ``input_budget`` / ``target_budget`` slots.

There is no per-sample Python loop: loops run over modalities (a fixed, small number) only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fourm_core.modalities import ModalityKind, get_modality
from fourm_core.seeding import seeded

from .batch import IGNORE, MODALITY_INDEX, MaskedBatch
from .mixture import MixtureConfig
from .span_masking import EOS, N_SENTINELS, PAD, SENTINEL0  # noqa: F401  (re-exported: ids used with batches)
from .span_masking import draw_kept, random_ranks, span_mask, target_window, with_eos

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


def compact(values: torch.Tensor, keep: torch.Tensor, n: int, fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the kept entries of each row to the front, in order: (B, W[, F]), (B, W) -> (B, n[, F]), valid (B, n).

    A cumsum gives each kept entry its destination; one scatter writes it (O(W), no sort). Entries
    beyond ``n`` and dropped ones go to a spare column that is cut off.
    """
    B, W = keep.shape
    dest = keep.long().cumsum(1) - 1
    dest = torch.where(keep & (dest < n), dest, torch.full_like(dest, n))
    if values.dim() == 3:
        F = values.shape[2]
        out = values.new_full((B, n + 1, F), fill)
        out.scatter_(1, dest[:, :, None].expand(B, W, F), values)
    else:
        out = values.new_full((B, n + 1), fill)
        out.scatter_(1, dest, values)
    count = keep.sum(1, keepdim=True)
    valid = torch.arange(n, device=keep.device)[None] < count
    return out[:, :n], valid


def sample_dirichlet(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Batched Dirichlet (B, M) allowing α = 0 entries (they get 0); an all-zero row gives zeros.

    Drawn as normalised Gamma variables in float64 (α = 0.01 underflows float32). If every draw of a
    row underflows, the mass goes to one random allowed modality, the α -> 0 limit of the Dirichlet.
    """
    allowed = alpha > 0
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with seeded(seed):  # torch.distributions has no generator argument
        g = torch.distributions.Gamma(alpha.double().clamp(min=1e-12), torch.ones((), dtype=torch.float64)).sample()
    g = torch.where(allowed, g, torch.zeros_like(g))
    total = g.sum(1, keepdim=True)
    underflow = (total <= 0) & allowed.any(1, keepdim=True)
    if bool(underflow.any()):
        pick = torch.multinomial(allowed.double() + 1e-30, 1, generator=generator)
        onehot = torch.zeros_like(g).scatter_(1, pick, 1.0)
        g = torch.where(underflow, onehot, g)
        total = g.sum(1, keepdim=True)
    return g / total.clamp(min=1e-300)


def log_gamma(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """log of Gamma(alpha, 1) draws, any shape; -inf where alpha == 0.

    Drawn as log G(alpha + 1) + log(U) / alpha, which stays finite for tiny alpha (G(0.01) itself is 0 in
    float64 about once in a thousand draws).
    """
    allowed = alpha > 0
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with seeded(seed):  # torch._standard_gamma has no generator argument
        g1 = torch._standard_gamma(alpha.double() + 1.0)
    u = torch.rand(alpha.shape, generator=generator, dtype=torch.float64).clamp(min=1e-300)
    out = g1.log() + u.log() / alpha.double().clamp(min=1e-300)
    return torch.where(allowed, out, torch.full_like(out, float("-inf")))


def dirichlet_budgets(alpha: torch.Tensor, total: int, cap: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The reference's token budgets: (B, M) alphas (0: no tokens), (B, M) caps -> (B, M) int64.

    ``floor(p * total)`` for a Dirichlet draw p, then the tokens the floors lost go one each to the argmax of
    fresh Dirichlet draws (so modalities with a tiny alpha rarely get them), then each budget is capped.
    What a cap removes is not given to anyone: a sample can use fewer than ``total`` tokens.
    """
    B, M = alpha.shape
    has = (alpha > 0).any(1, keepdim=True)
    lg = log_gamma(alpha, generator)
    p = torch.softmax(torch.where(has, lg, torch.zeros_like(lg)), 1)
    k = torch.where(has, (p * total).floor(), torch.zeros_like(p)).long()
    diff = torch.where(has[:, 0], total - k.sum(1), 0)
    D = int(diff.max()) if B else 0
    if D > 0:  # argmax of a Dirichlet draw = argmax of its Gamma draws (the normalisation does not move it)
        allowed = alpha > 0
        # rows whose allowed alphas are all equal: by symmetry the argmax is uniform over the allowed ones
        top = alpha.max(1, keepdim=True).values
        symmetric = (allowed <= (alpha == top)).all(1) & has[:, 0]
        winners = torch.multinomial(allowed.double() + ~has * 1.0, D, replacement=True, generator=generator)
        if not bool(symmetric.all()):
            rows = (~symmetric).nonzero().flatten()
            winners[rows] = log_gamma(alpha[rows, None, :].expand(rows.numel(), D, M), generator).argmax(2)
        use = (torch.arange(D)[None] < diff[:, None]).long()
        k = k.scatter_add(1, winners, use)
    return torch.minimum(k, cap)


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

    # ---------------------------------------------------------------------------------- pieces

    def sample_components(self, dataset: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(B,) dataset index -> (B,) mixture component, drawn by the dataset's component weights."""
        return torch.multinomial(self.weights[dataset], 1, generator=g)[:, 0]

    def _present(self, raw: RawBatch, B: int) -> torch.Tensor:
        """(B, M) whether each sample has each modality (an empty sequence is present: it is "[EOS]")."""
        cols = []
        for m in self.mods:
            if m.name in raw.present:
                cols.append(raw.present[m.name].bool())
            elif m.name in raw.lengths:
                cols.append(raw.lengths[m.name] > 0)
            else:
                cols.append(torch.zeros(B, dtype=torch.bool))
        return torch.stack(cols, 1)

    def _lengths(self, raw: RawBatch, B: int) -> torch.Tensor:
        """(B, M) valid tokens per modality (0 when absent)."""
        cols = []
        for m in self.mods:
            if m.name in raw.lengths:
                cols.append(raw.lengths[m.name].long().clamp(max=m.max_tokens))
            else:
                cols.append(torch.zeros(B, dtype=torch.long))
        return torch.stack(cols, 1)

    def _sequence(self, i: int, raw: RawBatch, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence modality ``i`` as masked: (B, L) ids with [EOS] appended and (B,) lengths.

        T5 embeddings have no [EOS]; their "ids" are row numbers offset past the sentinel ids (see
        ``_EMB_OFFSET``) so a sentinel can be told apart from a row.
        """
        mod = self.mods[i]
        B = present.shape[0]
        n = raw.lengths[mod.name].long() if mod.name in raw.lengths else torch.zeros(B, dtype=torch.long)
        if mod.kind == ModalityKind.EMBEDDING_SEQ:
            L = min(raw.embeddings[mod.name].shape[1], mod.max_tokens) if mod.name in raw.embeddings else 1
            tok = (torch.arange(L) + _EMB_OFFSET)[None].expand(B, L)
            return tok, torch.where(present, n.clamp(max=L), torch.zeros_like(n))
        tok = raw.tokens[mod.name] if mod.name in raw.tokens else torch.zeros(B, 1, dtype=torch.int32)
        return with_eos(tok, n, present, mod.max_tokens)

    # ---------------------------------------------------------------------------------- call

    def __call__(self, raw: RawBatch, generator: torch.Generator | None = None) -> MaskedBatch:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        B = raw.batch_size
        dataset = raw.dataset if raw.dataset is not None else torch.zeros(B, dtype=torch.long)
        comp = self.sample_components(dataset, g)
        present = self._present(raw, B)
        n = self._lengths(raw, B)
        a_in = torch.where(present, self.alpha_in[comp], 0.0)
        a_out = torch.where(present, self.alpha_out[comp], 0.0)
        reference = self.budget_mode == "reference"
        if reference:  # budgets first, from the Dirichlet draws alone; sequences then fit into them
            k_in = dirichlet_budgets(a_in, self.input_budget, self.max_tokens.expand(B, -1), g)
            cap_out = torch.where(self.is_image, self.max_tokens - k_in, self.max_tokens)
            k_out = dirichlet_budgets(a_out, self.target_budget, cap_out, g)

        seqs = {}
        for i in self.seq_idx:
            mod = self.mods[i]
            tok, n_seq = self._sequence(i, raw, present[:, i])
            keep = self.keep[comp, i]
            u = torch.rand(B, generator=g)
            r = torch.where(keep == 1, 1.0, torch.where(keep == 2, (u < 0.5).float(), u))
            if reference:
                budget_in = k_in[:, i]
            else:  # fill: no target wanted -> keep all; no input wanted -> mask all; inputs are cut later
                if mod.is_target:
                    r = torch.where(a_out[:, i] == 0, 1.0, r)
                r = torch.where(a_in[:, i] == 0, 0.0, r)
                budget_in = torch.where(a_in[:, i] == 0, 0, 2 * tok.shape[1] + 2)
            kept = draw_kept(n_seq, r, budget_in, tok.shape[1], self.metadata_chunk if mod.name == "metadata" else 1, g)
            seqs[i] = span_mask(tok, n_seq, kept, budget_in)
        if not reference:
            cap_in = torch.zeros_like(n)
            cap_out = torch.zeros_like(n)
            for i in self.seq_idx:
                cap_in[:, i] = seqs[i][1]
                cap_out[:, i] = seqs[i][3] if self.mods[i].is_target else 0
            for i in self.image_idx:
                cap_in[:, i] = n[:, i]
            k_in = allocate(sample_dirichlet(a_in, g), cap_in, self.input_budget)
            for i in self.image_idx:
                cap_out[:, i] = n[:, i] - k_in[:, i]  # targets come from the positions inputs left
            k_out = allocate(sample_dirichlet(a_out, g), cap_out, self.target_budget)

        # image-like modalities: one random permutation per (sample, modality), one argsort per grid size;
        # the first k_in cells of the permutation are inputs, the next k_out targets (so they are disjoint)
        ranks: dict[int, torch.Tensor] = {}
        by_len: dict[int, list[int]] = {}
        for i in self.image_idx:
            by_len.setdefault(self.mods[i].max_tokens, []).append(i)
        for L, idx in by_len.items():
            rank = random_ranks(B * len(idx), L, g).view(B, len(idx), L)
            for j, i in enumerate(idx):
                ranks[i] = rank[:, j]

        enc = _Slots()
        dec = _Slots()
        for i, mod in enumerate(self.mods):
            mid = MODALITY_INDEX[mod.name]
            if mod.is_image_like:
                L = mod.max_tokens
                if mod.kind == ModalityKind.PIXELS:
                    ids = torch.arange(L, dtype=torch.int32).expand(B, L)
                elif mod.name in raw.tokens:
                    ids = raw.tokens[mod.name].int()
                else:
                    ids = torch.zeros(B, L, dtype=torch.int32)
                r = ranks[i]
                lo, hi = k_in[:, i:i + 1], (k_in + k_out)[:, i:i + 1]
                enc.add(ids, (r < lo) & present[:, i:i + 1], mid)
                if mod.is_target:
                    dec.add(ids, (r >= lo) & (r < hi) & present[:, i:i + 1], mid, ids)
                continue
            in_ids, in_len, tgt, tgt_len, is_sent = seqs[i]
            if mod.kind == ModalityKind.EMBEDDING_SEQ:  # row L (a zero vector) stands for a masked span
                in_ids = torch.where(in_ids >= _EMB_OFFSET, in_ids - _EMB_OFFSET, in_ids.shape[1])
            Li = in_ids.shape[1]
            enc.add(in_ids, torch.arange(Li)[None] < torch.minimum(in_len, k_in[:, i])[:, None], mid)
            if not mod.is_target:
                continue
            if reference:
                start, width = target_window(tgt_len, is_sent, k_out[:, i], torch.rand(B, generator=g))
            else:
                start, width = torch.zeros_like(tgt_len), torch.minimum(tgt_len, k_out[:, i])
            Lt = min(tgt.shape[1], mod.max_tokens + 1, self.target_budget)
            pos = torch.arange(Lt)[None]
            W = tgt.shape[1]
            here = tgt.gather(1, (start[:, None] + pos).clamp(max=W - 1))
            after = tgt.gather(1, (start[:, None] + pos + 1).clamp(max=W - 1))
            # sequence targets are predicted next-token: slot j is fed token j and predicts j + 1; as in the
            # reference, the last target token (nothing to predict after it) takes no decoder slot
            has_next = pos + 1 < width[:, None]
            dec.add(here, has_next, mid, torch.where(has_next, after, IGNORE))

        enc_tokens, enc_positions, enc_modality, _, enc_valid = enc.assemble(self.input_budget)
        dec_tokens, dec_positions, dec_modality, labels, dec_valid = dec.assemble(self.target_budget)
        pixels = {m: v for m, v in raw.pixels.items() if m in self.modalities}
        embeddings = {m: v for m, v in raw.embeddings.items() if m in self.modalities}
        return MaskedBatch(
            enc_tokens=enc_tokens, enc_positions=enc_positions, enc_modality=enc_modality, enc_valid=enc_valid,
            dec_tokens=dec_tokens, dec_positions=dec_positions, dec_modality=dec_modality, dec_valid=dec_valid,
            dec_labels=labels, pixels=pixels, embeddings=embeddings,
        )


class _Slots:
    """Candidate slots of all modalities side by side; ``assemble`` keeps the selected ones, in order.

    Position and modality of a column are static (a column is one cell of one modality), so only the
    column index is compacted and everything else is gathered through it.
    """

    def __init__(self) -> None:
        self.tokens: list[torch.Tensor] = []
        self.keep: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.pos: list[torch.Tensor] = []
        self.mod: list[torch.Tensor] = []

    def add(self, tokens: torch.Tensor, keep: torch.Tensor, modality: int, labels: torch.Tensor | None = None) -> None:
        L = tokens.shape[1]
        self.tokens.append(tokens)
        self.keep.append(keep)
        self.labels.append(labels if labels is not None else tokens)
        self.pos.append(torch.arange(L))
        self.mod.append(torch.full((L,), modality))

    def assemble(self, n: int):
        """-> tokens, positions, modality (-1 for padding), labels (IGNORE for padding), valid; each (B, n)."""
        keep = torch.cat(self.keep, 1)
        B, W = keep.shape
        # budgets never exceed n, so each row keeps <= n columns: nonzero lists them row by row in order
        rows, cols = keep.nonzero(as_tuple=True)
        count = keep.sum(1)
        row_start = count.cumsum(0) - count
        slot = torch.arange(rows.shape[0]) - row_start[rows]
        col = torch.zeros(B, n, dtype=torch.long)
        col[rows, slot] = cols
        valid = torch.arange(n)[None] < count[:, None]
        tokens = torch.cat(self.tokens, 1).gather(1, col).long()
        labels = torch.where(valid, torch.cat(self.labels, 1).gather(1, col).long(), IGNORE)
        pos = torch.cat(self.pos)[col]
        mod = torch.where(valid, torch.cat(self.mod)[col], -1)
        return tokens, pos, mod, labels, valid
