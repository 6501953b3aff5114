"""The one public sampling call: inputs + a list of target steps -> completed sample (4M-FACTS §7).

Steps run in order and chain: each finished target is added to the inputs of the steps after it
(image tokens as a full grid, sequences with their spans filled in). All samples of the batch run
together; per-sample differences (known positions, span layout, finishing time) are masks, not loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fourm_core.modalities import ModalityKind, get_modality

from .adapter import ModelAdapter
from .autoregressive import LogitsProcessor, decode_sequence, merge_spans
from .guidance import Condition
from .image_decoding import decode_image_tokens
from .inputs import N_SENTINELS, SENTINEL0, batch_size_of, build_slots, closing_sentinel


@dataclass
class TargetStep:
    """One target modality to generate and how.

    decoding: "maskgit" | "roar" for image/global tokens (default maskgit), "ar" for sequences.
    steps, token_schedule ("cosine" | "linear"): parallel decoding only.
    temperature → temperature_end with temperature_schedule ("constant" | "linear" | "cosine"); 0 = greedy.
    top_k, top_p: logit filtering before sampling.
    guidance_scale: classifier-free guidance with all current inputs as one condition,
        logits = uncond + s·(cond − uncond) (s = 1: plain conditional; s = 0: unconditional);
        None runs the single conditional pass.
    conditions: weighted guidance over several conditions (overrides guidance_scale):
        logits = uncond + Σ_c w_c (cond_c − uncond).
    max_new_tokens, kv_cache: sequences only.
    process: sequences only; rewrites each step's logits before sampling (e.g. :func:`.det_grammar.det_grammar`).
    """

    modality: str
    decoding: str | None = None
    steps: int = 8
    token_schedule: str = "cosine"
    temperature: float = 1.0
    temperature_end: float | None = None
    temperature_schedule: str = "constant"
    top_k: int | None = None
    top_p: float | None = None
    guidance_scale: float | None = None
    conditions: list[Condition] = field(default_factory=list)
    max_new_tokens: int | None = None
    kv_cache: bool = True
    process: LogitsProcessor | None = None

    def guidance(self, inputs: list[str]) -> list[Condition] | None:
        if self.conditions:
            return list(self.conditions)
        if self.guidance_scale is None:
            return None
        return [Condition(tuple(m for m in inputs if m != self.modality), self.guidance_scale)]


@torch.no_grad()
def generate(model: nn.Module, inputs: dict[str, torch.Tensor], steps: list[TargetStep], seed: int = 0
             ) -> dict[str, torch.Tensor]:
    """Generate each step's target in order, conditioning on ``inputs`` and every earlier target.

    inputs: modality -> tensor in the formats of :mod:`eval_stage.generate.inputs` (image tokens with
    -1 at unknown positions, sequences with sentinels at masked spans, pixels, T5 embeddings).
    Returns the inputs with every target filled in: image/global tokens (B, L) all known, sequences
    (B, L') completed and right-padded with [PAD]. Deterministic for a given seed.
    """
    adapter = ModelAdapter(model)
    for name in inputs:
        if name not in adapter.domains_in:
            raise ValueError(f"{name} is not an input modality of this model ({adapter.domains_in})")
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    B = batch_size_of(inputs)
    state = dict(inputs)
    try:
        for step in steps:
            state[step.modality] = run_step(adapter, state, step, B, generator)
    finally:
        model.train(was_training)
    return state


def run_step(adapter: ModelAdapter, state: dict[str, torch.Tensor], step: TargetStep, batch_size: int,
             generator: torch.Generator) -> torch.Tensor:
    """One target step on the current state -> the completed tokens of ``step.modality``."""
    mod = get_modality(step.modality)
    if step.modality not in adapter.domains_out:
        raise ValueError(f"{step.modality} is not a target modality of this model ({adapter.domains_out})")
    conditions = step.guidance([m for m in state if m in adapter.domains_in])
    if mod.kind == ModalityKind.SEQUENCE:
        if step.decoding not in (None, "ar"):
            raise ValueError(f"sequence targets are decoded autoregressively, not with {step.decoding!r}")
        given = state.get(step.modality)
        seq_state = dict(state)
        if given is None:  # write the whole sequence: the encoder sees "[S_1]"
            seq_state[step.modality] = torch.full((batch_size, 1), SENTINEL0 + 1, dtype=torch.long)
        spans = ((seq_state[step.modality] >= SENTINEL0) & (seq_state[step.modality] < SENTINEL0 + N_SENTINELS)).sum(1)
        slots = build_slots(adapter, seq_state, batch_size)
        result = decode_sequence(adapter, slots, step.modality, generator, step.max_new_tokens, step.kv_cache,
                                 step.temperature, step.temperature_end, step.temperature_schedule, step.top_k,
                                 step.top_p, conditions, end=closing_sentinel(spans.clamp(min=1)),
                                 process=step.process)
        return merge_spans(given, result.target, mod.max_tokens)
    tokens, _ = decode_image_tokens(adapter, state, step.modality, batch_size, generator, step.decoding or "maskgit",
                                    step.steps, step.token_schedule, step.temperature, step.temperature_end,
                                    step.temperature_schedule, step.top_k, step.top_p, conditions)
    return tokens
