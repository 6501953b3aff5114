"""Omnidata v2 DPT-Hybrid: released names convert strictly onto transformers' DPT-hybrid, the backbone computes what
timm's hybrid ViT (the network Omnidata/MiDaS wrap) computes on the same weights, and the window rule."""

from functools import partial

import numpy as np
import pytest
import torch

from pseudolabel.labelers import omnidata

# The DPT part of the released DPT-B-Hybrid checkpoint (MiDaS/DPT `_make_vit_b_rn50_backbone` + `scratch` with 256
# features, `DPTDepthModel` head), name -> shape; the ViT and its ResNet stem come from timm below. act_postprocess1
# and 2 are Identity in the hybrid (ResNet stages 1 and 2 feed the decoder directly), so they hold no parameters.
DPT_PART = {
    **{f"pretrained.act_postprocess{i}.0.project.0.weight": (768, 1536) for i in (3, 4)},
    **{f"pretrained.act_postprocess{i}.0.project.0.bias": (768,) for i in (3, 4)},
    **{f"pretrained.act_postprocess{i}.3.weight": (768, 768, 1, 1) for i in (3, 4)},
    **{f"pretrained.act_postprocess{i}.3.bias": (768,) for i in (3, 4)},
    "pretrained.act_postprocess4.4.weight": (768, 768, 3, 3), "pretrained.act_postprocess4.4.bias": (768,),
    "scratch.layer1_rn.weight": (256, 256, 3, 3), "scratch.layer2_rn.weight": (256, 512, 3, 3),
    "scratch.layer3_rn.weight": (256, 768, 3, 3), "scratch.layer4_rn.weight": (256, 768, 3, 3),
    **{f"scratch.refinenet{i}.out_conv.{p}": (256, 256, 1, 1) if p == "weight" else (256,)
       for i in range(1, 5) for p in ("weight", "bias")},
    **{f"scratch.refinenet{i}.resConfUnit{u}.conv{c}.{p}": (256, 256, 3, 3) if p == "weight" else (256,)
       for i in range(1, 5) for u in (1, 2) for c in (1, 2) for p in ("weight", "bias")},
    "scratch.output_conv.0.weight": (128, 256, 3, 3), "scratch.output_conv.0.bias": (128,),
    "scratch.output_conv.2.weight": (32, 128, 3, 3), "scratch.output_conv.2.bias": (32,),
}


def _released_shapes(channels: int) -> dict[str, tuple]:
    """Every tensor of a released Omnidata Lightning checkpoint's state dict (``model.`` prefix), by shape."""
    import timm

    with torch.device("meta"):
        vit = timm.create_model("vit_base_r50_s16_384", pretrained=False)
    shapes = {f"pretrained.model.{k}": tuple(v.shape) for k, v in vit.state_dict().items()}
    shapes |= DPT_PART | {"scratch.output_conv.4.weight": (channels, 32, 1, 1), "scratch.output_conv.4.bias": (channels,)}
    return {f"model.{k}": s for k, s in shapes.items()}


@pytest.mark.parametrize("task,channels", [("depth", 1), ("normal", 3)])
def test_released_names_load_strictly_at_full_size(task, channels):
    released = _released_shapes(channels)
    state = omnidata.convert_state_dict({k: torch.empty(s, device="meta") for k, s in released.items()})
    with torch.device("meta"):
        ours = omnidata.build(task, omnidata.FULL).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    # only timm's ImageNet classifier is dropped
    assert {k for k in released if omnidata.released_to_ours(k) is None} == {"model.pretrained.model.head.weight",
                                                                             "model.pretrained.model.head.bias"}
    assert sum(v.numel() for v in ours.values()) == pytest.approx(122.4e6, rel=2e-3)  # DPT-Hybrid's ~123 M


def test_unknown_names_are_refused():
    with pytest.raises(KeyError, match="scratch.bogus"):
        omnidata.released_to_ours("model.scratch.bogus.weight")


def _tiny_timm_hybrid():
    """timm's hybrid ViT at the TINY profile's sizes (what Omnidata wraps as ``pretrained.model``)."""
    from timm.models.resnetv2 import ResNetV2
    from timm.models.vision_transformer_hybrid import HybridEmbed, StdConv2dSame
    from timm.models.vision_transformer import VisionTransformer

    t = omnidata.TINY
    backbone = ResNetV2(layers=t["backbone"]["depths"], channels=tuple(2 * c for c in t["backbone"]["hidden_sizes"]),
                        width_factor=0.5, num_classes=0, global_pool="", preact=False, stem_type="same",
                        conv_layer=partial(StdConv2dSame, eps=1e-8))
    embed = partial(HybridEmbed, backbone=backbone)
    return VisionTransformer(img_size=t["image_size"], patch_size=1, embed_dim=t["hidden_size"],
                             depth=t["num_hidden_layers"], num_heads=t["num_attention_heads"],
                             mlp_ratio=t["intermediate_size"] / t["hidden_size"], embed_layer=embed,
                             num_classes=0).eval()


def test_backbone_matches_timm_hybrid_vit_on_shared_weights():
    torch.manual_seed(0)
    ref = _tiny_timm_hybrid()
    for p in ref.parameters():  # random, not init-zero, so every term is exercised
        torch.nn.init.normal_(p, std=0.2)
    state = {f"model.pretrained.model.{k}": v for k, v in ref.state_dict().items()}
    ours = omnidata.build("depth", omnidata.TINY).eval()
    converted = omnidata.convert_state_dict(state)
    missing, unexpected = ours.load_state_dict(converted, strict=False)
    assert not unexpected and all(k.startswith(("neck.", "head.")) for k in missing)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = ref.forward_features(x)
        got = ours.dpt(pixel_values=x).last_hidden_state
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_convert_omnidata_cli_writes_a_labeler_directory(tmp_path):
    """A Lightning-style checkpoint (``state_dict`` + hyper-parameters as an argparse Namespace) converts through the
    safe loader into a directory the labeler loads; timm's classifier is dropped."""
    import argparse

    from pseudolabel.__main__ import main
    from pseudolabel.registry import labeler_class

    model = omnidata.build("normal", omnidata.TINY)
    # released name of each of our parameters (the full-size table's names hold for the tiny layer indices)
    released_name = {omnidata.released_to_ours(k): k for k in _released_shapes(3)}
    sd = model.state_dict()
    released = {"model.pretrained.model.head.weight": torch.zeros(1000, 32)}
    for k, v in sd.items():
        if ".attention.attention.query." in k:  # timm keeps q, k, v as one matrix
            fused = k.replace(".query.", ".qkv.")
            released[released_name[fused]] = torch.cat([v, sd[k.replace("query", "key")],
                                                        sd[k.replace("query", "value")]])
        elif ".attention.attention." not in k:
            released[released_name[k]] = v
    ckpt = tmp_path / "omnidata_dpt_normal_v2.ckpt"
    torch.save({"state_dict": released, "hyper_parameters": argparse.Namespace(lr=1e-4)}, ckpt)
    out = tmp_path / "normal"
    assert main(["convert-omnidata", str(ckpt), str(out), "--task", "normal", "--profile", "tiny"]) == 0
    cls = labeler_class("normals")
    lab = cls(cls.Settings(model=str(out)))
    lab.setup()
    for k, v in sd.items():
        assert torch.equal(lab.model.state_dict()[k], v), k


def test_window_offsets_cover_the_long_side_with_overlap():
    assert omnidata.window_offsets(384, 384) == [0]
    assert omnidata.window_offsets(512, 384) == [0, 128]
    assert omnidata.window_offsets(1152, 384) == [0, 256, 512, 768]  # an exact multiple still overlaps
    offs = omnidata.window_offsets(683, 384)
    assert offs[0] == 0 and offs[-1] == 683 - 384 and len(offs) == 2


def test_depth_windows_are_aligned_before_blending():
    """Two windows predicting the same scene up to scale/shift blend into one consistent map."""
    truth = np.linspace(1, 5, 10 * 16, dtype=np.float32).reshape(1, 10, 16)
    offsets = omnidata.window_offsets(16, 10)
    preds = [truth[:, :, o:o + 10] * s + b for o, (s, b) in zip(offsets, [(1.0, 0.0), (3.0, -2.0)])]
    out = omnidata.blend(preds, (10, 16), offsets, wide=True, align=True)
    assert np.allclose(out, truth, atol=1e-4)
    assert not np.allclose(omnidata.blend(preds, (10, 16), offsets, wide=True, align=False), truth, atol=1e-2)


@pytest.mark.parametrize("name,white,black", [("depth", 1.0, -1.0), ("normals", 1.0, 0.0)])
def test_labelers_follow_omnidata_inputs(name, white, black):
    """Depth sees (x − 0.5) / 0.5, normals plain [0, 1] pixels, in network-size windows; maps come back full size."""
    from pseudolabel.registry import labeler_class

    cls = labeler_class(name)
    lab = cls(cls.Settings(model="tiny"))
    lab.setup()
    seen, forward = [], lab.model.forward

    def spy(pixel_values, **kw):
        seen.append(pixel_values.clone())
        return forward(pixel_values=pixel_values, **kw)

    lab.model.forward = spy
    img = np.zeros((300, 224, 3), np.uint8)
    img[:150] = 255
    out = lab.predict([img])
    assert out[0].shape[1:] == (300, 224)
    x = seen[0]
    assert x.shape == (2, 3, 224, 224)  # 300 × 224 portrait at 224: two overlapping windows
    assert float(x[0, :, 0].min()) == white and float(x[1, :, -1].max()) == black
