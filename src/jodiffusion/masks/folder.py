"""Mask optimisation of a folder: every mask PNG under a folder refined into a new folder, on several
processes, keeping each file's PNG mode and palette (the algorithm itself is :mod:`.refine`).

The output folder is marked as written by ``jodiffusion refine``: ``--overwrite`` replaces only such a
folder, and only while it holds nothing but mask PNGs and the summary.
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from jodiffusion import __version__
from jodiffusion.errors import ConfigError, DatasetError, JoDiffusionError
from jodiffusion.masks.refine import RefineStats, refine_mask
from jodiffusion.utils.io import atomic_path, write_json_atomic
from jodiffusion.utils.lock import LOCK_FILE
from jodiffusion.utils.output_folder import OutputRules, check, output_folder
from jodiffusion.utils.ownership import OWNER_FILE
from jodiffusion.utils.progress import progress_bar
from jodiffusion.utils.tempnames import is_temp_name

SUMMARY_FILE = "refine_summary.json"
COMMAND = "refine"


def _foreign_files(out_dir: Path) -> list[str]:
    """What refine did not write in ``out_dir``: any file but PNGs (at any depth), the summary, the marker,
    the lock and temporary files."""
    ours = (SUMMARY_FILE, OWNER_FILE, LOCK_FILE)
    return sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")
                  if p.is_file() and p.suffix.lower() != ".png" and p.name not in ours and not is_temp_name(p.name))


RULES = OutputRules(COMMAND, foreign=_foreign_files,
                    not_empty="{folder}: output folder exists and is not empty; choose a new folder or pass "
                              "--overwrite (overwrite=True) to replace an earlier refine's output")


def read_mask_png(path: str | os.PathLike) -> tuple[np.ndarray, Image.Image]:
    """Read a single-channel mask PNG; returns the class-id array and the (loaded) PIL image."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot read this mask PNG ({exc}); re-create the file or move it "
                           "out of the folder") from exc
    if im.mode not in _MASK_MODES:
        raise DatasetError(f"{path}: mask PNG has mode {im.mode!r}; expected one class id per pixel "
                           f"(modes {', '.join(_MASK_MODES)}), e.g. an 8-bit palette PNG. Convert "
                           "colour masks to class ids first")
    return np.asarray(im), im


def write_mask_png_like(mask: np.ndarray, path: str | os.PathLike, like: Image.Image) -> None:
    """Write ``mask`` as a PNG with the mode, palette and transparency of ``like``, atomically."""
    out = Image.fromarray(mask)
    save_kw = {}
    if like.mode == "P":
        palette = like.palette
        raw = palette.mode if palette is not None else "RGB"
        colours = like.getpalette(raw)
        if colours:
            out.putpalette(colours, raw)
        else:
            out = out.convert("P")
        if "transparency" in like.info:
            save_kw["transparency"] = like.info["transparency"]
    with atomic_path(path) as tmp:
        out.save(tmp, format="PNG", **save_kw)


_MASK_MODES = ("P", "L", "I;16", "I", "1")


@dataclass(frozen=True)
class _Task:
    src: Path
    dst: Path
    tau: int
    connectivity: int
    include_background: bool
    background_id: int | None
    ignore_index: int


def _refine_file(task: _Task) -> tuple[str, dict | None, int]:
    """Worker: refine one file. Returns (error or "", stats dict or None, pixel count)."""
    try:
        mask, im = read_mask_png(task.src)
    except DatasetError as exc:
        return str(exc), None, 0
    refined, stats = refine_mask(mask, tau=task.tau, connectivity=task.connectivity,
                                 include_background=task.include_background,
                                 background_id=task.background_id, ignore_index=task.ignore_index)
    write_mask_png_like(refined, task.dst, im)
    return "", stats.to_dict(), int(mask.size)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_labels(ignore_index, background_id) -> None:
    """The ignore index and background as a classes file must give them: 8-bit labels, and not the same."""
    for value, what, flag in ((ignore_index, "ignore index", "--ignore-index"),
                              (background_id, "background id", "--background-id")):
        if value is None and what == "background id":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= 255:
            raise ConfigError(f"{flag} {value!r}: the {what} must be a label in 0..255 (masks are 8-bit PNGs); "
                              "give e.g. 255, or the value of your classes.json")
    if background_id is not None and background_id == ignore_index:
        raise ConfigError(f"--background-id {background_id} equals --ignore-index {ignore_index}: the ignore "
                          "label cannot be a class; give different values")


def refine_folder(in_dir: str | os.PathLike, out_dir: str | os.PathLike, tau: int = 20,
                  connectivity: int = 4, include_background: bool = False, workers: int | None = None,
                  ignore_index: int = 255, progress: bool = True, overwrite: bool = False,
                  background_id: int | None = None) -> dict:
    """Refine every mask PNG under ``in_dir`` (recursively) into the new folder ``out_dir``.

    Relative paths are kept, and so is each input's PNG mode and palette (and transparency), so a
    palette mask stays a palette mask with the same colours. Files are written atomically. The work
    is spread over ``workers`` processes (default: ``os.cpu_count()``; 1 runs in this process).
    A summary with the totals is written to ``out_dir/refine_summary.json`` and returned.
    ``background_id`` and ``include_background`` are as in :func:`refine_mask` (default: no class is
    background).

    Refuses (``JoDiffusionError``) when ``out_dir`` is ``in_dir`` or one contains the other, or when
    ``out_dir`` exists and is not empty unless ``overwrite=True``, which replaces only a folder an earlier
    refine wrote (its marker) that holds nothing but mask PNGs and the summary; anything else is refused,
    naming what would be lost. Masks that cannot be read are reported by name: the others
    are still written, the summary lists the failures, and then a ``DatasetError`` is raised.
    """
    started = time.perf_counter()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if int(tau) != tau or tau < 0:
        raise ConfigError(f"tau must be a non-negative pixel count, got {tau!r}")
    _check_labels(ignore_index, background_id)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if not in_dir.is_dir():
        raise DatasetError(f"{in_dir}: input folder not found; give the folder that holds the mask PNGs")
    src_root, dst_root = in_dir.resolve(), out_dir.resolve()
    if _is_within(dst_root, src_root) or _is_within(src_root, dst_root):
        raise JoDiffusionError(
            f"output folder {out_dir} and input folder {in_dir} overlap; refined masks go to a new "
            "folder next to the input, e.g. masks_refined/, so the raw masks stay untouched")
    check(out_dir, RULES, overwrite)  # nothing is read or written before this; again under the lock
    files = sorted(p for p in in_dir.rglob("*") if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise DatasetError(f"{in_dir}: no .png masks found (searched recursively)")
    # one writer (a second run into out_dir is refused, naming the first), checked again, cleared, marked
    with output_folder(out_dir, RULES, overwrite=overwrite):
        tasks = [_Task(p, out_dir / p.relative_to(in_dir), int(tau), connectivity, include_background,
                       background_id, ignore_index) for p in files]
        workers = min(workers, len(tasks))
        totals = RefineStats()
        failed: list[str] = []
        masks_changed = pixels_total = 0
        with progress_bar(total=len(tasks), desc="refine", unit="mask", disable=not progress) as bar:
            for error, stats, n_pixels in _run(tasks, workers):
                if error:
                    failed.append(error)
                else:
                    totals = totals + RefineStats(**stats)
                    masks_changed += stats["pixels_changed"] > 0
                    pixels_total += n_pixels
                bar.update()

        summary = {
            "jodiffusion_version": __version__, "in_dir": str(in_dir), "out_dir": str(out_dir), "tau": int(tau),
            "connectivity": connectivity,
            "include_background": include_background, "background_id": background_id,
            "ignore_index": ignore_index, "masks": len(tasks) - len(failed), "masks_changed": masks_changed,
            **totals.to_dict(), "pixels_total": pixels_total,
            "percent_pixels_changed": round(100.0 * totals.pixels_changed / max(pixels_total, 1), 4),
            "failed": failed, "seconds": round(time.perf_counter() - started, 3),
        }
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
        if failed:
            shown = "\n  ".join(failed[:5]) + ("\n  ..." if len(failed) > 5 else "")
            raise DatasetError(f"{len(failed)} of {len(tasks)} masks could not be read:\n  {shown}\nthe other "
                               f"masks were written to {out_dir} (see {SUMMARY_FILE}); fix or remove the "
                               "files above and run again with --overwrite")
        return summary


def _run(tasks: list[_Task], workers: int) -> Iterable[tuple[str, dict | None, int]]:
    if workers == 1:
        yield from map(_refine_file, tasks)
        return
    chunksize = max(1, min(32, len(tasks) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_refine_file, tasks, chunksize=chunksize)
