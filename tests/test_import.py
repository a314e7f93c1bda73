"""`jodiffusion import`: folders as users download them, turned into the project's layout (built here with PIL)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jodiffusion.cli.main import main
from jodiffusion.data.importer.folder import import_folder
from jodiffusion.data.importer.options import IMPORT_FILE, ImportOptions
from jodiffusion.data.importer.value_map import parse_value_map
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.data.validate import validate_dataset
from jodiffusion.errors import ConfigError, DatasetError, JoDiffusionError
from jodiffusion.utils.ownership import OWNER_FILE

W, H = 24, 18  # image size of the builders (4:3)


def tree_hash(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes, and every folder: SRC must stay as it is."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def picture(seed: int, w: int = W, h: int = H) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def blob(seed: int, w: int = W, h: int = H, k: int = 2) -> np.ndarray:
    """Class ids 0..k-1 in large blocks (so lossy JPEG and resizing keep them recognisable)."""
    ids = np.zeros((h, w), np.uint8)
    rng = np.random.default_rng(seed)
    for c in range(1, k):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        ids[y:y + h // 2, x:x + w // 2] = c
    return ids


def save(arr: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def save_palette(ids: np.ndarray, path: Path) -> Path:
    """A palette PNG of class ids (VOC's format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids, mode="P")
    im.putpalette([v for c in range(256) for v in ((c * 67) % 256, (c * 131) % 256, (c * 29) % 256)])
    im.save(path)
    return path


def run(src, out, **kw):
    overwrite = kw.pop("overwrite", False)
    return import_folder(src, out, ImportOptions(**kw), overwrite=overwrite, progress=False)


def mask_of(out: Path, split: str, stem: str) -> np.ndarray:
    return np.asarray(Image.open(out / "masks" / split / f"{stem}.png"))


def all_masks(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((out / "masks").rglob("*.png"))}


def check_valid(out: Path) -> None:
    for split in json.loads((out / IMPORT_FILE).read_text())["splits"]:
        assert validate_dataset(read_folder(out, split), progress=False).ok


# --- the folder: JPEG images, JPEG figure-ground masks at another scale ------------------------

@pytest.fixture
def figure_ground(tmp_path):
    """Colour JPEG images at 48x36 and 0/255 JPEG masks at 24x18 in a sibling folder (the issue's case)."""
    src = tmp_path / "pets"
    truth = {}
    for i in range(10):
        ids = blob(i)
        truth[f"pet_{i:02d}"] = ids
        big = np.asarray(Image.fromarray(picture(i)).resize((2 * W, 2 * H)))
        save(big, src / "images" / f"pet_{i:02d}.jpg", quality=90)
        save((ids * 255).astype(np.uint8), src / "masks" / f"pet_{i:02d}.jpg", quality=75)
    (src / "README.txt").write_text("downloaded as is\n")
    (src / "masks" / "notes.txt").write_text("not an image\n")
    return src, truth


def test_jpeg_masks_at_another_scale_become_a_valid_dataset(figure_ground, tmp_path):
    src, truth = figure_ground
    before = tree_hash(src)
    out = tmp_path / "data" / "pets"
    summary = run(src, out)
    assert tree_hash(src) == before
    assert summary.mask_type == "binary" and "lossy JPEG" in summary.mask_type_reason
    assert summary.classes["names"] == ["background", "foreground"] and summary.classes["background"] == 0
    assert summary.pairs == 10 and summary.splits == {"train": 8, "val": 2}
    assert summary.resized_images == 10 and summary.resized_masks == 0
    assert summary.snapped_pixels > 0 and summary.snapped_masks > 0  # JPEG noise around the edges
    assert summary.ignored_files == ["masks/notes.txt"] and not summary.left_out
    masks = all_masks(out)
    assert sorted(masks) == sorted(truth)
    for stem, ids in truth.items():
        assert masks[stem].shape == (H, W)
        assert (masks[stem] == ids).mean() > 0.97  # thresholded at 128: JPEG's ringing does not flip pixels
        image = next((out / "images").rglob(f"{stem}.*"))
        assert image.suffix == ".png" and Image.open(image).size == (W, H)  # resized to the mask
    data = json.loads((out / IMPORT_FILE).read_text())
    assert data["pairs"] == 10 and data["resized_images"] == 10 and data["validation"]["ok"] is True
    assert json.loads((out / "classes.json").read_text())["names"] == ["background", "foreground"]
    assert (out / "splits" / "train.txt").read_text().count("\n") == 8
    assert json.loads((out / OWNER_FILE).read_text()) == {"command": "import"}
    check_valid(out)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # the temporary folder is gone


def test_cli_prints_the_summary_and_validate_accepts_the_result(figure_ground, tmp_path, capsys):
    src, _ = figure_ground
    out = tmp_path / "out"
    assert main(["import", str(src), "--out", str(out), "--names", "background,pet", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "imported 10 pairs" in text and "read as binary" in text and "resized: 10 of 10 images" in text
    assert "snapped:" in text and str(out / IMPORT_FILE) in text
    assert json.loads((out / "classes.json").read_text())["names"] == ["background", "pet"]
    assert main(["validate", "--dataset", "folder", "--root", str(out)]) == 0
    # a second import into the same folder is refused, --overwrite replaces it
    assert main(["import", str(src), "--out", str(out), "--no-progress"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["import", str(src), "--out", str(out), "--no-progress", "--overwrite", "--seed", "3"]) == 0
    assert json.loads((out / IMPORT_FILE).read_text())["options"]["seed"] == 3


# --- formats and mask encodings ------------------------------------------------------------------------

def test_bmp_tiff_png_jpeg_images_and_class_id_masks(tmp_path):
    src = tmp_path / "src"
    suffixes = [".bmp", ".tif", ".tiff", ".png", ".jpg", ".jpeg"]
    truth = {}
    for i, suffix in enumerate(suffixes):
        save(picture(i), src / "imgs" / f"s{i}{suffix}")
        ids = blob(i, k=3)
        ids[0, 0] = 255  # ignore
        truth[f"s{i}"] = ids
        mask_suffix = [".png", ".bmp", ".tif"][i % 3]
        save(ids, src / "labels" / f"s{i}{mask_suffix}")
    before = tree_hash(src)
    out = tmp_path / "out"
    summary = run(src, out, names=["sky", "road", "car"], val_fraction=0.34)
    assert tree_hash(src) == before
    assert summary.mask_type == "ids" and summary.pairs == 6 and summary.splits == {"train": 4, "val": 2}
    assert summary.classes["background"] is None  # no class named background
    masks = all_masks(out)
    assert sorted(masks) == sorted(truth) and all(np.array_equal(masks[k], v) for k, v in truth.items())
    images = sorted(p.name for p in (out / "images").rglob("*.*"))
    # mixed formats: all written as PNG (one suffix, as MMSegmentation's img_suffix wants)
    assert images == [f"s{i}.png" for i in range(6)] and summary.copied_images == 0
    s4 = np.asarray(Image.open(next((out / "images").rglob("s4.png"))))
    assert np.array_equal(s4, np.asarray(Image.open(src / "imgs" / "s4.jpg")))  # the JPEG as decoded
    s0 = next((out / "images").rglob("s0.png"))
    assert np.array_equal(np.asarray(Image.open(s0)), picture(0))
    check_valid(out)


@pytest.mark.parametrize("scale", [1, 255])
def test_binary_masks_0_1_and_0_255(tmp_path, scale):
    src = tmp_path / "src"
    truth = {}
    for i in range(4):
        save(picture(i), src / "images" / f"{i}.png")
        truth[str(i)] = blob(i)
        save((blob(i) * scale).astype(np.uint8), src / "masks" / f"{i}.png")
    summary = run(src, tmp_path / "out")
    assert summary.mask_type == "binary" and f"0 and {scale} only" in summary.mask_type_reason
    assert summary.snapped_pixels == 0
    masks = all_masks(tmp_path / "out")
    assert all(np.array_equal(masks[k], v) for k, v in truth.items())


def test_lossy_jpeg_masks_use_the_threshold(tmp_path):
    src = tmp_path / "src"
    grey = np.zeros((H, W), np.uint8)
    grey[:, W // 2:] = 200  # foreground at 200: over the default threshold, under 220
    for i in range(3):
        save(picture(i), src / "images" / f"{i}.png")
        save(grey, src / "masks" / f"{i}.jpg", quality=95)
    out = tmp_path / "out"
    run(src, out)
    assert (all_masks(out)["0"][:, W // 2 + 2:] == 1).all() and (all_masks(out)["0"][:, :W // 2 - 2] == 0).all()
    run(src, out, threshold=220, overwrite=True)
    assert (all_masks(out)["0"] == 0).all()


def test_colour_masks_with_the_palette_of_the_classes_file_and_snapping(tmp_path):
    src = tmp_path / "src"
    palette = {"background": (0, 0, 0), "cat": (255, 0, 0), "dog": (0, 0, 255)}
    classes_file = tmp_path / "classes.json"
    classes_file.write_text(json.dumps({"names": list(palette), "palette": list(palette.values()),
                                        "background": "background"}))
    truth = {}
    for i in range(4):
        ids = blob(i, k=3)
        rgb = np.array(list(palette.values()), np.uint8)[ids]
        rgb[0, :5] = (250, 6, 3)  # 5 pixels a little off red: snapped to cat
        ids = ids.copy()
        ids[0, :5] = 1
        truth[str(i)] = ids
        save(picture(i), src / "images" / f"{i}.jpg")
        save(rgb, src / "masks" / f"{i}.png")
    before = tree_hash(src)
    summary = run(src, tmp_path / "out", classes_file=str(classes_file))
    assert tree_hash(src) == before
    assert summary.mask_type == "colour" and "palette of the classes file" in summary.mask_type_reason
    assert summary.snapped_pixels == 4 * 5 and summary.snapped_masks == 4
    masks = all_masks(tmp_path / "out")
    assert all(np.array_equal(masks[k], v) for k, v in truth.items())
    assert summary.classes["background"] == 0
    assert [row["colour"] for row in summary.palette] == ["#000000", "#ff0000", "#0000ff"]
    check_valid(tmp_path / "out")


def test_colour_masks_with_the_distinct_colours_found(tmp_path, capsys):
    src = tmp_path / "src"
    colours = np.array([(0, 0, 0), (0, 200, 0), (200, 0, 0)], np.uint8)  # sorted by value: black, green, red
    truth = {}
    for i in range(3):
        ids = blob(i, k=3)
        truth[str(i)] = ids
        save(picture(i), src / "images" / f"{i}.png")
        save(colours[ids], src / "masks" / f"{i}.png")
    with pytest.raises(ConfigError, match=r"3 colours .*#000000 .*#00c800 .*#c80000.*--names"):
        run(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    summary = run(src, tmp_path / "out", names=["background", "grass", "brick"])
    assert summary.mask_type == "colour" and summary.snapped_pixels == 0
    assert summary.classes["palette"] == [[0, 0, 0], [0, 200, 0], [200, 0, 0]]
    masks = all_masks(tmp_path / "out")
    assert all(np.array_equal(masks[k], v) for k, v in truth.items())


def test_lossy_colour_masks_are_snapped_and_counted(tmp_path):
    src = tmp_path / "src"
    colours = np.array([(0, 0, 0), (255, 0, 0)], np.uint8)
    for i in range(3):
        save(picture(i), src / "images" / f"{i}.png")
        save(colours[blob(i)], src / "masks" / f"{i}.jpg", quality=80)
    summary = run(src, tmp_path / "out", names=["background", "thing"], mask_type="colour")
    assert summary.snapped_pixels > 0 and summary.snapped_masks == 3
    found = [row["colour"] for row in summary.palette]  # one colour per class, not the JPEG's noise
    assert len(found) == 2 and found[0] == "#000000" and int(found[1][1:3], 16) > 200
    masks = all_masks(tmp_path / "out")
    assert (masks["0"] == blob(0)).mean() > 0.95


def test_value_map(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        save(picture(i), src / "images" / f"{i}.png")
        ids = blob(i) * 255  # 0 = unlabelled, 255 = the object, 128 = the ground
        ids[ids == 0] = 128
        ids[:2] = 0
        save(ids.astype(np.uint8), src / "masks" / f"{i}.png")
    out = tmp_path / "out"
    summary = run(src, out, names=["ground", "object"], value_map="255=1,0=ignore,128=ground")
    assert summary.mask_type == "ids" and "value map" in summary.mask_type_reason
    mask = all_masks(out)["0"]
    assert set(np.unique(mask)) == {0, 1, 255} and (mask[:2] == 255).all()
    assert summary.value_mapped_pixels == 3 * H * W
    # values a value map leaves out stop the import: nothing is written
    with pytest.raises(DatasetError, match=r"(?s)3 masks hold values outside the class ids 0..1 and the ignore "
                       r"index 255 \(ground, object\): 128\n  masks/0.png: 128\n.*--value-map 128=ignore") as err:
        run(src, tmp_path / "out2", names=["ground", "object"], mask_type="ids")
    assert "Nothing was written" in str(err.value) and not (tmp_path / "out2").exists()
    assert parse_value_map("255=1, 0=ignore;#ff0000=2") == {255: "1", 0: "ignore", ("colour", 0xFF0000): "2"}
    for bad in ("255", "x=1", "#ff00=1", "-1=0"):
        with pytest.raises(ConfigError, match="--value-map"):
            parse_value_map(bad)
    with pytest.raises(ConfigError, match="'sky' is neither"):
        run(src, tmp_path / "out3", names=["ground", "object"], value_map="255=sky")


# --- sizes ---------------------------------------------------------------------------------------------

def test_size_mismatch_resize_either_way_and_aspect_refusal(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        save(picture(i, 2 * W, 2 * H), src / "images" / f"{i}.png")  # 48x36
        save(blob(i), src / "masks" / f"{i}.png")                       # 24x18, same aspect
    save(picture(9, 2 * W, 2 * H), src / "images" / "wide.png")
    save(blob(9, W, W), src / "masks" / "wide.png")                    # 24x24: 4:3 vs 1:1
    save(picture(8, 2 * W + 1, 2 * H + 1), src / "images" / "close.png")  # 49x37: within 2% of 4:3
    save(blob(8), src / "masks" / "close.png")
    before = tree_hash(src)
    out = tmp_path / "out"
    summary = run(src, out)  # default: the mask is the truth
    assert summary.resized_images == 5 and summary.resized_masks == 0 and summary.pairs == 5
    assert [(x.path, x.kind) for x in summary.left_out] == [("images/wide.png", "aspect-ratio")]
    assert "image 48x36, mask 24x24 (masks/wide.png): aspect ratios differ by 33.3%" in summary.left_out[0].reason
    assert all(Image.open(p).size == (W, H) for p in (out / "images").rglob("*.png"))
    assert all(np.array_equal(m, blob(int(k))) for k, m in all_masks(out).items() if k.isdigit())
    assert "wide.png: image 48x36" in summary.format()

    summary = run(src, out, resize="mask", overwrite=True)
    assert summary.resized_masks == 5 and summary.resized_images == 0
    masks = all_masks(out)
    assert masks["0"].shape == (2 * H, 2 * W) and np.array_equal(masks["0"][::2, ::2], blob(0))
    assert masks["close"].shape == (2 * H + 1, 2 * W + 1)
    assert all(p.read_bytes() == (src / "images" / p.name).read_bytes() for p in (out / "images").rglob("*.png"))

    with pytest.raises(DatasetError, match="no pairs left"):  # --resize none: every pair differs in size
        run(src, out, resize="none", overwrite=True)
    assert summary.resized_masks == 5 and (out / IMPORT_FILE).is_file()  # the earlier import is still there
    assert tree_hash(src) == before


def test_resize_none_leaves_mismatched_pairs_out(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        save(picture(i), src / "images" / f"{i}.png")
        save(blob(i), src / "masks" / f"{i}.png")
    save(picture(5, 2 * W, 2 * H), src / "images" / "big.png")
    save(blob(5), src / "masks" / "big.png")
    summary = run(src, tmp_path / "out", resize="none")
    assert summary.pairs == 3 and [x.kind for x in summary.left_out] == ["size-mismatch"]


# --- what is left out ---------------------------------------------------------------------------------

def test_unreadable_empty_and_constant_images_and_unpaired_files_are_listed_and_left_out(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        save(picture(i), src / "images" / f"ok{i}.png")
        save(blob(i), src / "masks" / f"ok{i}.png")
    (src / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "images" / "empty.png").write_bytes(b"")
    save(np.zeros((H, W, 3), np.uint8), src / "images" / "black.png")
    save(np.full((H, W, 3), (10, 20, 30), np.uint8), src / "images" / "flat.png")
    for stem in ("broken", "empty", "black", "flat", "badmask"):
        save(blob(1), src / "masks" / f"{stem}.png")
    save(picture(7), src / "images" / "badmask.png")
    (src / "masks" / "badmask.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    save(picture(8), src / "images" / "lonely.png")          # no mask
    save(blob(2), src / "masks" / "orphan.png")              # no image
    before = tree_hash(src)
    out = tmp_path / "out"
    summary = run(src, out)
    assert tree_hash(src) == before
    kinds = {x.path: x.kind for x in summary.left_out}
    assert kinds == {"images/broken.jpg": "unreadable-image", "images/empty.png": "empty-image",
                     "images/black.png": "constant-image", "images/flat.png": "constant-image",
                     "masks/badmask.png": "unreadable-mask", "images/lonely.png": "no-mask",
                     "masks/orphan.png": "no-image"}
    reasons = {x.path: x.reason for x in summary.left_out}
    assert "all black" in reasons["images/black.png"] and "(10, 20, 30)" in reasons["images/flat.png"]
    assert "0 bytes" in reasons["images/empty.png"]
    assert summary.pairs == 4
    stems = {p.stem for p in (out / "images").rglob("*.*")}
    assert stems == {"ok0", "ok1", "ok2", "ok3"}
    data = json.loads((out / IMPORT_FILE).read_text())
    assert data["left_out_by_kind"] == {"constant-image": 2, "empty-image": 1, "no-image": 1, "no-mask": 1,
                                        "unreadable-image": 1, "unreadable-mask": 1}
    assert len(data["left_out"]) == 7 and all({"path", "kind", "reason"} <= set(x) for x in data["left_out"])
    text = summary.format()
    assert "left out: 7" in text and "images/black.png: every pixel is (0, 0, 0) (all black)" in text


# --- splits and classes --------------------------------------------------------------------------------

def _flat_source(root: Path, n: int = 20) -> Path:
    for i in range(n):
        save(picture(i), root / "images" / f"{i:03d}.png")
        save(blob(i), root / "masks" / f"{i:03d}.png")
    return root


def _split_of(out: Path) -> dict[str, list[str]]:
    return {p.stem: sorted(p.read_text().split()) for p in sorted((out / "splits").glob("*.txt"))}


def test_seeded_splits(tmp_path):
    src = _flat_source(tmp_path / "src")
    a = run(src, tmp_path / "a", val_fraction=0.25, seed=1)
    run(src, tmp_path / "b", val_fraction=0.25, seed=1)
    run(src, tmp_path / "c", val_fraction=0.25, seed=2)
    assert a.splits == {"train": 15, "val": 5} and "seed 1" in a.splits_from
    assert _split_of(tmp_path / "a") == _split_of(tmp_path / "b") != _split_of(tmp_path / "c")
    train, val = _split_of(tmp_path / "a")["train"], _split_of(tmp_path / "a")["val"]
    assert not set(train) & set(val) and len(train) + len(val) == 20
    assert sorted(p.stem for p in (tmp_path / "a" / "images" / "val").iterdir()) == val


def test_source_splits_are_kept_or_completed(tmp_path):
    src = tmp_path / "src"
    for split, n in (("training", 6), ("validation", 2)):
        for i in range(n):  # the same stems in both splits: paired within each split
            save(picture(i), src / "images" / split / f"{i}.png")
            save(blob(i), src / "masks" / split / f"{i}.png")
    summary = run(src, tmp_path / "out")
    assert summary.splits == {"train": 6, "val": 2} and summary.splits_from == "splits from the source folders"
    # a train-only source gets its val carved out of train; test is kept
    src2 = tmp_path / "src2"
    for split, n in (("train", 10), ("test", 3)):
        for i in range(n):
            save(picture(i), src2 / "img" / split / f"{split}{i}.png")
            save(blob(i), src2 / "gt" / split / f"{split}{i}.png")
    summary = run(src2, tmp_path / "out2", val_fraction=0.2)
    assert summary.splits == {"train": 8, "val": 2, "test": 3} and "source's train split" in summary.splits_from


def test_globs_pick_the_files(tmp_path):
    src = tmp_path / "src"
    for i in range(4):  # images and masks side by side in one folder, told apart by suffix
        save(picture(i), src / "data" / f"{i}.jpg")
        save(blob(i), src / "data" / f"{i}.png")
    summary = run(src, tmp_path / "out", images="data/*.jpg", masks="data/*.png")
    assert summary.pairs == 4 and "(glob)" in summary.images_from
    # every image a JPEG, none resized: copied byte for byte
    assert summary.copied_images == 4
    copied = list((tmp_path / "out" / "images").rglob("*.jpg"))
    assert len(copied) == 4 and all(p.read_bytes() == (src / "data" / p.name).read_bytes() for p in copied)
    # a folder and a glob inside it: the glob's files are the masks, the rest the images
    summary = run(src, tmp_path / "out2", images="data", masks="data/*.png")
    assert summary.pairs == 4 and summary.copied_images == 4
    with pytest.raises(DatasetError, match="both name data/0.png .*neither is inside the other"):
        run(src, tmp_path / "out2b", images="data/[01]*", masks="data/*.png")
    # without flags: found by content (same stems, JPEG pictures and PNG class ids in one folder)
    summary = run(tmp_path / "src" / "data", tmp_path / "out3")
    assert summary.pairs == 4 and summary.found_by == "content"


def test_classes_from_names_or_a_file(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        save(picture(i), src / "images" / f"{i}.png")
        save(blob(i, k=3), src / "masks" / f"{i}.png")
    with pytest.raises(ConfigError, match=r"values 0, 1, 2.*--names"):
        run(src, tmp_path / "out")
    run(src, tmp_path / "out", names=["background", "a", "b"])
    written = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert written["names"] == ["background", "a", "b"] and written["background"] == 0
    assert written["ignore_index"] == 255 and len(written["palette"]) == 3
    yaml_file = tmp_path / "classes.yaml"
    yaml_file.write_text("names: [water, land, cloud]\nbackground: null\n")
    run(src, tmp_path / "out2", classes_file=str(yaml_file))
    written = json.loads((tmp_path / "out2" / "classes.json").read_text())
    assert written["names"] == ["water", "land", "cloud"] and written["background"] is None
    run(src, tmp_path / "out3", names=["water", "land", "cloud"], background="land")
    assert json.loads((tmp_path / "out3" / "classes.json").read_text())["background"] == 1
    with pytest.raises(ConfigError, match="not both"):
        ImportOptions(names=["a", "b"], classes_file=str(yaml_file))
    with pytest.raises(ConfigError, match="binary masks give 2 classes"):
        run(src, tmp_path / "out4", mask_type="binary", names=["a", "b", "c"])


# --- the output folder ----------------------------------------------------------------------------------

def test_output_folder_rules(tmp_path):
    src = _flat_source(tmp_path / "src", n=4)
    before = tree_hash(src)
    with pytest.raises(DatasetError, match="inside the source folder"):
        run(src, src / "converted")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        run(src, foreign)
    with pytest.raises(JoDiffusionError, match="--overwrite refused"):
        run(src, foreign, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    run(src, empty)
    assert (empty / IMPORT_FILE).is_file()
    # an earlier import's folder with a file of the user's beside it is not replaced either
    (empty / "notes.md").write_text("mine")
    with pytest.raises(JoDiffusionError, match="notes.md"):
        run(src, empty, overwrite=True)
    # a failing import leaves neither the output nor a temporary folder behind
    bad = tmp_path / "bad"
    with pytest.raises(ConfigError):
        run(src, bad, names=["only"])
    assert not bad.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert tree_hash(src) == before


# --- import without flags: image and mask folders found by content -------------------------------------

def grey_jpeg_mask(seed: int) -> np.ndarray:
    return (blob(seed) * 255).astype(np.uint8)


def check_pairs(out: Path, truth: dict[str, np.ndarray], lossy: bool = False) -> None:
    masks = all_masks(out)
    assert set(masks) == set(truth)
    for stem, ids in truth.items():
        agree = (masks[stem] == ids).mean()
        assert agree > (0.97 if lossy else 0.999), stem


def test_content_finds_rgb_and_figure_ground_and_names_the_grey_folder(tmp_path):
    """The issue's download: photos in rgb/, lossy JPEG 0/255 masks in figure_ground/, grey copies of the
    photos in gray/; no flag names anything."""
    src = tmp_path / "horses"
    truth = {}
    for i in range(6):
        truth[f"horse{i:03d}"] = blob(i)
        save(picture(i), src / "rgb" / f"horse{i:03d}.jpg", quality=90)
        save(np.asarray(Image.fromarray(picture(i)).convert("L")), src / "gray" / f"horse{i:03d}.jpg")
        save(grey_jpeg_mask(i), src / "figure_ground" / f"horse{i:03d}.jpg", quality=90)
    summary = run(src, tmp_path / "out", names=["background", "horse"])
    assert summary.found_by == "content" and summary.pairs == 6
    assert "rgb" in summary.images_from and "figure_ground" in summary.masks_from
    assert summary.mask_type == "binary"
    check_pairs(tmp_path / "out", truth, lossy=True)
    gray = [u for u in summary.unused if u["where"].startswith("gray/")]
    assert len(gray) == 1 and gray[0]["files"] == 6 and "grey copies" in gray[0]["reason"]
    assert "not used: gray/*.jpg (6 files): grey copies" in summary.format()


def test_content_finds_masks_beside_their_images_by_a_name_suffix(tmp_path):
    src = tmp_path / "flat"
    truth = {}
    for i in range(5):
        truth[f"img_{i:04d}"] = blob(i, k=3)
        save(picture(i), src / f"img_{i:04d}.png")
        save(blob(i, k=3), src / f"img_{i:04d}_mask.png")
    summary = run(src, tmp_path / "out", names=["a", "b", "c"])
    assert summary.found_by == "content" and summary.pairs == 5
    assert "_mask.png" in summary.masks_from
    check_pairs(tmp_path / "out", truth)
    assert sorted(p.stem for p in (tmp_path / "out" / "images").rglob("*.png")) == sorted(truth)


def test_content_finds_a_voc_layout_one_level_down(tmp_path):
    """VOCdevkit/VOC2012: JPEGImages (more images than masks), SegmentationClass and SegmentationObject
    (both palette PNGs of the same stems: the class masks are the ones named so)."""
    src = tmp_path / "VOCdevkit"
    root = src / "VOC2012"
    truth = {}
    for i in range(6):
        stem = f"2007_{i:06d}"
        save(picture(i), root / "JPEGImages" / f"{stem}.jpg")
        if i < 4:
            ids = blob(i, k=3)
            truth[stem] = ids
            save_palette(ids, root / "SegmentationClass" / f"{stem}.png")
            save_palette((ids > 0).astype(np.uint8) * 2, root / "SegmentationObject" / f"{stem}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000000\n")
    summary = run(src, tmp_path / "out", names=["background", "a", "b"])
    assert summary.found_by == "content" and summary.pairs == 4
    assert "SegmentationClass" in summary.masks_from and "JPEGImages" in summary.images_from
    check_pairs(tmp_path / "out", truth)
    assert summary.left_out_by_kind() == {"no-mask": 2}
    obj = [u for u in summary.unused if "SegmentationObject" in u["where"]]
    assert obj and "also masks of the same images" in obj[0]["reason"]



def test_content_prefers_the_folder_named_most_like_class_masks(tmp_path):
    """Two palette-PNG folders pair the same images; SegmentationAux sorts first, but SegmentationClass
    carries more mask hints (segmentationclass, seg) and is the one read (found by content: one level
    down, no folder name matches)."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    truth = {}
    for i in range(4):
        stem = f"2007_{i:06d}"
        ids = blob(i, k=3)
        truth[stem] = ids
        save(picture(i), root / "JPEGImages" / f"{stem}.jpg")
        save_palette(ids, root / "SegmentationClass" / f"{stem}.png")
        save_palette((ids > 0).astype(np.uint8), root / "SegmentationAux" / f"{stem}.png")
    summary = run(tmp_path / "VOCdevkit", tmp_path / "out", names=["background", "a", "b"])
    assert summary.found_by == "content" and "SegmentationClass" in summary.masks_from
    check_pairs(tmp_path / "out", truth)

def test_content_finds_an_ade20k_layout(tmp_path):
    src = tmp_path / "ADEChallengeData2016"
    truth = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        for i in range(3):
            stem = f"ADE_{split}_{i:08d}"
            ids = blob(i, k=3)
            truth[stem] = ids
            save(picture(i), src / "images" / folder / f"{stem}.jpg")
            save(ids, src / "annotations" / folder / f"{stem}.png")
    summary = run(src, tmp_path / "out", names=["other", "a", "b"])
    assert summary.splits == {"train": 3, "val": 3} and summary.found_by == "folder names"
    check_pairs(tmp_path / "out", truth)


def test_content_finds_a_cityscapes_layout(tmp_path):
    """leftImg8bit/<split>/<city>/<x>_leftImg8bit.png with gtFine/<split>/<city>/<x>_gtFine_{labelIds,color,
    instanceIds}.png: the single-channel label ids are the masks; colour and instance ids are named."""
    src = tmp_path / "cityscapes"
    truth = {}
    for split, city in (("train", "aachen"), ("train", "bremen"), ("val", "lindau")):
        for i in range(3):
            key = f"{city}_{i:06d}_000019"
            ids = blob(i + len(truth), k=4)
            truth[key] = ids
            save(picture(len(truth)), src / "leftImg8bit" / split / city / f"{key}_leftImg8bit.png")
            gt = src / "gtFine" / split / city
            save(ids, gt / f"{key}_gtFine_labelIds.png")
            palette = np.array([[128, 64, 128], [70, 70, 70], [107, 142, 35], [0, 0, 142]], np.uint8)
            save(palette[ids], gt / f"{key}_gtFine_color.png")
            save((ids.astype(np.int32) * 1000 + 7), gt / f"{key}_gtFine_instanceIds.png")
            (gt / f"{key}_gtFine_polygons.json").write_text("{}")
    summary = run(src, tmp_path / "out", names=["road", "building", "vegetation", "car"])
    assert summary.found_by == "content" and summary.splits == {"train": 6, "val": 3}
    assert "_gtFine_labelIds.png" in summary.masks_from and "_leftImg8bit.png" in summary.images_from
    check_pairs(tmp_path / "out", truth)
    reasons = {u["where"]: u["reason"] for u in summary.unused}
    colour = next(r for w, r in reasons.items() if w.endswith("_gtFine_color.png"))
    instance = next(r for w, r in reasons.items() if w.endswith("_gtFine_instanceIds.png"))
    assert "also masks of the same images" in colour and "instance ids" in instance


def test_content_that_pairs_nothing_names_what_it_found(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        save(picture(i), src / "photos_a" / f"a{i}.jpg")
        save(picture(i + 9), src / "photos_b" / f"b{i}.jpg")
    with pytest.raises(DatasetError, match=r"could not tell the images from the masks(.|\n)*photos_a/\*\.jpg: 3 "
                                           r"files(.|\n)*--images FOLDER_OR_GLOB --masks"):
        run(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_one_flag_and_the_other_side_found_by_content(tmp_path):
    src = tmp_path / "src"
    truth = {}
    for i in range(4):
        truth[f"p{i}"] = blob(i)
        save(picture(i), src / "rgb" / f"p{i}.jpg")
        save(blob(i), src / "fg" / f"p{i}.png")
    summary = run(src, tmp_path / "out", images="rgb", names=["background", "thing"])
    assert summary.pairs == 4 and "fg" in summary.masks_from and summary.found_by == "content"
    check_pairs(tmp_path / "out", truth)


def test_summary_gives_shares(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        save(picture(i), src / "images" / f"{i}.png")
        m = grey_jpeg_mask(i)
        m[0, :4] = 100  # snapped by the threshold: 4 of W * H pixels in each mask
        save(m, src / "masks" / f"{i}.png")
    summary = run(src, tmp_path / "out", names=["background", "thing"], mask_type="binary")
    assert summary.snapped_pixels == 16 and summary.mask_pixels == 4 * W * H
    assert f"snapped: 16 pixels ({100 * 16 / (4 * W * H):.1f}% of mask pixels) in 4 of 4 masks" in summary.format()


def test_content_finds_segnet_camvid_split_named_folders(tmp_path):
    """SegNet's CamVid: train/ + trainannot/ and val/ + valannot/ (no folder named images or masks):
    the splits come from the folder names and both splits are imported."""
    src = tmp_path / "CamVid"
    truth = {}
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            stem = f"0001TP_{split}{i:03d}"
            truth[stem] = blob(i, k=3)
            save(picture(i), src / split / f"{stem}.png")
            save(blob(i, k=3), src / f"{split}annot" / f"{stem}.png")
    summary = run(src, tmp_path / "out", names=["sky", "road", "car"])
    assert summary.found_by == "content" and summary.splits == {"train": 4, "val": 2}
    assert summary.splits_from == "splits from the source folders"
    assert "{split}annot/*.png" in summary.masks_from and "{split}/*.png" in summary.images_from
    check_pairs(tmp_path / "out", truth)
    assert summary.unused == []
