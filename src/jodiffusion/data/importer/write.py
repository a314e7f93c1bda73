"""Writing one pair: the image read and checked, the mask converted by the plan, sizes reconciled, both
written into the output folder; and the checks that stop an import before anything is written."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from jodiffusion.data import layout
from jodiffusion.data.base import image_to_rgb
from jodiffusion.data.importer.hints import bad_values_hint
from jodiffusion.data.importer.mask_scan import MaskScan, as_rgb, grey_of_rgb, open_mask, pack, unpack
from jodiffusion.data.importer.options import COPY_SUFFIXES, SHOWN, ImportOptions, ImportSummary, LeftOut
from jodiffusion.data.importer.plan import MaskPlan
from jodiffusion.data.importer.source_files import SourceFile
from jodiffusion.data.importer.value_map import value_list
from jodiffusion.errors import DatasetError


@dataclass
class Converted:
    ids: np.ndarray     # (H, W) uint8 class ids / ignore (valid only when bad is empty)
    snapped: int = 0
    mapped: int = 0     # pixels the value map rewrote
    bad: dict[int, int] = field(default_factory=dict)  # values outside the label space -> pixels


def convert_mask(path: Path, plan: MaskPlan) -> Converted:
    kind, arr, rgb_image = open_mask(path)
    classes = plan.classes
    if plan.mask_type == "colour":
        rgb = as_rgb(kind, arr, rgb_image)
        values, inverse, counts = np.unique(pack(rgb), return_inverse=True, return_counts=True)
        vr, pr = unpack(values), unpack(plan.palette_colours)
        dist = ((vr[:, None, :] - pr[None, :, :]) ** 2).sum(axis=2)
        nearest = dist.argmin(axis=1)
        exact = dist[np.arange(len(values)), nearest] == 0
        ids = plan.palette_targets[nearest].astype(np.uint8)[inverse.reshape(-1)].reshape(rgb.shape[:2])
        return Converted(ids, snapped=int(counts[~exact].sum()))
    grey = grey_of_rgb(arr) if kind == "rgb" else arr
    if plan.mask_type == "binary":
        if grey.max(initial=0) <= 1:
            fg, snapped = grey >= 1, 0
        else:
            fg = grey >= plan.threshold
            snapped = int(np.count_nonzero((grey != 0) & (grey != 255)))
        return Converted(fg.astype(np.uint8), snapped=snapped)
    values, inverse = np.unique(grey, return_inverse=True)
    values = values.astype(np.int64)
    mapped_values = np.array([plan.value_map.get(int(v), int(v)) for v in values], dtype=np.int64)
    counts = np.bincount(inverse.reshape(-1), minlength=len(values))
    rewritten = int(counts[mapped_values != values].sum())
    ok = ((mapped_values >= 0) & (mapped_values < classes.num_classes)) | (mapped_values == classes.ignore_index)
    bad = {int(v): int(c) for v, c, good in zip(values, counts, ok, strict=True) if not good}
    ids = np.where(ok, mapped_values, 0).astype(np.uint8)[inverse.reshape(-1)].reshape(grey.shape)
    return Converted(ids, mapped=rewritten, bad=bad)


def bad_values(scan: MaskScan, plan: MaskPlan) -> dict[int, int]:
    """ids masks: the (mapped) values outside the label space, from the scan (no pixel counts: 0)."""
    if plan.mask_type != "ids":
        return {}
    classes = plan.classes
    out = {}
    for v in scan.values.tolist():
        m = plan.value_map.get(int(v), int(v))
        if not (0 <= m < classes.num_classes or m == classes.ignore_index):
            out[int(v)] = 0
    return out


# --- images ---------------------------------------------------------------------------------------

def read_image(path: Path) -> tuple[np.ndarray | None, str | None, str]:
    """(RGB array, left-out kind, reason)."""
    try:
        if path.stat().st_size == 0:
            return None, "empty-image", "the file is empty (0 bytes)"
        with Image.open(path) as im:
            im.load()
            rgb = image_to_rgb(im, path)
    except Exception as exc:  # every decoder failure is a finding
        text = str(exc).strip() or type(exc).__name__
        return None, "unreadable-image", f"does not decode as an image ({text})"
    if rgb.size == 0:
        return None, "empty-image", "the image has no pixels"
    first = rgb.reshape(-1, 3)[0]
    if np.all(rgb == first):
        colour = tuple(int(c) for c in first)
        what = {(0, 0, 0): " (all black)", (255, 255, 255): " (all white)"}.get(colour, "")
        return None, "constant-image", f"every pixel is {colour}{what}: no picture to learn from"
    return rgb, None, ""


def aspect_gap(a: tuple[int, int], b: tuple[int, int]) -> float:
    return abs((a[0] / a[1]) / (b[0] / b[1]) - 1.0)



def raise_bad_values(bad: dict[str, dict[int, int]], plan: MaskPlan, all_values: set[int]) -> None:
    classes = plan.classes
    values = sorted({v for b in bad.values() for v in b})
    files = sorted(bad)
    listed = "\n".join(f"  {f}: {', '.join(str(v) for v in sorted(bad[f]))}" for f in files[:SHOWN])
    more = f"\n  ... and {len(files) - SHOWN} more" if len(files) > SHOWN else ""
    raise DatasetError(
        f"{len(files)} masks hold values outside the class ids 0..{classes.num_classes - 1} and the ignore index "
        f"{classes.ignore_index} ({', '.join(classes.names)}): {value_list(values)}\n{listed}{more}\n"
        f"Nothing was written. {bad_values_hint(all_values, values, classes, plan.value_map)}")


def can_copy(keys: list, images: dict, scans: dict, options: ImportOptions) -> bool:
    """Whether the image files can be copied as they are: all PNG or all JPEG, and none to be resized (the
    image headers give their sizes)."""
    suffixes = {images[k].path.suffix.lower().replace(".jpeg", ".jpg") for k in keys}
    if len(suffixes) != 1 or not suffixes <= set(COPY_SUFFIXES):
        return False
    if options.resize != "image":
        return True
    for k in keys:
        try:
            with Image.open(images[k].path) as im:
                size = im.size
        except Exception:
            continue  # left out later
        if size != scans[k].size and aspect_gap(size, scans[k].size) <= options.aspect_tolerance:
            return False
    return True


def write_pair(tmp: Path, split: str, stem: str, image: SourceFile, mask: SourceFile, plan: MaskPlan,
               options: ImportOptions, summary: ImportSummary, left_out: list[LeftOut], copy_images: bool) -> bool:
    rgb, kind, reason = read_image(image.path)
    if rgb is None:
        left_out.append(LeftOut(image.rel, kind, reason))
        return False
    try:
        converted = convert_mask(mask.path, plan)
    except Exception as exc:
        text = str(exc).strip() or type(exc).__name__
        left_out.append(LeftOut(mask.rel, "unreadable-mask", f"does not decode as a mask ({text})"))
        return False
    ids = converted.ids
    image_size, mask_size = (rgb.shape[1], rgb.shape[0]), (ids.shape[1], ids.shape[0])
    resized_image = False
    if image_size != mask_size:
        sizes = f"image {image_size[0]}x{image_size[1]}, mask {mask_size[0]}x{mask_size[1]} ({mask.rel})"
        gap = aspect_gap(image_size, mask_size)
        if options.resize == "none":
            left_out.append(LeftOut(image.rel, "size-mismatch", f"{sizes}: sizes differ and --resize is none"))
            return False
        if gap > options.aspect_tolerance:
            left_out.append(LeftOut(image.rel, "aspect-ratio",
                                    f"{sizes}: aspect ratios differ by {100 * gap:.1f}% (more than "
                                    f"--aspect-tolerance {100 * options.aspect_tolerance:g}%), so one cannot be "
                                    "resized onto the other"))
            return False
        if options.resize == "image":
            rgb = np.asarray(Image.fromarray(rgb).resize(mask_size, Image.Resampling.BICUBIC))
            resized_image = True
            summary.resized_images += 1
        else:
            ids = np.asarray(Image.fromarray(ids).resize(image_size, Image.Resampling.NEAREST))
            summary.resized_masks += 1
    suffix = image.path.suffix.lower()
    if copy_images and not resized_image:
        target = tmp / layout.IMAGES_DIR / split / f"{stem}{'.jpg' if suffix == '.jpeg' else suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image.path, target)
        summary.copied_images += 1
    else:
        layout.save_image_png(np.ascontiguousarray(rgb), tmp / layout.IMAGES_DIR / split / f"{stem}.png")
    layout.save_mask_png(ids, tmp / layout.MASKS_DIR / split / f"{stem}.png", plan.classes)
    summary.mask_pixels += int(ids.size)
    counts = np.bincount(ids.reshape(-1), minlength=256)
    for k, n in enumerate(counts.tolist()):  # by id while writing; by name once all are written
        if n:
            summary.class_pixels[k] = summary.class_pixels.get(k, 0) + n
    summary.snapped_pixels += converted.snapped
    summary.snapped_masks += int(converted.snapped > 0)
    summary.value_mapped_pixels += converted.mapped
    return True


