"""Cityscapes (fine annotations, 19 train ids)."""

from __future__ import annotations

import logging
from pathlib import Path

from jodiffusion.data.base import FileSegmentationDataset, Transform
from jodiffusion.data.metadata import CITYSCAPES_CLASSES, CITYSCAPES_LABELID_LUT, CITYSCAPES_LUT
from jodiffusion.data.readers.common import index_files, pair_samples, require_dir, require_root
from jodiffusion.errors import DatasetError

logger = logging.getLogger(__name__)

CITYSCAPES_LAYOUT = """\
  <root>/
    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (0..18, 255 ignore;
        made by cityscapesscripts' createTrainIdLabelImgs; *_gtFine_labelIds.png are used if absent)
  splits: train, val, test"""

IMAGE_ENDING = "_leftImg8bit.png"
TRAIN_ID_ENDING = "_gtFine_labelTrainIds.png"
LABEL_ID_ENDING = "_gtFine_labelIds.png"


def read_cityscapes(root: str | Path, split: str = "train",
                    transform: Transform | None = None) -> FileSegmentationDataset:
    """Cityscapes; images and masks pair by their shared ``<city>_<seq>_<frame>`` prefix."""
    root = require_root(root, "Cityscapes", CITYSCAPES_LAYOUT)
    image_dir = require_dir(root / "leftImg8bit" / split, f"the Cityscapes '{split}' images",
                            CITYSCAPES_LAYOUT)
    mask_dir = require_dir(root / "gtFine" / split, f"the Cityscapes '{split}' annotations",
                           CITYSCAPES_LAYOUT)
    name = f"cityscapes:{split}"
    images = index_files(image_dir, (IMAGE_ENDING,), recursive=True)
    masks = index_files(mask_dir, (TRAIN_ID_ENDING,), recursive=True)
    lut = CITYSCAPES_LUT
    if not masks:
        masks = index_files(mask_dir, (LABEL_ID_ENDING,), recursive=True)
        if not masks:
            raise DatasetError(f"{mask_dir}: no *{TRAIN_ID_ENDING} (or *{LABEL_ID_ENDING}) files. "
                               f"Expected layout:\n{CITYSCAPES_LAYOUT}")
        logger.info("%s: no *%s files; mapping *%s to train ids", name, TRAIN_ID_ENDING, LABEL_ID_ENDING)
        lut = CITYSCAPES_LABELID_LUT
    samples = pair_samples(images, masks, name)
    return FileSegmentationDataset(samples, CITYSCAPES_CLASSES, lut, transform, name=name)
