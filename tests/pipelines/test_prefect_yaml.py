"""Every deployment in prefect.yaml is well-formed without a server: its entrypoint loads, every parameter it
sets is a parameter of its flow, the config it names validates, and a chain names deployments that exist.

Running them is the job of tests/pipelines/test_deployment.py (whose DEPLOYMENTS lists every deployment and
its pool, checked against what ``prefect deploy --all`` made) and test_ray_cluster.py: build-dataset/demo,
build-dataset/cc12m (its schedule), finetune/demo and chain/demo (which runs pretrain/demo and evaluate/demo)
run on real workers; the production-size ones are validated here and by their stages' tiny-size tests.
"""

from __future__ import annotations

import inspect

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from tests.pipelines.cluster import REPO

SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS = SPEC["deployments"]


@pytest.mark.parametrize("d", DEPLOYMENTS, ids=lambda d: f"{d['entrypoint'].rsplit(':', 1)[1]}/{d['name']}")
def test_deployment_parameters_and_config_are_valid(d):
    flow = load_flow_from_entrypoint(str(REPO / d["entrypoint"]))
    params = d["parameters"]
    names = set(inspect.signature(flow.fn).parameters)
    assert set(params) <= names, f"{flow.name}/{d['name']}: not flow parameters: {set(params) - names}"
    kind = d["entrypoint"].rsplit(":", 1)[1]
    if kind == "build_dataset":
        from fourm_core.config import load_dataset_config

        load_dataset_config(params["dataset"])
    elif kind in ("pretrain", "finetune"):
        from pipelines.pretrain import train_config

        cfg = train_config(params["config"], params.get("overrides"), params.get("steps"))
        assert (cfg.init_from is not None) == (kind == "finetune")
    elif kind == "evaluate":
        from eval_stage.config import load_eval_config

        load_eval_config(params["config"], params.get("overrides"))
    else:
        assert kind == "chain"
        known = {f"{flow_name(x)}/{x['name']}" for x in DEPLOYMENTS}
        builds = params["build"] if isinstance(params["build"], list) else [params["build"]]
        assert {*builds, params["pretrain"], params["evaluate"]} <= known
    if kind == "finetune" and params.get("evaluation"):  # the comparison's eval config: the fine-tuning's task
        from pipelines.finetune_eval import comparison_configs

        evals = comparison_configs(cfg, params["evaluation"], params.get("evaluation_overrides"))
        tuned, start = evals["finetuned"], evals["pretrained"]
        assert (tuned.checkpoint.run, tuned.checkpoint.step) == (cfg.run_name, cfg.steps)
        assert start.checkpoint.run == cfg.init_from.run and tuned.namespace == start.namespace != tuned.dataset
        assert tuned.condition and tuned.targets and tuned.mixture == cfg.mixture
        if params["config"] == "finetune_demo":
            assert (tuned.condition, tuned.targets) == (["tok_rgb@224"], ["tok_depth@224"])


def flow_name(d: dict) -> str:
    return load_flow_from_entrypoint(str(REPO / d["entrypoint"])).name


def test_compare_rows_pairs_metrics_and_knows_which_way_is_better():
    from pipelines.finetune_eval import compare_rows

    def row(metric, value, higher):
        return {"task": "depth", "target": "tok_depth@224", "reference": "ground truth", "metric": metric,
                "higher_is_better": higher, "primary": metric == "abs_rel", "model": value, "samples": 4}

    tuned = [row("abs_rel", 0.2, False), row("delta1", 0.5, True), row("only_here", 1.0, True), row("nan", None, True)]
    start = [row("abs_rel", 0.3, False), row("delta1", 0.6, True), row("nan", 0.1, True)]
    out = {r["metric"]: (r["finetuned"], r["pretrained"], r["better"]) for r in compare_rows(tuned, start)}
    assert out == {"abs_rel": (0.2, 0.3, True), "delta1": (0.5, 0.6, False), "nan": (None, 0.1, None)}
