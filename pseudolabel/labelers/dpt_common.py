"""DPT pieces shared by the depth and normals labelers (transformers' DPT)."""

from __future__ import annotations

from typing import ClassVar

from .model_base import HFModelSettings, ModelLabeler

# MiDaS/Omnidata DPT normalise inputs with mean = std = 0.5.
DPT_MEAN, DPT_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


class DPTSettings(HFModelSettings):
    image_size: int | None = None  # network input side; None = the checkpoint's config.image_size


def tiny_dpt_config():
    from transformers import DPTConfig

    return DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=224,
                     patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                     fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5])


def full_dpt_config(image_size: int = 224):
    """DPT-Large (ViT-L/16 backbone, 1024/24/16) as transformers' DPTConfig defaults describe it."""
    from transformers import DPTConfig

    return DPTConfig(image_size=image_size)


class DPTLabelerBase(ModelLabeler):
    Settings: ClassVar[type[HFModelSettings]] = DPTSettings
    default_batch_size: ClassVar[int] = 4

    def input_size(self) -> int:
        return self.settings.image_size or self.model.config.image_size

    def forward(self, rgb_list):
        """List of uint8 H×W×3 -> network output B×C×S×S (C = 1 depth, 3 normals), float32 on CPU."""
        import torch

        from .model_base import resize_batch

        x = resize_batch(rgb_list, self.input_size(), DPT_MEAN, DPT_STD).to(self.device)
        with torch.inference_mode():
            out = self.model(pixel_values=x).predicted_depth
        if out.ndim == 3:
            out = out[:, None]
        return out.float().cpu()


def resize_to(t, h: int, w: int):
    """C×S×S tensor -> C×h×w (bilinear) numpy float32."""
    import torch.nn.functional as F

    return F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
