"""Run by tests under ``torchrun``: train a few steps and write the final weights (rank 0)."""

from __future__ import annotations

import json
import sys

import torch
from safetensors.torch import save_file

from fourm_core import ArtifactStore
from train_stage.config import TrainConfig
from train_stage.model.hub import reference_state
from train_stage.trainer import Trainer, _full_state_dict


def main() -> None:
    cfg = TrainConfig(**json.loads(sys.argv[1]))
    store_root, out = sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    t = Trainer(cfg, ArtifactStore(store_root))
    t.fit()
    weights, _ = reference_state(_full_state_dict(t.wrapped), t.model.tied_parameter_names())
    if t.d.main:
        save_file(weights, out)
        with open(out + ".json", "w") as f:
            json.dump([r["loss"] for r in t.history], f)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
