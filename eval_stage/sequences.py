"""What the evaluation's sequence tasks (boxes from ``det``, captioning from ``caption``) share: the text
tokenizer their token shards were made with, and greedy autoregressive generation for chosen samples."""

from __future__ import annotations

import torch

from fourm_core.manifest import ModelRef
from fourm_core.modalities import get_modality
from fourm_core.store import ArtifactStore

from .config import EvalConfig
from .plan import Plan


def sequence_target_tokenizer(store: ArtifactStore, cfg: EvalConfig, plan: Plan, modality: str) -> ModelRef | None:
    """The text tokenizer to score ``modality`` as a target with, or None (with a note in ``plan.notes``) when
    it is not a target, is the condition, is not an output of the checkpoint or has no usable token shards."""
    if modality not in cfg.targets:
        return None
    if modality in plan.condition:
        problem = "is the condition"
    elif modality not in plan.domains_out:
        problem = f"not an output of the checkpoint (outputs: {plan.domains_out})"
    elif modality not in plan.tokens:
        problem = f"no {modality} token shards of {cfg.dataset} in shards {plan.shards}"
    else:
        ref = token_shard_tokenizer(store, cfg.dataset, modality, plan.shards)
        if ref is not None:
            return ref
        problem = "its token shards name no text tokenizer"
    plan.notes.append(f"target {modality}: {problem}; skipped")
    return None


def token_shard_tokenizer(store: ArtifactStore, dataset: str, modality: str, shards: list[int]) -> ModelRef | None:
    """The text tokenizer (ModelRef) recorded by the first committed token shard of ``modality``, if any."""
    artifact = get_modality(modality).token_artifact
    for s in shards:
        m = store.read_manifest(dataset, artifact, s)
        if m is not None:
            return m.ingredients.model
    return None


def load_text_tokenizer(ref: ModelRef):
    """The ``tokenizers.Tokenizer`` a token shard names (the vendored reference file or its source).

    Raises ValueError if the file there is no longer the one the shards were made with (another vocabulary
    would decode the ids into other words)."""
    from tokenize_stage.captions import text_tokenizer

    tokenizer, loaded = text_tokenizer(None if ref.source == "reference" else ref.source)
    if ref.digest and loaded.digest != ref.digest:
        raise ValueError(f"text tokenizer {ref.source!r} has sha256 {loaded.digest[:16]}, but the token shards were "
                         f"made with {ref.digest[:16]}; restore that tokenizer there, or re-run the tokenize stage "
                         f"with this one")
    return tokenizer


def decode_text(tokenizer, ids: torch.Tensor) -> str:
    """One id row (L,) -> text; class and value tokens are kept, padding dropped."""
    from tokenize_stage.text.wordpiece import decode

    return decode(tokenizer, [int(i) for i in ids])


def generate_sequences(model, cfg: EvalConfig, all_keys: list[str], keys: list[str], modality: str,
                       inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Greedy autoregressive ``modality`` rows (L,) for ``keys`` from the condition ``inputs`` (rows in
    ``all_keys`` order), ``cfg.batch_size`` samples at a time with the KV cache."""
    from .generate import TargetStep, generate

    step = TargetStep(modality, temperature=0.0)
    index = {k: i for i, k in enumerate(all_keys)}
    rows_idx = torch.tensor([index[k] for k in keys], dtype=torch.long)
    out: list[torch.Tensor] = []
    for i in range(0, len(keys), cfg.batch_size):
        sel = rows_idx[i:i + cfg.batch_size]
        chunk = {c: v[sel] for c, v in inputs.items()}
        out.extend(generate(model, chunk, [step], seed=cfg.seed + i)[modality].cpu())
    return out
