"""The generic folder layout of ``jodiffusion.data.layout`` (what this project writes)."""

from __future__ import annotations

from pathlib import Path

from jodiffusion.data import layout
from jodiffusion.data.base import FileSegmentationDataset, Transform
from jodiffusion.data.readers.common import (
    IMAGE_SUFFIXES,
    index_files,
    pair_samples,
    read_stem_list,
    require_dir,
    require_root,
    samples_from_list,
)

FOLDER_LAYOUT = """\
  <root>/
    classes.json (or classes.yaml)   {"names": [...], "palette": [[r, g, b], ...], "ignore_index": 255,
                                     "background": 0}  (background: class id or name, null for none;
                                     absent: the class named "background" if any, else none)
    images/<split>/<stem>.png|.jpg|.jpeg
    masks/<split>/<stem>.png         single-channel class ids 0..K-1, 255 ignore
    splits/<split>.txt               optional: the stems of the split, one per line; with it, flat
                                     images/ and masks/ folders (no <split> subfolders) also work"""


def read_folder(root: str | Path, split: str = "train",
                transform: Transform | None = None) -> FileSegmentationDataset:
    """A folder dataset. Mask values are used as they are (no lookup table): values outside the class
    list are left for validation to report."""
    root = require_root(root, "folder", FOLDER_LAYOUT)
    classes = layout.read_classes(root)
    name = f"folder:{split}"
    split_file = root / layout.SPLITS_DIR / f"{split}.txt"
    image_dir = root / layout.IMAGES_DIR / split
    mask_dir = root / layout.MASKS_DIR / split
    if not image_dir.exists() and split_file.is_file():  # a file named images/<split> is an error
        image_dir, mask_dir = root / layout.IMAGES_DIR, root / layout.MASKS_DIR  # flat folders + split list
    require_dir(image_dir, f"the '{split}' images (or a {split_file} list with flat images/ and masks/)",
                FOLDER_LAYOUT)
    require_dir(mask_dir, f"the '{split}' masks", FOLDER_LAYOUT)
    if split_file.is_file():
        samples = samples_from_list(read_stem_list(split_file, (image_dir, mask_dir)), image_dir, mask_dir, name)
    else:
        samples = pair_samples(index_files(image_dir, IMAGE_SUFFIXES), index_files(mask_dir, (".png",)), name)
    return FileSegmentationDataset(samples, classes, None, transform, name=name)
