"""One writer per output folder: the lock a command holds on the folder it writes.

``generate``, ``sample``, ``refine`` and the training commands write into their output folder in place;
two runs into the same folder at once would both do all the work and trip over each other's files. While
one writes, the folder holds ``LOCK_FILE`` naming its process (id, host, command, start time). A second
run is refused with one line naming that process. A lock whose process is gone (a kill, a crash, a
reboot) is stale: the next run takes it over without being asked.

A process id alone does not prove the holder is alive: ids are reused, after a reboot or simply after
enough processes. The lock therefore also records the holder's start time (``/proc/<pid>/stat``, in clock
ticks since boot) and the boot it ran in (``/proc/sys/kernel/random/boot_id``): a lock whose id now
belongs to a process started at another time, or that was taken in an earlier boot, is stale too. A lock
taken on another host (a shared file system) cannot be checked from here: the refusal says so and gives
the one command that removes it.

The lock file appears in one step (a complete temporary file hard-linked onto the name, which fails if
the name exists), so no reader ever sees it empty. Whatever is at the lock's name and is not a regular
file (a folder, a link) is not ours: it is refused and left as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from jodiffusion.errors import JoDiffusionError
from jodiffusion.utils.ranks import main_decides
from jodiffusion.utils.tempnames import describe_removed, is_temp_name, make_temp_file, temp_name

log = logging.getLogger("jodiffusion")

LOCK_FILE = ".jodiffusion-lock.json"
_UNREADABLE_GRACE_S = 10.0  # an unreadable lock file younger than this may be one being written elsewhere
_HELD: set[str] = set()  # lock files this process holds now (a lock naming this process but not here is stale)


class FolderLockedError(JoDiffusionError):
    """Another run is writing the output folder."""


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``, field 22); None where
    that cannot be read (no such process, no /proc)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')': the fields after it start
    # after its last ')'; starttime is field 22, the 20th after the name
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _identity(pid: int) -> dict:
    """What tells this process from a later one with the same id: its start time and the boot it runs in."""
    out = {}
    start, boot = process_start(pid), _boot_id()
    if start is not None:
        out["proc_start"] = start
    if boot is not None:
        out["boot_id"] = boot
    return out


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
    if not _alive(data["pid"]):
        return True
    # the id is in use: by the holder, or by a process that reused it (after a reboot, or later on)
    boot = _boot_id()
    if isinstance(data.get("boot_id"), str) and boot is not None and data["boot_id"] != boot:
        return True  # taken before this machine rebooted: every process of that boot is gone
    if isinstance(data.get("proc_start"), int):
        start = process_start(data["pid"])
        if start is not None and start != data["proc_start"]:
            return True  # the id now names a process started at another time
    return False


def _link_new(path: Path, content: str) -> bool:
    """Create ``path`` holding ``content`` in one step; False if it exists."""
    fd, tmp = make_temp_file(path.parent, path.name)
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
    private = path.with_name(temp_name(path.name))
    try:
        os.rename(path, private)
    except FileNotFoundError:
        return
    if _read(private) != seen:
        with contextlib.suppress(OSError):
            os.link(private, path)
    private.unlink(missing_ok=True)


def _refusal(folder: Path, path: Path, data: dict | None) -> FolderLockedError:
    rm = f"rm -- {shlex.quote(str(path))}"
    if data is None:
        who = "another run (its lock file is being written or unreadable)"
    else:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data.get("started", 0)))
        who = (f"another run: `jodiffusion {data.get('command', '?')}`, process {data['pid']} on "
               f"{data.get('host', '?')}, since {since}")
        if data.get("host") != socket.gethostname():
            return FolderLockedError(
                f"{folder} is being written by {who}; nothing was changed. That host cannot be checked from here "
                f"({socket.gethostname()}): if no such run is going on there any more, remove its lock with "
                f"`{rm}` and run again; else wait for it or choose another output folder")
    return FolderLockedError(f"{folder} is being written by {who}; nothing was changed. Wait for it to finish or "
                             f"stop it, or choose another output folder (if no such run is going on, `{rm}`)")


def _check_lock_path(folder: Path, path: Path) -> None:
    """Refuse (changing nothing) when the lock's name is taken by something that is not a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode) else "not a file"
        raise JoDiffusionError(f"{path} is {kind}, where jodiffusion keeps the lock of {folder}; nothing was "
                               "changed. Move it away (it is not jodiffusion's) or choose another output folder")


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
                          "started": round(time.time(), 3), **_identity(os.getpid())}) + "\n"
    for _ in range(3):  # a stale lock is taken over, then the name is tried again
        _check_lock_path(folder, path)
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


def remove_leftovers(out: Path) -> list[str]:
    """Remove the build folders (and files) of killed runs beside ``out``: only the tool's temporary names
    standing for ``out`` or for its beside lock. Call it holding the beside lock. Returns their names."""
    lock_name = beside_lock_path(out).name
    removed = []
    for leftover in sorted(out.parent.iterdir()):
        if not (is_temp_name(leftover.name, of=out.name) or is_temp_name(leftover.name, of=lock_name)):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover.name)
    if removed:
        log.info("removed %d build folder(s) of an interrupted run beside %s: %s", len(removed), out,
                 describe_removed(removed))
    return removed


def beside_lock_path(out: str | os.PathLike) -> Path:
    """Where ``beside_lock`` keeps the lock of ``out``: a hidden file next to it."""
    out = Path(out)
    return out.parent / f".{out.name}{LOCK_FILE}"


def acquire_beside(out: str | os.PathLike, command: str) -> Path:
    """Lock ``out`` with a lock file beside it (its parent is created if missing); returns the lock file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return _acquire_at(beside_lock_path(out), out, command)


@contextlib.contextmanager
def beside_lock(out: str | os.PathLike, command: str) -> Iterator[None]:
    """The lock of a command that builds ``out`` in a hidden folder beside it and renames it into place at
    the end (``import``, ``make-data``): the lock file sits beside ``out`` too, so the rename never moves
    it. Holding it, no other run is building ``out``, so the build folders of ``out`` left there (the
    tool's temporary names standing for OUT, ``.jodiffusion-<token>.OUT.tmp`` / ``.old``, see
    ``jodiffusion.utils.tempnames``) belong to killed runs and are removed, each named in the log. A sibling
    of any other name (``.OUT.2024-backup.old``, ``.OUT.notes.tmp``) is the user's and is never touched."""
    path = acquire_beside(out, command)
    try:
        remove_leftovers(out)
        yield
    finally:
        release(path)
