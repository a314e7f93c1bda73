"""A cache of image latents (and frozen text embeddings), built once per dataset, read as a dataset.

The image codec and a frozen text encoder never change during diffusion training, so each image is
encoded once. For every sample the cache keeps, at the model resolution:

* the posterior mean and std of the raw (unscaled) image latents, for the image and for its mirror
  image, so every epoch can draw a fresh latent ``z = mean + std * eps`` under a random flip;
* the resized mask (uint8; the mirrored mask is the same array flipped, so it is not stored twice);
* the caption, and for a frozen text encoder (CLIP) its embedding in float16.

A cache lives in ``<cache_dir>/<dataset>-<fingerprint>/``. ``LatentCache`` reads one; building it, or
finding the one already built, is ``latent_cache_build.py``; its fingerprint ``latent_cache_fingerprint.py``;
its files ``latent_cache_format.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data
from safetensors import safe_open
from safetensors.torch import load_file

from jodiffusion.training.latent_cache_format import SAMPLES_NAME, read_json, read_meta

PRELOAD_MAX_BYTES = 1 << 30  # smaller caches are read into memory; larger ones are memory-mapped


def sample_latent(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A posterior sample ``mean + std * eps`` (raw latents; the codec's ``scale`` normalises them)."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * eps


class LatentCache(torch.utils.data.Dataset):
    """Index -> ``{"img_mean", "img_std"}`` (C, h, w) float32 raw latents, ``"mask"`` (H, W) long,
    ``"caption"``, ``"text_emb"`` (L, D) float32 (frozen text encoders only), ``"stem"`` and ``"flip"``.
    With ``random_flip`` each item is mirrored (latents and mask together) with probability 1/2."""

    sample_latent = staticmethod(sample_latent)

    def __init__(self, folder: str | os.PathLike, random_flip: bool = True, preload: bool | None = None):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        samples = read_json(self.folder / SAMPLES_NAME)
        self.stems: list[str] = samples["stems"]
        self.captions: list[str] = samples["captions"]
        self.random_flip = random_flip
        self.epoch, self.flip_seed = 0, 0
        self.fingerprint: str = self.meta["fingerprint"]
        self.resolution: tuple[int, int] = tuple(self.meta["resolution"])
        self.latent_shape: tuple[int, int, int] = tuple(self.meta["latent_shape"])
        self.has_text_embeddings: bool = self.meta["text_shape"] is not None
        self._shards = [self.folder / s["file"] for s in self.meta["shards"]]
        counts = [s["count"] for s in self.meta["shards"]]
        self._starts = np.cumsum([0, *counts])
        if preload is None:
            preload = sum(p.stat().st_size for p in self._shards) <= PRELOAD_MAX_BYTES
        self._data: dict[str, torch.Tensor] | None = None
        if preload:
            parts = [load_file(str(p)) for p in self._shards]
            self._data = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.meta["num_samples"])

    def __getstate__(self) -> dict[str, Any]:  # open file handles do not travel to DataLoader workers
        return {**self.__dict__, "_handles": {}}

    def _row(self, key: str, index: int) -> torch.Tensor:
        if self._data is not None:
            return self._data[key][index]
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self._shards[shard]), framework="pt")
        return self._handles[shard].get_slice(key)[int(index - self._starts[shard])]

    def get(self, index: int, flip: bool = False) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        k = int(bool(flip))
        mean = self._row("img_mean", index)[k].float()
        std = self._row("img_std", index)[k].float() if self.meta["has_std"] else torch.zeros_like(mean)
        mask = self.mask(index)
        item = {"img_mean": mean, "img_std": std, "mask": mask.flip(-1) if flip else mask,
                "caption": self.captions[index], "stem": self.stems[index], "flip": bool(flip), "index": index}
        if self.has_text_embeddings:
            item["text_emb"] = self._row("text_emb", index).float()
        return item

    def mask(self, index: int) -> torch.Tensor:
        """The resized mask of sample ``index`` (unflipped), without reading its image latents."""
        return self._row("mask", index).long()

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop's loader each epoch: flips are a function of (epoch, index),
        so a resumed run sees the same flips as an uninterrupted one."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        flip = False
        if self.random_flip:
            flip = bool(np.random.SeedSequence([self.flip_seed, self.epoch, int(index)]).generate_state(1)[0] & 1)
        return self.get(index, flip)

    def always_ignore(self, ignore_index: int) -> np.ndarray:
        """(H, W) bool: the pixels that are ``ignore_index`` in every cached mask (letterbox padding)."""
        if self._data is not None:
            return (self._data["mask"] == ignore_index).all(dim=0).numpy()
        always = None
        for i in range(len(self)):
            ignored = self._row("mask", i) == ignore_index
            always = ignored if always is None else always & ignored
        return always.numpy() if always is not None else np.zeros(self.resolution, dtype=bool)

    def latent_stats(self, max_samples: int = 1024) -> tuple[float, float]:
        """Mean and std of the posterior means over up to ``max_samples`` evenly spaced samples: a
        codec's ``shift_factor`` and ``1 / scaling_factor`` measured from this data."""
        idx = np.unique(np.linspace(0, len(self) - 1, min(max_samples, len(self))).round().astype(int))
        z = torch.stack([self._row("img_mean", int(i))[0].float() for i in idx])
        return float(z.mean()), float(z.std())


__all__ = ["LatentCache", "sample_latent"]
