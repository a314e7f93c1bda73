"""The conditioning probe: does each word of a prompt move the generated pair as it moves real data?

Prompted-class precision and recall (``joint_quality.py``) say whether the right classes appear. They
cannot see a model that ignores every other word: a generator once drew backgrounds of the
same grey for "dark" and "light" prompts. The probe reads the attributes a caption names and measures
each one on the pair, without any human label:

* ``background``: the mean grey level of the pixels the mask labels background, per tone word
  ("dark" / "light"), and the share of pairs on the named side of the threshold between the tones;
* ``colour``: for each named object whose class appears exactly once in the caption, the mean colour of
  its class region; correct when the nearest named colour is the one the caption gives;
* ``size``: the mean area (share of the image) of the regions named "large" against those named
  "small", as a ratio;
* ``count``: the share of pairs whose mask holds as many objects (connected regions of at least
  ``min_pixels``) as the caption names.

The vocabulary is the embedded shapes dataset's (``data/shapes_scene.py``). A caption without those words
(CamVid's template captions, say) leaves every attribute "not applicable" with the reason, never a
score. ``probe_pairs`` on the REAL pairs gives the reference each generated figure is read against.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.shapes_scene import BACKGROUND_TONES, COLOURS, SIZES, TEXTURES, TONE_LEVELS

# The caption vocabulary is the shapes dataset's own (data/shapes_scene.py): the probe reads any caption
# written in it, whatever dataset object produced the pairs.
TONE_WORDS = BACKGROUND_TONES
SIZE_WORDS = SIZES
COLOUR_WORDS: dict[str, tuple[int, int, int]] = {name: main for name, (main, _shade) in COLOURS.items()}
# The grey level between the two tones' ranges
TONE_THRESHOLD = (TONE_LEVELS["dark"][1] + TONE_LEVELS["light"][0]) / 2

_OBJECT_RE = re.compile(rf"\b({'|'.join(SIZES)}) ({'|'.join(COLOURS)})(?: (?:{'|'.join(TEXTURES)}))? ([a-z]+)")
_TONE_RE = re.compile(rf"\bon an? ({'|'.join(BACKGROUND_TONES)})\b")


@dataclass(frozen=True)
class NamedObject:
    size: str
    colour: str
    shape: str


@dataclass(frozen=True)
class CaptionAttributes:
    tone: str | None
    objects: tuple[NamedObject, ...]


def parse_caption(caption: str) -> CaptionAttributes:
    """The background tone and the objects (size, colour, shape word) a shapes-style caption names."""
    text = caption.lower()
    tone = _TONE_RE.search(text)
    objects = tuple(NamedObject(*m.groups()) for m in _OBJECT_RE.finditer(text))
    return CaptionAttributes(tone.group(1) if tone else None, objects)


def count_objects(mask: np.ndarray, classes: ClassInfo, min_pixels: int = 8) -> int:
    """Connected regions (4-neighbourhood) of one non-background class with at least ``min_pixels``."""
    # imported here: scipy.ndimage takes a third of a second to import (CLI start-up)
    from scipy import ndimage

    total = 0
    for k in np.unique(mask):
        if classes.is_background(int(k)) or int(k) >= classes.num_classes:
            continue
        labels, n = ndimage.label(mask == k)
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            total += int((sizes >= min_pixels).sum())
    return total


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOUR_WORDS)
    palette = np.array([COLOUR_WORDS[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(((palette - np.asarray(rgb, dtype=np.float64)) ** 2).sum(1)))]


@dataclass
class _Tally:
    tone_grey: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TONE_WORDS})
    tone_right: int = 0
    colour_seen: int = 0
    colour_right: int = 0
    size_area: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIZE_WORDS})
    count_seen: int = 0
    count_right: int = 0


def probe_pairs(prompts: Sequence[str], images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                classes: ClassInfo, min_pixels: int = 8) -> dict:
    """The probe's figures for (prompt, image (H, W, 3) uint8, mask (H, W) class ids) triples.

    Returns a flat dict: ``background_dark`` / ``background_light`` (mean grey), ``background_gap``
    (light minus dark), ``background_accuracy``, ``colour_accuracy``, ``size_ratio`` (mean large area
    over mean small area), ``count_accuracy`` (percentages in 0-100), and ``not_applicable``: the
    figures that could not be computed, each with the reason.
    """
    names = {n.lower(): k for k, n in enumerate(classes.names)}
    tally = _Tally()
    for prompt, image, mask in zip(prompts, images, masks, strict=True):
        attrs = parse_caption(prompt)
        image = np.asarray(image)
        mask = np.asarray(mask)
        if attrs.tone is not None and classes.background is not None:
            bg = mask == classes.background
            if bg.any():
                grey = float(image[bg].mean())
                tally.tone_grey[attrs.tone].append(grey)
                tally.tone_right += (grey > TONE_THRESHOLD) == (attrs.tone == "light")
        shapes = [o.shape for o in attrs.objects]
        for obj in attrs.objects:
            k = names.get(obj.shape)
            if k is None or shapes.count(obj.shape) != 1:
                continue  # not a class, or two objects share the class: the region is ambiguous
            region = mask == k
            if region.sum() >= min_pixels:
                tally.colour_seen += 1
                tally.colour_right += nearest_colour(image[region].mean(0)) == obj.colour
                tally.size_area[obj.size].append(float(region.mean()))
        if attrs.objects and all(o.shape in names for o in attrs.objects):
            tally.count_seen += 1
            tally.count_right += count_objects(mask, classes, min_pixels) == len(attrs.objects)
    return _figures(tally)


def _figures(t: _Tally) -> dict:
    out: dict = {}
    missing: dict[str, str] = {}

    def put(name: str, value: float | None, reason: str) -> None:
        out[name] = None if value is None else float(value)
        if value is None:
            missing[name] = reason

    for tone in TONE_WORDS:
        out[f"background_{tone}"] = float(np.mean(t.tone_grey[tone])) if t.tone_grey[tone] else None
    both_tones = all(t.tone_grey[tone] for tone in TONE_WORDS)
    put("background_gap", out["background_light"] - out["background_dark"] if both_tones else None,
        "the prompts do not name both a dark and a light background")
    toned = sum(len(v) for v in t.tone_grey.values())
    put("background_accuracy", 100.0 * t.tone_right / toned if toned else None,
        "no prompt names a background tone (or no pair has background pixels)")
    put("colour_accuracy", 100.0 * t.colour_right / t.colour_seen if t.colour_seen else None,
        "no prompt names an object colour whose class region was generated")
    both_sizes = all(t.size_area[s] for s in SIZE_WORDS)
    put("size_ratio", np.mean(t.size_area["large"]) / max(np.mean(t.size_area["small"]), 1e-9) if both_sizes else None,
        "the prompts do not name both small and large objects that were generated")
    put("count_accuracy", 100.0 * t.count_right / t.count_seen if t.count_seen else None,
        "no prompt names its objects by class")
    out["not_applicable"] = missing
    return out


__all__ = ["CaptionAttributes", "NamedObject", "count_objects", "nearest_colour",
           "parse_caption", "probe_pairs"]
