"""The user's words about the classes: the ``--value-map`` text, ``--background`` and ``--names``, turned
into a ``ClassInfo`` and into class ids (class files: ``class_files.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from jodiffusion.data.classes import IGNORE_INDEX, ClassInfo
from jodiffusion.errors import ConfigError

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


def resolve_target(target: str, classes: ClassInfo, item: str) -> int:
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


def background_id(value: str | None, names: Sequence[str], default: int | None) -> int | None:
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


def make_classes(names: Sequence[str], palette=(), ignore_index: int = IGNORE_INDEX,
                  background: int | None = None) -> ClassInfo:
    try:
        return ClassInfo(names=tuple(names), palette=tuple(palette), ignore_index=ignore_index, background=background)
    except ValueError as exc:
        raise ConfigError(f"classes: {exc}") from None


def value_list(values) -> str:
    values = sorted(values)
    shown = ", ".join(str(v) for v in values[:12])
    return shown + (f" ... ({len(values)} distinct)" if len(values) > 12 else "")
