"""Data transforms: fitting an (image, mask) pair to a training frame with its aspect ratio kept
(``resize_pair``: letterbox or centre crop, used by the latent cache, the segmenter's data and the
pipeline's resize stage; ``FitCounter`` counts what that changed), and the mask-only pipeline of the
annotation VAE: cached masks, random crop with ignore padding, horizontal flip, and a collate that pads a
batch to a common, latent-grid-aligned size; the images the learned image codec trains and is scored on
(``ImageSet``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from jodiffusion.data.base import SegmentationDataset

RESIZE_MODES = ("letterbox", "crop")
IMAGE_FILL = 0  # letterbox bars of the image: black, the convention; the mask under them is ignore


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int | tuple[int, int], mode: str = "letterbox",
                ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Fit a pair to ``size`` (H, W), aspect ratio kept (bicubic image, nearest mask).

    ``letterbox`` (default): scale so the whole pair fits inside ``size`` and pad the rest, the image
    with black and the mask with ``ignore_index``, so no pixel is lost and no padding is scored or
    learnt as a class. ``crop``: scale so the pair covers ``size`` and cut the centre out (what is cut
    is lost). A pair already at ``size`` is returned unchanged; :func:`fit_change` says what either
    mode changes, from the sizes alone."""
    th, tw = _target(size)
    h, w = mask.shape[:2]
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} and mask {w}x{h} differ in size")
    if (h, w) == (th, tw):
        return image, mask
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r}: choose one of {', '.join(RESIZE_MODES)}")
    nh, nw = _scaled(h, w, th, tw, mode)
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC))
        mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.Resampling.NEAREST))
    if mode == "crop":
        top, left = (nh - th) // 2, (nw - tw) // 2
        return (np.ascontiguousarray(image[top:top + th, left:left + tw]),
                np.ascontiguousarray(mask[top:top + th, left:left + tw]))
    top, left = (th - nh) // 2, (tw - nw) // 2
    out_image = np.full((th, tw) + image.shape[2:], IMAGE_FILL, image.dtype)
    out_mask = np.full((th, tw), ignore_index, mask.dtype)
    out_image[top:top + nh, left:left + nw] = image
    out_mask[top:top + nh, left:left + nw] = mask
    return out_image, out_mask


def fit_change(height: int, width: int, size: int | tuple[int, int], mode: str = "letterbox") -> dict:
    """What :func:`resize_pair` does to a ``height`` x ``width`` pair, from the sizes alone:
    ``padded``, the share of the output frame that is padding (letterbox), and ``lost``, the share of
    the (scaled) pair cut away (crop)."""
    th, tw = _target(size)
    nh, nw = _scaled(height, width, th, tw, mode)
    if mode == "crop":
        return {"padded": 0.0, "lost": 1.0 - (th * tw) / (nh * nw)}
    return {"padded": 1.0 - (nh * nw) / (th * tw), "lost": 0.0}


def _target(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _scaled(h: int, w: int, th: int, tw: int, mode: str) -> tuple[int, int]:
    """The pair's size after scaling: covering (th, tw) for a crop, inside it for a letterbox."""
    if (h, w) == (th, tw):
        return h, w
    if mode == "crop":
        scale = max(th / h, tw / w)
        return max(th, round(h * scale)), max(tw, round(w * scale))
    scale = min(th / h, tw / w)
    return min(th, max(1, round(h * scale))), min(tw, max(1, round(w * scale)))


def padding_bars(always_ignore: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): the full rows and columns at the frame's edges that are ignore in every
    training mask (``always_ignore``, (H, W) bool: ignore in each mask and in its mirror image, which
    training also sees), i.e. the letterbox padding that square data gets in a wide frame. Generation
    writes them as padding again, so no class is given to what the data never labels."""
    always = np.asarray(always_ignore, dtype=bool)
    always = always & always[:, ::-1]
    height, width = always.shape
    rows, cols = always.all(axis=1), always.all(axis=0)

    def run(flags: np.ndarray) -> int:
        return int(np.argmin(flags)) if not flags.all() else len(flags)

    top, bottom, left, right = run(rows), run(rows[::-1]), run(cols), run(cols[::-1])
    if top + bottom >= height or left + right >= width:  # no mask labels anything: no frame to speak of
        return (0, 0, 0, 0)
    return top, bottom, left, right


def apply_padding(images: np.ndarray, masks: np.ndarray, bars: tuple[int, int, int, int] | None,
                  ignore_index: int) -> None:
    """Write the bars of :func:`padding_bars` into (B, H, W, 3) images (black, as :func:`resize_pair` pads)
    and (B, H, W) masks (``ignore_index``), in place."""
    if not bars or not any(bars):
        return
    top, bottom, left, right = bars
    height, width = masks.shape[1:3]
    for region in (np.s_[:, :top], np.s_[:, height - bottom:], np.s_[:, :, :left], np.s_[:, :, width - right:]):
        masks[region] = ignore_index
        images[region] = IMAGE_FILL


class FitCounter:
    """What fitting a split to the training size changed: pairs affected, the share of pixels padded
    or lost, and the worst pair; ``to_dict`` goes into stage records, ``metrics.json`` and the report."""

    def __init__(self, size: tuple[int, int], mode: str):
        self.size, self.mode = (int(size[0]), int(size[1])), mode
        self.pairs = self.changed = 0
        self.padded = self.lost = 0.0
        self.worst: tuple[float, str, tuple[int, int]] | None = None
        self.aspects: list[float] = []  # width / height of each pair

    def add(self, stem: str, height: int, width: int) -> None:
        change = fit_change(height, width, self.size, self.mode)
        self.pairs += 1
        self.aspects.append(width / height)
        self.padded += change["padded"]
        self.lost += change["lost"]
        amount = change["padded"] + change["lost"]
        if amount > 1e-9:
            self.changed += 1
            if self.worst is None or amount > self.worst[0]:
                self.worst = (amount, stem, (height, width))

    def to_dict(self) -> dict:
        worst = None if self.worst is None else {
            "stem": self.worst[1], "size": list(self.worst[2]),
            ("padded" if self.mode == "letterbox" else "lost"): round(self.worst[0], 4)}
        return {"mode": self.mode, "size": list(self.size), "pairs": self.pairs, "changed": self.changed,
                "padded_share": round(self.padded / max(self.pairs, 1), 4),
                "lost_share": round(self.lost / max(self.pairs, 1), 4), "worst": worst,
                "suggested_width": self.suggested_width()}

    def suggested_width(self) -> int | None:
        """The width (a multiple of 8, at this height) of the data's median aspect ratio: the working size
        that pads (or cuts) least, when it is not the one in use."""
        if not self.aspects:
            return None
        width = max(16, 8 * round(self.size[0] * float(np.median(self.aspects)) / 8))
        return None if width == self.size[1] else width


def fit_counts(dataset: SegmentationDataset, size: tuple[int, int], mode: str) -> dict:
    """``FitCounter`` over a whole split, from the samples' sizes (mask headers for file datasets)."""
    counter = FitCounter(size, mode)
    for i in range(len(dataset)):
        counter.add(dataset.stem(i), *dataset.pair_size(i))
    return counter.to_dict()


def describe_fit(fit: dict) -> str:
    """One line for a summary: ``train: 227 of 328 pairs letterboxed to 96x128, 12.3% of pixels padding
    (worst horse_017, 48.0%); nothing cropped``."""
    size = f"{fit['size'][0]}x{fit['size'][1]}"
    if not fit["changed"]:
        return f"{fit['pairs']} pairs already at {size} (aspect ratio as the data's): nothing padded or cropped"
    worst = fit["worst"] or {}
    hint = ""
    if fit.get("suggested_width") and fit["padded_share"] + fit["lost_share"] > 0.1:
        hint = f"; the data's median aspect ratio suggests data.width={fit['suggested_width']}"
    if fit["mode"] == "crop":
        return (f"{fit['changed']} of {fit['pairs']} pairs centre-cropped to {size}: "
                f"{100 * fit['lost_share']:.1f}% of pixels lost (worst {worst.get('stem')}, "
                f"{100 * worst.get('lost', 0):.1f}%); data.resize=letterbox keeps every pixel{hint}")
    return (f"{fit['changed']} of {fit['pairs']} pairs letterboxed to {size}: "
            f"{100 * fit['padded_share']:.1f}% of pixels are padding, marked ignore (worst "
            f"{worst.get('stem')}, {100 * worst.get('padded', 0):.1f}%); nothing cropped{hint}")


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


class ImageSet(torch.utils.data.Dataset):
    """The images of a split at the working size (fitted as the latent cache fits them), held in memory
    as uint8; items are (3, H, W) floats in [-1, 1], mirrored at random with ``hflip``."""

    def __init__(self, dataset: SegmentationDataset, size: tuple[int, int], resize: str, hflip: bool = False,
                 threads: int = 4):
        self.hflip = hflip
        ignore = dataset.classes.ignore_index

        def load(i: int) -> np.ndarray:
            return resize_pair(dataset.load_image(i), dataset.load_mask(i), size, resize, ignore)[0]

        with ThreadPoolExecutor(threads) as pool:
            self.images = list(pool.map(load, range(len(dataset))))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        """``index``, or ``(index, seed)`` (``EpochShuffleSampler(keyed=True)``): the flip then comes from
        ``seed``, the same whatever the workers or a resume."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.images[index]
        if self.hflip:
            flip = np.random.default_rng(seed).random() < 0.5 if seed is not None else float(torch.rand(())) < 0.5
            image = image[:, ::-1] if flip else image
        # a copy: cached images may be read-only views of the decoded files
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(127.5).sub(1.0)
