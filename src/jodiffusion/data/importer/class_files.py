"""Class files as datasets ship them (``jodiffusion import --classes FILE``): this project's
``classes.json`` / ``.yaml``, CamVid's ``label_colors.txt``, a ``class_dict.csv``, and the JSON schemas
of annotation tools (``{name: colour}``, ``[{name, color}]``, also under a ``classes`` key). A file that is
none of them is refused with an example of each."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from jodiffusion.data.classes import IGNORE_INDEX, ClassInfo
from jodiffusion.errors import ConfigError

FORMATS = """accepted class files (one class per entry, in id order):
  names and palette (JSON or YAML):  {"names": ["background", "pet"], "palette": [[0, 0, 0], [255, 0, 0]],
                                     "ignore_index": 255, "background": "background"}   (palette optional)
  a list of names (JSON or YAML):    ["background", "pet"]
  R G B and a name per line (CamVid's label_colors.txt):
                                     64 128 64\tAnimal
  name,r,g,b per line (class_dict.csv, with that header):
                                     Animal,64,128,64
  {name: colour} JSON:               {"background": [0, 0, 0], "pet": "#ff0000"}
  [{name, color}] JSON:              [{"name": "background", "color": [0, 0, 0]}, {"name": "pet", "color":
                                     "#ff0000"}]   (or under "classes"; "title" or "label" for the name)"""

_RGB_LINE = re.compile(r"^\s*(\d{1,3})[\s,;]+(\d{1,3})[\s,;]+(\d{1,3})[\s,;]+(\S.*?)\s*$")
_NAME_KEYS = ("name", "title", "label", "class", "class_name", "classname")
_COLOUR_KEYS = ("color", "colour", "rgb", "palette")
_LIST_KEYS = ("classes", "labels", "categories")


@dataclass(frozen=True)
class ClassFile:
    path: Path
    classes: ClassInfo
    colours: bool    # whether it gives a colour per class (colour and palette masks are then read by colour)
    schema: str      # which of the accepted formats, for the summary


def _refuse(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"--classes {path}: {problem}\n{FORMATS}")


def _colour(value, path: Path, name: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if re.fullmatch(r"[0-9a-fA-F]{6}", text):
            packed = int(text, 16)
            return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    elif isinstance(value, (list, tuple)) and len(value) in (3, 4) and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value):
        return int(value[0]), int(value[1]), int(value[2])
    raise _refuse(path, f"the colour of {name!r} is {value!r}; give [r, g, b] (0..255) or '#rrggbb'")


def _is_colour(value) -> bool:
    return (isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value.strip()) is not None) or (
        isinstance(value, (list, tuple)) and len(value) in (3, 4) and all(isinstance(c, int) for c in value))


def _background(names: list[str]) -> int | None:
    lowered = [n.lower() for n in names]
    return lowered.index("background") if "background" in lowered else None


def _build(path: Path, names: list[str], palette: list, schema: str, **extra) -> ClassFile:
    try:
        info = ClassInfo(names=tuple(names), palette=tuple(palette), background=extra.get("background",
                         _background(names)), ignore_index=extra.get("ignore_index", IGNORE_INDEX))
    except ValueError as exc:
        raise _refuse(path, str(exc)) from None
    return ClassFile(path, info, bool(palette), schema)


def _entries(path: Path, entries: list) -> ClassFile:
    """``[{name, color}, ...]``: the classes in the file's order (or by their ``id`` where every entry has one)."""
    if all(isinstance(e, dict) and isinstance(e.get("id"), int) for e in entries):
        entries = sorted(entries, key=lambda e: e["id"])
    names, palette = [], []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _refuse(path, f"entry {k} is {entry!r}, not an object with a name and a colour")
        name = next((entry[key] for key in _NAME_KEYS if isinstance(entry.get(key), str)), None)
        if name is None:
            raise _refuse(path, f"entry {k} ({entry!r}) has no name ({', '.join(_NAME_KEYS)})")
        colour = next((entry[key] for key in _COLOUR_KEYS if key in entry), None)
        names.append(name)
        if colour is not None:
            palette.append(_colour(colour, path, name))
    if palette and len(palette) != len(names):
        raise _refuse(path, f"{len(palette)} of {len(names)} classes have a colour; give every class one or none")
    return _build(path, names, palette, "[{name, color}]")


def _from_data(path: Path, data) -> ClassFile:
    if isinstance(data, list):
        if all(isinstance(n, str) for n in data):
            return _build(path, list(data), [], "list of names")
        return _entries(path, data)
    if not isinstance(data, dict) or not data:
        raise _refuse(path, f"holds {type(data).__name__} {str(data)[:80]!r}")
    if "names" in data:
        try:
            info = ClassInfo.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise _refuse(path, str(exc)) from None
        return ClassFile(path, info, bool(data.get("palette")), "names and palette")
    for key in _LIST_KEYS:
        if isinstance(data.get(key), list):
            return _from_data(path, data[key])
    if all(isinstance(k, str) for k in data) and all(_is_colour(v) for v in data.values()):
        return _build(path, list(data), [_colour(v, path, k) for k, v in data.items()], "{name: colour}")
    raise _refuse(path, f"an object with the keys {', '.join(map(str, list(data)[:6]))}, which is none of the "
                        "formats below")


def _rgb_lines(path: Path, text: str) -> ClassFile | None:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    matches = [_RGB_LINE.match(line) for line in lines]
    if not lines or not all(matches):
        return None
    names = [m.group(4) for m in matches]
    palette = [tuple(int(m.group(i)) for i in (1, 2, 3)) for m in matches]
    bad = [(n, c) for n, c in zip(names, palette, strict=True) if max(c) > 255]
    if bad:
        raise _refuse(path, f"the colour of {bad[0][0]!r} is {bad[0][1]}; colours are 0..255")
    return _build(path, names, palette, "R G B name lines")


def _csv(path: Path, text: str) -> ClassFile | None:
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        return None
    header = [c.strip().lower() for c in rows[0]]
    if not {"r", "g", "b"} <= set(header) or not set(header) & set(_NAME_KEYS):
        return None
    name_at = next(header.index(k) for k in _NAME_KEYS if k in header)
    names, palette = [], []
    for row in rows[1:]:
        try:
            names.append(row[name_at].strip())
            palette.append(tuple(int(row[header.index(c)]) for c in "rgb"))
        except (IndexError, ValueError):
            raise _refuse(path, f"the line {','.join(row)!r} is not name,r,g,b") from None
    if any(max(c) > 255 or min(c) < 0 for c in palette):
        raise _refuse(path, "colours are 0..255")
    return _build(path, names, palette, "name,r,g,b table")


_CANDIDATE_WORDS = ("class", "label", "color", "colour", "palette", "categor")
_CANDIDATE_SUFFIXES = (".txt", ".json", ".csv", ".yaml", ".yml")


def candidate_hint(src: Path, limit: int = 3) -> str:
    """`` SRC holds label_colors.txt: try --classes ...`` for the files near the top of SRC whose names
    look like class files (and that read as one), or ""."""
    found = []
    for depth in ("*", "*/*"):
        for path in sorted(src.glob(depth)):
            name = path.name.lower()
            if path.suffix.lower() in _CANDIDATE_SUFFIXES and any(w in name for w in _CANDIDATE_WORDS) \
                    and path.is_file() and path.stat().st_size < 1_000_000:
                try:
                    read_class_file(path)
                except ConfigError:
                    continue
                found.append(path)
    if not found:
        return ""
    return " The source holds a class file: " + "; ".join(f"--classes '{p}'" for p in found[:limit])


def read_class_file(path: str | Path) -> ClassFile:
    """The classes of ``path`` in any accepted format (see ``FORMATS``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--classes {path}: file not found" if not path.exists() else
                          f"--classes {path}: not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise _refuse(path, f"cannot be read as text ({exc})") from None
    if path.suffix.lower() == ".csv":
        found = _csv(path, text)
        if found is None:
            raise _refuse(path, "a CSV file needs a header with a name column and r, g, b")
        return found
    found = _rgb_lines(path, text)
    if found is not None:
        return found
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1})" if where is not None else ""
            raise _refuse(path, f"neither JSON, YAML nor lines of R G B NAME{at}") from None
    if isinstance(data, str) or data is None:
        found = _csv(path, text)
        if found is not None:
            return found
    return _from_data(path, data)


__all__ = ["FORMATS", "ClassFile", "candidate_hint", "read_class_file"]
