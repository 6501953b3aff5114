import pytest

from fourm_core.modalities import FOURM7, MODALITIES, ModalityKind, get_modality, modalities_made_by


def test_registry_holds_the_4m21_set():
    assert len(MODALITIES) == 19
    assert set(FOURM7) <= set(MODALITIES)


@pytest.mark.parametrize("name,vocab,tokens", [
    ("caption", 30_000, 256), ("det", 30_000, 256), ("metadata", 30_000, 40), ("color_palette", 30_000, 23),
    ("human_poses", 30_000, 275), ("sam_instance", 30_000, 290), ("tok_rgb@224", 16_384, 196),
    ("tok_semseg@224", 4_096, 196), ("tok_dinov2@224", 8_192, 256), ("tok_dinov2_global", 8_192, 16),
])
def test_vocab_and_token_budgets_match_the_paper(name, vocab, tokens):
    m = get_modality(name)
    assert (m.vocab_size, m.max_tokens) == (vocab, tokens)


def test_input_only_modalities():
    assert not get_modality("rgb@224").is_target
    assert not get_modality("t5_caption").is_target
    assert all(m.is_input for m in MODALITIES.values())


def test_image_token_grids_cover_max_tokens():
    for m in MODALITIES.values():
        if m.kind is ModalityKind.IMAGE_TOKENS:
            assert m.grid[0] * m.grid[1] == m.max_tokens


def test_unknown_modality_lists_known_names():
    with pytest.raises(KeyError, match="tok_rgb@224"):
        get_modality("tok_rgb")


def test_shared_edge_tokenizer():
    assert get_modality("tok_canny_edge@224").tokenizer == get_modality("tok_sam_edge@224").tokenizer
    assert {m.name for m in modalities_made_by("sam")} == {"sam_instance", "tok_sam_edge@224"}
