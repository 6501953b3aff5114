"""Tokenizers (VQ-VAE, diffusion decoders, MLP+Memcodes, WordPiece), their training, and pre-tokenization."""
