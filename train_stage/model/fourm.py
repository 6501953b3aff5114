"""The 4M encoder-decoder (4M-FACTS §6), with the released checkpoint's parameter names (§9)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fourm_core.modalities import get_modality

from ..batch import MODALITY_INDEX, MaskedBatch
from .config import FourMConfig
from .embeddings import DecoderEmbedding, encoder_embedding
from .layers import DecoderBlock, EncoderBlock, layer_norm


@dataclass
class FourMOutput:
    """loss: scalar mean over target modalities present in the batch.
    modality_losses (M_out,): per target modality (order of ``config.domains_out``), 0 where absent;
    modality_counts (M_out,): labelled tokens per target modality."""

    loss: torch.Tensor
    modality_losses: torch.Tensor
    modality_counts: torch.Tensor


def _with_self(mask: torch.Tensor) -> torch.Tensor:
    """Let every query see itself so padded rows are never fully masked (SDPA would return NaN)."""
    eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
    return mask | eye


class FourM(nn.Module):
    def __init__(self, config: FourMConfig):
        super().__init__()
        self.config = config
        cfg = config
        self.encoder_embeddings = nn.ModuleDict({m: encoder_embedding(get_modality(m), cfg) for m in cfg.domains_in})
        self.encoder = nn.ModuleList([EncoderBlock(cfg) for _ in range(cfg.encoder_depth)])
        self.encoder_norm = layer_norm(cfg)
        # The released models project the encoder output (with bias) before re-adding the position and
        # modality embeddings for the decoder's cross-attention.
        self.decoder_proj_context = nn.Linear(cfg.dim, cfg.dim)
        self.decoder_embeddings = nn.ModuleDict({m: DecoderEmbedding(get_modality(m), cfg) for m in cfg.domains_out})
        self.decoder = nn.ModuleList([DecoderBlock(cfg) for _ in range(cfg.decoder_depth)])
        self.decoder_norm = layer_norm(cfg)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self._init_weights()
        if cfg.share_modality_embeddings:
            self.tie_modality_embeddings()
        # registry index of every decoder modality, and whether it is decoded causally
        self.register_buffer("_dec_ids", torch.tensor([MODALITY_INDEX[m] for m in cfg.domains_out]), persistent=False)
        causal = torch.zeros(len(MODALITY_INDEX) + 1, dtype=torch.bool)  # last entry: padding (-1)
        for m in cfg.domains_out:
            causal[MODALITY_INDEX[m]] = self.decoder_embeddings[m].causal
        self.register_buffer("_causal_table", causal, persistent=False)

    # ------------------------------------------------------------------------------------ set-up

    def _init_weights(self) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def tie_modality_embeddings(self) -> None:
        """4M-7 shares one modality embedding between encoder and decoder for each modality."""
        for m, dec in self.decoder_embeddings.items():
            if m in self.encoder_embeddings:
                dec.mod_emb = self.encoder_embeddings[m].mod_emb

    def tied_parameter_names(self) -> dict[str, str]:
        """decoder name -> encoder name of the tied modality embeddings (empty when not shared)."""
        if not self.config.share_modality_embeddings:
            return {}
        return {f"decoder_embeddings.{m}.mod_emb": f"encoder_embeddings.{m}.mod_emb"
                for m in self.decoder_embeddings if m in self.encoder_embeddings}

    def compile_blocks(self, **options) -> None:
        """Compile each transformer block in place (``nn.Module.compile``), torchtitan-style.

        The blocks carry almost all FLOPs and have static shapes (the masker's fixed token counts), so
        one encoder and one decoder graph serve every layer; the per-modality embedding and loss loops
        (selections whose sizes change from batch to batch) stay eager instead of breaking or recompiling a
        whole-model graph. Parameter names are unchanged, so checkpoints and FSDP2 sharding are too."""
        for block in list(self.encoder) + list(self.decoder):
            block.compile(fullgraph=True, **options)

    # ------------------------------------------------------------------------------------ embedding

    def _embed(self, modules: nn.ModuleDict, tokens: torch.Tensor, positions: torch.Tensor,
               slots: dict[int, torch.Tensor], extra: dict[str, torch.Tensor],
               decoder: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Content and position+modality embeddings for flat slots: (B, N) ids -> two (B, N, D).

        ``slots``: modality index -> its flat slot numbers (``MaskedBatch.slots``). Selecting with those, whose
        counts the host knows, rather than with boolean masks keeps a GPU step free of host-device syncs."""
        B, N = tokens.shape
        D = self.config.dim
        dtype = self.mask_token.dtype
        x = tokens.new_zeros((B * N, D), dtype=dtype)
        emb = tokens.new_zeros((B * N, D), dtype=dtype)
        flat_tokens, flat_positions = tokens.reshape(-1), positions.reshape(-1)
        for name, module in modules.items():
            idx = slots[MODALITY_INDEX[name]]  # (K,) slot numbers of this modality
            ids = flat_tokens[idx]
            emb[idx] = module.pos_mod(flat_positions[idx]).to(dtype)
            if decoder:
                if module.from_mask_token:
                    x[idx] = self.mask_token[0].expand(idx.shape[0], D)
                else:
                    x[idx] = module.token_emb(ids).to(dtype)
            else:
                x[idx] = module.content(ids, idx // N, extra.get(name)).to(dtype)
        return x.view(B, N, D), emb.view(B, N, D)

    # ------------------------------------------------------------------------------------ masks

    @staticmethod
    def encoder_mask(enc_valid: torch.Tensor) -> torch.Tensor:
        """(B, N_in) -> (B, 1, N_in, N_in): attend to valid encoder slots."""
        return _with_self(enc_valid[:, None, None, :].expand(-1, 1, enc_valid.shape[1], -1))

    def decoder_mask(self, dec_modality: torch.Tensor, dec_valid: torch.Tensor) -> torch.Tensor:
        """(B, N_out) -> (B, 1, N_out, N_out): same modality only, causal for sequence targets.

        Slots of one modality are contiguous and in sequence order, so causality is j <= i on the flat
        index."""
        N = dec_modality.shape[1]
        same = dec_modality[:, :, None] == dec_modality[:, None, :]
        causal_q = self._causal_table[dec_modality][:, :, None]  # padding (-1) indexes the last entry
        lower = torch.ones(N, N, dtype=torch.bool, device=dec_modality.device).tril()
        mask = same & (~causal_q | lower) & dec_valid[:, None, :]
        return _with_self(mask)[:, None]

    @staticmethod
    def cross_mask(enc_valid: torch.Tensor) -> torch.Tensor:
        """(B, N_in) -> (B, 1, 1, N_in); a sample without any input may attend to its first slot."""
        first = torch.zeros_like(enc_valid)
        first[:, 0] = True
        valid = enc_valid | (first & ~enc_valid.any(dim=1, keepdim=True))
        return valid[:, None, None, :]

    # ------------------------------------------------------------------------------------ forward

    def encode(self, batch: MaskedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> encoder output (B, N_in, D) after ``encoder_norm`` and the encoder's emb (B, N_in, D)."""
        x, emb = self._embed(self.encoder_embeddings, batch.enc_tokens, batch.enc_positions, batch.slots("enc"),
                             {**batch.pixels, **batch.embeddings}, decoder=False)
        h = x + emb
        mask = self.encoder_mask(batch.enc_valid)
        for block in self.encoder:
            h = block(h, mask)
        return self.encoder_norm(h), emb

    def decode(self, batch: MaskedBatch, encoded: torch.Tensor, enc_emb: torch.Tensor) -> torch.Tensor:
        """-> decoder output (B, N_out, D) after ``decoder_norm``."""
        context = self.decoder_proj_context(encoded) + enc_emb
        x, emb = self._embed(self.decoder_embeddings, batch.dec_tokens, batch.dec_positions, batch.slots("dec"), {},
                             decoder=True)
        y = x + emb
        self_mask = self.decoder_mask(batch.dec_modality, batch.dec_valid)
        cross = self.cross_mask(batch.enc_valid)
        for block in self.decoder:
            y = block(y, context, self_mask, cross)
        return self.decoder_norm(y)

    def logits(self, batch: MaskedBatch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """modality -> (selection (B, N_out) bool, logits (K, V)) for every target modality."""
        y = self.decode(batch, *self.encode(batch))
        out = {}
        for name, module in self.decoder_embeddings.items():
            sel = batch.dec_modality == MODALITY_INDEX[name]
            out[name] = (sel, module.to_logits(y[sel]))
        return out

    def forward(self, batch: MaskedBatch) -> FourMOutput:
        y = self.decode(batch, *self.encode(batch))
        y, labels = y.reshape(-1, y.shape[-1]), batch.dec_labels.reshape(-1)
        slots = batch.slots("loss")
        losses, counts = [], []
        for name, module in self.decoder_embeddings.items():
            idx = slots[MODALITY_INDEX[name]]  # labelled slots of this modality
            logits = module.to_logits(y[idx]).float()
            losses.append(F.cross_entropy(logits, labels[idx], reduction="sum"))
            counts.append(idx.new_full((), idx.shape[0]))  # a fill on the device, not a host-to-device copy
        loss_sum, count = torch.stack(losses), torch.stack(counts)
        per_mod = loss_sum / count.clamp(min=1)
        present = (count > 0).to(per_mod.dtype)
        # mean over the target modalities of this batch, no host sync needed
        loss = (per_mod * present).sum() / present.sum().clamp(min=1)
        return FourMOutput(loss=loss, modality_losses=per_mod.detach(), modality_counts=count)
