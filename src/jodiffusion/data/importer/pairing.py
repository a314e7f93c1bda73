"""Which image goes with which mask, and the name each pair gets in the output folder.

An image and a mask pair only when their keys are equal: the folders they must share (case or tile
folders, sub-folders below a split folder or below the image and mask folders) and the file name without
its tag (``_mask``, ``_L``). So ``Tile 1/images/x.jpg`` pairs with ``Tile 1/masks/x.png`` and never with
``Tile 2/masks/x.png``; a key that two files of one side share is refused, never guessed. Only where the
user or the folder names gave one side flat (``masks/x.png``) and the other in sub-folders
(``images/cats/x.jpg``) do names alone pair, and only when they are unique on both sides.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from jodiffusion.data.importer.discovery import Found
from jodiffusion.data.importer.families import retag
from jodiffusion.data.importer.options import SHOWN
from jodiffusion.data.importer.source_files import SourceFile
from jodiffusion.errors import DatasetError


@dataclass
class Pairing:
    images: dict            # key -> image SourceFile
    masks: dict             # key -> mask SourceFile
    keys: list              # the keys of the pairs, sorted
    names: dict             # key -> the pair's stem in the output folder
    tags_stripped: bool     # whether name tags were split off to pair the files the user named


def shown_key(f: SourceFile) -> str:
    return "/".join(f.key)


def _index(files: list[SourceFile], by_split: bool) -> tuple[dict, list[tuple[str, str]]]:
    out: dict = {}
    duplicates = []
    for f in files:
        key = (f.split, f.key) if by_split else f.key
        if key in out:
            duplicates.append((out[key].rel, f.rel))
        else:
            out[key] = f
    return out, duplicates


def _raise_duplicates(duplicates: list[tuple[str, str]], what: str) -> None:
    listed = "\n".join(f"  {a}  and  {b}" for a, b in duplicates[:SHOWN])
    more = f"\n  ... and {len(duplicates) - SHOWN} more" if len(duplicates) > SHOWN else ""
    raise DatasetError(f"{len(duplicates)} {what} share a name in the same folders, so they cannot be paired:"
                       f"\n{listed}{more}\nName one folder or glob per side with --images / --masks (e.g. "
                       "--images 'images/*.jpg').")


def pair_files(found: Found) -> Pairing:
    """The pairs of ``found``. Sides the user or the folder names gave are also tried with their name tags
    split off (``--images '*/*.tif' --masks '*/*_mask.tif'``); that is kept when it pairs more files."""
    image_files, mask_files = found.images.files, found.masks.files
    by_split = all(f.split for f in image_files) and all(f.split for f in mask_files)
    options = [(False, image_files, mask_files)]
    if found.how != "content":
        options.append((True, retag(image_files), retag(mask_files)))
        for tagged, im_files, ms_files in list(options):
            # one side flat, the other in sub-folders (images/<category>/x.jpg, masks/x.png): the flat side
            # names no folder, so the name alone pairs; never where both sides have folders to match
            if _flat(im_files) != _flat(ms_files):
                options.append((tagged, _names_only(im_files), _names_only(ms_files)))
    best = None
    for tagged, im_files, ms_files in options:
        images, dup_images = _index(im_files, by_split)
        masks, dup_masks = _index(ms_files, by_split)
        shared = images.keys() & masks.keys()
        candidate = (len(shared) - (len(dup_images) + len(dup_masks)) * len(im_files), tagged, images, masks,
                     dup_images, dup_masks)
        if best is None or candidate[0] > best[0]:
            best = candidate
    _, tagged, images, masks, dup_images, dup_masks = best
    if dup_images:
        _raise_duplicates(dup_images, "images")
    if dup_masks:
        _raise_duplicates(dup_masks, "masks")
    keys = sorted(images.keys() & masks.keys(), key=str)
    return Pairing(images, masks, keys, output_names(keys, images), tagged)


def _flat(files: list[SourceFile]) -> bool:
    return all(len(f.key) == 1 for f in files)


def _names_only(files: list[SourceFile]) -> list[SourceFile]:
    return [SourceFile(f.path, f.rel, f.stem, f.split, f.key[-1:]) for f in files]


_UNSAFE = re.compile(r"[\s/\\]+")


def output_names(keys: list, images: dict) -> dict:
    """The output stem of each pair: the image's file name (without its tag) where those are unique (per
    source split),
    else the key's folders joined to it (``Tile_1_image_001``), so that files of the same name in different
    folders stay apart."""
    plain = Counter((images[k].split, images[k].name_key) for k in keys)
    if all(n == 1 for n in plain.values()):
        return {k: images[k].name_key for k in keys}
    names = {k: _UNSAFE.sub("_", "_".join(images[k].key)) for k in keys}
    taken = Counter((images[k].split, names[k]) for k in keys)
    clash = sorted(images[k].rel for k in keys if taken[(images[k].split, names[k])] > 1)
    if clash:
        raise DatasetError(f"{len(clash)} images would get the same name in the output folder (file names repeat "
                           f"in different folders and the folder names do not tell them apart): "
                           f"{', '.join(clash[:SHOWN])}. Import the folders one at a time with --images / --masks")
    return names


__all__ = ["Pairing", "output_names", "pair_files", "shown_key"]
