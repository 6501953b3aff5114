"""Tiny model labelers: saved to a directory, loaded through the real loading path, outputs match schema."""

import hashlib

import numpy as np
import pyarrow as pa
import pytest
import torch

from pseudolabel import codecs, models
from pseudolabel.registry import labeler_class
from pseudolabel.spec import Batch
from pseudolabel.testing import photo, synthetic_image

MODEL_LABELERS = ["depth", "normals", "semseg", "clip", "dinov2", "imagebind", "t5"]


@pytest.fixture(scope="module")
def batch():
    imgs = [photo("chelsea", 64), synthetic_image(3, 48)]
    return Batch(["a", "b"], imgs, ["A cat on a rug.", "Shapes. Two of them!"])


@pytest.mark.parametrize("name", MODEL_LABELERS)
def test_tiny_saved_then_loaded_matches_schema(name, tmp_path, batch):
    cls = labeler_class(name)
    path = str(tmp_path / name)
    cls().save(cls().seeded_tiny(), path)
    lab = cls(cls.Settings(model=path))
    ref = lab.model_ref()
    files = sorted(p for p in (tmp_path / name).glob("*.safetensors"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    assert ref.digest == h.hexdigest() and ref.id == path
    lab.setup()
    out = lab.label_batch(batch)
    assert len(out) == 2
    for label, schema in lab.schema().items():
        for f in schema:
            arr = pa.array([r[label][f.name] for r in out], f.type)  # raises if a value does not fit the type
            assert arr.null_count == 0
        rows = [r[label] for r in out]
        if pa.types.is_fixed_size_binary(schema.field(0).type):
            assert all(len(r[schema.field(0).name]) == schema.field(0).type.byte_width for r in rows)
    if name == "depth":
        assert codecs.depth_map(out[0]["depth"]).shape == batch.rgb[0].shape[:2]
    if name == "normals":
        n = codecs.normal_map(out[1]["normal"])
        assert n.shape == (*batch.rgb[1].shape[:2], 3)
        assert np.allclose(np.linalg.norm(n, axis=-1), 1, atol=1e-3)
    if name == "semseg":
        m = codecs.semseg_map(out[0]["semseg"])
        assert m.shape == batch.rgb[0].shape[:2] and m.dtype == np.uint8 and 1 <= m.min() and m.max() <= 133
    if name == "dinov2":
        assert lab.schema()["dinov2_features"].field("features").type.byte_width == 16 * 16 * 32 * 2
    if name == "clip":
        assert lab.schema()["clip_features"].field("features").type.byte_width == 14 * 14 * 16 * 2
    if name == "t5":
        n_tok = [r["t5_caption"]["n_tokens"] for r in out]
        assert all(len(r["t5_caption"]["embedding"]) == n * 32 * 2 for r, n in zip(out, n_tok))
    # the loaded model computes exactly what the in-memory tiny model computes
    mem = cls(cls.Settings(model="tiny"))
    mem.setup()
    assert mem.label_batch(batch) == out
    assert mem.model_ref().digest == models.state_dict_digest(lab.model)


def test_missing_model_path_fails_fast_with_the_path(tmp_path):
    missing = str(tmp_path / "no-such-model")
    cls = labeler_class("depth")
    with pytest.raises(models.ModelLoadError, match="no-such-model"):
        cls(cls.Settings(model=missing)).model_ref()
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelLoadError, match="safetensors"):
        cls(cls.Settings(model=str(tmp_path / "empty"))).model_ref()


def _raw_imagebind_state(ref, depth: int) -> dict:
    """The released ImageBind layout of a timm ViT's weights (Conv3d stem, MultiheadAttention names)."""
    import torch

    sd = ref.state_dict()
    raw = {"modality_preprocessors.vision.rgbt_stem.proj.1.weight":
           torch.stack([sd["patch_embed.proj.weight"] * 0.25, sd["patch_embed.proj.weight"] * 0.75], dim=2),
           "modality_preprocessors.vision.cls_token": sd["cls_token"],
           "modality_preprocessors.vision.pos_embedding_helper.pos_embed": sd["pos_embed"],
           "modality_trunks.vision.pre_transformer_layer.0.weight": sd["norm_pre.weight"],
           "modality_trunks.vision.pre_transformer_layer.0.bias": sd["norm_pre.bias"],
           "modality_heads.vision.0.weight": sd["norm.weight"], "modality_heads.vision.0.bias": sd["norm.bias"],
           "modality_heads.vision.2.weight": sd["head.weight"]}
    for i in range(depth):
        b, t = f"modality_trunks.vision.blocks.{i}.", f"blocks.{i}."
        for a, c in (("norm_1", "norm1"), ("norm_2", "norm2"), ("attn.out_proj", "attn.proj"), ("mlp.fc1", "mlp.fc1"),
                     ("mlp.fc2", "mlp.fc2")):
            for p in ("weight", "bias"):
                raw[f"{b}{a}.{p}"] = sd[f"{t}{c}.{p}"]
        raw[f"{b}attn.in_proj_weight"] = sd[f"{t}attn.qkv.weight"]
        raw[f"{b}attn.in_proj_bias"] = sd[f"{t}attn.qkv.bias"]
    return raw


def test_imagebind_key_mapping_loads_raw_imagebind_keys(tmp_path):
    """A raw-ImageBind-layout state dict (Conv3d stem, MultiheadAttention names) maps onto the timm ViT."""
    import torch
    from safetensors.torch import save_file

    from pseudolabel.labelers.imagebind import TINY, ImageBindLabeler, build_vit, convert_imagebind_state_dict

    ref = build_vit(TINY)
    raw = _raw_imagebind_state(ref, TINY["depth"])
    assert set(convert_imagebind_state_dict(raw)) == set(ref.state_dict())
    ImageBindLabeler().save(ref, str(tmp_path))
    save_file({k: v.contiguous() for k, v in raw.items()}, str(tmp_path / "model.safetensors"))
    loaded = ImageBindLabeler().load_dir(str(tmp_path))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.forward_features(x), ref.forward_features(x), atol=1e-5)


def test_convert_imagebind_keeps_the_vision_trunk_of_a_released_checkpoint(tmp_path):
    """``convert-imagebind`` reads the all-modality .pth with the safe loader and writes a directory the labeler
    loads to the same weights."""
    import torch

    from pseudolabel.__main__ import main
    from pseudolabel.labelers.imagebind import TINY, build_vit

    ref = build_vit(TINY)
    raw = _raw_imagebind_state(ref, TINY["depth"]) | {"modality_trunks.text.blocks.0.norm_1.weight": torch.ones(4)}
    torch.save(raw, tmp_path / "imagebind_huge.pth")
    out = tmp_path / "imagebind"
    assert main(["convert-imagebind", str(tmp_path / "imagebind_huge.pth"), str(out), "--profile", "tiny"]) == 0
    cls = labeler_class("imagebind")
    lab = cls(cls.Settings(model=str(out)))
    lab.setup()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(lab.model.forward_features(x), ref.forward_features(x))


@pytest.mark.parametrize("name", MODEL_LABELERS + ["sam", "detection", "human_poses"])
def test_matmul_precision_leaves_the_cache_key_alone(name):
    """TF32 on a GPU changes how precisely a label is computed, not what it is (like the device): switching it
    must not recompute a committed dataset."""
    cls = labeler_class(name)
    keys = {p: cls(cls.Settings(matmul_precision=p), available=frozenset(cls.needs)).config_for_key()
            for p in ("highest", "high", "medium")}
    assert keys["highest"] == keys["high"] == keys["medium"]


def test_placing_on_the_cpu_leaves_torch_matmul_precision_alone():
    """The precision is set in the labeler's process only when it labels on a GPU: a CPU actor (and the tests'
    own process) keeps full fp32 whatever the settings say."""
    import torch

    cls = labeler_class("dinov2")
    lab = cls(cls.Settings(model="tiny", device="cpu", matmul_precision="medium"), available=frozenset(cls.needs))
    before = torch.get_float32_matmul_precision()
    lab.setup()
    assert torch.get_float32_matmul_precision() == before
    assert lab.device == "cpu" and not lab.model.training
    assert next(lab.model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_normalize_is_bit_identical_to_numpy(device):
    """The labelers normalise on their device (uint8 crosses, floats are made there): the same float32
    operations in the same order as the NumPy code it replaced, so committed labels did not change. Every pixel
    level: on CUDA a Python-number divisor became a multiplication by its reciprocal (322 of 768 values off)."""
    from pseudolabel.labelers.model_base import IMAGENET_MEAN, IMAGENET_STD, normalize

    imgs = np.random.default_rng(0).permutation(np.arange(256, dtype=np.uint8).repeat(3)).reshape(1, 16, 16, 3)
    imgs = np.concatenate([imgs, imgs[:, ::-1]])
    ref = (imgs.astype(np.float32) / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    got = normalize(imgs, IMAGENET_MEAN, IMAGENET_STD, device)
    assert got.shape == (2, 3, 16, 16) and got.dtype == torch.float32 and got.is_contiguous()
    assert np.array_equal(got.cpu().numpy(), ref.transpose(0, 3, 1, 2))
    with pytest.raises(TypeError, match="uint8"):
        normalize(imgs.astype(np.float32), IMAGENET_MEAN, IMAGENET_STD, device)


def test_the_local_runner_refuses_labelers_that_ask_for_different_matmul_precisions():
    """One process holds one fp32 matmul precision: the in-process runner must not let the last labeler's win."""
    import pyarrow as pa

    from pseudolabel.runner import LabelerRun, run_local

    runs = [LabelerRun("depth", {"model": "tiny", "matmul_precision": "highest"}, frozenset({"rgb"})),
            LabelerRun("clip", {"model": "tiny"}, frozenset({"rgb"}))]
    with pytest.raises(ValueError, match=r"\(clip: high, depth: highest\): give them the same matmul_precision"):
        run_local(pa.table({"sample_key": ["a"]}), runs)
