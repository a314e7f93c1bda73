"""The one rule for the names of temporary files and folders: each is provably jodiffusion's own.

Every file or folder the tool writes under a name it will later delete (the temporary file of an atomic
write, a checkpoint being saved, a dataset being built beside its destination, the old folder a swap
moves aside, a stale lock being taken over) is named

    .jodiffusion-<token>.<name>.<kind>

where ``<token>`` is 8 random characters of ``[a-z0-9_]``, ``<name>`` the name it stands for (the file
it will become, the folder it is built for) and ``<kind>`` one of the registered ``TEMP_KINDS``. Clean-up
(``is_temp_name``) matches this whole pattern and nothing else: a user's ``.notes.tmp`` or
``.data.2024-backup.old/`` never looks like a leftover of ours, whatever it is called.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

# Read once at import: the only portable way to read the umask is to set it and put it back, which is
# not safe while writer threads create files.
UMASK = os.umask(0)
os.umask(UMASK)

TEMP_PREFIX = ".jodiffusion-"
# tmp: work in progress (renamed into place when complete); old: what a swap moved aside, deleted next
TEMP_KINDS = ("tmp", "old")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile's own, so mkstemp / mkdtemp names match too
_TOKEN_LEN = 8
_NAME_MAX = 200  # of the name part: the whole name stays under the 255 bytes file systems allow
_PATTERN = re.compile(rf"\{TEMP_PREFIX}[a-z0-9_]{{{_TOKEN_LEN}}}\.(?P<name>.+)\.(?P<kind>{'|'.join(TEMP_KINDS)})",
                      re.DOTALL)


def _part(name: str) -> str:
    return name[:_NAME_MAX]


def _check_kind(kind: str) -> str:
    if kind not in TEMP_KINDS:
        raise ValueError(f"temporary name kind {kind!r} is not one of {TEMP_KINDS}")
    return kind


def temp_name(name: str, kind: str = "tmp") -> str:
    """A fresh temporary name standing for ``name`` (nothing is created)."""
    token = "".join(secrets.choice(_ALPHABET) for _ in range(_TOKEN_LEN))
    return f"{TEMP_PREFIX}{token}.{_part(name)}.{_check_kind(kind)}"


def make_temp_file(folder: str | os.PathLike, name: str, kind: str = "tmp") -> tuple[int, Path]:
    """Create a new empty temporary file in ``folder`` standing for ``name``: (open descriptor, path)."""
    fd, path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=f".{_part(name)}.{_check_kind(kind)}", dir=folder)
    return fd, Path(path)


def make_temp_dir(folder: str | os.PathLike, name: str, kind: str = "tmp") -> Path:
    """Create a new empty temporary folder in ``folder`` standing for ``name``. It gets the mode a plain
    ``mkdir`` gives (0777 minus the umask), not mkdtemp's 0700: a folder built here and renamed into place
    (make-data, import, a checkpoint, the latent cache) has the same permissions whichever command wrote it."""
    path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, suffix=f".{_part(name)}.{_check_kind(kind)}", dir=folder))
    os.chmod(path, 0o777 & ~UMASK)
    return path


def is_temp_name(name: str, of: str | None = None, kinds: tuple[str, ...] = TEMP_KINDS) -> bool:
    """Whether ``name`` is one of the tool's temporary names (standing for ``of``, when given, and of one
    of ``kinds``). Nothing else is ever deleted as a leftover."""
    m = _PATTERN.fullmatch(name)
    if m is None or m.group("kind") not in kinds:
        return False
    return of is None or m.group("name") == _part(of)


def standing_for(name: str) -> str | None:
    """The name a temporary name stands for (None when ``name`` is not one)."""
    m = _PATTERN.fullmatch(name)
    return m.group("name") if m else None


def describe_removed(names: list[str], shown: int = 8) -> str:
    """``a, b, c and N more``: the names a clean-up removed, for its log line."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
