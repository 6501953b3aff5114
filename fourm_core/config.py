"""Typed configuration: YAML files validated by pydantic.

A bad config fails before any work starts, with an error that names the file, the field and the bad
value. Dataset presets (``cc12m``, ``coyo700m``, ``c4``, ``demo``) ship inside the package; any other
name is read as a path to a YAML file.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator


class ConfigError(ValueError):
    """A configuration file or value is invalid. The message names file, field and value."""


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- sources


class UrlTsvSource(StrictModel):
    """CC12M-style URL list: TSV lines ``url<TAB>caption`` (optionally gzip-compressed)."""

    kind: Literal["url_tsv"] = "url_tsv"
    path: str
    limit: int | None = Field(None, gt=0, description="read only the first N rows")


class UrlParquetSource(StrictModel):
    """COYO-700M-style URL list: Parquet files with a URL and a text column."""

    kind: Literal["url_parquet"] = "url_parquet"
    path: str = Field(description="a Parquet file, a folder of them, or a glob")
    url_column: str = "url"
    text_column: str = "text"
    limit: int | None = Field(None, gt=0)
    keep_columns: list[str] = Field(default_factory=list,
                                    description="more columns kept per sample in the `meta` JSON column (COYO: id, scores)")


class FolderSource(StrictModel):
    """A folder of images with captions in sidecar ``.txt`` files or in a CSV (file_name, caption)."""

    kind: Literal["folder"] = "folder"
    path: str
    captions_csv: str | None = None
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
                             description="sample-key prefix; default: the folder's name")


class WebDatasetSource(StrictModel):
    """WebDataset tar shards whose samples have an image member and a ``txt`` caption member."""

    kind: Literal["webdataset"] = "webdataset"
    path: str = Field(description="a tar file, a folder of tars, or a glob")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
                             description="sample-key prefix; default: the folder's name")


class C4Source(StrictModel):
    """C4-style JSON lines (``.json`` or ``.json.gz``) with a ``text`` field: text-only samples."""

    kind: Literal["c4_jsonl"] = "c4_jsonl"
    path: str
    limit: int | None = Field(None, gt=0)
    max_chars: int = Field(2000, gt=0, description="truncate documents to this many characters")


class SyntheticSource(StrictModel):
    """Deterministic rendered scenes with captions and exact ground truth (depth, normals, semseg, boxes)."""

    kind: Literal["synthetic"] = "synthetic"
    n_samples: int = Field(32, gt=0)
    seed: int = 0
    size: int = Field(256, ge=64, le=2048)
    objects: tuple[int, int] = Field((1, 4), description="fewest and most objects a scene asks for (fewer when "
                                     "they do not fit without touching)")
    object_scale: float = Field(1.0, gt=0.1, le=4.0, description="scale of every object's size ranges: larger "
                                "objects cover more of the frame and more of the 14x14 token grid")

    @model_validator(mode="after")
    def _objects_range(self) -> "SyntheticSource":
        lo, hi = self.objects
        if not 0 <= lo <= hi <= 8:
            raise ValueError(f"synthetic objects {list(self.objects)}: give [fewest, most] with 0 <= fewest <= most "
                             "<= 8, e.g. objects: [1, 3]")
        return self

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler):
        # ingest's cache key holds the dumped source config: fields added after stores were built are left out
        # at their defaults, so those stores' shards stay cached (the scenes are the same)
        data = handler(self)
        for name in ("objects", "object_scale"):
            if getattr(self, name) == type(self).model_fields[name].default:
                data.pop(name, None)
        return data


class SkimagePhotosSource(StrictModel):
    """The public-domain colour photos that scikit-image ships, with captions we wrote."""

    kind: Literal["skimage_photos"] = "skimage_photos"


SourceConfig = Annotated[
    Union[UrlTsvSource, UrlParquetSource, FolderSource, WebDatasetSource, C4Source, SyntheticSource,
          SkimagePhotosSource],
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------------------------- stages


class DownloadConfig(StrictModel):
    """HTTP fetching of URL-list sources."""

    concurrency: int = Field(32, gt=0, le=1024)
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0, le=10, description="retries after the first try, for 5xx/429/network errors")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="larger bodies are refused")
    max_redirects: int = Field(5, ge=0)
    user_agent: str = "fourm-ingest/0.1 (+https://github.com/fourm-pipeline)"
    allow_networks: list[str] = Field(default_factory=list, description=(
        "CIDRs (e.g. 127.0.0.0/8) the downloader may connect to although they are loopback, private, "
        "link-local, multicast or reserved; by default such addresses are refused (untrusted URL lists)"))

    @field_validator("allow_networks")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        import ipaddress

        for n in v:
            try:
                ipaddress.ip_network(n, strict=False)
            except ValueError as exc:
                raise ValueError(f"{n!r} is not an IP network; write e.g. 127.0.0.0/8 or ::1/128 ({exc})") from None
        return v


class ImageFilterConfig(StrictModel):
    """Per-image filters (ingest_stage/filters.py); each refusal is a reason code in the errors table."""

    min_side: int = Field(32, ge=0, description="refuse images whose shorter original side is smaller (too_small)")
    max_aspect_ratio: float | None = Field(4.0, ge=1.0, description="longer / shorter side bound; None: unbounded")
    aspect_action: Literal["crop", "reject"] = Field(
        "crop", description="above max_aspect_ratio: centre-crop the longer side to the bound, or refuse (aspect_ratio)")
    min_scores: dict[str, float] = Field(default_factory=dict, description="meta column -> minimum (score_filter)")
    max_scores: dict[str, float] = Field(default_factory=dict, description="meta column -> maximum (score_filter)")


class TextFilterConfig(StrictModel):
    """Caption cleaning (always) and Gopher-style document quality filters (C4; off unless set)."""

    clean: bool = Field(True, description="unescape HTML entities, drop tags, collapse whitespace")
    require_caption: bool = Field(False, description="refuse image samples without a caption (no_caption)")
    quality: bool = Field(False, description="apply the quality rules below to text-only samples")
    min_words: int = Field(50, ge=0)
    max_words: int = Field(100_000, ge=1)
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_frac: float = 0.9
    max_ellipsis_lines_frac: float = 0.3
    min_alpha_words_frac: float = 0.8
    min_stop_words: int = 2
    max_dup_line_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    max_top_2gram_char_frac: float = 0.2
    max_top_3gram_char_frac: float = 0.18
    max_top_4gram_char_frac: float = 0.16
    max_dup_5gram_char_frac: float = 0.15
    languages: list[str] | None = Field(None, description=(
        "keep only documents whose language (py3langid) is one of these ISO 639-1 codes, e.g. [en]; None: any"))
    min_language_prob: float = Field(0.65, ge=0, le=1, description=(
        "with at least this probability (datatrove's LanguageFilter default)"))


class IngestConfig(StrictModel):
    shard_size: int = Field(1000, gt=0, description="samples per shard")
    shorter_side: int = Field(256, ge=16, description="resize so the shorter side is this many pixels")
    max_pixels: int = Field(89_478_485, gt=0, description="decompression-bomb guard (PIL's default)")
    image_format: Literal["jpeg", "png", "webp"] = "jpeg"
    jpeg_quality: int = Field(95, ge=50, le=100)
    dedupe: bool = True
    download: DownloadConfig = DownloadConfig()
    filters: ImageFilterConfig = ImageFilterConfig()
    text: TextFilterConfig = TextFilterConfig()


class DatasetConfig(StrictModel):
    """One dataset: where its samples come from and how every stage treats it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    description: str = ""
    text_only: bool = Field(False, description="text-only datasets (C4) feed only the caption modality")
    sources: list[SourceConfig] = Field(min_length=1)
    ingest: IngestConfig = IngestConfig()
    stages: list[str] = Field(["ingest"], min_length=1, description="stages build-dataset runs, in order")
    # Configs of the later stages are plain mappings here; each stage validates its own section with its
    # own typed model before work starts (the stage owns its schema, the core does not import stages).
    pseudolabel: dict[str, Any] = Field(default_factory=dict)
    tokenize: dict[str, Any] = Field(default_factory=dict)
    dedup: dict[str, Any] = Field(default_factory=dict)  # ingest_stage.dedup.DedupConfig


class StoreConfig(StrictModel):
    root: str = "./store"
    storage_options: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)

PRESET_PACKAGE = "fourm_core.presets"


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = json.dumps(value, default=str)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        lines.append(f"  field '{loc}': {e['msg']} (got {shown})")
    return "\n".join(lines)


def validate_config(model: type[M], data: Any, source: str = "<dict>") -> M:
    """Validate ``data`` against ``model``; raise ConfigError naming source, field and value."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(text: str, path: Path) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset variable without a default is an error."""

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise ConfigError(f"config file {path} uses ${{{name}}} but {name} is not set; set it or give a "
                              f"default as ${{{name}:-value}}")
        return default

    return _ENV_REF.sub(repl, text)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return yaml.safe_load(_expand_env(path.read_text(), path))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None


def preset_names(kind: str = "datasets") -> list[str]:
    folder = resources.files(PRESET_PACKAGE) / kind
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str, kind: str = "datasets") -> Path:
    return Path(str(resources.files(PRESET_PACKAGE) / kind / f"{name}.yaml"))


def load_config(model: type[M], name_or_path: str | Path, kind: str, overrides: dict[str, Any] | None = None) -> M:
    """Load a preset by name (``kind`` folder of the presets) or a YAML file by path.

    ``overrides`` maps dotted field paths to values (``{"ingest.shard_size": 8}``) and is applied before
    validation, so an override is checked like any other value.
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        path = candidate
    elif str(name_or_path) in preset_names(kind):
        path = preset_path(str(name_or_path), kind)
    else:
        raise ConfigError(
            f"{name_or_path!r} is neither a YAML file nor a {kind} preset; presets: {', '.join(preset_names(kind))}"
        )
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return validate_config(model, apply_overrides(data, overrides, path), str(path))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None, source: str | Path) -> dict[str, Any]:
    """Set dotted field paths (``{"ingest.shard_size": 8}``) in a config mapping read from ``source``, in place."""
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: '{key}' is not a mapping in {source}")
        node[leaf] = value
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """CLI ``--set FIELD=VALUE`` items -> overrides; values are parsed as YAML (numbers, booleans, lists, JSON)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set ingest.shard_size=16")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key] = value
    return out


def load_dataset_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> DatasetConfig:
    """The dataset config for a preset name (cc12m, coyo700m, c4, demo) or a YAML path."""
    return load_config(DatasetConfig, name_or_path, "datasets", overrides)


def normalise(config: BaseModel | dict[str, Any]) -> str:
    """Canonical JSON of a config: the form that goes into cache keys and manifests; exactly
    ``json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)``."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    if ENCODE_SORTED is None:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    try:
        return "".join(ENCODE_SORTED(data, 0))
    except RecursionError:  # a circular reference: json.dumps raises its ValueError("Circular reference ...")
        return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


# json's own C encoder, made once and called directly: json.dumps with these arguments builds a JSONEncoder per
# call, which was half of the cost of a cache key (the orchestrator computes one per unit of the dataset), and
# making the C encoder per call was half of what remained. Without a markers dict (None) it keeps no state
# between calls, so threads share it safely; a circular reference then ends in RecursionError, answered above.
# Public for Unit.cache_key, which inlines normalise's dict case (one Python call less per unit).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
ENCODE_SORTED = (_c_make_encoder(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True)
                 if _c_make_encoder is not None else None)
