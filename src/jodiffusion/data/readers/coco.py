"""COCO semantic-segmentation PNGs in the COCO-Stuff 164k layout: stuff+things and things only."""

from __future__ import annotations

import logging
from pathlib import Path

from jodiffusion.data.base import FileSegmentationDataset, Transform
from jodiffusion.data.metadata import (
    COCO_STUFF_CLASSES,
    COCO_STUFF_LUT,
    COCO_THINGS_CLASSES,
    COCO_THINGS_LUT,
    build_lut,
)
from jodiffusion.data.readers.common import (
    IMAGE_SUFFIXES,
    index_files,
    pair_samples,
    require_dir,
    require_root,
)
from jodiffusion.errors import DatasetError

logger = logging.getLogger(__name__)

COCO_LAYOUT = """\
  <root>/
    images/train2017/<id>.jpg                 images/val2017/<id>.jpg
    annotations/train2017/<id>.png            annotations/val2017/<id>.png
        coco-stuff:  COCO category id - 1 (0..181), 255 unlabelled (the stuffthingmaps PNGs)
        coco-things: 0 background, raw COCO category ids 1..90 of the 80 thing classes
    or annotations/<split>/<id>_labelTrainIds.png  masks already in contiguous train ids"""

COCO_SPLITS = {"train": "train2017", "val": "val2017"}
TRAIN_ID_SUFFIX = "_labelTrainIds"
VARIANTS = {"stuff": (COCO_STUFF_CLASSES, COCO_STUFF_LUT), "things": (COCO_THINGS_CLASSES, COCO_THINGS_LUT)}


def read_coco(root: str | Path, split: str = "train", variant: str = "stuff",
              transform: Transform | None = None) -> FileSegmentationDataset:
    """COCO semantic masks, ``variant`` ``"stuff"`` (171 classes) or ``"things"`` (background + 80).

    Masks pair with images by stem; a mask stem may carry a ``_suffix`` (``<id>_labelTrainIds.png``).
    When the folder holds ``*_labelTrainIds.png`` files (the output of the usual conversion scripts,
    stored next to the raw maps), only those are read and their values are taken as train ids
    already; otherwise the raw category ids are mapped with the variant's lookup table.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got '{variant}'")
    classes, lut = VARIANTS[variant]
    dataset = f"coco-{variant}"
    root = require_root(root, dataset, COCO_LAYOUT)
    folder = COCO_SPLITS.get(split, split)
    image_dir = require_dir(root / "images" / folder, f"the {dataset} '{split}' images", COCO_LAYOUT)
    mask_dir = require_dir(root / "annotations" / folder, f"the {dataset} '{split}' annotations", COCO_LAYOUT)
    name = f"{dataset}:{split}"

    images = index_files(image_dir, IMAGE_SUFFIXES)
    raw_masks = index_files(mask_dir, (".png",))
    train_id_masks = {k.removesuffix(TRAIN_ID_SUFFIX): p for k, p in raw_masks.items()
                      if k.endswith(TRAIN_ID_SUFFIX)}
    if train_id_masks:
        logger.info("%s: reading the <id>%s.png masks as train ids", name, TRAIN_ID_SUFFIX)
        masks = train_id_masks
        lut = build_lut({i: i for i in range(classes.num_classes)}, classes.num_classes)
    else:
        masks = {}
        clashes = []
        for key, path in raw_masks.items():
            if key not in images and "_" in key and key.split("_", 1)[0] in images:
                key = key.split("_", 1)[0]
            if key in masks:
                clashes.append(f"{masks[key].name} and {path.name}")
            masks[key] = path
        if clashes:
            raise DatasetError(f"{mask_dir}: several masks for the same image: {'; '.join(clashes[:10])}"
                               f"{' ...' if len(clashes) > 10 else ''}. Keep one mask per image.")
    samples = pair_samples(images, masks, name)
    return FileSegmentationDataset(samples, classes, lut, transform, name=name)
