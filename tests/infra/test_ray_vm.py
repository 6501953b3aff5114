"""infra/ray/cluster-vm.yaml: Ray's cluster launcher accepts it (the preparation and schema check that
`ray up` runs, from the ray package itself), and it runs the project image on every node."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "infra" / "ray" / "cluster-vm.yaml"


def _check(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_launcher_accepts_the_config():
    config = yaml.safe_load(CONFIG.read_text())
    prepared = _check(config)
    node = prepared["available_node_types"]["local.cluster.node"]
    assert node["min_workers"] == node["max_workers"] == len(config["provider"]["worker_ips"])
    docker = config["docker"]
    assert docker["head_image"].endswith("-cpu") and docker["worker_image"].endswith("-cuda")
    assert "--gpus all" in docker["worker_run_options"]
    head = " ".join(config["head_start_ray_commands"])
    assert "--port=6379" in head and "--dashboard-host=0.0.0.0" in head and "--num-cpus=0" in head
    assert "--address=$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])


@pytest.mark.parametrize("mutate", [
    lambda c: c["docker"].update(worker_imag="x"),        # misspelt key: the schema is closed
    lambda c: c.update(idle_timeout_minutes="ten"),       # wrong type
    lambda c: c.update(head_start_ray_commands="ray start --head"),  # a string, not a list of commands
], ids=["unknown-key", "wrong-type", "commands-not-a-list"])
def test_schema_check_can_fail(mutate):
    config = yaml.safe_load(CONFIG.read_text())
    mutate(config)
    with pytest.raises(jsonschema.ValidationError):
        _check(config)
