"""The SDPA image encoder equals segment_anything's ImageEncoderViT (up to float rounding)."""

from __future__ import annotations

import torch

from pseudolabel.sam.fast_encoder import block, encode
from pseudolabel.sam.model import build_sam


def _randomise_rel_pos(encoder, seed: int) -> None:
    """Relative-position tables are zero-initialised; random ones make the comparison meaningful."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in encoder.blocks:
            blk.attn.rel_pos_h.copy_(torch.randn(blk.attn.rel_pos_h.shape, generator=gen) * 0.5)
            blk.attn.rel_pos_w.copy_(torch.randn(blk.attn.rel_pos_w.shape, generator=gen) * 0.5)


def test_encode_equals_image_encoder_tiny():
    model = build_sam("tiny", seed=0)
    _randomise_rel_pos(model.image_encoder, 0)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.image_encoder(x)
    torch.testing.assert_close(encode(model.image_encoder, x), ref, atol=1e-5, rtol=1e-5)


def test_blocks_equal_reference_blocks_vit_b():
    """ViT-B blocks (768 wide, 12 heads): a windowed and a global one, on a 32×32 token grid."""
    model = build_sam("vit_b", seed=0)
    enc = model.image_encoder
    _randomise_rel_pos(enc, 1)
    x = torch.randn(1, 32, 32, 768, generator=torch.Generator().manual_seed(2))
    for i in (0, 2):  # window_size 14, then global attention
        blk = enc.blocks[i]
        with torch.no_grad():
            ref = blk(x)
            out = block(blk, x)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
