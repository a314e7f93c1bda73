"""Segmenter training data: the real and synthetic splits, their augmentation and the mixed batches.

Every training pair is fitted to one *training frame* (the size of the first training image, its
short side scaled to ``input_size`` when set), then scale-jittered, cropped and flipped with a
generator seeded per drawn sample, so batches do not depend on worker or process counts and a
resumed run sees the same data. With ``mix=real+synthetic`` every batch holds a fixed number of
samples from each source (:func:`batch_split`), drawn by :class:`MixedBatchSampler`; with
``mix=synthetic-then-real`` the same sampler switches from all-synthetic to all-real batches at one batch.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from jodiffusion.data.base import SegmentationDataset
from jodiffusion.data.config import DataConfig
from jodiffusion.data.transforms import resize_pair


def synthetic_data_config(folder: str, split: str = "train") -> DataConfig:
    return DataConfig(name="folder", root=folder, train_split=split)


def frame_size(dataset: SegmentationDataset, input_size: int) -> tuple[int, int]:
    """(H, W) of the training frame: the first image's size, short side scaled to ``input_size``."""
    h, w = dataset.load_mask(0).shape[:2]
    if not input_size:
        return h, w
    s = input_size / min(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def augment_pair(image: np.ndarray, mask: np.ndarray, out_hw: tuple[int, int], scale_range: tuple[float, float],
                 hflip: bool, ignore_index: int, rng: np.random.Generator,
                 dihedral: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Random rescale, random crop to ``out_hw`` (padding: black image, ignored mask) and flip; with
    ``dihedral`` also a vertical flip and, for a square ``out_hw``, a quarter turn (the eight symmetries of
    the square: label-keeping only where no class depends on which way is up, like the shapes data)."""
    h, w = mask.shape
    s = rng.uniform(*scale_range)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.Resampling.NEAREST))
    oh, ow = out_hw
    if nh < oh or nw < ow:
        ph, pw = max(nh, oh), max(nw, ow)
        padded_image = np.zeros((ph, pw, 3), np.uint8)
        padded_mask = np.full((ph, pw), ignore_index, np.uint8)
        padded_image[:nh, :nw], padded_mask[:nh, :nw] = image, mask
        image, mask, nh, nw = padded_image, padded_mask, ph, pw
    top, left = int(rng.integers(0, nh - oh + 1)), int(rng.integers(0, nw - ow + 1))
    image, mask = image[top:top + oh, left:left + ow], mask[top:top + oh, left:left + ow]
    if hflip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if dihedral:
        if rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        if oh == ow and rng.random() < 0.5:
            image, mask = np.rot90(image), np.rot90(mask)
    return np.array(image, order="C"), np.array(mask, order="C")  # copies: the cache stays untouched


class TrainPairs(torch.utils.data.Dataset):
    """The training pairs of one or more sources behind one index space.

    Key ``(index, seed)`` -> ``{"image": (3, h, w) uint8, "mask": (h, w) long, "synthetic": bool}``: the
    pair is fitted to ``frame`` (aspect ratio kept: ``resize`` letterbox or crop, as the data config
    says), then augmented by a generator seeded
    with ``seed``. ``sources``: ``(dataset, is_synthetic)``; masks are mapped to ``ignore_index``.
    """

    def __init__(self, sources: list[tuple[SegmentationDataset, bool]], frame: tuple[int, int],
                 out_size: tuple[int, int], scale_range: tuple[float, float] = (1.0, 1.0), hflip: bool = False,
                 ignore_index: int = 255, cache: bool = True, threads: int = 4, resize: str = "letterbox",
                 dihedral: bool = False):
        self.sources = sources
        self.dihedral = dihedral
        self.resize = resize
        self.frame, self.out_size, self.scale_range = frame, out_size, scale_range
        self.hflip, self.ignore_index = hflip, ignore_index
        self.offsets = np.cumsum([0] + [len(ds) for ds, _ in sources])
        self._cache = None
        if cache:
            with ThreadPoolExecutor(threads) as pool:
                self._cache = list(pool.map(self._fitted, range(len(self))))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (source number, index within that source)."""
        s = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return s, int(index - self.offsets[s])

    def _fitted(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s, i = self.locate(index)
        dataset = self.sources[s][0]
        image, mask = resize_pair(dataset.load_image(i), dataset.load_mask(i), self.frame, self.resize,
                                  dataset.classes.ignore_index)
        own_ignore = dataset.classes.ignore_index
        if own_ignore != self.ignore_index:
            mask = np.where(mask == own_ignore, self.ignore_index, mask).astype(np.uint8)
        return image, mask

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        image, mask = self._cache[index] if self._cache is not None else self._fitted(index)
        image, mask = augment_pair(image, mask, self.out_size, self.scale_range, self.hflip, self.ignore_index,
                                   np.random.default_rng(seed), self.dihedral)
        return {"image": torch.from_numpy(image).permute(2, 0, 1), "mask": torch.from_numpy(mask).long(),
                "synthetic": self.sources[self.locate(index)[0]][1]}


class MixedBatchSampler:
    """Batches of ``(index, seed)`` keys holding exactly ``per_batch[s]`` samples of each source ``s``.

    Each source is an endless stream of shuffles (one per pass, seeded by seed, source and pass), read
    ``per_batch[s]`` items per batch, so batch ``b`` of epoch ``e`` depends only on (seed, e, b): a resumed
    run sees the same batches. An epoch is one pass over the source that takes the most batches to go
    through. Indices of source ``s`` are offset by the sizes of the sources before it.

    ``switch_at`` and ``per_batch_after``: from batch number ``switch_at`` on (counted from the start of
    training over all epochs), batches hold ``per_batch_after[s]`` of each source instead: the two-phase
    schedule (all synthetic, then all real). Where each source's stream stands is a closed form of the
    batch number, so a run resumed in either phase draws what an uninterrupted one would.
    """

    drop_last = True  # every batch is full

    def __init__(self, sizes: list[int], per_batch: list[int], seed: int = 0, min_batches: int = 1,
                 switch_at: int | None = None, per_batch_after: list[int] | None = None):
        compositions = [per_batch] if per_batch_after is None else [per_batch, per_batch_after]
        for k in compositions:
            if len(sizes) != len(k) or min(sizes) < 1 or min(k) < 0 or sum(k) < 1:
                raise ValueError(f"bad sources: sizes {sizes}, per batch {k}")
        if (switch_at is None) != (per_batch_after is None) or (switch_at is not None and switch_at < 0):
            raise ValueError(f"switch_at={switch_at} and per_batch_after={per_batch_after} go together, "
                             "switch_at >= 0")
        if per_batch_after is not None and sum(per_batch_after) != sum(per_batch):
            raise ValueError(f"both phases need the same batch size: {per_batch} and {per_batch_after}")
        self.sizes, self.per_batch, self.seed = list(sizes), list(per_batch), int(seed)
        self.switch_at = switch_at
        self.per_batch_after = list(per_batch_after) if per_batch_after is not None else None
        self.offsets = np.cumsum([0] + self.sizes)
        self.batch_size = sum(per_batch)
        # min_batches: the number of processes, so that each gets at least one batch per epoch
        self.batches_per_epoch = max([min_batches] + [-(-n // k) for per in compositions
                                                      for n, k in zip(sizes, per, strict=True) if k])
        self.epoch = 0
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    @property
    def sampler(self):  # accelerate's multi-process wrapper sets the epoch through `.sampler.set_epoch`
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _perm(self, source: int, rnd: int) -> np.ndarray:
        key = (source, rnd)
        if key not in self._perms:
            if len(self._perms) > 8:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, source, rnd]).permutation(self.sizes[source])
        return self._perms[key]

    def composition(self, number: int) -> list[int]:
        """Samples of each source in batch ``number``."""
        if self.switch_at is not None and number >= self.switch_at:
            return self.per_batch_after
        return self.per_batch

    def _stream_start(self, source: int, number: int) -> int:
        """Position in source ``source``'s stream where batch ``number`` starts reading."""
        if self.switch_at is None or number <= self.switch_at:
            return number * self.per_batch[source]
        return self.switch_at * self.per_batch[source] + (number - self.switch_at) * self.per_batch_after[source]

    def batch(self, number: int) -> list[tuple[int, int]]:
        """The ``number``-th batch since the start of training (epoch * batches_per_epoch + batch)."""
        keys = []
        for s, (n, k) in enumerate(zip(self.sizes, self.composition(number), strict=True)):
            first = self._stream_start(s, number)
            for j in range(first, first + k):  # position j in source s's stream
                index = int(self.offsets[s] + self._perm(s, j // n)[j % n])
                seed = int(np.random.SeedSequence([self.seed, s, j]).generate_state(1)[0])
                keys.append((index, seed))
        return keys

    def __iter__(self):
        start = self.epoch * self.batches_per_epoch
        for b in range(self.batches_per_epoch):
            yield self.batch(start + b)
