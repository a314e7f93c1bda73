"""ADE20K / SceneParse150 in the ADEChallengeData2016 layout."""

from __future__ import annotations

from pathlib import Path

from jodiffusion.data.base import FileSegmentationDataset, Transform
from jodiffusion.data.metadata import ADE20K_CLASSES, ADE20K_LUT
from jodiffusion.data.readers.common import (
    IMAGE_SUFFIXES,
    index_files,
    pair_samples,
    require_dir,
    require_root,
)

ADE20K_LAYOUT = """\
  <root>/                         (ADEChallengeData2016)
    images/training/*.jpg         images/validation/*.jpg
    annotations/training/*.png    annotations/validation/*.png
                                  (0 = other -> ignore, 1..150 = classes -> 0..149)"""

ADE20K_SPLITS = {"train": "training", "val": "validation"}


def read_ade20k(root: str | Path, split: str = "train",
                transform: Transform | None = None) -> FileSegmentationDataset:
    """ADE20K; split ``train``/``val`` (or the folder names ``training``/``validation``)."""
    root = require_root(root, "ADE20K", ADE20K_LAYOUT)
    folder = ADE20K_SPLITS.get(split, split)
    image_dir = require_dir(root / "images" / folder, f"the ADE20K '{split}' images", ADE20K_LAYOUT)
    mask_dir = require_dir(root / "annotations" / folder, f"the ADE20K '{split}' annotations", ADE20K_LAYOUT)
    name = f"ade20k:{split}"
    samples = pair_samples(index_files(image_dir, IMAGE_SUFFIXES), index_files(mask_dir, (".png",)), name)
    return FileSegmentationDataset(samples, ADE20K_CLASSES, ADE20K_LUT, transform, name=name)
