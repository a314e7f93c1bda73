"""Pictures people would rather look at than read: coloured masks, overlays and labelled grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jodiffusion.data.classes import ClassInfo
from jodiffusion.utils.io import atomic_path


def colorize(mask: np.ndarray, classes: ClassInfo) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours; ignore (and unknown ids) drawn white."""
    lut = np.full((256, 3), 255, dtype=np.uint8)
    lut[: classes.num_classes] = np.asarray(classes.palette, dtype=np.uint8)
    return lut[np.clip(mask, 0, 255).astype(np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, classes: ClassInfo, alpha: float = 0.5) -> np.ndarray:
    colour = colorize(mask, classes).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + colour * alpha).round().astype(np.uint8)


LINE_H = 12   # pixels per line of the default font (size 10) with a little leading
CHAR_W = 6    # approximate advance of one character of that font


def grid(rows: list[list[np.ndarray]], column_titles: list[str] | None = None,
         row_titles: list[str] | None = None, scale: int = 2, pad: int = 4) -> Image.Image:
    """Tile equally sized (H, W, 3) tiles into rows, with optional text above columns / before rows.
    Titles may hold several lines ("\n"): the title band grows to the tallest column title."""
    h, w = rows[0][0].shape[:2]
    h, w = h * scale, w * scale
    title_h = (2 + LINE_H * max(t.count("\n") + 1 for t in column_titles)) if column_titles else 0
    label_w = (8 + CHAR_W * max((len(line) for t in row_titles for line in t.split("\n")), default=0)
               if row_titles else 0)
    ncols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (label_w + ncols * (w + pad) + pad, title_h + len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(column_titles or []):
        draw.multiline_text((label_w + pad + c * (w + pad), 2), title, fill=(0, 0, 0), spacing=2)
    for r, row in enumerate(rows):
        y = title_h + pad + r * (h + pad)
        if row_titles:
            lines = row_titles[r].count("\n") + 1
            draw.multiline_text((4, max(y, y + h // 2 - LINE_H * lines // 2)), row_titles[r], fill=(0, 0, 0),
                                spacing=2)
        for c, tile in enumerate(row):
            tile_im = Image.fromarray(tile).resize((w, h), Image.NEAREST)
            canvas.paste(tile_im, (label_w + pad + c * (w + pad), y))
    return canvas


def pairs_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], classes: ClassInfo,
               titles: Sequence[str], max_rows: int | None = None, scale: int = 2) -> Image.Image:
    """(image, mask) pairs, one per row: image | coloured mask | overlay, with each row's title beside it;
    the first ``max_rows`` pairs (all without it)."""
    n = min(len(images), len(masks), len(titles), *([max_rows] if max_rows is not None else []))
    if n == 0:
        raise ValueError("pairs_grid needs at least one (image, mask, title)")
    rows = [[images[i], colorize(masks[i], classes), overlay(images[i], masks[i], classes)] for i in range(n)]
    return grid(rows, ["image", "mask", "overlay"], row_titles=list(titles[:n]), scale=scale)


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
