"""``build_dataset``: from a ``DataConfig`` and a split name to a dataset, by a registry of builders;
``build_split``: the same, validated (what every stage trains or scores on).

The builders take the ``DataConfig`` typed as ``Any``: ``data/config.py`` imports this registry to check
``data.name``, so importing ``DataConfig`` here would close a circle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jodiffusion.data.base import SegmentationDataset, Transform
from jodiffusion.data.classes import ClassInfo, check_same_classes
from jodiffusion.data.readers.ade20k import read_ade20k
from jodiffusion.data.readers.camvid import read_camvid
from jodiffusion.data.readers.cityscapes import read_cityscapes
from jodiffusion.data.readers.coco import read_coco
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.data.readers.voc import read_voc
from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.data.validate import ensure_valid
from jodiffusion.errors import DatasetError
from jodiffusion.utils.ownership import check_path_component

Builder = Callable[[Any, str], SegmentationDataset]  # (a DataConfig, split name)


class UnknownDatasetError(DatasetError, KeyError):
    """``cfg.name`` names no registered dataset; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def _shapes(cfg: Any, split: str) -> SegmentationDataset:
    num_images = cfg.num_train if split == cfg.train_split else cfg.num_val
    if split == "test" and cfg.num_test:
        num_images = cfg.num_test
    return ShapesDataset(split=split, num_images=num_images, resolution=cfg.resolution, seed=cfg.seed,
                         difficulty=cfg.difficulty)


def _voc(cfg: Any, split: str) -> SegmentationDataset:
    return read_voc(cfg.root, split, trainaug=cfg.voc_trainaug)


def _ade20k(cfg: Any, split: str) -> SegmentationDataset:
    return read_ade20k(cfg.root, split)


def _coco_stuff(cfg: Any, split: str) -> SegmentationDataset:
    return read_coco(cfg.root, split, variant="stuff")


def _coco_things(cfg: Any, split: str) -> SegmentationDataset:
    return read_coco(cfg.root, split, variant="things")


def _cityscapes(cfg: Any, split: str) -> SegmentationDataset:
    return read_cityscapes(cfg.root, split)


def _camvid(cfg: Any, split: str) -> SegmentationDataset:
    return read_camvid(cfg.root, split)


def _folder(cfg: Any, split: str) -> SegmentationDataset:
    return read_folder(cfg.root, split)  # classes from <root>/classes.json|yaml (layout.read_classes)


DATASETS: dict[str, Builder] = {
    "shapes": _shapes,
    "voc": _voc,
    "ade20k": _ade20k,
    "coco-stuff": _coco_stuff,
    "coco-things": _coco_things,
    "cityscapes": _cityscapes,
    "camvid": _camvid,
    "folder": _folder,
}


# Datasets that are built without a root folder (the embedded ones).
_ROOTLESS = {"shapes"}


def register_dataset(name: str, builder: Builder, *, overwrite: bool = False, needs_root: bool = True) -> None:
    """Add a builder ``(cfg, split) -> SegmentationDataset`` under ``name``; ``data.name=<name>`` then
    selects it in every config (``needs_root``: whether ``data.root`` is required)."""
    if name in DATASETS and not overwrite:
        raise ValueError(f"dataset '{name}' is already registered")
    DATASETS[name] = builder
    (_ROOTLESS.discard if needs_root else _ROOTLESS.add)(name)


def dataset_names() -> tuple[str, ...]:
    """The names ``data.name`` accepts: every registered dataset, built-in ones first."""
    return tuple(DATASETS)


def needs_root(name: str) -> bool:
    return name not in _ROOTLESS


def build_dataset(cfg: Any, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """The ``split`` of the dataset ``cfg.name`` with ``transform`` attached.

    Raises ``UnknownDatasetError`` (a ``KeyError`` and a ``DatasetError``) listing the valid names for
    an unknown ``cfg.name``, ``ConfigError`` for a split that is not a plain name (``..``, ``a/b``) and
    ``DatasetError`` for a missing or malformed dataset folder.
    """
    try:
        builder = DATASETS[cfg.name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset '{cfg.name}'; valid names: {', '.join(sorted(DATASETS))}") from None
    check_path_component(split, "dataset split")  # it becomes a folder / file name in every reader
    dataset = builder(cfg, split)
    dataset.transform = transform
    return dataset


def build_split(data: Any, split: str, progress: bool = True,
                same_classes_as: ClassInfo | None = None) -> SegmentationDataset:
    """``build_dataset``, then ``ensure_valid``: a split every stage can train or score on. With
    ``same_classes_as`` (a synthetic set beside the real one) the class names are compared first, since
    a wrong label space is the clearer error."""
    dataset = build_dataset(data, split)
    if same_classes_as is not None:
        check_same_classes(same_classes_as, dataset.classes, str(data.root))
    ensure_valid(dataset, progress=progress)
    return dataset
