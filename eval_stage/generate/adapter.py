"""The one place where the evaluation stage touches the 4M model's internals.

Everything the samplers need from :class:`train_stage.model.FourM` goes through :class:`ModelAdapter`,
so a change in the train stage is adapted here and nowhere else. Relied upon (exact names):

* ``train_stage.batch.MaskedBatch`` (fields enc_*/dec_*/pixels/embeddings), ``MODALITY_INDEX``;
* ``FourM.config.{domains_in, domains_out}``, ``FourM.encode(batch) -> (encoded, enc_emb)``,
  ``FourM.decode(batch, encoded, enc_emb) -> (B, N_out, D)``, ``FourM.cross_mask(enc_valid)``,
  ``FourM.decoder_proj_context``, ``FourM.decoder`` (blocks), ``FourM.decoder_norm``, ``FourM.mask_token``;
* per decoder block: ``norm1, self_attn.{qkv, proj, num_heads}, query_norm, context_norm,
  cross_attn.{q, kv, proj, num_heads}, norm2, mlp``;
* ``FourM.decoder_embeddings[m].{token_emb, to_logits, pos_mod(positions)}``;
* ``FourM.logits(batch) -> {m: (selection (B, N_out) bool, logits (K, V))}`` and ``train_stage.batch.IGNORE``
  (held-out masked-token metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fourm_core.modalities import ModalityKind, get_modality
from train_stage.batch import IGNORE, MODALITY_INDEX, MaskedBatch


@dataclass
class EncoderSlots:
    """Flat encoder input of a batch, the model's layout (4M-FACTS §5): every tensor (B, N).

    tokens: token id, or row of ``pixels`` / ``embeddings`` for float modalities; positions: index into
    the modality's position table; modality: registry index; valid: slot is used; group: which entry of
    ``names`` the slot belongs to (the samplers drop whole modalities for classifier-free guidance).
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    modality: torch.Tensor
    valid: torch.Tensor
    group: torch.Tensor
    names: list[str]
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)

    def repeat(self, n: int) -> "EncoderSlots":
        """The batch stacked n times along dim 0 (one copy per guidance pass)."""
        rep = lambda t: t.repeat(n, *([1] * (t.dim() - 1)))  # noqa: E731
        return EncoderSlots(rep(self.tokens), rep(self.positions), rep(self.modality), rep(self.valid),
                            rep(self.group), self.names, {k: rep(v) for k, v in self.pixels.items()},
                            {k: rep(v) for k, v in self.embeddings.items()})


@dataclass
class Context:
    """Encoder output prepared for the decoder's cross-attention.

    encoded (B, N_in, D) after encoder_norm, enc_emb (B, N_in, D), enc_valid (B, N_in) bool,
    context (B, N_in, D) = decoder_proj_context(encoded) + enc_emb, cross_mask (B, 1, 1, N_in) bool.
    """

    encoded: torch.Tensor
    enc_emb: torch.Tensor
    enc_valid: torch.Tensor
    context: torch.Tensor
    cross_mask: torch.Tensor


class ModelAdapter:
    """A narrow view of a FourM model for sampling: encode once, decode slots, per-layer decoder pieces."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    # ------------------------------------------------------------------------------ metadata
    @property
    def domains_in(self) -> list[str]:
        return list(self.config.domains_in)

    @property
    def domains_out(self) -> list[str]:
        return list(self.config.domains_out)

    @staticmethod
    def modality_index(name: str) -> int:
        return MODALITY_INDEX[name]

    @property
    def device(self) -> torch.device:
        return self.model.mask_token.device

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.decoder

    # ------------------------------------------------------------------------------ encoder
    def encode(self, slots: EncoderSlots) -> Context:
        B, N = slots.tokens.shape
        empty = slots.tokens.new_zeros((B, 1))
        pixels, embeddings = dict(slots.pixels), dict(slots.embeddings)
        # the model's float-input embeddings expect their tensor even when the batch has no slot of them
        dtype = self.model.mask_token.dtype
        for name in self.domains_in:
            mod = get_modality(name)
            if mod.kind == ModalityKind.PIXELS and name not in pixels:
                pixels[name] = torch.zeros(B, 1, mod.feature_dim * mod.patch_size**2, dtype=dtype, device=self.device)
            elif mod.kind == ModalityKind.EMBEDDING_SEQ and name not in embeddings:
                embeddings[name] = torch.zeros(B, 1, mod.feature_dim, dtype=dtype, device=self.device)
        batch = MaskedBatch(enc_tokens=slots.tokens, enc_positions=slots.positions, enc_modality=slots.modality,
                            enc_valid=slots.valid, dec_tokens=empty, dec_positions=empty,
                            dec_modality=empty - 1, dec_valid=empty.bool(), dec_labels=empty,
                            pixels=pixels, embeddings=embeddings)
        encoded, enc_emb = self.model.encode(batch)
        context = self.model.decoder_proj_context(encoded) + enc_emb
        return Context(encoded, enc_emb, slots.valid, context, self.model.cross_mask(slots.valid))

    # ------------------------------------------------------------------------------ full decoder
    def decode(self, ctx: Context, modality: str, tokens: torch.Tensor, positions: torch.Tensor,
               valid: torch.Tensor) -> torch.Tensor:
        """All decoder slots of one target modality at once (the model's own forward) -> logits (B, Q, V).

        tokens, positions, valid (B, Q): image-like targets ignore ``tokens`` (decoded from the mask
        token); sequence targets are causal over the slot order.
        """
        return self.to_logits(modality, self.decode_hidden(ctx, modality, tokens, positions, valid))

    def decode_hidden(self, ctx: Context, modality: str, tokens: torch.Tensor, positions: torch.Tensor,
                      valid: torch.Tensor) -> torch.Tensor:
        """Like :meth:`decode` but returns the decoder output after decoder_norm (B, Q, D)."""
        mid = MODALITY_INDEX[modality]
        batch = MaskedBatch(enc_tokens=ctx.enc_valid.long(), enc_positions=ctx.enc_valid.long(),
                            enc_modality=ctx.enc_valid.long(), enc_valid=ctx.enc_valid, dec_tokens=tokens,
                            dec_positions=positions, dec_modality=torch.where(valid, mid, -1), dec_valid=valid,
                            dec_labels=tokens)
        return self.model.decode(batch, ctx.encoded, ctx.enc_emb)

    # ------------------------------------------------------------------------------ pieces (KV cache)
    def embed_decoder_tokens(self, modality: str, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Sequence decoder input: token_emb + position/modality embedding. (B, T) -> (B, T, D)."""
        emb = self.model.decoder_embeddings[modality]
        dtype = self.model.mask_token.dtype
        return emb.token_emb(tokens).to(dtype) + emb.pos_mod(positions).to(dtype)

    def to_logits(self, modality: str, y: torch.Tensor) -> torch.Tensor:
        """Decoder hidden state after decoder_norm (..., D) -> logits (..., V)."""
        return self.model.decoder_embeddings[modality].to_logits(y)

    def final_norm(self, y: torch.Tensor) -> torch.Tensor:
        return self.model.decoder_norm(y)

    # ------------------------------------------------------------------------------ held-out loss
    @torch.no_grad()
    def masked_logits(self, batch: MaskedBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Teacher-forced logits of a masked batch -> (logits {m: (K_m, V_m)}, labels {m: (K_m,)}) for the
        target modalities present; labels are -100 where the slot carries no loss."""
        logits, labels = {}, {}
        for m, (sel, lg) in self.model.logits(batch).items():
            if int(sel.sum()):
                logits[m] = lg
                labels[m] = torch.where(batch.dec_labels[sel] == IGNORE, -100, batch.dec_labels[sel])
        return logits, labels
