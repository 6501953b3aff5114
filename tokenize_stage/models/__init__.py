"""Tokenizer models: ViT VQ-VAE, diffusion-decoder VQ, bottleneck-MLP + Memcodes (``hub``: build and load any)."""

from .base import Tokenizer
from .config import DiffusionVQConfig, MemcodesConfig, VQVAEConfig, parse_config
from .diffusion import DiffusionVQ
from .hub import ARCHITECTURES, build_tokenizer, from_pretrained, source_digest
from .memcodes import Memcodes
from .mlp import MLPMemcodes
from .quantizer import VectorQuantizer, codebook_perplexity, codebook_usage
from .vqvae import VQVAE

__all__ = ["ARCHITECTURES", "DiffusionVQ", "DiffusionVQConfig", "MLPMemcodes", "Memcodes", "MemcodesConfig",
           "Tokenizer", "VQVAE", "VQVAEConfig", "VectorQuantizer", "build_tokenizer", "codebook_perplexity",
           "codebook_usage", "from_pretrained", "parse_config", "source_digest"]
