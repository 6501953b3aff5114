"""Retrieval on predicted global embeddings (issue 7 point 3, 4M-FACTS §8).

A 4M model predicts the 16 global tokens of DINOv2 / ImageBind (``tok_dinov2_global``,
``tok_imagebind_global``) from any subset of its inputs; the modality's MLP+Memcodes tokenizer
decodes them to an embedding (N, D). Queries and a gallery embedded the same way are compared by
cosine similarity. Inputs of several modalities at once (e.g. rgb pixels + caption ids) make a
combined-modality query: the sampler conditions on all of them.

* :func:`predict_global_tokens` / :func:`predict_global_embeddings`: inputs -> tokens (N, 16) /
  L2-normalised embeddings (N, D), through :func:`eval_stage.generate.generate` (greedy MaskGIT by default);
* :func:`embed_tokens`: known tokens (stored shards, the tokenizer bound) -> embeddings (N, D);
* :class:`Gallery`: normalised embeddings (G, D) + keys (+ labels), cosine top-k search in chunks of
  queries, and the DINOv2 weighted kNN classification of :mod:`eval_stage.metrics.knn`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fourm_core.modalities import ModalityKind, get_modality

from .generate import ModelAdapter, TargetStep, generate
from .metrics.knn import knn_topk_accuracy

DEFAULT_MODALITY = "tok_dinov2_global"
# Similarities are computed in blocks of this many query rows (zero-padded), so a query's scores are
# bitwise the same whatever chunk size a search runs with (BLAS kernels depend on the matrix shape).
SIM_BLOCK = 64


# ---------------------------------------------------------------------------------- validation
def _check_modality(model: nn.Module | None, modality: str) -> None:
    """``modality`` must be a global-token target of ``model`` (and of the registry)."""
    try:
        mod = get_modality(modality)
    except KeyError as err:
        raise ValueError(f"{err.args[0]}; retrieval needs a global-token modality such as "
                         f"'tok_dinov2_global' or 'tok_imagebind_global'") from None
    if mod.kind != ModalityKind.GLOBAL_TOKENS:
        raise ValueError(f"{modality!r} is of kind {mod.kind.value}, not a global-token modality; retrieval "
                         f"predicts global tokens: pass modality='tok_dinov2_global' or 'tok_imagebind_global'")
    if model is not None:
        targets = ModelAdapter(model).domains_out
        if modality not in targets:
            globals_ = [m for m in targets if get_modality(m).kind == ModalityKind.GLOBAL_TOKENS]
            raise ValueError(f"{modality!r} is not a target modality of this model; its global-token targets are "
                             f"{globals_ or 'none'}: pass one of them as modality=, or use a model trained with "
                             f"{modality!r} in domains_out")


def check_tokenizer(tokenizer: nn.Module, modality: str = DEFAULT_MODALITY, *, model_vocab: bool = True,
                    clamp_out_of_vocab: bool = False) -> None:
    """Raise ValueError unless ``tokenizer`` detokenizes ``modality``'s global tokens.

    Checks: an MLP+Memcodes tokenizer (``decode``: tokens (N, L) -> (N, D)) made for this modality, with
    L = the modality's max_tokens; with ``model_vocab`` also a codebook the size of the model's vocabulary
    for it (a smaller one is accepted with ``clamp_out_of_vocab=True``). D is not checked: it follows the
    labeler the tokenizer was trained on (768 for DINOv2-B in production, a small width for `tiny`
    labelers; see tokenize_stage.train_tokenizer.fit_to_labels), and queries and gallery share it.
    """
    _check_modality(None, modality)
    mod = get_modality(modality)
    cfg = getattr(tokenizer, "config", None)
    if cfg is None or getattr(cfg, "architecture", None) != "mlp_memcodes":
        raise ValueError(f"tokenizer {type(tokenizer).__name__} is not an MLP+Memcodes tokenizer; load "
                         f"{mod.tokenizer!r} for {modality} (tokenize_stage.models.from_pretrained of its committed "
                         f"artifact)")
    name = getattr(cfg, "name", type(tokenizer).__name__)
    problems = []
    if getattr(cfg, "modality", modality) != modality:
        problems.append(f"it is the tokenizer of {cfg.modality}")
    if cfg.n_tokens != mod.max_tokens:
        problems.append(f"it has {cfg.n_tokens} tokens, {modality} has {mod.max_tokens}")
    V = mod.vocab_size
    vocab_off = model_vocab and (cfg.codebook_size > V or (cfg.codebook_size < V and not clamp_out_of_vocab))
    if vocab_off:
        problems.append(f"its vocabulary has {cfg.codebook_size} codes, the model predicts {V}")
    if problems:
        fix = f"use the {mod.tokenizer!r} tokenizer trained for {modality}"
        fix += f" with the model's {V}-code vocabulary (the production profile)" if vocab_off else ""
        if vocab_off and cfg.codebook_size < V and not problems[:-1]:
            fix += (f", or pass clamp_out_of_vocab=True to clamp larger ids to {cfg.codebook_size - 1} (as the "
                    f"evaluation stage does with tiny-profile tokenizers)")
        raise ValueError(f"tokenizer {name!r} does not match {modality}: {'; '.join(problems)}. Fix: {fix}")


# ---------------------------------------------------------------------------------- embeddings
def _batch_size(inputs: dict[str, torch.Tensor]) -> int:
    if not inputs:
        raise ValueError("retrieval needs at least one input modality to condition on")
    sizes = {name: int(v.shape[0]) for name, v in inputs.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every input needs the same batch size (dim 0); got {sizes}")
    return next(iter(sizes.values()))


def predict_global_tokens(model: nn.Module, inputs: dict[str, torch.Tensor], modality: str = DEFAULT_MODALITY, *,
                          steps: int = 8, temperature: float = 0.0, step: TargetStep | None = None, seed: int = 0,
                          batch_size: int = 64) -> torch.Tensor:
    """Generate the global tokens of ``modality`` from ``inputs`` -> tokens (N, L) int64 on the CPU.

    inputs: modality -> (N, ...) tensor in the sampler's formats (docs/evaluation.md "Samplers"): pixels
    (N, 3, H, W), sequence ids (N, T), image/global tokens (N, L) with -1 where unknown. Several
    modalities at once make a combined-modality query. Sampling: greedy MaskGIT over ``steps`` steps by
    default (``temperature=0``), or every setting of ``step`` (a :class:`TargetStep` for ``modality``).
    Runs ``batch_size`` samples at a time; chunk i (starting at sample s) uses seed ``seed + s``, so the
    result is deterministic for (seed, batch_size), and independent of batch_size when greedy.
    """
    _check_modality(model, modality)
    if step is None:
        step = TargetStep(modality, steps=steps, temperature=temperature)
    elif step.modality != modality:
        raise ValueError(f"step is for {step.modality!r} but modality is {modality!r}; make them the same")
    n = _batch_size(inputs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    for s in range(0, n, batch_size):
        chunk = {name: v[s:s + batch_size] for name, v in inputs.items()}
        out.append(generate(model, chunk, [step], seed=seed + s)[modality].cpu())
    return torch.cat(out)


@torch.no_grad()
def embed_tokens(tokenizer: nn.Module, tokens: torch.Tensor, modality: str = DEFAULT_MODALITY, *,
                 batch_size: int = 1024, clamp_out_of_vocab: bool = False) -> torch.Tensor:
    """Known global tokens (N, L) -> L2-normalised embeddings (N, D) float32 on the CPU.

    For tokens from stored shards (the tokenizer bound, a gallery) or from :func:`predict_global_tokens`;
    the tokenizer's ``decode`` (Memcodes code vectors -> MLP decoder) runs ``batch_size`` rows at a time on
    the tokenizer's device. Ids outside the tokenizer's codebook raise, or are clamped to its last code
    with ``clamp_out_of_vocab=True`` (a warning gives the count).
    """
    check_tokenizer(tokenizer, modality, model_vocab=False)
    L = get_modality(modality).max_tokens
    if tokens.dim() != 2 or tokens.shape[1] != L:
        raise ValueError(f"{modality} tokens must be (N, {L}); got {tuple(tokens.shape)}")
    tokens = tokens.long()
    if tokens.numel() and int(tokens.min()) < 0:
        raise ValueError("tokens contain negative ids (-1 = unknown); complete them with predict_global_tokens")
    V = tokenizer.config.codebook_size
    oov = int((tokens >= V).sum())
    if oov:
        if not clamp_out_of_vocab:
            raise ValueError(f"{oov} token ids are >= the vocabulary ({V}) of tokenizer {tokenizer.config.name!r}; "
                             f"use the tokenizer the tokens were made with, or pass clamp_out_of_vocab=True")
        warnings.warn(f"{modality}: {oov} of {tokens.numel()} token ids are outside the tokenizer's vocabulary "
                      f"({V}); clamped to {V - 1}", stacklevel=2)
        tokens = tokens.clamp(max=V - 1)
    device = next(tokenizer.parameters()).device
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        out = [F.normalize(tokenizer.decode(t.to(device)).float(), dim=1).cpu() for t in tokens.split(batch_size)]
    finally:
        tokenizer.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, tokenizer.config.in_dim)


def predict_global_embeddings(model: nn.Module, tokenizer: nn.Module, inputs: dict[str, torch.Tensor],
                              modality: str = DEFAULT_MODALITY, *, steps: int = 8, temperature: float = 0.0,
                              step: TargetStep | None = None, seed: int = 0, batch_size: int = 64,
                              clamp_out_of_vocab: bool = False) -> torch.Tensor:
    """Any input subset -> predicted, L2-normalised global embeddings (N, D) float32 on the CPU.

    :func:`predict_global_tokens` then :func:`embed_tokens`; the tokenizer is checked before generating.
    """
    _check_modality(model, modality)
    check_tokenizer(tokenizer, modality, clamp_out_of_vocab=clamp_out_of_vocab)
    tokens = predict_global_tokens(model, inputs, modality, steps=steps, temperature=temperature, step=step,
                                   seed=seed, batch_size=batch_size)
    return embed_tokens(tokenizer, tokens, modality, clamp_out_of_vocab=clamp_out_of_vocab)


# ---------------------------------------------------------------------------------- search
def cosine_similarity_blocks(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Normalised queries (q, D) x normalised gallery (G, D) -> (q, G), in zero-padded blocks of
    ``SIM_BLOCK`` rows so that every row is computed by the same matrix shape at the same block offset."""
    q = queries.shape[0]
    pad = (-q) % SIM_BLOCK
    padded = torch.cat([queries, queries.new_zeros(pad, queries.shape[1])]) if pad else queries
    return torch.cat([b @ gallery.T for b in padded.split(SIM_BLOCK)])[:q]


def topk_stable(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, G) -> the k largest per row (values, indices) (q, k), ties broken towards the lower index."""
    vals, idx = sim.topk(k, dim=1)
    # order the chosen set by (value desc, index asc)
    idx, order = idx.sort(dim=1)
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    idx = idx.gather(1, order)
    # rows where a tie at the k-th value straddles the cut: recompute them with a full stable sort
    kth = vals[:, -1:]
    straddle = ((sim == kth).sum(1) > (vals == kth).sum(1)).nonzero().flatten()
    if straddle.numel():
        full_vals, full_idx = sim[straddle].sort(dim=1, descending=True, stable=True)
        vals[straddle], idx[straddle] = full_vals[:, :k], full_idx[:, :k]
    return vals, idx


@dataclass
class Gallery:
    """Embeddings (G, D) L2-normalised, ``keys`` (G sample keys), optional ``labels`` (G,) int64.

    Build with :meth:`from_embeddings` (normalises) or :meth:`from_tokens` (detokenizes stored tokens).
    """

    embeddings: torch.Tensor
    keys: list[str]
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        G = self.embeddings.shape[0]
        if self.embeddings.dim() != 2:
            raise ValueError(f"gallery embeddings must be (G, D); got {tuple(self.embeddings.shape)}")
        if len(self.keys) != G:
            raise ValueError(f"{len(self.keys)} keys for {G} gallery embeddings")
        if self.labels is not None and tuple(self.labels.shape) != (G,):
            raise ValueError(f"gallery labels must be (G,) = ({G},); got {tuple(self.labels.shape)}")

    @classmethod
    def from_embeddings(cls, embeddings: torch.Tensor, keys: Sequence[str], labels: torch.Tensor | None = None
                        ) -> "Gallery":
        """Raw embeddings (G, D) -> a gallery of their L2-normalised float32 copies."""
        return cls(F.normalize(embeddings.float(), dim=1), list(keys), None if labels is None else labels.long())

    @classmethod
    def from_tokens(cls, tokenizer: nn.Module, tokens: torch.Tensor, keys: Sequence[str],
                    labels: torch.Tensor | None = None, modality: str = DEFAULT_MODALITY, **embed_kwargs: object
                    ) -> "Gallery":
        """Known global tokens (G, L) -> a gallery through :func:`embed_tokens`."""
        return cls(embed_tokens(tokenizer, tokens, modality, **embed_kwargs), list(keys),
                   None if labels is None else labels.long())

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def search(self, queries: torch.Tensor, k: int = 10, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (Q, D) -> cosine scores (Q, k) descending and gallery indices (Q, k) int64.

        Queries are L2-normalised here; they run ``chunk`` at a time (rounded up to a multiple of
        ``SIM_BLOCK``), so at most a (chunk, G) similarity matrix exists at once. Results are bitwise the
        same for every chunk size; equal scores rank the lower gallery index first. k is capped at G.
        """
        if queries.dim() != 2 or queries.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"queries must be (Q, {self.embeddings.shape[1]}); got {tuple(queries.shape)}. Embed "
                             f"queries and gallery with the same tokenizer: its width follows the labeler it "
                             f"was trained on (e.g. 768 for DINOv2-B, 32 for the tiny profile)")
        k = min(k, len(self))
        chunk = max(SIM_BLOCK, -(-chunk // SIM_BLOCK) * SIM_BLOCK)
        g = self.embeddings
        q = F.normalize(queries.float(), dim=1).to(g.device)
        scores, indices = [], []
        for c in q.split(chunk):
            s, i = topk_stable(cosine_similarity_blocks(c, g), k)
            scores.append(s)
            indices.append(i)
        if not scores:
            return g.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long, device=g.device)
        return torch.cat(scores), torch.cat(indices)

    def search_keys(self, queries: torch.Tensor, k: int = 10, chunk: int = 1024) -> list[list[str]]:
        """Like :meth:`search`, returning the keys of the k nearest items per query."""
        _, idx = self.search(queries, k, chunk)
        return [[self.keys[j] for j in row] for row in idx.tolist()]

    def knn_accuracy(self, queries: torch.Tensor, query_labels: torch.Tensor, num_classes: int | None = None,
                     k: int = 20, temperature: float = 0.07, topk: tuple[int, ...] = (1, 5)) -> dict[str, float]:
        """DINOv2 weighted kNN classification of queries (Q, D) against this gallery's labels
        (:func:`eval_stage.metrics.knn.knn_topk_accuracy`) -> {"top1": %, "top5": %}."""
        if self.labels is None:
            raise ValueError("kNN classification needs gallery labels: build the Gallery with labels=")
        if num_classes is None:
            num_classes = int(max(self.labels.max(), query_labels.max())) + 1
        return knn_topk_accuracy(queries, query_labels, self.embeddings, self.labels, num_classes, k, temperature,
                                 topk)
