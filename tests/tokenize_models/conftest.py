"""Fixtures for the tokenizer tests: torch on one thread (the CI machine is small and shared)."""

import torch

torch.set_num_threads(1)
