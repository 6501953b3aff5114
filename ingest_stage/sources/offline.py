"""The offline demo sources: synthetic scenes and scikit-image's bundled public-domain colour photos."""

from __future__ import annotations

import numpy as np

from fourm_core.config import SkimagePhotosSource, SyntheticSource

from ..samples import SampleRef, SceneSample
from ..synthetic import make_scene
from .base import Source


class Synthetic(Source):
    has_ground_truth = True
    cfg: SyntheticSource

    def count(self) -> int:
        return self.cfg.n_samples

    def refs(self, start: int, stop: int) -> list[SampleRef]:
        # the caption depends on what is visible, so the renderer writes it; the ref carries none
        return [SampleRef(f"synthetic-s{self.cfg.seed}-{i:06d}", self.tag, None, locator=i)
                for i in range(start, min(stop, self.cfg.n_samples))]

    def load(self, ref: SampleRef) -> SceneSample:
        return SceneSample(make_scene(self.cfg.seed, ref.locator, tuple(self.cfg.objects), self.cfg.object_scale),
                           self.cfg.size)


# name -> (loader in skimage.data, caption we wrote). scikit-image documents these as public domain or
# CC0 (skimage.data docstrings); the captions describe what is in each picture.
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut", "a portrait of an astronaut in a white spacesuit holding a helmet, with the "
                               "american flag behind her"),
    "chelsea": ("chelsea", "a ginger tabby cat with green eyes looking to the side"),
    "coffee": ("coffee", "a cup of coffee with latte art on a saucer with a spoon, on a red table"),
    "rocket": ("rocket", "a rocket on the launch pad with its service tower under a clear sky"),
    "hubble_deep_field": ("hubble_deep_field", "a telescope image of deep space full of distant galaxies"),
    "motorcycle": ("stereo_motorcycle", "a red and black motorcycle parked indoors in front of a wall of "
                                        "tools and boxes"),
    "retina": ("retina", "a photograph of the back of a human eye showing the retina and its blood vessels"),
    "immunohistochemistry": ("immunohistochemistry", "a microscope image of stained tissue with brown and blue "
                                                     "cell nuclei"),
}


class SkimagePhotos(Source):
    cfg: SkimagePhotosSource

    def count(self) -> int:
        return len(PHOTOS)

    def refs(self, start: int, stop: int) -> list[SampleRef]:
        names = list(PHOTOS)[start:stop]
        return [SampleRef(f"skimage-{n}", self.tag, PHOTOS[n][1], locator=n) for n in names]

    def load(self, ref: SampleRef) -> np.ndarray:
        import skimage.data  # imported lazily: only the demo needs it

        img = getattr(skimage.data, PHOTOS[ref.locator][0])()
        if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
            img = img[0]
        return np.ascontiguousarray(img[..., :3])

    def slice_digest(self, refs: list[SampleRef]) -> str:
        import hashlib

        import skimage

        # the photos ship with the package: its version identifies the bytes
        return hashlib.sha256((super().slice_digest(refs) + skimage.__version__).encode()).hexdigest()
