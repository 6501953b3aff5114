"""Vector quantizer with l2-normalised (cosine) codes, EMA codebook updates and dead-code restarts.

Shapes: the quantizer sees ``x`` as (B, N, D) — N tokens of width D — and returns quantized vectors
of the same shape, code indices (B, N) and a commitment loss. Codes live on the unit sphere in a small
``codebook_dim`` space (cosine-similarity lookup, as in ViT-VQGAN / 4M): lookups are then well
conditioned and every code is reachable, which is what keeps large codebooks (8k-16k) in use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def codebook_perplexity(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """exp(entropy) of the code histogram of ``indices`` (any shape): the effective number of codes used.

    Uniform use of k codes gives exactly k; a single code gives 1.
    """
    counts = torch.bincount(indices.reshape(-1), minlength=codebook_size).float()
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
    return entropy.exp()


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Fraction of the codebook hit at least once by ``indices``."""
    return torch.bincount(indices.reshape(-1), minlength=codebook_size).gt(0).float().mean()


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, N, D) straight-through quantized vectors in the input space
    indices: torch.Tensor  # (B, N) int64 code ids
    loss: torch.Tensor  # scalar commitment loss (already weighted)
    perplexity: torch.Tensor  # scalar
    usage: torch.Tensor  # scalar, fraction of codes used in this batch


class VectorQuantizer(nn.Module):
    """Cosine-similarity VQ with EMA codebook updates, dead-code restarts and straight-through gradients.

    Args:
        dim: width D of the incoming tokens.
        codebook_size: number of codes K.
        codebook_dim: width of the (l2-normalised) code space; a linear in/out projection maps D <-> it.
        decay: EMA decay of the code statistics.
        commitment_weight: weight of ||z - sg(q)||^2 pulling encoder outputs towards their codes.
        dead_code_threshold: a code whose EMA cluster size falls below this is restarted from a batch vector.
        always_project: keep the in/out projections even when ``dim == codebook_dim`` (the ml4m layout's
            ``quant_proj`` / ``post_quant_proj`` always exist).
        project_back: map quantized codes back to ``dim`` (False: the output stays in the code space, as the
            ml4m diffusion tokenizers condition their decoder on the raw codes).
    """

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int = 32, decay: float = 0.99,
                 commitment_weight: float = 0.25, dead_code_threshold: float = 1.0, eps: float = 1e-5,
                 always_project: bool = False, project_back: bool = True):
        super().__init__()
        self.codebook_size, self.codebook_dim = codebook_size, codebook_dim
        self.decay, self.commitment_weight, self.dead_code_threshold, self.eps = (
            decay, commitment_weight, dead_code_threshold, eps)
        project = always_project or dim != codebook_dim
        self.project_in = nn.Linear(dim, codebook_dim) if project else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if project and project_back else nn.Identity()
        # The codebook is not a parameter: EMA statistics update it, gradients never do.
        embed = F.normalize(torch.randn(codebook_size, codebook_dim), dim=-1)
        self.register_buffer("embed", embed)  # (K, d) unit vectors
        self.register_buffer("embed_sum", embed.clone())  # (K, d) EMA of summed assigned vectors
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # (K,) EMA of assignment counts

    @property
    def codebook(self) -> torch.Tensor:
        """(K, d) unit-norm codes."""
        return self.embed

    def lookup(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code by cosine similarity. z: (..., d) unit vectors -> (...,) int64.

        Codes are re-normalised here: ours always are unit vectors, but the reference's EMA leaves its
        released codes slightly off the sphere, and it compares directions.
        """
        return (z @ F.normalize(self.embed, dim=-1).t()).argmax(dim=-1)

    def indices_to_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, N) code ids -> (B, N, D) vectors in the input space (what the decoder consumes)."""
        return self.project_out(F.embedding(indices, self.embed))

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """z: (M, d) unit vectors, indices: (M,). Moves each used code towards the mean of its vectors."""
        onehot = F.one_hot(indices, self.codebook_size).type(z.dtype)  # (M, K)
        counts = onehot.sum(0)
        sums = onehot.t() @ z  # (K, d)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely-used codes from dividing by ~0.
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embed.copy_(F.normalize(self.embed_sum / smoothed.unsqueeze(1), dim=-1))

    @torch.no_grad()
    def _restart_dead_codes(self, z: torch.Tensor) -> int:
        """Replace codes whose EMA cluster size is below the threshold with random batch vectors.

        A dead code never wins a lookup, so it never gets an EMA update and stays dead forever; moving
        it onto a real encoder output makes it win at least that vector next time. Returns how many.
        """
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        pick = torch.randint(0, z.shape[0], (n_dead,), device=z.device)
        # In DDP every rank must restart to the same vectors: take rank 0's choice.
        new = z[pick]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(new, 0)
        self.embed[dead] = new
        self.embed_sum[dead] = new * self.dead_code_threshold
        self.cluster_size[dead] = self.dead_code_threshold
        return n_dead

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, N, D) -> QuantizerOutput with quantized (B, N, D) and indices (B, N)."""
        z = F.normalize(self.project_in(x), dim=-1)  # (B, N, d)
        flat = z.reshape(-1, self.codebook_dim)
        indices = self.lookup(flat)
        if self.training:
            self._ema_update(flat.detach(), indices)
            self._restart_dead_codes(flat.detach())
        q = F.embedding(indices, self.embed)  # (M, d)
        loss = self.commitment_weight * F.mse_loss(flat, q.detach()) if self.training else flat.new_zeros(())
        # Straight-through: forward uses the code, backward passes the gradient to the encoder unchanged.
        q = flat + (q - flat).detach()
        quantized = self.project_out(q.view_as(z))
        indices = indices.view(z.shape[:-1])
        return QuantizerOutput(quantized, indices, loss, codebook_perplexity(indices, self.codebook_size),
                               codebook_usage(indices, self.codebook_size))
