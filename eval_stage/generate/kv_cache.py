"""Incremental (key/value cached) forward of the 4M decoder for autoregressive sequence targets.

The reference sampler re-runs the whole decoder over the growing prefix at every step: O(T²) token
passes for T tokens. Here each block keeps the keys/values of the tokens already decoded, so a step
only runs the new token through the blocks; cross-attention keys/values depend only on the encoder
context, so they are computed once per block before the first step. The modules and weights are the
model's own (``self_attn.qkv/proj``, ``cross_attn.q/kv/proj``, norms, ``mlp``), reached through the
:class:`~eval_stage.generate.adapter.ModelAdapter`, so the result equals the uncached forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .adapter import Context, ModelAdapter


class KVCacheDecoder:
    """Decode a causal sequence target one token at a time.

    Holds per block: self-attention keys/values (B, h, T, d) for the T tokens seen so far, and the
    cross-attention keys/values (B, h, N_in, d) of the context.
    """

    def __init__(self, adapter: ModelAdapter, ctx: Context, max_len: int):
        self.adapter = adapter
        self.cross_mask = ctx.cross_mask  # (B, 1, 1, N_in)
        blocks = adapter.blocks
        B, N, D = ctx.context.shape
        h = blocks[0].self_attn.num_heads
        self.h, self.d = h, D // h
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for blk in blocks:
            c = blk.context_norm(ctx.context)
            k, v = blk.cross_attn.kv(c).view(B, N, 2, h, D // h).permute(2, 0, 3, 1, 4)
            self.cross_kv.append((k, v))
        # preallocated self-attention caches, filled up to self.length
        dtype = ctx.context.dtype
        self.k = [ctx.context.new_zeros((B, h, max_len, D // h), dtype=dtype) for _ in blocks]
        self.v = [ctx.context.new_zeros((B, h, max_len, D // h), dtype=dtype) for _ in blocks]
        self.length = 0
        self.max_len = max_len

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, D): the embedded newest token -> decoder output after decoder_norm (B, 1, D).

        The new token attends to every cached token and itself, which is exactly the causal mask of
        the full forward for its row.
        """
        assert self.length < self.max_len, "KV cache full"
        B, _, D = x.shape
        h, d, t = self.h, self.d, self.length
        for i, blk in enumerate(self.adapter.blocks):
            q, k, v = blk.self_attn.qkv(blk.norm1(x)).view(B, 1, 3, h, d).permute(2, 0, 3, 1, 4)
            self.k[i][:, :, t:t + 1] = k
            self.v[i][:, :, t:t + 1] = v
            y = F.scaled_dot_product_attention(q, self.k[i][:, :, :t + 1], self.v[i][:, :, :t + 1])
            x = x + blk.self_attn.proj(y.transpose(1, 2).reshape(B, 1, D))
            q = blk.cross_attn.q(blk.query_norm(x)).view(B, 1, h, d).transpose(1, 2)
            ck, cv = self.cross_kv[i]
            y = F.scaled_dot_product_attention(q, ck, cv, attn_mask=self.cross_mask)
            x = x + blk.cross_attn.proj(y.transpose(1, 2).reshape(B, 1, D))
            x = x + blk.mlp(blk.norm2(x))
        self.length += 1
        return self.adapter.final_norm(x)
