"""validate_dataset / ensure_valid / `jodiffusion validate`: every problem reported at once, by file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jodiffusion.cli.main import main
from jodiffusion.data import layout
from jodiffusion.data.base import SegmentationDataset
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.readers.camvid import read_camvid
from jodiffusion.data.readers.coco import read_coco
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.data.validate import Problem, ValidationReport, ensure_valid, validate_dataset
from jodiffusion.errors import DatasetError

REAL_CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
CLASSES = ClassInfo(names=("background", "cat", "dog"))
H, W = 16, 20


def noise_image(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def good_mask(h: int = H, w: int = W) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[: h // 2] = 1
    mask[-2:] = 255
    mask[:, :3] = 2
    return mask


def clean_folder(root: Path, n: int = 3) -> Path:
    layout.write_classes(root, CLASSES)
    for i in range(n):
        layout.write_pair(root, "train", f"ok{i}", noise_image(i), good_mask(), CLASSES)
    return root


def broken_folder(root: Path) -> Path:
    clean_folder(root, n=2)
    images, masks = root / "images" / "train", root / "masks" / "train"
    # 1. truncated PNG image
    layout.write_pair(root, "train", "truncated", noise_image(7), good_mask(), CLASSES)
    data = (images / "truncated.png").read_bytes()
    (images / "truncated.png").write_bytes(data[: len(data) // 2])
    # 2. random bytes named .jpg
    (images / "garbage.jpg").write_bytes(np.random.default_rng(1).bytes(500))
    layout.save_mask_png(good_mask(), masks / "garbage.png", CLASSES)
    # 3. image without a mask
    layout.save_image_png(noise_image(3), images / "lonely.png")
    # 4. size mismatch
    layout.write_pair(root, "train", "mismatch", noise_image(4), good_mask(), CLASSES)
    layout.save_mask_png(good_mask(H + 4, W), masks / "mismatch.png", CLASSES)
    # 5. label values outside 0..2 and 255
    bad = good_mask()
    bad[0, :5] = 7
    bad[1, :2] = 200
    layout.write_pair(root, "train", "badlabel", noise_image(5), bad, CLASSES)
    return root


def test_every_problem_in_one_report(tmp_path):
    ds = read_folder(broken_folder(tmp_path), "train")
    report = validate_dataset(ds, progress=False)
    assert isinstance(report, ValidationReport) and not report.ok
    assert report.num_samples == 7
    kinds = {p.path.rsplit("/", 1)[-1]: p.kind for p in report.problems}
    assert kinds == {
        "truncated.png": "unreadable-image",
        "garbage.jpg": "unreadable-image",
        "lonely.png": "missing-mask",
        "mismatch.png": "size-mismatch",
        "badlabel.png": "bad-labels",
    }
    assert all(isinstance(p, Problem) for p in report.problems)
    bad = next(p for p in report.problems if p.kind == "bad-labels")
    assert "7 (5 px)" in bad.message and "200 (2 px)" in bad.message
    assert f"{W}x{H + 4}" in next(p.message for p in report.problems if p.kind == "size-mismatch")

    text = report.format()
    for name in ("truncated.png", "garbage.jpg", "lonely.png", "mismatch.png", "badlabel.png"):
        assert name in text
    assert "image without a mask: 1" in text and "unreadable or corrupt image: 2" in text
    assert "7 (5 px in 1 file)" in text

    d = report.to_dict()
    assert d["ok"] is False and d["num_problems"] == 5 and d["counts_by_kind"]["unreadable-image"] == 2
    assert d["bad_label_values"] == {"7": {"pixels": 5, "files": 1}, "200": {"pixels": 2, "files": 1}}
    json.dumps(d)

    with pytest.raises(DatasetError) as info:
        ensure_valid(ds, progress=False)
    message = str(info.value)
    assert "truncated.png" in message and "badlabel.png" in message and "jodiffusion validate" in message


def test_serial_and_threaded_agree(tmp_path):
    ds = read_folder(broken_folder(tmp_path), "train")
    serial = validate_dataset(ds, progress=False, workers=1)
    threaded = validate_dataset(ds, progress=False, workers=4)
    assert serial.problems == threaded.problems and serial.class_pixels == threaded.class_pixels


def test_mask_problems(tmp_path):
    clean_folder(tmp_path, n=1)
    images, masks = tmp_path / "images" / "train", tmp_path / "masks" / "train"
    layout.save_image_png(noise_image(1), images / "rgbmask.png")
    Image.fromarray(noise_image(2)).save(masks / "rgbmask.png")
    layout.save_image_png(noise_image(1), images / "cutmask.png")
    layout.save_mask_png(np.random.default_rng(0).integers(0, 3, (H, W)), masks / "cutmask.png", CLASSES)
    data = (masks / "cutmask.png").read_bytes()
    (masks / "cutmask.png").write_bytes(data[: len(data) - 30])
    layout.save_mask_png(good_mask(), masks / "orphan.png", CLASSES)
    report = validate_dataset(read_folder(tmp_path, "train"), progress=False)
    kinds = {p.path.rsplit("/", 1)[-1]: p.kind for p in report.problems}
    assert kinds == {"rgbmask.png": "mask-not-single-channel", "cutmask.png": "unreadable-mask",
                     "orphan.png": "missing-image"}


def test_clean_dataset_passes(tmp_path):
    ds = read_folder(clean_folder(tmp_path), "train")
    report = ensure_valid(ds, progress=False)
    assert report.ok and report.problems == [] and report.num_samples == 3
    assert "OK" in report.format()
    expected = np.bincount(good_mask().ravel(), minlength=256)
    assert report.class_pixels == [3 * int(expected[i]) for i in range(3)]
    assert report.ignore_pixels == 3 * int(expected[255])


def test_a_16_bit_grayscale_image_is_read_scaled_and_noted(tmp_path, capsys):
    from jodiffusion.data.base import read_image

    clean_folder(tmp_path, n=1)
    grey = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)  # dark to bright, not all white
    path = tmp_path / "images" / "train" / "scan16.png"
    Image.fromarray(grey).save(path)
    layout.save_mask_png(good_mask(), tmp_path / "masks" / "train" / "scan16.png", CLASSES)
    assert Image.open(path).mode == "I;16"
    image = read_image(path)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], np.round(grey / 257.0).astype(np.uint8))
    assert image.min() == 0 and image.max() == 255 and 100 < image.mean() < 155
    report = ensure_valid(read_folder(tmp_path, "train"), progress=False)  # readable: no reason to stop
    assert [(Path(n.path).name, n.kind) for n in report.notes] == [("scan16.png", "image-16-bit")]
    assert "16-bit grayscale" in report.format() and report.to_dict()["notes"][0]["kind"] == "image-16-bit"
    assert main(["validate", "--dataset", "folder", "--root", str(tmp_path), "--split", "train"]) == 0
    assert "scan16.png: 16-bit grayscale image" in capsys.readouterr().out


def test_a_float_or_32_bit_image_is_refused_clearly(tmp_path):
    from jodiffusion.data.base import read_image

    clean_folder(tmp_path, n=1)
    path = tmp_path / "images" / "train" / "depth.png"  # float TIFF data under a .png name
    Image.fromarray(np.full((H, W), 0.5, np.float32)).save(path, format="TIFF")
    layout.save_mask_png(good_mask(), tmp_path / "masks" / "train" / "depth.png", CLASSES)
    with pytest.raises(DatasetError, match="depth.png has 32-bit float pixels.*8-bit RGB"):
        read_image(path)
    report = validate_dataset(read_folder(tmp_path, "train"), progress=False)
    assert [(Path(p.path).name, p.kind) for p in report.problems] == [("depth.png", "unreadable-image")]


def test_raw_values_reported_for_lookup_tables(tmp_path):
    (tmp_path / "images" / "val2017").mkdir(parents=True)
    Image.fromarray(noise_image()).save(tmp_path / "images" / "val2017" / "000000000001.jpg")
    mask = np.zeros((H, W), np.uint8)
    mask[0, :3] = 11  # COCO id 12 (unused), stored as id - 1
    mask[1, :2] = 200  # beyond every COCO id
    (tmp_path / "annotations" / "val2017").mkdir(parents=True)
    Image.fromarray(mask, mode="L").save(tmp_path / "annotations" / "val2017" / "000000000001.png")
    report = validate_dataset(read_coco(tmp_path, "val", variant="stuff"), progress=False)
    (problem,) = report.problems
    assert problem.kind == "bad-labels" and "raw file values" in problem.message
    assert "11 (3 px)" in problem.message and "200 (2 px)" in problem.message
    assert report.class_pixels[0] == H * W - 5


class InMemory(SegmentationDataset):
    classes = CLASSES

    def __init__(self, items):
        self.items = items  # list of (stem, image or exception, mask or exception)

    def __len__(self):
        return len(self.items)

    def stem(self, index):
        return self.items[index][0]

    def _get(self, value):
        if isinstance(value, Exception):
            raise value
        return value

    def load_image(self, index):
        return self._get(self.items[index][1])

    def load_mask(self, index):
        return self._get(self.items[index][2])


def test_in_memory_dataset():
    bad = good_mask()
    bad[0, 0] = 3
    ds = InMemory([
        ("fine", noise_image(), good_mask()),
        ("broken", DatasetError("cannot read image x.png"), good_mask()),
        ("labels", noise_image(), bad),
        ("shape", noise_image(), np.zeros((H, W, 3), np.uint8)),
        ("size", noise_image(), good_mask(H, W + 1)),
        ("gray", np.zeros((H, W), np.uint8), good_mask()),
    ])
    report = validate_dataset(ds, progress=False)
    kinds = {(p.path, p.kind) for p in report.problems}
    assert kinds == {("broken", "unreadable-image"), ("labels", "bad-labels"),
                     ("shape", "mask-not-single-channel"), ("size", "size-mismatch"), ("gray", "bad-image")}
    assert "3 (1 px)" in next(p.message for p in report.problems if p.kind == "bad-labels")
    assert validate_dataset(InMemory([("a", noise_image(), good_mask())]), progress=False).ok
    empty = validate_dataset(InMemory([]), progress=False)
    assert not empty.ok and empty.problems[0].kind == "empty"


def test_cli_exit_codes_and_json(tmp_path, capsys):
    good = clean_folder(tmp_path / "good")
    assert main(["validate", "--dataset", "folder", "--root", str(good), "--split", "train",
                 "--no-progress"]) == 0
    assert "OK" in capsys.readouterr().out

    bad = broken_folder(tmp_path / "bad")
    out_json = tmp_path / "report.json"
    code = main(["validate", "--dataset", "folder", "--root", str(bad), "--split", "train",
                 "--json", str(out_json), "--no-progress"])
    assert code == 1
    printed = capsys.readouterr().out
    for name in ("truncated.png", "garbage.jpg", "lonely.png", "mismatch.png", "badlabel.png"):
        assert name in printed
    data = json.loads(out_json.read_text())
    assert data["ok"] is False and data["splits"]["train"]["num_problems"] == 5

    # default splits: train and val; the missing val folder is reported, the exit code is 1
    assert main(["validate", "--dataset", "folder", "--root", str(good), "--no-progress"]) == 1
    assert "images/val" in capsys.readouterr().out

    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  name: folder\n  root: {good}\n  val_split: train\ntrain:\n  steps: 3\n")
    assert main(["validate", "--config", str(config), "--no-progress"]) == 0
    assert main(["validate", "--dataset", "camvid", "--root", str(tmp_path / "nowhere")]) == 1
    assert main(["validate", "--no-progress"]) == 1  # no dataset named


@pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason="real CamVid copy not present")
def test_real_camvid_val_is_valid():
    report = ensure_valid(read_camvid(REAL_CAMVID, "val"), progress=False)
    assert report.num_samples == 101 and report.ignore_pixels > 0
    assert all(n > 0 for n in report.class_pixels)
