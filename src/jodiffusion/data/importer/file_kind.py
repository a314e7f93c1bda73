"""What one file holds, told by its content: class ids, colour-coded classes, a picture, or nothing usable.

A mask has few distinct values (any small set: {0, 255}, {1, 2, 3}, {0..20, 255}; lossy JPEG noise
allowed), in one channel, a palette, or as a few RGB colours; a picture's most frequent values cover
much less of it. Large files are judged on a quarter-size copy (nearest, so the values are kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FEW_VALUES = 32           # a mask's most frequent values (or colours) ...
FEW_VALUES_COVER = 0.97   # ... cover at least this share of its pixels; a picture's do not
GREY_SPREAD = 24          # an RGB file whose channels differ less than this (99% of pixels) is grey


def _coverage(values: np.ndarray) -> float:
    """Share of the pixels taken by the ``FEW_VALUES`` most frequent values."""
    _, counts = np.unique(values, return_counts=True)
    top = np.sort(counts)[::-1][:FEW_VALUES]
    return float(top.sum()) / max(values.size, 1)


def file_kind(path: Path) -> tuple[str, str]:
    """(kind, note) of one file: ids, colour, photo, grey-photo, wide or unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            if max(im.size) > 512:  # enough pixels to judge; nearest keeps the values
                im = im.resize((max(1, im.size[0] // 4), max(1, im.size[1] // 4)), Image.Resampling.NEAREST)
            mode = im.mode
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                rgb = np.asarray(im.convert("RGB")).astype(np.int16)
                spread = rgb.max(axis=2) - rgb.min(axis=2)
                if np.quantile(spread, 0.99) >= GREY_SPREAD:
                    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
                    cover = _coverage(packed)
                    if cover < FEW_VALUES_COVER:
                        return "photo", "colour pictures"
                    distinct = len(np.unique(packed))
                    return "colour", (f"RGB, {distinct} colours" if distinct <= FEW_VALUES else
                                      f"RGB, {cover:.0%} of pixels in {FEW_VALUES} of {distinct} colours")
                arr, mode_text = rgb[..., 0], "grey RGB"
            elif mode == "P":
                arr, mode_text = np.asarray(im), "palette"
            elif mode == "1":
                arr, mode_text = np.asarray(im, dtype=np.uint8), "1-bit"
            elif mode in ("LA", "La"):
                arr, mode_text = np.asarray(im.getchannel("L")), "single-channel"
            else:
                arr, mode_text = np.asarray(im), "single-channel"
    except Exception as exc:  # any decoder failure: not a usable family
        return "unreadable", str(exc).strip() or type(exc).__name__
    if arr.size and arr.max() > 255:
        return "wide", f"{mode_text} values up to {int(arr.max())} (instance ids?), not class ids"
    cover = _coverage(arr)
    if cover >= FEW_VALUES_COVER:
        values = np.unique(arr)
        shown = ", ".join(str(int(v)) for v in values[:8]) + (" ..." if len(values) > 8 else "")
        return "ids", f"{mode_text}, values {shown}"
    return "grey-photo", f"{mode_text} pictures ({len(np.unique(arr))} grey levels)"


__all__ = ["FEW_VALUES", "FEW_VALUES_COVER", "GREY_SPREAD", "file_kind"]
