"""The image files of a folder or glob under SRC (``--images`` / ``--masks``), with their split and pairing key.

A ``SourceFile`` is one image or mask file: its split (from a split-named first sub-folder, ``train/``)
and its pairing key (the folders an image and its mask must share, then the name). A ``Side`` is the
images or the masks as found, with the other files there that are not images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from jodiffusion.data.importer.names import SPLIT_ALIASES
from jodiffusion.errors import DatasetError

SOURCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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
    return Side(where, drop_common_folders(files), others)


def drop_common_folders(files: list[SourceFile]) -> list[SourceFile]:
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


__all__ = ["SOURCE_SUFFIXES", "Side", "SourceFile", "drop_common_folders", "find_files", "rel_to"]
