"""`jodiffusion import` on the layouts public datasets ship in: case sub-folders, tiles with the same file
names in every tile and mixed palette / RGB masks, colour tables (near colours, CamVid's tab-separated
label_colors.txt, other JSON schemas) and trimaps. Each checks the pairs, classes and pixels written."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jodiffusion.data.importer.folder as import_folder_module
from jodiffusion.cli.main import main
from jodiffusion.data.importer.class_files import read_class_file
from jodiffusion.errors import ConfigError, DatasetError
from tests.test_import import H, W, all_masks, blob, check_valid, picture, run, save, tree_hash

COLOURS = np.array([(0, 0, 0), (0x3C, 0x10, 0x98), (0xD3, 0xAC, 0x8D)], np.uint8)  # sorted by packed value


def save_palette_mask(ids: np.ndarray, path: Path, order: list[int]) -> Path:
    """A palette PNG whose index for class c is order[c] (palettes differ from file to file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pal = [0] * 768
    for c, index in enumerate(order):
        pal[3 * index:3 * index + 3] = [int(v) for v in COLOURS[c]]
    im = Image.fromarray(np.array(order, np.uint8)[ids], mode="P")
    im.putpalette(pal)
    im.save(path)
    return path


def image_of(out: Path, stem: str) -> np.ndarray:
    return np.asarray(Image.open(next((out / "images").rglob(f"{stem}.*"))))


# --- tiles: the same file names in every tile, palette masks in some tiles and RGB in others -------------

def tiles(root: Path, sizes=((W, H), (W, H), (W, H))) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    truth = {}
    for t, (w, h) in enumerate(sizes):
        for i in range(3):
            seed = 10 * t + i
            ids = blob(seed, w, h, k=3)
            tile = root / f"Tile {t + 1}"
            save(picture(seed, w, h), tile / "images" / f"image_part_{i:03d}.png")
            if t == 1:
                save_palette_mask(ids, tile / "masks" / f"image_part_{i:03d}.png", order=[[2, 0, 1], [1, 2, 0],
                                                                                         [0, 2, 1]][i])
            else:
                save(COLOURS[ids], tile / "masks" / f"image_part_{i:03d}.png")
            truth[f"Tile_{t + 1}_image_part_{i:03d}"] = (picture(seed, w, h), ids)
    return truth


def tile_classes(path: Path) -> Path:
    """The tile dataset's own classes.json: another schema, colours as #RRGGBB."""
    path.write_text(json.dumps({"classes": [
        {"title": "Building", "shape": "polygon", "color": "#000000", "geometry_config": {}},
        {"title": "Land", "shape": "polygon", "color": "#3C1098", "geometry_config": {}},
        {"title": "Road", "shape": "polygon", "color": "#D3AC8D", "geometry_config": {}}]}))
    return path


def test_tiles_pair_within_each_tile_and_mixed_palette_rgb_masks_are_read_by_colour(tmp_path):
    src = tmp_path / "Semantic segmentation dataset"
    truth = tiles(src)
    before = tree_hash(src)
    out = tmp_path / "out"
    summary = run(src, out, classes_file=str(tile_classes(tmp_path / "classes.json")))
    assert tree_hash(src) == before
    assert summary.pairs == 9 and summary.mask_type == "colour" and summary.found_by == "content"
    assert summary.images_from.startswith("*/images/*.png") and summary.masks_from.startswith("*/masks/*.png")
    assert summary.classes["names"] == ["Building", "Land", "Road"]
    assert summary.snapped_pixels == 0 and not summary.left_out and summary.unused == []
    masks = all_masks(out)
    assert sorted(masks) == sorted(truth)
    for stem, (image, ids) in truth.items():
        assert np.array_equal(masks[stem], ids), stem          # every tile's own mask, by colour
        assert np.array_equal(image_of(out, stem), image), stem  # and its own image
    total = sum(ids.size for _, ids in truth.values())
    expected = {name: int(sum((ids == k).sum() for _, ids in truth.values()))
                for k, name in enumerate(["Building", "Land", "Road"])}
    assert summary.class_pixels == expected and sum(expected.values()) == total
    assert "pixels per class: Building " in summary.format()
    check_valid(out)


def test_the_issue_minimal_tiles_never_pair_across_folders(tmp_path):
    """A/images/x + A/masks/x (RGB), B/images/x + B/masks/x (palette), at different aspect ratios: even with
    the aspect check loosened, every image gets its own tile's mask."""
    src = tmp_path / "src"
    for tile, (w, h), rgb in (("A", (W, H), True), ("B", (H, W), False)):
        ids = blob(ord(tile), w, h, k=3)
        save(picture(ord(tile), w, h), src / tile / "images" / "x.jpg", quality=95)
        if rgb:
            save(COLOURS[ids], src / tile / "masks" / "x.png")
        else:
            save_palette_mask(ids, src / tile / "masks" / "x.png", order=[0, 1, 2])
    summary = run(src, tmp_path / "out", names=["a", "b", "c"], aspect_tolerance=0.6, val_fraction=0.5)
    assert summary.pairs == 2 and summary.resized_images == 0 and not summary.left_out
    masks = all_masks(tmp_path / "out")
    assert masks["A_x"].shape == (H, W) and masks["B_x"].shape == (W, H)
    assert np.array_equal(masks["A_x"], blob(ord("A"), W, H, k=3))
    assert np.array_equal(masks["B_x"], blob(ord("B"), H, W, k=3))


# --- per-case sub-folders: CASE/CASE_N.tif beside CASE/CASE_N_mask.tif ------------------------------------

def cases(root: Path, n_cases: int = 4, per_case: int = 2) -> dict[str, np.ndarray]:
    truth = {}
    for c in range(n_cases):
        case = f"TCGA_{c:02d}_1996"
        for i in range(1, per_case + 1):
            ids = blob(10 * c + i)
            save(picture(10 * c + i), root / case / f"{case}_{i}.tif")
            save((ids * 255).astype(np.uint8), root / case / f"{case}_{i}_mask.tif")
            truth[f"{case}_{i}"] = ids
    (root / "data.csv").write_text("patient,grade\n")
    return truth


@pytest.mark.parametrize("per_case", [1, 3])
def test_case_sub_folders_import_completely_without_flags(tmp_path, per_case):
    src = tmp_path / "kaggle_3m"
    truth = cases(src, per_case=per_case)
    summary = run(src, tmp_path / "out")
    assert summary.pairs == len(truth) and summary.mask_type == "binary" and summary.found_by == "content"
    assert summary.masks_from.startswith("*/*_mask.tif") and not summary.left_out and summary.unused == []
    masks = all_masks(tmp_path / "out")
    assert sorted(masks) == sorted(truth) and all(np.array_equal(masks[k], v) for k, v in truth.items())
    assert np.array_equal(image_of(tmp_path / "out", "TCGA_02_1996_1"), picture(21))


@pytest.mark.parametrize("images", ["*/*.tif", "*/*[0-9].tif"])
def test_case_sub_folders_with_globs_strip_the_tags(tmp_path, images):
    src = tmp_path / "kaggle_3m"
    truth = cases(src)
    summary = run(src, tmp_path / "out", images=images, masks="*/*_mask.tif")
    assert summary.pairs == len(truth) and not summary.left_out
    masks = all_masks(tmp_path / "out")
    assert sorted(masks) == sorted(truth) and all(np.array_equal(masks[k], v) for k, v in truth.items())


def test_the_issue_minimal_cases(tmp_path):
    src = tmp_path / "src"
    for case, stem in (("P1", "a_1"), ("P2", "b_1")):
        save(picture(len(stem) + ord(case[1])), src / case / f"{stem}.tif")
        save((blob(ord(case[1])) * 255).astype(np.uint8), src / case / f"{stem}_mask.tif")
    summary = run(src, tmp_path / "out", val_fraction=0.5)
    assert summary.pairs == 2 and not summary.left_out
    masks = all_masks(tmp_path / "out")
    assert np.array_equal(masks["a_1"], blob(ord("1"))) and np.array_equal(masks["b_1"], blob(ord("2")))


def test_sub_folders_without_tags_below_images_and_masks(tmp_path):
    """images/<case>/x.png with masks/<case>/x.png: the same names in every case, paired case by case."""
    src = tmp_path / "src"
    truth = {}
    for c in ("left", "right", "top"):
        for i in range(2):
            seed = 7 * len(c) + i + ord(c[0])
            save(picture(seed), src / "images" / c / f"{i}.png")
            save(blob(seed, k=3), src / "masks" / c / f"{i}.png")
            truth[f"{c}_{i}"] = (picture(seed), blob(seed, k=3))
    save(picture(99), src / "images" / "top" / "9.png")  # no mask: left out, never paired with another's
    summary = run(src, tmp_path / "out", names=["a", "b", "c"])
    assert summary.found_by == "folder names" and summary.pairs == 6
    assert [(x.path, x.kind) for x in summary.left_out] == [("images/top/9.png", "no-mask")]
    masks = all_masks(tmp_path / "out")
    for stem, (image, ids) in truth.items():
        assert np.array_equal(masks[stem], ids) and np.array_equal(image_of(tmp_path / "out", stem), image)


# --- colour tables --------------------------------------------------------------------------------------

NEAR = np.array([(0, 0, 0), (0xD3, 0xAC, 0x8D), (0xE0, 0xB0, 0x90)], np.uint8)  # 2 and 3 lie 14 apart


def near_colour_source(root: Path) -> dict[str, np.ndarray]:
    truth = {}
    for i in range(4):
        ids = blob(i, k=3)
        truth[str(i)] = ids
        save(picture(i), root / "images" / f"{i}.png")
        save(NEAR[ids], root / "masks" / f"{i}.png")
    return truth


def test_lossless_near_colours_stay_two_classes(tmp_path):
    src = tmp_path / "src"
    truth = near_colour_source(src)
    with pytest.raises(ConfigError, match=r"3 colours .*lossless masks.*#000000 .*#d3ac8d .*#e0b090"):
        run(src, tmp_path / "out")
    summary = run(src, tmp_path / "out", names=["void", "sand", "clay"])
    assert summary.snapped_pixels == 0 and summary.classes["palette"] == [list(c) for c in NEAR]
    masks = all_masks(tmp_path / "out")
    assert all(np.array_equal(masks[k], v) for k, v in truth.items())


def test_a_colour_table_that_does_not_fit_is_refused_with_the_figures(tmp_path):
    src = tmp_path / "src"
    near_colour_source(src)
    table = tmp_path / "label_colors.txt"
    table.write_text("0 0 0\tVoid\n128 64 128\tRoad\n64 0 128\tCar\n")  # another dataset's colours
    with pytest.raises(ConfigError, match=r"(?s)does not fit the masks: 41.1% of the mask pixels.*1 of 3 classes "
                                          r"would have no pixels at all \(Car\).*#e0b090: 25.00%.*#d3ac8d: 16.09%.*"
                                          r"--accept-colour-table"):
        run(src, tmp_path / "out", classes_file=str(table))
    assert not (tmp_path / "out").exists()
    summary = run(src, tmp_path / "out", classes_file=str(table), accept_colour_table=True)
    assert summary.snapped_pixels > 0 and summary.warnings  # imported as asked, and said so
    args = ["import", str(src), "--out", str(tmp_path / "cli"), "--classes", str(table), "--no-progress"]
    assert main(args) == 1 and not (tmp_path / "cli").exists()
    assert main([*args, "--accept-colour-table"]) == 0 and (tmp_path / "cli" / "import.json").is_file()
    # the class names one per colour found instead: fewer names than colours is refused the same way
    with pytest.raises(ConfigError, match="does not fit the masks"):
        run(src, tmp_path / "out2", names=["void", "sand"])


def test_camvid_tab_separated_label_colors_and_rgba_masks(tmp_path):
    src = tmp_path / "CamVid"
    table = src / "label_colors.txt"
    table.parent.mkdir(parents=True)
    table.write_text("0 0 0\tVoid\n60 16 152\tBuilding\n211 172 141\tSky\n")
    truth = {}
    for i in range(4):
        ids = blob(i, k=3)
        stem = f"0001TP_{i:06d}"
        truth[stem] = ids
        rgba = np.concatenate([COLOURS[ids], np.full((H, W, 1), 255, np.uint8)], axis=2)
        save(picture(i), src / "701_StillsRaw_full" / f"{stem}.png")
        save(rgba, src / "LabeledApproved_full" / f"{stem}_L.png")
    with pytest.raises(ConfigError, match=r"The source holds a class file: --classes '.*label_colors.txt'"):
        run(src, tmp_path / "out")  # no flags: the message leads to the right import
    summary = run(src, tmp_path / "out", classes_file=str(table))
    assert summary.pairs == 4 and summary.mask_type == "colour" and summary.snapped_pixels == 0
    assert summary.classes["names"] == ["Void", "Building", "Sky"]
    masks = all_masks(tmp_path / "out")
    assert sorted(masks) == sorted(truth) and all(np.array_equal(masks[k], v) for k, v in truth.items())


def test_palette_masks_are_read_by_colour_when_the_class_file_gives_colours(tmp_path):
    src = tmp_path / "src"
    truth = {}
    for i in range(3):
        ids = blob(i, k=3)
        truth[str(i)] = ids
        save(picture(i), src / "images" / f"{i}.png")
        save_palette_mask(ids, src / "masks" / f"{i}.png", order=[[2, 0, 1], [1, 2, 0], [0, 1, 2]][i])
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"Building": [0, 0, 0], "Land": [60, 16, 152], "Road": "#d3ac8d"}))
    summary = run(src, tmp_path / "out", classes_file=str(classes))
    assert summary.mask_type == "colour" and "classes file gives" in summary.mask_type_reason
    masks = all_masks(tmp_path / "out")
    assert all(np.array_equal(masks[k], v) for k, v in truth.items())
    # without a class file: the palettes disagree, so the colours are the classes
    summary = run(src, tmp_path / "out2", names=["Building", "Land", "Road"])
    assert summary.mask_type == "colour" and "different colours" in summary.mask_type_reason
    assert all(np.array_equal(all_masks(tmp_path / "out2")[k], v) for k, v in truth.items())


@pytest.mark.parametrize("name, text, schema", [
    ("label_colors.txt", "64 128 64\tAnimal\n192 0 128\tArchway\n", "R G B name lines"),
    ("class_dict.csv", "name,r,g,b\nAnimal,64,128,64\nArchway,192,0,128\n", "name,r,g,b table"),
    ("colours.json", '{"Animal": [64, 128, 64], "Archway": "#c00080"}', "{name: colour}"),
    ("list.json", '[{"name": "Animal", "color": [64, 128, 64]}, {"label": "Archway", "colour": "#C00080"}]',
     "[{name, color}]"),
    ("meta.json", '{"classes": [{"title": "Animal", "color": "#408040"}, {"title": "Archway", "color": "#c00080"}]}',
     "[{name, color}]"),
    ("classes.yaml", "names: [Animal, Archway]\npalette: [[64, 128, 64], [192, 0, 128]]\n", "names and palette"),
])
def test_class_file_formats(tmp_path, name, text, schema):
    path = tmp_path / name
    path.write_text(text)
    found = read_class_file(path)
    assert found.schema == schema and found.colours
    assert found.classes.names == ("Animal", "Archway") and found.classes.palette == ((64, 128, 64), (192, 0, 128))


@pytest.mark.parametrize("text", ["names: [a\n", '{"labels": 3}', "64 128\tAnimal\n"])
def test_a_refused_class_file_shows_every_accepted_format(tmp_path, text):
    path = tmp_path / "classes.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_class_file(path)
    message = str(err.value)
    for example in ("64 128 64\tAnimal", "Animal,64,128,64", '{"background": [0, 0, 0]', '[{"name": "background"',
                    '"names": ["background", "pet"]'):
        assert example in message


# --- arguments are checked before any mask is read ------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    ({"classes_file": "missing.json"}, "file not found"),
    ({"images": "data/[01]*", "masks": "data/*.png"}, "neither is inside the other"),
    ({"mask_type": "binary", "value_map": "255=1"}, "--value-map with --mask-type binary"),
    ({"names": ["a", "b"], "value_map": "3=c"}, "'c' is neither"),
    ({"names": ["a", "b", "c"], "mask_type": "binary"}, "binary masks give 2 classes"),
    ({"mask_type": "ids", "value_map": "#ff0000=1", "names": ["a", "b"]}, "names colours"),
])
def test_argument_mistakes_are_refused_before_any_scan(tmp_path, monkeypatch, kw, match):
    src = tmp_path / "src"
    for i in range(3):
        save(picture(i), src / "data" / f"{i}.jpg")
        save(blob(i), src / "data" / f"{i}.png")
    if "images" not in kw:
        kw = {"images": "data/*.jpg", "masks": "data/*.png", **kw}
    if kw.get("classes_file"):
        kw["classes_file"] = str(tmp_path / kw["classes_file"])

    def no_scan(*args, **kwargs):
        raise AssertionError("a mask was scanned before the arguments were checked")

    monkeypatch.setattr(import_folder_module, "scan_mask", no_scan)
    with pytest.raises((ConfigError, DatasetError), match=match):
        run(src, tmp_path / "out", **kw)


# --- trimaps: values 1, 2, 3 -----------------------------------------------------------------------------

def trimaps(root: Path) -> dict[str, np.ndarray]:
    truth = {}
    for i in range(4):
        ids = blob(i, k=3)
        truth[f"pet_{i}"] = ids
        save(picture(i), root / "images" / f"pet_{i}.jpg", quality=95)
        save((ids + 1).astype(np.uint8), root / "annotations" / "trimaps" / f"pet_{i}.png")
        save((ids + 1).astype(np.uint8), root / "trimaps" / f"pet_{i}.png")  # the copy at the top level
    return truth


def test_trimaps_hint_the_mapping_that_keeps_every_class(tmp_path, capsys):
    src = tmp_path / "pets"
    truth = trimaps(src)
    names = ["pet", "background", "border"]
    with pytest.raises(ConfigError, match=r"values run 1..3, so give 3 names and --value-map 1=NAME0,2=NAME1,3=NAME2"):
        run(src, tmp_path / "out")
    with pytest.raises(DatasetError, match=r"values run 1..3 .*--value-map 1=pet,2=background,3=border keeps every "
                                           r"class \(3=ignore instead would leave class 0"):
        run(src, tmp_path / "out", names=names)
    summary = run(src, tmp_path / "out", names=names, value_map="1=pet,2=background,3=border")
    assert not summary.warnings and all(summary.class_pixels[n] > 0 for n in names)
    masks = all_masks(tmp_path / "out")
    assert all(np.array_equal(masks[k], v) for k, v in truth.items())
    # the shorter hint's outcome: class 0 empty, said in import's own summary with the mapping that fits
    summary = run(src, tmp_path / "out2", names=names, value_map="3=ignore")
    assert summary.class_pixels["pet"] == 0
    assert len(summary.warnings) == 1 and "pet (id 0)" in summary.warnings[0]
    assert "--value-map 1=pet,2=background,3=ignore" in summary.warnings[0]
    assert main(["import", str(src), "--out", str(tmp_path / "out3"), "--names", "pet,background,border",
                 "--value-map", "3=ignore", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "warning: 1 of 3 classes have no pixel" in text and "validate: OK, 1 warnings above" in text


# --- not-used reasons ----------------------------------------------------------------------------------

def test_not_used_reasons_say_what_the_folder_holds(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        ids = blob(i, k=3)
        save(picture(i), src / "rgb" / f"{i}.jpg")
        save(ids, src / "label_ids" / f"{i}.png")
        save(COLOURS[ids], src / "label_colour" / f"{i}.png")
    summary = run(src, tmp_path / "out", names=["a", "b", "c"])
    assert "label_ids" in summary.masks_from
    colour = next(u["reason"] for u in summary.unused if u["where"].startswith("label_colour"))
    assert colour.startswith("also masks of the same images (4 names shared; RGB, 3 colours)")


def test_tiles_whose_masks_carry_a_tag(tmp_path):
    """Tile N/images/x.jpg with Tile N/labels/x_mask.png: still one family per side, paired tile by tile."""
    src = tmp_path / "src"
    truth = {}
    for t in (1, 2):
        for i in range(2):
            seed = 10 * t + i
            save(picture(seed), src / f"Tile {t}" / "images" / f"x{i}.png")
            save((blob(seed) * 255).astype(np.uint8), src / f"Tile {t}" / "labels" / f"x{i}_mask.png")
            truth[f"Tile_{t}_x{i}"] = (picture(seed), blob(seed))
    summary = run(src, tmp_path / "out", val_fraction=0.5)
    assert summary.pairs == 4 and summary.masks_from.startswith("*/labels/*_mask.png") and summary.unused == []
    masks = all_masks(tmp_path / "out")
    for stem, (image, ids) in truth.items():
        assert np.array_equal(masks[stem], ids) and np.array_equal(image_of(tmp_path / "out", stem), image)


def test_palette_masks_read_by_colour_keep_their_ignore_index(tmp_path):
    """VOC's palette PNGs with a classes file that gives the palette: read by colour, the boundary index 255
    (#e0e0c0) stays ignore instead of being snapped to a class."""
    src = tmp_path / "src"
    truth = {}
    for i in range(3):
        ids = blob(i, k=3)
        ids[H // 2, :] = 255
        truth[str(i)] = ids
        save(picture(i), src / "images" / f"{i}.jpg")
        path = src / "masks" / f"{i}.png"
        im = Image.fromarray(ids, mode="P")
        pal = [0] * 768
        for c in range(3):
            pal[3 * c:3 * c + 3] = [int(v) for v in COLOURS[c]]
        pal[765:768] = [224, 224, 192]
        im.putpalette(pal)
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"names": ["background", "a", "b"], "palette": COLOURS.tolist()}))
    summary = run(src, tmp_path / "out", classes_file=str(classes))
    assert summary.mask_type == "colour" and summary.snapped_pixels == 0
    assert summary.class_pixels["ignore"] == 3 * W
    masks = all_masks(tmp_path / "out")
    assert all(np.array_equal(masks[k], v) for k, v in truth.items())


def test_images_in_category_folders_with_flat_masks_pair_by_name(tmp_path):
    """images/<category>/x.jpg with masks/x.png: the masks name no folder, so the name pairs (unique names)."""
    src = tmp_path / "src"
    truth = {}
    for i, category in enumerate(("cats", "dogs", "cats", "dogs")):
        save(picture(i), src / "images" / category / f"p{i}.png")
        save(blob(i), src / "masks" / f"p{i}.png")
        truth[f"p{i}"] = blob(i)
    summary = run(src, tmp_path / "out", val_fraction=0.25)
    assert summary.pairs == 4 and not summary.left_out
    masks = all_masks(tmp_path / "out")
    assert all(np.array_equal(masks[k], v) for k, v in truth.items())
