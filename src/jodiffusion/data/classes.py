"""Class metadata: names, colour palette, ignore index and background class of a label space."""

from __future__ import annotations

import colorsys
import numbers
import re
from dataclasses import dataclass, field

import numpy as np

from jodiffusion.errors import DatasetError

IGNORE_INDEX = 255  # the conventional "do not train on this pixel" value, shared by every reader
MAX_CLASSES = 255  # masks are 8-bit PNGs: class ids 0..254 and one more value for the ignore index


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct, deterministic colours for ``n`` classes (golden-ratio hue walk)."""
    colours = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        s = 0.65 + 0.35 * ((i // 7) % 2)
        v = 0.95 - 0.3 * ((i // 3) % 2)
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return tuple(colours)


# The class name that marks the background where a class file does not say which class it is (a user's
# classes.json without the ``background`` key, ``import --names background,car``): README's folder layout
# documents the rule. Nothing else reads class names to find the background.
BACKGROUND_NAME = "background"


def background_by_name(names) -> int | None:
    """The id of the class named "background" (any case), or None."""
    lowered = [str(n).lower() for n in names]
    return lowered.index(BACKGROUND_NAME) if BACKGROUND_NAME in lowered else None


@dataclass(frozen=True)
class ClassInfo:
    """The label space of a dataset after its reader's mapping: ids ``0..K-1`` plus ``ignore_index``.

    ``background`` is the id of the dataset's background class (the "nothing in particular" label that
    fills the space between objects, e.g. VOC's id 0), or ``None`` where the dataset has none and
    every class is a real one (Cityscapes, CamVid, ADE20K, COCO-Stuff: CamVid's id 0 is Sky). It is
    the one place the background is defined: template captions leave it out, prompted-class
    precision/recall and the pair filters do not count it, and mask optimisation keeps its small
    regions unless asked otherwise.
    """

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] = field(default=())
    ignore_index: int = IGNORE_INDEX
    background: int | None = None

    def __post_init__(self):
        if isinstance(self.names, str) or not isinstance(self.names, (list, tuple)):
            raise ValueError(f"class names must be a list of strings, got {type(self.names).__name__}")
        not_text = [n for n in self.names if not isinstance(n, str)]
        if not_text:
            shown = ", ".join(f"{n!r} ({type(n).__name__})" for n in not_text[:5])
            raise ValueError(f"class names must be strings, got {shown}; quote them (\"1\" instead of 1)")
        blank = [i for i, n in enumerate(self.names) if not n.strip()]
        if blank:
            raise ValueError(f"class name {blank[0]} is empty; every class needs a name")
        if len(self.names) < 2:
            raise ValueError(f"a label space needs at least 2 classes, got {len(self.names)}")
        if len(self.names) > MAX_CLASSES:
            raise ValueError(f"at most {MAX_CLASSES} classes are supported (masks are 8-bit: class ids and one "
                             f"ignore value), got {len(self.names)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError("class names must be unique")
        if not self.palette:
            object.__setattr__(self, "palette", default_palette(len(self.names)))
        if len(self.palette) != len(self.names):
            raise ValueError(f"palette has {len(self.palette)} colours for {len(self.names)} classes")
        object.__setattr__(self, "names", tuple(self.names))
        for k, col in enumerate(self.palette):
            if (not isinstance(col, (list, tuple)) or len(col) != 3
                    or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c <= 255
                               for c in col)):
                shown = list(col) if isinstance(col, (list, tuple)) else col
                raise ValueError(f"palette colour {k} ({self.names[k]!r}) is {shown!r}: give 3 integers in 0..255 "
                                 "(red, green, blue)")
        object.__setattr__(self, "palette", tuple(tuple(int(c) for c in col) for col in self.palette))
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, numbers.Integral):
            raise ValueError(f"ignore_index must be an integer in 0..255, got {self.ignore_index!r}")
        object.__setattr__(self, "ignore_index", int(self.ignore_index))
        if not 0 <= self.ignore_index <= 255:
            raise ValueError(f"ignore_index {self.ignore_index} is outside 0..255: masks are 8-bit, so it must be a "
                             f"pixel value that is no class id ({len(self.names)}..255; 255 is the usual one)")
        if 0 <= self.ignore_index < len(self.names):
            raise ValueError(f"ignore_index {self.ignore_index} collides with class id {self.ignore_index}")
        if self.background is not None:
            if isinstance(self.background, bool) or not isinstance(self.background, numbers.Integral):
                raise ValueError(f"background must be a class id or None, got {self.background!r}")
            object.__setattr__(self, "background", int(self.background))
            if self.background == self.ignore_index:
                raise ValueError(f"background {self.background} is the ignore index; the background is a "
                                 "class (0..K-1), ignore pixels are no class at all")
            if not 0 <= self.background < len(self.names):
                raise ValueError(f"background {self.background} is not a class id (0..{len(self.names) - 1})")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def is_background(self, class_id: int) -> bool:
        """Whether ``class_id`` is the background class (always False where there is none)."""
        return self.background is not None and int(class_id) == self.background

    @property
    def foreground_ids(self) -> tuple[int, ...]:
        """The class ids ``0..K-1`` without the background."""
        return tuple(k for k in range(len(self.names)) if k != self.background)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "palette": [list(c) for c in self.palette],
                "ignore_index": self.ignore_index, "background": self.background}

    @classmethod
    def from_dict(cls, data: dict) -> ClassInfo:
        """The inverse of :meth:`to_dict`; also reads hand-written and older class dicts.

        ``background`` may be a class id, a class name or ``None``/null (no background). A dict
        without the key was written before the background was recorded (old ``classes.json``, model
        and pipeline folders): its background is the class named ``"background"`` (case-insensitive)
        if there is one, else ``None``. That gives every older export of the built-in datasets the
        value their metadata has now (VOC, COCO-things and shapes: 0; the others: none).
        """
        names = data["names"]
        if not isinstance(names, (list, tuple)):
            raise ValueError(f"names must be a list of class names, got {type(names).__name__} {names!r}")
        names = tuple(names)
        if "background" in data:
            background = data["background"]
            if isinstance(background, str):
                if background not in names:
                    raise ValueError(f"background {background!r} is not one of the class names")
                background = names.index(background)
        else:
            background = background_by_name(names)
        return cls(names=names, palette=tuple(tuple(c) for c in data.get("palette", ())),
                   ignore_index=data.get("ignore_index", IGNORE_INDEX), background=background)


# Which classes a prompt names and a mask holds: read by the prompt-adherence measure (evaluation/)
# and by the generation filters and prompt sources (generation/).

def classes_named(prompt: str, classes: ClassInfo) -> set[int]:
    """Ids of the classes whose name appears in the prompt as whole words (case-insensitive,
    underscores read as spaces, a plural 's' allowed); the background class is never among them."""
    text = " " + re.sub(r"[^a-z0-9]+", " ", prompt.lower()) + " "
    found = set()
    for k, name in enumerate(classes.names):
        if classes.is_background(k):
            continue
        words = re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()
        if words and re.search(rf" {re.escape(words)}(s|es)? ", text):
            found.add(k)
    return found


def classes_present(mask: np.ndarray, classes: ClassInfo, min_fraction: float = 0.005) -> set[int]:
    """Ids of the non-background classes that cover at least ``min_fraction`` of the labelled pixels
    (the background's pixels are labelled too, so they count towards the total)."""
    counts = np.bincount(mask.ravel(), minlength=256)[: classes.num_classes]
    total = max(int(counts.sum()), 1)
    return {k for k in classes.foreground_ids if counts[k] / total >= min_fraction}


def check_same_classes(real: ClassInfo, synthetic: ClassInfo, where: str) -> None:
    if tuple(real.names) != tuple(synthetic.names):
        raise DatasetError(f"the class names of the synthetic set {where} do not match the real dataset's:\n"
                           f"  synthetic: {', '.join(synthetic.names)}\n  real:      {', '.join(real.names)}\n"
                           "generate the set from a model trained on this dataset, or fix its classes.json")
