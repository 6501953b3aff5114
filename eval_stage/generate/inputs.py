"""From the user's ``inputs`` dict to the model's flat encoder slots, by modality kind (4M-FACTS §1, §5).

Accepted per kind (B = batch):
* pixels (``rgb@224``): images (B, C, H, W) in the model's normalisation, or patches (B, N, P·P·C);
* sequences: token ids (B, L), right-padded with [PAD] = 0; masked spans are sentinels [S_1] .. [S_n]
  (numbered from 1, as the released models were trained); a row without sentinels is a complete sequence
  and gets its [EOS] appended (as in training) unless it already ends with one;
* embedding sequences (``t5_caption``): floats (B, L, F), every row valid;
* image / global tokens: ids (B, L) with -1 at positions that are unknown (to be generated).
"""

from __future__ import annotations

import torch

from fourm_core.modalities import ModalityKind, get_modality

from .adapter import EncoderSlots, ModelAdapter

PAD, SOS, EOS, SENTINEL0, N_SENTINELS = 0, 2, 3, 4, 200  # 4M-FACTS §2
UNKNOWN = -1  # image-token positions to generate


def closing_sentinel(n_spans: int | torch.Tensor) -> int | torch.Tensor:
    """Id of the sentinel that ends a target with ``n_spans`` spans: [S_{n+1}]."""
    return SENTINEL0 + n_spans + 1


def complete_sequences(x: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """(B, L) right-padded ids -> (B, L') where every row without a sentinel or [EOS] gets [EOS] appended
    (truncated to ``max_tokens``): a complete sequence is "tokens [EOS]" in training."""
    n = (x != PAD).sum(1)
    has_sentinel = ((x >= SENTINEL0) & (x < SENTINEL0 + N_SENTINELS)).any(1)
    add = ~has_sentinel & ~(x == EOS).any(1) & (n < max_tokens)
    if not bool(add.any()):
        return x
    out = torch.cat([x, torch.full_like(x[:, :1], PAD)], 1)
    out.scatter_(1, n[:, None], torch.where(add, EOS, out.gather(1, n[:, None])[:, 0])[:, None])
    return out[:, : max(int((out != PAD).sum(1).max()), 1)]


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/P)·(W/P), P·P·C), patches row-major, pixels (ph pw c) within a patch."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // patch, patch, W // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // patch) * (W // patch), patch * patch * C)


def batch_size_of(inputs: dict[str, torch.Tensor]) -> int:
    for v in inputs.values():
        return v.shape[0]
    raise ValueError("generate needs at least one input to know the batch size")


def build_slots(adapter: ModelAdapter, state: dict[str, torch.Tensor], batch_size: int) -> EncoderSlots:
    """Encoder slots of every modality in ``state`` that the model takes as input, in registry order."""
    device = adapter.device
    tokens, positions, modality, valid, group = [], [], [], [], []
    names: list[str] = []
    pixels: dict[str, torch.Tensor] = {}
    embeddings: dict[str, torch.Tensor] = {}
    B = batch_size
    for name in adapter.domains_in:
        if name not in state:
            continue
        mod = get_modality(name)
        x = state[name].to(device)
        if mod.kind == ModalityKind.PIXELS:
            if x.dim() == 4:
                x = patchify(x, mod.patch_size)
            pixels[name] = x.to(adapter.model.mask_token.dtype)
            L = x.shape[1]
            ids, ok = torch.arange(L, device=device).expand(B, L), torch.ones(B, L, dtype=torch.bool, device=device)
        elif mod.kind == ModalityKind.EMBEDDING_SEQ:
            embeddings[name] = x.to(adapter.model.mask_token.dtype)
            L = x.shape[1]
            ids, ok = torch.arange(L, device=device).expand(B, L), torch.ones(B, L, dtype=torch.bool, device=device)
        elif mod.kind == ModalityKind.SEQUENCE:
            x = complete_sequences(x.long(), mod.max_tokens)[:, : mod.max_tokens]
            L = x.shape[1]
            ok = x != PAD
            # sequence positions count only the kept tokens (§9); inputs are right-padded, so that is the index
            ids = x
        else:
            x = x.long()
            L = x.shape[1]
            ok = x != UNKNOWN
            ids = x.clamp(min=0)
        names.append(name)
        tokens.append(ids)
        positions.append(torch.arange(L, device=device).expand(B, L))
        modality.append(torch.full((B, L), adapter.modality_index(name), device=device))
        valid.append(ok)
        group.append(torch.full((B, L), len(names) - 1, device=device))
    if not names:
        raise ValueError("no input modality of the model among the inputs")
    cat = lambda ts: torch.cat(ts, 1)  # noqa: E731
    return EncoderSlots(cat(tokens), cat(positions), cat(modality), cat(valid), cat(group), names, pixels, embeddings)
