"""Tokenizer models: ViT VQ-VAE, diffusion-decoder VQ, bottleneck-MLP + Memcodes."""

from .base import Tokenizer, build_tokenizer
from .config import DiffusionVQConfig, MemcodesConfig, VQVAEConfig, parse_config
from .diffusion import DiffusionVQ
from .memcodes import Memcodes
from .mlp import MLPMemcodes
from .quantizer import VectorQuantizer, codebook_perplexity, codebook_usage
from .vqvae import VQVAE

__all__ = ["DiffusionVQ", "DiffusionVQConfig", "MLPMemcodes", "Memcodes", "MemcodesConfig", "Tokenizer", "VQVAE",
           "VQVAEConfig", "VectorQuantizer", "build_tokenizer", "codebook_perplexity", "codebook_usage",
           "parse_config"]
