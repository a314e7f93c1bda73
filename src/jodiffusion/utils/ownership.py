"""What ``--overwrite`` may replace: only a folder the same command wrote before.

A command that owns an output folder (``train``, ``train-vae``, ``train-seg``, ``generate``, ``sample``,
``refine``, ``import``, ``demo``) writes ``OWNER_FILE`` into it before anything else, naming itself.
``--overwrite`` replaces a non-empty folder only when that marker names the same command *and* every
top-level entry is one the command writes (or one of the tool's temporary names,
``jodiffusion.utils.tempnames``); anything else is refused, naming what would be lost. The rules are applied
in one place, ``jodiffusion.utils.output_folder``; this module holds the marker and the pieces they use.
A common file name (``manifest.jsonl``, ``classes.json``) is never taken as proof of ownership.

A folder holding nothing but the tool's temporary files (and a run's lock) is *blank* (``is_blank``): it
is what a kill during a command's very first write leaves (the marker's own
``.jodiffusion-<token>..jodiffusion-owner.json.tmp``), and every command treats it as empty, with or without
``--resume`` / ``--overwrite``. ``clear_folder`` empties a folder for ``--overwrite`` but keeps the lock
of the run that is clearing it (``jodiffusion.utils.lock``).

Path components taken from the user (split names and the like) go through ``check_path_component``,
so that a value such as ``..`` or ``a/b`` never turns into a path outside the folder meant.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from jodiffusion.errors import ConfigError
from jodiffusion.utils.io import write_json_atomic
from jodiffusion.utils.lock import LOCK_FILE
from jodiffusion.utils.tempnames import TEMP_PREFIX, is_temp_name

OWNER_FILE = ".jodiffusion-owner.json"
_SHOWN = 8  # entries named in a refusal before "and N more"


def write_owner(folder: str | os.PathLike, command: str) -> None:
    """Mark ``folder`` as written by ``jodiffusion <command>`` (deterministic content)."""
    write_json_atomic(Path(folder) / OWNER_FILE, {"command": command})


def read_owner(folder: str | os.PathLike) -> str | None:
    """The command named by ``folder``'s marker; None without a readable one."""
    try:
        data = json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    command = data.get("command") if isinstance(data, dict) else None
    return command if isinstance(command, str) else None


def is_blank(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` (an existing folder) holds nothing but temporary files and a run's lock: nothing
    a command finished writing, so nothing is lost by starting there afresh."""
    return all(is_temp_name(p.name) or p.name == LOCK_FILE for p in Path(folder).iterdir())


def remove_tree(path: Path) -> None:
    """Delete ``path``, a folder or a file (a link is removed, never followed)."""
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def clear_folder(folder: str | os.PathLike) -> None:
    """Delete everything in ``folder`` but the lock (held by the run that clears it for ``--overwrite``)."""
    for path in Path(folder).iterdir():
        if path.name != LOCK_FILE:
            remove_tree(path)


def remove_temp_files(folder: str | os.PathLike, nested: bool = False) -> list[str]:
    """Delete the temporary files of writes a kill interrupted, at the top of ``folder`` (or anywhere under
    it, ``nested``); call it holding the lock, so that none is another run's write under way. Returns their
    paths relative to ``folder`` (at the top: their names). Only the tool's own temporary names
    (``jodiffusion.utils.tempnames``) are removed."""
    folder = Path(folder)
    removed = []
    for path in sorted(folder.rglob(f"{TEMP_PREFIX}*") if nested else folder.iterdir()):
        if is_temp_name(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(str(path.relative_to(folder)))
    return removed


def describe_entries(folder: Path, names: Iterable[str]) -> str:
    names = sorted(names)
    shown = [f"{n}/" if (folder / n).is_dir() else n for n in names[:_SHOWN]]
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(shown) + more


def foreign_entries(folder: Path, own: Iterable[str]) -> list[str]:
    """Top-level entries of ``folder`` that are neither in ``own`` nor the marker nor temporary files."""
    own = set(own) | {OWNER_FILE, LOCK_FILE}
    return sorted(p.name for p in folder.iterdir() if p.name not in own and not is_temp_name(p.name))


def check_path_component(value, what: str) -> str:
    """``value`` as one folder / file name: not empty, not ``.`` or ``..``, no separator, no NUL, no
    surrounding blanks. Raises a ConfigError naming ``what`` and the value."""
    text = value if isinstance(value, str) else None
    bad = (text is None or not text or text in (".", "..") or text != text.strip() or "/" in text
           or "\\" in text or "\0" in text or (os.altsep is not None and os.altsep in text))
    if bad:
        raise ConfigError(f"{what} {value!r} is not usable as a folder name: give a plain name such as 'train' "
                          "(no '/', '\\', '.' or '..', no surrounding spaces)")
    return text
