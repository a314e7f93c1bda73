"""`validate` names a missing partner's look-alike (same stem, other format or folder) and `jodiffusion import`."""

import json

import numpy as np
from PIL import Image

from jodiffusion.cli.main import main
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.data.validate import validate_dataset


def save(arr, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def picture(seed):
    return np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)


def figure(seed):
    m = np.zeros((12, 16), np.uint8)
    m[2 + seed % 3:8, 3:10] = 255
    return m


def _root(tmp_path):
    root = tmp_path / "downloaded"
    root.mkdir()
    (root / "classes.json").write_text(json.dumps({"names": ["background", "pet"]}))
    return root


def _messages(root, split="train"):
    report = validate_dataset(read_folder(root, split), progress=False)
    return {p.path.rsplit("/", 1)[-1]: (p.kind, p.message) for p in report.problems}


def test_jpeg_masks_are_named_with_the_import_command(tmp_path, capsys):
    root = _root(tmp_path)
    for i in range(3):
        save(picture(i), root / "images" / "train" / f"p{i}.jpg")
        save(figure(i), root / "masks" / "train" / f"p{i}.jpg")  # JPEG masks: the folder reader takes PNG
    messages = _messages(root)
    kind, message = messages["p0.jpg"]
    assert kind == "missing-mask"
    assert message.startswith("no mask for sample 'p0'; a file with this stem exists: masks/train/p0.jpg (JPEG) in ")
    assert "not read as its mask here" in message and f"`jodiffusion import {root} --out NEW_FOLDER`" in message
    # the CLI prints it, and the command it names does the job
    assert main(["validate", "--dataset", "folder", "--root", str(root), "--split", "train"]) == 1
    assert "masks/train/p1.jpg (JPEG)" in capsys.readouterr().out
    out = tmp_path / "imported"
    assert main(["import", str(root), "--out", str(out), "--no-progress", "--classes",
                 str(root / "classes.json")]) == 0
    assert main(["validate", "--dataset", "folder", "--root", str(out), "--split", "train", "--split", "val"]) == 0


def test_partners_in_another_folder_and_images_in_another_format(tmp_path):
    root = _root(tmp_path)
    save(picture(0), root / "images" / "train" / "a.png")
    save(figure(0), root / "masks" / "train" / "a.png")
    save(picture(1), root / "images" / "train" / "b.png")
    save(figure(1), root / "annotations" / "b.png")       # another folder
    save(figure(2), root / "masks" / "train" / "c.png")
    save(picture(2), root / "images" / "train" / "c.bmp")  # another format
    save(picture(3), root / "images" / "train" / "d.png")  # nothing anywhere
    messages = _messages(root)
    assert set(messages) == {"b.png", "c.png", "d.png"}
    kind, message = messages["b.png"]
    assert kind == "missing-mask" and "exists: annotations/b.png (PNG) in" in message
    kind, message = messages["c.png"]
    assert kind == "missing-image" and "exists: images/train/c.bmp (BMP)" in message
    assert "not read as its image here (images are PNG or JPEG" in message and "jodiffusion import" in message
    assert messages["d.png"] == ("missing-mask", "no mask for sample 'd'")
