"""The embedded procedural dataset: coloured, textured shapes on muted backgrounds, with captions.

Nothing is downloaded: every sample is rendered on the fly from ``(seed, split, index)``, so the same
index gives the same image, mask and caption whatever the access order, and the ``train`` and
``val`` splits differ. It is the default dataset of the demo and the tests: small enough to train a
diffusion model on a laptop CPU, yet with what makes segmentation data interesting: several objects
per image, eight shape classes, named colours and textures, partial occlusion and varied backgrounds.

Rendering is pixel-exact, without anti-aliasing: an object pixel of the image has exactly one of the
two colours of its object (the colour and its shade, the shade drawing the texture), and the mask holds
that object's class at exactly those pixels. Object colours always have a channel at most
``OBJECT_CHANNEL_LOW`` or at least ``OBJECT_CHANNEL_HIGH``, background colours have every channel in
``BACKGROUND_RANGE``; the two sets never meet, so the mask can be read back from the image alone.

Each caption names the visible objects, largest visible area first, then the background::

    "a large red striped star, a small blue circle and a small white dotted ring on a dark background"

Objects that end up mostly hidden (less than ``MIN_VISIBLE_FRACTION`` of their pixels visible) are
removed from the scene before drawing, so every object drawn is recognisable and every object in the
mask is named in the caption.
"""

from __future__ import annotations

import os
import re
import shutil
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jodiffusion import __version__
from jodiffusion.data.base import SegmentationDataset, Transform
from jodiffusion.data.captions import write_captions
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.layout import (
    CAPTIONS_FILE,
    MAKE_DATA_GENERATOR,
    MAKE_DATA_RULES,
    SPLITS_DIR,
    write_classes,
    write_pair,
)
from jodiffusion.utils.io import replace_folder, write_json_atomic, write_text_atomic
from jodiffusion.utils.output_folder import check, output_folder
from jodiffusion.utils.progress import progress_bar
from jodiffusion.utils.tempnames import make_temp_dir

# --- vocabulary -------------------------------------------------------------------------------

SHAPE_NAMES = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "crescent")
CLASS_NAMES = ("background", *SHAPE_NAMES)
SHAPES_CLASSES = ClassInfo(
    names=CLASS_NAMES, background=0,
    palette=((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
             (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)),
)

# name -> (main colour, shade). Every value has a channel <= 48 or >= 205 (see the module docstring).
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "red": ((220, 30, 30), (140, 10, 10)),
    "green": ((30, 170, 50), (10, 95, 25)),
    "blue": ((30, 70, 225), (15, 30, 130)),
    "yellow": ((245, 215, 35), (175, 145, 10)),
    "purple": ((150, 40, 200), (85, 15, 115)),
    "orange": ((250, 135, 20), (165, 75, 5)),
    "white": ((245, 245, 245), (210, 210, 210)),
    "black": ((15, 15, 15), (48, 48, 48)),
}
OBJECT_CHANNEL_LOW = 48
OBJECT_CHANNEL_HIGH = 205
BACKGROUND_RANGE = (56, 200)

TEXTURES = ("solid", "striped", "dotted", "checkered")
SIZES = ("small", "large")
BACKGROUND_TONES = ("dark", "light")
BACKGROUND_KINDS = ("plain", "gradient", "noisy", "striped")

MAX_OBJECTS = 4
MIN_VISIBLE_FRACTION = 0.35

TONE_LEVELS = {"dark": (62, 105), "light": (140, 190)}  # grey level range of each background tone
@dataclass(frozen=True)
class ShapesStyle:
    """What a scene may contain. ``full`` is every texture and background kind with the small sizes;
    ``easy`` keeps all eight shapes, the colours, several objects with occlusion and the captions, but
    draws objects solid on plain backgrounds and a little larger. At 64 px on a CPU budget the textures
    and patterned backgrounds cost the joint model most of its capacity (docs/results.md), while the
    segmentation task (which shape is where) stays the same."""

    textures: tuple[str, ...] = TEXTURES
    backgrounds: tuple[str, ...] = BACKGROUND_KINDS
    radii: tuple[tuple[float, float], tuple[float, float]] = ((0.09, 0.15), (0.19, 0.28))  # small, large
    max_objects: int = MAX_OBJECTS


DIFFICULTIES = {
    "full": ShapesStyle(),
    "easy": ShapesStyle(textures=("solid",), backgrounds=("plain",), radii=((0.13, 0.18), (0.2, 0.27)),
                        max_objects=3),
}


def shapes_style(difficulty: str) -> ShapesStyle:
    try:
        return DIFFICULTIES[difficulty]
    except KeyError:
        raise ValueError(f"unknown shapes difficulty {difficulty!r}; choose one of {', '.join(DIFFICULTIES)}") from None
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ShapeObject:
    """One object drawn in a sample. ``area``: its pixels in the frame; ``visible``: those not hidden."""

    shape: str
    class_id: int
    colour: str
    texture: str
    size: str
    center: tuple[float, float]  # (x, y) in pixels
    radius: float  # pixels
    rotation: float  # degrees, counter-clockwise
    depth: int  # drawing order: 0 is at the back
    area: int
    visible: int

    @property
    def phrase(self) -> str:
        """``"a large red striped star"`` (the texture word is left out for solid objects)."""
        words = [self.size, self.colour] + ([] if self.texture == "solid" else [self.texture]) + [self.shape]
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article, *words])


@dataclass(frozen=True)
class ShapesSample:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8 class ids
    objects: tuple[ShapeObject, ...]  # back to front
    background: tuple[str, str]  # (tone, kind)
    caption: str


def split_key(split: str) -> int:
    """A 32-bit number for a split name, stable across runs (``hash()`` is salted per process)."""
    return zlib.crc32(split.encode("utf-8"))


def describe_background(tone: str, kind: str) -> str:
    return f"{tone} background" if kind == "plain" else f"{tone} {kind} background"


def make_caption(objects: list[ShapeObject] | tuple[ShapeObject, ...], background: tuple[str, str]) -> str:
    """Caption of a scene: visible objects, largest visible area first (then front first), and background."""
    bg = describe_background(*background)
    shown = sorted((o for o in objects if o.visible > 0), key=lambda o: (-o.visible, -o.depth))
    if not shown:
        return f"an empty {bg}"
    phrases = [o.phrase for o in shown]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{listed} on a {bg}"


# --- geometry ---------------------------------------------------------------------------------

def _polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of the points (u, v) against the closed polygon ``verts`` (N, 2)."""
    inside = np.zeros(u.shape, dtype=bool)
    x0, y0 = verts[-1]
    for x1, y1 in verts:
        crosses = (y1 > v) != (y0 > v)
        if crosses.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                x_at = x1 + (v - y1) * (x0 - x1) / (y0 - y1)
            inside ^= crosses & (u < x_at)
        x0, y0 = x1, y1
    return inside


def _regular_vertices(n: int, radius: float, inner: float | None = None) -> np.ndarray:
    """Vertices of a regular polygon (or a star when ``inner`` is given), first vertex pointing up."""
    if inner is None:
        angles = -np.pi / 2 + 2 * np.pi * np.arange(n) / n
        radii = np.full(n, radius)
    else:
        angles = -np.pi / 2 + np.pi * np.arange(2 * n) / n
        radii = np.where(np.arange(2 * n) % 2 == 0, radius, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Inside test of ``shape`` of radius ``r`` in object coordinates (u, v) centred on the object."""
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "square":
        s = 0.78 * r
        return (np.abs(u) <= s) & (np.abs(v) <= s)
    if shape == "triangle":
        return _polygon(u, v + 0.15 * r, _regular_vertices(3, 1.1 * r))
    if shape == "star":
        return _polygon(u, v, _regular_vertices(5, 1.1 * r, inner=0.48 * r))
    if shape == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        arm = 0.3 * r
        return ((au <= arm) & (av <= r)) | ((av <= arm) & (au <= r))
    if shape == "hexagon":
        return _polygon(u, v, _regular_vertices(6, r))
    if shape == "crescent":
        d2 = u * u + v * v
        return (d2 <= r * r) & ((u - 0.5 * r) ** 2 + v * v > (0.8 * r) ** 2)
    raise ValueError(f"unknown shape '{shape}'")


def texture_mask(texture: str, u: np.ndarray, v: np.ndarray, width: float) -> np.ndarray:
    """Where the texture draws the shade colour (object coordinates, stripe/check width in pixels)."""
    if texture == "solid":
        return np.zeros(u.shape, dtype=bool)
    if texture == "striped":
        return np.floor(u / width).astype(np.int64) % 2 == 1
    if texture == "checkered":
        return (np.floor(u / width).astype(np.int64) + np.floor(v / width).astype(np.int64)) % 2 == 1
    if texture == "dotted":
        period = 2.0 * width
        du = np.mod(u, period) - period / 2
        dv = np.mod(v, period) - period / 2
        return du * du + dv * dv <= (0.33 * period) ** 2
    raise ValueError(f"unknown texture '{texture}'")


# --- rendering --------------------------------------------------------------------------------

def _muted_colour(rng: np.random.Generator, tone: str) -> np.ndarray:
    lo, hi = TONE_LEVELS[tone]
    grey = rng.uniform(lo, hi)
    tint = rng.uniform(-14, 14, size=3)
    return np.clip(grey + tint, *BACKGROUND_RANGE)


def _render_background(rng: np.random.Generator, res: int, ys: np.ndarray, xs: np.ndarray,
                       kinds: tuple[str, ...] = BACKGROUND_KINDS) -> tuple[np.ndarray, tuple[str, str]]:
    tone = BACKGROUND_TONES[rng.integers(len(BACKGROUND_TONES))]
    kind = kinds[rng.integers(len(kinds))]
    c1 = _muted_colour(rng, tone)
    if kind == "plain":
        bg = np.broadcast_to(c1, (res, res, 3))
    elif kind == "gradient":
        c2 = _muted_colour(rng, tone)
        angle = rng.uniform(0, 2 * np.pi)
        t = (xs - res / 2) * np.cos(angle) + (ys - res / 2) * np.sin(angle)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        bg = c1 + (c2 - c1) * t[..., None]
    elif kind == "noisy":
        noise = rng.uniform(-16, 16, size=(res, res, 1)) + rng.uniform(-5, 5, size=(res, res, 3))
        bg = c1 + noise
    else:  # striped
        c2 = _muted_colour(rng, tone)
        if np.abs(c2 - c1).mean() < 18:  # keep the stripes visible
            c2 = np.clip(c1 + np.where(c1.mean() < 128, 22, -22), *BACKGROUND_RANGE)
        angle = rng.uniform(0, np.pi)
        width = res / rng.uniform(6, 12)
        t = xs * np.cos(angle) + ys * np.sin(angle)
        bg = np.where((np.floor(t / width).astype(np.int64) % 2 == 1)[..., None], c2, c1)
    bg = np.clip(np.rint(bg), *BACKGROUND_RANGE).astype(np.uint8)
    return bg, (tone, kind)


def render_scene(rng: np.random.Generator, resolution: int, style: ShapesStyle = DIFFICULTIES["full"]) -> ShapesSample:
    """Draw one scene from ``rng``: a background, then up to ``style.max_objects`` objects back to front."""
    res = resolution
    ys, xs = np.mgrid[0:res, 0:res].astype(np.float64) + 0.5  # pixel centres
    image, background = _render_background(rng, res, ys, xs, style.backgrounds)
    image = np.array(image)  # writable copy
    tex_width = max(2.0, res / 20)
    min_pixels = max(4, int(round(8 * (res / 64) ** 2)))

    # Sample the objects and their full (unoccluded, in-frame) footprints.
    drafts = []
    for _ in range(int(rng.integers(1, style.max_objects + 1))):
        shape = SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))]
        colour = tuple(COLOURS)[rng.integers(len(COLOURS))]
        texture = style.textures[rng.integers(len(style.textures))]
        size = SIZES[rng.integers(len(SIZES))]
        r = max(3.0, res * rng.uniform(*style.radii[SIZES.index(size)]))
        cx, cy = rng.uniform(0.6 * r, res - 0.6 * r, size=2)
        theta = rng.uniform(0, 2 * np.pi)
        # Work in the object's bounding window only.
        y0, y1 = max(0, int(cy - 1.2 * r)), min(res, int(cy + 1.2 * r) + 2)
        x0, x1 = max(0, int(cx - 1.2 * r)), min(res, int(cx + 1.2 * r) + 2)
        dx, dy = xs[y0:y1, x0:x1] - cx, ys[y0:y1, x0:x1] - cy
        c, s = np.cos(theta), np.sin(theta)
        u, v = c * dx + s * dy, -s * dx + c * dy
        inside = shape_mask(shape, u, v, r)
        shade = texture_mask(texture, u, v, tex_width)
        drafts.append(dict(shape=shape, colour=colour, texture=texture, size=size, r=r, cx=cx, cy=cy,
                           theta=theta, window=(slice(y0, y1), slice(x0, x1)), inside=inside, shade=shade))

    def visibility(items: list[dict]) -> tuple[np.ndarray, list[int]]:
        owner = np.full((res, res), -1, dtype=np.int64)
        for k, d in enumerate(items):
            win = owner[d["window"]]
            win[d["inside"]] = k
        counts = np.bincount(owner[owner >= 0].ravel(), minlength=len(items))
        return owner, [int(n) for n in counts]

    # Drop objects that are (almost) hidden or (almost) out of the frame. Removing an object only
    # uncovers the ones below it, so one pass keeps every remaining object above the threshold.
    _, visible = visibility(drafts)
    kept = [d for d, vis in zip(drafts, visible, strict=True)
            if vis >= min_pixels and vis >= MIN_VISIBLE_FRACTION * int(d["inside"].sum())]
    _, visible = visibility(kept)

    mask = np.zeros((res, res), dtype=np.uint8)
    objects = []
    for depth, (d, vis) in enumerate(zip(kept, visible, strict=True)):
        main, shade = COLOURS[d["colour"]]
        img_win, mask_win = image[d["window"]], mask[d["window"]]
        img_win[d["inside"]] = main
        img_win[d["inside"] & d["shade"]] = shade
        class_id = SHAPES_CLASSES.names.index(d["shape"])
        mask_win[d["inside"]] = class_id
        objects.append(ShapeObject(
            shape=d["shape"], class_id=class_id, colour=d["colour"], texture=d["texture"], size=d["size"],
            center=(float(d["cx"]), float(d["cy"])), radius=float(d["r"]),
            rotation=float(np.degrees(d["theta"])), depth=depth, area=int(d["inside"].sum()), visible=vis))
    return ShapesSample(image=image, mask=mask, objects=tuple(objects), background=background,
                        caption=make_caption(objects, background))


# --- dataset ----------------------------------------------------------------------------------

class ShapesDataset(SegmentationDataset):
    """Procedural shapes: ``num_images`` samples of a split, rendered on demand at ``resolution``.

    Sample ``i`` of split ``s`` depends only on ``(seed, s, i)``. Stems are ``"<split>_<index>"`` so
    that the stems of all splits can share one captions file.
    """

    def __init__(self, split: str = "train", num_images: int = 512, resolution: int = 64, seed: int = 0,
                 transform: Transform | None = None, difficulty: str = "full"):
        if not isinstance(split, str) or not _SPLIT_RE.match(split):
            raise ValueError(f"split must be a non-empty name of letters, digits, '_' or '-', got {split!r}")
        if int(num_images) < 1:
            raise ValueError(f"num_images must be positive, got {num_images}")
        if int(resolution) < 16 or int(resolution) % 8:
            raise ValueError(f"resolution must be a multiple of 8 and at least 16, got {resolution}")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.split = split
        self.num_images = int(num_images)
        self.resolution = int(resolution)
        self.seed = int(seed)
        self.difficulty = difficulty
        self.style = shapes_style(difficulty)
        self.transform = transform
        self.classes = SHAPES_CLASSES
        self._cache: OrderedDict[int, ShapesSample] = OrderedDict()

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return (f"ShapesDataset(split={self.split!r}, num_images={self.num_images}, "
                f"resolution={self.resolution}, seed={self.seed}, difficulty={self.difficulty!r})")

    def _index(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} samples")
        return index

    def rng(self, index: int) -> np.random.Generator:
        """The random generator of sample ``index`` (a fresh one on every call)."""
        ss = np.random.SeedSequence([self.seed, split_key(self.split), self._index(index)])
        return np.random.default_rng(ss)

    def render(self, index: int) -> ShapesSample:
        """Everything about sample ``index``: image, mask, objects, background and caption (cached)."""
        index = self._index(index)
        sample = self._cache.get(index)
        if sample is None:
            sample = render_scene(self.rng(index), self.resolution, self.style)
            self._cache[index] = sample
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return sample

    def stem(self, index: int) -> str:
        return f"{self.split}_{self._index(index):06d}"

    def load_image(self, index: int) -> np.ndarray:
        return self.render(index).image.copy()

    def load_mask(self, index: int) -> np.ndarray:
        return self.render(index).mask.copy()

    def objects(self, index: int) -> list[ShapeObject]:
        """The objects drawn in sample ``index``, back to front."""
        return list(self.render(index).objects)

    def caption(self, index: int) -> str:
        return self.render(index).caption

    def captions(self) -> dict[str, str]:
        """``{stem: caption}`` for every sample of the split."""
        return {self.stem(i): self.caption(i) for i in range(len(self))}


# --- writing the dataset to disk -----------------------------------------------------------------


def write_shapes_dataset(out_dir: str | os.PathLike, num_train: int = 512, num_val: int = 128,
                         resolution: int = 64, seed: int = 0, overwrite: bool = False,
                         progress: bool = True, difficulty: str = "full", num_test: int = 0) -> Path:
    """Render both splits into the generic folder layout (see ``jodiffusion.data.layout``).

    Writes ``images/{train,val}/<stem>.png``, ``masks/{train,val}/<stem>.png``, ``classes.json``,
    ``captions.jsonl`` (``{"stem", "caption", "split"}`` per line) and ``splits/{train,val}.txt``; with
    ``num_test`` also a ``test`` split, for scores that no choice has seen.
    Everything goes to a temporary sibling folder that is renamed onto ``out_dir`` at the end, so an
    interrupted run leaves no half-written dataset. A non-empty ``out_dir`` is refused unless
    ``overwrite``, and even then unless it is a dataset this function wrote holding nothing else
    (``MAKE_DATA_RULES``): nothing the caller had is ever deleted.
    """

    out = Path(out_dir).expanduser().absolute()
    check(out, MAKE_DATA_RULES, overwrite)  # before anything is rendered or written
    if int(num_train) < 1 or int(num_val) < 1:
        raise ValueError("num_train and num_val must be positive")
    splits = {"train": ShapesDataset("train", num_train, resolution, seed, difficulty=difficulty),
              "val": ShapesDataset("val", num_val, resolution, seed, difficulty=difficulty)}
    if int(num_test) < 0:
        raise ValueError("num_test must be >= 0 (0: no test split)")
    if num_test:
        splits["test"] = ShapesDataset("test", num_test, resolution, seed, difficulty=difficulty)

    # one run into out at a time, checked again under the lock; the build folders of killed runs are removed
    with output_folder(out, MAKE_DATA_RULES, overwrite=overwrite):
        tmp = make_temp_dir(out.parent, out.name)
        try:
            write_classes(tmp, SHAPES_CLASSES)
            records = []
            total = sum(len(d) for d in splits.values())
            with progress_bar(total=total, desc="rendering shapes", unit="img", disable=not progress) as bar:
                for split, ds in splits.items():
                    stems = []
                    for i in range(len(ds)):
                        sample = ds.render(i)
                        stem = ds.stem(i)
                        write_pair(tmp, split, stem, sample.image, sample.mask, SHAPES_CLASSES)
                        records.append({"stem": stem, "caption": sample.caption, "split": split})
                        stems.append(stem)
                        bar.update(1)
                    write_text_atomic(tmp / SPLITS_DIR / f"{split}.txt", "\n".join(stems) + "\n")
            write_captions(tmp / CAPTIONS_FILE, records)
            write_json_atomic(tmp / "dataset.json", {
                "generator": f"{MAKE_DATA_GENERATOR} (embedded shapes dataset)", "jodiffusion_version": __version__,
                "num_train": num_train, "num_val": num_val, "num_test": num_test, "resolution": resolution,
                "seed": seed,
                "difficulty": difficulty})
            replace_folder(tmp, out)  # out was empty or a dataset folder (checked above)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out
