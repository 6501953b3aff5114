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
* Raw inputs, only for a model that takes them: ``rgb@224`` pixels come from the ingested ``images``
  shard, cropped with the sample's box and flip from ``tokens/_crops`` (the crop its tokens were made
  from), resized to 224² and ImageNet-normalised (``pixels.py``); ``t5_caption`` embeddings come from
  the ``labels/t5_caption`` shard (one per sample, the same for every crop).
* Workers: batch ``b`` is built by worker ``b % num_workers``; DataLoader returns batches in order. Workers
  are spawned, not forked: the trainer's process has threads (Prefect, Ray, OpenMP) whose locks a fork copies.
* Masking runs in the worker (``collate``), with a generator seeded by (seed, b).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fourm_core.allocator import retain_freed_memory
from fourm_core.crops import Crop
from fourm_core.image_decode import decode_image
from fourm_core.manifest import InputRef
from fourm_core.modalities import ModalityKind, get_modality
from fourm_core.store import ArtifactStore

from .batch import MaskedBatch
from .masking import Masker, RawBatch
from .pixels import model_pixels, model_pixels_into

CROPS_ARTIFACT = "tokens/_crops"  # (sample_key, crop, box, flip): the crops the token shards were made from
_RAW_KINDS = (ModalityKind.PIXELS, ModalityKind.EMBEDDING_SEQ)  # read from images / label shards, not tokens


def source_artifact(modality: str) -> str:
    """The store artifact a modality is read from: its token shards, or for the raw inputs (RGB pixels,
    T5 embeddings) the artifact they are derived from (``images``, ``labels/t5_caption``)."""
    mod = get_modality(modality)
    return mod.label_artifact if mod.kind in _RAW_KINDS else mod.token_artifact


def needed_artifacts(modality: str) -> list[str]:
    """Artifacts a modality needs per shard (pixels also need the crops, to cut the same box)."""
    src = source_artifact(modality)
    return [src, CROPS_ARTIFACT] if get_modality(modality).kind == ModalityKind.PIXELS else [src]

log = logging.getLogger(__name__)


class MissingTokenShardsError(FileNotFoundError):
    """A dataset lacks committed token shards for modalities the run trains on."""


def missing_token_shards_message(store: ArtifactStore, dataset: str, missing: list[str]) -> str:
    have = sorted(a for a in store.artifacts(dataset) if a.startswith("tokens/") and a != CROPS_ARTIFACT)
    root = store.root if store.is_local else store.root_uri
    return (f"dataset {dataset!r} in {store.root_uri} has no committed shards for "
            + ", ".join(f"{'/'.join(needed_artifacts(m))} ({m})" for m in missing)
            + f"; its token artifacts: {', '.join(have) or 'none'}. Make them with the build-dataset flow, "
            f"`python -m pipelines run --dataset {dataset} --root {root}` (for the demo: "
            f"`python -m pipelines demo --root {root}`), with a tokenizer for each of those modalities configured "
            "(dataset config `tokenize`; RGB pixels need the ingested `images`, T5 embeddings the `t5` labeler), or "
            "train on the modalities it has (train config `model.modalities` / `datasets[].modalities`).")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the mix: its store name, weight and the modalities it provides."""

    name: str
    weight: float
    modalities: tuple[str, ...]


def dataset_shards(store: ArtifactStore, d: DatasetSpec, warn: bool = False) -> list[int]:
    """The shards of ``d`` that have a committed token shard for every one of its modalities.

    Raises :class:`MissingTokenShardsError` when a modality has none (naming them and the command)."""
    per_mod = {m: set.intersection(*(set(store.committed_shards(d.name, a)) for a in needed_artifacts(m)))
               for m in d.modalities}
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
        artifacts = dict.fromkeys(a for m in d.modalities for a in needed_artifacts(m))
        for a in artifacts:
            for s in shards:
                refs.append(store.read_manifest(d.name, a, s).as_input())
    return refs


class _Shard:
    """One shard of one dataset, decoded once into arrays that a batch gathers from without per-row Python.

    keys: every sample of any modality, in first-seen order (modalities in order, rows in order); key_index
    maps a key to its position. Per token modality, ``tables[m]`` = (row map (n_keys, n_crops) -> table row or
    -1, flat values, offsets, and for fixed-length rows (image grids, global tokens) the (rows, L) matrix).
    Pixels: the encoded images as one Arrow binary column (decoded when batched) and the crops of
    ``tokens/_crops``; T5: the float16 rows as one Arrow binary column, viewed in place when batched."""

    def __init__(self, store: ArtifactStore, dataset: str, shard: int, modalities: tuple[str, ...]):
        self.tables: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = {}
        self.images: _Blobs | None = None
        self.crops: dict[tuple[str, int], Crop] = {}
        self.embeddings: dict[str, tuple[_Blobs, np.ndarray, np.ndarray]] = {}  # (rows, n_tokens, dim)
        self.where = f"{dataset} shard {shard}"
        key_columns: list[pa.ChunkedArray] = []  # sample_key of every table read, in modality order
        read: dict[str, tuple[int, np.ndarray, np.ndarray, np.ndarray]] = {}  # m -> (column, crop, values, offsets)
        blobs: list[tuple[str, int, pa.Table]] = []  # (modality, column, table) of the pixel / T5 tables
        crop_table = None
        for m in modalities:
            mod = get_modality(m)
            if mod.kind == ModalityKind.PIXELS:
                t = store.read_table(dataset, source_artifact(m), shard, columns=["sample_key", "image"])
                crop_table = store.read_table(dataset, CROPS_ARTIFACT, shard, columns=["sample_key", "crop", "box",
                                                                                      "flip"])
            elif mod.kind == ModalityKind.EMBEDDING_SEQ:
                t = store.read_table(dataset, source_artifact(m), shard,
                                     columns=["sample_key", "embedding", "n_tokens", "dim"])
            else:
                t = store.read_table(dataset, mod.token_artifact, shard, columns=["sample_key", "crop", "tokens"])
                lst = t.column("tokens").combine_chunks()
                offsets = lst.offsets.to_numpy().astype(np.int64)
                values = lst.values.to_numpy(zero_copy_only=False)
                if mod.is_image_like:
                    values, offsets = fit_grid_rows(values, offsets, m)
                read[m] = (len(key_columns), t.column("crop").to_numpy().astype(np.int64), values, offsets)
            if mod.kind in _RAW_KINDS:
                blobs.append((m, len(key_columns), t))
            key_columns.append(t.column("sample_key"))
        # first-seen order over all tables (Arrow's unique keeps the order of first occurrence)
        unique = pc.unique(pa.chunked_array([c for col in key_columns for c in col.chunks], pa.string()))
        self.keys: list[str] = unique.to_pylist()
        self.key_index = {k: i for i, k in enumerate(self.keys)}
        rows_of = [pc.index_in(col, value_set=unique).to_numpy(zero_copy_only=False).astype(np.int64)
                   for col in key_columns]  # key index of every row of every table
        n_crops = np.zeros(len(self.keys), dtype=np.int64)  # crops a key has: 1 + its largest crop index
        for col, cr, _, _ in read.values():
            np.maximum.at(n_crops, rows_of[col], cr + 1)
        self.n_crops = np.maximum(n_crops, 1)  # a key without token rows (only an image) has one crop
        # per token modality: row[key index, crop] -> table row (-1: none); a modality without per-crop rows
        # (a caption) answers every crop with its crop-0 row
        width = int(n_crops.max(initial=0)) or 1
        for m, (col, cr, values, offsets) in read.items():
            row = np.full((len(self.keys), width), -1, dtype=np.int64)
            row[rows_of[col], cr] = np.arange(len(cr))
            row = np.where(row >= 0, row, row[:, :1])
            lengths = np.diff(offsets)
            L = get_modality(m).max_tokens
            fixed = values[: len(lengths) * L].reshape(-1, L) if len(lengths) and (lengths == L).all() else None
            self.tables[m] = (row, values, offsets, fixed)
        for m, col, t in blobs:
            present = _Blobs(t.column(t.column_names[1]), rows_of[col], len(self.keys))
            if get_modality(m).kind == ModalityKind.PIXELS:
                self.images = present
            else:
                self.embeddings[m] = (present, t.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.int64),
                                      t.column("dim").to_numpy(zero_copy_only=False).astype(np.int64))
        if crop_table is not None:
            for k, i, box, flip in zip(crop_table.column("sample_key").to_pylist(),
                                       crop_table.column("crop").to_pylist(), crop_table.column("box").to_pylist(),
                                       crop_table.column("flip").to_pylist()):
                self.crops[(k, int(i))] = Crop(tuple(float(v) for v in box), bool(flip))

    def gather_tokens(self, modality: str, key_idx: np.ndarray, crop: np.ndarray, width: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokens of samples (key index, crop) as a zero-padded (n, width) int32 matrix, their lengths (n,) and
        whether the modality has a row for them (n,) bool, in a few array operations (no per-sample Python)."""
        row, values, offsets, fixed = self.tables[modality]
        r = row[key_idx, np.minimum(crop, row.shape[1] - 1)]
        ok = r >= 0
        r = np.where(ok, r, 0)
        if fixed is not None and fixed.shape[1] == width:  # image grids, global tokens: one row gather
            return np.where(ok[:, None], fixed[r], 0).astype(np.int32), np.where(ok, width, 0), ok
        start = offsets[r]
        n = np.where(ok, np.minimum(offsets[r + 1] - start, width), 0)
        cols = np.arange(width)
        keep = cols[None] < n[:, None]
        idx = np.minimum(start[:, None] + cols[None], max(len(values) - 1, 0))
        out = np.where(keep, values[idx] if len(values) else 0, 0).astype(np.int32)
        return out, n, ok

    def tokens(self, modality: str, key: str, crop: int) -> np.ndarray | None:
        """One sample's tokens (None when the modality has no row for it)."""
        i = self.key_index.get(key)
        row, values, offsets, _ = self.tables[modality]
        r = -1 if i is None else int(row[i, min(crop, row.shape[1] - 1)])
        return None if r < 0 else values[offsets[r]:offsets[r + 1]]

    def crop_of(self, key: str, crop: int) -> Crop:
        """The ``tokens/_crops`` box and flip of the sample's crop (its crop 0 when it has no such crop)."""
        box = self.crops.get((key, crop)) or self.crops.get((key, 0))
        if box is None:
            raise ValueError(f"{self.where}: sample {key!r} has an image but no row in {CROPS_ARTIFACT}, so its "
                             "pixels cannot be cut like its tokens; re-run the tokenize stage for this shard")
        return box

    def image(self, key: str) -> np.ndarray | None:
        """The sample's encoded image bytes as a uint8 view (None without an image)."""
        return None if self.images is None else self.images.get(self.key_index.get(key, -1))

    def pixels(self, modality: str, key: str, crop: int) -> torch.Tensor | None:
        """(n_patches, P·P·3) ImageNet-normalised patches of the sample's crop, None without an image."""
        data = self.image(key)
        if data is None:
            return None
        mod = get_modality(modality)
        return model_pixels(decode_image(data), self.crop_of(key, crop), mod.grid[0] * mod.patch_size, mod.patch_size)

    def embedding(self, modality: str, key: str) -> np.ndarray | None:
        """(n_tokens, dim) float16 rows of the sample's embedding sequence (a view of the shard), None without."""
        rows, n_tokens, dims = self.embeddings[modality]
        r = rows.row(self.key_index.get(key, -1))
        if r < 0:
            return None
        n, dim = int(n_tokens[r]), int(dims[r])
        want = get_modality(modality).feature_dim
        if dim != want:
            raise ValueError(f"{self.where}: {source_artifact(modality)} rows are {dim}-d but the model's "
                             f"{modality} embedding takes {want}-d vectors (T5-XXL); label the dataset with the "
                             "production T5 labeler, or leave t5_caption out of the model's modalities")
        data = rows.value(r)
        if len(data) != 2 * n * dim:
            raise ValueError(f"{self.where}: the {source_artifact(modality)} row of {key!r} has {len(data)} bytes, "
                             f"not n_tokens x dim x 2 = {2 * n * dim} (float16); re-run its labeler for this shard")
        return data.view("<f2").reshape(n, dim)


class _Blobs:
    """A binary Arrow column (encoded images, float16 embedding rows) addressed by key index, its values
    viewed in place as uint8 (no per-row Python objects)."""

    def __init__(self, column: pa.ChunkedArray, key_rows: np.ndarray, n_keys: int):
        arr = column.combine_chunks()
        if pa.types.is_large_binary(arr.type):
            arr = arr.cast(pa.binary())
        _, offsets, data = arr.buffers()  # validity, int32 offsets (into data), data
        self.offsets = (np.frombuffer(offsets, dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
                        if offsets is not None else np.zeros(1, dtype=np.int64))
        self.data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        valid = ~arr.is_null().to_numpy(zero_copy_only=False)
        self.rows = np.full(n_keys, -1, dtype=np.int64)  # key index -> row (-1: none or null)
        self.rows[key_rows[valid]] = np.flatnonzero(valid)

    def row(self, key_idx: int) -> int:
        return -1 if key_idx < 0 else int(self.rows[key_idx])

    def value(self, r: int) -> np.ndarray:
        return self.data[self.offsets[r]:self.offsets[r + 1]]

    def get(self, key_idx: int) -> np.ndarray | None:
        r = self.row(key_idx)
        return None if r < 0 else self.value(r)


def _own(t: torch.Tensor) -> np.ndarray:
    """``t``'s values in an array that owns its memory (no reference back to the tensor)."""
    return t.numpy().copy()


@dataclass
class PackedBatch:
    """A :class:`MaskedBatch` as numpy arrays, which a DataLoader worker sends through its pipe by value.

    A torch tensor crossing to the main process is moved into shared memory first, one segment per tensor;
    on the 2-core box that cost ~20 ms per tensor (~200 ms for a 4M-21 batch of ten 64x256 tensors) against
    2.5 ms to send the same 1.3 MB by value. The main process turns the arrays back into tensors without a
    copy (``torch.from_numpy``).

    The arrays own their memory (copies, not views of the tensors): the worker's queue feeder thread frees each
    batch after pickling it, and freeing a tensor releases and retakes the GIL inside torch's C++; a worker
    whose interpreter was finalizing at that moment died with "terminate called without an active exception"
    (SIGABRT, a core file where cores are on), 1 bench_loader run in 3 on the 2-core box."""

    arrays: dict[str, np.ndarray | dict[str, np.ndarray]]  # MaskedBatch's fields, those set

    @classmethod
    def pack(cls, batch: MaskedBatch) -> "PackedBatch":
        out: dict[str, np.ndarray | dict[str, np.ndarray]] = {}
        for f in fields(batch):
            v = getattr(batch, f.name)
            if v is not None:  # an absent slot index stays absent
                out[f.name] = {k: _own(t) for k, t in v.items()} if isinstance(v, dict) else _own(v)
        return cls(out)

    def unpack(self) -> MaskedBatch:
        return MaskedBatch(**{k: {m: torch.from_numpy(a) for m, a in v.items()} if isinstance(v, dict)
                              else torch.from_numpy(v) for k, v in self.arrays.items()})

    def pin_memory(self) -> MaskedBatch:
        """What DataLoader(pin_memory=True) calls in the main process."""
        return self.unpack().pin_memory()


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

    def _epoch_order(self, d: int, epoch: int, shard_sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row) of every sample of dataset ``d`` in the order epoch ``epoch`` visits them."""
        rng = np.random.default_rng([self.seed, d, epoch])
        shards, rows = [], []
        for s in rng.permutation(len(shard_sizes)):
            shards.append(np.full(shard_sizes[s], s, dtype=np.int64))
            rows.append(rng.permutation(shard_sizes[s]))
        return np.concatenate(shards), np.concatenate(rows)

    # ------------------------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[MaskedBatch | PackedBatch]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        store = self._store()
        cache: dict[tuple[int, int], _Shard] = {}
        sizes: dict[int, list[int]] = {}
        orders: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        b = self.start_batch + wid
        while True:
            batch = self.make_batch(b * self.world_size + self.rank, store, cache, sizes, orders)
            yield PackedBatch.pack(batch) if info else batch  # a worker sends arrays by value (PackedBatch)
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
                if (d, epoch) not in orders:  # one epoch order per dataset kept (in the caller's dict)
                    for old in [key for key in orders if key[0] == d]:
                        del orders[old]
                    orders[(d, epoch)] = self._epoch_order(d, epoch, sizes[d])
                shard_order, row_order = orders[(d, epoch)]
                s, r = int(shard_order[i]), int(row_order[i])
                shard = self._shard(store, cache, d, s)
                key = shard.keys[r]
                crop = int(rng.integers(0, int(shard.n_crops[r])))
                samples.append((d, shard, key, crop))
        order = rng.permutation(len(samples))
        return self.collate([samples[i] for i in order])

    def collate(self, samples) -> RawBatch:
        """(dataset, shard, key, crop) per sample -> the unmasked batch (absent modalities have length 0)."""
        raw = RawBatch(dataset=torch.tensor([d for d, *_ in samples], dtype=torch.long),
                       keys=[key for _, _, key, _ in samples])
        # samples grouped by shard (a batch draws from one shard per dataset): token gathers go per group
        groups: dict[int, tuple[_Shard, list[int]]] = {}
        for j, (_, shard, _, _) in enumerate(samples):
            groups.setdefault(id(shard), (shard, []))[1].append(j)
        index = [(shard, d, np.array(rows), np.array([shard.key_index[samples[j][2]] for j in rows], dtype=np.int64),
                  np.array([samples[j][3] for j in rows], dtype=np.int64))
                 for shard, rows in groups.values() for d in [samples[rows[0]][0]]]
        for m in self.masker.modalities:
            mod = get_modality(m)
            if mod.kind in _RAW_KINDS:
                has = [m in self.datasets[d].modalities for d, *_ in samples]
                if mod.kind == ModalityKind.PIXELS:
                    self._collate_pixels(raw, m, samples, has)
                else:
                    self._collate_embeddings(raw, m, samples, has)
            else:
                self._collate_tokens(raw, m, len(samples), [g for g in index if m in self.datasets[g[1]].modalities])
        return raw

    @staticmethod
    def _collate_tokens(raw: RawBatch, m: str, B: int, groups) -> None:
        """tokens[m] (B, max_tokens) int32, zero-padded, and lengths[m] (B,): one gather per shard in the batch.

        groups: (shard, dataset, batch rows, key indices, crops) of the samples whose dataset provides ``m``."""
        L = get_modality(m).max_tokens
        tok = np.zeros((B, L), dtype=np.int32)
        n = np.zeros(B, dtype=np.int64)
        present = np.zeros(B, dtype=bool)  # an empty sequence (no boxes) is present: it is masked as "[EOS]"
        for shard, _, rows, key_idx, crop in groups:
            tok[rows], n[rows], present[rows] = shard.gather_tokens(m, key_idx, crop, L)
        raw.tokens[m] = torch.from_numpy(tok)
        raw.lengths[m] = torch.from_numpy(n)
        raw.present[m] = torch.from_numpy(present)

    @staticmethod
    def _collate_pixels(raw: RawBatch, m: str, samples, has: list[bool]) -> None:
        """pixels[m] (B, n_patches, P·P·3) float32 when any sample has an image (zeros for those without): each
        image decoded, cut and normalised straight into its row of the batch tensor."""
        mod = get_modality(m)
        images = [shard.image(key) if has[j] else None for j, (d, shard, key, crop) in enumerate(samples)]
        n = torch.tensor([0 if r is None else mod.max_tokens for r in images], dtype=torch.long)
        if n.any():
            out = torch.empty(len(samples), mod.max_tokens, mod.patch_size**2 * 3)
            for j, ((_, shard, key, crop), data) in enumerate(zip(samples, images)):
                if data is None:
                    out[j].zero_()
                else:
                    model_pixels_into(out[j], decode_image(data), shard.crop_of(key, crop),
                                      mod.grid[0] * mod.patch_size, mod.patch_size)
            raw.pixels[m] = out
        raw.lengths[m] = n

    @staticmethod
    def _collate_embeddings(raw: RawBatch, m: str, samples, has: list[bool]) -> None:
        """embeddings[m] (B, L, F) float16 as stored (the model casts them), L = the longest sequence of the
        batch (at most max_tokens), zero-padded; half the bytes of float32 to send to the trainer."""
        mod = get_modality(m)
        rows = [shard.embedding(m, key) if has[j] else None for j, (d, shard, key, crop) in enumerate(samples)]
        rows = [None if r is None else r[: mod.max_tokens] for r in rows]
        n = torch.tensor([0 if r is None else len(r) for r in rows], dtype=torch.long)
        if n.any():
            out = np.zeros((len(rows), int(n.max()), mod.feature_dim), dtype=np.float16)
            for j, r in enumerate(rows):
                if r is not None:
                    out[j, : len(r)] = r
            raw.embeddings[m] = torch.from_numpy(out)
        raw.lengths[m] = n


def _grid(modality: str) -> tuple[int, int]:
    mod = get_modality(modality)
    if mod.grid is not None:
        return mod.grid
    side = int(np.sqrt(mod.max_tokens))
    return side, side


def _grid_index(k: int, modality: str) -> np.ndarray:
    """Flat indices into a k x k grid that resample it to the modality's grid by nearest neighbour."""
    h, w = _grid(modality)
    rows = (np.arange(h) * k) // h
    cols = (np.arange(w) * k) // w
    return (rows[:, None] * k + cols[None]).reshape(-1)


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
    return tokens[_grid_index(k, modality)]


def fit_grid_rows(values: np.ndarray, offsets: np.ndarray, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_grid` for every row of a flat token column (values, offsets) at once."""
    h, w = _grid(modality)
    lengths = np.diff(offsets)
    if len(lengths) == 0 or (lengths == h * w).all():
        return values, offsets
    if (lengths == lengths[0]).all():  # one coarser grid for the whole shard: one fancy-index
        n = int(lengths[0])
        fit_grid(np.zeros(n, dtype=values.dtype), modality)  # validates n (raises for a non-square count)
        out = values.reshape(-1, n)[:, _grid_index(int(round(np.sqrt(n))), modality)].reshape(-1)
    else:
        out = np.concatenate([fit_grid(values[a:b], modality) for a, b in zip(offsets[:-1], offsets[1:])])
    return out, np.arange(len(lengths) + 1, dtype=np.int64) * (h * w)


def _loader_worker_init(worker_id: int) -> None:
    """A loader worker builds batches of the same shapes all its life: freed batches stay in its heap, so the next
    one's arrays start on pages already mapped (fourm_core.allocator; the masking bench ran 15-20 % faster so)."""
    retain_freed_memory()


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
                      multiprocessing_context="spawn", worker_init_fn=_loader_worker_init) if self.num_workers else {}
            self._it = iter(DataLoader(self.stream, batch_size=None, num_workers=self.num_workers,
                                       pin_memory=self.pin_memory, **kw))
        batch = next(self._it)
        self.next_batch += 1
        return batch.unpack() if isinstance(batch, PackedBatch) else batch


