"""fourm_core.checkpoints: the one safe reader of released weights. Each format round-trips; a file whose
unpickling would run code is refused (never executed) with an error naming the file and the fix."""

import argparse
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fourm_core.checkpoints import CheckpointError, read_checkpoint, read_state_dict

WEIGHTS = {"a.weight": torch.arange(6.0).view(2, 3), "b.bias": torch.ones(4)}


class Payload:
    """Unpickling this calls ``executed.append`` (a stand-in for arbitrary code)."""

    def __reduce__(self):
        return (executed.append, ("ran",))


executed: list[str] = []


def _same(got: dict, want: dict) -> bool:
    return set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_each_format_reads_the_same_tensors(tmp_path):
    save_file(WEIGHTS, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": WEIGHTS, "epoch": 3}, tmp_path / "lightning.ckpt")  # Lightning nesting
    torch.save({"model": WEIGHTS, "args": argparse.Namespace(codebook_size=8)}, tmp_path / "ml4m.pth")
    with open(tmp_path / "d2.pkl", "wb") as f:  # detectron2: numpy arrays, protocol 2, an author string
        pickle.dump({"model": OrderedDict((k, v.numpy()) for k, v in WEIGHTS.items()), "__author__": "d2"}, f,
                    protocol=2)
    assert _same(read_state_dict(tmp_path / "w.safetensors"), WEIGHTS)
    assert _same(read_state_dict(tmp_path / "lightning.ckpt"), WEIGHTS)
    assert _same(read_state_dict(tmp_path / "d2.pkl"), WEIGHTS)
    assert _same(read_state_dict(tmp_path / "ml4m.pth", allow=[argparse.Namespace]), WEIGHTS)
    assert read_checkpoint(tmp_path / "ml4m.pth", allow=[argparse.Namespace])["args"].codebook_size == 8
    assert isinstance(read_state_dict(tmp_path / "d2.pkl")["a.weight"], torch.Tensor)


@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".bin", ".pkl"])
def test_a_pickle_that_would_run_code_is_refused_not_run(tmp_path, suffix):
    path = tmp_path / f"evil{suffix}"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": Payload(), "y": np.zeros(2)}}, f, protocol=2)
    executed.clear()
    with pytest.raises(CheckpointError, match=rf"evil\{suffix}: .*(refus|Weights only load failed).*fix: "
                                              r".*safetensors"):
        read_state_dict(path)
    assert executed == []


def test_a_class_not_allowed_is_refused_and_allowed_when_named(tmp_path):
    torch.save({"model": WEIGHTS, "args": argparse.Namespace(x=1)}, tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match=r"t\.pth: torch.load\(weights_only=True\) refused.*Namespace"):
        read_state_dict(tmp_path / "t.pth")
    assert _same(read_state_dict(tmp_path / "t.pth", allow=[argparse.Namespace]), WEIGHTS)


def test_bad_files_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.pth: no such checkpoint file"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match=r"broken\.safetensors: not a valid safetensors file"):
        read_state_dict(tmp_path / "broken.safetensors")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth: expected a dict of weights, got list"):
        read_state_dict(tmp_path / "list.pth")
    torch.save({"epoch": 1}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match=r"empty\.pth: holds no tensors"):
        read_state_dict(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="yacs"):  # a caller's own fix replaces the generic advice
        with open(tmp_path / "e.ckpt", "wb") as f:
            pickle.dump(Payload(), f)
        read_state_dict(tmp_path / "e.ckpt", fix="install yacs and re-save")
