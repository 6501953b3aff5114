"""Committed tokenizers as the pre-tokenization units use them (stage.py, fused.py, sequences.py).

A unit's cache key holds its tokenizer's ModelRef, read from the tokenizer's manifest (no weights loaded);
``compute`` then loads the tokenizer once per process per weights digest, so a retrained tokenizer reloads.
"""

from __future__ import annotations

from fourm_core.manifest import ModelRef
from fourm_core.store import ArtifactStore

from .models.base import Tokenizer
from .models.hub import from_pretrained
from .train_tokenizer import tokenizer_artifact, trained_ref

_LOADED: dict[tuple[str, str], Tokenizer] = {}


def tokenizer_ref(store: ArtifactStore, ns: str, name: str, profile: str) -> ModelRef:
    """The committed tokenizer's ModelRef for a unit's cache key (its manifest only, no weights loaded)."""
    try:
        return trained_ref(store, ns, name, profile)
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer {ns}/{tokenizer_artifact(name, profile)} is not committed; train it "
                                f"with python -m tokenize_stage train --tokenizer {name} --profile {profile}") from None


def load_committed(store: ArtifactStore, ref: ModelRef) -> Tokenizer:
    """The tokenizer ``ref`` names, loaded once per process per weights digest (a retrain reloads)."""
    key = (ref.source, ref.digest)
    if key not in _LOADED:
        if len(_LOADED) >= 16:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = from_pretrained(ref.source, **store.storage_options)
    return _LOADED[key]
