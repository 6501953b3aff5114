"""Token-shard data loading: weighted dataset mixing, one crop per sample, workers, resumable position.

The sample stream is *position-addressable*: batch ``b`` is a pure function of (seed, b), so the
loader's state is just the next batch index and a resumed run continues with the next unseen batch,
whatever the number of workers.

* Dataset mixing: the first ``b`` batches take ``round(w_d * B * b)`` samples from dataset ``d``
  (cumulative largest-remainder rounding), so proportions are exact, not just in expectation.
* Shuffling: each dataset is read as an endless stream of epochs; every epoch visits the shards in
  a new random order and the rows of a shard in a random order (a shuffle buffer of one shard,
  which keeps reads sequential: one shard in memory per dataset and worker).
* One crop per sample, drawn from the crops it has, used for every modality of that sample.
* Image-like tokens on a coarser square grid than the modality's (the ``tiny`` tokenizers' 4x4) are
  resampled to its grid by nearest neighbour (:func:`fit_grid`).
* Only the needed columns (``sample_key``, ``crop``, ``tokens``) of the needed modalities are read.
* Workers: batch ``b`` is built by worker ``b % num_workers``; DataLoader returns batches in order. Workers
  are spawned, not forked: the trainer's process has threads (Prefect, Ray, OpenMP) whose locks a fork copies.
* Masking runs in the worker (``collate``), with a generator seeded by (seed, b).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fourm_core.manifest import InputRef
from fourm_core.modalities import ModalityKind, get_modality
from fourm_core.store import ArtifactStore

from .batch import MaskedBatch
from .masking import Masker, RawBatch

log = logging.getLogger(__name__)


class MissingTokenShardsError(FileNotFoundError):
    """A dataset lacks committed token shards for modalities the run trains on."""


def missing_token_shards_message(store: ArtifactStore, dataset: str, missing: list[str]) -> str:
    have = sorted(a for a in store.artifacts(dataset) if a.startswith("tokens/") and a != "tokens/_crops")
    root = store.root if store.is_local else store.root_uri
    return (f"dataset {dataset!r} in {store.root_uri} has no committed token shards for "
            + ", ".join(f"{get_modality(m).token_artifact} ({m})" for m in missing)
            + f"; its token artifacts: {', '.join(have) or 'none'}. Make them with the build-dataset flow, "
            f"`python -m pipelines run --dataset {dataset} --root {root}` (for the demo: "
            f"`python -m pipelines demo --root {root}`), with a tokenizer for each of those modalities configured "
            "(dataset config `tokenize`), or train on the modalities it has (train config `model.modalities` / "
            "`datasets[].modalities`).")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the mix: its store name, weight and the modalities it provides."""

    name: str
    weight: float
    modalities: tuple[str, ...]


def dataset_shards(store: ArtifactStore, d: DatasetSpec, warn: bool = False) -> list[int]:
    """The shards of ``d`` that have a committed token shard for every one of its modalities.

    Raises :class:`MissingTokenShardsError` when a modality has none (naming them and the command)."""
    per_mod = {m: set(store.committed_shards(d.name, get_modality(m).token_artifact)) for m in d.modalities}
    missing = [m for m, shards in per_mod.items() if not shards]
    if missing:
        raise MissingTokenShardsError(missing_token_shards_message(store, d.name, missing))
    common = sorted(set.intersection(*per_mod.values()))
    if not common:
        raise MissingTokenShardsError(f"dataset {d.name!r} in {store.root_uri}: no shard has committed token "
                                      f"shards for all of {', '.join(d.modalities)}")
    partial = sorted(set.union(*per_mod.values()) - set(common))
    if partial and warn:  # read only shards every modality has; say which were left out
        log.warning("dataset %s: shards %s lack some modality's token shard; reading the %d shards that "
                    "have all of them", d.name, partial[:20], len(common))
    return common


def token_input_refs(store: ArtifactStore, datasets: list[DatasetSpec]) -> list[InputRef]:
    """The manifests (as lineage inputs) of every token shard a stream over ``datasets`` reads."""
    refs = []
    for d in datasets:
        shards = dataset_shards(store, d)
        for m in d.modalities:
            for s in shards:
                refs.append(store.read_manifest(d.name, get_modality(m).token_artifact, s).as_input())
    return refs


class _Shard:
    """One shard of one dataset: per modality, tokens of (sample_key, crop) as flat numpy + offsets."""

    def __init__(self, store: ArtifactStore, dataset: str, shard: int, modalities: tuple[str, ...]):
        self.tables: dict[str, tuple[dict[tuple[str, int], int], np.ndarray, np.ndarray]] = {}
        keys: dict[str, None] = {}  # every sample of any modality, in first-seen order
        crops: dict[str, int] = {}
        for m in modalities:
            t = store.read_table(dataset, get_modality(m).token_artifact, shard, columns=["sample_key", "crop", "tokens"])
            sk = t.column("sample_key").to_pylist()
            cr = t.column("crop").to_numpy()
            lst = t.column("tokens").combine_chunks()
            offsets = lst.offsets.to_numpy()
            values = lst.values.to_numpy(zero_copy_only=False)
            self.tables[m] = ({(k, int(c)): i for i, (k, c) in enumerate(zip(sk, cr))}, values, offsets)
            for k, c in zip(sk, cr):
                crops[k] = max(crops.get(k, 0), int(c) + 1)
            keys.update(dict.fromkeys(sk))
        self.keys = list(keys)
        self.n_crops = crops

    def tokens(self, modality: str, key: str, crop: int) -> np.ndarray | None:
        index, values, offsets = self.tables[modality]
        i = index.get((key, crop))
        if i is None:
            i = index.get((key, 0))  # a modality without per-crop rows (e.g. a caption) uses crop 0
            if i is None:
                return None
        return values[offsets[i]:offsets[i + 1]]


class TokenShardStream(IterableDataset):
    """Yields masked batches from committed token shards; see the module docstring."""

    def __init__(self, store_root: str, datasets: list[DatasetSpec], masker: Masker, batch_size: int,
                 seed: int = 0, start_batch: int = 0, storage_options: dict | None = None, rank: int = 0,
                 world_size: int = 1):
        super().__init__()
        # rank r of w reads global batches r, r + w, r + 2w, ...: ranks never share a batch
        self.rank, self.world_size = rank, world_size
        self.store_root, self.storage_options = store_root, storage_options or {}
        self.datasets = datasets
        self.masker = masker
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch
        store = self._store()
        self.shards = [dataset_shards(store, d, warn=True) for d in datasets]
        self.rows = []
        for d, shards in zip(datasets, self.shards):
            # rows per shard from the manifests: sample count = rows / crops is unknown here, read lazily
            self.rows.append([store.read_manifest(d.name, get_modality(d.modalities[0]).token_artifact, s).rows
                              for s in shards])
        w = np.array([d.weight for d in datasets], dtype=np.float64)
        self.weights = w / w.sum()

    def _store(self) -> ArtifactStore:
        return ArtifactStore(self.store_root, self.storage_options)

    def input_refs(self) -> list[InputRef]:
        """Manifests of every token shard this stream reads (the checkpoint's lineage)."""
        return token_input_refs(self._store(), self.datasets)

    # ------------------------------------------------------------------------------- positions

    def dataset_counts(self, b: int) -> np.ndarray:
        """Samples taken from each dataset by the first ``b`` batches (exact cumulative rounding)."""
        total = b * self.batch_size
        raw = self.weights * total
        base = np.floor(raw).astype(np.int64)
        rest = total - base.sum()
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:rest]] += 1
        return base

    def _epoch_order(self, d: int, epoch: int, shard_sizes: list[int]) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, d, epoch])
        out = []
        for s in rng.permutation(len(shard_sizes)):
            out.extend((int(s), int(r)) for r in rng.permutation(shard_sizes[s]))
        return out

    # ------------------------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[MaskedBatch]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        store = self._store()
        cache: dict[tuple[int, int], _Shard] = {}
        sizes: dict[int, list[int]] = {}
        orders: dict[tuple[int, int], list[tuple[int, int]]] = {}
        b = self.start_batch + wid
        while True:
            yield self.make_batch(b * self.world_size + self.rank, store, cache, sizes, orders)
            b += nw

    def _shard(self, store, cache, d: int, s: int) -> _Shard:
        key = (d, s)
        if key not in cache:
            for k in [k for k in cache if k[0] == d]:  # keep one shard per dataset in memory
                del cache[k]
            cache[key] = _Shard(store, self.datasets[d].name, self.shards[d][s], self.datasets[d].modalities)
        return cache[key]

    def make_batch(self, b: int, store=None, cache=None, sizes=None, orders=None) -> MaskedBatch:
        """Global batch ``b``, masked with a generator seeded by (seed, b)."""
        raw = self.raw_batch(b, store, cache, sizes, orders)
        g = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, 2, b]).integers(2**62)))
        return self.masker(raw, g)

    def raw_batch(self, b: int, store=None, cache=None, sizes=None, orders=None) -> RawBatch:
        """Global batch ``b`` before masking."""
        store = store or self._store()
        cache = {} if cache is None else cache
        sizes = {} if sizes is None else sizes
        orders = {} if orders is None else orders
        lo, hi = self.dataset_counts(b), self.dataset_counts(b + 1)
        rng = np.random.default_rng([self.seed, 1, b])
        samples = []  # (dataset, shard, key, crop)
        for d in range(len(self.datasets)):
            if d not in sizes:  # samples per shard: read lazily once per worker
                sizes[d] = [len(self._shard(store, cache, d, s).keys) for s in range(len(self.shards[d]))]
            n_d = sum(sizes[d])
            for k in range(int(lo[d]), int(hi[d])):
                epoch, i = divmod(k, n_d)
                if (d, epoch) not in orders:
                    orders = {key: v for key, v in orders.items() if key[0] != d}
                    orders[(d, epoch)] = self._epoch_order(d, epoch, sizes[d])
                s, r = orders[(d, epoch)][i]
                shard = self._shard(store, cache, d, s)
                key = shard.keys[r]
                crop = int(rng.integers(0, shard.n_crops.get(key, 1)))
                samples.append((d, shard, key, crop))
        order = rng.permutation(len(samples))
        return self.collate([samples[i] for i in order])

    def collate(self, samples) -> RawBatch:
        B = len(samples)
        raw = RawBatch(dataset=torch.tensor([d for d, *_ in samples], dtype=torch.long),
                       keys=[key for _, _, key, _ in samples])
        for m in self.masker.modalities:
            mod = get_modality(m)
            if mod.kind in (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ):
                continue  # not in token shards (see docs/training.md)
            L = mod.max_tokens
            tok = np.zeros((B, L), dtype=np.int32)
            n = np.zeros(B, dtype=np.int64)
            present = np.zeros(B, dtype=bool)  # an empty sequence (no boxes) is present: it is masked as "[EOS]"
            for j, (d, shard, key, crop) in enumerate(samples):
                if m not in self.datasets[d].modalities:
                    continue
                t = shard.tokens(m, key, crop)
                if t is None:
                    continue
                present[j] = True
                if mod.is_image_like:
                    t = fit_grid(t, m)
                t = t[:L]
                tok[j, : len(t)] = t
                n[j] = len(t)
            raw.tokens[m] = torch.from_numpy(tok)
            raw.lengths[m] = torch.from_numpy(n)
            raw.present[m] = torch.from_numpy(present)
        return raw


def _grid(modality: str) -> tuple[int, int]:
    mod = get_modality(modality)
    if mod.grid is not None:
        return mod.grid
    side = int(np.sqrt(mod.max_tokens))
    return side, side


def fit_grid(tokens: np.ndarray, modality: str) -> np.ndarray:
    """An image-like modality's tokens on its registry grid (14x14 for ``tok_*@224``).

    A square grid of another size (the demo's ``tiny`` tokenizers make 4x4) is resampled to it by nearest
    neighbour, so positions keep their meaning; a token count that is not a square grid is a format error.
    """
    h, w = _grid(modality)
    n = len(tokens)
    if n == h * w:
        return tokens
    k = int(round(np.sqrt(n)))
    if n == 0 or k * k != n:
        raise ValueError(f"{modality}: {n} tokens per sample is neither its {h}x{w} grid nor a square grid")
    rows = (np.arange(h) * k) // h
    cols = (np.arange(w) * k) // w
    return tokens.reshape(k, k)[rows][:, cols].reshape(-1)


class ResumableLoader:
    """A DataLoader over :class:`TokenShardStream` whose position can be saved and restored."""

    def __init__(self, stream: TokenShardStream, num_workers: int = 0, prefetch_factor: int = 2,
                 pin_memory: bool = False):
        self.stream = stream
        self.pin_memory = pin_memory  # page-locked batches for a CUDA trainer
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.next_batch = stream.start_batch
        self._it: Iterator[MaskedBatch] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"next_batch": self.next_batch, "seed": self.stream.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.stream.seed) != self.stream.seed:
            raise ValueError("data position was saved for another seed")
        self.next_batch = int(state["next_batch"])
        self.close()

    def __iter__(self) -> "ResumableLoader":
        return self

    def close(self) -> None:
        """Stop the worker processes now, not whenever the iterator is garbage-collected (by then the
        workers may already be gone, and the DataLoader's own shutdown raises in ``__del__``). The position
        is kept: the next batch starts fresh workers at ``next_batch``."""
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)  # what DataLoader's iterator runs in its __del__
        if shutdown is None:
            return
        try:
            shutdown()
        except RuntimeError as e:  # a worker stopped mid-start (spawn) exits non-zero; its batches were unused
            log.info("a data loader worker exited with an error while being stopped (%s); no batch is lost: the "
                     "next batch is rebuilt from the saved position", e)

    def __next__(self) -> MaskedBatch:
        if self._it is None:
            self.stream.start_batch = self.next_batch
            # spawned workers: a fork would copy this process's threads (Prefect, Ray, OpenMP) and their locks
            kw = dict(prefetch_factor=self.prefetch_factor, persistent_workers=False,
                      multiprocessing_context="spawn") if self.num_workers else {}
            self._it = iter(DataLoader(self.stream, batch_size=None, num_workers=self.num_workers,
                                       pin_memory=self.pin_memory, **kw))
        batch = next(self._it)
        self.next_batch += 1
        return batch


