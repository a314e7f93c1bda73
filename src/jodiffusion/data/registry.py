"""``build_dataset``: from a ``DataConfig`` and a split name to a dataset, by the registry of builders
``DATASETS``; ``build_split``: the same, validated (what every stage trains or scores on).

Your own dataset: ``DATASETS.register("mine", builder)`` with a builder ``(cfg, split) ->
SegmentationDataset`` makes ``data.name=mine`` work in every config (``needs_root=False`` for one that is
built without ``data.root``); ``@DATASETS.register("mine")`` does the same as a decorator.

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
from jodiffusion.utils.registry import Registry

Builder = Callable[[Any, str], SegmentationDataset]  # (a DataConfig, split name)


class UnknownDatasetError(DatasetError, KeyError):
    """``cfg.name`` names no registered dataset; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


# Each entry's info: needs_root (default True), whether data.root is required.
DATASETS: Registry[Builder] = Registry("dataset", error=UnknownDatasetError)


@DATASETS.register("shapes", needs_root=False)  # embedded: built without a folder
def _shapes(cfg: Any, split: str) -> SegmentationDataset:
    num_images = cfg.num_train if split == cfg.train_split else cfg.num_val
    if split == "test" and cfg.num_test:
        num_images = cfg.num_test
    return ShapesDataset(split=split, num_images=num_images, resolution=cfg.resolution, seed=cfg.seed,
                         difficulty=cfg.difficulty)


@DATASETS.register("voc")
def _voc(cfg: Any, split: str) -> SegmentationDataset:
    return read_voc(cfg.root, split, trainaug=cfg.voc_trainaug)


@DATASETS.register("ade20k")
def _ade20k(cfg: Any, split: str) -> SegmentationDataset:
    return read_ade20k(cfg.root, split)


@DATASETS.register("coco-stuff")
def _coco_stuff(cfg: Any, split: str) -> SegmentationDataset:
    return read_coco(cfg.root, split, variant="stuff")


@DATASETS.register("coco-things")
def _coco_things(cfg: Any, split: str) -> SegmentationDataset:
    return read_coco(cfg.root, split, variant="things")


@DATASETS.register("cityscapes")
def _cityscapes(cfg: Any, split: str) -> SegmentationDataset:
    return read_cityscapes(cfg.root, split)


@DATASETS.register("camvid")
def _camvid(cfg: Any, split: str) -> SegmentationDataset:
    return read_camvid(cfg.root, split)


@DATASETS.register("folder")
def _folder(cfg: Any, split: str) -> SegmentationDataset:
    return read_folder(cfg.root, split)  # classes from <root>/classes.json|yaml (layout.read_classes)


def dataset_names() -> tuple[str, ...]:
    """The names ``data.name`` accepts: every registered dataset, built-in ones first."""
    return DATASETS.names()


def needs_root(name: str) -> bool:
    return DATASETS.info(name).get("needs_root", True)


def build_dataset(cfg: Any, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """The ``split`` of the dataset ``cfg.name`` with ``transform`` attached.

    Raises ``UnknownDatasetError`` (a ``KeyError`` and a ``DatasetError``) listing the valid names for
    an unknown ``cfg.name``, ``ConfigError`` for a split that is not a plain name (``..``, ``a/b``) and
    ``DatasetError`` for a missing or malformed dataset folder.
    """
    builder = DATASETS.get(cfg.name)
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
