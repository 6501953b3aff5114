"""Give the ``tiny`` SAM prompt-following masks by fitting it briefly on synthetic shapes.

Why: a randomly initialised SAM is degenerate for automatic mask generation: every prompt yields
nearly the same noisy whole-image mask, so after filtering and box NMS one mask (or none) is left and
an agreement test between two generators would compare nothing. A few hundred Adam steps on
flat-coloured shapes (target: the shape under the point, SAM's min-over-3-masks loss, IoU head
regressed on the true IoU) make masks follow the prompt, so dozens of distinct masks survive with
any sane thresholds. The result is still a test model: same ``Sam`` class, same contracts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from .synthetic import shapes_image


def _prepare(model: Sam, img: np.ndarray, inst: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Model input (1, 3, S, S) and the low-res instance map (S/4, S/4) in the padded input frame."""
    size = model.image_encoder.img_size
    tf = ResizeLongestSide(size)
    x = torch.as_tensor(tf.apply_image(img)).permute(2, 0, 1)[None].float()
    x = model.preprocess(x)
    h, w = tf.get_preprocess_shape(img.shape[0], img.shape[1], size)
    inst_r = np.full((size, size), -1, np.int32)  # -1: padding, never a target
    inst_r[:h, :w] = np.asarray(
        F.interpolate(torch.as_tensor(inst)[None, None].float(), (h, w), mode="nearest")[0, 0], np.int32)
    low = torch.as_tensor(inst_r[::4, ::4].copy())
    return x, low, h / img.shape[0]


def fit_tiny(model: Sam, steps: int = 300, points: int = 24, n_images: int = 12, seed: int = 0,
             lr: float = 3e-3) -> Sam:
    """Fit ``model`` in place on synthetic shapes; returns it in eval mode. Deterministic on CPU."""
    gen = torch.Generator().manual_seed(seed)
    data = [_prepare(model, *shapes_image(seed * 1000 + i)) for i in range(n_images)]
    size = model.image_encoder.img_size
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        x, low, _ = data[step % n_images]
        lh, lw = low.shape
        # Sample prompt points inside the image (not the padding), in input-frame pixels.
        valid = (low >= 0).nonzero()
        pick = valid[torch.randint(len(valid), (points,), generator=gen)]
        coords = (pick.flip(-1).float() * 4 + 2)[:, None, :]  # (P, 1, 2) as (x, y)
        target = (low[None] == low[pick[:, 0], pick[:, 1]][:, None, None]).float()  # (P, h/4, w/4)
        emb = model.image_encoder(x)
        sparse, dense = model.prompt_encoder(points=(coords, torch.ones(points, 1)), boxes=None, masks=None)
        masks, iou = model.mask_decoder(image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                        multimask_output=True)  # (P, 3, h/4, w/4), (P, 3)
        inside = (low >= 0).float()[None, None]
        bce = (F.binary_cross_entropy_with_logits(masks, target[:, None].expand_as(masks), reduction="none")
               * inside).sum((-1, -2)) / inside.sum()
        with torch.no_grad():
            pred = (masks > 0).float() * inside
            inter = (pred * target[:, None]).sum((-1, -2))
            union = (pred + target[:, None]).clamp(max=1).sum((-1, -2)).clamp(min=1)
            true_iou = inter / union
        loss = bce.min(dim=1).values.mean() + F.mse_loss(iou, true_iou)
        opt.zero_grad()
        loss.backward()
        opt.step()
    del size, lh, lw
    return model.eval()
