"""The reference-format 4M checkpoint loads strictly from an s3:// prefix (real S3 server)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import torch
from safetensors.torch import load_file

from train_stage.model import from_pretrained

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "ml4m" / "fm" / "tiny"


def test_reference_checkpoint_loads_from_s3(s3_root):
    root, options = s3_root
    fs, path = fsspec.core.url_to_fs(root, **options)
    for name in ("config.json", "model.safetensors"):
        fs.put(str(TINY / name), f"{path}/released/{name}")
    model = from_pretrained(f"{root}/released", storage_options=options)
    ref = load_file(str(TINY / "model.safetensors"))
    assert torch.equal(model.state_dict()["decoder_embeddings.caption.to_logits.weight"],
                       ref["decoder_embeddings.caption.to_logits.weight"])
