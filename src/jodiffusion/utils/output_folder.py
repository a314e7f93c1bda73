"""One guard for the output folder of every command: the rules live here, each command only names its own.

``with output_folder(path, rules, overwrite=..., resume=...)`` takes a folder for ``jodiffusion <command>``:

1. one writer: the lock (``utils.lock``), in the folder, or beside it for a command that builds the folder
   aside and renames it in (``rules.beside``: import, make-data, the latent cache), so that the rename never
   moves the lock;
2. a folder holding anything finished is refused unless the run continues it (``resume``) or ``overwrite``
   is given; a folder holding only the tool's temporary files counts as empty (``utils.ownership.is_blank``);
3. ``overwrite`` replaces only a folder the same command wrote (its marker, or ``rules.owned`` for a command
   with its own proof) that holds nothing but the command's entries; anything else is refused, naming what
   would be lost;
4. in place, the folder is cleared for ``overwrite`` (all but the lock) and marked as the command's;
5. the dead builds of killed runs are removed: only the tool's own temporary names (``utils.tempnames``),
   in the folder (or anywhere under it, ``rules.nested``), or beside it for ``rules.beside``. Holding the
   lock, none of them can be a write under way.

``check`` is rule 1-3 without the lock, so that a command can refuse before its expensive work (loading a
model, rendering a dataset) and nothing is changed; the guard runs it again under the lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jodiffusion.errors import JoDiffusionError
from jodiffusion.utils import lock
from jodiffusion.utils.ownership import (
    OWNER_FILE,
    clear_folder,
    describe_entries,
    foreign_entries,
    is_blank,
    read_owner,
    remove_temp_files,
    write_owner,
)
from jodiffusion.utils.ranks import main_decides
from jodiffusion.utils.tempnames import describe_removed

log = logging.getLogger("jodiffusion")


@dataclass(frozen=True)
class OutputRules:
    """What one command's output folder may hold and how that command refuses.

    ``entries``: the top-level names the command writes, all that ``overwrite`` may delete. ``foreign``:
    for a command whose entries are no fixed names (refine writes PNGs at any depth), what in a folder it
    did not write. ``owned`` / ``proof``: a command that proves ownership by a file of its own instead of the
    marker (make-data's ``dataset.json``) and what a refusal calls that proof. ``not_empty``: the refusal of
    a non-empty folder without ``overwrite``, with ``{folder}`` and optionally ``{hint}`` (said when the
    same command wrote it). ``kind``: what a refusal calls such a folder. ``error``: the error class of every
    refusal. ``beside``: the folder is built
    aside and renamed in. ``nested``: temporary files of killed writes are looked for in subfolders too."""

    command: str
    entries: tuple[str, ...] = ()
    not_empty: str = "{folder} is not empty; pass --overwrite to replace it or choose another output folder"
    kind: str = "folder"
    error: type[JoDiffusionError] = JoDiffusionError
    beside: bool = False
    nested: bool = False
    owned: Callable[[Path], bool] | None = None
    proof: str | None = None
    foreign: Callable[[Path], list[str]] | None = None

    def is_owned(self, folder: Path) -> bool:
        return self.owned(folder) if self.owned is not None else read_owner(folder) == self.command


def check(path: str | os.PathLike, rules: OutputRules, overwrite: bool = False, resume: bool = False) -> bool:
    """Raise (``rules.error``, naming the folder; nothing is changed) unless ``jodiffusion <command>`` may
    write ``path``: a new or blank folder, one the run continues (``resume``), or one ``overwrite`` may
    replace. Returns True when what is there is to be replaced."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise rules.error(f"{parent} is a file, so {path} cannot be created under it; choose another "
                              "output folder")
    if path.exists() and not path.is_dir():
        if overwrite:
            raise rules.error(f"--overwrite refused: {path} is a file, not a folder `jodiffusion {rules.command}` "
                              "wrote; nothing was changed. Choose another output folder")
        raise rules.error(f"{path} is a file, not a folder; choose another output folder. Nothing was changed")
    if resume or not path.exists() or is_blank(path):
        return False
    if not overwrite:
        hint = (f" (an earlier `jodiffusion {rules.command}` wrote it: add --overwrite to replace it)"
                if rules.is_owned(path) else "")
        raise rules.error(rules.not_empty.format(folder=path, hint=hint))
    if not rules.is_owned(path):
        other = read_owner(path)
        proof = rules.proof or f"{OWNER_FILE} marker of `jodiffusion {rules.command}`"
        why = f"it was written by `jodiffusion {other}`" if other and other != rules.command else f"it holds no {proof}"
        entries = [p.name for p in path.iterdir() if p.name != lock.LOCK_FILE]
        raise rules.error(
            f"--overwrite refused: {path} is not a {rules.kind} `jodiffusion {rules.command}` wrote ({why}); "
            f"replacing it would delete {describe_entries(path, entries)}. Nothing was changed: move those away "
            "yourself or choose another output folder")
    foreign = rules.foreign(path) if rules.foreign is not None else foreign_entries(path, rules.entries)
    if foreign:
        raise rules.error(
            f"--overwrite refused: {path} holds what `jodiffusion {rules.command}` did not write: "
            f"{describe_entries(path, foreign)}; replacing the folder would delete it. Nothing was changed: "
            "move those away or choose another output folder")
    return True


def prepare(path: str | os.PathLike, rules: OutputRules, overwrite: bool = False, resume: bool = False) -> bool:
    """Rules 2-5 on ``path``, whose lock the caller holds: check, then (in place) clear what ``overwrite``
    replaces, create and mark the folder (unless ``resume`` continues one holding something finished), and
    remove the temporary files of killed writes. A beside folder
    is left as it is: the command's rename replaces it. Returns ``check``'s answer."""
    path = Path(path)
    replace = check(path, rules, overwrite, resume)
    fresh = not path.exists() or is_blank(path)
    if rules.beside:
        lock.remove_leftovers(path)
        return replace
    if replace:
        clear_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    if not resume or fresh:  # a folder continued as it is keeps its marker (or its lack of one)
        write_owner(path, rules.command)  # first, so that a kill at any later moment leaves a folder known as ours
    removed = remove_temp_files(path, nested=rules.nested)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted write in %s: %s", len(removed), path,
                 describe_removed(removed))
    return replace


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, rules: OutputRules, *, overwrite: bool = False, resume: bool = False,
                  enabled: bool = True, world: int = 1,
                  take: Callable[[], object] | None = None) -> Iterator[Path]:
    """Hold ``path`` for ``jodiffusion <rules.command>`` for the block: lock it, then ``prepare`` it (or call
    ``take``, a command's own preparation built on ``check`` / ``prepare``). A refusal releases the lock
    and removes the folder if the guard created it, so it leaves nothing behind. ``enabled=False``: a
    process that is not the main one of its group of ``world``; the main one takes the folder for all, and
    when it is refused every process raises at once (``utils.ranks.main_decides``)."""
    path = Path(path)
    created = not path.exists()

    def take_folder() -> Path:
        if rules.beside:
            held = lock.acquire_beside(path, rules.command)
        else:
            if take is None:  # before the lock creates the folder: a refusal changes nothing
                check(path, rules, overwrite, resume)
            held = lock.acquire(path, rules.command)
        try:
            take() if take is not None else prepare(path, rules, overwrite, resume)
        except BaseException:
            _let_go(held, path, created)
            raise
        return held

    held = main_decides(enabled, world, take_folder)
    try:
        yield path
    finally:
        if held is not None:
            _let_go(held, path, created)


def _let_go(held: Path, path: Path, created: bool) -> None:
    lock.release(held)
    if created and path.is_dir():
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty: a refused first run leaves nothing

