"""Shared plumbing of neural-network labelers: tiny profile, loading, digest, device, threads."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import numpy as np
from pydantic import Field

from fourm_core.manifest import ModelRef
from fourm_core.seeding import seeded

from .. import models
from ..spec import Labeler, ModelSettings, Resources, SampleFailure, SampleResult

T = TypeVar("T")
R = TypeVar("R")

ORACLE_ID = "oracle:ground_truth"  # suffix of the ModelRef id of a unit whose labels come partly from ground truth


class HFModelSettings(ModelSettings):
    torch_threads: int | None = Field(None, gt=0, description="torch intra-op threads; None = num_cpus of the actor")


class OracleSettings(HFModelSettings):
    """Settings of the labelers that can take their label from a synthetic scene's exact ground truth."""

    oracle: bool = Field(False, description="samples with a `ground_truth` row (synthetic scenes) take their label "
                                            "from it, the model labels the rest; set by `profile: oracle` on shards "
                                            "that have ground truth (the stage turns it off on shards without)")


class ModelLabeler(Labeler):
    """A labeler backed by a torch model. Subclasses implement ``build_tiny``, ``load_dir`` and ``forward``."""

    uses_model: ClassVar[bool] = True
    resources: ClassVar[Resources] = Resources(num_cpus=1, num_gpus=0.25, memory_mb=2048)
    Settings: ClassVar[type[HFModelSettings]] = HFModelSettings
    production_model: ClassVar[str] = ""

    supports_autocast: ClassVar[bool] = False  # True: its forward runs in ``inference()`` (autocast: bf16 works)

    model: Any = None
    device: str = "cpu"

    def __init__(self, settings=None, available: frozenset[str] = frozenset()):
        super().__init__(settings, available)
        if getattr(self.settings, "autocast", "off") != "off" and not self.supports_autocast:
            raise ValueError(f"labeler '{self.name}' runs its models in fp32 only: remove `autocast: "
                             f"{self.settings.autocast}` from pseudolabel.settings.{self.name}")

    # ------------------------------------------------------------------------------ model building

    def build_tiny(self):
        """Same architecture, built small from a config, random weights (seeded: same weights everywhere)."""
        raise NotImplementedError

    def build_full(self):
        """Full-size architecture with random weights (benchmarks)."""
        raise NotImplementedError

    def load_dir(self, path: str):
        """Load weights from a local directory of safetensors + config."""
        raise NotImplementedError

    def save(self, model, path: str) -> None:
        """Write ``model`` so that ``load_dir(path)`` reads it back (safetensors)."""
        model.save_pretrained(path, safe_serialization=True)

    def seeded_tiny(self):
        with seeded(0):
            return self.build_tiny().eval()

    # ------------------------------------------------------------------------------- driver side

    def resolved(self) -> models.ResolvedModel:
        if getattr(self, "_resolved", None) is None:
            self._resolved = models.resolve(self.name, self.settings.model)
        return self._resolved

    def model_ref(self) -> ModelRef:
        r = self.resolved()
        tiny_digest = _tiny_digest(type(self)) if r.is_tiny else None
        ref = models.model_ref(self.name, r, tiny_digest)
        if self.oracle_active:  # lineage says so; the digest stays the model's (it labels the other samples)
            ref = ref.model_copy(update={"id": f"{ref.id}+{ORACLE_ID}"})
        return ref

    # ------------------------------------------------------------------------------ oracle

    @property
    def oracle_active(self) -> bool:
        """Whether samples with a ground-truth row take their label from it (OracleSettings.oracle)."""
        return bool(getattr(self.settings, "oracle", False))

    def oracle_label(self, gt: dict[str, Any]) -> SampleResult:
        """One sample's label from its ``ground_truth`` row (docs/data-format.md columns), in exactly the
        format ``label_batch`` produces. Implemented by the labelers whose Settings derive from OracleSettings."""
        raise NotImplementedError(f"labeler {self.name} has no oracle (ground-truth) path")

    # ------------------------------------------------------------------------------ actor side

    def setup(self) -> None:
        import torch

        # Ray sets OMP_NUM_THREADS to the (possibly scaled-down) CPU reservation; use the declared count
        threads = self.settings.torch_threads or max(1, round(self.settings.num_cpus or self.resources.num_cpus))
        torch.set_num_threads(threads)
        r = self.resolved()
        try:
            model = self.seeded_tiny() if r.is_tiny else self.load_dir(r.local_dir)
        except Exception as exc:
            raise models.ModelLoadError(f"labeler '{self.name}': cannot load model from {self.settings.model!r}: "
                                        f"{type(exc).__name__}: {exc}") from exc
        self.model = model
        self.place(models.pick_device(self.settings.device))

    def place(self, device: str) -> None:
        """Move the model to ``device`` in eval mode; on a GPU, set the settings' fp32 matmul precision."""
        import torch

        if device.startswith("cuda"):
            torch.set_float32_matmul_precision(self.settings.matmul_precision)
        self.device = device
        self.model = self.model.eval().to(device)

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """The context a labeler's model forward runs in: no autograd, and under ``autocast: bf16`` bfloat16
        autocast on the model's device. Post-processing belongs outside it (in fp32)."""
        import torch

        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if getattr(self.settings, "autocast", "off") == "bf16":
                stack.enter_context(torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16))
            yield

    def post_map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]`` spread over the actor's CPU threads (``torch.get_num_threads()``, which
        ``setup`` sets to the actor's CPUs): the per-image NumPy and OpenCV work around the model (blending windows,
        PNG encoding), which both release the GIL. On a GPU that work, done one image at a time, set the pace
        (docs/labelers.md, "On a GPU"). Same results in the same order as the loop. ``fn`` must not call torch
        CPU ops: each pool thread would start its own team of intra-op threads."""
        import torch

        threads = torch.get_num_threads()
        if threads <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        return list(_post_pool(threads).map(fn, items))

    def use_model(self, model) -> None:
        """Install an already-built model (benchmarks, tests)."""
        self.model = model.eval()
        self.device = "cpu"


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _post_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` post-processing threads (one per thread count: an actor sets one)."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="labeler-post")
    return _POOLS[threads]


_TINY_DIGESTS: dict[type, str] = {}


def _tiny_digest(cls: type) -> str:
    if cls not in _TINY_DIGESTS:
        _TINY_DIGESTS[cls] = models.state_dict_digest(cls().seeded_tiny())
    return _TINY_DIGESTS[cls]


# ImageNet mean/std: what DINOv2 and Mask2Former expect, and what apple/ml-4m fed CLIP and ImageBind when it
# made the feature maps its CLIP / ImageBind tokenizers were trained on (``imagenet_default_mean_and_std: True``
# in cfgs/default/tokenization/vqvae/{CLIP-B16,ImageBind-H14*}/*.yaml): the released tokenizers expect it.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalize(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], device: str = "cpu"):
    """uint8 N×S×S'×3 -> N×3×S×S' float32 ``(x / 255 - mean) / std`` on ``device``.

    The images cross to the device as uint8 (4x fewer bytes) and are normalised there in place, in NumPy's
    float32 operations and order (bit-identical to doing it in NumPy). On a CPU that is 2.7x less work than the
    NumPy version (3.8 against 10.1 ms for two 384² windows, one thread); on a GPU the work leaves the labeler's
    CPU, which sets the pace there (docs/labelers.md, "On a GPU")."""
    import torch

    if images.dtype != np.uint8:
        raise TypeError(f"normalize takes uint8 images, got {images.dtype}")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device).float()
    # a tensor divisor: CUDA turns division by a Python number into a multiplication by its reciprocal, which
    # differs from NumPy's division in the last bit for about half the 256 values
    f32 = dict(dtype=torch.float32, device=device)
    x.div_(torch.tensor(255.0, **f32)).sub_(torch.tensor(mean, **f32)[:, None, None])
    return x.div_(torch.tensor(std, **f32)[:, None, None])


def resize_batch(images: list[np.ndarray], size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 device: str = "cpu"):
    """Resize uint8 H×W×3 images to size×size (bilinear, whole image, no crop) and normalise -> B×3×S×S float32
    on ``device``."""
    import cv2

    out = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if im.shape[0] > size else cv2.INTER_LINEAR)
                    for im in images])
    return normalize(out, mean, std, device)


def f16_bytes(t) -> bytes:
    """A tensor as float16 little-endian row-major bytes."""
    return host_f16(t).contiguous().numpy().astype("<f2").tobytes()


def host_f16(t):
    """A batch's output on the host as float16, in one copy: ``f16_bytes`` per sample of a GPU tensor would
    copy, and wait for the GPU, once per sample. The same conversion, so the bytes are the same."""
    import torch

    return t.detach().to("cpu", dtype=torch.float16)


def gt_array(gt: dict[str, Any], column: str) -> np.ndarray:
    """A ``ground_truth`` row's ``.npy`` cell -> its array, checked against the row's stored image size
    (depth H×W float32, normal H×W×3 float32, semseg H×W uint8)."""
    from fourm_core.label_codec import npy_decode

    if gt.get(column) is None:
        raise SampleFailure("oracle_missing", f"ground_truth row has no {column!r} cell")
    arr = npy_decode(gt[column])
    if arr.shape[:2] != (gt["height"], gt["width"]):
        raise SampleFailure("oracle_shape", f"ground_truth {column} is {arr.shape[:2]}, the image "
                                            f"{(gt['height'], gt['width'])}: re-run ingest")
    return arr
