"""Reading masks of any kind (grey, palette, RGB) and what one look at each tells: its values, its colours
and whether it is colour-coded; the colour clustering that finds a palette in lossy masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from jodiffusion.data.importer.options import COLOUR_SPREAD, LOSSY_SUFFIXES
from jodiffusion.errors import DatasetError

# --- reading masks ---------------------------------------------------------------------------------

@dataclass
class MaskScan:
    kind: str                         # grey, index (palette PNG), rgb
    size: tuple[int, int]             # (width, height)
    lossy: bool
    values: np.ndarray | None = None  # distinct grey / index values
    max_spread: int = 0               # rgb: the largest channel difference of a pixel
    colours: np.ndarray | None = None  # rgb, palette, colour mode: distinct packed colours
    colour_counts: np.ndarray | None = None
    index_colours: dict[int, int] | None = None  # palette: the packed colour of each index used


def open_mask(path: Path) -> tuple[str, np.ndarray, Image.Image | None]:
    """(kind, array, the opened image for colour conversion): grey (H, W) ints, index (H, W) palette
    indices, or rgb (H, W, 3) uint8."""
    if path.stat().st_size == 0:
        raise DatasetError("the file is empty (0 bytes)")
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode == "1":
            return "grey", np.asarray(im, dtype=np.uint8), None
        if mode in ("L", "I", "I;16", "I;16L", "I;16B", "I;16N"):
            return "grey", np.asarray(im), None
        if mode in ("LA", "La"):
            return "grey", np.asarray(im.getchannel("L")), None
        if mode == "P":
            return "index", np.asarray(im), im.convert("RGB")
        if mode == "F":
            arr = np.asarray(im)
            if not np.array_equal(arr, np.round(arr)) or arr.min(initial=0) < 0:
                raise DatasetError("32-bit float mask with non-integer or negative values; save class ids as "
                                   "integers")
            return "grey", arr.astype(np.int64), None
        return "rgb", np.asarray(im.convert("RGB")), None


def pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def hex_colour(packed: int) -> str:
    return f"#{int(packed):06x}"


def unpack(packed: np.ndarray) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.int64)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1)


def scan_mask(path: Path, colour_mode: bool) -> MaskScan:
    kind, arr, rgb_image = open_mask(path)
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    size = (arr.shape[1], arr.shape[0])
    scan = MaskScan(kind, size, lossy)
    if kind == "rgb":
        spread = arr.max(axis=2).astype(np.int16) - arr.min(axis=2)
        scan.max_spread = int(spread.max(initial=0))
        scan.values = np.unique(grey_of_rgb(arr))
    else:
        scan.values = np.unique(arr)
    if colour_mode or kind in ("rgb", "index"):
        packed = pack(as_rgb(kind, arr, rgb_image))
        scan.colours, scan.colour_counts = np.unique(packed, return_counts=True)
        if kind == "index":  # palettes differ between files: the same index may stand for another colour
            both = np.unique((arr.astype(np.int64) << 24) | packed)
            scan.index_colours = {int(v >> 24): int(v & 0xFFFFFF) for v in both}
    return scan


def grey_of_rgb(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def as_rgb(kind: str, arr: np.ndarray, rgb_image: Image.Image | None) -> np.ndarray:
    if kind == "rgb":
        return arr
    if kind == "index":
        return np.asarray(rgb_image)
    grey = np.clip(arr, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


JPEG_RADIUS = 48.0  # RGB distance within which lossy JPEG noise around a colour counts for it


def colour_clusters(by_frequency: list[tuple[int, int]], radius: float = JPEG_RADIUS) -> list[tuple[int, int]]:
    """Group the colours found (most frequent first) around the most frequent ones: a colour within
    ``radius`` (RGB distance) of a kept colour counts for it (lossy JPEG noise), any other starts a new
    one; radius 0 keeps every colour apart (lossless masks). Returns (colour, pixels of its group), most
    pixels first."""
    centres: list[int] = []
    totals: list[int] = []
    rgb_centres = np.zeros((0, 3), dtype=np.int64)
    for colour, pixels in by_frequency:
        rgb = unpack(colour)
        if len(centres) and radius > 0:
            dist = np.sqrt(((rgb_centres - rgb) ** 2).sum(axis=1))
            nearest = int(dist.argmin())
            if dist[nearest] <= radius:
                totals[nearest] += pixels
                continue
        if len(centres) >= 4096:  # far more than 256 classes: noise, not a palette
            break
        centres.append(colour)
        totals.append(pixels)
        rgb_centres = np.vstack([rgb_centres, rgb[None]])
    return sorted(zip(centres, totals, strict=True), key=lambda x: -x[1])


def is_colour(scan: MaskScan) -> bool:
    return scan.kind == "rgb" and (scan.max_spread > COLOUR_SPREAD or (not scan.lossy and scan.max_spread > 0))

