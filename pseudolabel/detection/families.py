"""Detector families: which transformers class, how its scores are read, how images are fed, and the
tiny / production-size architectures built from config objects (random weights, offline).

Production default: RT-DETR R101-vd pre-trained on Objects365 and fine-tuned on COCO
(``PekingU/rtdetr_r101vd_coco_o365``, Apache-2.0, about 56 COCO box AP as its authors report; not verified
here). The 4M papers used ViTDet-H Cascade (58.7 AP reported); docs/detection-and-poses.md says how a ViTDet
checkpoint plugs in. Any other transformers detector with COCO names in ``id2label`` fits one of the families
below or a new entry of FAMILIES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pseudolabel.detection.labels import coco80_id2label

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Family:
    """How one transformers detection architecture is built, fed and read.

    ``activation``: "softmax" (DETR: one class per query, last logit = no-object) or "sigmoid" (focal-loss
    detectors: independent per-class scores, top-k over queries x classes).
    ``resize``: "square" resizes to ``size x size`` ignoring aspect (RT-DETR's training recipe); "short_edge"
    keeps aspect with the short edge at ``size`` and the long edge at most ``max_size`` (DETR's recipe).
    ``model_class`` / ``config_class``: a transformers class name, or ``module:Class`` for ours.
    ``output``: "queries" (per-query logits + normalised boxes, read by ``postprocess.to_detections``) or
    "instances" (already decoded boxes, scores and labels, as two-stage detectors give them).
    """

    name: str
    model_class: str
    config_class: str
    activation: Literal["softmax", "sigmoid"]
    resize: Literal["square", "short_edge"]
    size: int
    max_size: int
    mean: tuple[float, float, float] | None  # None: pixels in [0, 1] without normalisation
    std: tuple[float, float, float] | None
    production_source: str
    licence: str
    tiny_kwargs: Callable[[], dict]
    full_kwargs: Callable[[], dict]
    output: Literal["queries", "instances"] = "queries"


def _tiny_resnet(out_features: list[str]):
    from transformers import ResNetConfig

    # 4 stages of one basic block each, widths 8..64: ~0.1M parameters, same strides (4, 8, 16, 32) as ResNet-50
    return ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], layer_type="basic",
                        out_features=out_features)


def _detr_tiny() -> dict:
    return dict(backbone_config=_tiny_resnet(["stage4"]), d_model=32, encoder_layers=1, decoder_layers=1,
                encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
                num_queries=20)


def _detr_full() -> dict:
    from transformers import ResNetConfig

    # DETR R50 (facebook/detr-resnet-50): ResNet-50 C5 features, 6+6 layers, d=256, 100 queries
    return dict(backbone_config=ResNetConfig(out_features=["stage4"]))


def _deformable_tiny() -> dict:
    # 2 decoder layers: transformers ties the per-layer box heads and fails on a single layer
    return dict(backbone_config=_tiny_resnet(["stage2", "stage3", "stage4"]), d_model=32, encoder_layers=1,
                decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
                decoder_attention_heads=2, num_queries=20, num_feature_levels=4, encoder_n_points=2,
                decoder_n_points=2)


def _deformable_full() -> dict:
    from transformers import ResNetConfig

    return dict(backbone_config=ResNetConfig(out_features=["stage2", "stage3", "stage4"]))


def _rt_detr_tiny() -> dict:
    from transformers import RTDetrResNetConfig

    bb = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                            layer_type="basic", out_features=["stage2", "stage3", "stage4"])
    return dict(backbone_config=bb, encoder_in_channels=[16, 32, 64], encoder_hidden_dim=32, encoder_ffn_dim=64,
                encoder_attention_heads=2, d_model=32, decoder_in_channels=[32, 32, 32], decoder_ffn_dim=64,
                decoder_attention_heads=2, decoder_layers=1, num_queries=20, num_denoising=0,
                decoder_n_points=2)


def _rt_detr_full() -> dict:
    from transformers import RTDetrResNetConfig

    # RT-DETR R101-vd: ResNet-101-vd backbone, hybrid encoder d=384 ffn 2048, 6 decoder layers, 300 queries
    bb = RTDetrResNetConfig(depths=[3, 4, 23, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck",
                            out_features=["stage2", "stage3", "stage4"])
    return dict(backbone_config=bb, encoder_hidden_dim=384, encoder_ffn_dim=2048, decoder_in_channels=[384, 384, 384])


def _vitdet_tiny() -> dict:
    from pseudolabel.detection.vitdet import TINY

    return dict(TINY)


FAMILIES: dict[str, Family] = {
    # detectron2's COCO ViTDet-H + Cascade Mask R-CNN (the 4M papers' detector): longer side 1024, ImageNet
    # normalisation, padded to the square inside the model
    "vitdet": Family("vitdet", "pseudolabel.detection.vitdet:ViTDetForObjectDetection",
                     "pseudolabel.detection.vitdet:ViTDetCascadeConfig", "softmax", "short_edge", 1024, 1024,
                     IMAGENET_MEAN, IMAGENET_STD, "./models/vitdet_h", "Apache-2.0 (detectron2)", _vitdet_tiny, dict,
                     output="instances"),
    "detr": Family("detr", "DetrForObjectDetection", "DetrConfig", "softmax", "short_edge", 800, 1333,
                   IMAGENET_MEAN, IMAGENET_STD, "facebook/detr-resnet-50", "Apache-2.0", _detr_tiny, _detr_full),
    "deformable_detr": Family("deformable_detr", "DeformableDetrForObjectDetection", "DeformableDetrConfig",
                              "sigmoid", "short_edge", 800, 1333, IMAGENET_MEAN, IMAGENET_STD,
                              "SenseTime/deformable-detr", "Apache-2.0", _deformable_tiny, _deformable_full),
    "rt_detr": Family("rt_detr", "RTDetrForObjectDetection", "RTDetrConfig", "sigmoid", "square", 640, 640,
                      None, None, "PekingU/rtdetr_r101vd_coco_o365", "Apache-2.0", _rt_detr_tiny, _rt_detr_full),
}
DEFAULT_FAMILY = "vitdet"


def resolve_class(name: str):
    """A transformers class by name, or ``module:Class``."""
    import importlib

    import transformers

    if ":" in name:
        module, cls = name.split(":")
        return getattr(importlib.import_module(module), cls)
    return getattr(transformers, name)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown detector family {name!r}; known: {sorted(FAMILIES)}") from None


def build_config(family: str, profile: Literal["tiny", "full"]):
    """A transformers config of ``family`` at ``profile`` size with id2label = COCO-80 (contiguous)."""
    fam = get_family(family)
    kwargs = fam.tiny_kwargs() if profile == "tiny" else fam.full_kwargs()
    id2label = coco80_id2label()
    return resolve_class(fam.config_class)(id2label=id2label, label2id={v: k for k, v in id2label.items()}, **kwargs)
