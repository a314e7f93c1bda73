"""The generic folder layout: what ``folder`` datasets read and what this project writes.

    root/
      classes.json              {"names": [...], "palette": [[r, g, b], ...], "ignore_index": 255,
                                 "background": 0}  (the background class id, or null for none)
      images/<split>/<stem>.png (or .jpg / .jpeg)
      masks/<split>/<stem>.png  8-bit palette PNG of class ids, 255 = ignore
      captions.jsonl            optional: one {"stem": ..., "caption": ...} per line
      splits/<split>.txt        optional: the stems of a split, one per line

``background`` is the dataset's background class (``ClassInfo.background``): an id, a class name or
null. A file without it (older or hand-written) takes the class named "background" if there is one,
else none (``ClassInfo.from_dict``); ``write_classes`` always writes it.

MMSegmentation's ``BaseSegDataset`` reads the same tree with ``img_dir=images/<split>`` and
``ann_dir=masks/<split>`` (``reduce_zero_label=False``), so what we write is usable there unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from jodiffusion.data.classes import ClassInfo
from jodiffusion.errors import DatasetError
from jodiffusion.utils.io import atomic_path, write_json_atomic
from jodiffusion.utils.output_folder import OutputRules
from jodiffusion.utils.safe_load import parse_yaml

IMAGES_DIR = "images"
MASKS_DIR = "masks"
SPLITS_DIR = "splits"
CLASSES_FILE = "classes.json"
CAPTIONS_FILE = "captions.jsonl"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def palette_bytes(classes: ClassInfo) -> list[int]:
    """A 768-entry PNG palette: class colours, then black, with the ignore index drawn white."""
    flat = [c for colour in classes.palette for c in colour]
    flat += [0] * (768 - len(flat))
    if 0 <= classes.ignore_index < 256:
        flat[3 * classes.ignore_index: 3 * classes.ignore_index + 3] = [255, 255, 255]
    return flat


def save_mask_png(mask: np.ndarray, path: str | Path, classes: ClassInfo) -> None:
    """Write an (H, W) mask of class ids as a palette PNG, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("mask values must lie in 0..255")
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(palette_bytes(classes))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def save_image_png(image: np.ndarray, path: str | Path) -> None:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def write_classes(root: str | Path, classes: ClassInfo) -> None:
    """Write ``classes.json``: names, palette, ignore index and background (null when there is none)."""
    write_json_atomic(Path(root) / CLASSES_FILE, classes.to_dict())


def read_classes(root: str | Path) -> ClassInfo:
    """Read ``classes.json`` (or ``classes.yaml``) of a folder dataset."""
    root = Path(root)
    for name in (CLASSES_FILE, "classes.yaml", "classes.yml"):
        path = root / name
        if path.is_file():
            break
    else:
        raise DatasetError(
            f"{root}: no {CLASSES_FILE} (or classes.yaml); write one with the class names, e.g. "
            '{"names": ["background", "cat"], "ignore_index": 255, "background": 0}')
    return read_classes_file(path)


def read_classes_file(path: str | Path) -> ClassInfo:
    """Read one class file: JSON (``.json``) or YAML (``.yaml`` / ``.yml``), a dict or a list of names."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = parse_yaml(path.read_text(encoding="utf-8"), f"class file {path}",
                              "expected names, optional palette, ignore_index and background", DatasetError)
        if isinstance(data, list):
            data = {"names": data}
        return ClassInfo.from_dict(data)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read this class file ({exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: invalid class file ({exc}); "
                           "expected names, optional palette, ignore_index and background") from None


def write_pair(root: str | Path, split: str, stem: str, image: np.ndarray, mask: np.ndarray,
               classes: ClassInfo) -> None:
    root = Path(root)
    save_image_png(image, root / IMAGES_DIR / split / f"{stem}.png")
    save_mask_png(mask, root / MASKS_DIR / split / f"{stem}.png", classes)


# make-data (``data.shapes_folder.write_shapes_dataset``) signs its folder with dataset.json, whose "generator" names
# the command, instead of the owner marker: a dataset folder's files are all the dataset's own
MAKE_DATA_GENERATOR = "jodiffusion make-data"


def made_by_make_data(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset ``jodiffusion make-data`` wrote (its dataset.json says so)."""
    try:
        meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("generator", "")).startswith(MAKE_DATA_GENERATOR)


MAKE_DATA_RULES = OutputRules(
    "make-data", (CLASSES_FILE, IMAGES_DIR, MASKS_DIR, SPLITS_DIR, CAPTIONS_FILE, "dataset.json"),
    not_empty="{folder} is not empty; choose an empty or new folder, or pass overwrite (--overwrite) to replace a "
              "dataset make-data wrote", kind="dataset", error=DatasetError, beside=True, owned=made_by_make_data,
    proof="dataset.json of `jodiffusion make-data`")
