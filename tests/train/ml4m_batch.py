"""The reference's masked batch (``UnifiedMasking`` output + ``forward_mask_encoder/decoder`` order) as our
:class:`MaskedBatch`, for comparing activations slot by slot. This converts a *batch*, not weights: the
checkpoint loads as is.

Reference layout, per modality ``m`` (True in a mask = not used):
``m.tensor`` token ids (B, L) / pixels (B, C, H, W) / T5 rows (B, L, F); ``m.input_mask`` (B, L);
``m.target_mask`` (B, L). Encoder slots = the unmasked inputs of all modalities, concatenated in
modality order. Decoder slots = per modality in the decoder order: image-like targets at their grid
index; a sequence slot j carries token j (teacher forcing) and predicts token j+1, and is used when
both are targets. Sequence positions are ranks among the modality's input (or target) tokens.
"""

from __future__ import annotations

import torch

from fourm_core.modalities import ModalityKind, get_modality
from train_stage.batch import IGNORE, MODALITY_INDEX, MaskedBatch


def _patchify(img: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p*p*C) in (ph pw c) order."""
    B, C, H, W = img.shape
    return img.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def reference_batch_to_ours(batch: dict[str, torch.Tensor], enc_order: list[str], dec_order: list[str],
                            n_enc: int, n_dec: int) -> MaskedBatch:
    B = next(iter(batch.values())).shape[0]
    enc = {k: torch.zeros(B, n_enc, dtype=torch.long) for k in ("tok", "pos", "mod")}
    enc_valid = torch.zeros(B, n_enc, dtype=torch.bool)
    dec = {k: torch.zeros(B, n_dec, dtype=torch.long) for k in ("tok", "pos", "mod", "lab")}
    dec_valid = torch.zeros(B, n_dec, dtype=torch.bool)
    dec["lab"].fill_(IGNORE)
    enc["mod"].fill_(-1)
    dec["mod"].fill_(-1)
    pixels, embeddings = {}, {}
    for name in enc_order:
        mod = get_modality(name)
        if mod.kind == ModalityKind.PIXELS:
            pixels[name] = _patchify(batch[f"{name}.tensor"].float(), mod.patch_size)
        elif mod.kind == ModalityKind.EMBEDDING_SEQ:
            embeddings[name] = batch[f"{name}.tensor"].float()
    for b in range(B):
        k = 0
        for name in enc_order:
            mod = get_modality(name)
            used = (~batch[f"{name}.input_mask"][b]).nonzero()[:, 0]
            for rank, i in enumerate(used.tolist()):
                if k == n_enc:
                    break
                content = i if mod.kind in (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ) \
                    else int(batch[f"{name}.tensor"][b].reshape(-1)[i])
                pos = rank if mod.is_sequence else i
                enc["tok"][b, k], enc["pos"][b, k], enc["mod"][b, k] = content, pos, MODALITY_INDEX[name]
                enc_valid[b, k] = True
                k += 1
        k = 0
        for name in dec_order:
            mod = get_modality(name)
            ids = batch[f"{name}.tensor"][b].reshape(-1).long()
            tgt = ~batch[f"{name}.target_mask"][b].reshape(-1)
            rank = tgt.long().cumsum(0) - 1
            if mod.is_sequence:
                slots = [(j, int(ids[j]), int(rank[j]), int(ids[j + 1])) for j in range(len(ids) - 1)
                         if tgt[j] and tgt[j + 1]]
            else:
                slots = [(i, 0, i, int(ids[i])) for i in tgt.nonzero()[:, 0].tolist()]
            for _, tok, pos, lab in slots:
                if k == n_dec:
                    break
                dec["tok"][b, k], dec["pos"][b, k], dec["lab"][b, k] = tok, pos, lab
                dec["mod"][b, k] = MODALITY_INDEX[name]
                dec_valid[b, k] = True
                k += 1
    return MaskedBatch(enc_tokens=enc["tok"], enc_positions=enc["pos"], enc_modality=enc["mod"], enc_valid=enc_valid,
                       dec_tokens=dec["tok"], dec_positions=dec["pos"], dec_modality=dec["mod"], dec_valid=dec_valid,
                       dec_labels=dec["lab"], pixels=pixels, embeddings=embeddings)
