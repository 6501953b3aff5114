"""A chained any-to-any example (4M-FACTS §7): RGB -> semantic map -> RGB, and RGB -> caption -> RGB.

For the first ``cfg.grid_samples`` evaluated samples (crop 0 of the first shard of ``cfg.dataset``):

* the model draws semantic-map tokens from the RGB tokens (MaskGIT), then RGB tokens from that generated map
  **alone** (the original RGB is not an input of the second step); images decoded with the RGB tokenizer;
* it writes a caption from the RGB tokens (greedy, autoregressive), then draws RGB tokens from that caption alone.

Committed as its own cached unit, ``<dataset>/evaluations/<run>-chain/step-NNNNNNNN`` (a PNG, a Markdown table
of the captions, the generated token ids), beside the evaluation of the same checkpoint; its cache key holds the
checkpoint, tokenizer and token-shard digests and the eval config, as the evaluation's does.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from fourm_core.manifest import Manifest, ModelRef
from fourm_core.modalities import get_modality
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, UnitResult, run_unit

from .config import EvalConfig

STAGE = "evaluate.chain"
CODE_VERSION = "evaluate.chain/3"  # 2: RGB -> semseg -> RGB as the main chain; 3: generation of evaluate/5
RGB, CAPTION, SEMSEG = "tok_rgb@224", "caption", "tok_semseg@224"
TOKENIZERS = {RGB: "rgb_diffusion", SEMSEG: "semseg_vqvae"}


def chain_artifact(run: str, step: int) -> str:
    return f"evaluations/{run}-chain/step-{step:08d}"


@dataclass
class ChainPlan:
    """What the example reads (all of it is in the unit's cache key)."""

    checkpoint: Manifest
    tokenizers: dict[str, Manifest]  # modality -> committed tokenizer
    token_parts: list[Manifest]  # token shards read
    keys: list[str]  # the samples shown
    tokens: dict[str, torch.Tensor]  # modality -> (N, L) crop-0 token rows of ``keys``
    captions: dict[str, str]  # key -> source caption
    text_tokenizer: ModelRef  # the WordPiece tokenizer of the caption token shards


def plan_chain(store: ArtifactStore, cfg: EvalConfig) -> ChainPlan:
    """Read the checkpoint, tokenizers and the first shard's tokens; errors name what is missing."""
    from tokenize_stage.train_tokenizer import tokenizer_artifact

    from .checkpoints import find_checkpoint
    from .read import read_tokens, token_shards
    from .sequences import token_shard_tokenizer

    ckpt = find_checkpoint(store, cfg)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint {cfg.checkpoint.namespace}/checkpoints/{cfg.checkpoint.run} under "
                                f"{store.root_uri}: run the pretrain flow first")
    domains = json.loads(store.read_bytes(store.data_path(ckpt.dataset, ckpt.artifact, None, ".config.json")))
    missing = [m for m in (RGB, CAPTION, SEMSEG) if m not in domains["domains_in"] or m not in domains["domains_out"]]
    if missing:
        raise ValueError(f"checkpoint {ckpt.uri} does not take and predict {missing}: no chained example")
    ns = cfg.tokenizer_dataset or cfg.dataset
    tokenizers = {}
    for m, name in TOKENIZERS.items():
        tm = store.read_manifest(ns, tokenizer_artifact(name, cfg.tokenizer_profile), None)
        if tm is None:
            raise FileNotFoundError(f"tokenizer {name} ({cfg.tokenizer_profile}) is not committed under {ns}")
        tokenizers[m] = tm
    shards = token_shards(store, cfg.dataset, RGB)
    if not shards:
        raise FileNotFoundError(f"{cfg.dataset} has no {get_modality(RGB).token_artifact} shards")
    parts: list[Manifest] = []
    rows = {m: read_tokens(store, cfg.dataset, m, shards[:1], parts) for m in (RGB, SEMSEG, CAPTION)}
    keys = sorted(set(rows[RGB]) & set(rows[SEMSEG]) & set(rows[CAPTION]))[: cfg.grid_samples]
    if not keys:
        raise ValueError(f"shard {shards[0]} of {cfg.dataset} has no sample with {RGB}, {SEMSEG} and {CAPTION} tokens")
    text = store.read_table(cfg.dataset, get_modality(CAPTION).token_artifact, shards[0], columns=["sample_key", "text"])
    captions = dict(zip(text.column("sample_key").to_pylist(), text.column("text").to_pylist()))
    tokens = {m: torch.from_numpy(np.stack([rows[m][k] for k in keys])) for m in (RGB, SEMSEG)}
    return ChainPlan(ckpt, tokenizers, parts, keys, tokens, {k: captions.get(k) or "" for k in keys},
                     token_shard_tokenizer(store, cfg.dataset, CAPTION, shards[:1]))


def chain_unit(cfg: EvalConfig, plan: ChainPlan) -> Unit:
    ck = plan.checkpoint
    step = int(ck.artifact.rsplit("-", 1)[1])
    inputs = [ck.as_input()] + [m.as_input() for m in [*plan.tokenizers.values(), *plan.token_parts]]
    return Unit(stage=STAGE, dataset=cfg.namespace or cfg.dataset, artifacts=[chain_artifact(cfg.checkpoint.run, step)],
                shard=None, code_version=CODE_VERSION, config=cfg.key_config(), inputs=inputs,
                model=ModelRef(id=f"4m:{cfg.checkpoint.run}@{ck.artifact.rsplit('/', 1)[1]}", source=ck.uri,
                               digest=ck.digest))


def run_chain(store: ArtifactStore, cfg: EvalConfig, plan: ChainPlan) -> tuple[dict[str, list], str, bytes]:
    """Generate the chain: (rows of the token table, Markdown, PNG)."""
    from tokenize_stage.models.hub import from_pretrained

    from .checkpoints import load_checkpoint
    from .score import decoded_to_eval
    from .generate import TargetStep, generate
    from .sequences import decode_text, load_text_tokenizer

    torch.manual_seed(cfg.seed)
    model = load_checkpoint(store, plan.checkpoint, cfg.device)
    g = cfg.generation
    rgb_step = TargetStep(RGB, steps=g.steps, token_schedule=g.token_schedule, temperature=g.temperature,
                          top_k=g.top_k, top_p=g.top_p)
    semseg_step = TargetStep(SEMSEG, steps=g.steps, token_schedule=g.token_schedule, temperature=g.temperature,
                             top_k=g.top_k, top_p=g.top_p)
    # step 1: RGB -> X; step 2: the generated X alone -> RGB (the RGB tokens are not an input of step 2)
    semseg_ids = generate(model, {RGB: plan.tokens[RGB]}, [semseg_step], seed=cfg.seed)[SEMSEG].cpu()
    rgb_from_semseg = generate(model, {SEMSEG: semseg_ids}, [rgb_step], seed=cfg.seed)[RGB].cpu()
    caption_ids = generate(model, {RGB: plan.tokens[RGB]}, [TargetStep(CAPTION, temperature=0.0)],
                           seed=cfg.seed)[CAPTION].cpu()
    rgb_from_caption = generate(model, {CAPTION: caption_ids}, [rgb_step], seed=cfg.seed)[RGB].cpu()
    text_tok = load_text_tokenizer(plan.text_tokenizer)
    written = [decode_text(text_tok, row) for row in caption_ids]

    toks = {m: from_pretrained(store.uri(store.artifact_dir(tm.dataset, tm.artifact)),
                               **store.storage_options).to(cfg.device).eval()
            for m, tm in plan.tokenizers.items()}
    rgb_tok = toks[RGB]
    vocab = rgb_tok.vocab_size
    kwargs = {"steps": cfg.decode_steps, "seed": cfg.seed} if rgb_tok.config.architecture == "diffusion_vq" else {}
    with torch.no_grad():
        images = {name: decoded_to_eval("rgb", rgb_tok.decode(t.clamp(max=vocab - 1).to(cfg.device), **kwargs).cpu())
                  for name, t in (("input", plan.tokens[RGB]), ("from caption", rgb_from_caption),
                                  ("from semseg", rgb_from_semseg))}
        semseg = {name: toks[SEMSEG].decode(t.to(cfg.device)).cpu().long()
                  for name, t in (("ground truth", plan.tokens[SEMSEG]), ("generated", semseg_ids))}
    rows = {"sample_key": plan.keys, "source_caption": [plan.captions[k] for k in plan.keys],
            "generated_caption": written, "semseg_from_rgb": [r.tolist() for r in semseg_ids],
            "rgb_from_semseg": [r.tolist() for r in rgb_from_semseg],
            "rgb_from_caption": [r.tolist() for r in rgb_from_caption]}
    md = chain_markdown(cfg, plan, written)
    return rows, md, chain_grid(plan, written, images, semseg)


def chain_markdown(cfg: EvalConfig, plan: ChainPlan, written: list[str]) -> str:
    from .report import table_cell

    lines = [f"# Chained generation: {plan.checkpoint.dataset}/{plan.checkpoint.artifact} on {cfg.dataset}", "",
             "RGB tokens -> semantic-map tokens -> RGB tokens from that generated map alone, and RGB tokens -> caption "
             "(greedy, autoregressive) -> RGB tokens from that caption alone (MaskGIT, "
             f"{cfg.generation.steps} steps, temperature {cfg.generation.temperature}). Images decoded with the "
             "committed tokenizers; see data.chain.png.", "",
             "| sample | source caption | caption written from the RGB |", "|---|---|---|",
             *[f"| `{k}` | {table_cell(plan.captions[k])} | {table_cell(w)} |" for k, w in zip(plan.keys, written)], ""]
    return "\n".join(lines)


def chain_grid(plan: ChainPlan, written: list[str], images: dict[str, torch.Tensor],
               semseg: dict[str, torch.Tensor]) -> bytes:
    """PNG, one row per sample: RGB (tokenizer), semantic map generated from it, RGB from that map, ground-truth
    map; caption written from the RGB, RGB from that caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import wrap_text, to_image

    titles = ["input RGB (tokens)", "1. semseg from RGB", "2. RGB from that semseg", "semseg: ground truth",
              "1. caption from RGB", "2. RGB from that caption"]
    n = len(plan.keys)
    fig, axes = plt.subplots(n, len(titles), figsize=(1.7 * len(titles), 1.8 * n + 0.3), squeeze=False)
    for i in range(n):
        text = f"{wrap_text(written[i], lines=5)}\n\n(source: {wrap_text(plan.captions[plan.keys[i]], lines=4)})"
        cells = [("rgb", images["input"][i]), ("semseg", semseg["generated"][i]), ("rgb", images["from semseg"][i]),
                 ("semseg", semseg["ground truth"][i]), ("text", text), ("rgb", images["from caption"][i])]
        for j, (kind, x) in enumerate(cells):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "text":
                ax.text(0.02, 0.5, x, fontsize=5, va="center", ha="left", transform=ax.transAxes)
            else:
                ax.imshow(to_image(kind, x), interpolation="nearest")
            if i == 0:
                ax.set_title(titles[j], fontsize=6)
            if j == 0:
                ax.set_ylabel(plan.keys[i][-18:], fontsize=5)
    fig.tight_layout(pad=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def chain(store: ArtifactStore, cfg: EvalConfig, *, force: bool = False) -> UnitResult:
    """Run (or find cached) the chained example of ``cfg.checkpoint`` on ``cfg.dataset``; see the module doc."""
    plan = plan_chain(store, cfg)
    unit = chain_unit(cfg, plan)
    artifact = unit.artifacts[0]

    def compute() -> UnitOutput:
        rows, md, png = run_chain(store, cfg, plan)
        return UnitOutput({artifact: pa.table(rows)}, stats={"samples": len(plan.keys)},
                          extra_files={artifact: {".chain.md": md.encode(), ".chain.png": png}})

    return run_unit(store, unit, compute, force=force)
