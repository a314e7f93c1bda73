"""The conditioning probe (evaluation/probe.py) on hand-made pairs: each figure moves when, and only when,
the attribute it reads is drawn as the caption says."""

import numpy as np
import pytest

from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.data.shapes_scene import SHAPES_CLASSES
from jodiffusion.evaluation.probe import count_objects, nearest_colour, parse_caption, probe_pairs

CIRCLE, STAR = SHAPES_CLASSES.names.index("circle"), SHAPES_CLASSES.names.index("star")


def pair(background: int, objects: list[tuple[int, tuple[int, int, int], slice, slice]], size: int = 32):
    """An image of one grey background with solid rectangles, and its mask."""
    image = np.full((size, size, 3), background, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    for class_id, colour, rows, cols in objects:
        image[rows, cols] = colour
        mask[rows, cols] = class_id
    return image, mask


def test_parse_caption_reads_tone_objects_and_textures():
    attrs = parse_caption("a large red striped star, a small blue circle and a small white ring on a dark noisy "
                          "background")
    assert attrs.tone == "dark"
    assert [(o.size, o.colour, o.shape) for o in attrs.objects] == [
        ("large", "red", "star"), ("small", "blue", "circle"), ("small", "white", "ring")]
    assert parse_caption("a photo of road, car and sky").objects == ()
    assert parse_caption("a photo of road").tone is None


def test_background_figures_follow_the_drawn_grey_not_the_words():
    red = (220, 30, 30)
    dark = pair(80, [(CIRCLE, red, slice(4, 12), slice(4, 12))])
    light = pair(170, [(CIRCLE, red, slice(4, 12), slice(4, 12))])
    prompts = ["a large red circle on a dark background", "a large red circle on a light background"]
    right = probe_pairs(prompts, [dark[0], light[0]], [dark[1], light[1]], SHAPES_CLASSES)
    assert right["background_dark"] == 80 and right["background_light"] == 170
    assert right["background_gap"] == 90 and right["background_accuracy"] == 100.0
    # a generator that ignores the word: the same grey for both prompts
    ignored = probe_pairs(prompts, [dark[0], dark[0]], [dark[1], dark[1]], SHAPES_CLASSES)
    assert ignored["background_gap"] == 0 and ignored["background_accuracy"] == 50.0


def test_colour_size_and_count_figures():
    red, blue = (220, 30, 30), (30, 70, 225)
    big = pair(80, [(CIRCLE, red, slice(0, 16), slice(0, 16)), (STAR, blue, slice(20, 24), slice(20, 24))])
    prompt = "a large red circle and a small blue star on a dark background"
    good = probe_pairs([prompt], [big[0]], [big[1]], SHAPES_CLASSES)
    assert good["colour_accuracy"] == 100.0
    assert good["size_ratio"] == pytest.approx(256 / 16)
    assert good["count_accuracy"] == 100.0
    swapped = pair(80, [(CIRCLE, blue, slice(0, 16), slice(0, 16)), (STAR, blue, slice(20, 24), slice(20, 24)),
                        (STAR, blue, slice(26, 30), slice(2, 6))])  # wrong colour, one object too many
    bad = probe_pairs([prompt], [swapped[0]], [swapped[1]], SHAPES_CLASSES)
    assert bad["colour_accuracy"] == 50.0  # the circle is blue (wrong), the stars are blue (right)
    assert bad["count_accuracy"] == 0.0


def test_figures_that_cannot_be_computed_are_not_applicable_with_a_reason():
    image, mask = pair(80, [(CIRCLE, (220, 30, 30), slice(0, 8), slice(0, 8))])
    result = probe_pairs(["a photo of a circle"], [image], [mask], SHAPES_CLASSES)
    for name in ("background_gap", "background_accuracy", "colour_accuracy", "size_ratio"):
        assert result[name] is None and result["not_applicable"][name]
    assert result["count_accuracy"] is None  # "a photo of a circle" names no object the probe can read


def test_helpers():
    assert nearest_colour((200, 40, 40)) == "red" and nearest_colour((240, 240, 250)) == "white"
    mask = np.zeros((20, 20), np.uint8)
    mask[0:4, 0:4] = CIRCLE
    mask[10:14, 10:14] = CIRCLE
    mask[18, 18] = STAR  # 1 pixel: below min_pixels
    assert count_objects(mask, SHAPES_CLASSES, min_pixels=4) == 2


def test_real_shapes_pairs_reach_the_reference_values():
    ds = ShapesDataset("val", 48, 64, difficulty="easy")
    result = probe_pairs([ds.caption(i) for i in range(48)], [ds.load_image(i) for i in range(48)],
                         [ds.load_mask(i) for i in range(48)], SHAPES_CLASSES)
    assert result["background_accuracy"] == 100.0 and result["colour_accuracy"] == 100.0
    assert result["background_gap"] > 50 and result["size_ratio"] > 1.5
