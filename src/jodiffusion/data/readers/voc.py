"""Pascal VOC 2012 in its distributed layout, with optional SBD "trainaug" masks."""

from __future__ import annotations

import logging
from pathlib import Path

from jodiffusion.data.base import FileSegmentationDataset, Transform
from jodiffusion.data.metadata import VOC_CLASSES, VOC_LUT
from jodiffusion.data.readers.common import read_stem_list, require_dir, require_root, samples_from_list
from jodiffusion.errors import DatasetError

logger = logging.getLogger(__name__)

VOC_LAYOUT = """\
  <root>/                         (VOC2012 itself, or a folder holding VOC2012/ or VOCdevkit/VOC2012/)
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png    palette PNG: 0 background, 1..20 classes, 255 boundary (ignore)
    ImageSets/Segmentation/{train,val,trainval}.txt
    SegmentationClassAug/<id>.png optional, SBD "trainaug" masks (grey values 0..20, 255)
    ImageSets/Segmentation/trainaug.txt (or train_aug.txt) optional, the trainaug list"""

TRAINAUG_LISTS = ("trainaug.txt", "train_aug.txt")


def _find_voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return root


def read_voc(root: str | Path, split: str = "train", trainaug: bool = True,
             transform: Transform | None = None) -> FileSegmentationDataset:
    """VOC 2012 segmentation. The split is a list in ``ImageSets/Segmentation``; with ``trainaug`` and
    split ``train``, the SBD-augmented list and ``SegmentationClassAug`` masks are used when both exist
    (10582 images instead of 1464)."""
    root = _find_voc_root(require_root(root, "VOC 2012", VOC_LAYOUT))
    image_dir = require_dir(root / "JPEGImages", "the VOC images folder", VOC_LAYOUT)
    sets_dir = require_dir(root / "ImageSets" / "Segmentation", "the VOC split lists", VOC_LAYOUT)
    name = f"voc:{split}"

    if trainaug and split == "train":
        aug_dir = root / "SegmentationClassAug"
        aug_list = next((sets_dir / n for n in TRAINAUG_LISTS if (sets_dir / n).is_file()), None)
        if aug_dir.is_dir() and aug_list is not None:
            logger.info("voc: using SBD trainaug (%s, %s)", aug_list, aug_dir)
            samples = samples_from_list(read_stem_list(aug_list, (image_dir, aug_dir)), image_dir, aug_dir,
                                       "voc:trainaug")
            return FileSegmentationDataset(samples, VOC_CLASSES, VOC_LUT, transform, name="voc:trainaug")
        missing = [str(p) for p in (aug_dir,) if not p.is_dir()]
        if aug_list is None:
            missing.append(str(sets_dir / TRAINAUG_LISTS[0]))
        logger.info("voc: trainaug requested but %s not found; using the 1464-image train list",
                    " and ".join(missing))

    list_path = sets_dir / f"{split}.txt"
    if not list_path.is_file():
        known = sorted(p.stem for p in sets_dir.glob("*.txt"))
        raise DatasetError(f"{list_path} does not exist: unknown VOC split '{split}'; "
                           f"lists found: {', '.join(known) or 'none'}. Expected layout:\n{VOC_LAYOUT}")
    mask_dir = require_dir(root / "SegmentationClass", "the VOC masks folder", VOC_LAYOUT)
    samples = samples_from_list(read_stem_list(list_path, (image_dir, mask_dir)), image_dir, mask_dir, name)
    return FileSegmentationDataset(samples, VOC_CLASSES, VOC_LUT, transform, name=name)
