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
folder is never left out without a word. The files a folder or glob names: ``source_files.py``; the
families and what their files hold: ``families.py`` and ``file_kind.py``; this module chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jodiffusion.data.importer.families import Family, classify, family_of, list_families
from jodiffusion.data.importer.source_files import Side, drop_common_folders, find_files
from jodiffusion.errors import DatasetError

IMAGE_FOLDERS = ("images", "image", "imgs", "img", "JPEGImages", "photos", "Images")
MASK_FOLDERS = ("masks", "mask", "labels", "label", "annotations", "SegmentationClass", "gt", "ground_truth",
                "groundtruth", "Masks", "Labels")
# Words in a folder or tag that hint at masks (lower case, matched inside words: "gtFine_labelIds"); a family
# containing more of them is the likelier one ("segmentationclass" and "seg" over "seg" alone).
MASK_HINTS = ("segmentationclass", "label", "mask", "annot", "ground", "gt", "figure_ground", "seg")
IMAGE_HINTS = ("jpegimages", "image", "img", "photo", "rgb", "leftimg8bit")


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
                  for fam in list_families(src, used, tagged=False)]
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
        return Side(images.where, drop_common_folders(kept), images.others), masks
    if both == image_paths and image_paths != mask_paths:
        kept = [f for f in masks.files if f.path not in both]
        return images, Side(masks.where, drop_common_folders(kept), masks.others)
    shown = sorted(f.rel for f in masks.files if f.path in both)
    raise DatasetError(f"--images and --masks both name {shown[0]} (and {len(shown) - 1} more), and neither is "
                       "inside the other; give each its own folder or glob, e.g. --images 'data/*.jpg' --masks "
                       "'data/*.png', or --images '*/*.tif' --masks '*/*_mask.tif'")


def _named(src: Path, candidates: Sequence[str]) -> str | None:
    return next((name for name in candidates if (src / name).is_dir()), None)


# --- choosing ---------------------------------------------------------------------------------------

def _shared(a: Family, b: Family) -> int:
    by_split = a.has_splits and b.has_splits
    return len(a.keys(by_split) & b.keys(by_split))


def _by_content(src: Path, fixed_images: Side | None, fixed_masks: Side | None) -> Found:
    """Whole names first (``rgb/0001.jpg`` + ``figure_ground/0001.jpg``); names with their tags split
    off (``_leftImg8bit`` / ``_gtFine_labelIds``, ``_mask``) only when whole names pair fewer masks."""
    exclude = {f.path for side in (fixed_images, fixed_masks) if side for f in side.files}
    tries = []
    for tagged in (False, True):
        found = list_families(src, exclude, tagged)
        for family in found:
            classify(family)
        images = [family_of(fixed_images, tagged)] if fixed_images else \
            [f for f in found if f.kind in ("photo", "grey-photo")]
        masks = [family_of(fixed_masks, tagged)] if fixed_masks else [f for f in found if f.kind in ("ids", "colour")]
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


def _best_pair(images: list[Family], masks: list[Family]):
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


def _why_unused(f: Family, images: Family, masks: Family) -> str:
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


def _nothing_pairs(src: Path, found: list[Family], fixed_images: Side | None, fixed_masks: Side | None) -> str:
    listed = "\n".join(f"  {f.where}: {len(f.files)} files, {f.note}" for f in found[:20]) or "  no image files"
    given = "".join(f"\n  given: {side.where} ({len(side.files)} files)" for side in (fixed_images, fixed_masks)
                    if side)
    return (f"{src}: could not tell the images from the masks. No folder is named like images "
            f"({', '.join(IMAGE_FOLDERS[:4])}, ...) or masks ({', '.join(MASK_FOLDERS[:4])}, ...), and no family "
            f"of single-channel or palette files with few values shares file names with a family of pictures. "
            f"Found:\n{listed}{given}\nName them with --images FOLDER_OR_GLOB --masks FOLDER_OR_GLOB "
            f"(relative to {src}).")


__all__ = ["IMAGE_FOLDERS", "MASK_FOLDERS", "Found", "UnusedFamily", "find_sides"]
