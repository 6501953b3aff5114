"""Tokenizer training as a cached, lineage-tracked unit of the tokenize stage.

    result = train_tokenizer(store, "demo", TrainTokenizerConfig(tokenizer="semseg_vqvae", profile="tiny"))

reads every committed shard of the tokenizer's pseudo label (``labels/<label>``), holds out the last
``eval_samples`` samples, trains, and commits ``<dataset>/tokenizers/<name>[-<profile>]/`` with:

    data.parquet        training log (step, loss, recon, perplexity, usage)
    data.safetensors    weights     data.config.json   the tokenizer config (models.from_pretrained
                                                        loads the artifact directory directly)
    data.card.md        model card  data.metrics.json  tokenizer bound vs baseline
    data.report.png     held-out originals beside reconstructions
    manifest.json       inputs = the label shards' manifests (lineage), cache key, stats = metrics

A re-run with the same config and inputs is a cache hit; new label shards or a new config retrain.
"""

from __future__ import annotations

import json
import math
import time
from typing import Literal

import pyarrow as pa
import torch
from pydantic import Field

from fourm_core.config import StrictModel
from fourm_core.manifest import ModelRef
from fourm_core.modalities import MODALITIES
from fourm_core.progress import ProgressLog
from fourm_core.store import ArtifactStore
from fourm_core.units import Unit, UnitOutput, UnitResult, run_unit

from .labels import read_label_arrays
from .metrics import PRIMARY, baseline_prediction, beats, reconstruction_metrics
from .models.base import Tokenizer
from .models.hub import build_tokenizer, from_pretrained
from .models.config import Layout
from .normalize import normalize_batch
from .registry import tokenizer_config, tokenizer_specs
from .report import comparison_png, model_card

CODE_VERSION = "tokenize.train/3"  # 2: Memcodes per-head (H, K, d), ml4m layout; 3: ml4m decoders sample as the reference
_BASELINE_KIND = {"semseg": "majority class", "mask": "per-pixel majority mask"}


class TrainTokenizerConfig(StrictModel):
    tokenizer: str = Field(description="registry tokenizer name, e.g. semseg_vqvae")
    profile: Literal["production", "tiny"] = "tiny"
    layout: Layout = Field("native", description="'ml4m' trains the architecture of apple/ml-4m's released "
                                                 "tokenizers (loadable next to theirs)")
    steps: int = Field(300, gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float | None = Field(None, gt=0, description="default: 3e-3 for tiny, 1e-4 for production")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(20, ge=0)
    seed: int = 0
    eval_samples: int = Field(32, gt=0, description="last N samples are held out for the tokenizer bound")
    label: str | None = Field(None, description="pseudo label to train on (default: the registry's first)")
    label_column: str | None = Field(None, description="binary .npy column (default: the label name)")
    sampling_steps: int | None = Field(None, gt=0, description="DDIM steps for diffusion decoders in the report")
    report_samples: int = Field(6, gt=0)
    model_grid: bool = Field(False, description="tiny profile: encode to the modality's full token grid "
                                                "(e.g. 14x14 for tok_rgb@224) instead of the cheap 4x4/8x8 one")
    device: str = Field("cpu", description="torch device for training and evaluation, e.g. 'cuda'")


def tokenizer_artifact(name: str, profile: str) -> str:
    """``tokenizers/<name>`` for production weights, ``tokenizers/<name>-<profile>`` otherwise."""
    return f"tokenizers/{name}" if profile == "production" else f"tokenizers/{name}-{profile}"


def fit(model: Tokenizer, x: torch.Tensor, cfg: TrainTokenizerConfig) -> list[dict[str, float]]:
    """Train ``model`` on ``x`` (N, ...) for ``cfg.steps`` AdamW steps with warm-up + cosine decay.

    Logs step / total, loss, samples/s and ETA on ``fourm.progress`` at least every 30 s
    (``$FOURM_PROGRESS_EVERY_S``; fourm_core.progress): one unit can train for many minutes."""
    gen = torch.Generator().manual_seed(cfg.seed)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr or (3e-3 if cfg.profile == "tiny" else 1e-4)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine decay to 0
        opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    log = []
    model.train()
    batch = min(cfg.batch_size, x.shape[0])
    with ProgressLog(f"train-tokenizers {cfg.tokenizer}", total=cfg.steps, unit="step") as progress:
        for step in range(cfg.steps):
            idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
            loss, logs = model.training_loss(x[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            log.append({"step": step, **logs})
            progress.advance(samples=batch, loss=logs.get("loss"))
    return log


@torch.no_grad()
def evaluate(model: Tokenizer, x_train: torch.Tensor, x_eval: torch.Tensor,
             sampling_steps: int | None = None, batch_size: int = 32) -> tuple[dict, torch.Tensor]:
    """Tokenizer bound on held-out ``x_eval`` and the trivial baseline fitted on ``x_train``.

    Returns (metrics dict, reconstructions)."""
    model.eval()
    target = model.config.target
    kwargs = {"steps": sampling_steps} if model.config.architecture == "diffusion_vq" else {}
    device = next(model.parameters()).device
    batches = [x_eval[i:i + batch_size].to(device) for i in range(0, x_eval.shape[0], batch_size)]
    recon = torch.cat([model.reconstruct(b, **kwargs).cpu() for b in batches])
    tokens = torch.cat([model.encode(b).cpu() for b in batches])
    from .models.quantizer import codebook_perplexity, codebook_usage

    m = reconstruction_metrics(target, x_eval, recon)
    b = reconstruction_metrics(target, x_eval, baseline_prediction(target, x_train, x_eval.shape[0]))
    primary, _ = PRIMARY[target]
    return {"model": m, "baseline": b, "primary": primary, "beats_baseline": beats(target, m, b),
            "baseline_kind": _BASELINE_KIND.get(target, "mean sample"),
            "eval_perplexity": float(codebook_perplexity(tokens, model.vocab_size)),
            "eval_usage": float(codebook_usage(tokens, model.vocab_size)),
            "n_tokens": int(tokens.shape[1])}, recon


def with_model_grid(tcfg):
    """A tiny config whose token grid is its modality's (what the 4M model expects), at 2-pixel patches.

    Production configs already have it; global/pose/mask tokenizers have no grid and are returned as is.
    """
    grid = MODALITIES[tcfg.modality].grid if tcfg.modality in MODALITIES else None
    if not grid or not hasattr(tcfg, "patch_size") or tcfg.target == "mask":
        return tcfg
    side = grid[0]
    if tcfg.target == "features":  # one token per feature-map position
        return tcfg.model_copy(update={"image_size": side, "patch_size": 1})
    return tcfg.model_copy(update={"image_size": 2 * side, "patch_size": 2})


def fit_to_labels(tcfg, arrays: list, source: str):
    """The tokenizer config with its input width taken from the labels it trains on.

    Feature maps (h, w, C) and global embeddings (D,) have the width of the labeler that made them: the
    registry's (e.g. 768 for DINOv2-B) in production, a small one for `tiny` labelers. The token grid and
    vocabulary do not depend on it, so the tokenizer follows the data; mixed widths are a labeling error.
    """
    target = tcfg.target
    if target not in ("features", "global") or not arrays:
        return tcfg
    widths = {int(a.shape[-1]) if target == "features" else int(a.size) for a in arrays}
    if len(widths) != 1:
        raise ValueError(f"{source}: samples have different widths {sorted(widths)}; were shards labelled by "
                         f"different models? Re-run the labeler on every shard with one model")
    width = widths.pop()
    field = ("in_channels", "out_channels") if target == "features" else ("in_dim",)
    if all(getattr(tcfg, f) == width for f in field):
        return tcfg
    return tcfg.model_copy(update={f: width for f in field})


def train_tokenizer(store: ArtifactStore, dataset: str, cfg: TrainTokenizerConfig, *, force: bool = False,
                    shards: list[int] | None = None) -> UnitResult:
    """Train one tokenizer on the committed label shards of ``dataset`` and commit it (see module doc)."""
    spec = tokenizer_specs()[cfg.tokenizer]
    label = cfg.label or spec.labels[0]
    tcfg = tokenizer_config(cfg.tokenizer, cfg.profile, cfg.layout)
    if cfg.model_grid:
        tcfg = with_model_grid(tcfg)
    artifact = tokenizer_artifact(cfg.tokenizer, cfg.profile)
    keys, arrays, manifests = read_label_arrays(store, dataset, label, cfg.label_column, shards)
    tcfg = fit_to_labels(tcfg, arrays, f"{dataset}/labels/{label}")
    if len(arrays) <= cfg.eval_samples:
        raise ValueError(f"{dataset}/labels/{label} has {len(arrays)} samples; need more than eval_samples="
                         f"{cfg.eval_samples} to train {cfg.tokenizer}")
    unit = Unit(stage="tokenize.train", dataset=dataset, artifacts=[artifact], shard=None, code_version=CODE_VERSION,
                config={"train": cfg.model_dump(mode="json"), "tokenizer": tcfg.model_dump(mode="json")},
                inputs=[m.as_input() for m in manifests])

    def compute() -> UnitOutput:
        t0 = time.perf_counter()
        x = normalize_batch(tcfg, arrays)
        x_train, x_eval = x[:-cfg.eval_samples], x[-cfg.eval_samples:]
        torch.manual_seed(cfg.seed)
        model = build_tokenizer(tcfg).to(cfg.device)
        log = fit(model, x_train, cfg)
        train_s = time.perf_counter() - t0
        metrics, recon = evaluate(model, x_train, x_eval, cfg.sampling_steps)
        config_dict = model.config_dict()
        data_info = {"dataset": dataset, "label": f"labels/{label}", "shards": [m.shard for m in manifests],
                     "shard_digests": [m.digest[:12] for m in manifests], "train_samples": int(x_train.shape[0]),
                     "eval_samples": int(x_eval.shape[0]), "eval_keys": f"{keys[-cfg.eval_samples]} .. {keys[-1]}"}
        train_info = {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr or ("3e-3 (tiny default)" if cfg.profile == "tiny" else "1e-4 (default)"), "seed": cfg.seed,
                      "seconds": round(train_s, 2), "final_loss": round(log[-1]["loss"], 5),
                      "parameters": sum(p.numel() for p in model.parameters())}
        table = pa.Table.from_pylist(log)
        files = {
            ".safetensors": model.weights_bytes(),
            ".config.json": json.dumps(config_dict, indent=2).encode(),
            ".metrics.json": json.dumps(metrics, indent=2).encode(),
            ".card.md": model_card(config_dict, train_info, data_info, metrics).encode(),
            ".report.png": comparison_png(tcfg.target, x_eval, recon, cfg.report_samples),
        }
        return UnitOutput({artifact: table}, stats={"metrics": metrics, "train": train_info},
                          extra_files={artifact: files})

    return run_unit(store, unit, compute, force=force)


def trained_ref(store: ArtifactStore, dataset: str, name: str, profile: str = "production") -> ModelRef:
    """The ModelRef (weights digest) of a committed tokenizer, read from its manifest: what cache keys need,
    without loading any weights."""
    artifact = tokenizer_artifact(name, profile)
    manifest = store.read_manifest(dataset, artifact, None)
    if manifest is None:
        raise FileNotFoundError(f"no committed tokenizer {dataset}/{artifact}; train it first "
                                f"(python -m tokenize_stage train --tokenizer {name} --profile {profile})")
    weights = next(f for f in manifest.files if f.name.endswith(".safetensors"))
    return ModelRef(id=f"{name}:{profile}", source=store.uri(store.artifact_dir(dataset, artifact)),
                    digest=weights.digest)


def load_trained(store: ArtifactStore, dataset: str, name: str, profile: str = "production") -> tuple[Tokenizer, ModelRef]:
    """A committed tokenizer and the ModelRef (weights digest) that pre-tokenization keys its cache on."""
    ref = trained_ref(store, dataset, name, profile)
    return from_pretrained(ref.source, **store.storage_options), ref
