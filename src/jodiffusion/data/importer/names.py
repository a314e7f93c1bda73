"""What file and folder names say (``jodiffusion import``): the words of a name, the name *tags* shared by
many files of a folder (``_mask``, ``_leftImg8bit``; numbers never are), split-named folders (``train/``,
``trainannot/``) and case or tile folders (``P1/``, ``Tile 1/``: sibling folders each holding images with
their masks), and from these a file's family folder and the folders its pairing key keeps."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
TAG_SHARE = 0.2           # a word is a tag when at least this share of a folder's files end with it
MAX_TAG_WORDS = 3

_WORD = re.compile(r"[_\-.]")


def split_words(stem: str) -> list[tuple[int, str]]:
    """(start, word) of each word of a name (separators: _ - .)."""
    out, start = [], 0
    for m in _WORD.finditer(stem):
        out.append((start, stem[start:m.start()]))
        start = m.end()
    out.append((start, stem[start:]))
    return out


def name_tags(stems: list[str]) -> set[tuple[int, str]]:
    """(position from the end, word) pairs shared by at least ``TAG_SHARE`` of ``stems`` (and two of
    them), numbers excluded: the name tags of a folder."""
    counts: Counter = Counter()
    for stem in stems:
        words = split_words(stem)
        for p in range(1, min(MAX_TAG_WORDS, len(words) - 1) + 1):
            counts[(p, words[-p][1])] += 1
    need = max(2, TAG_SHARE * len(stems))
    return {k for k, n in counts.items() if n >= need and not k[1].isdigit() and k[1]}


def key_and_tag(stem: str, tags: set[tuple[int, str]]) -> tuple[str, str]:
    words = split_words(stem)
    cut = len(words)
    for p in range(1, min(MAX_TAG_WORDS, len(words) - 1) + 1):
        if (p, words[-p][1]) not in tags:
            break
        cut = len(words) - p
    if cut == len(words):
        return stem, ""
    start = words[cut][0]
    return stem[:start - 1], stem[start - 1:]


SIDE_WORDS = ("annot", "annots", "annotations", "labels", "label", "masks", "mask", "gt", "seg", "images", "image",
              "imgs", "img", "rgb", "photos")


def split_of(part: str) -> tuple[str | None, str]:
    """(split, the folder name with the split written ``{split}``) of a folder named after a split:
    ``train``, ``validation``, and also ``trainannot`` / ``val_labels`` / ``images_train`` (SegNet's CamVid)."""
    lower = part.lower()
    if lower in SPLIT_ALIASES:
        return SPLIT_ALIASES[lower], "{split}"
    for alias in sorted(SPLIT_ALIASES, key=len, reverse=True):
        if lower.startswith(alias) and lower[len(alias):].strip("_-") in SIDE_WORDS:
            return SPLIT_ALIASES[alias], "{split}" + part[len(alias):]
        if lower.endswith(alias) and lower[:-len(alias)].strip("_-") in SIDE_WORDS:
            return SPLIT_ALIASES[alias], part[:-len(alias)] + "{split}"
    return None, part


def place(dirs: tuple[str, ...], groups: set[str]) -> tuple[str, str | None, bool, tuple[str, ...]]:
    """(family folder, split, whether files sit in sub-folders below it, the folders that belong to the
    pairing key) of a file's folders. The family folder goes up to the first split-named one, written
    ``{split}``, so every split of one kind of file is one family; case or tile folders (``groups``) are
    written ``*``, so every case's masks are one family. Both the case folders and the sub-folders below a
    split folder (Cityscapes' cities) are part of the key: an image pairs only with a mask in the same ones."""
    shown: list[str] = []
    key: list[str] = []
    for i, part in enumerate(dirs):
        split, name = split_of(part)
        if split:
            return "/".join((*shown, name)), split, len(dirs) > i + 1, (*key, *dirs[i + 1:])
        if "/".join(dirs[:i + 1]) in groups:
            shown.append("*")
            key.append(part)
        else:
            shown.append(part)
    return "/".join(shown), None, False, tuple(key)


def pairs_inside(stems: set[tuple[str, str]]) -> bool:
    """Whether the files of one folder pair among themselves: ``a_1`` beside ``a_1_mask``, or ``x.jpg``
    beside ``x.png``."""
    names = {stem for stem, _ in stems}
    if len(names) < len(stems):
        return True
    for stem in names:
        for start, _ in split_words(stem)[1:]:
            if stem[:start - 1] in names:
                return True
    return False


def group_dirs(rels: list[tuple[str, ...]]) -> set[str]:
    """Case or tile folders (``P1/``, ``Tile 1/``): two or more sibling folders each holding images with
    their masks, beside each other (``a_1.tif`` + ``a_1_mask.tif``) or in sub-folders of their own
    (``images/x.jpg`` + ``masks/x.png``). Only folders above any split folder are looked at."""
    direct: dict[tuple[str, ...], set[tuple[str, str]]] = defaultdict(set)
    below: dict[tuple[str, ...], set[str]] = defaultdict(set)
    children: dict[tuple[str, ...], set[tuple[str, ...]]] = defaultdict(set)
    for parts in rels:
        dirs, name = parts[:-1], parts[-1]
        stem, ext = name.rsplit(".", 1) if "." in name else (name, "")
        cut = next((i for i, d in enumerate(dirs) if split_of(d)[0]), len(dirs))
        if cut == len(dirs):
            direct[dirs].add((stem, ext.lower()))
        for i in range(cut):
            children[dirs[:i]].add(dirs[:i + 1])
            below[dirs[:i + 1]].add(stem)

    def self_contained(folder: tuple[str, ...]) -> bool:
        if pairs_inside(direct.get(folder, set())):
            return True
        owners: dict[str, set] = defaultdict(set)  # stem -> the sub-folders holding it
        for sub in children.get(folder, ()):
            for stem in below[sub]:
                owners[stem].add(sub)
        for stem, subs in owners.items():  # x in images/ and x (or x_mask) in masks/
            for prefix in (stem, *(stem[:start - 1] for start, _ in split_words(stem)[1:])):
                if owners.get(prefix, set()) - subs or (prefix == stem and len(subs) > 1):
                    return True
        return False

    groups = set()
    for kids in children.values():
        contained = [k for k in kids if self_contained(k)]
        if len(contained) >= 2:
            groups.update("/".join(k) for k in contained)
    return groups


__all__ = ["SPLIT_ALIASES", "group_dirs", "key_and_tag", "name_tags", "place", "split_of", "split_words"]
