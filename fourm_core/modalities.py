"""The one registry of 4M-21 modalities (4M-FACTS §1).

Every stage keys off this table: labelers look up which modalities they make, tokenizers which
modality they encode, the model which embeddings and heads to build. Nothing else in the project
hard-codes a list of modalities.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class ModalityKind(str, Enum):
    """How a modality is presented to the 4M model."""

    PIXELS = "pixels"  # raw RGB patches through a linear projection (input only)
    SEQUENCE = "sequence"  # WordPiece token sequence (text and serialised structures)
    EMBEDDING_SEQ = "embedding_seq"  # sequence of float vectors (T5-XXL), input only
    IMAGE_TOKENS = "image_tokens"  # a 2-D grid of discrete tokens from an image tokenizer
    GLOBAL_TOKENS = "global_tokens"  # a short 1-D group of discrete tokens (global embeddings)


class Modality(BaseModel):
    """One modality of the 4M-21 set.

    ``grid`` is the token grid (rows, cols) for image-token and pixel modalities; ``max_tokens`` is
    the most tokens one sample can contribute. ``label`` names the pseudo-label artifact the
    modality is derived from and ``labeler`` the labeler that writes it.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    kind: ModalityKind
    vocab_size: int | None = Field(None, description="discrete vocabulary size; None for floats")
    max_tokens: int
    labeler: str
    label: str = Field(description="pseudo-label artifact this modality is derived from")
    tokenizer: str | None = Field(None, description="tokenizer that encodes it; None if none")
    is_input: bool = True
    is_target: bool = True
    grid: tuple[int, int] | None = None
    patch_size: int | None = None
    feature_dim: int | None = Field(None, description="channels of float inputs / raw features")

    @property
    def is_image_like(self) -> bool:
        """Image-like modalities mask disjoint input/target positions (4M-FACTS §5)."""
        return self.kind in (ModalityKind.IMAGE_TOKENS, ModalityKind.PIXELS, ModalityKind.GLOBAL_TOKENS)

    @property
    def is_sequence(self) -> bool:
        return self.kind in (ModalityKind.SEQUENCE, ModalityKind.EMBEDDING_SEQ)

    @property
    def token_artifact(self) -> str:
        """Artifact of this modality's pre-tokenized shards (``tokens/tok_rgb-224``)."""
        return token_artifact(self.name)

    @property
    def label_artifact(self) -> str:
        """Artifact of the pseudo labels this modality is derived from (``labels/depth``)."""
        return label_artifact(self.label)


def token_artifact(modality: str) -> str:
    """Store artifact name for a modality's token shards; '@' is kept out of paths and URIs."""
    return "tokens/" + modality.replace("@", "-")


def label_artifact(label: str) -> str:
    """Store artifact name for a pseudo-label output (``labels/<label>``); ingested images are ``images``."""
    return label if label in ("images", "texts") else f"labels/{label}"


TEXT_VOCAB = 30_000

_I = ModalityKind


def _img(name: str, vocab: int, labeler: str, label: str, tokenizer: str, grid: int = 14, patch: int = 16,
         feature_dim: int | None = None) -> Modality:
    return Modality(name=name, kind=_I.IMAGE_TOKENS, vocab_size=vocab, max_tokens=grid * grid, labeler=labeler,
                    label=label, tokenizer=tokenizer, grid=(grid, grid), patch_size=patch, feature_dim=feature_dim)


def _seq(name: str, max_tokens: int, labeler: str, label: str, tokenizer: str = "wordpiece") -> Modality:
    return Modality(name=name, kind=_I.SEQUENCE, vocab_size=TEXT_VOCAB, max_tokens=max_tokens, labeler=labeler,
                    label=label, tokenizer=tokenizer)


MODALITIES: dict[str, Modality] = {
    m.name: m
    for m in [
        Modality(name="rgb@224", kind=_I.PIXELS, max_tokens=196, labeler="ingest", label="images",
                 is_target=False, grid=(14, 14), patch_size=16, feature_dim=3),
        _seq("caption", 256, "ingest", "images"),
        Modality(name="t5_caption", kind=_I.EMBEDDING_SEQ, max_tokens=77, labeler="t5", label="t5_caption",
                 is_target=False, feature_dim=4096),
        _seq("det", 256, "detection", "det"),
        _seq("metadata", 40, "metadata", "metadata"),
        _seq("color_palette", 23, "color_palette", "color_palette"),
        _seq("human_poses", 275, "human_poses", "human_poses", tokenizer="wordpiece+pose_vq"),
        _seq("sam_instance", 290, "sam", "sam_instance", tokenizer="wordpiece+mask_vq"),
        _img("tok_rgb@224", 16_384, "ingest", "images", "rgb_diffusion"),
        _img("tok_depth@224", 8_192, "depth", "depth", "depth_diffusion"),
        _img("tok_normal@224", 8_192, "normals", "normal", "normal_diffusion"),
        _img("tok_semseg@224", 4_096, "semseg", "semseg", "semseg_vqvae", feature_dim=134),
        _img("tok_clip@224", 8_192, "clip", "clip_features", "clip_vqvae", feature_dim=512),
        _img("tok_dinov2@224", 8_192, "dinov2", "dinov2_features", "dinov2_vqvae", grid=16, patch=14,
             feature_dim=768),
        _img("tok_imagebind@224", 8_192, "imagebind", "imagebind_features", "imagebind_vqvae", grid=16, patch=14,
             feature_dim=1280),
        Modality(name="tok_dinov2_global", kind=_I.GLOBAL_TOKENS, vocab_size=8_192, max_tokens=16,
                 labeler="dinov2", label="dinov2_global", tokenizer="dinov2_global_memcodes", feature_dim=768),
        Modality(name="tok_imagebind_global", kind=_I.GLOBAL_TOKENS, vocab_size=8_192, max_tokens=16,
                 labeler="imagebind", label="imagebind_global", tokenizer="imagebind_global_memcodes",
                 feature_dim=1280),  # token 0 of ImageBind's 1280-d output, as the released tokenizer takes
        _img("tok_canny_edge@224", 8_192, "canny", "canny_edge", "edge_diffusion"),
        _img("tok_sam_edge@224", 8_192, "sam", "sam_edge", "edge_diffusion"),
    ]
}

# The 4M-7 modality set (4M-FACTS §1 heading).
FOURM7 = ("rgb@224", "caption", "det", "tok_rgb@224", "tok_depth@224", "tok_normal@224", "tok_semseg@224",
          "tok_clip@224")
FOURM21 = tuple(MODALITIES)


def get_modality(name: str) -> Modality:
    """Look a modality up by name, with an error that lists the valid names."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise KeyError(f"unknown modality {name!r}; known modalities: {', '.join(MODALITIES)}") from None


def modalities_of_kind(*kinds: ModalityKind) -> list[Modality]:
    return [m for m in MODALITIES.values() if m.kind in kinds]


def modalities_made_by(labeler: str) -> list[Modality]:
    """Modalities whose pseudo labels a labeler produces."""
    return [m for m in MODALITIES.values() if m.labeler == labeler]
