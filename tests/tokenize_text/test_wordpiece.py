"""The WordPiece tokenizer: fixed-head layout, interchangeability with the reference file, loaders, CLI."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from fourm_core.coco import COCO_THING_CLASSES
from tokenize_stage.text import vocab
from tokenize_stage.text.wordpiece import (
    LayoutError,
    check_layout,
    decode,
    load_tokenizer,
    main,
    train_wordpiece,
)


def test_reference_file_has_the_documented_layout(ref_tok):
    assert ref_tok.get_vocab_size() == 30_000
    assert [ref_tok.id_to_token(i) for i in (0, 1, 2, 3, 4, 203, 204, 1203, 1204, 3204, 4203, 4204, 4283)] == [
        "[PAD]", "[UNK]", "[SOS]", "[EOS]", "[S_0]", "[S_199]", "v0=0", "v0=999", "v1=0", "v3=0", "v3=999",
        "airplane", "zebra"]
    assert vocab.value_token_id(2, 500) == ref_tok.token_to_id("v2=500") == 2704
    assert sorted(vocab.CLASS_TOKENS) == sorted(COCO_THING_CLASSES)


def test_trained_tokenizer_agrees_with_reference_on_every_fixed_id(our_tok, ref_tok):
    assert our_tok.get_vocab_size() == 6000
    for i in range(vocab.NUM_FIXED_IDS):
        assert our_tok.id_to_token(i) == ref_tok.id_to_token(i), i
    ours, ref = json.loads(our_tok.to_str()), json.loads(ref_tok.to_str())
    assert ours["added_tokens"] == ref["added_tokens"]  # same flags: single_word, normalized, special
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert ours[key] == ref[key], key
    assert {k: v for k, v in ours["model"].items() if k != "vocab"} == {
        k: v for k, v in ref["model"].items() if k != "vocab"}


def test_structure_words_are_whole_tokens(our_tok, ref_tok):
    for tok in (our_tok, ref_tok):
        for w in vocab.STRUCTURE_WORDS:
            assert len(tok.encode(w).ids) == 1, w
    assert our_tok.get_vocab_size() == 6000  # swapped in, not appended


def test_class_names_are_single_tokens_case_insensitive_and_word_bounded(ref_tok, our_tok):
    for tok in (ref_tok, our_tok):
        for name in COCO_THING_CLASSES:
            assert tok.encode(name.upper()).ids == [vocab.fixed_id(name)], name
        assert vocab.fixed_id("traffic light") not in tok.encode("traffic lights").ids


def test_value_tokens_only_match_whole_words(ref_tok):
    assert ref_tok.encode("v0=12 v3=999").ids == [216, 4203]
    assert 216 not in ref_tok.encode("xv0=12").ids


def test_decode_keeps_value_and_class_tokens(ref_tok):
    text = "v0=1 v1=2 v2=3 v3=4 hot dog"
    ids = ref_tok.encode(text).ids
    assert ref_tok.decode(ids) != text  # the pitfall: default decoding drops special tokens
    assert decode(ref_tok, ids + [0, 0]) == text


def test_layout_errors_name_the_id(tmp_path, ref_tok):
    state = json.loads(ref_tok.to_str())
    state["model"]["vocab"]["v0=5"], state["model"]["vocab"]["v0=6"] = 210, 209
    for t in state["added_tokens"]:
        t["content"] = {"v0=5": "v0=6", "v0=6": "v0=5"}.get(t["content"], t["content"])
    with pytest.raises(LayoutError, match="id 209"):
        check_layout(Tokenizer.from_str(json.dumps(state)))


def test_too_small_vocab_is_refused():
    with pytest.raises(ValueError, match="vocab_size=4000"):
        train_wordpiece(["a b c"], vocab_size=4000)


def test_loaders(tmp_path, our_tok):
    path = tmp_path / "tok" / "tokenizer.json"
    path.parent.mkdir()
    our_tok.save(str(path))
    for src in (path, str(path.parent), f"file://{path}"):
        assert load_tokenizer(src).get_vocab() == our_tok.get_vocab()
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")


def test_cli_trains_and_writes(tmp_path, small_corpus, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(small_corpus[:2000]))
    out = tmp_path / "out" / "tokenizer.json"
    assert main([str(corpus), "--out", str(out), "--vocab-size", "4600"]) == 0
    tok = load_tokenizer(out)
    assert tok.get_vocab_size() == 4600
    assert "trained 4600 entries" in capsys.readouterr().out


def test_small_corpus_warns_when_vocab_cannot_fill():
    with pytest.warns(UserWarning, match="too few distinct words"):
        tok = train_wordpiece(["a cat on a mat"] * 10, vocab_size=5000)
    assert tok.token_to_id("polygon") is not None  # structure words are still ensured
