"""Retrieval on predicted global embeddings (issue 7 point 3) with a tiny model and tiny tokenizer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eval_stage.generate import TargetStep, generate
from eval_stage.retrieval import (Gallery, embed_tokens, predict_global_embeddings, predict_global_tokens,
                                  topk_stable)

N = 4
MOD = "tok_dinov2_global"


def _tokenizer(codebook_size: int | None = 8192):
    """The tiny MLP+Memcodes DINOv2-global tokenizer, random init under a fixed seed; by default with the
    modality's full vocabulary (the tiny profile has 256 codes) so that every predicted id decodes."""
    from tokenize_stage.models.hub import build_tokenizer
    from tokenize_stage.registry import tokenizer_config

    cfg = tokenizer_config("dinov2_global_memcodes", "tiny")
    if codebook_size is not None:
        cfg = cfg.model_copy(update={"codebook_size": codebook_size})
    torch.manual_seed(0)
    return build_tokenizer(cfg).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


def _rgb(seed=3, n=N):
    # scaled up, and a seed, so that the random-init model (which predicts one code almost everywhere) gives a
    # different token set for every image; the gallery test asserts they are distinct
    return 3 * torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _caption(n=N):
    return torch.tensor([[300 + i, 301, 302 + 2 * i] for i in range(n)])


@pytest.fixture(scope="module")
def rgb_embeddings(tiny_model, tokenizer):
    return predict_global_embeddings(tiny_model, tokenizer, {"rgb@224": _rgb()}, steps=4, batch_size=3)


def test_shapes_unit_norm_and_determinism(tiny_model, tokenizer, rgb_embeddings):
    emb = rgb_embeddings
    assert emb.shape == (N, 768) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(N), atol=1e-5)
    again = predict_global_embeddings(tiny_model, tokenizer, {"rgb@224": _rgb()}, steps=4, batch_size=3)
    assert torch.equal(emb, again)
    # greedy decoding does not depend on the batching
    one_batch = predict_global_embeddings(tiny_model, tokenizer, {"rgb@224": _rgb()}, steps=4, batch_size=N)
    assert torch.equal(emb, one_batch)
    # sampled decoding is deterministic under a seed and varies with it
    step = TargetStep(MOD, steps=2, temperature=1.0)
    a = predict_global_tokens(tiny_model, {"rgb@224": _rgb()}, step=step, seed=5)
    b = predict_global_tokens(tiny_model, {"rgb@224": _rgb()}, step=step, seed=5)
    c = predict_global_tokens(tiny_model, {"rgb@224": _rgb()}, step=step, seed=6)
    assert a.shape == (N, 16) and torch.equal(a, b) and not torch.equal(a, c)


def test_tokens_are_the_samplers(tiny_model):
    tok = predict_global_tokens(tiny_model, {"rgb@224": _rgb()}, steps=4, batch_size=N)
    ref = generate(tiny_model, {"rgb@224": _rgb()}, [TargetStep(MOD, steps=4, temperature=0.0)], seed=0)[MOD]
    assert torch.equal(tok, ref)


def test_gallery_self_retrieval_scores_and_chunking(rgb_embeddings):
    gallery = Gallery.from_embeddings(rgb_embeddings, [f"k{i}" for i in range(N)])
    scores, idx = gallery.search(rgb_embeddings, k=3)
    assert scores.shape == idx.shape == (N, 3)
    assert len({tuple(e.tolist()) for e in rgb_embeddings}) == N  # distinct items (else ties pick the lower)
    assert torch.equal(idx[:, 0], torch.arange(N))  # every query finds itself first
    assert gallery.search_keys(rgb_embeddings, k=1) == [[f"k{i}"] for i in range(N)]
    direct = F.normalize(rgb_embeddings, dim=1) @ F.normalize(rgb_embeddings, dim=1).T
    assert torch.allclose(scores, direct.gather(1, idx), atol=1e-6)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())


def test_chunked_search_equals_unchunked_exactly():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(300, 32, generator=g)
    gallery = Gallery.from_embeddings(emb, [str(i) for i in range(300)])
    queries = torch.randn(150, 32, generator=g)
    full = gallery.search(queries, k=7, chunk=10_000)
    for chunk in (1, 50, 64, 100):
        part = gallery.search(queries, k=7, chunk=chunk)
        assert torch.equal(full[0], part[0]) and torch.equal(full[1], part[1])
    direct = F.normalize(queries, dim=1) @ F.normalize(emb, dim=1).T
    assert torch.allclose(full[0], direct.topk(7, dim=1).values, atol=1e-6)


def test_ties_rank_the_lower_index_first():
    sim = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.5, 0.1]] * 2)
    vals, idx = topk_stable(sim, 3)
    assert idx.tolist() == [[1, 3, 0]] * 2 and torch.equal(vals, torch.tensor([[0.9, 0.9, 0.5]] * 2))
    flat = torch.zeros(3, 1000)  # one tie across the cut: the lowest indices win
    flat[1, 700] = 1.0
    assert topk_stable(flat, 4)[1].tolist() == [[0, 1, 2, 3], [700, 0, 1, 2], [0, 1, 2, 3]]
    gallery = Gallery.from_embeddings(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.0]]), list("abcd"))
    _, idx = gallery.search(torch.tensor([[3.0, 0.0]]), k=2)
    assert idx.tolist() == [[0, 2]]


def test_combined_modality_query(tiny_model, tokenizer, rgb_embeddings):
    both = predict_global_embeddings(tiny_model, tokenizer, {"rgb@224": _rgb(), "caption": _caption()}, steps=4)
    caption_only = predict_global_embeddings(tiny_model, tokenizer, {"caption": _caption()}, steps=4)
    assert both.shape == (N, 768)
    assert not torch.equal(both, rgb_embeddings) and not torch.equal(both, caption_only)


def test_embed_known_tokens_matches_prediction(tiny_model, tokenizer, rgb_embeddings):
    tok = predict_global_tokens(tiny_model, {"rgb@224": _rgb()}, steps=4)
    assert torch.equal(embed_tokens(tokenizer, tok), rgb_embeddings)
    # another batching runs other matrix shapes: equal up to float rounding
    assert torch.allclose(embed_tokens(tokenizer, tok, batch_size=3), rgb_embeddings, atol=1e-6)
    gallery = Gallery.from_tokens(tokenizer, tok, list("abcd"), labels=torch.tensor([0, 1, 0, 1]))
    assert torch.equal(gallery.embeddings, rgb_embeddings)
    # the DINOv2 kNN metric over the gallery: each query's own item dominates its vote (weight exp(1/T))
    assert gallery.knn_accuracy(rgb_embeddings, torch.tensor([0, 1, 0, 1]), k=1, topk=(1,)) == {"top1": 100.0}


def test_bad_modality_raises(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="tok_depth@224.*not a global-token modality.*tok_dinov2_global"):
        predict_global_embeddings(tiny_model, tokenizer, {"rgb@224": _rgb()}, "tok_depth@224")
    with pytest.raises(ValueError, match="tok_imagebind_global.*not a target modality of this model.*"
                                         "tok_dinov2_global"):
        predict_global_tokens(tiny_model, {"rgb@224": _rgb()}, "tok_imagebind_global")
    with pytest.raises(ValueError, match="unknown modality 'nope'"):
        embed_tokens(tokenizer, torch.zeros(1, 16, dtype=torch.long), "nope")


def test_mismatched_tokenizer_raises(tiny_model):
    from tokenize_stage.models.hub import build_tokenizer
    from tokenize_stage.registry import tokenizer_config

    inputs = {"rgb@224": _rgb(n=1)}
    small = _tokenizer(codebook_size=None)  # the tiny profile: 256 codes for an 8192-id modality
    with pytest.raises(ValueError, match="'dinov2_global_memcodes'.*256 codes.*8192.*clamp_out_of_vocab=True"):
        predict_global_embeddings(tiny_model, small, inputs, steps=1)
    # known tokens only need to be inside the tokenizer's own codebook (a tiny-profile token shard)
    assert embed_tokens(small, torch.full((1, 16), 255)).shape == (1, 768)
    with pytest.raises(ValueError, match="1 token ids are >= the vocabulary \\(256\\).*clamp_out_of_vocab=True"):
        embed_tokens(small, torch.tensor([[4000] + [0] * 15]))
    with pytest.warns(UserWarning, match="clamped to 255"):
        emb = embed_tokens(small, torch.full((1, 16), 4000), clamp_out_of_vocab=True)
    assert torch.equal(emb, embed_tokens(small, torch.full((1, 16), 255)))
    with pytest.warns(UserWarning, match="outside the tokenizer's vocabulary"):
        assert predict_global_embeddings(tiny_model, small, inputs, steps=1, clamp_out_of_vocab=True).shape == (1, 768)
    imagebind = build_tokenizer(tokenizer_config("imagebind_global_memcodes", "tiny")
                                .model_copy(update={"codebook_size": 8192}))
    with pytest.raises(ValueError, match="'imagebind_global_memcodes'.*tokenizer of tok_imagebind_global.*"
                                         "Fix: use the 'dinov2_global_memcodes' tokenizer"):
        predict_global_embeddings(tiny_model, imagebind, inputs, steps=1)
    # a tokenizer trained on a tiny labeler's features has that labeler's width (the demo's: 32)
    narrow = build_tokenizer(tokenizer_config("dinov2_global_memcodes", "tiny").model_copy(update={"in_dim": 32}))
    assert embed_tokens(narrow, torch.full((2, 16), 3)).shape == (2, 32)
    semseg = build_tokenizer(tokenizer_config("semseg_vqvae", "tiny"))
    with pytest.raises(ValueError, match="not an MLP\\+Memcodes tokenizer"):
        embed_tokens(semseg, torch.zeros(1, 16, dtype=torch.long))
