"""DPT pieces shared by the depth and normals labelers: Omnidata v2 DPT-Hybrid in transformers' layout."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from . import omnidata
from .model_base import HFModelSettings, ModelLabeler, OracleSettings, normalize


class DPTSettings(OracleSettings):
    pass


class DPTLabelerBase(ModelLabeler):
    """Runs an Omnidata-layout DPT over Omnidata's resize + centre-crop windows (see :mod:`.omnidata`)."""

    Settings: ClassVar[type[HFModelSettings]] = DPTSettings
    default_batch_size: ClassVar[int] = 4
    supports_autocast: ClassVar[bool] = True  # predict's forward runs in self.inference()
    task: ClassVar[str]  # "depth" | "normal"
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]
    align_windows: ClassVar[bool]  # depth is relative per window: align scale/shift before blending

    def build_tiny(self):
        return omnidata.build(self.task, omnidata.TINY)

    def build_full(self):
        return omnidata.build(self.task, omnidata.FULL)

    def predict(self, rgb_list: list[np.ndarray]) -> list[np.ndarray]:
        """uint8 H×W×3 images -> C×H×W float32 maps at each image's size (C = 1 depth, 3 normals)."""
        import torch

        size = self.model.config.image_size
        jobs = [omnidata.to_windows(rgb, size) for rgb in rgb_list]
        x = normalize(np.stack([w for job in jobs for w in job[0]]), self.mean, self.std, self.device)  # N×3×S×S
        with self.inference():
            out = self.model(pixel_values=x).predicted_depth
        out = (out[:, None] if out.ndim == 3 else out).float().cpu().numpy()
        starts = np.cumsum([0] + [len(job[0]) for job in jobs])

        def blend(k: int) -> np.ndarray:  # image k's windows -> its C×h×w map at the resized size (NumPy only)
            _, shape, offsets, wide = jobs[k]
            return omnidata.blend(list(out[starts[k]:starts[k + 1]]), shape, offsets, wide, align=self.align_windows)

        full = self.post_map(blend, range(len(jobs)))
        # torch's resize stays on this thread: in the pool each call would start its own intra-op threads
        return [resize_to(torch.from_numpy(f), *rgb.shape[:2]) for f, rgb in zip(full, rgb_list)]


def resize_to(t, h: int, w: int):
    """C×S×S' tensor -> C×h×w (bilinear) numpy float32."""
    import torch.nn.functional as F

    return F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
