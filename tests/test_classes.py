"""ClassInfo.background: one fact of a dataset, validated, serialised, and set for every built-in dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jodiffusion.data import layout
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.metadata import (
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    COCO_STUFF_CLASSES,
    COCO_THINGS_CLASSES,
    METADATA,
    VOC_CLASSES,
)
from jodiffusion.data.readers.camvid import read_camvid
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.data.shapes_scene import SHAPES_CLASSES
from jodiffusion.errors import DatasetError

REAL_CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


# --------------------------------------------------------------------------------------------------
# the field


def test_background_defaults_to_none_and_is_a_class_id():
    plain = ClassInfo(names=("background", "cat"))
    assert plain.background is None  # stated, never guessed from the names
    assert not plain.is_background(0) and plain.foreground_ids == (0, 1)
    street = ClassInfo(names=("road", "car", "clutter"), background=2)
    assert street.background == 2 and street.is_background(2) and not street.is_background(0)
    assert street.foreground_ids == (0, 1)
    assert ClassInfo(names=("a", "b"), background=np.int64(1)).background == 1
    assert type(ClassInfo(names=("a", "b"), background=np.int64(1)).background) is int


@pytest.mark.parametrize("bad", [2, -1, 255, True, 0.0, "0"])
def test_background_must_be_a_class_id_of_the_label_space(bad):
    with pytest.raises(ValueError, match="background"):
        ClassInfo(names=("a", "b"), background=bad)


def test_background_is_never_the_ignore_index():
    with pytest.raises(ValueError, match="ignore index"):
        ClassInfo(names=("a", "b"), ignore_index=255, background=255)


@pytest.mark.parametrize("background", [None, 0, 2])
def test_to_dict_from_dict_round_trip_keeps_the_background(background):
    classes = ClassInfo(names=("sky", "road", "car"), ignore_index=200, background=background)
    data = classes.to_dict()
    assert "background" in data and data["background"] == background
    back = ClassInfo.from_dict(json.loads(json.dumps(data)))
    assert back == classes and back.background == background


def test_from_dict_of_older_or_hand_written_dicts():
    # written before the field existed: the class named "background" (any case), else none
    assert ClassInfo.from_dict({"names": ["background", "cat"]}).background == 0
    assert ClassInfo.from_dict({"names": ["cat", "Background"]}).background == 1
    assert ClassInfo.from_dict({"names": ["Sky", "Road", "Car"]}).background is None
    assert ClassInfo.from_dict({"names": ["other", "void", "cat"]}).background is None
    # an explicit value always wins, null included
    assert ClassInfo.from_dict({"names": ["background", "cat"], "background": None}).background is None
    assert ClassInfo.from_dict({"names": ["background", "cat"], "background": 1}).background == 1
    # a class name is accepted too
    assert ClassInfo.from_dict({"names": ["road", "clutter"], "background": "clutter"}).background == 1
    with pytest.raises(ValueError, match="background"):
        ClassInfo.from_dict({"names": ["road", "car"], "background": "sky"})


# --------------------------------------------------------------------------------------------------
# built-in datasets


def test_builtin_datasets_state_their_background():
    assert SHAPES_CLASSES.background == 0 and SHAPES_CLASSES.names[0] == "background"
    assert VOC_CLASSES.background == 0 and VOC_CLASSES.names[0] == "background"
    assert COCO_THINGS_CLASSES.background == 0 and COCO_THINGS_CLASSES.names[0] == "background"
    for classes in (ADE20K_CLASSES, COCO_STUFF_CLASSES, CITYSCAPES_CLASSES, CAMVID_CLASSES):
        assert classes.background is None
    assert {name: meta.classes.background for name, meta in METADATA.items()} == {
        "voc": 0, "ade20k": None, "coco-stuff": None, "coco-things": 0, "cityscapes": None, "camvid": None}


def test_camvid_has_no_background_its_id_0_is_sky():
    assert CAMVID_CLASSES.names[0] == "Sky"
    assert CAMVID_CLASSES.background is None
    assert not CAMVID_CLASSES.is_background(0)
    assert CAMVID_CLASSES.foreground_ids == tuple(range(11))
    assert METADATA["camvid"].classes is CAMVID_CLASSES


@pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason="real CamVid copy not present")
def test_real_camvid_reads_without_background():
    ds = read_camvid(REAL_CAMVID, "val")
    assert ds.classes.background is None and ds.classes.names[0] == "Sky"


# --------------------------------------------------------------------------------------------------
# classes.json of folder datasets


def _folder(root: Path) -> None:
    layout.write_pair(root, "train", "s", np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8),
                      ClassInfo(names=("a", "b", "c")))


@pytest.mark.parametrize("background", [None, 0, 2])
def test_write_classes_then_folder_reader_keeps_the_background(tmp_path, background):
    classes = ClassInfo(names=("sky", "road", "clutter"), background=background)
    layout.write_classes(tmp_path, classes)
    on_disk = json.loads((tmp_path / layout.CLASSES_FILE).read_text())
    assert on_disk["background"] == background  # written even when there is none (null)
    _folder(tmp_path)
    assert read_folder(tmp_path, "train").classes == classes


def test_folder_reader_reads_old_and_yaml_class_files(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "classes.json").write_text(json.dumps({"names": ["background", "cat"], "ignore_index": 255}))
    _folder(old)
    assert read_folder(old, "train").classes.background == 0
    yml = tmp_path / "yml"
    yml.mkdir()
    (yml / "classes.yaml").write_text("names: [Sky, Road, Car]\nbackground: Road\n")
    _folder(yml)
    assert read_folder(yml, "train").classes.background == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "classes.json").write_text(json.dumps({"names": ["a", "b"], "background": 5}))
    with pytest.raises(DatasetError, match="background"):
        layout.read_classes(bad)


@pytest.mark.parametrize("names, match", [
    ([0, 1, 2], r"class names must be strings, got 0 \(int\), 1 \(int\), 2 \(int\)"),
    (["road", 7], r"got 7 \(int\)"), (["road", True], r"got True \(bool\)"), (["road", None], "None"),
    (["road", ["car"]], "must be strings"), (["road", " "], "class name 1 is empty"),
    ("road", "must be a list of class names"),
])
def test_class_names_must_be_strings(tmp_path, names, match):
    with pytest.raises(ValueError, match=match):
        ClassInfo.from_dict({"names": names})
    (tmp_path / "classes.json").write_text(json.dumps({"names": names}))
    _folder(tmp_path)
    with pytest.raises(DatasetError, match=match):
        read_folder(tmp_path, "train")


def test_integer_class_names_in_a_yaml_file_are_refused_by_validate_and_train(tmp_path, capsys):
    from jodiffusion.cli.main import main

    (tmp_path / "classes.yaml").write_text("names: [0, 1, 2]\n")  # unquoted: YAML reads integers
    _folder(tmp_path)
    assert main(["validate", "--dataset", "folder", "--root", str(tmp_path), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert "classes.yaml" in out and "class names must be strings" in out and "Traceback" not in out
    run = tmp_path / "run"
    assert main(["train-vae", "--preset", "tiny", f"output_dir={run}", "data.name=folder", f"data.root={tmp_path}",
                 "data.train_split=train", "data.val_split=train"]) == 1
    assert "class names must be strings" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()


def test_ids_and_sizes_out_of_range_are_refused():
    """``"ignore_index": 300`` was accepted. Masks are 8-bit: the ignore index is a pixel value
    0..255 that is no class id, colours are 0..255, at most 255 classes leave room for the ignore value."""
    from jodiffusion.models.annotation_vae import AnnotationVAEConfig

    for bad, message in ((300, "ignore_index 300 is outside 0..255"), (-1, "ignore_index -1 is outside"),
                         (1.5, "must be an integer"), (True, "must be an integer"), (1, "collides with class id 1")):
        with pytest.raises(ValueError, match=message):
            ClassInfo.from_dict({"names": ["a", "b"], "ignore_index": bad})
    assert ClassInfo.from_dict({"names": ["a", "b"], "ignore_index": 2}).ignore_index == 2
    with pytest.raises(ValueError, match=r"palette colour 1 \('b'\) is \[0, 0, 256\]"):
        ClassInfo(names=("a", "b"), palette=((0, 0, 0), (0, 0, 256)))
    with pytest.raises(ValueError, match="at most 255 classes"):
        ClassInfo(names=tuple(f"c{i}" for i in range(256)))
    with pytest.raises(ValueError, match="model.ignore_index=300"):
        AnnotationVAEConfig(num_classes=3, ignore_index=300)
    with pytest.raises(ValueError, match="model.ignore_index=1"):
        AnnotationVAEConfig(num_classes=3, ignore_index=1)
    with pytest.raises(ValueError, match="2..255"):
        AnnotationVAEConfig(num_classes=256)
