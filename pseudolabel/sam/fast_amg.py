"""A fast automatic mask generator with the semantics of segment_anything's SamAutomaticMaskGenerator.

Same model, same grid, same thresholds, same survivors (for ``crop_n_layers=0`` and
``min_mask_region_area=0``), computed differently:

* the image encoder runs the same weights with its attention through SDPA
  (:mod:`pseudolabel.sam.fast_encoder`, equal up to float rounding);
* the image embedding is computed once; grid points go through the prompt encoder and mask decoder
  in large batches (``multimask_output=True``, 3 masks per point, as the reference), with the
  decoder's prompt-independent work done once per image and its attention reassociated so
  N-sized work is not repeated per prompt (:mod:`pseudolabel.sam.fast_decoder`);
* the predicted-IoU filter runs on the decoder output *before* the upscaler: prompts whose three
  masks all fail it are never upscaled, failing masks are never upsampled;
* the two bilinear resizes of ``Sam.postprocess_masks`` (low-res → img_size², crop the padding,
  → original size) are linear and separable, so they are fused into one matrix per axis,
  ``full = Ry @ low @ Rx.T``, and each matrix is applied as banded row blocks (a bilinear output
  row reads 3 input rows; :class:`BandedResize`), on 2-D views with masks on the last axis;
* stability counts (comparisons written as 0/1 floats and summed), boxes (from the logits' row /
  column maxima: ``any(l > t) == max(l) > t``) and box NMS (torchvision ``batched_nms``) are
  batched tensor ops; masks stay boolean tensors (no RLE encode/decode in the hot path; the caller
  encodes only the final kept masks for storage);
* ``output_size`` runs the whole post-processing in a smaller frame (e.g. 256 px longest side, as 4M
  tokenizes instances at 224²): the fused resize then targets that frame directly.

Reference semantics kept exactly (see automatic_mask_generator.py / utils/amg.py):
``pred_iou > pred_iou_thresh`` (strict, skipped when the threshold is 0), stability =
``|logits > t+o| / |logits > t-o|`` on the upsampled logits with ``t = model.mask_threshold``,
``stability >= stability_score_thresh`` (skipped when 0; 0/0 = NaN never passes), masks =
``logits > t``, boxes = inclusive pixel extents ``[x0, y0, x1, y1]`` (zeros for an empty mask),
then one box NMS over all masks of the image scored by predicted IoU, survivors in NMS order.
With one crop equal to the image, the reference's crop-edge filter never removes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops import batched_nms

from .fast_decoder import decode_tokens, image_context, upscale_masks
from .fast_encoder import encode


@dataclass(frozen=True)
class AmgSettings:
    """Settings shared with the reference generator, plus our speed options.

    ``output_size``: None = masks at the original image size (equal to the reference); an int =
    masks in a frame whose longest side is ``output_size`` (low-resolution mode).
    ``points_per_side`` smaller = fewer prompts (the cheap option).
    """

    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    points_per_batch: int = 256
    upsample_chunk: int = 64
    output_size: int | None = None

    def reference_kwargs(self) -> dict:
        """Keyword arguments for ``SamAutomaticMaskGenerator`` at equal settings."""
        return dict(points_per_side=self.points_per_side, pred_iou_thresh=self.pred_iou_thresh,
                    stability_score_thresh=self.stability_score_thresh,
                    stability_score_offset=self.stability_score_offset, box_nms_thresh=self.box_nms_thresh,
                    crop_n_layers=0, min_mask_region_area=0)


@dataclass
class MaskSet:
    """Kept masks of one image, in NMS order (best predicted IoU first among survivors).

    masks: (N, h, w) bool in the output frame; boxes: (N, 4) float xyxy inclusive pixel extents in the
    output frame; iou_preds, stability: (N,) float; points: (N, 2) float prompt (x, y) in original
    image pixels; scale: output frame size / original size (1.0 at full resolution).
    """

    masks: torch.Tensor
    boxes: torch.Tensor
    iou_preds: torch.Tensor
    stability: torch.Tensor
    points: torch.Tensor
    scale: float

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def point_grid(n_per_side: int) -> np.ndarray:
    """(n², 2) points (x, y) in [0, 1], cell centres, row-major in y: the reference's grid."""
    side = (np.arange(n_per_side) + 0.5) / n_per_side
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def resize_operator(low: int, size: int, valid: int, out: int) -> torch.Tensor:
    """(out, low) matrix equal to: bilinear low→size, keep the first ``valid`` rows, bilinear →out.

    Both resizes of ``Sam.postprocess_masks`` along one axis, as a single linear map (bilinear
    interpolation with align_corners=False is separable, so a 2-D resize is Ry @ X @ Rx.T).
    """
    eye = torch.eye(low)[:, None, :, None]  # (low, 1, low, 1): each basis vector as a column image
    up = F.interpolate(eye, (size, 1), mode="bilinear", align_corners=False)[:, :, :valid]
    down = F.interpolate(up, (out, 1), mode="bilinear", align_corners=False)
    return down[:, 0, :, 0].T.contiguous()


class BandedResize:
    """A resize matrix (out, low) applied as blocks of output rows times the few input rows they read.

    Each output row of :func:`resize_operator` has at most 3–4 nonzero taps in a contiguous band,
    so a dense ``R @ X`` spends almost all of its multiply-adds on zeros. ``apply(x, out)`` computes
    ``out = R @ x`` for a 2-D ``x`` (low, M) block by block (``block`` output rows, each reading only
    its band of input rows), writing into contiguous row slices of ``out`` (out, M). Equal to the
    dense product up to float summation order (the skipped terms are exact zeros).
    """

    def __init__(self, matrix: torch.Tensor, block: int = 32) -> None:
        self.shape = tuple(matrix.shape)
        self.blocks = []
        for o0 in range(0, matrix.shape[0], block):
            o1 = min(matrix.shape[0], o0 + block)
            cols = matrix[o0:o1].ne(0).any(0).nonzero().flatten()
            lo, hi = (int(cols.min()), int(cols.max()) + 1) if len(cols) else (0, 1)
            self.blocks.append((o0, o1, lo, hi, matrix[o0:o1, lo:hi].contiguous()))

    def apply(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        for o0, o1, lo, hi, m in self.blocks:
            torch.mm(m, x[lo:hi], out=out[o0:o1])
        return out


def _boxes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Inclusive xyxy extents from per-mask row / column occupancy (N, h), (N, w); zeros if empty."""
    h, w = rows.shape[1], cols.shape[1]
    ar_h, ar_w = torch.arange(h, device=rows.device), torch.arange(w, device=rows.device)
    y1 = torch.where(rows, ar_h, -1).amax(1)
    x1 = torch.where(cols, ar_w, -1).amax(1)
    y0 = torch.where(rows, ar_h, h).amin(1)
    x0 = torch.where(cols, ar_w, w).amin(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where((y1 >= 0)[:, None], boxes, 0).float()


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, h, w) bool -> (N, 4) float [x0, y0, x1, y1] inclusive extents; zeros for empty masks."""
    if masks.shape[0] == 0:
        return torch.zeros(0, 4)
    return _boxes(masks.any(dim=2), masks.any(dim=1))


class FastMaskGenerator:
    """Automatic masks for one image at a time; see the module docstring for what is batched."""

    def __init__(self, model: Sam, settings: AmgSettings = AmgSettings()) -> None:
        self.model = model.eval()
        self.settings = settings
        self.transform = ResizeLongestSide(model.image_encoder.img_size)

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image embedding (1, C, g, g) and the resized input size (h, w), as SamPredictor.

        Same preprocessing and weights; the encoder's attention runs through SDPA
        (:func:`pseudolabel.sam.fast_encoder.encode`, equal up to float rounding).
        """
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.model.device).permute(2, 0, 1).contiguous()[None]
        return encode(self.model.image_encoder, self.model.preprocess(x)), tuple(x.shape[-2:])

    @staticmethod
    def _upsample(low: torch.Tensor, ry: BandedResize, rx: BandedResize) -> torch.Tensor:
        """``Ry @ low @ Rxᵀ`` for (n, l, l) logits, returned as (out_w, out_h, n).

        Both products are banded row-block matmuls on 2-D views with the contracted axis leading:
        the y pass on (l_y, n·l_x), one transpose, the x pass on (l_x, out_h·n).
        """
        n, l, _ = low.shape
        t = ry.apply(low.permute(1, 0, 2).reshape(l, n * l), low.new_empty(ry.shape[0], n * l))  # (out_h, n·l)
        t = t.view(-1, n, l).permute(2, 0, 1).reshape(l, -1)  # (l_x, out_h·n)
        return rx.apply(t, low.new_empty(rx.shape[0], t.shape[1])).view(rx.shape[0], ry.shape[0], n)

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> MaskSet:
        """Masks for an RGB uint8 image (H, W, 3)."""
        s, model = self.settings, self.model
        orig_h, orig_w = image.shape[:2]
        emb, (in_h, in_w) = self.embed(image)
        scale = 1.0 if s.output_size is None else s.output_size / max(orig_h, orig_w)
        out_h, out_w = (orig_h, orig_w) if s.output_size is None else (
            max(1, round(orig_h * scale)), max(1, round(orig_w * scale)))
        size = model.image_encoder.img_size
        low = size // 4  # the decoder's mask grid: 4x the embedding grid
        ry = BandedResize(resize_operator(low, size, in_h, out_h).to(emb.device))
        rx = BandedResize(resize_operator(low, size, in_w, out_w).to(emb.device))

        grid = point_grid(s.points_per_side) * np.array([orig_w, orig_h])[None]  # original pixels
        prompts = torch.as_tensor(self.transform.apply_coords(grid, (orig_h, orig_w)), dtype=torch.float,
                                  device=emb.device)
        grid_t = torch.as_tensor(grid, dtype=torch.float)
        thr = model.mask_threshold
        kept: dict[str, list[torch.Tensor]] = {k: [] for k in ("masks", "boxes", "iou", "stab", "points")}
        buf = torch.empty(s.upsample_chunk * out_h * out_w, device=emb.device)
        ctx = image_context(model, emb)  # prompt-independent decoder work, once per image
        for start in range(0, len(prompts), s.points_per_batch):
            pts = prompts[start:start + s.points_per_batch, None, :]  # (B, 1, 2)
            iou, mask_tokens, keys = decode_tokens(model, ctx, pts)  # (B, 3), (B, 3, C), (B, N, C)
            # Predicted-IoU filter first: it does not depend on the masks, so prompts whose three
            # masks all fail it skip the upscaler, and failing masks are never upsampled.
            keep = iou > s.pred_iou_thresh if s.pred_iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
            alive = keep.any(1)
            if not bool(alive.any()):
                continue
            src_points = grid_t[start:start + s.points_per_batch]
            if not bool(alive.all()):  # (boolean indexing copies, so only when something is dropped)
                mask_tokens, keys, iou, keep, src_points = (mask_tokens[alive], keys[alive], iou[alive],
                                                            keep[alive], src_points[alive.cpu()])
            low_masks = upscale_masks(model, mask_tokens, keys, ctx.grid).flatten(0, 1)  # (3b, low, low)
            iou, keep, src_points = iou.flatten(), keep.flatten(), src_points.repeat_interleave(3, dim=0)
            if not bool(keep.all()):
                low_masks, iou, src_points = low_masks[keep], iou[keep], src_points[keep.cpu()]
            for c in range(0, len(iou), s.upsample_chunk):
                chunk = low_masks[c:c + s.upsample_chunk]
                logits = self._upsample(chunk, ry, rx)  # (out_w, out_h, n): masks on the last axis
                n = chunk.shape[0]
                # Stability counts: comparisons written as 0/1 floats and summed (exact below 2**24
                # pixels; ~4x faster on CPU than summing bools), reduced over the pixel axes.
                flat = logits.view(-1, n)
                hi = torch.gt(flat, thr + s.stability_score_offset, out=buf[:flat.numel()].view(-1, n)).sum(0)
                lo = torch.gt(flat, thr - s.stability_score_offset, out=buf[:flat.numel()].view(-1, n)).sum(0)
                stab = hi / lo
                ok = stab >= s.stability_score_thresh if s.stability_score_thresh > 0.0 else \
                    torch.ones_like(stab, dtype=torch.bool)
                idx = ok.nonzero().flatten()
                if len(idx) == 0:
                    continue
                # Occupied rows / columns from the logits' maxima (any(l > t) == max(l) > t): a
                # reduction over the leading axes, vectorised over masks.
                rows, cols = logits.amax(0)[:, idx] > thr, logits.amax(1)[:, idx] > thr  # (out_h, k), (out_w, k)
                kept["boxes"].append(_boxes(rows.T, cols.T))
                kept["masks"].append((logits > thr).permute(2, 1, 0)[idx])  # (k, out_h, out_w)
                kept["iou"].append(iou[c:c + s.upsample_chunk][ok])
                kept["stab"].append(stab[ok])
                kept["points"].append(src_points[c:c + s.upsample_chunk][ok.cpu()])
        masks = torch.cat(kept["masks"]) if kept["masks"] else torch.zeros(0, out_h, out_w, dtype=torch.bool)
        iou = torch.cat(kept["iou"]) if kept["iou"] else torch.zeros(0)
        stab = torch.cat(kept["stab"]) if kept["stab"] else torch.zeros(0)
        points = torch.cat(kept["points"]) if kept["points"] else torch.zeros(0, 2)
        boxes = torch.cat(kept["boxes"]) if kept["boxes"] else torch.zeros(0, 4)
        order = batched_nms(boxes, iou.float(), torch.zeros(len(boxes), dtype=torch.long),
                            iou_threshold=s.box_nms_thresh)
        return MaskSet(masks=masks[order], boxes=boxes[order], iou_preds=iou[order], stability=stab[order],
                       points=points[order], scale=scale)
