"""T5 v1.1 XXL as its repository publishes it: a SentencePiece ``spiece.model`` and ``pytorch_model*.bin``
shards with an index (no safetensors), built here small and loaded through the labeler's real loading path."""

import json
import pickle

import pytest
import torch

from pseudolabel import models
from pseudolabel.registry import labeler_class
from pseudolabel.spec import Batch

CAPTIONS = ["A cat on a rug.", "a red sphere left of a large blue cube", "Shapes. Two of them!"]


def _spiece_model(folder) -> None:
    import sentencepiece as spm

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CAPTIONS * 40 + ["the quick brown fox jumps over the lazy dog"] * 40))
    # T5's special ids: pad 0, eos 1, unk 2, no bos
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=40,
                                   hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, minloglevel=2)
    corpus.unlink()
    (folder / "spiece.vocab").unlink()


def _release_dir(folder, n_shards: int = 2):
    """A tiny T5 encoder written the way the v1.1 repositories hold it: config, spiece.model, .bin shards."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=40, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
                                    feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)).eval()
    folder.mkdir()
    model.config.save_pretrained(folder)
    _spiece_model(folder)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = sorted(state)
    weight_map = {}
    for i in range(n_shards):
        shard = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        part = names[i::n_shards]
        torch.save({k: state[k] for k in part}, folder / shard)
        weight_map.update({k: shard for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return model


def test_t5_loads_from_sentencepiece_and_bin_shards(tmp_path):
    from transformers import T5Tokenizer

    path = tmp_path / "t5-v1_1-xxl"
    reference = _release_dir(path)
    cls = labeler_class("t5")
    lab = cls(cls.Settings(model=str(path)))
    ref = lab.model_ref()
    assert ref.id == str(path) and ref.digest == models.weights_digest(str(path))
    assert [p.name for p in models.weight_files(path)] == ["pytorch_model-00001-of-00002.bin",
                                                          "pytorch_model-00002-of-00002.bin"]
    lab.setup()
    assert isinstance(lab.tokenizer, T5Tokenizer)  # the release's SentencePiece model, not our WordPiece
    for k, v in reference.state_dict().items():
        assert torch.equal(lab.model.state_dict()[k], v), k
    out = lab.label_batch(Batch(["a", "b", "c"], [None] * 3, CAPTIONS))
    enc = lab.tokenizer(CAPTIONS, max_length=77, truncation=True, padding="longest", return_tensors="pt")
    assert enc["input_ids"][0, enc["attention_mask"][0].sum() - 1] == 1  # every caption ends with T5's </s>
    with torch.inference_mode():
        h = reference(**enc).last_hidden_state
    for j, row in enumerate(out):
        n = int(enc["attention_mask"][j].sum())
        assert row["t5_caption"]["n_tokens"] == n and row["t5_caption"]["dim"] == 32
        got = torch.frombuffer(bytearray(row["t5_caption"]["embedding"]), dtype=torch.float16).view(n, 32)
        assert torch.equal(got, h[j, :n].half())


def test_t5_bin_shards_are_read_with_the_safe_unpickler(tmp_path):
    """A .bin that would run code when unpickled is refused, not executed (torch.load(weights_only=True))."""
    path = tmp_path / "t5"
    _release_dir(path, n_shards=1)

    class Payload:
        def __reduce__(self):
            return (print, ("pickle executed",))

    with open(path / "pytorch_model-00001-of-00001.bin", "wb") as f:
        pickle.dump({"shared.weight": Payload()}, f, protocol=2)
    cls = labeler_class("t5")
    with pytest.raises(models.ModelLoadError, match="labeler 't5'.*Weights only load failed"):
        cls(cls.Settings(model=str(path))).setup()


def test_a_directory_without_weights_names_both_accepted_formats(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cls = labeler_class("t5")
    with pytest.raises(models.ModelLoadError, match=r"safetensors \(or pytorch_model\*\.bin\)"):
        cls(cls.Settings(model=str(tmp_path))).model_ref()
