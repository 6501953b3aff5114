"""Caption tokens: ``tokens/caption`` per shard, the images' (or texts') captions as WordPiece ids.

One unit per shard reads the ``caption`` column of the shard's ``images`` (or, for a text-only dataset,
``texts``) part, encodes it with the project's text tokenizer (``tokenize_stage.text.wordpiece``; the
vendored reference 30k file unless ``tokenize.text_tokenizer`` names another) and commits
``tokens/caption`` with the columns the training loader reads (docs/data-format.md):

    sample_key str, crop int16 (always 0: a caption is the same for every crop), tokens list<int16>, text str

Ids are the tokenizer's (no SOS/EOS: the masking code appends EOS, 4M-FACTS §2), truncated to the
registry's ``max_tokens`` (256). Samples without a caption are rows of the errors table
(``no_caption``), not token rows.

Cache key: the source part's digest, the tokenizer source and the sha256 of its file (``ModelRef``), the
truncation length and this module's code version. Cheap: one ``encode_batch`` per shard.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pyarrow as pa

from fourm_core.manifest import Manifest, ModelRef
from fourm_core.modalities import MODALITIES
from fourm_core.reference_data import reference_file
from fourm_core.store import ArtifactStore
from fourm_core.units import SampleError, Unit, UnitOutput, UnitResult, run_unit

CAPTION = MODALITIES["caption"]
CAPTION_ARTIFACT = CAPTION.token_artifact  # tokens/caption
CODE_VERSION = "tokenize.caption/1"
SOURCE_ARTIFACTS = ("images", "texts")  # where ingest keeps captions (image datasets, text-only datasets)

_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str], object] = {}


def text_tokenizer(source: str | None = None):
    """(tokenizer, ModelRef) for ``source`` (None: the vendored reference file); loaded once per digest."""
    from tokenize_stage.text.wordpiece import REFERENCE_TOKENIZER, load_tokenizer

    if source is None:
        path = reference_file(REFERENCE_TOKENIZER)
        data = path.read_bytes()
        ref_id, ref_source = f"wordpiece:{REFERENCE_TOKENIZER}", "reference"
    else:
        p = Path(source).expanduser()
        if "://" in source:
            import fsspec

            url = source if source.endswith(".json") else source.rstrip("/") + "/tokenizer.json"
            with fsspec.open(url, "rb") as f:
                data = f.read()
        elif p.is_dir() or p.is_file():
            data = (p / "tokenizer.json" if p.is_dir() else p).read_bytes()
        else:  # a hub id: digest of the loaded tokenizer's serialisation
            data = load_tokenizer(source).to_str().encode()
        ref_id, ref_source = f"wordpiece:{source}", source
    digest = hashlib.sha256(data).hexdigest()
    with _LOCK:
        key = (ref_source, digest)
        if key not in _LOADED:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(data.decode("utf-8"))
            from tokenize_stage.text.wordpiece import check_layout

            check_layout(tok)
            _LOADED[key] = tok
        tok = _LOADED[key]
    return tok, ModelRef(id=ref_id, source=ref_source, digest=digest)


def caption_source(store: ArtifactStore, dataset: str, shard: int) -> Manifest | None:
    """The committed ``images`` (else ``texts``) part of ``shard`` that carries a ``caption`` column."""
    for artifact in SOURCE_ARTIFACTS:
        m = store.read_manifest(dataset, artifact, shard)
        if m is not None and "caption" in m.schema_:
            return m
    return None


def caption_shards(store: ArtifactStore, dataset: str) -> list[int]:
    shards: set[int] = set()
    for artifact in SOURCE_ARTIFACTS:
        shards.update(store.committed_shards(dataset, artifact))
    return sorted(shards)


def encode_captions(tok, captions: list[str], max_tokens: int = CAPTION.max_tokens) -> tuple[list[list[int]], int]:
    """WordPiece ids of each caption (no special tokens added), truncated to ``max_tokens``; and how many
    captions were truncated."""
    ids = [enc.ids for enc in tok.encode_batch(captions, add_special_tokens=False)]
    if any(i >= 2**15 for t in ids for i in t):
        raise ValueError("text tokenizer ids do not fit the int16 token column (vocabulary above 32767)")
    return [t[:max_tokens] for t in ids], sum(1 for t in ids if len(t) > max_tokens)


def caption_unit(store: ArtifactStore, dataset: str, shard: int, source: Manifest, text_tokenizer_source: str | None,
                 force: bool = False) -> UnitResult:
    tok, ref = text_tokenizer(text_tokenizer_source)
    unit = Unit(stage="tokenize", dataset=dataset, artifacts=[CAPTION_ARTIFACT], shard=shard,
                code_version=CODE_VERSION, model=ref, inputs=[source.as_input()],
                config={"modality": CAPTION.name, "source": source.artifact, "max_tokens": CAPTION.max_tokens})

    def compute() -> UnitOutput:
        table = store.read_table(dataset, source.artifact, shard, columns=["sample_key", "caption"])
        keys, texts, errors = [], [], []
        for key, text in zip(table.column("sample_key").to_pylist(), table.column("caption").to_pylist()):
            if text is None or not text.strip():
                errors.append(SampleError(key, "no_caption", f"{source.artifact} has no caption"))
                continue
            keys.append(key)
            texts.append(text)
        ids, truncated = encode_captions(tok, texts)
        out = pa.table({"sample_key": pa.array(keys, pa.string()),
                        "crop": pa.array([0] * len(keys), pa.int16()),
                        "tokens": pa.array(ids, pa.list_(pa.int16())),
                        "text": pa.array(texts, pa.string())})
        lengths = [len(t) for t in ids]
        return UnitOutput({CAPTION_ARTIFACT: out}, errors=errors,
                          stats={"tokenizer": ref.id, "vocab": tok.get_vocab_size(),
                                 "mean_tokens": round(sum(lengths) / len(lengths), 2) if lengths else 0.0,
                                 "truncated": truncated})

    return run_unit(store, unit, compute, force=force)
