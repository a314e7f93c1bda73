"""Helpers shared by the readers: folder checks, file indexing, pairing and split lists.

Pairing never drops a file: an image without a mask (or a mask without an image) becomes a
``Sample`` whose missing partner is ``None``, so that ``jodiffusion validate`` (and ``ensure_valid``
before training) reports it by name instead of the dataset silently shrinking.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from jodiffusion.data.base import Sample
from jodiffusion.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def require_dir(path: Path, what: str, layout: str) -> Path:
    """``path`` if it is a folder, else a DatasetError that names it and shows the expected layout."""
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DatasetError(f"{path} {state}; expected {what}. Expected layout:\n{layout}")
    return path


def require_root(root: str | Path | None, dataset: str, layout: str) -> Path:
    if not root:
        raise DatasetError(f"{dataset}: no dataset root given (data.root). Expected layout:\n{layout}")
    return require_dir(Path(root).expanduser(), f"the {dataset} dataset root", layout)


def index_files(folder: Path, suffixes: Iterable[str], *, recursive: bool = False,
                strip: str = "") -> dict[str, Path]:
    """Map a key to each file of ``folder`` whose name ends with one of ``suffixes`` (case-insensitive).

    The key is the file name without its suffix and without the ``strip`` ending (e.g.
    ``"_leftImg8bit"``); two files with the same key are an error, since they cannot both be paired.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    files = folder.rglob("*") if recursive else folder.iterdir()
    out: dict[str, Path] = {}
    duplicates: list[tuple[Path, Path]] = []
    for path in files:
        if path.name.startswith(".") or not path.name.lower().endswith(suffixes) or not path.is_file():
            continue
        key = path.name[: len(path.name) - len(next(s for s in suffixes if path.name.lower().endswith(s)))]
        if strip and key.endswith(strip):
            key = key[: -len(strip)]
        if key in out:
            duplicates.append((out[key], path))
        else:
            out[key] = path
    if duplicates:
        listed = "\n".join(f"  {a}  and  {b}" for a, b in duplicates[:20])
        more = f"\n  ... and {len(duplicates) - 20} more" if len(duplicates) > 20 else ""
        raise DatasetError(f"{folder}: {len(duplicates)} file name(s) occur twice with different suffixes, "
                           f"so the pairing is ambiguous:\n{listed}{more}\nRemove one file of each pair.")
    return out


def pair_samples(images: dict[str, Path], masks: dict[str, Path], name: str) -> list[Sample]:
    """One Sample per key of either dict, sorted by key; a missing partner is ``None`` (not dropped)."""
    samples = [Sample(stem=key, image_path=images.get(key), mask_path=masks.get(key))
               for key in sorted(images.keys() | masks.keys())]
    warn_unmatched(samples, name)
    return samples


def warn_unmatched(samples: list[Sample], name: str) -> None:
    no_mask = sum(1 for s in samples if s.mask_path is None)
    no_image = sum(1 for s in samples if s.image_path is None)
    if no_mask or no_image:
        logger.warning("%s: %d image(s) without a mask and %d mask(s) without an image; they are kept as "
                       "incomplete samples that `jodiffusion validate` lists", name, no_mask, no_image)


def format_stem_line(stem: str) -> str:
    """One line of a split list for ``stem`` (without the newline), read back by ``read_stem_list`` as
    exactly ``stem``. A stem is written as it is (``ça va 00``, ``-01``) unless a reader would take it
    for something else (a comment ``#...``, surrounding blanks, a quote, a line break, a backslash, an
    image suffix it would strip, words another tool's list puts after the name); then it is a JSON string
    (``"#hash 02"``)."""
    plain = (stem and stem == stem.strip() and not stem.startswith(("#", '"')) and "\\" not in stem
             and not stem.lower().endswith(IMAGE_SUFFIXES)
             and not any(c in stem for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))
    plain = plain and _entry_of(stem, None) == stem  # e.g. "plain 01" would read as VOC's "stem flag" line
    return stem if plain else json.dumps(stem, ensure_ascii=False)


def _entry_of(line: str, exists: Callable[[str], bool] | None) -> str:
    """The file name a split-list line gives. Other tools' lists put more on a line (VOC's
    ``/JPEGImages/x.jpg /SegmentationClassAug/x.png``, ``x  1``), while file names may hold spaces
    (``ça va 00``): the whole line is the name when such a file exists (``exists``), or when the words
    after the first are not a path or a number; else the first word is."""
    words = line.split()
    if len(words) == 1:
        return line
    if exists is not None:
        if exists(_strip_path(line)):
            return line
        if exists(_strip_path(words[0])):
            return words[0]
    rest_is_extra = all(("/" in w or "\\" in w or w.lower().endswith((*IMAGE_SUFFIXES, ".png"))
                         or w.lstrip("+-").isdigit()) for w in words[1:])
    first_is_path = "/" in words[0] or "\\" in words[0] or words[0].lower().endswith(IMAGE_SUFFIXES)
    return words[0] if rest_is_extra and (first_is_path or len(words) == 2) else line


def _strip_path(entry: str) -> str:
    """The stem of a list entry: any folder and image suffix removed."""
    stem = entry.replace("\\", "/").rsplit("/", 1)[-1]
    lower = stem.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def read_stem_list(path: Path, folders: Iterable[Path] = ()) -> list[str]:
    """Stems listed in a split file: one entry per line, any folder and suffix removed (so both
    ``2007_000032`` and ``/JPEGImages/2007_000032.jpg /Seg...png`` work); ``#`` starts a comment. A line
    that is a JSON string is that stem exactly (``format_stem_line``). A line holding spaces is one name
    when a file of that stem is in one of ``folders`` (the split's image and mask folders), else see
    ``_entry_of``."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read split list {path}: {exc}") from None
    folders = tuple(folders)

    def exists(stem: str) -> bool:
        return any(find_with_suffix(folder, stem, (*IMAGE_SUFFIXES, ".png")) is not None for folder in folders)

    stems: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith('"'):
            try:
                stem = json.loads(line)
            except ValueError:
                stem = None
            if not isinstance(stem, str) or not stem:
                raise DatasetError(f"split list {path}, line {number}: {line[:80]!r} is not a quoted file name; "
                                   'write a name as it is, or as a JSON string such as "#1 a"')
        else:
            stem = _strip_path(_entry_of(line, exists if folders else None))
        if stem not in seen:
            seen.add(stem)
            stems.append(stem)
    if not stems:
        raise DatasetError(f"split list {path} lists no samples")
    return stems


def find_with_suffix(folder: Path, stem: str, suffixes: Iterable[str]) -> Path | None:
    for suffix in suffixes:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            try:
                if candidate.is_file():
                    return candidate
            except (OSError, ValueError):  # a name the file system cannot hold (too long, a NUL)
                return None
    return None


def samples_from_list(stems: list[str], image_dir: Path, mask_dir: Path, name: str,
                      image_suffixes: Iterable[str] = IMAGE_SUFFIXES,
                      mask_suffixes: Iterable[str] = (".png",)) -> list[Sample]:
    """Samples for the stems of a split list; a listed stem whose file is missing keeps ``None``."""
    image_suffixes, mask_suffixes = tuple(image_suffixes), tuple(mask_suffixes)
    samples = [Sample(stem=stem, image_path=find_with_suffix(image_dir, stem, image_suffixes),
                      mask_path=find_with_suffix(mask_dir, stem, mask_suffixes)) for stem in stems]
    warn_unmatched(samples, name)
    return samples

