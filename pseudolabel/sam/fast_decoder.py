"""SAM's mask decoder for many point prompts on one image, with the same math reassociated.

``MaskDecoder`` repeats the image embedding once per prompt and runs every attention projection
over all N = g² image tokens for every prompt. For point prompts on one image most of that work
is either shared or can be moved to the few (T = 7) prompt tokens:

* layer 1 sees the same image tokens for every prompt (the dense prompt is the constant
  ``no_mask_embed``): their key/value/query projections are computed once and broadcast;
* where image tokens differ per prompt, a projection of the N image tokens followed by a dot
  product with T tokens is rewritten as a projection of the T tokens into the C-dim image space
  (``(W x)·q = x·(Wᵀ q)``), and ``out_proj(attn @ V)`` as ``attn @ (V Woᵀ)`` (attention rows sum
  to 1, so biases pass through). Per image token and prompt this costs H·T·C multiply-adds instead
  of C·D (C = 256, D = 128, H = 8 for ViT-B/L/H), and nothing of size N×C is ever repeated in memory
  for layer 1.

Everything else (self-attention, MLPs, layer norms, the upscaler, the hypernetworks, the IoU head)
calls the model's own modules. Outputs equal ``MaskDecoder(..., multimask_output=True)`` up to
float rounding; ``tests/pseudolabel_sam/test_fast_decoder.py`` checks that.
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.transformer import Attention


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, T, D) -> (B, h, T, D/h)."""
    b, t, d = x.shape
    return x.reshape(b, t, h, d // h).transpose(1, 2)


def tokens_to_image(att: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``att(q, k, v)`` for T prompt tokens q (B, T, C) attending to N image tokens k, v (b, N, C).

    b = 1 (image tokens shared by all prompts): project k, v once. b = B: reassociate so that the
    N×C image tokens are only multiplied with (H·T)×C matrices. Returns (B, T, C).
    """
    h = att.num_heads
    qh = _heads(att.q_proj(q), h)  # (B, h, T, d)
    d = qh.shape[-1]
    if k.shape[0] == 1 and q.shape[0] > 1:
        kh, vh = _heads(att.k_proj(k), h), _heads(att.v_proj(v), h)  # (1, h, N, d)
        attn = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)  # (B, h, T, N)
        out = attn @ vh  # (B, h, T, d)
    else:
        b, t, _ = q.shape
        wk = att.k_proj.weight.reshape(h, d, -1)  # (h, d, C)
        # scores = (Wq q)·(Wk k + bk) = (Wkᵀ Wq q)·k + const over the key index (drops in softmax).
        qk = (qh @ wk).reshape(b, h * t, -1)  # (B, h·T, C)
        attn = torch.softmax(qk @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # (B, h·T, N)
        pooled = (attn @ v).reshape(b, h, t, -1)  # (B, h, T, C): attention-weighted raw image tokens
        wv = att.v_proj.weight.reshape(h, d, -1)  # (h, d, C)
        out = pooled @ wv.transpose(-1, -2) + att.v_proj.bias.reshape(1, h, 1, d)  # (B, h, T, d)
    out = out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
    return att.out_proj(out)


def image_to_tokens(att: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``att(q, k, v)`` for N image tokens q (b, N, C) attending to T prompt tokens k, v (B, T, C).

    Returns (B, N, C). The output projection is applied to the T values before attention.
    """
    h = att.num_heads
    b, t, _ = k.shape
    kh = _heads(att.k_proj(k), h)  # (B, h, T, d)
    d = kh.shape[-1]
    vh = _heads(att.v_proj(v), h)  # (B, h, T, d)
    wo = att.out_proj.weight.reshape(-1, h, d).permute(1, 2, 0)  # (h, d, C)
    vo = (vh @ wo).reshape(b, h * t, -1)  # (B, h·T, C): values already through out_proj
    if q.shape[0] == 1 and b > 1:
        qh = _heads(att.q_proj(q), h)  # (1, h, N, d), shared by all prompts
        scores = qh @ kh.transpose(-1, -2)  # (B, h, N, T)
        scores = scores.permute(0, 2, 1, 3)  # (B, N, h, T)
    else:
        wq = att.q_proj.weight.reshape(h, d, -1)  # (h, d, C)
        # (Wq x + bq)·k_t = x·(Wqᵀ k_t) + bq·k_t: project the T keys into image-token space.
        kq = (kh @ wq).reshape(b, h * t, -1)  # (B, h·T, C)
        bias = (kh @ att.q_proj.bias.reshape(h, d, 1)).reshape(b, 1, h * t)  # (B, 1, h·T)
        scores = (q @ kq.transpose(-1, -2) + bias).reshape(b, -1, h, t)  # (B, N, h, T)
    attn = torch.softmax(scores / math.sqrt(d), dim=-1).reshape(b, -1, h * t)
    return attn @ vo + att.out_proj.bias


@torch.no_grad()
def decode_points(model: Sam, image_embedding: torch.Tensor, point_coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multimask decoding of single positive points, like ``SamPredictor.predict_torch``.

    image_embedding: (1, C, g, g); point_coords: (B, 1, 2) in the model's input frame (pixels).
    Returns low-res mask logits (B, 3, 4g, 4g) and predicted IoUs (B, 3).
    """
    dec, pe = model.mask_decoder, model.prompt_encoder
    labels = torch.ones(point_coords.shape[:2], dtype=torch.int, device=point_coords.device)
    sparse, dense = pe(points=(point_coords, labels), boxes=None, masks=None)
    bsz = sparse.shape[0]
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(bsz, -1, -1), sparse], dim=1)  # (B, T, C)
    _, c, gh, gw = image_embedding.shape
    # The dense prompt of a point-only prompt is the same no_mask_embed for every prompt.
    src = (image_embedding + dense[:1]).flatten(2).transpose(1, 2)  # (1, N, C)
    pos = pe.get_dense_pe().flatten(2).transpose(1, 2)  # (1, N, C)

    tr = dec.transformer
    queries, keys = tokens, src
    for i, layer in enumerate(tr.layers):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        queries = layer.norm2(queries + tokens_to_image(layer.cross_attn_token_to_image, queries + tokens,
                                                         keys + pos, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(keys + image_to_tokens(layer.cross_attn_image_to_token, keys + pos,
                                                  queries + tokens, queries))
    queries = tr.norm_final_attn(queries + tokens_to_image(tr.final_attn_token_to_image, queries + tokens,
                                                          keys + pos, keys))

    iou_out, mask_out = queries[:, 0, :], queries[:, 1:1 + dec.num_mask_tokens, :]
    upscaled = dec.output_upscaling(keys.transpose(1, 2).reshape(bsz, c, gh, gw))  # (B, C/8, 4g, 4g)
    hyper = torch.stack([mlp(mask_out[:, j, :]) for j, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
    b, cu, h, w = upscaled.shape
    masks = (hyper @ upscaled.reshape(b, cu, h * w)).reshape(b, -1, h, w)
    iou = dec.iou_prediction_head(iou_out)
    return masks[:, 1:], iou[:, 1:]  # multimask output: drop the single-mask slot, as MaskDecoder does
