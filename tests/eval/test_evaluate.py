"""The evaluation stage on a small real store: committed metrics, report and grid; lineage; caching."""

from __future__ import annotations

import json

import pytest

from eval_stage.config import load_eval_config
from eval_stage.checkpoints import find_checkpoint
from eval_stage.evaluation import evaluate, evaluation_unit, result_summary
from eval_stage.tasks import EvalPlan
from fourm_core.config import ConfigError
from fourm_core.lineage import lineage
from fourm_core.units import UnitStatus
from tests.conftest import TINY_EVAL_OVERRIDES


@pytest.fixture(scope="module")
def first_run(tiny_eval_store):
    store, _ = tiny_eval_store
    cfg = load_eval_config("demo", TINY_EVAL_OVERRIDES)
    return store, cfg, evaluate(store, cfg)


def test_evaluation_commits_metrics_report_and_grid(first_run):
    store, cfg, res = first_run
    assert res.status == UnitStatus.DONE
    [m] = res.manifests
    assert (m.dataset, m.artifact) == ("ev", "evaluations/tiny/step-00000001")
    rows = store.read_table("ev", m.artifact, None).to_pylist()
    primary = {(r["target"], r["reference"], r["metric"]) for r in rows if r["primary"] and r["task"] != "kNN classification"}
    assert primary == {(t, ref, metric) for t, metric in (("tok_depth@224", "abs_rel"), ("tok_semseg@224", "miou"))
                       for ref in ("pseudo label", "ground truth")}
    for r in rows:
        if r["task"] != "masked tokens":  # every scored metric has the model, its tokenizer bound and a baseline
            assert r["samples"] == 4 and r["baseline"] is not None and r["tokenizer_bound"] is not None, r
    # the ground truth of synthetic scenes is exact: the mean-depth baseline scores a real (finite) abs_rel
    gt_depth = next(r for r in rows if r["reference"] == "ground truth" and r["metric"] == "abs_rel")
    assert 0 < gt_depth["baseline"] < 10 and gt_depth["model"] is not None
    # the baseline is fitted on the checkpoint's training samples (here all 8 samples of both shards)
    assert {r["baseline_kind"] for r in rows if r["target"] == "tok_depth@224" and r["task"] == "depth"} == {"mean depth map, 8 training samples"}
    tokens = {r["target"] for r in rows if r["task"] == "masked tokens"}
    assert tokens and tokens <= {"tok_canny_edge@224", "tok_depth@224", "tok_normal@224", "tok_semseg@224",
                                 "tok_dinov2_global", "det", "caption"}
    # kNN on predicted DINOv2 global embeddings: queries = the 4 evaluated samples, gallery = the 8 training
    # samples embedded the same way, classes = the scenes' ground-truth label (k capped by the gallery)
    knn = {r["metric"]: r for r in rows if r["task"] == "kNN classification"}
    assert set(knn) == {"top1", "top5"} and knn["top1"]["primary"] and knn["top1"]["samples"] == 4
    assert knn["top1"]["reference"].startswith("ground truth 'label'") and "gallery 8, k 8" in knn["top1"]["reference"]
    for r in knn.values():
        assert all(0 <= r[c] <= 100 for c in ("model", "tokenizer_bound", "baseline"))
        assert r["baseline_kind"].startswith("most frequent gallery classes")

    files = {f.name for f in m.files}
    assert {"data.parquet", "data.report.md", "data.grid.png", "data.metrics.json"} <= files
    png = store.read_bytes(store.data_path("ev", m.artifact, None, ".grid.png"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    report = store.read_bytes(store.data_path("ev", m.artifact, None, ".report.md")).decode()
    assert "tokenizer bound" in report and "| depth (tok_depth@224) | ground truth | abs_rel" in report
    # no tok_rgb in this store: the stand-in condition is said out loud
    assert "conditioned on tok_canny_edge@224 instead of RGB" in report
    assert "not held out" in report  # the 1-step checkpoint read every shard
    metrics = json.loads(store.read_bytes(store.data_path("ev", m.artifact, None, ".metrics.json")))
    assert metrics["info"]["condition"] == ["tok_canny_edge@224"]


def test_lineage_reaches_checkpoint_tokenizers_and_shards(first_run, tiny_eval_store):
    store, cfg, res = first_run
    _, checkpoint = tiny_eval_store
    m = res.manifests[0]
    assert m.ingredients.model.digest == checkpoint.digest
    node = lineage(store, "ev", m.artifact, None)
    assert not node.missing
    parents = {(p.manifest.dataset, p.manifest.artifact) for p in node.parents}
    assert ("training", "checkpoints/tiny/step-00000001") in parents
    assert {("ev", "tokenizers/depth_diffusion-tiny"), ("ev", "tokenizers/semseg_vqvae-tiny"),
            ("ev", "tokens/tok_depth-224"), ("ev", "labels/depth"), ("ev", "ground_truth"),
            ("ev", "tokenizers/dinov2_global_memcodes-tiny"), ("ev", "tokens/tok_dinov2_global")} <= parents


def test_rerun_is_cached_and_config_changes_the_key(first_run):
    store, cfg, res = first_run
    again = evaluate(store, cfg)
    assert again.status == UnitStatus.CACHED and again.manifests[0] == res.manifests[0]
    summary = result_summary(store, again)
    assert summary["status"] == "cached" and summary["report"].endswith("data.report.md")
    ckpt = find_checkpoint(store, cfg)
    key = evaluation_unit(store, cfg, ckpt, EvalPlan(store, cfg, ckpt)).cache_key
    assert key == res.manifests[0].cache_key
    other = load_eval_config("demo", {**TINY_EVAL_OVERRIDES, "seed": 1})
    assert evaluation_unit(store, other, ckpt, EvalPlan(store, other, ckpt)).cache_key != key
    # the device is not part of the key
    dev = load_eval_config("demo", {**TINY_EVAL_OVERRIDES, "device": "cpu:0"})
    assert evaluation_unit(store, dev, ckpt, EvalPlan(store, dev, ckpt)).cache_key == key


def test_absent_modalities_are_skipped_with_a_note(tiny_eval_store):
    store, _ = tiny_eval_store
    cfg = load_eval_config("demo", {**TINY_EVAL_OVERRIDES, "targets": ["tok_depth@224", "tok_clip@224"],
                                    "condition": ["tok_rgb@224", "tok_canny_edge@224"]})
    ckpt = find_checkpoint(store, cfg)
    plan = EvalPlan(store, cfg, ckpt)
    assert plan.targets == ["tok_depth@224"] and plan.condition == ["tok_canny_edge@224"]
    assert any("tok_clip@224" in n and "skipped" in n for n in plan.notes)
    assert any("condition tok_rgb@224" in n for n in plan.notes)
    # a sequence target that is also the condition is skipped with a note; the other one is planned
    cfg = load_eval_config("demo", {**TINY_EVAL_OVERRIDES, "targets": ["caption", "det"], "condition": ["caption"],
                                    "knn": None})
    plan = EvalPlan(store, cfg, find_checkpoint(store, cfg))
    assert plan.captions is None and "target caption: is the condition; skipped" in plan.notes
    assert plan.boxes is not None and plan.condition == ["caption"]
    # the grid writes a caption condition as text, through the tokenizer its token shards were made with
    import torch

    from eval_stage.caption_eval import words
    from eval_stage.run import sequence_texts

    key = plan.keys[0]
    [text] = sequence_texts(store, plan, "caption", torch.from_numpy(plan.tokens["caption"][key])[None])
    by_key = {r["sample_key"]: r["text"] for s in plan.shards
              for r in store.read_table("ev", "tokens/caption", s, columns=["sample_key", "text"]).to_pylist()}
    assert text and words(text) == words(by_key[key])


def test_missing_checkpoint_is_a_clear_error(tiny_eval_store):
    store, _ = tiny_eval_store
    with pytest.raises(FileNotFoundError, match="no checkpoint training/checkpoints/nope"):
        evaluate(store, load_eval_config("demo", {**TINY_EVAL_OVERRIDES, "checkpoint.run": "nope"}))


def test_ensembling_averages_several_sampled_generations(tiny_eval_store):
    store, _ = tiny_eval_store
    with pytest.raises(ConfigError, match="generation.temperature > 0"):
        load_eval_config("demo", {**TINY_EVAL_OVERRIDES, "ensemble": 2})
    cfg = load_eval_config("demo", {**TINY_EVAL_OVERRIDES, "ensemble": 3, "generation.temperature": 1.0,
                                    "knn": None, "targets": ["tok_semseg@224"]})
    res = evaluate(store, cfg)
    m = res.manifests[0]
    report = store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".report.md")).decode()
    assert "ensemble of 3 samples per target" in report
    assert not any("kNN" in r["task"] for r in store.read_table(m.dataset, m.artifact, None).to_pylist())


def test_ensemble_combines_samples_per_target():
    import torch

    from eval_stage.score import ensemble

    depth = [torch.full((1, 2, 2), v) for v in (1.0, 2.0, 6.0)]
    assert torch.equal(ensemble("depth", depth), torch.full((1, 2, 2), 3.0))
    sem = [torch.tensor([[[1, 2]]]), torch.tensor([[[3, 2]]]), torch.tensor([[[3, 1]]])]
    assert ensemble("semseg", sem).tolist() == [[[3, 2]]]
    n = [torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1), torch.tensor([0, 1.0, 0]).view(1, 3, 1, 1)]
    assert torch.allclose(ensemble("normal", n).flatten(), torch.tensor([2 ** -0.5, 2 ** -0.5, 0]))
    assert ensemble("depth", depth[:1]) is depth[0]


def test_boxes_are_generated_parsed_and_scored_by_ap(tiny_eval_store):
    store, _ = tiny_eval_store
    cfg = load_eval_config("demo", {**TINY_EVAL_OVERRIDES, "targets": ["det"], "knn": None})
    res = evaluate(store, cfg)
    m = res.manifests[0]
    rows = [r for r in store.read_table(m.dataset, m.artifact, None).to_pylist() if r["task"] == "boxes"]
    got = {(r["reference"], r["metric"]): r for r in rows}
    assert set(got) == {(ref, metric) for ref in ("pseudo label", "ground truth")
                        for metric in ("ap50", "ap", "ap50_any_class", "class_f1")}
    # the stored det tokens are the pseudo label's boxes, quantised to 1/1000 of the crop: AP 1 against it, and
    # so are the diagnostics (the right places, the right class names)
    for metric in ("ap50", "ap50_any_class", "class_f1"):
        assert got[("pseudo label", metric)]["tokenizer_bound"] == pytest.approx(1.0), metric
    for r in rows:
        assert r["samples"] == 4 and 0 <= r["model"] <= 1 and 0 <= r["baseline"] <= 1
    # the class-prior baseline names every training class in every image: some of them are in each image
    for ref in ("pseudo label", "ground truth"):
        assert got[(ref, "class_f1")]["baseline"] > 0
        assert r["baseline_kind"] == "class-prior mean boxes, 8 training samples"
    assert got[("ground truth", "ap")]["primary"] and not got[("ground truth", "ap50")]["primary"]
    info = json.loads(store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".metrics.json")))["info"]
    assert info["targets"] == ["det"]


def test_captions_are_generated_and_scored_by_bleu(tiny_eval_store):
    store, _ = tiny_eval_store
    cfg = load_eval_config("demo", {**TINY_EVAL_OVERRIDES, "targets": ["caption"], "knn": None})
    res = evaluate(store, cfg)
    m = res.manifests[0]
    rows = {r["metric"]: r for r in store.read_table(m.dataset, m.artifact, None).to_pylist()
            if r["task"] == "captioning"}
    assert set(rows) == {"bleu4", "bleu1"} and rows["bleu4"]["primary"] and not rows["bleu1"]["primary"]
    for r in rows.values():
        assert r["reference"] == "source caption" and r["samples"] == 4
        assert 0 <= r["model"] <= 1 and r["baseline_kind"] == "most frequent caption, 8 training samples"
        # the stored tokens decode back to the (lowercased) source caption of each synthetic scene
        assert r["tokenizer_bound"] == pytest.approx(1.0)
    info = json.loads(store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".metrics.json")))["info"]
    assert info["targets"] == ["caption"] and len(info["captions"]) == cfg.grid_samples
    report = store.read_bytes(store.data_path(m.dataset, m.artifact, None, ".report.md")).decode()
    first = info["captions"][0]
    assert "## Captions" in report and f"| `{first['key']}` |" in report and first["reference"] in report


def test_bleu_and_the_caption_baseline():
    from eval_stage.caption_eval import bleu, most_frequent, words

    assert words("A red Cube, on the floor.") == "a red cube , on the floor ."
    same = bleu(["A red cube on the floor."], ["a red cube on the floor ."])
    assert same == {"bleu4": pytest.approx(1.0), "bleu1": pytest.approx(1.0)}
    partial = bleu(["a red cube on a table"], ["a red cube on the floor"])
    assert 0 < partial["bleu4"] < partial["bleu1"] < 1
    assert bleu(["zebra"], ["a red cube"])["bleu1"] == 0
    assert most_frequent(["b", "a", "b", "a", "c"]) == "a"  # ties: alphabetical, so the baseline is stable


def test_a_changed_text_tokenizer_is_refused_with_the_fix():
    from eval_stage.sequences import load_text_tokenizer
    from fourm_core.manifest import ModelRef
    from tokenize_stage.captions import text_tokenizer

    _, ref = text_tokenizer(None)
    assert load_text_tokenizer(ref).get_vocab_size() > 1000  # the one the shards name loads
    stale = ref.model_copy(update={"digest": "0" * 64})
    with pytest.raises(ValueError, match="token shards were made with 0000000000000000; restore that tokenizer"):
        load_text_tokenizer(ModelRef(**stale.model_dump()))


def test_report_caption_cells_stay_one_short_table_cell():
    from eval_stage.report import table_cell

    assert table_cell("a | b\nc") == "a \\| b c" and table_cell("") == "(empty)"
    long = table_cell("a " * 300)
    assert len(long) == 200 and long.endswith("…")


def test_det_sequences_parse_back_to_boxes():
    import torch

    from eval_stage.boxes_eval import class_prior, parse_det
    from tokenize_stage.captions import text_tokenizer
    from tokenize_stage.text.serialise import det
    from fourm_core.structured import Box, Detections

    tok, _ = text_tokenizer(None)
    dets = Detections(boxes=[Box(xyxy=(0.1, 0.2, 0.5, 0.6), class_name="cup", score=0.9),
                             Box(xyxy=(0.3, 0.3, 0.9, 0.8), class_name="traffic light", score=0.8)])
    ids = torch.tensor(tok.encode(det.serialise(dets)).ids + [0, 0])  # right-padded like generated rows
    parsed = parse_det(tok, ids)
    assert [c for _, c in parsed] == ["cup", "traffic light"]
    assert parsed[0][0] == pytest.approx((0.1, 0.2, 0.5, 0.6), abs=1e-3)
    assert parse_det(tok, torch.tensor([5, 17, 0])) == []  # a malformed generation gives no boxes, no error
    prior = class_prior([[((0, 0, 0.5, 0.5), "cup")], [((0.5, 0.5, 1, 1), "cup"), ((0, 0, 1, 1), "book")]])
    assert prior == [((0.25, 0.25, 0.75, 0.75), "cup"), ((0.0, 0.0, 1.0, 1.0), "book")]


def test_paper_table_has_the_papers_columns_and_prefers_ground_truth():
    from eval_stage.report import paper_table

    def row(task, ref, metric, model, bound, base):
        return {"task": task, "reference": ref, "metric": metric, "model": model, "tokenizer_bound": bound,
                "baseline": base}

    rows = [row("depth", "pseudo label", "abs_rel", 0.9, 0.8, 0.7), row("depth", "ground truth", "abs_rel", 0.5, 0.2, 0.4),
            row("semantic segmentation", "pseudo label", "miou", 0.3, 0.4, 0.04),
            row("kNN classification", "ground truth 'label' (3 classes)", "top1", 75.0, 100.0, 37.5)]
    header, _, model, bound, base = paper_table(rows)
    assert header.split(" | ")[1:] == ["Normals: mean angle ↓", "Depth: abs_rel ↓", "Sem. seg.: mIoU ↑",
                                       "Inst. seg.: mAP ↑", "IN1K-style kNN: top-1 ↑", "3DHP: MPJPE ↓", "Boxes: AP ↑ |"]
    assert model == "| 4M (this checkpoint) | – | 0.5000 | 0.3000 | – | 75.00 | – | – |"
    assert bound == "| tokenizer bound | – | 0.2000 | 0.4000 | – | 100.00 | – | – |"
    assert base.startswith("| trivial baseline | – | 0.4000 | 0.0400 |")
