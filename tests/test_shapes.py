"""The embedded procedural shapes dataset and its writer."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from jodiffusion.data import shapes_scene
from jodiffusion.data.base import read_image, read_mask
from jodiffusion.data.captions import read_captions
from jodiffusion.data.layout import read_classes
from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.data.shapes_folder import write_shapes_dataset
from jodiffusion.data.shapes_scene import (
    BACKGROUND_RANGE,
    COLOURS,
    OBJECT_CHANNEL_HIGH,
    OBJECT_CHANNEL_LOW,
    SHAPE_NAMES,
    SIZES,
    TEXTURES,
)
from jodiffusion.errors import DatasetError

PHRASE_RE = re.compile(
    r"^an? (?P<size>{sizes}) (?P<colour>{colours}) (?:(?P<texture>{textures}) )?(?P<shape>{shapes})$".format(
        sizes="|".join(SIZES), colours="|".join(COLOURS), textures="|".join(TEXTURES),
        shapes="|".join(SHAPE_NAMES)))


def parse_caption(caption: str) -> tuple[list[dict], str]:
    """Parse "<phrase>, <phrase> and <phrase> on a <background>" back into attribute dicts."""
    objects_text, _, background = caption.partition(" on a ")
    parts = objects_text.split(", ")
    if " and " in parts[-1]:
        parts[-1:] = parts[-1].split(" and ")
    parsed = []
    for part in parts:
        m = PHRASE_RE.match(part)
        assert m, f"cannot parse '{part}' in caption '{caption}'"
        d = m.groupdict()
        d["texture"] = d["texture"] or "solid"
        parsed.append(d)
    return parsed, background


@pytest.fixture(scope="module")
def ds() -> ShapesDataset:
    return ShapesDataset("train", num_images=64, resolution=64, seed=0)


def test_classes(ds):
    names = ds.classes.names
    assert names[0] == "background"
    assert len(names) >= 7
    assert set(SHAPE_NAMES) == set(names[1:])
    assert ds.classes.ignore_index == 255


def test_sample_format(ds):
    item = ds[3]
    assert set(item) == {"image", "mask", "stem"}
    assert item["image"].shape == (64, 64, 3) and item["image"].dtype == np.uint8
    assert item["mask"].shape == (64, 64) and item["mask"].dtype == np.uint8
    assert item["stem"] == "train_000003"
    assert int(item["mask"].max()) < ds.classes.num_classes
    assert len(ds) == 64
    with pytest.raises(IndexError):
        ds.load_image(64)
    with pytest.raises(IndexError):
        ds.stem(-1)


def test_deterministic_whatever_the_access_order(ds):
    first = [(ds.load_image(i), ds.load_mask(i), ds.caption(i)) for i in (5, 6, 7)]
    for i in (40, 2, 33, 12, 9, 1, 50, 60, 22, 31):  # flush the cache
        ds.render(i)
    again = [(ds.load_image(i), ds.load_mask(i), ds.caption(i)) for i in (7, 6, 5)][::-1]
    other = ShapesDataset("train", num_images=64, resolution=64, seed=0)
    fresh = [(other.load_image(i), other.load_mask(i), other.caption(i)) for i in (5, 6, 7)]
    for a, b, c in zip(first, again, fresh, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[0], c[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[1], c[1])
        assert a[2] == b[2] == c[2]
    # num_images does not change the samples either
    bigger = ShapesDataset("train", num_images=1000, resolution=64, seed=0)
    np.testing.assert_array_equal(bigger.load_image(5), first[0][0])


def test_loaded_arrays_are_copies(ds):
    image = ds.load_image(0)
    image[:] = 0
    assert ds.load_image(0).any()


def test_splits_and_seeds_differ():
    train = ShapesDataset("train", 16, 64, seed=0)
    val = ShapesDataset("val", 16, 64, seed=0)
    seeded = ShapesDataset("train", 16, 64, seed=1)
    for other in (val, seeded):
        same = sum(np.array_equal(train.load_image(i), other.load_image(i)) for i in range(16))
        assert same == 0
        assert list(train.captions().values()) != list(other.captions().values())
    assert set(train.captions()).isdisjoint(val.captions())  # stems are unique across splits


def test_several_objects_and_occlusion(ds):
    counts = [len(ds.objects(i)) for i in range(len(ds))]
    assert min(counts) >= 1
    assert max(counts) >= 3
    assert np.mean(counts) >= 1.8
    occluded = [o for i in range(len(ds)) for o in ds.objects(i) if o.visible < o.area]
    assert len(occluded) >= 5
    # partly hidden objects keep a fair part of themselves visible
    assert all(o.visible >= shapes_scene.MIN_VISIBLE_FRACTION * o.area for o in occluded)
    # variety
    objects = [o for i in range(len(ds)) for o in ds.objects(i)]
    assert {o.shape for o in objects} == set(SHAPE_NAMES)
    assert len({o.colour for o in objects}) >= 6
    assert {o.texture for o in objects} == set(TEXTURES)
    assert {o.size for o in objects} == set(SIZES)
    assert len({ds.render(i).background for i in range(len(ds))}) >= 5


def test_colour_sets_are_separated():
    lo, hi = BACKGROUND_RANGE
    for main, shade in COLOURS.values():
        for colour in (main, shade):
            assert min(colour) <= OBJECT_CHANNEL_LOW or max(colour) >= OBJECT_CHANNEL_HIGH
    assert OBJECT_CHANNEL_LOW < lo and hi < OBJECT_CHANNEL_HIGH


@pytest.mark.parametrize("resolution", [16, 64, 96])
def test_image_and_mask_agree_pixel_exactly(resolution):
    ds = ShapesDataset("val", num_images=40, resolution=resolution, seed=3)
    lo, hi = BACKGROUND_RANGE
    for i in range(len(ds)):
        image, mask, objects = ds.load_image(i), ds.load_mask(i), ds.objects(i)
        # the mask can be read back from the image alone: object colours and background never meet
        is_object = (image <= OBJECT_CHANNEL_LOW).any(-1) | (image >= OBJECT_CHANNEL_HIGH).any(-1)
        np.testing.assert_array_equal(is_object, mask > 0)
        assert ((image[mask == 0] >= lo) & (image[mask == 0] <= hi)).all()
        # every pixel of a class has a colour of an object of that class
        for class_id in np.unique(mask[mask > 0]):
            allowed = {c for o in objects if o.class_id == class_id for c in COLOURS[o.colour]}
            pixels = {tuple(int(v) for v in p) for p in image[mask == class_id]}
            assert pixels <= allowed, (i, class_id)
        # visible pixel counts add up to the mask
        for class_id in range(1, ds.classes.num_classes):
            assert sum(o.visible for o in objects if o.class_id == class_id) == int((mask == class_id).sum())


def test_caption_names_exactly_the_visible_objects(ds):
    for i in range(len(ds)):
        caption, mask, objects = ds.caption(i), ds.load_mask(i), ds.objects(i)
        parsed, background = parse_caption(caption)
        assert background.endswith("background")
        tone, kind = ds.render(i).background
        assert tone in background
        named = {p["shape"] for p in parsed}
        visible = {ds.classes.names[c] for c in np.unique(mask) if c != 0}
        assert named == visible, (caption, visible)
        got = sorted((p["size"], p["colour"], p["texture"], p["shape"]) for p in parsed)
        want = sorted((o.size, o.colour, o.texture, o.shape) for o in objects)
        assert got == want
        assert all(o.visible > 0 for o in objects)


def test_captions_mapping(ds):
    caps = ds.captions()
    assert len(caps) == len(ds)
    assert caps["train_000010"] == ds.caption(10)


def test_resolution_option():
    for res in (16, 32, 128):
        ds = ShapesDataset("train", 4, resolution=res)
        assert ds.load_image(0).shape == (res, res, 3)
        assert ds.load_mask(0).shape == (res, res)
    for bad in (8, 20, 63):
        with pytest.raises(ValueError):
            ShapesDataset("train", 4, resolution=bad)
    with pytest.raises(ValueError):
        ShapesDataset("train", 0)
    with pytest.raises(ValueError):
        ShapesDataset("bad/split", 4)


def test_transform_is_applied():
    ds = ShapesDataset("train", 4, 32, transform=lambda im, m: (im[:16], m[:16]))
    item = ds[0]
    assert item["image"].shape == (16, 32, 3) and item["mask"].shape == (16, 32)


def test_render_is_fast():
    ds = ShapesDataset("train", 200, 64, seed=11)
    start = time.perf_counter()
    for i in range(200):
        ds.render(i)
    per_sample = (time.perf_counter() - start) / 200
    assert per_sample < 0.01  # typically well under 1 ms; generous for loaded CI machines


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_write_shapes_dataset(tmp_path):
    out = tmp_path / "shapes"
    result = write_shapes_dataset(out, num_train=6, num_val=4, resolution=32, seed=2, progress=False)
    assert result == out.absolute()
    assert _siblings(out) == ["shapes"]  # no temporary folder left over
    assert read_classes(out) == ShapesDataset().classes
    train, val = ShapesDataset("train", 6, 32, seed=2), ShapesDataset("val", 4, 32, seed=2)
    for split, ds in (("train", train), ("val", val)):
        images = sorted((out / "images" / split).iterdir())
        masks = sorted((out / "masks" / split).iterdir())
        assert [p.stem for p in images] == [ds.stem(i) for i in range(len(ds))]
        assert [p.stem for p in masks] == [ds.stem(i) for i in range(len(ds))]
        for i, (ip, mp) in enumerate(zip(images, masks, strict=True)):
            np.testing.assert_array_equal(read_image(ip), ds.load_image(i))
            np.testing.assert_array_equal(read_mask(mp), ds.load_mask(i))
        assert (out / "splits" / f"{split}.txt").read_text().split() == [ds.stem(i) for i in range(len(ds))]
        assert read_captions(out / "captions.jsonl", split=split) == ds.captions()
    lines = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(lines) == 10
    assert all(set(r) == {"stem", "caption", "split"} for r in lines)


def test_a_test_split_is_written_only_when_asked_and_read_back_as_split_test(tmp_path):
    from jodiffusion.data.config import DataConfig
    from jodiffusion.data.registry import build_dataset

    write_shapes_dataset(tmp_path / "plain", num_train=2, num_val=2, resolution=32, progress=False)
    assert not (tmp_path / "plain" / "images" / "test").exists()
    out = write_shapes_dataset(tmp_path / "held", num_train=2, num_val=2, num_test=3, resolution=32, progress=False)
    test = ShapesDataset("test", 3, 32)
    assert sorted(p.stem for p in (out / "images" / "test").iterdir()) == [test.stem(i) for i in range(3)]
    np.testing.assert_array_equal(read_mask(out / "masks" / "test" / f"{test.stem(0)}.png"), test.load_mask(0))
    # the same split, rendered on demand: "shapes" with num_test; its images differ from train and val
    on_demand = build_dataset(DataConfig(name="shapes", resolution=32, num_test=3), "test")
    assert len(on_demand) == 3 and np.array_equal(on_demand.load_image(1), test.load_image(1))
    assert not np.array_equal(test.load_image(0), ShapesDataset("val", 1, 32).load_image(0))


def test_write_refuses_non_empty_folder(tmp_path):
    out = tmp_path / "data"
    write_shapes_dataset(out, 2, 2, 16, progress=False)
    with pytest.raises(DatasetError, match="not empty"):
        write_shapes_dataset(out, 3, 2, 16, progress=False)
    assert len(list((out / "images" / "train").iterdir())) == 2
    write_shapes_dataset(out, 3, 2, 16, overwrite=True, progress=False)
    assert len(list((out / "images" / "train").iterdir())) == 3
    assert _siblings(out) == ["data"]

    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="overwrite refused: .* is not a dataset `jodiffusion make-data` wrote"):
        write_shapes_dataset(other, 2, 2, 16, overwrite=True, progress=False)
    assert (other / "todo.txt").read_text() == "keep me"

    empty = tmp_path / "empty"
    empty.mkdir()
    write_shapes_dataset(empty, 1, 1, 16, progress=False)
    assert (empty / "classes.json").is_file()


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    import jodiffusion.data.shapes_folder as shapes_folder

    calls = {"n": 0}
    real = shapes_folder.write_pair  # data.layout.write_pair, as shapes_folder.py calls it

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(shapes_folder, "write_pair", failing)
    with pytest.raises(KeyboardInterrupt):
        write_shapes_dataset(tmp_path / "out", 4, 2, 16, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_easy_difficulty_keeps_the_task_and_drops_the_patterns():
    from jodiffusion.data.shapes_scene import BACKGROUND_KINDS, TEXTURES

    easy = ShapesDataset("train", num_images=200, resolution=64, seed=0, difficulty="easy")
    full = ShapesDataset("train", num_images=200, resolution=64, seed=0)
    objects = [o for i in range(len(easy)) for o in easy.objects(i)]
    assert {o.texture for o in objects} == {"solid"}
    assert {easy.render(i).background[1] for i in range(len(easy))} == {"plain"}
    assert {o.shape for o in objects} == set(SHAPE_NAMES)  # every shape class is still drawn
    assert max(len(easy.objects(i)) for i in range(len(easy))) >= 3  # several objects ...
    assert any(o.visible < o.area for o in objects)                 # ... that occlude each other
    caption = easy.caption(0)
    assert any(c in caption for c in COLOURS) and any(s in caption for s in SHAPE_NAMES)
    # the full difficulty is unchanged and still draws every texture and background pattern
    assert {o.texture for i in range(len(full)) for o in full.objects(i)} == set(TEXTURES)
    assert {full.render(i).background[1] for i in range(len(full))} == set(BACKGROUND_KINDS)
    with pytest.raises(ValueError, match="difficulty"):
        ShapesDataset("train", 4, difficulty="hard")


def test_difficulty_reaches_the_dataset_folder(tmp_path):
    import json

    from jodiffusion.data.config import DataConfig
    from jodiffusion.data.registry import build_dataset

    root = write_shapes_dataset(tmp_path / "easy", num_train=3, num_val=1, resolution=32, progress=False,
                                difficulty="easy")
    assert json.loads((root / "dataset.json").read_text())["difficulty"] == "easy"
    ds = build_dataset(DataConfig(name="shapes", resolution=32, num_train=3, difficulty="easy"), "train")
    assert ds.difficulty == "easy"
    with pytest.raises(ValueError, match="difficulty"):
        DataConfig(difficulty="hard")
