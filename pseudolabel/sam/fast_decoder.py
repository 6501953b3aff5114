"""SAM's mask decoder for many point prompts on one image, with the same math reassociated.

``MaskDecoder`` repeats the image embedding once per prompt and runs every attention projection
over all N = g² image tokens for every prompt. For point prompts on one image most of that work
is either shared or can be moved to the few (T = 7) prompt tokens:

* prompt-independent work is done once per image (:func:`image_context`): the dense prompt is the
  constant ``no_mask_embed``, so the first layer's image tokens, the dense positional encoding and
  the first layer's key/value projections (token → image) and query projection (image → token)
  are the same for every prompt; batches of prompts broadcast them (heads as the batch dimension,
  prompts folded into rows, so nothing N-sized is expanded per prompt);
* where image tokens differ per prompt, a projection of the N image tokens followed by a dot
  product with T tokens is rewritten as a projection of the T tokens into the C-dim image space
  (``(W x)·q = x·(Wᵀ q)``), and ``out_proj(attn @ V)`` as ``attn @ (V Woᵀ)``; attention rows sum
  to 1 per head, so the output bias is folded into those values and the residual is accumulated by
  the same matmul (``baddbmm``). Per image token and prompt this costs H·T·C multiply-adds instead
  of C·D (C = 256, D = 128, H = 8 for ViT-B/L/H);
* ``keys + pos`` is formed once per layer (the reference forms it for each attention);
* the final token → image attention runs only for the tokens that are read (the IoU token and the
  three multimask tokens);
* the upscaler runs on the tokens in channels-last layout: a 2×2 stride-2 transposed convolution
  is a per-token matmul to 2×2 output pixels, ``LayerNorm2d`` is ``F.layer_norm`` over the channel
  axis, and the hypernetwork dot products are one matmul per prompt; pixels are put back in image
  order only for the 3 mask channels. :func:`decode_tokens` returns the IoU predictions first, so
  a caller can skip the upscaler for prompts whose masks all fail the predicted-IoU filter.

The IoU head, MLPs, self-attention and layer norms call the model's own modules or their weights.
Outputs equal ``MaskDecoder(..., multimask_output=True)`` up to float rounding;
``tests/pseudolabel_sam/test_fast_decoder.py`` checks that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.modeling.transformer import Attention

# Query tokens read after the last attention: IoU token (0) and the three multimask tokens (2, 3, 4).
_READ = [0, 2, 3, 4]


@dataclass
class ImageContext:
    """Prompt-independent decoder inputs for one image embedding (see :func:`image_context`)."""

    src: torch.Tensor  # (1, N, C) image tokens + no_mask_embed
    pos: torch.Tensor  # (1, N, C) dense positional encoding
    t2i_k: torch.Tensor  # (h, d, N) layer-1 token→image keys, pre-scaled by 1/sqrt(d)
    t2i_v: torch.Tensor  # (h, N, d) layer-1 token→image values
    i2t_q: torch.Tensor  # (h, d, N) layer-1 image→token queries
    grid: tuple[int, int]


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, T, D) -> (B, h, T, D/h)."""
    b, t, d = x.shape
    return x.reshape(b, t, h, d // h).transpose(1, 2)


@torch.no_grad()
def image_context(model: Sam, image_embedding: torch.Tensor) -> ImageContext:
    """Everything in the decoder that does not depend on the prompt, for a (1, C, g, g) embedding."""
    pe, layer = model.prompt_encoder, model.mask_decoder.transformer.layers[0]
    _, _, gh, gw = image_embedding.shape
    dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
    src = (image_embedding + dense).flatten(2).transpose(1, 2).contiguous()  # (1, N, C)
    pos = pe.get_dense_pe().flatten(2).transpose(1, 2).contiguous()  # (1, N, C)
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    kp = src + pos
    k = _heads(t2i.k_proj(kp), t2i.num_heads)[0]  # (h, N, d)
    scale = 1.0 / math.sqrt(k.shape[-1])
    return ImageContext(src=src, pos=pos, t2i_k=(k * scale).transpose(1, 2).contiguous(),
                        t2i_v=_heads(t2i.v_proj(src), t2i.num_heads)[0].contiguous(),
                        i2t_q=_heads(i2t.q_proj(kp), i2t.num_heads)[0].transpose(1, 2).contiguous(), grid=(gh, gw))


def _t2i_shared(att: Attention, q: torch.Tensor, ctx: ImageContext) -> torch.Tensor:
    """Layer-1 ``att(q, src + pos, src)``: B prompts' tokens q (B, T, C) on the shared image tokens."""
    b, t, _ = q.shape
    h = att.num_heads
    qh = att.q_proj(q).reshape(b * t, h, -1).transpose(0, 1)  # (h, B·T, d)
    attn = torch.softmax(qh @ ctx.t2i_k, dim=-1)  # (h, B·T, N)
    out = (attn @ ctx.t2i_v).transpose(0, 1).reshape(b, t, -1)  # (B, T, h·d)
    return att.out_proj(out)


def _t2i(att: Attention, q: torch.Tensor, keys: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``att(q, keys + pos, keys)`` with per-prompt image tokens keys (B, N, C): reassociated.

    The positional term is a separate (B·h·T, C) @ (C, N) product instead of a (B, N, C) sum.
    Returns (B, T, C).
    """
    h = att.num_heads
    b, t, _ = q.shape
    qh = _heads(att.q_proj(q), h)  # (B, h, T, d)
    d = qh.shape[-1]
    wk = att.k_proj.weight.reshape(h, d, -1)  # (h, d, C)
    # scores = (Wq q)·(Wk k + bk) = (Wkᵀ Wq q)·k + const over the key index (drops in softmax).
    qk = (qh @ wk).reshape(b, h * t, -1) * (1.0 / math.sqrt(d))  # (B, h·T, C)
    scores = (qk.reshape(b * h * t, -1) @ pos[0].T).view(b, h * t, -1)  # (B, h·T, N)
    attn = torch.softmax(scores.baddbmm_(qk, keys.transpose(1, 2)), dim=-1)
    pooled = (attn @ keys).reshape(b, h, t, -1)  # (B, h, T, C): attention-weighted raw image tokens
    wv = att.v_proj.weight.reshape(h, d, -1)  # (h, d, C)
    out = pooled @ wv.transpose(-1, -2) + att.v_proj.bias.reshape(1, h, 1, d)  # (B, h, T, d)
    return att.out_proj(out.transpose(1, 2).reshape(b, t, -1))


def _i2t_values(att: Attention, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-prompt keys (B, h, T, d) and values through out_proj (B, T·h, C), bias folded in."""
    h = att.num_heads
    b, t, _ = k.shape
    kh = _heads(att.k_proj(k), h)  # (B, h, T, d)
    d = kh.shape[-1]
    wo = att.out_proj.weight.reshape(-1, h, d).permute(1, 2, 0)  # (h, d, C)
    # Each head's attention row sums to 1, so adding bias/h to every value row adds the bias once.
    vo = (_heads(att.v_proj(v), h) @ wo).transpose(1, 2).reshape(b, t * h, -1) + att.out_proj.bias / h
    return kh, vo, d


def _softmax_tokens(scores: torch.Tensor, t: int) -> torch.Tensor:
    """Softmax over the T prompt tokens of (B, T·h, N) scores (rows ordered (t, h)).

    Over dim 1 of a (B, T, h, N) view: the inner stride is h·N, so the kernel vectorises over
    image tokens (a softmax over a last axis of length 7 is ~10x slower on CPU).
    """
    b, th, n = scores.shape
    return torch.softmax(scores.view(b, t, th // t, n), dim=1).view(b, th, n)


def _i2t_shared(att: Attention, k: torch.Tensor, v: torch.Tensor, ctx: ImageContext) -> torch.Tensor:
    """Layer-1 ``src + att(src + pos, k, v)`` for prompt tokens k, v (B, T, C). Returns (B, N, C)."""
    kh, vo, d = _i2t_values(att, k, v)
    b, h, t, _ = kh.shape
    kt = kh.transpose(0, 1).reshape(h, b * t, d) * (1.0 / math.sqrt(d))  # (h, B·T, d)
    scores = (kt @ ctx.i2t_q).view(h, b, t, -1).permute(1, 2, 0, 3)  # (B, T, h, N)
    attn = torch.softmax(scores, dim=1).reshape(b, t * h, -1)
    return torch.baddbmm(ctx.src, attn.transpose(1, 2), vo)


def _i2t(att: Attention, keys: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``keys + att(keys + pos, k, v)`` with per-prompt image tokens, in place on ``keys``.

    Queries projected into key space; the positional term is a (C → B·T·h) product over the N
    positions, shared layout, instead of a (B, N, C) sum.
    """
    kh, vo, d = _i2t_values(att, k, v)
    b, h, t, _ = kh.shape
    wq = att.q_proj.weight.reshape(h, d, -1)  # (h, d, C)
    s = 1.0 / math.sqrt(d)
    # (Wq x + bq)·k_t = x·(Wqᵀ k_t) + bq·k_t: project the T keys into image-token space.
    kq = (kh @ wq).transpose(1, 2).reshape(b, t * h, -1) * s  # (B, T·h, C)
    bias = (kh @ att.q_proj.bias.reshape(h, d, 1)).transpose(1, 2).reshape(b * t * h) * s
    scores = torch.addmm(bias[:, None], kq.reshape(b * t * h, -1), pos[0].T).view(b, t * h, -1)  # (B, T·h, N)
    attn = _softmax_tokens(scores.baddbmm_(kq, keys.transpose(1, 2)), t)
    return keys.baddbmm_(attn.transpose(1, 2), vo)


@torch.no_grad()
def decode_tokens(model: Sam, ctx: ImageContext, point_coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-way transformer for single positive points. Returns (iou (B, 3), mask tokens (B, 3, C), keys (B, N, C))."""
    dec, pe = model.mask_decoder, model.prompt_encoder
    labels = torch.ones(point_coords.shape[:2], dtype=torch.int, device=point_coords.device)
    sparse, _ = pe(points=(point_coords, labels), boxes=None, masks=None)
    bsz = sparse.shape[0]
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(bsz, -1, -1), sparse], dim=1)  # (B, T, C)

    tr = dec.transformer
    queries, keys = tokens, None
    for layer in tr.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        if keys is None:  # first layer: image tokens shared by all prompts
            queries = layer.norm2(queries + _t2i_shared(layer.cross_attn_token_to_image, queries + tokens, ctx))
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = _i2t_shared(layer.cross_attn_image_to_token, queries + tokens, queries, ctx)
        else:
            queries = layer.norm2(queries + _t2i(layer.cross_attn_token_to_image, queries + tokens, keys, ctx.pos))
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = _i2t(layer.cross_attn_image_to_token, keys, ctx.pos, queries + tokens, queries)
        keys = layer.norm4(keys)
    if keys is None:
        keys = ctx.src.expand(bsz, -1, -1)
    read = queries[:, _READ]
    read = tr.norm_final_attn(read + _t2i(tr.final_attn_token_to_image, (queries + tokens)[:, _READ],
                                          keys, ctx.pos))
    return dec.iou_prediction_head(read[:, 0])[:, 1:], read[:, 1:], keys


@torch.no_grad()
def upscale_masks(model: Sam, mask_tokens: torch.Tensor, keys: torch.Tensor, grid: tuple[int, int],
                  block_tokens: int = 512) -> torch.Tensor:
    """Low-res multimask logits (B, 3, 4g, 4g) from the decoder's mask tokens (B, 3, C) and keys (B, N, C).

    ``output_upscaling`` (ConvT 2×2/2, LayerNorm2d, GELU, ConvT 2×2/2, GELU) in channels-last layout,
    then the hypernetwork dot products, one block of about ``block_tokens`` image tokens (whole
    grid rows of one prompt) at a time so the 16×-upsampled intermediates stay in cache.
    """
    dec = model.mask_decoder
    conv1, ln, act1, conv2, act2 = dec.output_upscaling
    b, n, c = keys.shape
    gh, gw = grid
    c1, c2 = conv1.out_channels, conv2.out_channels
    # ConvTranspose weight (Cin, Cout, 2, 2) -> (Cin, 2·2·Cout): output pixel (a, c) then channel.
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1)
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
    b1, b2 = conv1.bias.repeat(4), conv2.bias.repeat(4)
    # Hypernetworks for the three multimask tokens (the single-mask slot 0 is not read).
    mlps = dec.output_hypernetworks_mlps[1:1 + mask_tokens.shape[1]]
    hyper = torch.stack([mlp(mask_tokens[:, j]) for j, mlp in enumerate(mlps)], dim=2)  # (B, C2, M)
    m = hyper.shape[2]
    out = torch.empty(b, m, 4 * gh, 4 * gw, dtype=keys.dtype, device=keys.device)
    rows = max(1, min(gh, block_tokens // gw))  # grid rows per block
    for i in range(b):
        for r0 in range(0, gh, rows):
            r1 = min(gh, r0 + rows)
            x = torch.addmm(b1, keys[i, r0 * gw:r1 * gw], w1).view(-1, c1)  # (R·4, C1)
            x = act1(F.layer_norm(x, (c1,), ln.weight, ln.bias, ln.eps))
            x = act2(torch.addmm(b2, x, w2)).view(-1, c2)  # (R·16, C2), pixel (i, j, a, c, a2, c2)
            y = (x @ hyper[i]).view(r1 - r0, gw, 2, 2, 2, 2, m)
            out[i, :, 4 * r0:4 * r1].view(m, r1 - r0, 2, 2, gw, 2, 2).copy_(y.permute(6, 0, 2, 4, 1, 3, 5))
    return out


@torch.no_grad()
def decode_points(model: Sam, image_embedding: torch.Tensor | ImageContext,
                  point_coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multimask decoding of single positive points, like ``SamPredictor.predict_torch``.

    image_embedding: (1, C, g, g) or its :func:`image_context`; point_coords: (B, 1, 2) in the
    model's input frame (pixels). Returns low-res mask logits (B, 3, 4g, 4g) and predicted IoUs (B, 3).
    """
    ctx = image_embedding if isinstance(image_embedding, ImageContext) else image_context(model, image_embedding)
    iou, mask_tokens, keys = decode_tokens(model, ctx, point_coords)
    return upscale_masks(model, mask_tokens, keys, ctx.grid), iou
