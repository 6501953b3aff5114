"""Fixtures for the text tokenizer tests: the reference tokenizer and one small tokenizer trained by us."""

from __future__ import annotations

import os
import random

import pytest

# The shared machine has few cores: keep the Rust tokenizers on one thread.
os.environ.setdefault("RAYON_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def ref_tok():
    from tokenize_stage.text.wordpiece import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def small_corpus(ref_tok) -> list[str]:
    """Synthetic captions: random words of the reference vocabulary, deterministic, about 400 kB."""
    words = sorted(w for w in ref_tok.get_vocab() if w.isalpha() and len(w) > 2)[:4000]
    rng = random.Random(0)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) for _ in range(6000)]


@pytest.fixture(scope="session")
def our_tok(small_corpus):
    from tokenize_stage.text.wordpiece import train_wordpiece

    return train_wordpiece(small_corpus, vocab_size=6000)
