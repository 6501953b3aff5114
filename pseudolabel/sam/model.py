"""Build and load SAM models (segment_anything's architecture) from a local dir, s3:// URI or hub id.

Profiles:

* ``vit_h`` / ``vit_l`` / ``vit_b``: the published architectures (1024² input, 64×64 embedding grid,
  256×256 low-res masks). The official checkpoints (``sam_vit_h_4b8939.pth``) are plain state dicts.
* ``tiny``: the same ``Sam`` class (``ImageEncoderViT`` + ``PromptEncoder`` + ``MaskDecoder``) built
  small for tests and CI. It keeps every contract of SAM *relative to* ``image_encoder.img_size``:
  input 256² (longest side resized to 256, padded square), patch 16 → 16×16 embedding grid,
  64×64 low-res masks (4× the grid, as in SAM). Everything downstream (``SamPredictor``, the
  reference ``SamAutomaticMaskGenerator`` and our fast generator) reads ``img_size`` from the model,
  so nothing assumes 1024.

A saved model directory holds ``model.safetensors`` (or a ``.pth`` state dict) and ``sam_config.json``
(``{"profile": ...}``). Without the config file the profile is inferred from the weights.
The weights digest is the sha256 of the weights file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from fourm_core.manifest import ModelRef
from fourm_core.seeding import seeded

CONFIG_NAME = "sam_config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class SamArch:
    """Hyper-parameters of one SAM profile (names follow segment_anything's build_sam)."""

    img_size: int
    patch_size: int
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    window_size: int
    prompt_embed_dim: int
    mask_in_chans: int
    decoder_mlp_dim: int
    decoder_num_heads: int
    iou_head_hidden_dim: int


PROFILES: dict[str, SamArch] = {
    "vit_h": SamArch(1024, 16, 1280, 32, 16, (7, 15, 23, 31), 14, 256, 16, 2048, 8, 256),
    "vit_l": SamArch(1024, 16, 1024, 24, 16, (5, 11, 17, 23), 14, 256, 16, 2048, 8, 256),
    "vit_b": SamArch(1024, 16, 768, 12, 12, (2, 5, 8, 11), 14, 256, 16, 2048, 8, 256),
    # Cheap on CPU: ~0.3 M parameters; 16×16 grid, windowed block then a global block.
    "tiny": SamArch(256, 16, 64, 2, 2, (1,), 8, 64, 4, 128, 2, 64),
}

# Encoder width -> profile, to recognise official checkpoints that come without a config file.
_PROFILE_BY_WIDTH = {arch.encoder_embed_dim: name for name, arch in PROFILES.items()}


def build_sam(profile: str, seed: int | None = 0, nondegenerate: bool | None = None) -> Sam:
    """A SAM of the given profile with random weights (seeded), in eval mode on CPU.

    ``nondegenerate`` (default: only for ``tiny``) applies :func:`_nondegenerate_init` so random
    weights give varied masks (used by the benchmark for a ViT-B-sized model too).

    Random init is what tests and benchmarks use; real weights come through :func:`load_sam`.
    """
    arch = PROFILES[profile]
    grid = arch.img_size // arch.patch_size
    with seeded(seed):
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=arch.encoder_depth,
                embed_dim=arch.encoder_embed_dim,
                img_size=arch.img_size,
                mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=arch.encoder_num_heads,
                patch_size=arch.patch_size,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=arch.encoder_global_attn_indexes,
                window_size=arch.window_size,
                out_chans=arch.prompt_embed_dim,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=arch.prompt_embed_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(arch.img_size, arch.img_size),
                mask_in_chans=arch.mask_in_chans,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=2,
                    embedding_dim=arch.prompt_embed_dim,
                    mlp_dim=arch.decoder_mlp_dim,
                    num_heads=arch.decoder_num_heads,
                ),
                transformer_dim=arch.prompt_embed_dim,
                iou_head_depth=3,
                iou_head_hidden_dim=arch.iou_head_hidden_dim,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
        if nondegenerate if nondegenerate is not None else profile == "tiny":
            _nondegenerate_init(sam)
    return sam.eval()


def _nondegenerate_init(sam: Sam) -> None:
    """Init choices that keep a random SAM from being degenerate for automatic masks.

    With plain random init the 2×2 transposed convolutions of the decoder's upscaler turn every
    mask into pixel-level checkerboard noise (every box is the whole image, so box NMS keeps one
    mask) and the logits are ~0.05 in magnitude (stability score 0 at any offset). Averaging each
    transposed-conv kernel over its 2×2 taps makes the upscaler a random linear map followed by
    nearest-neighbour upsampling, so masks are spatially coherent blobs; scaling the hypernetwork
    output layers ×10 (centred over channels) gives logits of a few units, so stability scores spread over (0, 1].
    """
    with torch.no_grad():
        for conv in (sam.mask_decoder.output_upscaling[0], sam.mask_decoder.output_upscaling[3]):
            conv.weight.copy_(conv.weight.mean(dim=(2, 3), keepdim=True).expand_as(conv.weight) * 2)
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            last = mlp.layers[-1]
            # Zero-mean over output channels: the upscaled features share a large positive mean
            # (they come out of a GELU), which would otherwise push every logit the same way.
            last.weight.sub_(last.weight.mean(dim=0, keepdim=True)).mul_(10.0)
            last.bias.sub_(last.bias.mean()).mul_(10.0)


def save_sam(model: Sam, directory: str | os.PathLike, profile: str) -> str:
    """Write ``model.safetensors`` + ``sam_config.json`` into ``directory``; return the weights digest."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared storage; SAM has none, but make tensors contiguous copies anyway.
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME))
    (out / CONFIG_NAME).write_text(json.dumps({"profile": profile}))
    return file_sha256(out / WEIGHTS_NAME)


@dataclass
class LoadedSam:
    """A loaded model and the record of where it came from (for manifests)."""

    model: Sam
    profile: str
    ref: ModelRef


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from fourm_core.checkpoints import read_state_dict

    return read_state_dict(path)  # official checkpoints are plain state dicts: nothing else is unpickled


def _find_weights(directory: Path) -> Path:
    for pattern in (WEIGHTS_NAME, "*.safetensors", "*.pth", "*.pt", "*.bin"):
        found = sorted(directory.glob(pattern))
        if found:
            return found[0]
    raise FileNotFoundError(f"no SAM weights (*.safetensors / *.pth) in {directory}")


def infer_profile(state: dict[str, torch.Tensor]) -> str:
    """The profile whose encoder width matches ``image_encoder.patch_embed.proj.weight``."""
    width = state["image_encoder.patch_embed.proj.weight"].shape[0]
    if width not in _PROFILE_BY_WIDTH:
        raise ValueError(f"unknown SAM encoder width {width}; pass profile=")
    return _PROFILE_BY_WIDTH[width]


def _fetch(source: str, cache_dir: str | None) -> Path:
    """Resolve ``source`` to a local file or directory (downloading s3:// or hub ids when needed)."""
    if source.startswith("s3://") or "://" in source and not source.startswith("file://"):
        import fsspec

        fs, path = fsspec.core.url_to_fs(source)
        local = Path(cache_dir or tempfile.mkdtemp(prefix="sam-")) / Path(path).name
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", str(local) + "/", recursive=True)
        else:
            fs.get(path, str(local))
        return local
    local = Path(source.removeprefix("file://"))
    if local.exists():
        return local
    # Hub id: "owner/repo" or "owner/repo:filename" (filename defaults to model.safetensors).
    from huggingface_hub import hf_hub_download

    repo, _, filename = source.partition(":")
    weights = Path(hf_hub_download(repo, filename or WEIGHTS_NAME, cache_dir=cache_dir))
    try:
        hf_hub_download(repo, CONFIG_NAME, cache_dir=cache_dir)
    except Exception:  # the config is optional: the profile is inferred from the weights
        pass
    return weights


def load_sam(source: str, profile: str | None = None, cache_dir: str | None = None,
             device: str = "cpu") -> LoadedSam:
    """Load SAM weights from a local dir/file, an ``s3://`` URI or a hub id; returns model + ModelRef.

    ``profile`` overrides ``sam_config.json`` and inference from the weights.
    """
    local = _fetch(source, cache_dir)
    weights = _find_weights(local) if local.is_dir() else local
    config = weights.parent / CONFIG_NAME
    state = _read_state_dict(weights)
    if profile is None and config.exists():
        profile = json.loads(config.read_text())["profile"]
    profile = profile or infer_profile(state)
    model = build_sam(profile, seed=None)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    ref = ModelRef(id=f"sam:{profile}", source=source, digest=file_sha256(weights))
    return LoadedSam(model=model, profile=profile, ref=ref)
