"""Every serialisation tokenizes with the reference tokenizer to one id per word, no [UNK], within the
registry budget, and decodes back to itself; a tokenizer trained by us gives the same fixed-head ids."""

from __future__ import annotations

import numpy as np
import pytest

from fourm_core.modalities import get_modality
from tests.tokenize_text import samples
from tokenize_stage.text.serialise import SERIALISERS, token_budget
from tokenize_stage.text.serialise._common import split_words
from tokenize_stage.text.vocab import NUM_FIXED_IDS, UNK, fixed_id
from tokenize_stage.text.wordpiece import decode

MAKERS = {
    "det": lambda g: samples.detections(g),
    "color_palette": lambda g: samples.palette_set(g),
    "metadata": lambda g: samples.metadata(g, p_present=1.0 if g.random() < 0.3 else 0.6),
    "human_poses": lambda g: samples.human_poses(g),
    "sam_instance": lambda g: samples.sam_instances(g, max_per_point=int(g.integers(0, 4))),
}


def texts(modality: str, n: int = 25) -> list[str]:
    g = np.random.default_rng(list(SERIALISERS).index(modality))  # str hash() is salted per process
    return [SERIALISERS[modality].serialise(MAKERS[modality](g), g) for _ in range(n)]


@pytest.mark.parametrize("modality", list(SERIALISERS))
def test_reference_ids_one_per_word_no_unk_within_budget(modality, ref_tok):
    unk = ref_tok.token_to_id(UNK)
    budget = token_budget(modality)
    # every sequence leaves one slot for [EOS] except metadata, which (as the reference) fills all 40
    assert budget == get_modality(modality).max_tokens - (modality != "metadata")
    longest = 0
    for text in texts(modality):
        ids = ref_tok.encode(text).ids
        assert unk not in ids, text
        assert len(ids) == len(split_words(text)) <= budget
        assert decode(ref_tok, ids) == text.rstrip()  # human_poses ends with a space, as the reference
        longest = max(longest, len(ids))
    assert longest > budget * 0.5  # the samples do reach the budget region


@pytest.mark.parametrize("modality", list(SERIALISERS))
def test_our_tokenizer_matches_reference_on_fixed_ids(modality, ref_tok, our_tok):
    for text in texts(modality, n=8):
        ref_ids, our_ids = ref_tok.encode(text).ids, our_tok.encode(text).ids
        assert len(our_ids) == len(ref_ids)  # structure words are whole tokens in both
        for r, o in zip(ref_ids, our_ids):
            assert (r == o) if r < NUM_FIXED_IDS else (o >= NUM_FIXED_IDS)
        assert decode(our_tok, our_ids) == text.rstrip()


def test_fixed_ids_of_an_example(ref_tok):
    text = "v0=100 v1=200 v2=300 v3=400 hot dog"
    assert ref_tok.encode(text).ids == [304, 1404, 2504, 3604, fixed_id("hot dog")] == [304, 1404, 2504, 3604, 4242]


@pytest.mark.parametrize("modality", list(SERIALISERS))
def test_structured_json_round_trip(modality):
    """The pre-tokenization stage stores the structured form as JSON beside the text."""
    from tokenize_stage.text.serialise import PARSED_TYPES, STRUCTURED_TYPES

    g = np.random.default_rng(7)
    for _ in range(5):
        x = MAKERS[modality](g)
        assert isinstance(x, STRUCTURED_TYPES[modality])
        assert STRUCTURED_TYPES[modality].model_validate_json(x.model_dump_json()) == x
        parsed = SERIALISERS[modality].parse(SERIALISERS[modality].serialise(x, g))
        assert isinstance(parsed, PARSED_TYPES[modality])
