"""A counted FLOP model of a 4M training step, for tokens/s -> MFU.

Counts matrix multiplications only (2 FLOPs per multiply-add); norms, softmax and element-wise ops
are ignored, as is usual for MFU. Backward = 2x forward, so a training step is 3x forward.
"""

from __future__ import annotations

import torch

from .model.config import FourMConfig


def forward_flops(cfg: FourMConfig, n_in: float, n_out: float, n_embed_proj: float = 0.0,
                  head_vocab_tokens: float = 0.0) -> float:
    """FLOPs of one forward pass of one sample with ``n_in`` encoder and ``n_out`` decoder tokens.

    n_embed_proj: input-feature x D multiply-adds of pixel / T5 projections (sum over those tokens of
    their input width); head_vocab_tokens: sum over labelled decoder tokens of their vocabulary size.
    """
    D, H = cfg.dim, cfg.mlp_hidden
    enc_layer = n_in * (4 * D * D + 3 * D * H) + 2 * n_in * n_in * D  # qkv+proj, SwiGLU; QK^T and AV
    dec_layer = (n_out * (4 * D * D)  # self-attention qkv + proj
                 + n_out * 2 * D * D + n_in * 2 * D * D  # cross-attention q, proj; kv on the context
                 + 2 * n_out * n_out * D + 2 * n_out * n_in * D  # self- and cross-attention scores / values
                 + n_out * 3 * D * H)
    macs = (cfg.encoder_depth * enc_layer + cfg.decoder_depth * dec_layer + n_in * D * D  # decoder_proj_context
            + n_embed_proj * D + head_vocab_tokens * D)
    return 2.0 * macs


def train_step_flops(cfg: FourMConfig, n_in: float, n_out: float, batch: int, n_embed_proj: float = 0.0,
                     head_vocab_tokens: float = 0.0) -> float:
    """FLOPs of forward + backward for a batch (per-sample counts are averages)."""
    return 3.0 * batch * forward_flops(cfg, n_in, n_out, n_embed_proj, head_vocab_tokens)


# Peak dense FLOP/s used for MFU when the config gives none.
PEAK_FLOPS = {
    "cuda-bf16-h100": 989e12,
    "cuda-bf16-h200": 989e12,
    "cuda-bf16-a100": 312e12,
    # one x86 core with two 256-bit FMA units at ~2.5 GHz: 2 units * 8 fp32 lanes * 2 FLOPs * 2.5e9
    "cpu-fp32-core": 80e9,
}


def measure_matmul_peak(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None,
                        seconds: float = 1.0) -> float:
    """Achieved FLOP/s of a large square matmul on ``device`` (the best of repeated timings).

    The practical ceiling of this machine, measured rather than assumed: MFU against it says how much of
    what the hardware really delivers a training step gets. n defaults to 1024 on CPU, 8192 on GPU."""
    import time

    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 1024)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    torch.matmul(a, b)  # warm-up (kernel selection, thread pool start)
    sync()
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return 2.0 * n ** 3 / best
