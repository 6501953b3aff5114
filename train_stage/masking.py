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

PAD, EOS, SENTINEL0, N_SENTINELS = 0, 3, 4, 200  # §2
_KEEP_CODES = {"random": 0, "all": 1, "binary": 2}


@dataclass
class RawBatch:
    """Unmasked samples. For each modality the sample has (absent modalities have length 0):

    tokens[m] (B, L_m) int64: image-like: the full grid (row-major); sequences: padded with PAD.
    lengths[m] (B,) int64: valid tokens (image-like: L_m or 0).
    pixels[m] (B, n_patches, C*P*P) float for pixel modalities; embeddings[m] (B, L_m, F) for T5.
    dataset (B,) int64: index of the dataset (row of the masker's mixture table).
    """

    tokens: dict[str, torch.Tensor] = field(default_factory=dict)
    lengths: dict[str, torch.Tensor] = field(default_factory=dict)
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
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

    ``mixtures[i]`` is the mixture of dataset ``i``; all must share the budgets. ``modalities`` fixes
    the modality order of the flat layout (default: the first mixture's list).
    """

    def __init__(self, mixtures: list[MixtureConfig] | MixtureConfig, modalities: list[str] | None = None):
        mixtures = [mixtures] if isinstance(mixtures, MixtureConfig) else list(mixtures)
        first = mixtures[0]
        if any((m.input_budget, m.target_budget) != (first.input_budget, first.target_budget) for m in mixtures):
            raise ValueError("all mixtures of one masker must use the same input/target budgets")
        self.input_budget, self.target_budget = first.input_budget, first.target_budget
        self.metadata_chunk = first.metadata_chunk
        self.modalities = list(modalities or first.modalities)
        self.mods = [get_modality(m) for m in self.modalities]
        comps = [(d, c) for d, mix in enumerate(mixtures) for c in mix.components]
        C = len(comps)
        self.component_names = [c.name for _, c in comps]
        self.alpha_in = torch.tensor([[c.alpha(m, False) for m in self.modalities] for _, c in comps])
        self.alpha_out = torch.tensor([[c.alpha(m, True) for m in self.modalities] for _, c in comps])
        self.keep = torch.tensor([[_KEEP_CODES[c.keep_mode(m)] for m in self.modalities] for _, c in comps])
        self.weights = torch.zeros(len(mixtures), C, dtype=torch.float64)
        for j, (d, c) in enumerate(comps):
            self.weights[d, j] = c.weight
        self.image_idx = [i for i, m in enumerate(self.mods) if m.is_image_like]
        self.seq_idx = [i for i, m in enumerate(self.mods) if not m.is_image_like]

    # ---------------------------------------------------------------------------------- pieces

    def sample_components(self, dataset: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(B,) dataset index -> (B,) mixture component, drawn by the dataset's component weights."""
        return torch.multinomial(self.weights[dataset], 1, generator=g)[:, 0]

    def _lengths(self, raw: RawBatch, B: int) -> torch.Tensor:
        """(B, M) valid tokens per modality (0 when absent)."""
        cols = []
        for m in self.mods:
            if m.name in raw.lengths:
                cols.append(raw.lengths[m.name].long().clamp(max=m.max_tokens))
            else:
                cols.append(torch.zeros(B, dtype=torch.long))
        return torch.stack(cols, 1)

    def _span_mask(self, i: int, raw: RawBatch, r: torch.Tensor, n: torch.Tensor, g: torch.Generator):
        """T5-style span masking of sequence modality ``i`` with keep probability r (B,).

        Returns input ids (B, Li) + length, target ids (B, Lt) + length. For T5 embeddings the input
        ids are rows of the embedding tensor, with row L (a zero vector) standing for a masked span.
        """
        mod = self.mods[i]
        B = n.shape[0]
        if mod.kind == ModalityKind.EMBEDDING_SEQ:
            L = raw.embeddings[mod.name].shape[1] if mod.name in raw.embeddings else 1
            tok = torch.arange(L, dtype=torch.int32)[None].expand(B, L)
        else:
            tok = raw.tokens[mod.name].int() if mod.name in raw.tokens else torch.zeros(B, 1, dtype=torch.int32)
            L = tok.shape[1]
        chunk = self.metadata_chunk if mod.name == "metadata" else 1
        unit = torch.arange(L) // chunk
        n_units = (L + chunk - 1) // chunk
        valid = torch.arange(L)[None] < n[:, None]
        kept = (torch.rand(B, n_units, generator=g) < r[:, None])[:, unit] & valid
        masked = valid & ~kept
        prev_masked = torch.cat([torch.zeros(B, 1, dtype=torch.bool), masked[:, :-1]], 1)
        start = masked & ~prev_masked
        span = (start.cumsum(1, dtype=torch.int32) - 1).clamp(0, N_SENTINELS - 1)
        if mod.kind == ModalityKind.EMBEDDING_SEQ:
            in_vals = torch.where(kept, tok, torch.full_like(tok, L))  # row L: the zero vector
        else:
            in_vals = torch.where(kept, tok, SENTINEL0 + span)
        in_ids, _ = compact(in_vals, kept | start, L)
        in_len = (kept | start).sum(1)
        if not mod.is_target:
            return in_ids, in_len, None, torch.zeros_like(in_len)
        # target: "S_i span_i" for every masked span, then EOS
        pair_vals = torch.stack([SENTINEL0 + span, tok], 2).reshape(B, 2 * L)
        pair_keep = torch.stack([start, masked], 2).reshape(B, 2 * L)
        tgt, _ = compact(pair_vals, pair_keep, 2 * L + 1)
        body = pair_keep.sum(1)
        has = body > 0
        tgt.scatter_(1, body[:, None], torch.where(has, EOS, PAD).to(tgt.dtype)[:, None])
        tgt_len = torch.where(has, body + 1, body)
        return in_ids, in_len, tgt, tgt_len

    # ---------------------------------------------------------------------------------- call

    def __call__(self, raw: RawBatch, generator: torch.Generator | None = None) -> MaskedBatch:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        B = raw.batch_size
        M = len(self.mods)
        dataset = raw.dataset if raw.dataset is not None else torch.zeros(B, dtype=torch.long)
        comp = self.sample_components(dataset, g)
        n = self._lengths(raw, B)
        present = n > 0
        a_in = torch.where(present, self.alpha_in[comp], 0.0)
        a_out = torch.where(present, self.alpha_out[comp], 0.0)

        # sequences are span-masked first: their input/target lengths are their caps
        cap_in = torch.zeros(B, M, dtype=torch.long)
        cap_out = torch.zeros(B, M, dtype=torch.long)
        seqs = {}
        for i in self.seq_idx:
            keep = self.keep[comp, i]
            u = torch.rand(B, generator=g)
            r = torch.where(keep == 1, 1.0, torch.where(keep == 2, (u < 0.5).float(), u))
            if self.mods[i].is_target:  # no target wanted: keep all; no input wanted: mask all
                r = torch.where(a_out[:, i] == 0, 1.0, torch.where(a_in[:, i] == 0, 0.0, r))
            seqs[i] = self._span_mask(i, raw, r, n[:, i], g)
            cap_in[:, i] = seqs[i][1]
            cap_out[:, i] = seqs[i][3].clamp(max=self.mods[i].max_tokens)
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
            perm = torch.rand(B, len(idx), L, generator=g).argsort(2)
            rank = torch.empty_like(perm).scatter_(2, perm, torch.arange(L).expand_as(perm))
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
                enc.add(ids, r < lo, mid)
                if mod.is_target:
                    dec.add(ids, (r >= lo) & (r < hi), mid, ids)
            else:
                in_ids, _, tgt, tgt_len = seqs[i]
                Li = in_ids.shape[1]
                enc.add(in_ids, torch.arange(Li)[None] < k_in[:, i:i + 1], mid)
                if tgt is not None:
                    Lt = min(tgt.shape[1], mod.max_tokens)
                    pos = torch.arange(Lt)[None]
                    # sequence targets are predicted next-token: slot j is fed token j and predicts j + 1
                    labels = torch.where(pos + 1 < tgt_len[:, None], tgt[:, 1:Lt + 1], IGNORE)
                    dec.add(tgt[:, :Lt], pos < k_out[:, i:i + 1], mid, labels)

        enc_tokens, enc_positions, enc_modality, _, enc_valid = enc.assemble(self.input_budget)
        dec_tokens, dec_positions, dec_modality, labels, dec_valid = dec.assemble(self.target_budget)
        pixels = {m: v for m, v in raw.pixels.items() if m in self.modalities}
        # row index L of an embedding modality stands for a masked span: the model feeds a zero vector
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
