"""Atomic file writing: a reader (or a resumed run) never sees a half-written file.

Everything is written to a temporary name (``jodiffusion.utils.tempnames``) in the destination folder
and then renamed, which is atomic on POSIX file systems and on Windows (``os.replace``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from jodiffusion.errors import JoDiffusionError
from jodiffusion.utils.safe_load import disk_full_error, is_disk_full
from jodiffusion.utils.tempnames import UMASK, make_temp_dir, make_temp_file

_UMASK = UMASK  # read once, at import (see tempnames)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the whole file was written
        raise JoDiffusionError(f"{path} is a folder; give the path of a file to write (nothing was written)")
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_path = make_temp_file(path.parent, path.name)  # .jodiffusion-<token>.<name>.tmp
        os.close(fd)
        yield tmp_path
        # mkstemp creates the file as 0600; give it the mode a plain open() would (0666 minus the umask)
        # so that reports and datasets can be shared and served.
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except Exception as exc:
        if is_disk_full(exc):  # one line, and (below) no temporary file left behind
            raise disk_full_error(path) from None
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_safetensors_atomic(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def replace_folder(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Rename the finished folder ``tmp`` onto ``out`` (beside it, on the same file system). A folder
    already at ``out`` is first renamed aside and deleted only once ``tmp`` is in place; if that rename
    fails it is put back, so ``out`` is always either the old folder or the new one, never half of each.
    A kill in between leaves at most a hidden ``.jodiffusion-<token>.OUT.old`` folder beside ``out``."""
    tmp, out = Path(tmp), Path(out)
    trash = None
    if out.exists():
        trash = make_temp_dir(out.parent, out.name, "old")
        os.replace(out, trash / "old")
    try:
        os.replace(tmp, out)
    except OSError:
        if trash is not None and not out.exists():
            os.replace(trash / "old", out)
        raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
