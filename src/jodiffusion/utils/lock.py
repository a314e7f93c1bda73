"""One writer per output folder: the lock a command holds on the folder it writes.

``generate``, ``sample``, ``refine`` and the training commands write into their output folder in place;
two runs into the same folder at once would both do all the work and trip over each other's files. While
one writes, the folder holds ``LOCK_FILE`` naming its process (id, host, command, start time). A second
run is refused with one line naming that process. A lock whose process is gone (a kill, a crash, a
reboot) is stale: the next run takes it over without being asked.

The lock file appears in one step (a complete temporary file hard-linked onto the name, which fails if
the name exists), so no reader ever sees it empty. A process id can be reused after a reboot; the
refusal says which file to delete if the named process is not a jodiffusion run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from jodiffusion.errors import JoDiffusionError
from jodiffusion.utils.ranks import main_decides

LOCK_FILE = ".jodiffusion-lock.json"
_UNREADABLE_GRACE_S = 10.0  # an unreadable lock file younger than this may be one being written elsewhere
_HELD: set[str] = set()  # lock files this process holds now (a lock naming this process but not here is stale)


class FolderLockedError(JoDiffusionError):
    """Another run is writing the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return True  # cannot tell: the safe answer
    return True


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _stale(path: Path, data: dict | None) -> bool:
    """Whether the lock ``path`` (content ``data``) is left over by a process that is gone."""
    if data is None:
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_GRACE_S
        except OSError:
            return True  # removed meanwhile
    if data.get("host") != socket.gethostname():
        return False  # another machine's process (a shared file system): it cannot be checked from here
    if data["pid"] == os.getpid():
        return str(path) not in _HELD  # an earlier call in this process that did not release it
    return not _alive(data["pid"])


def _link_new(path: Path, content: str) -> bool:
    """Create ``path`` holding ``content`` in one step; False if it exists."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create (empty for an instant)
            try:
                with open(path, "x", encoding="utf-8") as f:
                    f.write(content)
            except FileExistsError:
                return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _take_over(path: Path, seen: dict | None) -> None:
    """Remove the stale lock ``path`` if it still is the one judged stale. It is first renamed to a private
    name, so that of two runs taking over at once only one removes it; a lock that turns out to be another
    run's fresh one is put back."""
    private = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.stale.tmp")
    try:
        os.rename(path, private)
    except FileNotFoundError:
        return
    if _read(private) != seen:
        with contextlib.suppress(OSError):
            os.link(private, path)
    private.unlink(missing_ok=True)


def _refusal(folder: Path, path: Path, data: dict | None) -> FolderLockedError:
    if data is None:
        who = "another run (its lock file is being written or unreadable)"
    else:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data.get("started", 0)))
        who = (f"another run: `jodiffusion {data.get('command', '?')}`, process {data['pid']} on "
               f"{data.get('host', '?')}, since {since}")
    return FolderLockedError(f"{folder} is being written by {who}; nothing was changed. Wait for it to finish or "
                             f"stop it, or choose another output folder (if no such run is going on, delete {path})")


def acquire(folder: str | os.PathLike, command: str) -> Path:
    """Lock ``folder`` (created if missing) for ``jodiffusion <command>``; returns the lock file. Raises
    FolderLockedError naming the run that holds it; a stale lock is taken over."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise JoDiffusionError(f"{folder} exists and is not a folder; choose another output folder")
    folder.mkdir(parents=True, exist_ok=True)
    return _acquire_at(folder / LOCK_FILE, folder, command)


def _acquire_at(path: Path, folder: Path, command: str) -> Path:
    content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                          "started": round(time.time(), 3)}) + "\n"
    for _ in range(3):  # a stale lock is taken over, then the name is tried again
        if _link_new(path, content):
            _HELD.add(str(path))
            return path
        data = _read(path)
        if not _stale(path, data):
            raise _refusal(folder, path, data)
        _take_over(path, data)
    raise _refusal(folder, path, _read(path))


def release(path: Path) -> None:
    """Remove the lock file ``acquire`` made (only if it is still this process's)."""
    _HELD.discard(str(path))
    data = _read(path)
    if data is not None and data.get("pid") == os.getpid() and data.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str, enabled: bool = True, world: int = 1) -> Iterator[None]:
    """Hold the lock on ``folder`` for the block. A folder the lock created that is empty again when the
    block ends (a refused run) is removed, so that a refusal leaves nothing behind. ``enabled=False``:
    a process that is not the main one of its group of ``world`` (the main one holds the lock for all;
    when it is refused, every process raises at once: ``utils.ranks.main_decides``)."""
    folder = Path(folder)
    created = not folder.exists()
    path = main_decides(enabled, world, lambda: acquire(folder, command))
    if path is None:
        yield
        return
    try:
        yield
    finally:
        release(path)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


def beside_lock_path(out: str | os.PathLike) -> Path:
    """Where ``beside_lock`` keeps the lock of ``out``: a hidden file next to it."""
    out = Path(out)
    return out.parent / f".{out.name}{LOCK_FILE}"


@contextlib.contextmanager
def beside_lock(out: str | os.PathLike, command: str) -> Iterator[None]:
    """The lock of a command that builds ``out`` in a hidden folder beside it and renames it into place at
    the end (``import``, ``make-data``): the lock file sits beside ``out`` too, so the rename never moves
    it. Holding it, no other run is building ``out``, so the hidden build folders of ``out`` left there
    (``.OUT.*.tmp``, ``.OUT.*.old``) belong to killed runs and are removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = _acquire_at(beside_lock_path(out), out, command)
    try:
        for leftover in [*out.parent.glob(f".{out.name}.*.tmp"), *out.parent.glob(f".{out.name}.*.old")]:
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
        yield
    finally:
        release(path)
