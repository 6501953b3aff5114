"""One loading path for every model labeler: 'tiny', a local directory, an s3:// URI or a hub id.

The driver calls :func:`resolve` before any work starts, so a missing path fails fast with the path in
the message, and the weights digest (sha256 over the weight files) goes into the cache key. Actors
then load from the resolved local directory. Weights are read from safetensors, or, for releases that publish
only PyTorch ``.bin`` shards (T5 v1.1 XXL), with ``torch.load(weights_only=True)``: never as arbitrary pickles.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fourm_core.manifest import ModelRef

TINY = "tiny"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Released PyTorch weights that transformers reads with torch.load(weights_only=True): a single file or shards
# named by a pytorch_model.bin.index.json.
_BIN_WEIGHTS = re.compile(r"^pytorch_model(-\d{5}-of-\d{5})?\.bin$")


def weight_files(local_dir: str | Path) -> list[Path]:
    """The directory's weight files, sorted by name: its *.safetensors, else its ``pytorch_model*.bin`` shards."""
    files = sorted(Path(local_dir).glob("*.safetensors"))
    return files or sorted(p for p in Path(local_dir).iterdir() if _BIN_WEIGHTS.match(p.name))


class ModelLoadError(RuntimeError):
    """A labeler cannot load its model. The message names the labeler and the model source."""


@dataclass(frozen=True)
class ResolvedModel:
    source: str  # what the config said
    local_dir: str | None  # None for the tiny profile

    @property
    def is_tiny(self) -> bool:
        return self.local_dir is None


def cache_dir() -> Path:
    return Path(os.environ.get("FOURM_MODEL_CACHE", Path.home() / ".cache" / "fourm" / "models"))


def resolve(labeler: str, source: str) -> ResolvedModel:
    """Turn a model source into a local directory (downloading s3:// and hub sources into the cache)."""
    if source == TINY:
        return ResolvedModel(source, None)
    if "://" in source and not source.startswith("file://"):
        return ResolvedModel(source, _fetch_fsspec(labeler, source))
    path = source.removeprefix("file://")
    if os.path.isabs(path) or path.startswith(".") or os.path.exists(path) or not _HUB_ID.match(path):
        if not os.path.isdir(path):
            raise ModelLoadError(f"labeler '{labeler}': model path {path} does not exist (model source {source!r})")
        if not weight_files(path):
            raise ModelLoadError(f"labeler '{labeler}': model path {path} holds no *.safetensors (or "
                                 f"pytorch_model*.bin) weights (model source {source!r}); convert checkpoints to "
                                 f"safetensors first (docs/labelers.md)")
        return ResolvedModel(source, path)
    return ResolvedModel(source, _fetch_hub(labeler, source))


def _fetch_fsspec(labeler: str, uri: str) -> str:
    import fsspec

    dest = cache_dir() / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (dest / ".complete").exists():
        return str(dest)
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.isdir(path):
            raise FileNotFoundError(uri)
        dest.mkdir(parents=True, exist_ok=True)
        fs.get(path.rstrip("/") + "/", str(dest), recursive=True)
    except Exception as exc:
        raise ModelLoadError(f"labeler '{labeler}': cannot fetch model from {uri}: {type(exc).__name__}: {exc}") from exc
    (dest / ".complete").touch()
    return str(dest)


def _fetch_hub(labeler: str, repo_id: str) -> str:
    try:
        from huggingface_hub import list_repo_files, snapshot_download

        # safetensors when the repository has them; otherwise its pytorch_model*.bin shards (never both)
        weights = "*.safetensors" if any(f.endswith(".safetensors") for f in list_repo_files(repo_id)) \
            else "pytorch_model*.bin"
        return snapshot_download(repo_id, allow_patterns=["*.json", weights, "*.model", "*.txt"])
    except Exception as exc:
        raise ModelLoadError(f"labeler '{labeler}': cannot get hub model {repo_id!r} (offline, or no access?): "
                             f"{type(exc).__name__}: {exc}") from exc


_DIGESTS: dict[tuple[str, float, int], str] = {}


def weights_digest(local_dir: str) -> str:
    """sha256 over the directory's weight files (names and bytes, sorted by name); memoised per mtime."""
    files = weight_files(local_dir)
    stamp = (str(Path(local_dir).resolve()), max(f.stat().st_mtime for f in files), sum(f.stat().st_size for f in files))
    if stamp not in _DIGESTS:
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        _DIGESTS[stamp] = h.hexdigest()
    return _DIGESTS[stamp]


def state_dict_digest(module) -> str:
    """sha256 of a module's weights as safetensors bytes (the tiny profile's digest)."""
    from safetensors.torch import save

    # clone: tied weights (e.g. T5's shared embedding) share storage, which safetensors refuses
    state = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()


def model_ref(labeler: str, resolved: ResolvedModel, tiny_digest: str | None = None) -> ModelRef:
    if resolved.is_tiny:
        return ModelRef(id=f"{labeler}:tiny", source=TINY, digest=tiny_digest or "")
    return ModelRef(id=resolved.source, source=resolved.local_dir or resolved.source,
                    digest=weights_digest(resolved.local_dir))


def pick_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting
