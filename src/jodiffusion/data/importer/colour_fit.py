"""Whether a colour table fits colour masks, from the colours the scans counted, before anything is written.

Lossless masks (PNG, TIFF, BMP) are read colour for colour: two near colours are two classes. Only lossy
JPEG masks, or lossless ones whose rare colours hold a noticeable share of the pixels (a JPEG saved again
as PNG), have their noise grouped around the main colours. A table (the class file's, or the colours kept
for the class names given) that leaves more than ``MAX_SNAPPED`` of the pixels to be snapped to a colour
that is not theirs, or leaves a class without pixels while the masks hold colours it lacks, is refused
with the figures: that is a table of another dataset or version, and importing it would label the data
wrongly. ``--accept-colour-table`` imports it anyway.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.importer.mask_scan import JPEG_RADIUS, MaskScan, hex_colour, unpack
from jodiffusion.errors import ConfigError

MAX_SNAPPED = 0.03   # share of the mask pixels a colour table may snap to another colour
NOISE_SHARE = 0.01   # lossless masks: rare colours holding more than this share of the pixels are noise
SHOWN_COLOURS = 8


def clustering_radius(scans: list[MaskScan], counts: Counter, min_fraction: float) -> tuple[float, str]:
    """(radius, why): JPEG_RADIUS for lossy or noisy masks, else 0 (every colour its own)."""
    lossy = sum(s.lossy for s in scans)
    if lossy:
        return JPEG_RADIUS, f"{lossy} lossy JPEG masks: colours within {JPEG_RADIUS:g} of each other grouped"
    total = max(sum(counts.values()), 1)
    rare = sum(n for n in counts.values() if n < min_fraction * total)
    if rare > NOISE_SHARE * total:
        return JPEG_RADIUS, (f"{100 * rare / total:.1f}% of the pixels in rare colours (JPEG-like noise): colours "
                             f"within {JPEG_RADIUS:g} of each other grouped")
    return 0.0, "lossless masks: every colour read exactly"


@dataclass
class ColourFit:
    total: int
    snapped: int                 # pixels whose colour is not in the table
    far: int                     # of them, those farther from every table colour than the noise radius
    class_pixels: list[int]      # per class id, after snapping
    unmatched: list[tuple[int, int, int]]   # (colour, pixels, target) not in the table, most pixels first
    empty: list[int]             # class ids left without pixels


def _blend_distance(points: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Each point's RGB distance to the nearest blend of two table colours (the segment between them):
    lossy masks hold such blends along every class boundary, which are noise, not a colour the table lacks."""
    points = points.astype(np.float64)
    palette = palette.astype(np.float64)
    best = np.sqrt(((points[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    if len(palette) > 64:  # too many pairs to look at: the nearest colour alone
        return best
    for i in range(len(palette)):
        for j in range(i + 1, len(palette)):
            a, d = palette[i], palette[j] - palette[i]
            t = np.clip(((points - a) @ d) / max(float(d @ d), 1e-9), 0.0, 1.0)
            best = np.minimum(best, np.sqrt((((a + t[:, None] * d) - points) ** 2).sum(axis=1)))
    return best


def measure(counts: Counter, colours: np.ndarray, targets: np.ndarray, num_classes: int,
            radius: float) -> ColourFit:
    values = np.array(list(counts), dtype=np.int64)
    pixels = np.array([counts[int(v)] for v in values], dtype=np.int64)
    total = int(pixels.sum())
    if not len(values):
        return ColourFit(0, 0, 0, [0] * num_classes, [], list(range(num_classes)))
    d2 = ((unpack(values)[:, None, :] - unpack(colours)[None, :, :]) ** 2).sum(axis=2)
    nearest = d2.argmin(axis=1)
    dist = np.sqrt(d2[np.arange(len(values)), nearest])
    target = np.asarray(targets)[nearest]
    class_pixels = [int(pixels[target == k].sum()) for k in range(num_classes)]
    off = dist > 0
    far = (_blend_distance(unpack(values), unpack(colours)) if radius > 0 else dist) > radius
    order = np.argsort(-pixels[far], kind="stable")
    unmatched = [(int(values[far][i]), int(pixels[far][i]), int(target[far][i])) for i in order]
    return ColourFit(total, int(pixels[off].sum()), int(pixels[far].sum()), class_pixels, unmatched,
                     [k for k in range(num_classes) if class_pixels[k] == 0])


def check_fit(fit: ColourFit, classes: ClassInfo, colours: np.ndarray, targets: np.ndarray, table: str,
              accept: bool) -> None:
    """Refuse a table that does not fit (see the module doc); ``table`` says where it came from."""
    too_many = fit.far > MAX_SNAPPED * fit.total
    emptied = bool(fit.empty) and fit.far > 0
    if accept or not (too_many or emptied):
        return
    share = 100 * fit.far / max(fit.total, 1)
    colour_of = {int(t): hex_colour(c) for c, t in zip(colours.tolist(), np.asarray(targets).tolist(), strict=True)}

    def name(t: int) -> str:
        return classes.names[t] if t < classes.num_classes else "ignore"

    listed = "\n".join(f"  {hex_colour(c)}: {100 * n / max(fit.total, 1):.2f}% of the pixels (nearest: {name(t)} "
                       f"{colour_of.get(t, '')})" for c, n, t in fit.unmatched[:SHOWN_COLOURS])
    more = f"\n  ... and {len(fit.unmatched) - SHOWN_COLOURS} more colours" \
        if len(fit.unmatched) > SHOWN_COLOURS else ""
    empty = (f"; {len(fit.empty)} of {classes.num_classes} classes would have no pixels at all ("
             + ", ".join(classes.names[k] for k in fit.empty[:SHOWN_COLOURS])
             + (" ..." if len(fit.empty) > SHOWN_COLOURS else "") + ")") if fit.empty else ""
    raise ConfigError(
        f"the colour table ({table}) does not fit the masks: {share:.1f}% of the mask pixels ({fit.far} of "
        f"{fit.total}) have a colour that is not in it and would be snapped to the nearest one{empty}. "
        f"Colours in the masks that the table lacks, most pixels first:\n{listed}{more}\n"
        "Nothing was written. Check that the class file belongs to these masks (or give one class name per "
        "colour); map single colours with --value-map '#rrggbb=NAME' or '#rrggbb=ignore'; "
        "--accept-colour-table imports with this table anyway")


__all__ = ["MAX_SNAPPED", "ColourFit", "check_fit", "clustering_radius", "measure"]
