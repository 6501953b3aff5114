"""The evaluation config (validated YAML; presets in ``eval_stage/presets/eval``: ``demo``, ``4m21_b``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fourm_core.config import ConfigError, StrictModel, apply_overrides, load_yaml, validate_config

PRESETS = Path(__file__).parent / "presets" / "eval"

# RGB-conditioned generation wants tok_rgb (or RGB pixels); until a store has it, the first available of
# these stands in (Canny edges are a function of the RGB image).
DEFAULT_CONDITIONS = ("tok_rgb@224", "tok_canny_edge@224", "tok_sam_edge@224", "caption")
DEFAULT_TARGETS = ("tok_depth@224", "tok_normal@224", "tok_semseg@224", "det", "caption")


class CheckpointSpec(StrictModel):
    """Where the pretrain checkpoint is: ``<namespace>/checkpoints/<run>/step-NNNNNNNN`` (train_stage.trainer)."""

    namespace: str = Field("training", description="store 'dataset' the trainer commits checkpoints under")
    run: str = Field("demo", description="TrainConfig.run_name")
    step: int | None = Field(None, gt=0, description="default: the latest committed step")


class GenerationSpec(StrictModel):
    """MaskGIT settings for the X-from-condition generations (eval_stage.generate.TargetStep)."""

    steps: int = Field(8, gt=0)
    token_schedule: Literal["cosine", "linear"] = "cosine"
    temperature: float = Field(0.0, ge=0, description="0 = greedy (deterministic; the metric protocol)")
    top_k: int | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    guidance_scale: float | None = None


class KnnSpec(StrictModel):
    """ImageNet-style kNN classification on predicted global embeddings (DINOv2 protocol, 4M-FACTS §8).

    Gallery: up to ``gallery_samples`` of the checkpoint's training samples; queries: the evaluated samples.
    Both are embedded the same way (global tokens generated from the condition, detokenized); class labels
    come from the dataset's ground truth column ``label_column``."""

    modality: str = Field("tok_dinov2_global", description="global-token modality to predict")
    label_column: str = Field("label", description="ground_truth column with each image's class")
    k: int = Field(20, gt=0)
    temperature: float = Field(0.07, gt=0)
    gallery_samples: int = Field(1024, gt=0)


class BoxesSpec(StrictModel):
    """How the boxes task writes ``det`` (eval_stage.boxes_eval.generate_boxes): greedy under the det grammar, each
    box scored by its class token's probability; ``[EOS]`` is not allowed before ``min_boxes`` boxes and is forced
    after ``max_boxes`` (None: where the model writes it). COCO AP ranks boxes by score, so boxes written past the
    model's own [EOS] can only add recall at the low-score end (Pix2Seq §2.3 decodes a fixed number this way)."""

    min_boxes: int = Field(0, ge=0)
    max_boxes: int | None = Field(None, gt=0)
    coordinates: Literal["greedy", "median"] = Field(
        "greedy", description="greedy: the most likely bin of each coordinate; median: the median bin of the "
                              "model's distribution over that coordinate's bins (eval_stage.generate.det_grammar)")

    @model_validator(mode="after")
    def _order(self) -> "BoxesSpec":
        if self.max_boxes is not None and self.max_boxes < self.min_boxes:
            raise ValueError(f"boxes.max_boxes={self.max_boxes} < boxes.min_boxes={self.min_boxes}")
        return self


class EvalConfig(StrictModel):
    name: str = Field("eval", pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
    dataset: str = Field("demo", description="store namespace of the token shards, labels and ground truth")
    shards: list[int] | None = Field(None, description="default: shards the checkpoint did not train on, "
                                                       "else every shard (flagged in the report)")
    checkpoint: CheckpointSpec = CheckpointSpec()
    tokenizer_dataset: str | None = Field(None, description="namespace of the committed tokenizers (default: dataset)")
    tokenizer_profile: str = "tiny"
    condition: list[str] | None = Field(None, description="input modalities of the one-to-all generation "
                                                          f"(default: the first available of {DEFAULT_CONDITIONS})")
    targets: list[str] = Field(list(DEFAULT_TARGETS), description="modalities to generate and score")
    max_samples: int = Field(16, gt=0, description="samples (crop 0) scored per target")
    batch_size: int = Field(16, gt=0)
    generation: GenerationSpec = GenerationSpec()
    decode_steps: int | None = Field(None, gt=0, description="DDIM steps of diffusion decoders (default: theirs)")
    loss_repeats: int = Field(4, gt=0, description="masked draws per held-out sample for the token loss")
    mixture: str | None = Field(None, description="masking mixture of the held-out loss (default: the checkpoint's)")
    baseline_samples: int = Field(256, gt=0, description="training samples the trivial baseline is fitted on "
                                                          "(mean depth / normal map, majority class)")
    ensemble: int = Field(1, gt=0, description="samples generated per target and ensembled (mean depth, mean "
                                               "normal, majority class); > 1 needs generation.temperature > 0")
    boxes: BoxesSpec = BoxesSpec()
    knn: KnnSpec | None = Field(KnnSpec(), description="kNN classification on predicted global embeddings (null: off)")
    grid_samples: int = Field(3, gt=0, description="rows of the generation grid")
    seed: int = 0
    namespace: str | None = Field(None, description="where results are committed (default: dataset)")
    device: str = Field("cpu", description="torch device (not part of the cache key)")

    @model_validator(mode="after")
    def _ensemble_needs_sampling(self) -> "EvalConfig":
        if self.ensemble > 1 and self.generation.temperature == 0:
            raise ValueError(f"ensemble={self.ensemble} with generation.temperature=0 would average identical "
                             f"greedy samples; set generation.temperature > 0 (e.g. 1.0) or ensemble: 1")
        return self

    def key_config(self) -> dict[str, Any]:
        """The fields that determine the results (cache key)."""
        return self.model_dump(mode="json", exclude={"device"})


def load_eval_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> EvalConfig:
    """An eval preset (``demo``, ``4m21_b``) or a YAML path, with dotted ``overrides`` applied first."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = PRESETS / f"{name_or_path}.yaml"
        if not p.exists():
            names = sorted(x.stem for x in PRESETS.glob("*.yaml"))
            raise ConfigError(f"{name_or_path!r} is neither a YAML file nor an eval preset; presets: {', '.join(names)}")
    return validate_config(EvalConfig, apply_overrides(load_yaml(p) or {}, overrides, p), str(p))
