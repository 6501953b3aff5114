"""Pre-tokenization of the sequence modalities: det, metadata, color_palette, human_poses, sam_instance.

One unit per (sequence modality, shard) commits ``tokens/<modality>`` (``Modality.token_artifact``) with one
row per (sample, crop) of ``tokens/_crops``:

    sample_key  str
    crop        int16
    text        str          the serialisation (4M-FACTS §3-§4, tokenize_stage.text.serialise)
    tokens      list<int16>  its WordPiece ids (the shared text tokenizer, as the caption path; no [EOS])
    structured  str          JSON of the structured form that was serialised, in the crop's frame
                             (``PARSED_TYPES[modality].model_validate_json`` reads it)

Per crop (``crops.crop_for``: the box + flip every image modality of the sample uses):

* det: boxes re-normalised to the crop, clipped, dropped when outside, mirrored on flip; the serialiser
  then drops scores < 0.6 (the paper's threshold) and orders them; ``structured`` keeps the scores.
* sam_instance: RLE masks decoded, cropped/flipped like every image label, resized to the 224 crop; box =
  tight box in 224 pixels; the in-box mask resized to 64x64 -> the committed ``mask_vq``'s 16 codes; then
  7 query points (``sam_instance.query``). Instances empty after the crop are dropped.
* human_poses: bbox transformed like det (persons outside the crop dropped); on flip the body is mirrored
  (``seq_geometry.transform_person``) before the committed ``pose_vq`` encodes its 207-d body pose to 8 codes.
* metadata and color_palette do not depend on the crop; they are serialised once per crop row anyway
  (metadata chunk order and the palette's k are drawn per row) so every modality has aligned rows.

Random choices (SAM points, metadata order, palette k, human-pose group order) use a generator seeded by
(crop seed, modality, sample_key, crop): deterministic, so a unit's output is a function of its cache key.

Cache key: the modality, the crop settings, the label shard's digest, the text tokenizer's digest (sha256 of
its JSON) and, for human_poses / sam_instance, the committed VQ tokenizer's weights digest (``ModelRef``), and
``CODE_VERSION``. So a retrained mask_vq re-tokenizes only sam_instance.

Which modalities run (``sequence_modalities``): the listed ones when ``tokenize.modalities`` is set;
otherwise every sequence modality with a committed label shard, except that human_poses / sam_instance are
**skipped** when their VQ tokenizer is neither committed nor configured in ``tokenize.train.tokenizers``. A
modality that does run without its VQ tokenizer committed (listed, or configured but not yet trained)
**fails** with a message naming the tokenizer and the command that trains it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field

from fourm_core.config import StrictModel
from fourm_core.manifest import InputRef, ModelRef
from fourm_core.modalities import MODALITIES, Modality
from fourm_core.store import ArtifactStore
from fourm_core.structured import Box, ColorPalette, ColorPaletteSet, Detections, HumanPoses, Metadata, Person
from fourm_core.units import SampleError, Unit, UnitOutput, UnitResult, run_unit

from .captions import text_tokenizer
from .committed import load_committed
from .crops import Crop, CropConfig, crop_for
from .registry import sub_tokenizer
from .seq_geometry import crop_boxes, crop_mask, in_box_mask, persons_of_row, sam_row_masks, tight_box, transform_person
from .text.serialise import PARSED_TYPES, SERIALISERS, STRUCTURED_TYPES, token_budget
from .text.serialise import color_palette as palette_ser
from .text.serialise import sam_instance as sam_ser
from .train_tokenizer import tokenizer_artifact, trained_ref

CODE_VERSION = "tokenize.sequences/3"  # 3: the reference's serialisation conventions (det order and rounding, metadata bins)
SEQUENCE_MODALITIES = tuple(SERIALISERS)  # det, color_palette, metadata, human_poses, sam_instance
CHUNK_SAMPLES = 64  # samples whose VQ inputs are held in memory and encoded together


class SequenceConfig(StrictModel):
    """``tokenize.sequences`` of a dataset config."""

    det_score_threshold: float = Field(0.6, ge=0, le=1, description="det boxes below this score are not "
                                       "serialised (the paper: 0.6); `structured` keeps every box")


def vq_tokenizer(modality: Modality) -> str | None:
    """'wordpiece+mask_vq' -> 'mask_vq'; None for plain WordPiece modalities."""
    return sub_tokenizer(modality.tokenizer) if modality.tokenizer and "+" in modality.tokenizer else None


# -------------------------------------------------------------------------------------- tokenizers




def _train_hint(name: str, profile: str, ns: str) -> str:
    return (f"train it with `python -m tokenize_stage train --tokenizer {name} --profile {profile} --store <root> "
            f"--dataset {ns}`, or list {name} in the dataset's tokenize.train.tokenizers and run the "
            f"train-tokenizers stage")


def _vq_ref(store: ArtifactStore, ns: str, modality: Modality, profile: str) -> ModelRef:
    """The committed VQ tokenizer's ModelRef (manifest only); the error names the missing tokenizer and the fix."""
    name = vq_tokenizer(modality)
    manifest = store.read_manifest(ns, tokenizer_artifact(name, profile), None)
    if manifest is None:
        raise FileNotFoundError(f"{modality.name} needs the {name} tokenizer, but {ns}/"
                                f"{tokenizer_artifact(name, profile)} is not committed; "
                                f"{_train_hint(name, profile, ns)}")
    return trained_ref(store, ns, name, profile)


# ------------------------------------------------------------------------------------------ planning


def sequence_modalities(store: ArtifactStore, dataset: str, cfg) -> list[Modality]:
    """The sequence modalities this dataset tokenizes (module doc: listed, or default with skip rule)."""
    if cfg.modalities is not None:
        return [MODALITIES[m] for m in cfg.modalities if m in SEQUENCE_MODALITIES]
    ns = cfg.tokenizer_dataset or dataset
    trained = set(cfg.train.tokenizers) if cfg.train is not None else set()
    out = []
    for name in SEQUENCE_MODALITIES:
        m, vq = MODALITIES[name], vq_tokenizer(MODALITIES[name])
        if vq is None or vq in trained or store.read_manifest(ns, tokenizer_artifact(vq, cfg.profile), None):
            out.append(m)
    return out


def artifacts_for(cfg) -> list[str]:
    """Sequence token artifacts a dataset is configured to have (no store needed: the config decides)."""
    if cfg.modalities is not None:
        return [MODALITIES[m].token_artifact for m in cfg.modalities if m in SEQUENCE_MODALITIES]
    trained = set(cfg.train.tokenizers) if cfg.train is not None else None
    return [MODALITIES[m].token_artifact for m in SEQUENCE_MODALITIES
            if trained is None or vq_tokenizer(MODALITIES[m]) in (None, *trained)]


def label_refs(store: ArtifactStore, dataset: str, cfg, shard: int) -> dict[str, tuple[Modality, InputRef]]:
    """modality name -> (modality, committed label part as an input ref) for this shard's sequence units."""
    out = {}
    for m in sequence_modalities(store, dataset, cfg):
        ref = store.input_ref(dataset, m.label_artifact, shard)
        if ref is not None:
            out[m.name] = (m, ref)
    return out


def plan_shards(store: ArtifactStore, dataset: str, cfg) -> set[int]:
    shards: set[int] = set()
    for m in sequence_modalities(store, dataset, cfg):
        shards.update(store.committed_shards(dataset, m.label_artifact))
    return shards


# ------------------------------------------------------------------------------- structured forms per crop


def row_rng(crops: CropConfig, modality: str, key: str, crop: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{crops.seed}/{modality}/{key}/{crop}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# A builder turns one stored label row and one crop into (VQ inputs, finish): ``finish(codes)`` gets the VQ
# codes of those inputs ((n, n_tokens) int array) and returns the structured form to serialise.
Builder = Callable[[dict, Crop, np.random.Generator], tuple[list[np.ndarray], Callable[[np.ndarray], Any]]]


def _det(row: dict, crop: Crop, rng) -> tuple[list, Callable]:
    dets = STRUCTURED_TYPES["det"].model_validate_json(row["det"])
    if not dets.boxes:
        return [], lambda _: Detections()
    xyxy, keep = crop_boxes(np.array([b.xyxy for b in dets.boxes]), crop)
    kept = [b for b, k in zip(dets.boxes, keep) if k]
    out = Detections(boxes=[Box(xyxy=tuple(x), class_name=b.class_name, score=b.score)
                            for b, x in zip(kept, xyxy.tolist())])
    return [], lambda _: out


def _metadata(row: dict, crop: Crop, rng) -> tuple[list, Callable]:
    meta = Metadata(**{f: row[f] for f in Metadata.model_fields if row.get(f) is not None})
    return [], lambda _: meta


def unpack_palettes(data: bytes) -> ColorPaletteSet:
    """The palette labeler's binary(84) cell (palette k at bytes [3k(k-1)/2, 3k(k+1)/2)) -> ColorPaletteSet."""
    arr = np.frombuffer(data, np.uint8)
    ks = [k for k in range(1, 8) if 3 * k * (k + 1) // 2 <= len(arr)]
    return ColorPaletteSet(palettes=[ColorPalette(colors=arr[3 * k * (k - 1) // 2: 3 * k * (k + 1) // 2]
                                                  .reshape(k, 3)) for k in ks])


def _palette(row: dict, crop: Crop, rng) -> tuple[list, Callable]:
    chosen = palette_ser.choose(unpack_palettes(row["palettes"]), rng)  # k drawn per row
    return [], lambda _: chosen


def _human_poses(row: dict, crop: Crop, rng) -> tuple[list, Callable]:
    persons = [p for p in (transform_person(p, crop) for p in persons_of_row(row)) if p is not None]

    def finish(codes: np.ndarray) -> HumanPoses:
        return HumanPoses(persons=[Person(bbox=p["bbox"], pose_tokens=c, global_orient=p["global_orient"],
                                          betas=p["betas"], camera=p["camera"]) for p, c in zip(persons, codes)])

    return [p["body_pose"] for p in persons], finish


def _sam_instance(row: dict, crop: Crop, rng) -> tuple[list, Callable]:
    masks, boxes, inputs = [], [], []
    for m in sam_row_masks(row):
        m224 = crop_mask(m, crop)
        box = tight_box(m224)
        if box is None:  # nothing of this instance is left in the crop
            continue
        masks.append(m224)
        boxes.append(box)
        inputs.append(in_box_mask(m224, box))
    stack = np.stack(masks) if masks else np.zeros((0, sam_ser.IMAGE_SIZE, sam_ser.IMAGE_SIZE), bool)

    def finish(codes: np.ndarray):
        return sam_ser.query(stack, codes.reshape(len(masks), -1) if masks else np.zeros((0, 16), np.int64), rng,
                             boxes=boxes)

    return inputs, finish


BUILDERS: dict[str, Builder] = {"det": _det, "metadata": _metadata, "color_palette": _palette,
                                "human_poses": _human_poses, "sam_instance": _sam_instance}
# Columns whose absence means the labeler produced nothing for the sample.
_REQUIRED = {"det": ("det",), "color_palette": ("palettes",), "metadata": (), "human_poses": ("bbox",),
             "sam_instance": ("mask_height", "mask_width")}


def _encode(model, inputs: list[np.ndarray], batch_size: int, device: str) -> np.ndarray:
    from .normalize import normalize

    tcfg = model.config
    if not inputs:
        return np.zeros((0, tcfg.n_tokens), np.int64)
    x = torch.stack([normalize(tcfg.target, a, getattr(tcfg, "image_size", None)) for a in inputs])
    model.to(device)
    with torch.no_grad():
        return torch.cat([model.encode(x[i:i + batch_size].to(device)).cpu()
                          for i in range(0, x.shape[0], batch_size)]).numpy()


# --------------------------------------------------------------------------------------------- the unit


def sequence_unit(store: ArtifactStore, dataset: str, cfg, shard: int, modality: Modality, label_ref: InputRef,
                  force: bool = False) -> UnitResult:
    """Serialise + WordPiece-encode one sequence modality of one shard (module doc) through run_unit."""
    ns = cfg.tokenizer_dataset or dataset
    tok, text_ref = text_tokenizer(cfg.text_tokenizer)  # the caption path's tokenizer and ModelRef
    vq_ref = _vq_ref(store, ns, modality, cfg.profile) if vq_tokenizer(modality) else None
    unit = Unit(stage="tokenize.sequence", dataset=dataset, artifacts=[modality.token_artifact], shard=shard,
                code_version=CODE_VERSION, model=vq_ref or text_ref, inputs=[label_ref],
                config={"modality": modality.name, "crops": cfg.crops.model_dump(mode="json"),
                        "sequences": cfg.sequences.model_dump(mode="json") if modality.name == "det" else None,
                        "text_tokenizer": text_ref.model_dump(mode="json")})
    build, budget = BUILDERS[modality.name], token_budget(modality.name)
    serialiser = SERIALISERS[modality.name]

    def compute() -> UnitOutput:
        vq_model = load_committed(store, vq_ref) if vq_ref is not None else None
        table = store.read_table(dataset, modality.label_artifact, shard)
        rows = sorted(table.to_pylist(), key=lambda r: r["sample_key"])
        out: dict[str, list] = {"sample_key": [], "crop": [], "text": [], "structured": []}
        kwargs = {"score_threshold": cfg.sequences.det_score_threshold} if modality.name == "det" else {}
        errors: list[SampleError] = []
        for start in range(0, len(rows), CHUNK_SAMPLES):
            pending = []  # (key, crop, rng, n inputs, finish)
            inputs: list[np.ndarray] = []
            for row in rows[start:start + CHUNK_SAMPLES]:
                key = row["sample_key"]
                if any(row.get(c) is None for c in _REQUIRED[modality.name]):
                    errors.append(SampleError(key, "missing_label", f"{modality.label_artifact} has no value"))
                    continue
                try:
                    built = []
                    for c in range(cfg.crops.n_crops):
                        rng = row_rng(cfg.crops, modality.name, key, c)
                        vq_inputs, finish = build(row, crop_for(cfg.crops, key, c), rng)
                        built.append((key, c, rng, vq_inputs, finish))
                except Exception as exc:  # one bad label must not fail the shard
                    errors.append(SampleError(key, "bad_label", f"{type(exc).__name__}: {exc}"))
                    continue
                for key_, c, rng, vq_inputs, finish in built:
                    pending.append((key_, c, rng, len(vq_inputs), finish))
                    inputs.extend(vq_inputs)
            codes = _encode(vq_model, inputs, cfg.batch_size, cfg.device) if vq_model is not None and inputs \
                else np.zeros((0, 0), np.int64)
            at = 0
            failed: set[str] = set()
            for key, c, rng, n, finish in pending:
                vq_codes, at = codes[at:at + n], at + n
                if key in failed:
                    continue
                try:
                    structured = finish(vq_codes)
                    text = serialiser.serialise(structured, rng, **kwargs)
                except Exception as exc:  # e.g. a stored value the structured type rejects: drop the sample
                    errors.append(SampleError(key, "bad_label", f"{type(exc).__name__}: {exc}"))
                    failed.add(key)
                    while out["sample_key"] and out["sample_key"][-1] == key:  # its earlier crops too
                        for col in out.values():
                            col.pop()
                    continue
                out["sample_key"].append(key)
                out["crop"].append(c)
                out["text"].append(text)
                out["structured"].append(structured.model_dump_json(exclude_none=True))
        ids = [e.ids for e in tok.encode_batch(out["text"])] if out["text"] else []
        lengths = [len(i) for i in ids]
        if lengths and max(lengths) > budget:
            raise ValueError(f"{modality.name}: a serialisation has {max(lengths)} tokens > budget {budget}")
        result = pa.table({"sample_key": pa.array(out["sample_key"], pa.string()),
                           "crop": pa.array(out["crop"], pa.int16()),
                           "text": pa.array(out["text"], pa.string()),
                           "tokens": pa.array(ids, pa.list_(pa.int16())),
                           "structured": pa.array(out["structured"], pa.string())})
        stats = {"text_tokenizer": text_ref.digest[:12], "rows": len(ids),
                 "tokens_mean": round(float(np.mean(lengths)), 2) if lengths else 0.0,
                 "tokens_max": max(lengths, default=0), "empty_rows": int(sum(n == 0 for n in lengths))}
        if vq_ref is not None:
            stats["vq_tokenizer"] = vq_ref.id
        return UnitOutput({modality.token_artifact: result}, errors=errors, stats=stats)

    return run_unit(store, unit, compute, force=force)


def run_units(store: ArtifactStore, dataset: str, cfg, shard: int, labels: dict[str, tuple[Modality, InputRef]],
              force: bool = False) -> list[UnitResult]:
    """One unit per sequence modality of ``labels`` (from :func:`label_refs`). Every unit runs; the first
    failure (e.g. a VQ tokenizer not committed) is re-raised after the others."""
    results, failure = [], None
    for m, ref in labels.values():
        try:
            results.append(sequence_unit(store, dataset, cfg, shard, m, ref, force))
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


def read_structured(table: pa.Table, modality: str) -> list:
    """The ``structured`` column of a committed sequence token shard as PARSED_TYPES[modality] objects."""
    t = PARSED_TYPES[modality]
    return [t.model_validate_json(s) for s in table.column("structured").to_pylist()]


__all__ = ["CODE_VERSION", "SEQUENCE_MODALITIES", "SequenceConfig", "artifacts_for", "label_refs", "plan_shards",
           "read_structured", "run_units", "sequence_modalities", "sequence_unit", "text_tokenizer",
           "unpack_palettes", "vq_tokenizer"]
