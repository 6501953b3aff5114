"""Model configuration in the released checkpoint's ``config.json`` vocabulary (4M-FACTS §9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fourm_core.modalities import FOURM7, FOURM21, MODALITIES, get_modality


class FourMConfig(BaseModel):
    """Architecture of a 4M encoder-decoder.

    Field names are those of the released ``config.json`` so a hub checkpoint's config validates as is.
    Unknown keys of a released config are kept (``extra="allow"``) but ignored, so new release fields do
    not break loading; our own presets use only the fields below.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    domains_in: list[str]
    domains_out: list[str]
    encoder_depth: int = Field(12, ge=1)
    decoder_depth: int = Field(12, ge=1)
    dim: int = Field(768, ge=8)
    num_heads: int = Field(12, ge=1)
    mlp_ratio: int | float = 4  # int stays int so config.json reads "mlp_ratio": 4 like the released ones
    qkv_bias: bool = False
    proj_bias: bool = False
    mlp_bias: bool = False
    norm_bias: bool = False
    act_layer: str = "SiLU"
    gated_mlp: bool = True
    image_size: int = 224
    patch_size: int = 16
    share_modality_embeddings: bool = True  # absent in 4M-7 configs means true (§9)

    @field_validator("domains_in", "domains_out")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            get_modality(name)  # raises with the list of valid names
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate modality in {v}")
        return v

    def model_post_init(self, __context: Any) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.dim % 4:
            raise ValueError("dim must be divisible by 4 for 2-D sin-cos position embeddings")
        if self.act_layer != "SiLU" or not self.gated_mlp:
            raise ValueError("only the SwiGLU MLP (act_layer SiLU, gated_mlp true) of 4M is implemented")
        for name in self.domains_out:
            if not get_modality(name).is_target:
                raise ValueError(f"{name} is input-only and cannot be in domains_out")

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width: int(2/3 * mlp_ratio * D) keeps the parameter count of a plain MLP."""
        return int(2 * self.mlp_ratio * self.dim / 3)

    def to_json(self) -> str:
        """``config.json`` text as the reference writes it (huggingface_hub's mixin: sorted keys, indent 2),
        byte for byte for a released config; unknown keys read from a released file are written back."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "config.json") -> "FourMConfig":
        """Parse a ``config.json`` in either released form (indented or compact), as is.

        ``share_modality_embeddings`` absent (4M-7 files) means true, as in the reference."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source} is not valid JSON ({err}); expected a 4M config.json") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source} holds a {type(data).__name__}, expected a JSON object of 4M config fields")
        data.setdefault("share_modality_embeddings", True)
        return cls.model_validate(data)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "FourMConfig":
        return cls.from_json(Path(path).read_text(), source=str(path))


# Trunk sizes (dim, encoder depth, decoder depth, heads) from 4M-FACTS §6; tiny is ours, for tests.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (64, 2, 2, 4),
    "B": (768, 12, 12, 12),
    "L": (1024, 24, 24, 16),
    "XL": (2048, 24, 24, 32),
}
MODALITY_SETS: dict[str, tuple[str, ...]] = {"4m7": FOURM7, "4m21": FOURM21}


def preset(size: str, modalities: str | list[str] = "4m21", **overrides: Any) -> FourMConfig:
    """A config for a named size (``tiny``, ``B``, ``L``, ``XL``) and modality set (``4m7``, ``4m21``, or a list)."""
    if size not in SIZES:
        raise KeyError(f"unknown model size {size!r}; sizes: {', '.join(SIZES)}")
    dim, enc, dec, heads = SIZES[size]
    mods = list(MODALITY_SETS[modalities]) if isinstance(modalities, str) else list(modalities)
    fields: dict[str, Any] = dict(
        domains_in=[m for m in mods if MODALITIES[m].is_input],
        domains_out=[m for m in mods if MODALITIES[m].is_target],
        encoder_depth=enc, decoder_depth=dec, dim=dim, num_heads=heads,
        share_modality_embeddings=modalities == "4m7",  # 4M-7 shared them, 4M-21 does not (§9)
    )
    fields.update(overrides)
    return FourMConfig(**fields)
