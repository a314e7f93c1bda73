"""Turn a segmentation folder as it was downloaded into this project's folder layout (``jodiffusion import``).

What a source folder may look like (every case is read, none needs converting by hand):

* images and masks in two folders (default: the first of ``images/``, ``imgs/``, ``JPEGImages/``, ... and
  of ``masks/``, ``labels/``, ``annotations/``, ``SegmentationClass/``, ... found in SRC), or in any two
  folders or globs the user names (``--images 'photos/*.jpg' --masks gt``), matched by file stem; PNG,
  JPEG, BMP or TIFF on either side. A first sub-folder named after a split (``train``/``training``,
  ``val``/``valid``/``validation``, ``test``/``testing``) gives the split;
* masks as class ids (single-channel or palette PNGs), as binary figure-ground masks (0/255, 0/1, or
  lossy JPEG, thresholded), or as colour-coded RGB (mapped through a palette: the classes file's, or the
  distinct colours found; any other colour is snapped to the nearest palette colour and counted). An
  optional value map rewrites raw values first (``255=1,0=ignore``; ``#e0e0c0=ignore`` for colours);
* masks at another size than their image: the image is resized to the mask (default, the mask is the
  truth; bicubic) or the mask to the image (nearest). Pairs whose aspect ratios differ by more than
  ``aspect_tolerance`` are left out, listed by file.

Unreadable, empty (0 bytes) and constant (e.g. all black) images, unreadable masks, and images or masks
without a partner are left out and listed with the reason, never silently kept or dropped. Mask values
outside the label space stop the import (nothing is written) with the files and values listed, since
only the user knows what they mean (``--value-map``).

Without splits in the source, ``val_fraction`` of the pairs (seeded shuffle) become ``val``; a source
with a train split but no val split has its val carved out of train the same way.

Output (``layout``)::

    OUT/
      .jodiffusion-owner.json   {"command": "import"}: what ``--overwrite`` may replace
      classes.json              from --names or --classes (binary masks: background, foreground)
      images/<split>/<stem>.png|.jpg   copied byte for byte when every image is a PNG, or every one a
                                JPEG, and none is resized; else all written as PNG (one suffix for all, as
                                MMSegmentation's img_suffix wants)
      masks/<split>/<stem>.png  palette PNG of class ids, 255 = ignore
      splits/<split>.txt        the stems of each split
      import.json               the summary: settings, pairs per split, resized, snapped pixels,
                                left out (file, kind, reason), and the validation result

Everything is written into a temporary folder beside OUT and renamed onto OUT only after the result
passed ``validate_dataset``, so a failure leaves no half-written OUT (a kill leaves at most that hidden
``.OUT.import-*.tmp`` folder beside it, which may be deleted). SRC is only read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from jodiffusion.data import layout
from jodiffusion.data.base import image_to_rgb
from jodiffusion.data.classes import IGNORE_INDEX, ClassInfo
from jodiffusion.data.import_discovery import SourceFile, find_sides
from jodiffusion.errors import ConfigError, DatasetError
from jodiffusion.utils.io import write_json_atomic, write_text_atomic
from jodiffusion.utils.progress import progress_bar

log = logging.getLogger(__name__)

IMPORT_COMMAND = "import"
IMPORT_FILE = "import.json"
IMPORT_ENTRIES = (layout.CLASSES_FILE, layout.IMAGES_DIR, layout.MASKS_DIR, layout.SPLITS_DIR, IMPORT_FILE)
LOSSY_SUFFIXES = (".jpg", ".jpeg")
COPY_SUFFIXES = (".png", ".jpg", ".jpeg")  # what the folder reader reads as it is
MASK_TYPES = ("auto", "ids", "binary", "colour")
RESIZE_MODES = ("image", "mask", "none")
BINARY_NAMES = ("background", "foreground")
# An RGB(A) mask is colour-coded when a pixel's channels differ by more than this (lossy JPEG noise of a
# grey mask stays far below), or by anything at all in a lossless file.
COLOUR_SPREAD = 32
_SHOWN = 20  # files named in an error before "and N more"


# --- options and summary ---------------------------------------------------------------------------

@dataclass
class ImportOptions:
    """How to read the source folder; every field has a command-line flag of the same name."""

    images: str | None = None         # folder or glob of the images, relative to SRC (default: found)
    masks: str | None = None          # folder or glob of the masks, relative to SRC (default: found)
    mask_type: str = "auto"           # auto, ids, binary or colour
    threshold: int = 128              # binary masks: value >= threshold is foreground (0/1 masks: 1 is)
    value_map: str | None = None      # "255=1,0=ignore" (colour masks: "#ffffff=ignore")
    names: Sequence[str] | None = None  # class names, id order
    classes_file: str | None = None   # classes.json / .yaml (names, optional palette, ignore, background)
    background: str | None = None     # a class name or id, or "none"; default: see _background
    resize: str = "image"             # image: image -> mask size; mask: mask -> image size; none: refuse
    aspect_tolerance: float = 0.02    # largest relative difference of the aspect ratios that is resized
    val_fraction: float = 0.2         # share of the pairs that become val when the source has no val split
    seed: int = 0                     # seed of that split
    min_colour_fraction: float = 0.001  # colour masks without a palette: a colour covering less is noise

    def __post_init__(self):
        if self.mask_type not in MASK_TYPES:
            raise ConfigError(f"--mask-type {self.mask_type!r}: choose one of {', '.join(MASK_TYPES)}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"--resize {self.resize!r}: choose one of {', '.join(RESIZE_MODES)}")
        if not 0 < self.threshold <= 255:
            raise ConfigError(f"--threshold {self.threshold}: must lie in 1..255")
        if not 0 <= self.aspect_tolerance < 1:
            raise ConfigError(f"--aspect-tolerance {self.aspect_tolerance}: must lie in [0, 1), e.g. 0.02 for 2%")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction {self.val_fraction}: must lie in [0, 1)")
        if not 0 < self.min_colour_fraction < 1:
            raise ConfigError(f"--min-colour-fraction {self.min_colour_fraction}: must lie in (0, 1)")
        if self.names is not None and self.classes_file is not None:
            raise ConfigError("give the classes either as --names or as --classes FILE, not both")
        if self.names is not None:
            self.names = tuple(self.names)


@dataclass(frozen=True)
class LeftOut:
    path: str    # the file concerned, relative to SRC
    kind: str    # no-mask, no-image, unreadable-image, empty-image, constant-image, unreadable-mask,
                 # aspect-ratio, size-mismatch
    reason: str


@dataclass
class ImportSummary:
    src: str
    out: str
    images_from: str
    masks_from: str
    found_by: str                     # how the two were found: --images/--masks, folder names, or content
    unused: list[dict]                # image files found but not used: {"where", "files", "reason"}
    mask_type: str
    mask_type_reason: str
    classes: dict
    splits: dict[str, int]
    splits_from: str
    pairs: int = 0
    resized_images: int = 0
    resized_masks: int = 0
    copied_images: int = 0
    mask_pixels: int = 0
    snapped_pixels: int = 0
    snapped_masks: int = 0
    snapped_note: str = ""
    value_mapped_pixels: int = 0
    palette: list[dict] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    validation: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def left_out_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(x.kind for x in self.left_out).items()))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["left_out_by_kind"] = self.left_out_by_kind()
        return data

    def format(self) -> str:
        split_text = ", ".join(f"{s} {n}" for s, n in self.splits.items())
        lines = [f"imported {self.pairs} pairs from {self.src} into {self.out} ({split_text}; {self.splits_from})",
                 f"  images: {self.images_from}  [found by {self.found_by}]",
                 f"  masks: {self.masks_from}, read as {self.mask_type} ({self.mask_type_reason})",
                 f"  classes: {', '.join(self.classes['names'])} (ignore {self.classes['ignore_index']}, "
                 f"background {self.classes['background']})"]
        if self.palette:
            lines.append("  palette: " + ", ".join(f"{p['colour']}={p['class']} ({p['pixels']} px)"
                                                   for p in self.palette))
        if self.value_mapped_pixels:
            lines.append(f"  value map: {self.value_mapped_pixels} pixels rewritten "
                         f"({_share(self.value_mapped_pixels, self.mask_pixels)} of mask pixels; "
                         f"{self.options.get('value_map')})")
        lines.append(f"  resized: {self.resized_images} of {self.pairs} images to their mask's size, "
                     f"{self.resized_masks} of {self.pairs} masks to their image's size (nearest)")
        lines.append(f"  snapped: {self.snapped_pixels} pixels ({_share(self.snapped_pixels, self.mask_pixels)} of "
                     f"mask pixels) in {self.snapped_masks} of {self.pairs} masks"
                     + (f" ({self.snapped_note})" if self.snapped_note else ""))
        if self.left_out:
            kinds = ", ".join(f"{k} {n}" for k, n in self.left_out_by_kind().items())
            total = self.pairs + len(self.left_out)
            lines.append(f"  left out: {len(self.left_out)} files ({_share(len(self.left_out), total)} of "
                         f"{total}; {kinds})")
            lines.extend(f"    {x.path}: {x.reason}" for x in sorted(self.left_out, key=lambda x: x.path))
        else:
            lines.append("  left out: none")
        for u in self.unused:
            lines.append(f"  not used: {u['where']} ({u['files']} files): {u['reason']}")
        if self.ignored_files:
            shown = ", ".join(self.ignored_files[:5]) + (" ..." if len(self.ignored_files) > 5 else "")
            lines.append(f"  ignored: {len(self.ignored_files)} files that are not PNG/JPEG/BMP/TIFF ({shown})")
        if self.validation:
            state = "OK" if self.validation.get("ok") else "problems"
            lines.append(f"  validate: {state} ("
                         + ", ".join(f"{s} {r['num_samples']}" for s, r in self.validation["splits"].items())
                         + ")")
        lines.append(f"  summary: {Path(self.out) / IMPORT_FILE}")
        return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole``, with enough digits that a few pixels do not read 0.0%."""
    if not whole:
        return "n/a"
    value = 100 * part / whole
    return f"{value:.1f}%" if value >= 0.1 or part == 0 else f"{value:.2g}%"


# --- pairing the files -----------------------------------------------------------------------------

def _index(files: list[SourceFile], by_split: bool, what: str) -> dict:
    out: dict = {}
    duplicates = []
    for f in files:
        key = (f.split, f.stem) if by_split else f.stem
        if key in out:
            duplicates.append((out[key].rel, f.rel))
        else:
            out[key] = f
    if duplicates:
        listed = "\n".join(f"  {a}  and  {b}" for a, b in duplicates[:_SHOWN])
        more = f"\n  ... and {len(duplicates) - _SHOWN} more" if len(duplicates) > _SHOWN else ""
        raise DatasetError(f"{len(duplicates)} {what} share a stem, so they cannot be paired by stem:\n{listed}{more}\n"
                           "Name one folder or glob per side with --images / --masks (e.g. --images 'images/*.jpg').")
    return out


# --- reading masks ---------------------------------------------------------------------------------

@dataclass
class _MaskScan:
    kind: str                         # grey, index (palette PNG), rgb
    size: tuple[int, int]             # (width, height)
    lossy: bool
    values: np.ndarray | None = None  # distinct grey / index values
    max_spread: int = 0               # rgb: the largest channel difference of a pixel
    colours: np.ndarray | None = None  # rgb / colour mode: distinct packed colours
    colour_counts: np.ndarray | None = None


def _open_mask(path: Path) -> tuple[str, np.ndarray, Image.Image | None]:
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


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _hex(packed: int) -> str:
    return f"#{int(packed):06x}"


def _unpack(packed: np.ndarray) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.int64)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1)


def _scan_mask(path: Path, colour_mode: bool) -> _MaskScan:
    kind, arr, rgb_image = _open_mask(path)
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    size = (arr.shape[1], arr.shape[0])
    scan = _MaskScan(kind, size, lossy)
    if kind == "rgb":
        spread = arr.max(axis=2).astype(np.int16) - arr.min(axis=2)
        scan.max_spread = int(spread.max(initial=0))
        scan.values = np.unique(_grey_of_rgb(arr))
    else:
        scan.values = np.unique(arr)
    if colour_mode or kind == "rgb":
        rgb = _as_rgb(kind, arr, rgb_image)
        scan.colours, scan.colour_counts = np.unique(_pack(rgb), return_counts=True)
    return scan


def _grey_of_rgb(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def _as_rgb(kind: str, arr: np.ndarray, rgb_image: Image.Image | None) -> np.ndarray:
    if kind == "rgb":
        return arr
    if kind == "index":
        return np.asarray(rgb_image)
    grey = np.clip(arr, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _colour_clusters(by_frequency: list[tuple[int, int]], radius: float = 48.0) -> list[tuple[int, int]]:
    """Group the colours found (most frequent first) around the most frequent ones: a colour within
    ``radius`` (RGB distance) of a kept colour counts for it (lossy JPEG noise), any other starts a new
    one. Returns (colour, pixels of its group), most pixels first."""
    centres: list[int] = []
    totals: list[int] = []
    rgb_centres = np.zeros((0, 3), dtype=np.int64)
    for colour, pixels in by_frequency:
        rgb = _unpack(colour)
        if len(centres):
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


def _is_colour(scan: _MaskScan) -> bool:
    return scan.kind == "rgb" and (scan.max_spread > COLOUR_SPREAD or (not scan.lossy and scan.max_spread > 0))


# --- the value map, the classes and the mask plan -------------------------------------------------

def parse_value_map(text: str | None) -> dict:
    """``"255=1,0=ignore"`` -> {255: "1", 0: "ignore"}; colour keys ``#rrggbb`` -> packed ints under
    ("colour", packed). Targets stay text until the classes are known (an id, a class name or ignore)."""
    if not text:
        return {}
    out: dict = {}
    for item in text.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"--value-map item {item!r} must look like VALUE=TARGET, e.g. 255=1 or 0=ignore")
        key, target = (s.strip() for s in item.split("=", 1))
        if key.startswith("#"):
            if len(key) != 7:
                raise ConfigError(f"--value-map colour {key!r} must be written #rrggbb, e.g. #ff0000")
            try:
                out[("colour", int(key[1:], 16))] = target
            except ValueError:
                raise ConfigError(f"--value-map colour {key!r} must be written #rrggbb, e.g. #ff0000") from None
            continue
        try:
            value = int(key)
        except ValueError:
            raise ConfigError(f"--value-map item {item!r}: {key!r} is not a mask value (an integer, or #rrggbb "
                              "for colour masks)") from None
        if value < 0:
            raise ConfigError(f"--value-map item {item!r}: mask values are not negative")
        out[value] = target
    return out


def _resolve_target(target: str, classes: ClassInfo, item: str) -> int:
    if target.lower() == "ignore":
        return classes.ignore_index
    if target in classes.names:
        return classes.names.index(target)
    try:
        value = int(target)
    except ValueError:
        raise ConfigError(f"--value-map {item}: {target!r} is neither a class id, a class name ("
                          f"{', '.join(classes.names)}) nor 'ignore'") from None
    if not (0 <= value < classes.num_classes or value == classes.ignore_index):
        raise ConfigError(f"--value-map {item}: {value} is outside the class ids 0..{classes.num_classes - 1} and "
                          f"the ignore index {classes.ignore_index}")
    return value


def _read_class_file(path: Path) -> tuple[ClassInfo, bool]:
    """The classes of a file and whether it gives an explicit palette."""
    if not path.is_file():
        raise ConfigError(f"--classes {path}: file not found")
    info = layout.read_classes_file(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except (OSError, ValueError):
        raw = None
    return info, isinstance(raw, dict) and bool(raw.get("palette"))


def _background(value: str | None, names: Sequence[str], default: int | None) -> int | None:
    if value is None:
        return default
    if value.lower() == "none":
        return None
    if value in names:
        return list(names).index(value)
    try:
        index = int(value)
    except ValueError:
        raise ConfigError(f"--background {value!r} is not one of the class names ({', '.join(names)}), "
                          "a class id or 'none'") from None
    if not 0 <= index < len(names):
        raise ConfigError(f"--background {index} is not a class id (0..{len(names) - 1})")
    return index


def _make_classes(names: Sequence[str], palette=(), ignore_index: int = IGNORE_INDEX,
                  background: int | None = None) -> ClassInfo:
    try:
        return ClassInfo(names=tuple(names), palette=tuple(palette), ignore_index=ignore_index, background=background)
    except ValueError as exc:
        raise ConfigError(f"classes: {exc}") from None


def _legacy_background(names: Sequence[str]) -> int | None:
    lowered = [n.lower() for n in names]
    return lowered.index("background") if "background" in lowered else None


@dataclass
class _Plan:
    """How every mask is turned into class ids."""

    mask_type: str
    reason: str
    classes: ClassInfo
    threshold: int
    value_map: dict[int, int] = field(default_factory=dict)   # ids: raw value -> class id / ignore
    palette_colours: np.ndarray | None = None                 # colour: (P,) packed colours
    palette_targets: np.ndarray | None = None                 # colour: (P,) class id / ignore of each
    palette_rows: list[dict] = field(default_factory=list)


def _choose_type(options: ImportOptions, scans: list[_MaskScan], value_map: dict) -> tuple[str, str]:
    if options.mask_type != "auto":
        return options.mask_type, "--mask-type"
    colour = [s for s in scans if _is_colour(s)]
    if colour:
        return "colour", f"auto: {len(colour)} of {len(scans)} masks are colour-coded RGB"
    if value_map:
        return "ids", "auto: a value map was given"
    if any(s.kind == "index" for s in scans):
        return "ids", "auto: palette PNGs, whose indices are class ids"
    names = _given_names(options)
    if names is not None and len(names) != 2:
        return "ids", f"auto: {len(names)} class names"
    values = set()
    for s in scans:
        values.update(int(v) for v in s.values)
    lossy = sum(s.lossy for s in scans)
    if lossy:
        return "binary", f"auto: {lossy} lossy JPEG masks, thresholded at {options.threshold}"
    if values <= {0, 1}:
        return "binary", "auto: values 0 and 1 only"
    if values <= {0, 255}:
        return "binary", "auto: values 0 and 255 only"
    return "ids", f"auto: values {_value_list(values)}"


def _value_list(values) -> str:
    values = sorted(values)
    shown = ", ".join(str(v) for v in values[:12])
    return shown + (f" ... ({len(values)} distinct)" if len(values) > 12 else "")


def _given_names(options: ImportOptions) -> tuple[str, ...] | None:
    if options.names is not None:
        return tuple(options.names)
    if options.classes_file is not None:
        return layout.read_classes_file(options.classes_file).names
    return None


def _make_plan(options: ImportOptions, scans: dict[str, _MaskScan], value_map_raw: dict) -> _Plan:
    scan_list = list(scans.values())
    mask_type, reason = _choose_type(options, scan_list, value_map_raw)
    file_info, file_palette = (None, False)
    if options.classes_file is not None:
        file_info, file_palette = _read_class_file(Path(options.classes_file))
    colour_keys = {k: v for k, v in value_map_raw.items() if isinstance(k, tuple)}
    value_keys = {k: v for k, v in value_map_raw.items() if not isinstance(k, tuple)}
    if mask_type == "colour" and value_keys:
        raise ConfigError("colour masks take --value-map keys as colours (#rrggbb=TARGET), not numbers: "
                          + ", ".join(f"{k}={v}" for k, v in value_keys.items()))
    if mask_type != "colour" and colour_keys:
        raise ConfigError(f"--value-map names colours but the masks are read as {mask_type}; "
                          "add --mask-type colour or give numeric values (255=1)")
    if mask_type == "binary" and value_map_raw:
        raise ConfigError("--value-map with --mask-type binary: a value map reads masks as class ids; drop "
                          "--mask-type binary (e.g. --value-map 255=1 turns 0/255 masks into ids 0/1)")

    if mask_type == "binary":
        if file_info is not None:
            classes = file_info
        else:
            names = options.names or BINARY_NAMES
            classes = _make_classes(names, background=_background(options.background, names, 0))
        if classes.num_classes != 2:
            raise ConfigError(f"binary masks give 2 classes, but {classes.num_classes} class names were given "
                              f"({', '.join(classes.names)}); use --mask-type ids or colour for more")
        if file_info is not None and options.background is not None:
            classes = _make_classes(classes.names, classes.palette, classes.ignore_index,
                                    _background(options.background, classes.names, classes.background))
        return _Plan("binary", reason, classes, options.threshold)

    if mask_type == "ids":
        for s in scan_list:
            if s.kind == "rgb" and _is_colour(s):
                raise ConfigError("colour-coded RGB masks cannot be read as class ids: use --mask-type colour "
                                  "(or auto)")
        if file_info is None and options.names is None:
            values = set()
            for s in scan_list:
                values.update(int(v) for v in s.values)
            raise ConfigError(f"masks of class ids need the class names: the masks hold the values "
                              f"{_value_list(values)}. Give --names NAME0,NAME1,... (one per id, in id order; "
                              f"{IGNORE_INDEX} is the ignore index) or --classes FILE, and --value-map for values "
                              "that are not ids (e.g. 255=1 or 0=ignore)")
        if file_info is not None:
            classes = file_info
            if options.background is not None:
                classes = _make_classes(classes.names, classes.palette, classes.ignore_index,
                                        _background(options.background, classes.names, classes.background))
        else:
            names = options.names
            classes = _make_classes(names, background=_background(options.background, names,
                                                                  _legacy_background(names)))
        vmap = {k: _resolve_target(t, classes, f"{k}={t}") for k, t in value_keys.items()}
        return _Plan("ids", reason, classes, options.threshold, value_map=vmap)

    # colour
    counts: Counter[int] = Counter()
    for s in scan_list:
        counts.update(dict(zip(s.colours.tolist(), s.colour_counts.tolist(), strict=True)))
    total = sum(counts.values())
    names = file_info.names if file_info is not None else options.names
    if file_info is not None and file_palette:
        palette = [c[0] << 16 | c[1] << 8 | c[2] for c in file_info.palette]
        classes = file_info
        how = "palette of the classes file"
    else:
        mapped = {k[1] for k in colour_keys}
        clusters = _colour_clusters([(c, n) for c, n in counts.most_common() if c not in mapped])
        found = [(c, n) for c, n in clusters if n >= options.min_colour_fraction * total][:256]
        if names is None:
            listed = ", ".join(f"{_hex(c)} ({100 * n / max(total, 1):.1f}%)" for c, n in sorted(found))
            raise ConfigError(f"colour masks need the class names: {len(found)} colours cover at least "
                              f"{100 * options.min_colour_fraction:g}% of the mask pixels: {listed}. Give --names "
                              "with one name per colour in this order (colours sorted by value), or --classes FILE "
                              "with names and a palette")
        if len(clusters) < len(names):
            raise ConfigError(f"{len(names)} class names but only {len(clusters)} distinct colours in the masks ("
                              + ", ".join(_hex(c) for c, _ in clusters) + "); give a --classes FILE with the palette")
        palette = sorted(c for c, _ in clusters[:len(names)])
        rgb = [tuple(int(x) for x in _unpack(c)) for c in palette]
        if file_info is not None:
            classes = _make_classes(file_info.names, rgb, file_info.ignore_index, file_info.background)
        else:
            classes = _make_classes(names, rgb, background=_legacy_background(names))
        how = "distinct colours found, sorted by value"
    if options.background is not None:
        classes = _make_classes(classes.names, classes.palette, classes.ignore_index,
                                _background(options.background, classes.names, classes.background))
    colours = list(palette)
    targets = list(range(len(palette)))
    for (_, packed), target in colour_keys.items():
        colours.append(packed)
        targets.append(_resolve_target(target, classes, f"{_hex(packed)}={target}"))
    rows = [{"class": classes.names[t] if t < classes.num_classes else "ignore", "colour": _hex(c),
             "pixels": int(counts.get(c, 0))} for c, t in zip(colours, targets, strict=True)]
    return _Plan("colour", f"{reason}; palette: {how}", classes, options.threshold,
                 palette_colours=np.asarray(colours, dtype=np.int64), palette_targets=np.asarray(targets),
                 palette_rows=rows)


@dataclass
class _Converted:
    ids: np.ndarray     # (H, W) uint8 class ids / ignore (valid only when bad is empty)
    snapped: int = 0
    mapped: int = 0     # pixels the value map rewrote
    bad: dict[int, int] = field(default_factory=dict)  # values outside the label space -> pixels


def _convert(path: Path, plan: _Plan) -> _Converted:
    kind, arr, rgb_image = _open_mask(path)
    classes = plan.classes
    if plan.mask_type == "colour":
        rgb = _as_rgb(kind, arr, rgb_image)
        values, inverse, counts = np.unique(_pack(rgb), return_inverse=True, return_counts=True)
        vr, pr = _unpack(values), _unpack(plan.palette_colours)
        dist = ((vr[:, None, :] - pr[None, :, :]) ** 2).sum(axis=2)
        nearest = dist.argmin(axis=1)
        exact = dist[np.arange(len(values)), nearest] == 0
        ids = plan.palette_targets[nearest].astype(np.uint8)[inverse.reshape(-1)].reshape(rgb.shape[:2])
        return _Converted(ids, snapped=int(counts[~exact].sum()))
    grey = _grey_of_rgb(arr) if kind == "rgb" else arr
    if plan.mask_type == "binary":
        if grey.max(initial=0) <= 1:
            fg, snapped = grey >= 1, 0
        else:
            fg = grey >= plan.threshold
            snapped = int(np.count_nonzero((grey != 0) & (grey != 255)))
        return _Converted(fg.astype(np.uint8), snapped=snapped)
    values, inverse = np.unique(grey, return_inverse=True)
    values = values.astype(np.int64)
    mapped_values = np.array([plan.value_map.get(int(v), int(v)) for v in values], dtype=np.int64)
    counts = np.bincount(inverse.reshape(-1), minlength=len(values))
    rewritten = int(counts[mapped_values != values].sum())
    ok = ((mapped_values >= 0) & (mapped_values < classes.num_classes)) | (mapped_values == classes.ignore_index)
    bad = {int(v): int(c) for v, c, good in zip(values, counts, ok, strict=True) if not good}
    ids = np.where(ok, mapped_values, 0).astype(np.uint8)[inverse.reshape(-1)].reshape(grey.shape)
    return _Converted(ids, mapped=rewritten, bad=bad)


def _bad_values(scan: _MaskScan, plan: _Plan) -> dict[int, int]:
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

def _read_image(path: Path) -> tuple[np.ndarray | None, str | None, str]:
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


def _aspect_gap(a: tuple[int, int], b: tuple[int, int]) -> float:
    return abs((a[0] / a[1]) / (b[0] / b[1]) - 1.0)


# --- splits -------------------------------------------------------------------------------------------

def _assign_splits(pairs: list[tuple[str | None, str]], val_fraction: float, seed: int) -> tuple[dict, str]:
    """{(source split, stem): output split} and how the splits came about: the source's own train and val
    folders when it has both; val carved out of train when it has train only (other split folders, e.g.
    test, are kept); else train and val made from every pair."""
    have = {s for s, _ in pairs}
    if None not in have and {"train", "val"} <= have:
        return {p: p[0] for p in pairs}, "splits from the source folders"
    if None not in have and "train" in have:
        pool = sorted(p for p in pairs if p[0] == "train")
        out = {p: p[0] for p in pairs}
        how = f"val made from {100 * val_fraction:g}% of the source's train split, seed {seed}"
    else:
        if have - {None}:
            log.warning("the source's split folders (%s) do not give a train split for every pair: train and val "
                        "are made from --val-fraction instead", ", ".join(sorted(have - {None})))
        pool = sorted(pairs, key=lambda p: (p[0] or "", p[1]))
        out = {}
        how = f"splits made: {100 * val_fraction:g}% val, seed {seed}"
    n_val = int(round(val_fraction * len(pool)))
    if val_fraction > 0 and len(pool) >= 2:
        n_val = min(max(n_val, 1), len(pool) - 1)
    order = np.random.default_rng(seed).permutation(len(pool))
    val = {pool[i] for i in order[:n_val]}
    for p in pool:
        out[p] = "val" if p in val else "train"
    return out, how


# --- the import ------------------------------------------------------------------------------------

def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    from jodiffusion.utils.ownership import check_replaceable, is_blank, read_owner

    if out == src or src in out.parents:
        raise DatasetError(f"--out {out} lies inside the source folder {src}, which import never modifies; "
                           "choose an output folder outside it")
    if out in src.parents:
        raise DatasetError(f"--out {out} holds the source folder {src}; choose an output folder beside it")
    if not out.exists():
        return
    if not out.is_dir():
        raise DatasetError(f"--out {out} is a file; choose a new folder")
    if is_blank(out):  # empty, or only temporary files: nothing finished to lose
        return
    if not overwrite:
        owner = read_owner(out)
        hint = (" (an earlier `jodiffusion import` wrote it: add --overwrite to replace it)"
                if owner == IMPORT_COMMAND else "")
        raise DatasetError(f"--out {out} is not empty{hint}; choose a new folder. Nothing was written")
    check_replaceable(out, IMPORT_COMMAND, IMPORT_ENTRIES)


def import_folder(src: str | os.PathLike, out: str | os.PathLike, options: ImportOptions | None = None, *,
                  overwrite: bool = False, progress: bool = True) -> ImportSummary:
    """Read the segmentation folder ``src`` as it is and write it to ``out`` in the project's layout
    (see the module doc); returns the summary, which is also ``out/import.json``."""

    options = options or ImportOptions()
    src_path = Path(src).expanduser()
    if not src_path.is_dir():
        state = "is not a folder" if src_path.exists() else "does not exist"
        raise DatasetError(f"source {src_path} {state}: give the folder that holds the images and masks")
    src_path = src_path.resolve()
    out_path = Path(out).expanduser().absolute()
    out_path = out_path.parent.resolve() / out_path.name
    _check_out(src_path, out_path, overwrite)
    value_map_raw = parse_value_map(options.value_map)

    found = find_sides(src_path, options.images, options.masks)
    images_at, image_files, image_others = found.images.where, found.images.files, found.images.others
    masks_at, mask_files, mask_others = found.masks.where, found.masks.files, found.masks.others
    image_set = {f.path for f in image_files}
    overlap = [f.rel for f in mask_files if f.path in image_set]
    if overlap:
        raise DatasetError(f"--images and --masks both name {overlap[0]} (and {len(overlap) - 1} more); give "
                           "each its own folder or glob, e.g. --images 'data/*.jpg' --masks 'data/*.png'")
    by_split = all(f.split for f in image_files) and all(f.split for f in mask_files)
    images = _index(image_files, by_split, "images")
    masks = _index(mask_files, by_split, "masks")
    left_out: list[LeftOut] = []
    for key in sorted(images.keys() - masks.keys(), key=str):
        f = images[key]
        left_out.append(LeftOut(f.rel, "no-mask", f"no mask with the stem '{f.stem}' in {masks_at}"))
    for key in sorted(masks.keys() - images.keys(), key=str):
        f = masks[key]
        left_out.append(LeftOut(f.rel, "no-image", f"no image with the stem '{f.stem}' in {images_at}"))
    keys = sorted(images.keys() & masks.keys(), key=str)

    colour_forced = options.mask_type == "colour"
    scans: dict = {}
    for key in progress_bar(keys, desc="import: scan masks", unit="mask", disable=not progress, leave=False):
        try:
            scans[key] = _scan_mask(masks[key].path, colour_forced)
        except Exception as exc:
            text = str(exc).strip() or type(exc).__name__
            left_out.append(LeftOut(masks[key].rel, "unreadable-mask", f"does not decode as a mask ({text})"))
    if not scans:
        raise DatasetError(f"{src_path}: no image-mask pairs to import ({len(left_out)} files left out: "
                           + "; ".join(f"{x.path}: {x.reason}" for x in left_out[:5]) + ")")
    if options.mask_type == "auto" and any(_is_colour(s) for s in scans.values()):
        for key, s in list(scans.items()):  # colour counts of the grey / palette masks too
            if s.colours is None:
                scans[key] = _scan_mask(masks[key].path, True)
    plan = _make_plan(options, scans, value_map_raw)
    bad = {masks[k].rel: b for k, s in scans.items() if (b := _bad_values(s, plan))}
    if bad:
        _raise_bad_values(bad, plan.classes)

    pair_keys = [k for k in keys if k in scans]
    split_of_pair = {}
    for k in pair_keys:
        split_of_pair[k] = images[k].split or masks[k].split
    assignment, splits_from = _assign_splits([(split_of_pair[k], images[k].stem) for k in pair_keys],
                                             options.val_fraction, options.seed)

    copy_images = _can_copy(pair_keys, images, scans, options)
    tmp = out_path.parent / f".{out_path.name}.import-{uuid.uuid4().hex[:8]}.tmp"
    summary = ImportSummary(
        src=str(src_path), out=str(out_path), images_from=found.images.described, masks_from=found.masks.described,
        found_by=found.how, unused=[u.to_dict() for u in found.unused],
        mask_type=plan.mask_type, mask_type_reason=plan.reason, classes=plan.classes.to_dict(), splits={},
        splits_from=splits_from, palette=plan.palette_rows, ignored_files=sorted(image_others + mask_others),
        options={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()})
    if plan.mask_type == "binary":
        summary.snapped_note = f"values other than 0 and 255, set by the threshold {plan.threshold}"
    elif plan.mask_type == "colour":
        summary.snapped_note = "colours not in the palette, set to the nearest palette colour"
    try:
        from jodiffusion.utils.ownership import write_owner

        tmp.mkdir(parents=True)
        write_owner(tmp, IMPORT_COMMAND)
        written: dict[str, list[str]] = {}
        for key in progress_bar(pair_keys, desc="import: write pairs", unit="pair", disable=not progress, leave=False):
            split = assignment[(split_of_pair[key], images[key].stem)]
            if _write_pair(tmp, split, images[key], masks[key], plan, options, summary, left_out, copy_images):
                written.setdefault(split, []).append(images[key].stem)
        empty = [s for s in ("train", "val") if s in set(assignment.values()) and not written.get(s)]
        if not written or empty:
            raise DatasetError(f"{src_path}: no pairs left in the {' and '.join(empty) or 'train'} split after "
                               f"leaving out {len(left_out)} files:\n"
                               + "\n".join(f"  {x.path}: {x.reason}" for x in left_out[:_SHOWN]))
        for split, stems in sorted(written.items()):
            write_text_atomic(tmp / layout.SPLITS_DIR / f"{split}.txt", "".join(s + "\n" for s in sorted(stems)))
        layout.write_classes(tmp, plan.classes)
        summary.splits = {s: len(written[s]) for s in sorted(written, key=_split_order)}
        summary.pairs = sum(summary.splits.values())
        summary.left_out = sorted(left_out, key=lambda x: x.path)
        summary.validation = _validate(tmp, list(summary.splits))
        write_json_atomic(tmp / IMPORT_FILE, summary.to_dict())
        _move_into_place(tmp, out_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _split_order(split: str) -> tuple[int, str]:
    order = {"train": 0, "val": 1, "test": 2}
    return order.get(split, 3), split


def _raise_bad_values(bad: dict[str, dict[int, int]], classes: ClassInfo) -> None:
    values = sorted({v for b in bad.values() for v in b})
    files = sorted(bad)
    listed = "\n".join(f"  {f}: {', '.join(str(v) for v in sorted(bad[f]))}" for f in files[:_SHOWN])
    more = f"\n  ... and {len(files) - _SHOWN} more" if len(files) > _SHOWN else ""
    raise DatasetError(
        f"{len(files)} masks hold values outside the class ids 0..{classes.num_classes - 1} and the ignore index "
        f"{classes.ignore_index} ({', '.join(classes.names)}): {_value_list(values)}\n{listed}{more}\n"
        "Nothing was written. Map them with --value-map (e.g. --value-map "
        f"{values[0]}=ignore), or give more class names")


def _can_copy(keys: list, images: dict, scans: dict, options: ImportOptions) -> bool:
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
        if size != scans[k].size and _aspect_gap(size, scans[k].size) <= options.aspect_tolerance:
            return False
    return True


def _write_pair(tmp: Path, split: str, image: SourceFile, mask: SourceFile, plan: _Plan, options: ImportOptions,
                summary: ImportSummary, left_out: list[LeftOut], copy_images: bool) -> bool:
    rgb, kind, reason = _read_image(image.path)
    if rgb is None:
        left_out.append(LeftOut(image.rel, kind, reason))
        return False
    try:
        converted = _convert(mask.path, plan)
    except Exception as exc:
        text = str(exc).strip() or type(exc).__name__
        left_out.append(LeftOut(mask.rel, "unreadable-mask", f"does not decode as a mask ({text})"))
        return False
    ids = converted.ids
    image_size, mask_size = (rgb.shape[1], rgb.shape[0]), (ids.shape[1], ids.shape[0])
    resized_image = False
    if image_size != mask_size:
        sizes = f"image {image_size[0]}x{image_size[1]}, mask {mask_size[0]}x{mask_size[1]} ({mask.rel})"
        gap = _aspect_gap(image_size, mask_size)
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
        target = tmp / layout.IMAGES_DIR / split / f"{image.stem}{'.jpg' if suffix == '.jpeg' else suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image.path, target)
        summary.copied_images += 1
    else:
        layout.save_image_png(np.ascontiguousarray(rgb), tmp / layout.IMAGES_DIR / split / f"{image.stem}.png")
    layout.save_mask_png(ids, tmp / layout.MASKS_DIR / split / f"{image.stem}.png", plan.classes)
    summary.mask_pixels += int(ids.size)
    summary.snapped_pixels += converted.snapped
    summary.snapped_masks += int(converted.snapped > 0)
    summary.value_mapped_pixels += converted.mapped
    return True


def _validate(root: Path, splits: list[str]) -> dict:
    from jodiffusion.data.readers.folder import read_folder
    from jodiffusion.data.validate import validate_dataset

    results = {}
    for split in splits:
        report = validate_dataset(read_folder(root, split), progress=False, workers=1)
        if not report.ok:
            raise DatasetError("the imported folder does not validate (a bug of `jodiffusion import`; nothing was "
                               "written):\n" + report.format())
        results[split] = {"ok": True, "num_samples": report.num_samples, "notes": len(report.notes)}
    return {"ok": True, "splits": results}


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished temporary folder onto ``out`` (an empty folder, or an earlier import's)."""
    from jodiffusion.utils.ownership import is_blank

    if out.is_dir() and is_blank(out):
        shutil.rmtree(out)  # empty, or holding only temporary files: nothing finished to lose
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:8]}.tmp"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["IMPORT_FILE", "ImportOptions", "ImportSummary", "LeftOut", "import_folder", "parse_value_map"]
