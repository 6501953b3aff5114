"""The 4M trainer: single process, DDP or FSDP2 under torchrun; checkpoints with lineage in the store.

Everything that decides the next step is in the checkpoint (weights, AdamW state, step and token
counters, RNG states, data position), so a resumed CPU run continues bit for bit.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fourm_core.config import normalise
from fourm_core.manifest import Ingredients, Manifest, Timings, flow_run_id, git_commit, hostname, now
from fourm_core.modalities import get_modality
from fourm_core.store import ArtifactStore

from .batch import MaskedBatch
from .config import TrainConfig
from .data import DatasetSpec, ResumableLoader, TokenShardStream, token_input_refs
from .flops import PEAK_FLOPS, train_step_flops
from .masking import Masker
from .mixture import load_mixture
from .model import FourM, preset
from .model.hub import load_state, reference_state, safetensors_metadata

STAGE = "train"
# bump when a change alters what a given config trains (2: learned global-token positions; 3: the reference's
# sentinels, [EOS] and masking budgets; 4: masking in numpy, same distributions, another random stream; 5: the demo
# masking preset's caption-from-RGB component; since then a mixture preset's content is in the cache key, so
# editing a preset retrains by itself; 6: fill budgets ask a sequence target only for the spans its cut input shows)
CODE_VERSION = "6"


# ------------------------------------------------------------------------------------ building blocks


def init_checkpoint(store: ArtifactStore, cfg: TrainConfig) -> Manifest | None:
    """The manifest of the checkpoint ``cfg.init_from`` names (None without init_from); missing: an error."""
    spec = cfg.init_from
    if spec is None:
        return None
    prefix = f"checkpoints/{spec.run}/step-"
    steps = sorted(int(a[len(prefix):]) for a in store.artifacts(spec.namespace) if a.startswith(prefix))
    step = spec.step if spec.step is not None else (steps[-1] if steps else None)
    m = None if step is None else store.read_manifest(spec.namespace, f"{prefix}{step:08d}", None)
    if m is None:
        raise FileNotFoundError(f"init_from: no committed checkpoint {spec.namespace}/{prefix}"
                                f"{'*' if step is None else f'{step:08d}'} in {store.root_uri} (committed steps: "
                                f"{steps or 'none'}); train it first, or import a released one with "
                                f"`python -m train_stage import-pretrained SOURCE --run {spec.run}`")
    return m


def build_model(cfg: TrainConfig, store: ArtifactStore | None = None) -> FourM:
    """A fresh model of ``cfg.model``, or with ``init_from`` the checkpoint's model (strict load)."""
    torch.manual_seed(cfg.seed)
    init = init_checkpoint(store, cfg) if store is not None else None
    if init is None:
        return FourM(preset(cfg.model.size, cfg.model.modalities, **cfg.model.overrides))
    from .model.hub import model_from_bytes

    config = store.read_bytes(store.data_path(init.dataset, init.artifact, None, ".config.json"))
    weights = store.read_bytes(store.data_path(init.dataset, init.artifact, None, ".safetensors"))
    return model_from_bytes(config, weights, source=init.uri)


def run_inputs(store: ArtifactStore, cfg: TrainConfig) -> list:
    """A run's lineage inputs: every token shard it reads, and the checkpoint it starts from."""
    init = init_checkpoint(store, cfg)
    return token_input_refs(store, dataset_specs(cfg)) + ([init.as_input()] if init else [])


def build_masker(cfg: TrainConfig, model_mods: list[str]) -> Masker:
    def mix(name: str):
        m = load_mixture(name)
        upd: dict[str, Any] = {"modalities": model_mods}
        if cfg.input_budget:
            upd["input_budget"] = cfg.input_budget
        if cfg.target_budget:
            upd["target_budget"] = cfg.target_budget
        return m.model_copy(update=upd)

    return Masker([mix(d.mixture or cfg.mixture) for d in cfg.datasets], model_mods)


def model_modalities(model: FourM) -> list[str]:
    c = model.config
    return list(dict.fromkeys(c.domains_in + c.domains_out))


def dataset_specs(cfg: TrainConfig) -> list[DatasetSpec]:
    """The datasets the run reads, each with the modalities it provides: the dataset's own list, or every
    modality of the model, raw inputs included (RGB pixels, T5 embeddings) when the model takes them."""
    mc = preset(cfg.model.size, cfg.model.modalities, **cfg.model.overrides)
    mods = list(dict.fromkeys(mc.domains_in + mc.domains_out))
    return [DatasetSpec(d.name, d.weight, tuple(d.modalities or mods)) for d in cfg.datasets]


def build_stream(cfg: TrainConfig, store: ArtifactStore, masker: Masker, rank: int = 0, world: int = 1) -> TokenShardStream:
    return TokenShardStream(store.root_uri, dataset_specs(cfg), masker, cfg.batch_size, seed=cfg.seed, rank=rank,
                            world_size=world, storage_options=store.storage_options)


def train_ingredients(cfg: TrainConfig, inputs: list) -> Ingredients:
    """A checkpoint's cache-key ingredients: the config, the masking mixtures it names (their content), the token
    shards read, the code version."""
    config = json.loads(normalise(cfg))
    # A mixture is named by preset or path; keying the name alone would serve a checkpoint trained on a preset's
    # old content after the preset was edited.
    names = sorted({d.mixture or cfg.mixture for d in cfg.datasets})
    config["mixture_content"] = {n: load_mixture(n).model_dump(mode="json") for n in names}
    return Ingredients(stage=STAGE, code_version=CODE_VERSION, config=config, inputs=inputs, git_commit=git_commit())


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on norms, biases, embeddings (token, modality, position) and the mask token."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = (p.ndim < 2 or name.endswith(".bias") or "norm" in name or "token_emb" in name
                or name.endswith(("mod_emb", "pos_emb", "mask_token")))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(tokens: float, peak: float, warmup: float, total: float, min_lr: float) -> float:
    """§6 schedule in tokens: linear warm-up to ``peak`` then cosine decay to ``min_lr`` at ``total``."""
    if warmup > 0 and tokens < warmup:
        return peak * tokens / warmup
    progress = min(1.0, (tokens - warmup) / max(1.0, total - warmup))
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------ distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """torchrun sets WORLD_SIZE/RANK; NCCL on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank = int(os.environ["RANK"])
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(rank, world, device)


def wrap_model(model: FourM, cfg: TrainConfig, d: Dist) -> torch.nn.Module:
    if d.world == 1:
        return model
    if cfg.distributed == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in list(model.encoder) + list(model.decoder):
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    # Modalities absent from a batch leave their embeddings without gradient
    return DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None, find_unused_parameters=True)


# ------------------------------------------------------------------------------------ checkpoints


def checkpoint_artifact(cfg: TrainConfig, step: int) -> str:
    return f"checkpoints/{cfg.run_name}/step-{step:08d}"


def list_checkpoints(store: ArtifactStore, cfg: TrainConfig) -> list[int]:
    prefix = f"checkpoints/{cfg.run_name}/step-"
    return sorted(int(a[len(prefix):]) for a in store.artifacts(cfg.namespace) if a.startswith(prefix))


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


# Test-only fault injection: with FOURM_TRAIN_TEST_PAUSE="step:N" every rank stops in the middle of step N
# (gradients computed, weights not yet updated); with "checkpoint:N" rank 0 stops while committing the
# step-N checkpoint (its files written, its manifest not). The process writes "<dir>/paused-<rank>" and
# sleeps, so a test can SIGKILL the job exactly there (tests/train/test_kill_resume.py).
PAUSE_ENV, PAUSE_DIR_ENV = "FOURM_TRAIN_TEST_PAUSE", "FOURM_TRAIN_TEST_PAUSE_DIR"


def _test_pause(point: str, step: int, rank: int) -> None:
    if os.environ.get(PAUSE_ENV) != f"{point}:{step}":
        return
    marker = Path(os.environ.get(PAUSE_DIR_ENV, ".")) / f"paused-{rank}"
    marker.write_text(str(os.getpid()))
    while True:  # until killed
        time.sleep(60)


def _full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unwrapped, unsharded weights (FSDP2 DTensors are gathered; ``reference_state`` copies them to the CPU)."""
    inner = model.module if hasattr(model, "module") else model
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in inner.state_dict().items()}


# ------------------------------------------------------------------------------------ trainer


class Trainer:
    """Runs ``cfg.steps`` optimizer steps on token shards from ``store``; see the module docstring."""

    def __init__(self, cfg: TrainConfig, store: ArtifactStore, log_dir: str | Path | None = None,
                 dist_info: Dist | None = None):
        self.cfg, self.store = cfg, store
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.d = dist_info or init_distributed()
        self.model = build_model(cfg, store).to(self.d.device)
        if cfg.lora:  # only the adapters train; the base stays the starting checkpoint's
            from .lora import add_lora

            add_lora(self.model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
        if cfg.compile:  # before wrapping: FSDP2 shards the compiled blocks, names unchanged
            self.model.compile_blocks()
        self.masker = build_masker(cfg, model_modalities(self.model))
        self.stream = build_stream(cfg, store, self.masker, self.d.rank, self.d.world)
        self.loader = ResumableLoader(self.stream, cfg.num_workers, pin_memory=self.d.device.type == "cuda")
        self.wrapped = wrap_model(self.model, cfg, self.d)
        global_batch = cfg.batch_size * cfg.grad_accum * self.d.world
        self.peak_lr = cfg.blr * global_batch / 256
        self.opt = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=self.peak_lr, betas=cfg.betas,
                                     fused=self.d.device.type == "cuda")
        self.step = 0
        self.tokens = 0.0
        self.skipped = 0
        self.history: list[dict[str, Any]] = []
        self._fit_started = None
        self.log_dir = Path(log_dir) if log_dir else None
        self._writer = None
        self.autocast = self.d.device.type == "cuda" and cfg.dtype == "bf16"
        self.peak_flops = cfg.peak_flops or (PEAK_FLOPS["cpu-fp32-core"] * torch.get_num_threads()
                                             if self.d.device.type == "cpu" else PEAK_FLOPS["cuda-bf16-h100"])

    # -------------------------------------------------------------------------------- state

    def trainer_state(self) -> dict[str, Any]:
        """Everything but the weights that decides the next step (collective under FSDP2: every rank calls it)."""
        return {"optimizer": self._optimizer_state(), "step": self.step, "tokens": self.tokens,
                "skipped": self.skipped, "rng": _rng_state(), "data": self.loader.state_dict()}

    def _sharded(self) -> bool:
        return self.d.world > 1 and self.cfg.distributed == "fsdp"

    def _optimizer_state(self) -> dict[str, Any]:
        if not self._sharded():  # single process and DDP: every rank holds the whole (identical) state
            return self.opt.state_dict()
        # FSDP2: each rank holds its shard of the AdamW moments; gather the full state (keyed by parameter
        # name) so that one file restores any world size
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.wrapped, self.opt,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _load_weights_and_optimizer(self, weights: bytes | None, optimizer: dict[str, Any]) -> None:
        """``weights``: the checkpoint's safetensors bytes (None: LoRA adapters, already loaded)."""
        if not self._sharded():
            if weights is not None:
                load_state(self.model, load_safetensors(weights), safetensors_metadata(weights))
            self.opt.load_state_dict(optimizer)
            return
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        # rank 0's full tensors are broadcast and each rank slices its shard locally (without the broadcast,
        # torch scatters uneven shards from rank 0, which aborted gloo here)
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        if weights is not None:
            set_model_state_dict(self.wrapped, load_safetensors(weights), options=opts)
        # parameters that never had a gradient (a modality absent so far) have no AdamW state, as uninterrupted
        set_optimizer_state_dict(self.wrapped, self.opt, optimizer,
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False))

    def load(self, step: int | None = None) -> int:
        """Restore the latest (or given) checkpoint of this run; returns its step (0 if none)."""
        steps = list_checkpoints(self.store, self.cfg)
        if not steps:
            return 0
        step = steps[-1] if step is None else step
        art = checkpoint_artifact(self.cfg, step)
        if self.store.read_manifest(self.cfg.namespace, art, None) is None:
            # files without a manifest are a checkpoint whose write was cut short: never resume from one
            raise FileNotFoundError(f"checkpoint {self.cfg.namespace}/{art} is not committed (no manifest)")
        weights = None
        if self.cfg.lora:  # the frozen base is the starting checkpoint's (already built): load the adapters
            from .lora import load_lora

            load_lora(self.model, load_safetensors(self.store.read_bytes(
                self.store.data_path(self.cfg.namespace, art, None, ".lora.safetensors"))))
        else:
            weights = self.store.read_bytes(self.store.data_path(self.cfg.namespace, art, None, ".safetensors"))
        raw = self.store.read_bytes(self.store.data_path(self.cfg.namespace, art, None, ".trainer.pt"))
        state = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
        self._load_weights_and_optimizer(weights, state["optimizer"])
        # the loss history so far: the final checkpoint of a resumed run carries the whole run's history
        self.history = json.loads(self.store.read_bytes(
            self.store.data_path(self.cfg.namespace, art, None, ".history.json")))
        self.step, self.tokens, self.skipped = int(state["step"]), float(state["tokens"]), int(state["skipped"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        # the data position is per rank: rank r resumes at the same local batch index
        self.loader.load_state_dict(state["data"])
        return self.step

    def save(self) -> Manifest | None:
        """Commit weights (safetensors, §9 names), config.json and trainer state with lineage.

        A LoRA run commits the merged plain weights (they load strictly like any checkpoint) and its adapters
        in ``.lora.safetensors`` (what a resume loads)."""
        full = _full_state_dict(self.wrapped)
        extra = {}
        if self.cfg.lora:
            from .lora import lora_state, merged_state

            extra[".lora.safetensors"] = save_safetensors(reference_state(lora_state(full), {})[0])
            full = merged_state(full, self.cfg.lora.rank, self.cfg.lora.alpha)
        weights, metadata = reference_state(full, self.model.tied_parameter_names())
        state = self.trainer_state()
        if not self.d.main:
            return None
        buf = io.BytesIO()
        torch.save(state, buf)
        files = {".safetensors": save_safetensors(weights, metadata=metadata),
                 ".config.json": self.model.config.to_json().encode(),
                 ".trainer.pt": buf.getvalue(),
                 ".history.json": json.dumps(self.history).encode(), **extra, **self._log_files()}
        ingredients = self.ingredients()
        t = now()
        started = self._fit_started or t
        fields = dict(dataset=self.cfg.namespace, artifact=checkpoint_artifact(self.cfg, self.step), shard=None,
                      rows=self.step, schema={}, cache_key=ingredients.cache_key(), ingredients=ingredients,
                      stats={"step": self.step, "tokens": self.tokens, "skipped": self.skipped, "world_size": self.d.world,
                             "loss": self.history[-1]["loss"] if self.history else None},
                      timings=Timings(started=started, finished=t, seconds=(t - started).total_seconds()),
                      host=hostname(), flow_run_id=flow_run_id())
        return self.store.commit(fields, files, ".safetensors",
                                 before_manifest=lambda: _test_pause("checkpoint", self.step, self.d.rank))

    def _log_files(self) -> dict[str, bytes]:
        """The run's logs, committed beside the checkpoint (the worker's working directory is not durable):
        ``log.jsonl``, the loss curve and a tar of the TensorBoard event files (``tar xf`` it, then
        ``tensorboard --logdir``)."""
        import tarfile
        import tempfile

        out = {".log.jsonl": "".join(json.dumps(r) + "\n" for r in self.history).encode()}
        if self.history:
            with tempfile.TemporaryDirectory() as tmp:
                plot_loss(self.history, self.model.config.domains_out, Path(tmp) / "loss.png")
                out[".loss.png"] = (Path(tmp) / "loss.png").read_bytes()
        tb = self.log_dir / "tb" if self.log_dir is not None else None
        if tb is not None and tb.is_dir():
            if self._writer is not None:
                self._writer.flush()
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(str(tb), arcname="tb")
            out[".tb.tar"] = buf.getvalue()
        return out

    def ingredients(self) -> Ingredients:
        return train_ingredients(self.cfg, run_inputs(self.store, self.cfg))

    # -------------------------------------------------------------------------------- steps

    def _micro(self, batch: MaskedBatch):
        batch = batch.to(self.d.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            return self.wrapped(batch)

    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        # The schedule runs on nominal tokens (step x budget): steps are sized from the token budget, and reference
        # masking leaves ~1/3 of the budget unused, so counting used tokens would end the cosine far above min_lr.
        lr = lr_at(self.step * self._tokens_per_step(), self.peak_lr, cfg.warmup_tokens, self._total_tokens(),
                   cfg.min_lr)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        # loss statistics stay on the device until the step ends: read back once per step, not per micro-batch
        dev, M = self.d.device, len(self.model.config.domains_out)
        loss_sum = torch.zeros((), device=dev)
        mod_loss = torch.zeros(M, device=dev)
        mod_count = torch.zeros(M, device=dev)
        n_in = n_out = 0.0
        head = 0.0
        for _ in range(cfg.grad_accum):
            batch = next(self.loader)  # host tensors: the token counts below need no device sync
            out = self._micro(batch)
            (out.loss / cfg.grad_accum).backward()
            loss_sum += out.loss.detach().float() / cfg.grad_accum
            present = (out.modality_counts > 0).float()
            mod_loss += out.modality_losses.float() * present
            mod_count += present
            n_in += float(batch.enc_valid.sum())
            n_out += float(batch.dec_valid.sum())
            head += self._head_vocab_tokens(batch)
        n_tok = torch.tensor([n_in + n_out], device=dev)
        if self.d.world > 1:  # token counts and loss are global
            stats = torch.cat([n_tok, loss_sum.view(1)])
            dist.all_reduce(stats)
            n_tok, loss_sum = stats[:1], stats[1] / self.d.world
        _test_pause("step", self.step + 1, self.d.rank)
        host = torch.cat([loss_sum.view(1), n_tok, mod_loss, mod_count]).cpu()
        loss_sum, n_tok, mod_loss, mod_count = host[0], host[1], host[2:M + 2], host[M + 2:]
        finite = bool(torch.isfinite(loss_sum))
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf"))
        finite = finite and bool(torch.isfinite(grad_norm))
        if finite:
            self.opt.step()
        else:  # skip and log: a single bad batch must not poison the weights
            self.skipped += 1
            self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += float(n_tok)
        dt = time.perf_counter() - t0
        B = cfg.batch_size * cfg.grad_accum
        flops = train_step_flops(self.model.config, n_in / B, n_out / B, B, head_vocab_tokens=head / B)
        rec = {"step": self.step, "loss": float(loss_sum), "lr": lr, "grad_norm": float(grad_norm),
               "tokens": self.tokens, "tokens_per_s": float(n_tok) / dt, "step_time_s": dt,
               "mfu": flops / dt / self.peak_flops, "skipped": not finite,
               "modality_loss": {m: float(mod_loss[i] / mod_count[i]) for i, m in
                                 enumerate(self.model.config.domains_out) if mod_count[i] > 0}}
        return rec

    def _head_vocab_tokens(self, batch: MaskedBatch) -> float:
        from .batch import MODALITY_INDEX

        total = 0.0
        for m in self.model.config.domains_out:
            total += float(((batch.dec_modality == MODALITY_INDEX[m]) & (batch.dec_labels >= 0)).sum()) * \
                get_modality(m).vocab_size
        return total

    def _tokens_per_step(self) -> float:
        """Nominal tokens of one optimizer step: (input + target budget) x global batch."""
        return float((self.masker.input_budget + self.masker.target_budget) * self.cfg.batch_size *
                     self.cfg.grad_accum * self.d.world)

    def _total_tokens(self) -> float:
        return self.cfg.total_tokens or self._tokens_per_step() * self.cfg.steps

    # -------------------------------------------------------------------------------- loop

    def fit(self, steps: int | None = None) -> Manifest | None:
        """Train until ``steps`` (default cfg.steps) optimizer steps are done; commit the last checkpoint."""
        target = steps or self.cfg.steps
        manifest = None
        self._fit_started = now()
        if self.d.main and self.log_dir is not None and self.step == 0:  # a fresh run starts a fresh log
            (self.log_dir / "log.jsonl").unlink(missing_ok=True)
        try:
            while self.step < target:
                rec = self.train_step()
                self.history.append(rec)
                if self.d.main and (self.step % self.cfg.log_every == 0 or self.step == target):
                    self._log(rec)
                if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0 and self.step < target:
                    self.save()
        finally:  # workers stop here; a later fit() resumes at the same data position with fresh ones
            self.loader.close()
        manifest = self.save()
        if self.d.world > 1:  # every rank (and node) returns once the final checkpoint is committed
            dist.barrier()
        if self.d.main:
            self._finish()
        return manifest

    def _log(self, rec: dict[str, Any]) -> None:
        mods = " ".join(f"{m}={v:.3f}" for m, v in rec["modality_loss"].items())
        print(f"step {rec['step']} loss {rec['loss']:.4f} lr {rec['lr']:.2e} gnorm {rec['grad_norm']:.3f} "
              f"tok/s {rec['tokens_per_s']:.0f} mfu {rec['mfu']:.2%}{' SKIPPED' if rec['skipped'] else ''} | {mods}",
              flush=True)
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir / "tb"))
        w, s = self._writer, rec["step"]
        for k in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
            w.add_scalar(f"train/{k}", rec[k], s)
        for m, v in rec["modality_loss"].items():
            w.add_scalar(f"loss/{m}", v, s)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.log_dir is None or not self.history:
            return
        plot_loss(self.history, self.model.config.domains_out, self.log_dir / "loss.png")


def plot_loss(history: list[dict[str, Any]], modalities: list[str], path: Path) -> None:
    """The loss curve (total and per target modality) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], label="total")
    for m in modalities:
        pts = [(r["step"], r["modality_loss"][m]) for r in history if m in r["modality_loss"]]
        if pts:
            ax.plot(*zip(*pts), alpha=0.5, lw=0.8, label=m)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_logs(history: list[dict[str, Any]], log_dir: str | Path, modalities: list[str]) -> None:
    """``log.jsonl`` and ``loss.png`` from a committed history (a cached run writes the logs it reuses)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if history:
        plot_loss(history, modalities, log_dir / "loss.png")
