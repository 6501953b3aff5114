"""The 4M-21 B preset spends the paper's token budget: steps x global batch x tokens per sample = 500 B.

Tokens per sample are the masking budgets (input + target), as the reference counts them when it turns
``total_tokens`` into a number of iterations; the global batch is the preset's per-rank batch on the 64 GPUs
its header names (4M-FACTS §6: batch 4096)."""

from __future__ import annotations

import math

from train_stage.config import load_train_config
from train_stage.mixture import load_mixture

# 4M-FACTS §6, 4M-21 pre-training
PAPER_TOKENS = 5.0e11
PAPER_WARMUP_TOKENS = 1.0e10
PAPER_GLOBAL_BATCH = 4096
GPUS = 64  # the preset's header: per rank 64 x 64 GPUs


def test_4m21_b_steps_times_batch_times_tokens_is_the_token_budget():
    cfg = load_train_config("4m21_b")
    global_batch = cfg.batch_size * cfg.grad_accum * GPUS
    assert global_batch == PAPER_GLOBAL_BATCH
    budgets = set()
    for d in cfg.datasets:  # every dataset's mixture must give a sample the same budgets
        mix = load_mixture(d.mixture or cfg.mixture)
        budgets.add((cfg.input_budget or mix.input_budget, cfg.target_budget or mix.target_budget))
    [(n_in, n_out)] = budgets
    per_step = global_batch * (n_in + n_out)
    assert cfg.total_tokens == PAPER_TOKENS and cfg.warmup_tokens == PAPER_WARMUP_TOKENS
    # the last step is the first at which the budget is spent
    assert cfg.steps == math.ceil(PAPER_TOKENS / per_step), (cfg.steps, PAPER_TOKENS / per_step)
    assert 0 <= cfg.steps * per_step - PAPER_TOKENS < per_step
