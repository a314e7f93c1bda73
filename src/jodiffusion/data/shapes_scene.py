"""One scene of the embedded shapes dataset: coloured, textured shapes on a muted background, and its caption.

``render_scene`` draws a scene from a random generator: a background, then the objects back to front, with
the mask and the caption. The vocabulary (shapes, colours, textures, sizes, background tones and kinds) and
the two difficulties (``DIFFICULTIES``) are here too, since the captions and the probe speak the same words.

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

from dataclasses import dataclass

import numpy as np

from jodiffusion.data.classes import ClassInfo

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
