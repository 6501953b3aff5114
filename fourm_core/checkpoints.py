"""The one safe reader of released model weights (labelers, converters, tokenizers).

Every format is read without running code from the file:

* ``.safetensors``: ``safetensors.torch.load_file`` (no code by construction);
* ``.pkl`` (detectron2's ``model_final_*.pkl``): an unpickler that rebuilds dicts of numpy arrays and nothing
  else, arrays turned into tensors;
* anything else (``.pth``, ``.pt``, ``.ckpt``, ``.bin``): ``torch.load(weights_only=True)``, with only the classes
  a caller names allow-listed (``argparse.Namespace`` for Lightning / ml-4m hyper-parameters).

A file the safe loaders refuse raises :class:`CheckpointError` naming the file, what was refused and the fix
(re-save the tensors once as safetensors in an environment you trust); we never retry unsafely.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Keys under which checkpoints nest their state dict (Lightning: state_dict; detectron2 / ml-4m: model).
STATE_DICT_KEYS = ("state_dict", "model")


class CheckpointError(ValueError):
    """A weights file that cannot be read safely or does not hold what the caller needs; says the file and fix."""


def _resave_fix(path: Path, key: str | None) -> str:
    item = f"[{key!r}]" if key else ""
    return (f"re-save its tensors once, in an environment you trust: safetensors.torch.save_file("
            f"torch.load({str(path)!r}, weights_only=False){item}, '{path.stem}.safetensors'), "
            f"and pass the .safetensors file")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds (ordered) dicts, lists and numpy arrays; any other global in the file is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
               ("_codecs", "encode")}  # protocol-2 pickles spell array bytes as _codecs.encode(str, "latin1")

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are read from .pkl")
        return super().find_class(module, name)


def read_checkpoint(path: str | Path, *, allow: Iterable[type] = (), fix: str | None = None) -> Any:
    """The object stored in ``path`` (safetensors -> dict of tensors; .pkl -> numpy arrays as tensors; else
    ``torch.load(weights_only=True)`` with the classes in ``allow`` permitted). ``fix`` replaces the generic
    advice in the error raised when the safe loader refuses the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; check the path (or download the released file)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file ({exc}); download it again") from exc
    if path.suffix == ".pkl":
        try:
            with open(path, "rb") as f:
                data = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise CheckpointError(f"{path}: {exc}. Only detectron2-style pickles of numpy arrays are read; "
                                  f"fix: {fix or _resave_fix(path, 'model')}") from exc
        return _arrays_to_tensors(data)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError (or a RuntimeError wrapping it) from the safe loader
        raise CheckpointError(f"{path}: torch.load(weights_only=True) refused the checkpoint "
                              f"({type(exc).__name__}: {_why(exc)}); fix: {fix or _resave_fix(path, None)}") from exc


def _why(exc: Exception) -> str:
    """The line of torch's long refusal that names what was refused (its first line is generic advice)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    named = [line for line in lines if "Unsupported" in line or "WeightsUnpickler error" in line]
    return (named or lines or [""])[0][:300]


def _arrays_to_tensors(data: Any) -> Any:
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(data))
    if isinstance(data, dict):
        return {k: _arrays_to_tensors(v) for k, v in data.items()}
    return data


def read_state_dict(path: str | Path, *, allow: Iterable[type] = (), keys: tuple[str, ...] = STATE_DICT_KEYS,
                    fix: str | None = None) -> dict[str, torch.Tensor]:
    """``name -> tensor`` of a checkpoint: the first of ``keys`` it nests its weights under, else the file's own
    dict. Non-tensor entries (detectron2's ``__author__``, Lightning counters) are dropped."""
    data = read_checkpoint(path, allow=allow, fix=fix)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, got {type(data).__name__}; pass the model's "
                              f"state dict file")
    for key in keys:
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    state = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path}: holds no tensors (top-level keys {sorted(map(str, data))[:8]}); "
                              f"pass the file with the model weights")
    return state
