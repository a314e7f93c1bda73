"""Readers for the public datasets and the generic folder layout; each returns a
``FileSegmentationDataset`` whose masks come out in train ids (see ``jodiffusion.data.metadata``).

Files are never dropped silently: an image without a mask, or a mask without an image, stays in the
dataset as a ``Sample`` with ``None`` for the missing partner, so that ``jodiffusion validate`` (and
``ensure_valid`` before training) lists it. A missing root or split folder raises ``DatasetError``
naming the path and showing the expected layout.
"""

from jodiffusion.data.readers.ade20k import read_ade20k
from jodiffusion.data.readers.camvid import read_camvid
from jodiffusion.data.readers.cityscapes import read_cityscapes
from jodiffusion.data.readers.coco import read_coco
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.data.readers.voc import read_voc

__all__ = ["read_ade20k", "read_camvid", "read_cityscapes", "read_coco", "read_folder", "read_voc"]
