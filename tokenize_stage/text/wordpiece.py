"""Load and train the shared WordPiece text tokenizer (4M-FACTS §2).

One tokenizer serves every sequence modality (caption, det, metadata, colour palette, human poses, SAM
instances). Its first 4284 ids are the fixed head defined in :mod:`tokenize_stage.text.vocab`; the rest is
ordinary WordPiece vocabulary learnt from captions. ``load_tokenizer()`` with no argument gives the reference
release's trained 30k file, so our sequences are id-compatible with the published checkpoints;
``train_wordpiece()`` learns a new vocabulary with the same head, and ``check_layout()`` proves a tokenizer
is interchangeable with the reference for ids 0-4283.

Pitfall for users: value and class tokens are *special* tokens, so ``Tokenizer.decode(ids)`` with its default
``skip_special_tokens=True`` silently drops them; use :func:`decode` here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from fourm_core.reference_data import reference_file
from tokenize_stage.text.vocab import (
    CLASS_TOKENS,
    CONTROL_TOKENS,
    NUM_FIXED_IDS,
    SENTINEL_TOKENS,
    SPECIAL_TOKENS,
    STRUCTURE_WORDS,
    UNK,
    VALUE_TOKENS,
)

REFERENCE_TOKENIZER = "text_tokenizer_4m_wordpiece_30k.json"
DEFAULT_VOCAB_SIZE = 30_000
MAX_INPUT_CHARS_PER_WORD = 100  # longer words become [UNK], as in BERT and the reference file

__all__ = [
    "DEFAULT_VOCAB_SIZE",
    "LayoutError",
    "check_layout",
    "decode",
    "load_tokenizer",
    "new_wordpiece_tokenizer",
    "special_added_tokens",
    "train_wordpiece",
]


class LayoutError(ValueError):
    """A tokenizer whose fixed head (ids 0-4283) differs from 4M-FACTS §2."""


# ---------------------------------------------------------------------------------------------- loading


def load_tokenizer(source: str | os.PathLike | None = None) -> Tokenizer:
    """Load a text tokenizer and check its fixed head.

    ``source`` is ``None`` (the vendored reference 30k file), a local ``tokenizer.json`` or a folder holding
    one, a fsspec URL (``s3://bucket/key/tokenizer.json``, ``file://...``), or a Hugging Face hub id
    (``org/name``; needs network or a warm cache).
    """
    if source is None:
        tok = Tokenizer.from_file(str(reference_file(REFERENCE_TOKENIZER)))
    else:
        tok = _load_from(str(source))
    check_layout(tok)
    return tok


def _load_from(source: str) -> Tokenizer:
    if "://" in source:
        import fsspec  # only remote/URL sources need it

        url = source if source.endswith(".json") else source.rstrip("/") + "/tokenizer.json"
        with fsspec.open(url, "r", encoding="utf-8") as f:
            return Tokenizer.from_str(f.read())
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if path.suffix == ".json" or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise FileNotFoundError(f"text tokenizer not found: {source!r} is neither a file, a folder with "
                                "tokenizer.json, a URL nor a hub id 'org/name'")
    return Tokenizer.from_pretrained(source)


def check_layout(tok: Tokenizer) -> None:
    """Raise :class:`LayoutError` unless ids 0-4283 are exactly the tokens of 4M-FACTS §2 and the
    normaliser lowercases; the messages name the first offending id."""
    vocab = tok.get_vocab(with_added_tokens=True)
    for i, expected in enumerate(SPECIAL_TOKENS):
        got = tok.id_to_token(i)
        if got != expected:
            raise LayoutError(f"text tokenizer id {i} is {got!r}, expected {expected!r} (4M-FACTS §2)")
    if len(vocab) <= NUM_FIXED_IDS:
        raise LayoutError(f"text tokenizer has {len(vocab)} entries, no room for words after the fixed head")
    probe = tok.encode("Traffic Light").ids
    if probe != [SPECIAL_TOKENS.index("traffic light")]:
        raise LayoutError(f"text tokenizer does not lowercase or split class names as one token: {probe}")


def decode(tok: Tokenizer, ids: Sequence[int]) -> str:
    """Ids to text, keeping value and class tokens (which are special tokens) and dropping only [PAD]."""
    return tok.decode([i for i in ids if i != 0], skip_special_tokens=False)


# --------------------------------------------------------------------------------------------- training


def special_added_tokens() -> list[AddedToken]:
    """The fixed head as ``AddedToken``s, with the exact flags of the reference file.

    Sentinels, value and class tokens are ``single_word`` so ``v0=12`` never matches inside another word.
    Only class names are ``normalized``: they must match after lowercasing ("Traffic Light"), whereas value
    tokens are written by our serialisers in their canonical form.
    """
    out = [AddedToken(t, single_word=False, normalized=False, special=True) for t in CONTROL_TOKENS]
    out += [AddedToken(t, single_word=True, normalized=False, special=True) for t in SENTINEL_TOKENS + VALUE_TOKENS]
    out += [AddedToken(t, single_word=True, normalized=True, special=True) for t in CLASS_TOKENS]
    return out


def new_wordpiece_tokenizer() -> Tokenizer:
    """An untrained tokenizer with the reference pipeline: lowercase BERT normaliser (accents kept, as the
    reference sets ``strip_accents`` to None), BERT pre-tokeniser, WordPiece decoder, no post-processor (EOS
    is appended by the masking code, 4M-FACTS §2)."""
    tok = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##",
                                     max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tok


def train_wordpiece(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, *, min_frequency: int = 2,
                    limit_alphabet: int = 1000, ensure_words: Sequence[str] = STRUCTURE_WORDS,
                    show_progress: bool = False) -> Tokenizer:
    """Learn a WordPiece vocabulary of ``vocab_size`` entries (fixed head included) from ``texts``.

    ``vocab_size`` is an upper bound: a corpus with few distinct words yields fewer entries (with a warning);
    the model's embedding tables keep their registry size (30 000) either way.

    ``texts`` is any iterable of strings (captions), consumed once. ``limit_alphabet`` caps the single
    characters kept (BERT's default of 1000 keeps rare scripts from crowding out words). ``ensure_words``
    (default: the serialisers' structure words) are made whole vocabulary entries even when the corpus is too
    small or too caption-like to learn them ("polygon"), because the serialisers' token budgets count each
    structure word as one token. The result passes :func:`check_layout`.
    """
    if vocab_size < NUM_FIXED_IDS + 100:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for words: the fixed head alone is "
                         f"{NUM_FIXED_IDS} tokens; use at least {NUM_FIXED_IDS + 100}")
    tok = new_wordpiece_tokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=special_added_tokens(), limit_alphabet=limit_alphabet,
                                        continuing_subword_prefix="##", show_progress=show_progress)
    tok.train_from_iterator(_only_strings(texts), trainer=trainer)
    tok = _ensure_whole_words(tok, ensure_words, vocab_size)
    check_layout(tok)
    if tok.get_vocab_size() < vocab_size:  # the trainer stops once every word of the corpus is one token
        warnings.warn(f"WordPiece training stopped at {tok.get_vocab_size()} of vocab_size={vocab_size} entries: "
                      "the corpus has too few distinct words", stacklevel=2)
    return tok


def _ensure_whole_words(tok: Tokenizer, words: Sequence[str], vocab_size: int) -> Tokenizer:
    """Make each missing word a vocabulary entry: appended while the vocabulary is below ``vocab_size``,
    otherwise in place of the last-learnt multi-character entries.

    WordPiece encodes by greedy longest match over the vocabulary (no merge list), so swapping entries is
    safe: the vocabulary size stays exact, the fixed head and the single-character alphabet are untouched,
    and only the rarest learnt pieces (the highest ids) are given up.
    """
    vocab = tok.get_vocab(with_added_tokens=False)
    missing = [w for w in dict.fromkeys(w.lower() for w in words) if w not in vocab]
    if not missing:
        return tok
    n_append = max(0, min(len(missing), vocab_size - tok.get_vocab_size()))
    for word in missing[:n_append]:
        vocab[word] = len(vocab)
    swap = missing[n_append:]
    by_id = sorted(((i, t) for t, i in vocab.items() if i >= NUM_FIXED_IDS), reverse=True)
    victims = [(i, t) for i, t in by_id if len(t.removeprefix("##")) > 1 and t not in words][: len(swap)]
    if len(victims) < len(swap):
        raise ValueError(f"vocabulary too small to hold the words {swap}")
    for (i, old), word in zip(victims, swap):
        del vocab[old]
        vocab[word] = i
    state = json.loads(tok.to_str())
    state["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    return Tokenizer.from_str(json.dumps(state))


def _only_strings(texts: Iterable[str]) -> Iterator[str]:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"training text #{i} is {type(t).__name__}, expected str")
        yield t


# -------------------------------------------------------------------------------------------------- CLI


def _read_lines(paths: Sequence[str]) -> Iterator[str]:
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tokenize_stage.text.wordpiece CORPUS.txt ... --out tokenizer.json [--vocab-size N]``."""
    ap = argparse.ArgumentParser(description="Train the shared 4M WordPiece vocabulary on text files "
                                             "(one caption per line).")
    ap.add_argument("corpus", nargs="+", help="UTF-8 text files, one caption per line")
    ap.add_argument("--out", required=True, help="where to write tokenizer.json")
    ap.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    ap.add_argument("--min-frequency", type=int, default=2)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    tok = train_wordpiece(_read_lines(args.corpus), args.vocab_size, min_frequency=args.min_frequency)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tok.save(args.out)
    print(f"trained {tok.get_vocab_size()} entries in {time.perf_counter() - t0:.1f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
