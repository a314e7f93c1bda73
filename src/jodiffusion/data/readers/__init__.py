"""Readers for the public datasets (one module each: ``ade20k``, ``camvid``, ``cityscapes``, ``coco``,
``voc``) and the generic folder layout (``folder``); each returns a
``FileSegmentationDataset`` whose masks come out in train ids (see ``jodiffusion.data.metadata``).

Files are never dropped silently: an image without a mask, or a mask without an image, stays in the
dataset as a ``Sample`` with ``None`` for the missing partner, so that ``jodiffusion validate`` (and
``ensure_valid`` before training) lists it. A missing root or split folder raises ``DatasetError``
naming the path and showing the expected layout.
"""
