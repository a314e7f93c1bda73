"""Data transforms: fitting an (image, mask) pair to a training frame (``resize_pair``, used by the
latent cache, the segmenter's data and the pipeline's resize stage), and the mask-only pipeline of the
annotation VAE: cached masks, random crop with ignore padding, horizontal flip, and a collate that pads a
batch to a common, latent-grid-aligned size."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from jodiffusion.data.base import SegmentationDataset


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the image covers ``size`` (H, W) (bicubic for the image, nearest for the mask), then
    crop the centre. A pair already at ``size`` is returned unchanged."""
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = mask.shape[:2]
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} and mask {w}x{h} differ in size")
    if (h, w) == (th, tw):
        return image, mask
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC))
        mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.Resampling.NEAREST))
    top, left = (nh - th) // 2, (nw - tw) // 2
    return (np.ascontiguousarray(image[top:top + th, left:left + tw]),
            np.ascontiguousarray(mask[top:top + th, left:left + tw]))


class MaskDataset(torch.utils.data.Dataset):
    """The masks of a dataset (images are never decoded), optionally held in memory."""

    def __init__(self, dataset: SegmentationDataset, crop_size: int = 0, hflip: bool = False,
                 cache: bool = True, threads: int = 4):
        self.dataset = dataset
        self.crop_size = crop_size
        self.hflip = hflip
        self.ignore_index = dataset.classes.ignore_index
        self._cache = None
        if cache:
            with ThreadPoolExecutor(threads) as pool:
                self._cache = list(pool.map(dataset.load_mask, range(len(dataset))))

    def __len__(self) -> int:
        return len(self.dataset)

    def _mask(self, index: int) -> np.ndarray:
        return self._cache[index] if self._cache is not None else self.dataset.load_mask(index)

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        """``index``, or ``(index, seed)`` (from ``EpochShuffleSampler(keyed=True)``): the crop and flip
        then come from a generator seeded with ``seed``, so they do not depend on workers or resumes."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        mask = self._mask(index)
        rng = np.random.default_rng(seed) if seed is not None else None
        if self.crop_size:
            mask = random_crop(mask, self.crop_size, self.ignore_index, rng)
        if self.hflip and (rng.random() if rng is not None else float(torch.rand(()))) < 0.5:
            mask = mask[:, ::-1]
        # torch.tensor copies: masks may be read-only views (memory-mapped or cached arrays)
        return torch.tensor(np.ascontiguousarray(mask), dtype=torch.long)


def random_crop(mask: np.ndarray, size: int, fill: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """A size x size crop at a random position (from ``rng``, else torch's global generator); masks
    smaller than ``size`` are padded with ``fill``."""
    h, w = mask.shape
    if h < size or w < size:
        padded = np.full((max(h, size), max(w, size)), fill, dtype=mask.dtype)
        padded[:h, :w] = mask
        mask, (h, w) = padded, padded.shape
    if rng is not None:
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    else:
        top, left = int(torch.randint(0, h - size + 1, ())), int(torch.randint(0, w - size + 1, ()))
    return mask[top: top + size, left: left + size]


def pad_collate(multiple: int, fill: int):
    """Collate (H, W) masks of any sizes into one (B, H', W') batch, H' and W' multiples of ``multiple``."""

    def collate(masks: list[torch.Tensor]) -> torch.Tensor:
        h = max(m.shape[0] for m in masks)
        w = max(m.shape[1] for m in masks)
        h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        out = torch.full((len(masks), h, w), fill, dtype=torch.long)
        for i, m in enumerate(masks):
            out[i, : m.shape[0], : m.shape[1]] = m
        return out

    return collate
