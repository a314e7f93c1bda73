"""Which files of a downloaded folder are the images and which the masks (``jodiffusion import``).

Three ways, tried in this order:

1. ``--images`` / ``--masks``: a folder or glob the user names (both, or one: the other is then found
   by content below, among the files outside it).
2. Folder names: the first of ``images/``, ``JPEGImages/``, ... and of ``masks/``, ``labels/``,
   ``SegmentationClass/``, ... directly in SRC.
3. Content, when no name matches (``rgb/`` + ``figure_ground/``, Cityscapes' ``leftImg8bit/`` +
   ``gtFine/``, masks beside their images as ``0001.jpg`` + ``0001_mask.png``). Every image file under
   SRC belongs to a *family*: its folder (up to a split-named folder such as ``train/``, below which
   city or scene sub-folders are part of the same family), its extension, and its name *tag*, the
   trailing words shared by many files there (``_leftImg8bit``, ``_gtFine_labelIds``, ``_mask``;
   numbers never are). What is left of the name is the pairing key, after the case or tile folders
   (``P1/``, ``Tile 1/``: sibling folders each holding images with their masks, written ``*`` in the
   family's folder) and the sub-folders below a split folder. A few files of each family are
   opened: the masks are the family whose files are single-channel or palette images with few
   distinct values (any small set: {0, 255}, {1, 2, 3}, {0..20, 255}; lossy JPEG noise allowed), the
   images a family of pictures sharing the most keys with it. Colour-coded RGB masks count only when
   no single-channel family pairs. Ties go to the folder names above (``SegmentationClass`` over
   ``SegmentationObject``), then to colour pictures over grey ones.

Every family that holds images but was not used is named with the reason (``UnusedFamily``), so a
folder is never left out without a word.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from jodiffusion.data.importer.names import SPLIT_ALIASES, group_dirs, key_and_tag, name_tags, place
from jodiffusion.errors import DatasetError

SOURCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IMAGE_FOLDERS = ("images", "image", "imgs", "img", "JPEGImages", "photos", "Images")
MASK_FOLDERS = ("masks", "mask", "labels", "label", "annotations", "SegmentationClass", "gt", "ground_truth",
                "groundtruth", "Masks", "Labels")
# Words in a folder or tag that hint at masks (lower case, matched inside words: "gtFine_labelIds"); a family
# containing more of them is the likelier one ("segmentationclass" and "seg" over "seg" alone).
MASK_HINTS = ("segmentationclass", "label", "mask", "annot", "ground", "gt", "figure_ground", "seg")
IMAGE_HINTS = ("jpegimages", "image", "img", "photo", "rgb", "leftimg8bit")
SAMPLED_FILES = 5         # files opened per family to tell masks from pictures
FEW_VALUES = 32           # a mask's most frequent values (or colours) ...
FEW_VALUES_COVER = 0.97   # ... cover at least this share of its pixels; a picture's do not
GREY_SPREAD = 24          # an RGB file whose channels differ less than this (99% of pixels) is grey


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str                 # relative to SRC, for messages
    stem: str                # the file name without extension
    split: str | None        # from a split-named folder
    key: tuple[str, ...]     # the pairing key: the folders an image and its mask must share (case or tile
                             # folders, sub-folders below a split folder), then the name without its tag

    @property
    def name_key(self) -> str:
        return self.key[-1]


@dataclass
class Side:
    """The images or the masks: where they were found, the files, and the other files there."""

    where: str                 # for messages: a folder, a glob, or a family ("gtFine/**/*_gtFine_labelIds.png")
    files: list[SourceFile]
    others: list[str]          # files there that are not PNG/JPEG/BMP/TIFF

    @property
    def described(self) -> str:
        counts = Counter(f.path.suffix.lower().lstrip(".").replace("jpeg", "jpg").upper() for f in self.files)
        return f"{self.where} ({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))})"


@dataclass(frozen=True)
class UnusedFamily:
    where: str    # e.g. "gray/*.jpg" or "gtFine/**/*_gtFine_color.png"
    files: int
    reason: str

    def to_dict(self) -> dict:
        return {"where": self.where, "files": self.files, "reason": self.reason}


@dataclass
class Found:
    images: Side
    masks: Side
    how: str                          # "--images/--masks", "folder names" or "content"
    unused: list[UnusedFamily]


def find_sides(src: Path, images: str | None, masks: str | None) -> Found:
    """The image and mask files of ``src`` (see the module doc)."""
    named_images = images or _named(src, IMAGE_FOLDERS)
    named_masks = masks or _named(src, MASK_FOLDERS)
    if named_images and named_masks:
        image_side, mask_side = _apart(find_files(src, named_images, "images", "--images"),
                                       find_files(src, named_masks, "masks", "--masks"))
        how = "--images/--masks" if images and masks else "folder names" if not (images or masks) else \
            "--images/--masks and folder names"
        used = {f.path for f in image_side.files} | {f.path for f in mask_side.files}
        unused = [UnusedFamily(fam.where, len(fam.files), f"not in the folders used ({how})")
                  for fam in _families(src, used, tagged=False)]
        return Found(image_side, mask_side, how, unused)
    fixed_images = find_files(src, images, "images", "--images") if images else None
    fixed_masks = find_files(src, masks, "masks", "--masks") if masks else None
    return _by_content(src, fixed_images, fixed_masks)


def _apart(images: Side, masks: Side) -> tuple[Side, Side]:
    """The two sides without the files both name: a glob inside the other (``--images '*/*.tif' --masks
    '*/*_mask.tif'``) gives up the files the narrower one names; any other overlap is refused."""
    image_paths, mask_paths = {f.path for f in images.files}, {f.path for f in masks.files}
    both = image_paths & mask_paths
    if not both:
        return images, masks
    if both == mask_paths and image_paths != mask_paths:
        kept = [f for f in images.files if f.path not in both]
        return Side(images.where, _drop_common_folders(kept), images.others), masks
    if both == image_paths and image_paths != mask_paths:
        kept = [f for f in masks.files if f.path not in both]
        return images, Side(masks.where, _drop_common_folders(kept), masks.others)
    shown = sorted(f.rel for f in masks.files if f.path in both)
    raise DatasetError(f"--images and --masks both name {shown[0]} (and {len(shown) - 1} more), and neither is "
                       "inside the other; give each its own folder or glob, e.g. --images 'data/*.jpg' --masks "
                       "'data/*.png', or --images '*/*.tif' --masks '*/*_mask.tif'")


def _named(src: Path, candidates: Sequence[str]) -> str | None:
    return next((name for name in candidates if (src / name).is_dir()), None)


# --- a folder or glob the user names -----------------------------------------------------------

def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def find_files(src: Path, spec: str, what: str, flag: str) -> Side:
    """The image-suffixed files of a folder or glob under SRC; the split from a split-named first
    sub-folder."""
    if _has_magic(spec):
        parts = Path(spec).parts
        fixed = []
        for part in parts:
            if _has_magic(part):
                break
            fixed.append(part)
        base = src.joinpath(*fixed) if fixed else src
        pattern = str(Path(*parts[len(fixed):]))
        paths = sorted(p for p in base.glob(pattern) if p.is_file()) if base.is_dir() else []
        where = f"{src / spec} (glob)"
    else:
        base = src / spec
        if not base.is_dir():
            state = "is not a folder" if base.exists() else "does not exist"
            raise DatasetError(f"{base} {state}: {flag} names the folder (or a glob such as '*.jpg') of the {what}, "
                               f"relative to {src}")
        paths = sorted(p for p in base.rglob("*") if p.is_file())
        where = str(base)
    files, others = [], []
    for path in paths:
        rel_base = path.relative_to(base)
        if any(part.startswith(".") for part in rel_base.parts):
            continue
        rel = rel_to(path, src)
        if path.suffix.lower() not in SOURCE_SUFFIXES:
            others.append(rel)
            continue
        dirs = rel_base.parts[:-1]
        split = SPLIT_ALIASES.get(dirs[0].lower()) if dirs else None
        files.append(SourceFile(path, rel, path.stem, split, (*(dirs[1:] if split else dirs), path.stem)))
    if not files:
        raise DatasetError(f"{where}: no {what} found ({', '.join(SOURCE_SUFFIXES)}); name them with {flag}")
    return Side(where, _drop_common_folders(files), others)


def _drop_common_folders(files: list[SourceFile]) -> list[SourceFile]:
    """Sub-folders that every file of a side sits in (``annotations/trimaps/``) say nothing about which
    image a mask belongs to: they leave the keys, the folders that differ (case or tile folders) stay."""
    common = 0
    while all(len(f.key) > common + 1 for f in files) and len({f.key[common] for f in files}) == 1:
        common += 1
    return [SourceFile(f.path, f.rel, f.stem, f.split, f.key[common:]) for f in files] if common else files


def rel_to(path: Path, src: Path) -> str:
    try:
        return path.relative_to(src).as_posix()
    except ValueError:
        return str(path)


# --- families ---------------------------------------------------------------------------------------

@dataclass
class _Family:
    where: str
    base: str                  # folder (relative to SRC) above any split folder
    tag: str
    files: list[SourceFile]    # stems are the pairing keys
    kind: str = ""             # ids, colour, photo, grey-photo, wide, unreadable
    note: str = ""             # what the sampled files look like, for messages

    def keys(self, by_split: bool) -> set:
        return {(f.split, f.key) if by_split else f.key for f in self.files}

    @property
    def has_splits(self) -> bool:
        return all(f.split for f in self.files)

    def hint(self, words: Sequence[str]) -> int:
        """How many of ``words`` the family's folder and tag contain: ``SegmentationClass`` (segmentationclass,
        seg) hints at class masks more strongly than ``SegmentationObject`` (seg)."""
        text = (self.base + "/" + self.tag).lower()
        return sum(w in text for w in words)


def _families(src: Path, exclude: set[Path], tagged: bool) -> list[_Family]:
    """The families of the image files under ``src``; ``tagged``: split off name tags (else a family is a
    folder and an extension, and the key the whole name)."""
    paths = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in SOURCE_SUFFIXES or not path.is_file():
            continue
        paths.append((path, rel))
    groups = group_dirs([rel.parts for _, rel in paths])
    by_base: dict[str, list[tuple[Path, str | None, bool, tuple[str, ...]]]] = defaultdict(list)
    for path, rel in paths:
        if path in exclude:
            continue
        base, split, deep, folders = place(rel.parts[:-1], groups)
        by_base[base].append((path, split, deep, folders))
    families = []
    for base, entries in by_base.items():
        tags = name_tags([p.stem for p, _, _, _ in entries]) if tagged else set()
        groups_of: dict[tuple[str, str], list[tuple[SourceFile, bool]]] = defaultdict(list)
        for path, split, deep, folders in entries:
            key, tag = key_and_tag(path.stem, tags)
            ext = path.suffix.lower().replace(".jpeg", ".jpg")
            source = SourceFile(path, rel_to(path, src), path.stem, split, (*folders, key))
            groups_of[(tag, ext)].append((source, deep))
        for (tag, ext), members in sorted(groups_of.items()):
            folder = (base + "/") if base else ""
            deep = "**/" if any(d for _, d in members) else ""
            families.append(_Family(f"{folder}{deep}*{tag}{ext}", base, tag, [f for f, _ in members]))
    return families


def _family_of(side: Side, tagged: bool) -> _Family:
    """A side the user named, as one family (with ``tagged``, its names' tags stripped)."""
    return _Family(side.where, side.where, "", retag(side.files) if tagged else side.files)


def retag(files: list[SourceFile]) -> list[SourceFile]:
    """The files with their name tags (``_mask``, ``_L``) split off their keys."""
    tags = name_tags([f.name_key for f in files])
    return [SourceFile(f.path, f.rel, f.stem, f.split, (*f.key[:-1], key_and_tag(f.name_key, tags)[0]))
            for f in files]


# --- what a family holds ----------------------------------------------------------------------------

def _coverage(values: np.ndarray) -> float:
    """Share of the pixels taken by the ``FEW_VALUES`` most frequent values."""
    _, counts = np.unique(values, return_counts=True)
    top = np.sort(counts)[::-1][:FEW_VALUES]
    return float(top.sum()) / max(values.size, 1)


def _file_kind(path: Path) -> tuple[str, str]:
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


def _classify(family: _Family) -> None:
    files = family.files
    picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(SAMPLED_FILES, len(files))).round()]
    kinds = [_file_kind(f.path) for f in picks]
    family.kind, _ = Counter(k for k, _ in kinds).most_common(1)[0]
    family.note = next(note for k, note in kinds if k == family.kind)


# --- choosing ---------------------------------------------------------------------------------------

def _shared(a: _Family, b: _Family) -> int:
    by_split = a.has_splits and b.has_splits
    return len(a.keys(by_split) & b.keys(by_split))


def _by_content(src: Path, fixed_images: Side | None, fixed_masks: Side | None) -> Found:
    """Whole names first (``rgb/0001.jpg`` + ``figure_ground/0001.jpg``); names with their tags split
    off (``_leftImg8bit`` / ``_gtFine_labelIds``, ``_mask``) only when whole names pair fewer masks."""
    exclude = {f.path for side in (fixed_images, fixed_masks) if side for f in side.files}
    tries = []
    for tagged in (False, True):
        found = _families(src, exclude, tagged)
        for family in found:
            _classify(family)
        images = [_family_of(fixed_images, tagged)] if fixed_images else \
            [f for f in found if f.kind in ("photo", "grey-photo")]
        masks = [_family_of(fixed_masks, tagged)] if fixed_masks else [f for f in found if f.kind in ("ids", "colour")]
        tries.append((_best_pair(images, masks), found))
        best = tries[-1][0]
        if best is not None and best[0][2] >= len(best[2].files) / 2:
            break
    chosen = max((t for t in tries if t[0] is not None), key=lambda t: t[0][0], default=None)
    if chosen is None:
        raise DatasetError(_nothing_pairs(src, tries[-1][1], fixed_images, fixed_masks))
    (_, image_family, mask_family), found = chosen
    image_side = Side(fixed_images.where if fixed_images else image_family.where, image_family.files,
                      fixed_images.others if fixed_images else [])
    mask_side = Side(fixed_masks.where if fixed_masks else mask_family.where, mask_family.files,
                     fixed_masks.others if fixed_masks else [])
    unused = [UnusedFamily(f.where, len(f.files), _why_unused(f, image_family, mask_family))
              for f in found if f is not image_family and f is not mask_family]
    return Found(image_side, mask_side, "content", unused)


def _best_pair(images: list[_Family], masks: list[_Family]):
    """(rank, image family, mask family) of the best pairing, or None: single-channel masks before colour
    ones, then names hinting at masks, then the most shared names, then colour pictures before grey."""
    best = None
    for m in masks:
        for i in images:
            shared = _shared(i, m)
            if i is m or not shared:
                continue
            rank = (m.kind != "colour", m.hint(MASK_HINTS), shared, i.kind == "photo", i.hint(IMAGE_HINTS))
            if best is None or rank > best[0]:
                best = (rank, i, m)
    return best


def _why_unused(f: _Family, images: _Family, masks: _Family) -> str:
    if f.kind == "unreadable":
        return f"does not decode as images ({f.note})"
    if f.kind == "wide":
        return f.note
    shared_images, shared_masks = _shared(f, images), _shared(f, masks)
    if not (shared_images or shared_masks):
        return f"{f.note}; no file name shared with the images ({images.where}) or masks ({masks.where})"
    if f.kind in ("ids", "colour"):
        if not shared_images:
            return (f"masks ({f.note}) of other images: no file name shared with the images ({images.where}); "
                    "name them with --images / --masks to import them")
        chosen = "single-channel" if masks.kind == "ids" and f.kind == "colour" else "named as masks" \
            if masks.hint(MASK_HINTS) > f.hint(MASK_HINTS) else "pairs more images" \
            if _shared(masks, images) > shared_images else "first found"
        return (f"also masks of the same images ({shared_images} names shared; {f.note}); {masks.where} was used "
                f"({chosen}); name it with --masks to use it instead")
    if not shared_masks:
        return (f"pictures ({f.note}) sharing {shared_images} file names with the images used, none with the masks; "
                "a copy or another view of them")
    if f.kind == "grey-photo" and images.kind == "photo":
        return f"grey copies of the pictures in {images.where} ({f.note}); the colour ones were used"
    return (f"pictures ({f.note}) with {shared_masks} file names of the masks, as {images.where} has "
            f"{_shared(images, masks)}; name it with --images to use it instead")


def _nothing_pairs(src: Path, found: list[_Family], fixed_images: Side | None, fixed_masks: Side | None) -> str:
    listed = "\n".join(f"  {f.where}: {len(f.files)} files, {f.note}" for f in found[:20]) or "  no image files"
    given = "".join(f"\n  given: {side.where} ({len(side.files)} files)" for side in (fixed_images, fixed_masks)
                    if side)
    return (f"{src}: could not tell the images from the masks. No folder is named like images "
            f"({', '.join(IMAGE_FOLDERS[:4])}, ...) or masks ({', '.join(MASK_FOLDERS[:4])}, ...), and no family "
            f"of single-channel or palette files with few values shares file names with a family of pictures. "
            f"Found:\n{listed}{given}\nName them with --images FOLDER_OR_GLOB --masks FOLDER_OR_GLOB "
            f"(relative to {src}).")


__all__ = ["Found", "IMAGE_FOLDERS", "MASK_FOLDERS", "SOURCE_SUFFIXES", "SPLIT_ALIASES", "Side", "SourceFile",
           "UnusedFamily", "find_files", "find_sides", "rel_to", "retag"]
