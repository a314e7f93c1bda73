"""Readers on tiny datasets written in each dataset's real folder layout, plus the real CamVid copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jodiffusion.data import layout
from jodiffusion.data.base import FileSegmentationDataset
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.config import DataConfig
from jodiffusion.data.metadata import (
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    COCO_STUFF_CLASSES,
    COCO_THINGS_CLASSES,
    METADATA,
    UNMAPPED,
    VOC_CLASSES,
    build_lut,
    valid_raw_values,
)
from jodiffusion.data.readers.ade20k import read_ade20k
from jodiffusion.data.readers.camvid import read_camvid
from jodiffusion.data.readers.cityscapes import read_cityscapes
from jodiffusion.data.readers.coco import read_coco
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.data.readers.voc import read_voc
from jodiffusion.data.registry import DATASETS, UnknownDatasetError, build_dataset
from jodiffusion.errors import DatasetError

REAL_CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
H, W = 6, 8


def write_image(path: Path, seed: int = 0, size=(W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return path


def write_mask(path: Path, values, palette: bool = False, size=(W, H)) -> Path:
    """A mask whose pixels cycle through ``values`` (every value occurs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = np.resize(np.asarray(values, dtype=np.uint8), size[0] * size[1])
    im = Image.frombytes("P" if palette else "L", size, flat.tobytes())
    if palette:
        im.putpalette([c for col in VOC_CLASSES.palette for c in col] + [224, 224, 192] * (256 - 21))
    im.save(path, format="PNG")
    return path


def mask_values(ds, i: int) -> set[int]:
    return set(np.unique(ds.load_mask(i)).tolist())


def by_stem(ds: FileSegmentationDataset) -> dict:
    return {s.stem: s for s in ds.samples}


# --------------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------------

def test_metadata_sizes_and_tables():
    assert VOC_CLASSES.num_classes == 21 and VOC_CLASSES.palette[1] == (128, 0, 0)
    assert VOC_CLASSES.palette[15] == (192, 128, 128)  # person
    assert ADE20K_CLASSES.num_classes == 150 and ADE20K_CLASSES.names[0] == "wall"
    assert COCO_STUFF_CLASSES.num_classes == 171 and COCO_THINGS_CLASSES.num_classes == 81
    assert CITYSCAPES_CLASSES.num_classes == 19 and CAMVID_CLASSES.num_classes == 11
    for meta in METADATA.values():
        assert meta.lut.shape == (256,) and meta.lut.dtype == np.uint8
        assert not meta.lut.flags.writeable
        assert meta.lut[255] == 255
        assert meta.classes.ignore_index == 255
    coco = METADATA["coco-stuff"].lut
    valid = valid_raw_values(coco, COCO_STUFF_CLASSES)
    assert valid.sum() == 171 + 1  # 171 used ids + 255
    unused = [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]
    assert not valid[unused].any()
    assert sorted(set(coco[valid].tolist()) - {255}) == list(range(171))


def test_build_lut_rules():
    lut = build_lut({0: 255, 1: 0, 2: 1}, 2)
    assert lut[0] == 255 and lut[1] == 0 and lut[2] == 1
    assert lut[3] == 3  # outside the label space: left as it is
    with pytest.raises(ValueError):
        build_lut({1: 5}, 2)
    lut = build_lut({5: 0}, 3)
    assert lut[1] == UNMAPPED  # would pass for a class id: moved out of the label space


# --------------------------------------------------------------------------------------------------
# VOC
# --------------------------------------------------------------------------------------------------

def make_voc(root: Path, aug: bool = False) -> Path:
    for i, stem in enumerate(["2007_000032", "2007_000039", "2007_000063", "2008_000001"]):
        write_image(root / "JPEGImages" / f"{stem}.jpg", seed=i)
    write_mask(root / "SegmentationClass" / "2007_000032.png", [0, 1, 255], palette=True)
    write_mask(root / "SegmentationClass" / "2007_000039.png", [0, 20], palette=True)
    write_mask(root / "SegmentationClass" / "2007_000063.png", [15], palette=True)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000032\n2007_000039\n")
    (sets / "val.txt").write_text("2007_000063\n2009_999999\n")  # the second has no files at all
    (sets / "trainval.txt").write_text("2007_000032\n2007_000039\n2007_000063\n")
    if aug:
        for stem in ["2007_000032", "2007_000039", "2008_000001"]:
            write_mask(root / "SegmentationClassAug" / f"{stem}.png", [0, 7, 255])
        (sets / "train_aug.txt").write_text(
            "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
            "2007_000039\n2008_000001\n")
    return root


def test_voc_splits_palette_masks_and_missing_files(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    train = read_voc(root, "train", trainaug=True)  # no SBD files: falls back to train.txt
    assert len(train) == 2 and train.classes is VOC_CLASSES
    assert mask_values(train, 0) == {0, 1, 255}  # palette indices, 255 boundary kept as ignore
    item = train[1]
    assert item["image"].shape == (H, W, 3) and item["mask"].shape == (H, W) and item["stem"] == "2007_000039"
    val = read_voc(root, "val")
    samples = by_stem(val)
    assert samples["2007_000063"].mask_path.name == "2007_000063.png"
    assert samples["2009_999999"].image_path is None and samples["2009_999999"].mask_path is None
    assert len(read_voc(root, "trainval")) == 3
    # root may also be the folder above VOC2012 or VOCdevkit/VOC2012
    assert len(read_voc(tmp_path, "train")) == 2


def test_voc_trainaug_selection(tmp_path):
    root = make_voc(tmp_path / "VOCdevkit" / "VOC2012", aug=True)
    aug = read_voc(tmp_path, "train", trainaug=True)
    assert [s.stem for s in aug.samples] == ["2007_000032", "2007_000039", "2008_000001"]
    assert all(s.mask_path.parent.name == "SegmentationClassAug" for s in aug.samples)
    assert mask_values(aug, 2) == {0, 7, 255}
    plain = read_voc(root, "train", trainaug=False)
    assert len(plain) == 2 and plain.samples[0].mask_path.parent.name == "SegmentationClass"
    assert len(read_voc(root, "val", trainaug=True)) == 2  # trainaug only concerns train
    cfg = DataConfig(name="voc", root=str(root), voc_trainaug=False)
    assert len(build_dataset(cfg, "train")) == 2


def test_voc_errors_name_path_and_layout(tmp_path):
    with pytest.raises(DatasetError, match="JPEGImages"):
        read_voc(tmp_path / "nowhere", "train")
    root = make_voc(tmp_path / "voc")
    with pytest.raises(DatasetError, match=r"test\.txt.*train, trainval, val"):
        read_voc(root, "test")


# --------------------------------------------------------------------------------------------------
# ADE20K
# --------------------------------------------------------------------------------------------------

def test_ade20k_reduce_zero_label_and_unmatched(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    write_image(root / "images" / "training" / "ADE_train_00000001.jpg")
    write_image(root / "images" / "training" / "ADE_train_00000002.jpg")  # no annotation
    write_mask(root / "annotations" / "training" / "ADE_train_00000001.png", [0, 1, 2, 150])
    write_mask(root / "annotations" / "training" / "ADE_train_00000003.png", [5])  # no image
    write_image(root / "images" / "validation" / "ADE_val_00000001.jpg")
    write_mask(root / "annotations" / "validation" / "ADE_val_00000001.png", [3])

    ds = read_ade20k(root, "train")
    samples = by_stem(ds)
    assert len(ds) == 3
    assert samples["ADE_train_00000002"].mask_path is None
    assert samples["ADE_train_00000003"].image_path is None
    assert mask_values(ds, 0) == {255, 0, 1, 149}
    val = read_ade20k(root, "val")
    assert len(val) == 1 and mask_values(val, 0) == {2}
    assert len(read_ade20k(root, "validation")) == 1
    with pytest.raises(DatasetError, match="images/test"):
        read_ade20k(root, "test")


# --------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------

def test_coco_stuff_sparse_ids_to_contiguous(tmp_path):
    write_image(tmp_path / "images" / "val2017" / "000000000139.jpg")
    write_image(tmp_path / "images" / "val2017" / "000000000285.jpg")
    # stuffthingmaps store category id - 1: person (id 1) = 0, toothbrush (90) = 89, banner (92) = 91,
    # wood (182) = 181; 11 is the unused id 12
    write_mask(tmp_path / "annotations" / "val2017" / "000000000139.png", [0, 89, 91, 181, 255])
    write_mask(tmp_path / "annotations" / "val2017" / "000000000285.png", [11, 0])
    ds = read_coco(tmp_path, "val", variant="stuff")
    assert ds.classes is COCO_STUFF_CLASSES and len(ds) == 2
    assert mask_values(ds, 0) == {0, 79, 80, 170, 255}
    assert COCO_STUFF_CLASSES.names[79] == "toothbrush" and COCO_STUFF_CLASSES.names[80] == "banner"
    assert COCO_STUFF_CLASSES.names[170] == "wood"
    assert UNMAPPED in mask_values(ds, 1)  # the unused id does not pass for a class
    with pytest.raises(DatasetError, match="train2017"):
        read_coco(tmp_path, "train", variant="stuff")


def test_coco_things_raw_ids_and_suffixes(tmp_path):
    write_image(tmp_path / "images" / "train2017" / "000000000009.jpg")
    write_image(tmp_path / "images" / "train2017" / "000000000025.jpg")
    write_mask(tmp_path / "annotations" / "train2017" / "000000000009_instances.png", [0, 1, 13, 90, 255])
    write_mask(tmp_path / "annotations" / "train2017" / "000000000025.png", [0, 44])
    ds = read_coco(tmp_path, "train", variant="things")
    assert ds.classes is COCO_THINGS_CLASSES and [s.stem for s in ds.samples] == ["000000000009",
                                                                                 "000000000025"]
    assert mask_values(ds, 0) == {0, 1, 12, 80, 255}  # 13 stop sign is the 12th used id
    assert COCO_THINGS_CLASSES.names[12] == "stop sign" and COCO_THINGS_CLASSES.names[80] == "toothbrush"
    assert mask_values(ds, 1) == {0, 40}
    assert COCO_THINGS_CLASSES.names[40] == "bottle"


def test_coco_label_train_ids_preferred(tmp_path):
    write_image(tmp_path / "images" / "train2017" / "000000000009.jpg")
    write_mask(tmp_path / "annotations" / "train2017" / "000000000009.png", [181])
    write_mask(tmp_path / "annotations" / "train2017" / "000000000009_labelTrainIds.png", [0, 170, 255])
    ds = read_coco(tmp_path, "train", variant="stuff")
    assert len(ds) == 1 and ds.samples[0].mask_path.name == "000000000009_labelTrainIds.png"
    assert mask_values(ds, 0) == {0, 170, 255}  # already train ids: not mapped again


# --------------------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------------------

def test_cityscapes_pairs_by_prefix(tmp_path):
    img = tmp_path / "leftImg8bit" / "train"
    gt = tmp_path / "gtFine" / "train"
    write_image(img / "aachen" / "aachen_000000_000019_leftImg8bit.png")
    write_image(img / "bremen" / "bremen_000001_000019_leftImg8bit.png")  # no annotation
    write_mask(gt / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png", [0, 18, 255])
    write_mask(gt / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", [7, 33])  # ignored
    write_image(gt / "aachen" / "aachen_000000_000019_gtFine_color.png")  # ignored
    ds = read_cityscapes(tmp_path, "train")
    samples = by_stem(ds)
    assert sorted(samples) == ["aachen_000000_000019", "bremen_000001_000019"]
    assert samples["bremen_000001_000019"].mask_path is None
    assert samples["aachen_000000_000019"].mask_path.name.endswith("_gtFine_labelTrainIds.png")
    assert mask_values(ds, 0) == {0, 18, 255}
    with pytest.raises(DatasetError, match="leftImg8bit/val"):
        read_cityscapes(tmp_path, "val")


def test_cityscapes_label_ids_fallback(tmp_path):
    write_image(tmp_path / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png")
    write_mask(tmp_path / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png",
               [0, 7, 26, 33])
    ds = read_cityscapes(tmp_path, "val")
    assert mask_values(ds, 0) == {255, 0, 13, 18}


# --------------------------------------------------------------------------------------------------
# CamVid
# --------------------------------------------------------------------------------------------------

def test_camvid_by_file_name_void_to_ignore(tmp_path):
    write_image(tmp_path / "train" / "0001TP_006690.png")
    write_image(tmp_path / "train" / "0001TP_006720.png")  # no annotation
    write_mask(tmp_path / "trainannot" / "0001TP_006690.png", [0, 10, 11])
    write_mask(tmp_path / "trainannot" / "Seq05VD_f00000.png", [3])  # no image
    (tmp_path / "train.txt").write_text(
        "/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/0001TP_006690.png\n")
    ds = read_camvid(tmp_path, "train")
    samples = by_stem(ds)
    assert len(ds) == 3 and ds.classes is CAMVID_CLASSES
    assert samples["0001TP_006690"].mask_path == tmp_path / "trainannot" / "0001TP_006690.png"
    assert samples["0001TP_006720"].mask_path is None and samples["Seq05VD_f00000"].image_path is None
    assert mask_values(ds, 0) == {0, 10, 255}
    with pytest.raises(DatasetError, match="valannot|val"):
        read_camvid(tmp_path, "val")


@pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason="real CamVid copy not present")
def test_real_camvid():
    train = read_camvid(REAL_CAMVID, "train")
    val = build_dataset(DataConfig(name="camvid", root=str(REAL_CAMVID)), "val")
    assert len(train) == 367 and len(val) == 101
    assert all(s.image_path is not None and s.mask_path is not None for s in train.samples + val.samples)
    allowed = set(range(11)) | {255}
    for ds in (train, val):
        for i in (0, len(ds) // 2, len(ds) - 1):
            item = ds[i]
            assert item["image"].shape == (360, 480, 3) and item["mask"].shape == (360, 480)
            assert set(np.unique(item["mask"]).tolist()) <= allowed


# --------------------------------------------------------------------------------------------------
# generic folder + registry
# --------------------------------------------------------------------------------------------------

CLASSES3 = ClassInfo(names=("background", "cat", "dog"))


def test_folder_split_subfolders(tmp_path):
    layout.write_classes(tmp_path, CLASSES3)
    layout.write_pair(tmp_path, "train", "a", np.zeros((H, W, 3), np.uint8), np.full((H, W), 2), CLASSES3)
    write_image(tmp_path / "images" / "train" / "b.jpg")  # no mask
    write_mask(tmp_path / "masks" / "train" / "c.png", [1])  # no image
    ds = read_folder(tmp_path, "train")
    samples = by_stem(ds)
    assert ds.classes == CLASSES3 and sorted(samples) == ["a", "b", "c"]
    assert samples["b"].mask_path is None and samples["c"].image_path is None
    assert mask_values(ds, 0) == {2}
    with pytest.raises(DatasetError, match="images/val"):
        read_folder(tmp_path, "val")


def test_folder_flat_with_split_lists_and_yaml_classes(tmp_path):
    (tmp_path / "classes.yaml").write_text("names: [background, cat, dog]\n")
    for stem in ("a", "b", "c"):
        write_image(tmp_path / "images" / f"{stem}.jpeg")
        write_mask(tmp_path / "masks" / f"{stem}.png", [0, 1])
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("a\nb\n")
    (tmp_path / "splits" / "val.txt").write_text("c\nmissing\n")
    train = read_folder(tmp_path, "train")
    assert [s.stem for s in train.samples] == ["a", "b"] and train.classes.names[2] == "dog"
    val = by_stem(read_folder(tmp_path, "val"))
    assert val["missing"].image_path is None and val["missing"].mask_path is None
    cfg = DataConfig(name="folder", root=str(tmp_path))
    assert len(build_dataset(cfg, "val")) == 2


def test_folder_needs_classes(tmp_path):
    write_image(tmp_path / "images" / "train" / "a.png")
    with pytest.raises(DatasetError, match="classes.json"):
        read_folder(tmp_path, "train")


def test_registry_dispatch_transform_and_unknown_name(tmp_path):
    write_image(tmp_path / "val" / "x.png")
    write_mask(tmp_path / "valannot" / "x.png", [1])

    def flip(image, mask):
        return image[:, ::-1], mask[:, ::-1]

    ds = build_dataset(DataConfig(name="camvid", root=str(tmp_path)), "val", transform=flip)
    assert ds.transform is flip and ds[0]["image"].shape == (H, W, 3)
    assert set(DATASETS) >= {"shapes", "voc", "ade20k", "coco-stuff", "coco-things", "cityscapes", "camvid",
                             "folder"}
    cfg = DataConfig(name="camvid", root=str(tmp_path))
    cfg.name = "imagenet"
    with pytest.raises(KeyError, match="camvid.*voc") as info:
        build_dataset(cfg, "train")
    assert isinstance(info.value, UnknownDatasetError) and isinstance(info.value, DatasetError)
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset(DataConfig(name="ade20k", root=str(tmp_path / "missing")), "train")


def test_registry_shapes():
    cfg = DataConfig(name="shapes", num_train=5, num_val=3, resolution=32)
    assert len(build_dataset(cfg, "train")) == 5
    val = build_dataset(cfg, "val")
    assert len(val) == 3 and val.transform is None


def test_classes_json_roundtrip_is_what_folder_reads(tmp_path):
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["a", "b"], "ignore_index": 255}))
    write_image(tmp_path / "images" / "train" / "s.png")
    write_mask(tmp_path / "masks" / "train" / "s.png", [0, 1, 255])
    ds = read_folder(tmp_path, "train")
    assert ds.classes.names == ("a", "b") and mask_values(ds, 0) == {0, 1, 255}
