"""The families of the image files under SRC, and what each holds (``jodiffusion import`` by content).

A family is the files of one folder (up to a split-named folder such as ``train/``, below which city or
scene sub-folders belong to the same family; case or tile folders, ``P1/``, ``Tile 1/``, are written
``*``), one extension and one name *tag*, the trailing words shared by many files there
(``_leftImg8bit``, ``_gtFine_labelIds``, ``_mask``; numbers never are). What is left of the name is the
pairing key. A few files of each family are opened to tell what it holds (``file_kind.py``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jodiffusion.data.importer.file_kind import file_kind
from jodiffusion.data.importer.names import group_dirs, key_and_tag, name_tags, place
from jodiffusion.data.importer.source_files import SOURCE_SUFFIXES, Side, SourceFile, rel_to

SAMPLED_FILES = 5         # files opened per family to tell masks from pictures


@dataclass
class Family:
    """The files of one folder, extension and name tag; ``kind`` and ``note`` once ``classify`` has looked."""

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


def list_families(src: Path, exclude: set[Path], tagged: bool) -> list[Family]:
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
            families.append(Family(f"{folder}{deep}*{tag}{ext}", base, tag, [f for f, _ in members]))
    return families


def family_of(side: Side, tagged: bool) -> Family:
    """A side the user named, as one family (with ``tagged``, its names' tags stripped)."""
    return Family(side.where, side.where, "", retag(side.files) if tagged else side.files)


def retag(files: list[SourceFile]) -> list[SourceFile]:
    """The files with their name tags (``_mask``, ``_L``) split off their keys."""
    tags = name_tags([f.name_key for f in files])
    return [SourceFile(f.path, f.rel, f.stem, f.split, (*f.key[:-1], key_and_tag(f.name_key, tags)[0]))
            for f in files]


def classify(family: Family) -> None:
    """The family's kind: what most of a few of its files, spread over it, hold (``file_kind``)."""
    files = family.files
    picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(SAMPLED_FILES, len(files))).round()]
    kinds = [file_kind(f.path) for f in picks]
    family.kind, _ = Counter(k for k, _ in kinds).most_common(1)[0]
    family.note = next(note for k, note in kinds if k == family.kind)


__all__ = ["SAMPLED_FILES", "Family", "classify", "family_of", "list_families", "retag"]
