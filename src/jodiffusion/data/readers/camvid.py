"""CamVid, 11 classes, in the SegNet tutorial layout."""

from __future__ import annotations

from pathlib import Path

from jodiffusion.data.base import FileSegmentationDataset, Transform
from jodiffusion.data.metadata import CAMVID_CLASSES, CAMVID_LUT
from jodiffusion.data.readers.common import index_files, pair_samples, require_dir, require_root

CAMVID_LAYOUT = """\
  <root>/
    train/<name>.png   trainannot/<name>.png    (masks: 0..10 classes, 11 void -> ignore)
    val/<name>.png     valannot/<name>.png
    test/<name>.png    testannot/<name>.png
  (the train.txt/val.txt lists hold paths of the original distribution; pairs match by file name)"""


def read_camvid(root: str | Path, split: str = "train",
                transform: Transform | None = None) -> FileSegmentationDataset:
    """CamVid: ``<root>/<split>/X.png`` pairs with ``<root>/<split>annot/X.png`` by file name."""
    root = require_root(root, "CamVid", CAMVID_LAYOUT)
    image_dir = require_dir(root / split, f"the CamVid '{split}' images", CAMVID_LAYOUT)
    mask_dir = require_dir(root / f"{split}annot", f"the CamVid '{split}' annotations", CAMVID_LAYOUT)
    name = f"camvid:{split}"
    samples = pair_samples(index_files(image_dir, (".png",)), index_files(mask_dir, (".png",)), name)
    return FileSegmentationDataset(samples, CAMVID_CLASSES, CAMVID_LUT, transform, name=name)
