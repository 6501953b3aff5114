"""The reassociated decoder equals SAM's MaskDecoder for point prompts (up to float rounding)."""

from __future__ import annotations

import pytest
import torch

from pseudolabel.sam.fast_decoder import decode_points
from pseudolabel.sam.model import build_sam


@pytest.mark.parametrize("n_points", [1, 5])
def test_decode_points_equals_mask_decoder(tiny_sam, n_points):
    model = tiny_sam
    gen = torch.Generator().manual_seed(n_points)
    emb = torch.randn(1, 64, 16, 16, generator=gen)
    pts = torch.rand(n_points, 1, 2, generator=gen) * 256
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=(pts, torch.ones(n_points, 1, dtype=torch.int)), boxes=None,
                                             masks=None)
        ref_masks, ref_iou = model.mask_decoder(image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
                                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                                multimask_output=True)
    masks, iou = decode_points(model, emb, pts)
    assert masks.shape == ref_masks.shape == (n_points, 3, 64, 64)
    torch.testing.assert_close(masks, ref_masks, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=1e-4)


def test_decode_points_equals_mask_decoder_full_width():
    """The ViT-B/L/H decoder (C=256, 8 heads) on a reduced grid, random weights."""
    model = build_sam("vit_b", seed=0)
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 256, 64, 64, generator=gen)
    pts = torch.rand(3, 1, 2, generator=gen) * 1024
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=(pts, torch.ones(3, 1, dtype=torch.int)), boxes=None, masks=None)
        ref_masks, ref_iou = model.mask_decoder(image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
                                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                                multimask_output=True)
    masks, iou = decode_points(model, emb, pts)
    torch.testing.assert_close(masks, ref_masks, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(iou, ref_iou, atol=1e-4, rtol=1e-3)
