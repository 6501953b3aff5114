"""Architecture hyper-parameters of the HMR2-style pose model, with the tiny and production (ViT-H) profiles."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class HMR2Config:
    """ViT backbone on a 256x192 (HxW) person crop + a one-query transformer decoder head.

    Production values are HMR2.0's (4D-Humans ``model_config.yaml``): ViT-H/16 (1280-d, 32 blocks, 16 heads,
    ViTPose-style patch embedding with padding 2 and no class token) and a 6-layer decoder (1024-d, 8 heads
    of 64, MLP 1024) whose single query cross-attends to the 16x12 = 192 ViT tokens.
    """

    image_height: int = 256
    image_width: int = 192
    patch_size: int = 16
    patch_padding: int = 2  # ViTPose's PatchEmbed: Conv2d(k=16, s=16, padding=2); grid stays 16x12
    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.0
    dec_dim: int = 1024
    dec_depth: int = 6
    dec_heads: int = 8
    dec_dim_head: int = 64
    dec_mlp_dim: int = 1024
    num_body_joints: int = 23
    num_betas: int = 10

    @property
    def grid(self) -> tuple[int, int]:
        """(Hp, Wp) token grid of the backbone."""
        p, pad = self.patch_size, self.patch_padding
        return ((self.image_height + 2 * pad - p) // p + 1, (self.image_width + 2 * pad - p) // p + 1)

    def to_dict(self) -> dict:
        return asdict(self)


TINY = HMR2Config(image_height=64, image_width=48, embed_dim=32, depth=2, num_heads=2, dec_dim=32, dec_depth=2,
                  dec_heads=2, dec_dim_head=16, dec_mlp_dim=64)
FULL = HMR2Config()
PROFILES = {"tiny": TINY, "full": FULL}
