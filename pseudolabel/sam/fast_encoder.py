"""SAM's ViT image encoder, same weights and function, with the attention computed by
``torch.nn.functional.scaled_dot_product_attention``.

segment_anything's ``Attention`` materialises the (heads, HW, HW) score matrix, adds the
decomposed relative-position terms to it in two broadcast read-modify-write passes, takes a softmax
(two more passes) and multiplies by V: for a global block of ViT-B at 1024² (4096 tokens, 12 heads)
each pass is over 800 MB. Here the relative-position terms (computed exactly as
``add_decomposed_rel_pos`` does) are written once as an additive ``attn_mask`` and SDPA's fused CPU
kernel does scores, softmax and the product with V block by block (measured on ViT-B, one thread:
a global attention block ~2.4x faster). Equal to ``ImageEncoderViT`` up to float rounding
(``tests/pseudolabel_sam/test_fast_encoder.py``). The model's modules are not changed:
:func:`encode` runs its own forward over them, so the reference generator still runs the original code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (Attention, Block, ImageEncoderViT, get_rel_pos,
                                                     window_partition, window_unpartition)


def attention(att: Attention, x: torch.Tensor) -> torch.Tensor:
    """``att(x)`` for x (B, H, W, C), through SDPA with the relative positions as an additive mask."""
    b, h, w, _ = x.shape
    nh = att.num_heads
    qkv = att.qkv(x).reshape(b, h * w, 3, nh, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * nh, h * w, -1).unbind(0)
    if att.use_rel_pos:
        rh = get_rel_pos(h, h, att.rel_pos_h)  # (h, h, d)
        rw = get_rel_pos(w, w, att.rel_pos_w)  # (w, w, d)
        r_q = q.reshape(b * nh, h, w, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh).reshape(b * nh, h * w, h)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw).reshape(b * nh, h * w, w)
        # One broadcast write of the (B·heads, HW, HW) bias instead of two read-modify-write passes.
        mask = (rel_h.view(b * nh, h * w, h, 1) + rel_w.view(b * nh, h * w, 1, w)).view(b * nh, h * w, h * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=att.scale)
    else:
        out = F.scaled_dot_product_attention(q, k, v, scale=att.scale)
    out = out.view(b, nh, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return att.proj(out)


def block(blk: Block, x: torch.Tensor) -> torch.Tensor:
    """``blk(x)`` with :func:`attention`."""
    shortcut = x
    x = blk.norm1(x)
    if blk.window_size > 0:
        hh, ww = x.shape[1], x.shape[2]
        x, pad_hw = window_partition(x, blk.window_size)
    x = attention(blk.attn, x)
    if blk.window_size > 0:
        x = window_unpartition(x, blk.window_size, pad_hw, (hh, ww))
    x = shortcut + x
    return x + blk.mlp(blk.norm2(x))


@torch.no_grad()
def encode(encoder: ImageEncoderViT, x: torch.Tensor) -> torch.Tensor:
    """``encoder(x)`` with :func:`block` for every transformer block."""
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for blk in encoder.blocks:
        x = block(blk, x)
    return encoder.neck(x.permute(0, 3, 1, 2))
