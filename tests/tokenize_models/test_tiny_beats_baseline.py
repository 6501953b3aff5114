"""Every tiny tokenizer, trained for real through the stage on committed synthetic labels, beats its
trivial baseline (mean sample / majority class / per-pixel majority mask) on held-out samples."""

import pytest

from tokenize_stage.labels import commit_synthetic_labels
from tokenize_stage.registry import tokenizer_names
from tokenize_stage.train_tokenizer import TrainTokenizerConfig, train_tokenizer

# (training steps, whether the case is slow). Diffusion decoders and 512-1280-channel feature maps cost most.
STEPS = {"semseg_vqvae": 100, "mask_vq": 80, "pose_vq": 200, "dinov2_global_memcodes": 200,
         "imagebind_global_memcodes": 200, "clip_vqvae": 60, "dinov2_vqvae": 60, "imagebind_vqvae": 60,
         "rgb_diffusion": 80, "depth_diffusion": 80, "normal_diffusion": 80, "edge_diffusion": 80}
SLOW = {"dinov2_vqvae", "imagebind_vqvae", "depth_diffusion", "normal_diffusion", "edge_diffusion"}


def test_every_registry_tokenizer_is_covered():
    assert set(STEPS) == set(tokenizer_names())


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(STEPS)])
def test_tiny_tokenizer_beats_baseline(store, name):
    commit_synthetic_labels(store, "syn", name, "tiny", n_samples=192, shard_size=96)
    result = train_tokenizer(store, "syn", TrainTokenizerConfig(tokenizer=name, profile="tiny", steps=STEPS[name],
                                                                 eval_samples=32, sampling_steps=5))
    metrics = result.manifests[0].stats["metrics"]
    primary = metrics["primary"]
    print(f"{name}: {primary} {metrics['model'][primary]:.4f} vs baseline {metrics['baseline'][primary]:.4f} "
          f"(usage {metrics['eval_usage']:.2f})")
    assert metrics["beats_baseline"], metrics
