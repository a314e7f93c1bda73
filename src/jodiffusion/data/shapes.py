"""The embedded procedural shapes dataset (``data.name=shapes``): samples of a split, rendered on demand.

Nothing is downloaded: every sample is rendered on the fly from ``(seed, split, index)``, so the same
index gives the same image, mask and caption whatever the access order, and the ``train`` and
``val`` splits differ. It is the default dataset of the demo and the tests: small enough to train a
diffusion model on a laptop CPU, yet with what makes segmentation data interesting: several objects
per image, eight shape classes, named colours and textures, partial occlusion and varied backgrounds.
What a scene holds and how it is drawn: ``shapes_scene.py``; the folder make-data writes: ``shapes_folder.py``.
"""

from __future__ import annotations

import re
import zlib
from collections import OrderedDict

import numpy as np

from jodiffusion.data.base import SegmentationDataset, Transform
from jodiffusion.data.shapes_scene import SHAPES_CLASSES, ShapeObject, ShapesSample, render_scene, shapes_style

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def split_key(split: str) -> int:
    """A 32-bit number for a split name, stable across runs (``hash()`` is salted per process)."""
    return zlib.crc32(split.encode("utf-8"))


class ShapesDataset(SegmentationDataset):
    """Procedural shapes: ``num_images`` samples of a split, rendered on demand at ``resolution``.

    Sample ``i`` of split ``s`` depends only on ``(seed, s, i)``. Stems are ``"<split>_<index>"`` so
    that the stems of all splits can share one captions file.
    """

    def __init__(self, split: str = "train", num_images: int = 512, resolution: int = 64, seed: int = 0,
                 transform: Transform | None = None, difficulty: str = "full"):
        if not isinstance(split, str) or not _SPLIT_RE.match(split):
            raise ValueError(f"split must be a non-empty name of letters, digits, '_' or '-', got {split!r}")
        if int(num_images) < 1:
            raise ValueError(f"num_images must be positive, got {num_images}")
        if int(resolution) < 16 or int(resolution) % 8:
            raise ValueError(f"resolution must be a multiple of 8 and at least 16, got {resolution}")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.split = split
        self.num_images = int(num_images)
        self.resolution = int(resolution)
        self.seed = int(seed)
        self.difficulty = difficulty
        self.style = shapes_style(difficulty)
        self.transform = transform
        self.classes = SHAPES_CLASSES
        self._cache: OrderedDict[int, ShapesSample] = OrderedDict()

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return (f"ShapesDataset(split={self.split!r}, num_images={self.num_images}, "
                f"resolution={self.resolution}, seed={self.seed}, difficulty={self.difficulty!r})")

    def _index(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} samples")
        return index

    def rng(self, index: int) -> np.random.Generator:
        """The random generator of sample ``index`` (a fresh one on every call)."""
        ss = np.random.SeedSequence([self.seed, split_key(self.split), self._index(index)])
        return np.random.default_rng(ss)

    def render(self, index: int) -> ShapesSample:
        """Everything about sample ``index``: image, mask, objects, background and caption (cached)."""
        index = self._index(index)
        sample = self._cache.get(index)
        if sample is None:
            sample = render_scene(self.rng(index), self.resolution, self.style)
            self._cache[index] = sample
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return sample

    def stem(self, index: int) -> str:
        return f"{self.split}_{self._index(index):06d}"

    def load_image(self, index: int) -> np.ndarray:
        return self.render(index).image.copy()

    def load_mask(self, index: int) -> np.ndarray:
        return self.render(index).mask.copy()

    def objects(self, index: int) -> list[ShapeObject]:
        """The objects drawn in sample ``index``, back to front."""
        return list(self.render(index).objects)

    def caption(self, index: int) -> str:
        return self.render(index).caption

    def captions(self) -> dict[str, str]:
        """``{stem: caption}`` for every sample of the split."""
        return {self.stem(i): self.caption(i) for i in range(len(self))}
