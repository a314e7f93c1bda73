"""The dataset interface every reader implements.

A dataset is a list of samples (stem, image file, mask file) plus a ``ClassInfo``. Masks come out in
the *train-id* space: class ids ``0..K-1`` and ``ClassInfo.ignore_index`` (255). Readers whose files
use another encoding (ADE20K's 0 = "other", CamVid's 11 = void, COCO's sparse category ids) pass a
256-entry lookup table; values outside the label space are left as they are so that ``validate`` can
report them instead of training on them silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.utils.data
from PIL import Image

from jodiffusion.data.classes import ClassInfo
from jodiffusion.errors import DatasetError
from jodiffusion.utils.safe_load import link_note

Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Sample:
    stem: str
    image_path: Path | None
    mask_path: Path | None


# 16-bit grayscale (PNG, TIFF): PIL's convert("RGB") clips these to 0..255, which turns almost every
# pixel white, so they are scaled to 8 bit here instead.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# 32-bit integer and float pixels have no defined range: refused rather than guessed.
UNDEFINED_RANGE_MODES = {"I": "32-bit integer", "F": "32-bit float"}


def image_to_rgb(im: Image.Image, path) -> np.ndarray:
    """An opened image as (H, W, 3) uint8: 16-bit grayscale scaled to 8 bit (round(v * 255 / 65535))
    and repeated to grey RGB; a DatasetError for modes whose value range is not defined."""
    if im.mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(im).astype(np.uint32)
        grey = ((grey * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode in UNDEFINED_RANGE_MODES:
        raise DatasetError(
            f"image {path} has {UNDEFINED_RANGE_MODES[im.mode]} pixels (mode {im.mode}), whose range is not "
            "defined; save it as an 8-bit RGB (or 8/16-bit grayscale) image")
    return np.asarray(im.convert("RGB"))


def read_image(path: Path) -> np.ndarray:
    """RGB image as an (H, W, 3) uint8 array (16-bit grayscale is scaled to 8 bit, see
    ``image_to_rgb``); a clear error for unreadable files."""
    try:
        with Image.open(path) as im:
            return image_to_rgb(im, path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}{link_note(path)}: {exc}. Replace or remove the file.") from None


def read_mask(path: Path) -> np.ndarray:
    """Single-channel label image as an (H, W) uint8 array (palette PNGs give their indices)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(
                    f"mask {path} has mode {im.mode}; expected a single-channel label PNG (mode L or P) "
                    "holding class ids, not a colour rendering")
            arr = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read mask {path}{link_note(path)}: {exc}. Replace or remove the file.") from None
    if arr.dtype != np.uint8:
        if arr.max(initial=0) > 255:
            raise DatasetError(f"mask {path} holds values above 255; expected 8-bit class ids")
        arr = arr.astype(np.uint8)
    return arr


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: index -> {"image": (H,W,3) uint8, "mask": (H,W) uint8 train ids, "stem": str}."""

    classes: ClassInfo
    transform: Transform | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def stem(self, index: int) -> str:
        raise NotImplementedError

    def load_image(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def load_mask(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def pair_size(self, index: int) -> tuple[int, int]:
        """(height, width) of a sample; file datasets read it from the mask's header alone."""
        return tuple(self.load_mask(index).shape[:2])

    def __getitem__(self, index: int) -> dict:
        image, mask = self.load_image(index), self.load_mask(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return {"image": image, "mask": mask, "stem": self.stem(index)}


class FileSegmentationDataset(SegmentationDataset):
    """A dataset of image/mask files on disk, with an optional raw-value -> train-id lookup table."""

    def __init__(self, samples: list[Sample], classes: ClassInfo, label_lut: np.ndarray | None = None,
                 transform: Transform | None = None, name: str = "dataset"):
        if not samples:
            raise DatasetError(f"{name}: no samples found; check the dataset root and split")
        if label_lut is not None and (label_lut.shape != (256,) or label_lut.dtype != np.uint8):
            raise ValueError("label_lut must be a (256,) uint8 array")
        self.samples = samples
        self.classes = classes
        self.label_lut = label_lut
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def stem(self, index: int) -> str:
        return self.samples[index].stem

    def load_image(self, index: int) -> np.ndarray:
        path = self.samples[index].image_path
        if path is None:
            raise DatasetError(f"{self.name}: sample '{self.stem(index)}' has no image")
        return read_image(path)

    def load_mask(self, index: int) -> np.ndarray:
        path = self.samples[index].mask_path
        if path is None:
            raise DatasetError(f"{self.name}: sample '{self.stem(index)}' has no mask")
        mask = read_mask(path)
        return self.label_lut[mask] if self.label_lut is not None else mask

    def pair_size(self, index: int) -> tuple[int, int]:
        path = self.samples[index].mask_path
        try:
            with Image.open(path) as im:
                return im.size[1], im.size[0]
        except (OSError, ValueError, TypeError):
            return super().pair_size(index)  # the mask reader gives the error that names the file


def identity_lut() -> np.ndarray:
    return np.arange(256, dtype=np.uint8)
