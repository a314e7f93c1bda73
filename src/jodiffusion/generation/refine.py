"""Mask optimisation: remove the speckle noise of generated masks.

Every connected component of a class whose area is below ``tau`` pixels is relabelled with the most
frequent label on its one-pixel outer boundary. :func:`refine_mask` does one mask (a few ms for a
512x512 mask on one core); :func:`refine_folder` does a folder of mask PNGs on several processes.

Precise semantics (the reference implementation in ``benchmarks/bench_refine.py`` and the tests
follow the same definitions):

* **Components.** Pixels of equal value that are connected through ``connectivity`` (4: edge
  neighbours, 8: edge and corner neighbours) form a component. Every class id gets its own
  components; components of ``ignore_index`` are never relabelled. ``background_id`` is the
  dataset's background class (pass ``classes.background``): its components are relabelled only when
  ``include_background`` is true. ``background_id=None`` (the default, and the value of datasets
  without a background such as CamVid, whose id 0 is Sky, or Cityscapes, whose id 0 is road) makes
  no class special: small components of every class are relabelled. A component is *small* when its
  area (pixel count) is strictly less than ``tau``: a component of exactly ``tau`` pixels is kept.
* **Outer boundary ("ring").** The ring of a component C is the set of pixels that are not in C and
  lie in the 3x3 neighbourhood of at least one pixel of C, i.e. ``binary_dilation(C, ones((3, 3)))
  & ~C``, clipped to the image. The same 3x3 ring is used for both connectivities (connectivity only
  decides what a component is), so corner-touching pixels vote too. Each ring pixel counts once per
  component, however many pixels of C it touches.
* **Vote.** The new label is the most frequent value among the ring pixels, ``ignore_index`` pixels
  excluded (ignore is never chosen); a tie goes to the smallest label. A component whose ring has no
  non-ignore pixel (it is surrounded by ignore, or it fills the image) is left unchanged. The
  background class *can* win the vote.
* **Order independence.** Every decision is taken from the *input* mask and all decisions are then
  applied at once, so a speck next to another speck votes with that speck's input label and the
  result does not depend on the order of classes or components.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from jodiffusion.errors import ConfigError, DatasetError, JoDiffusionError
from jodiffusion.utils.io import atomic_path, write_json_atomic

SUMMARY_FILE = "refine_summary.json"

# The 8 offsets (dy, dx) of the 3x3 neighbourhood that defines a component's ring.
_RING_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


@dataclass
class RefineStats:
    """What :func:`refine_mask` did to one mask (or, summed, to a folder)."""

    components_seen: int = 0  # connected components of all non-ignore values
    small_components: int = 0  # eligible components with area < tau (the ones that were voted on)
    relabelled: int = 0  # small components whose vote gave a label different from their own
    pixels_changed: int = 0  # pixels whose value differs between input and output

    def to_dict(self) -> dict:
        return asdict(self)

    def __add__(self, other: RefineStats) -> RefineStats:
        return RefineStats(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(),
                                                     strict=True)))


def _check_args(mask: np.ndarray, tau: int, connectivity: int) -> None:
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array of class ids, got shape {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(f"mask must hold integer class ids, got dtype {mask.dtype}; "
                         "convert it with mask.astype(np.uint8) (or a wider integer type)")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if int(tau) != tau or tau < 0:
        raise ValueError(f"tau must be a non-negative integer pixel count, got {tau!r}")


def _label_runs(flat: np.ndarray, h: int, w: int, connectivity: int):
    """Label the equal-value components of an (H*W,) mask in one pass over all classes.

    Neither SciPy nor NumPy labels the equal-value regions of a multi-valued image in one call
    (``scipy.ndimage.label`` is binary, so it would need one call per class), so this is a small
    run-based labelling written here: each row is cut into runs of equal value, runs of
    neighbouring rows that touch and hold the same value become graph edges, and SciPy's
    ``connected_components`` does the union-find on that graph of a few thousand runs instead of
    a quarter-million pixels.

    Returns ``(starts, lengths, run_comp, n_comp)``: the flat start index and length of every run
    (in raster order) and the component of every run.
    """
    m2 = flat.reshape(h, w)
    is_start = np.empty((h, w), dtype=bool)
    is_start[:, 0] = True
    np.not_equal(m2[:, 1:], m2[:, :-1], out=is_start[:, 1:])
    starts = np.flatnonzero(is_start)
    n_runs = starts.size
    lengths = np.diff(starts, append=h * w)  # runs never cross a row end: column 0 always starts one

    if h > 1:
        # Cut positions of two consecutive rows: every pair of vertically overlapping runs has one
        # column where one of them starts, so checking those columns finds every vertical contact.
        cut = np.flatnonzero(is_start[:-1] | is_start[1:])  # flat index in the upper row
        below = cut + w
        # The run holding position p is the last run starting at or before p.
        top = np.searchsorted(starts, cut, side="right") - 1
        bot = np.searchsorted(starts, below, side="right") - 1
        if connectivity == 4:
            same = flat[cut] == flat[below]
            src, dst = top[same], bot[same]
        else:
            # Diagonal contact between runs that do not overlap vertically: one of them starts in the
            # column just right of the other's end, and that column is a cut position too. At cut p:
            # upper-left pixel p-1 against lower pixel p+w, and lower-left p+w-1 against upper p.
            left = np.maximum(cut - 1, 0)
            inner = (cut % w) != 0
            # The run of p-1 is the run of p, or the one before it when a run starts at p.
            top_left = top - (inner & (flat[left] != flat[cut]))
            bot_left = bot - (inner & (flat[left + w] != flat[below]))
            # Three candidate edges per cut, all with the upper-row run as source, interleaved so
            # that the sources stay sorted (top_left <= top) and the CSR row pointers are a count.
            src = np.stack([top_left, top, top], axis=1)
            dst = np.stack([bot, bot, bot_left], axis=1)
            ok = np.stack([inner & (flat[left] == flat[below]), flat[cut] == flat[below],
                           inner & (flat[left + w] == flat[cut])], axis=1)
            src, dst = src[ok], dst[ok]
    else:
        src = dst = np.zeros(0, dtype=np.intp)
    # `src` is sorted, so the edge list is already in CSR order (no COO sort needed).
    indptr = np.zeros(n_runs + 1, dtype=np.int32)
    np.cumsum(np.bincount(src, minlength=n_runs), out=indptr[1:])
    graph = csr_matrix((np.ones(src.size, dtype=np.int8), dst.astype(np.int32), indptr),
                       shape=(n_runs, n_runs))
    n_comp, run_comp = connected_components(graph, directed=False)
    return starts, lengths, run_comp, n_comp


def refine_mask(mask: np.ndarray, tau: int = 20, connectivity: int = 4, include_background: bool = False,
                background_id: int | None = None, ignore_index: int = 255) -> tuple[np.ndarray, RefineStats]:
    """Relabel every small connected component of ``mask`` with the mode of its outer boundary.

    ``mask`` is an (H, W) integer array of class ids (any integer dtype). Returns a new array of the
    same shape and dtype, and a :class:`RefineStats`. The input is not modified. ``background_id``
    is the background class whose small components are kept (unless ``include_background``), or
    ``None`` for none; callers with a ``ClassInfo`` pass ``background_id=classes.background``. See
    the module docstring for the exact definitions (components, the 3x3 ring, the vote and its
    tie-break, order independence).
    """
    mask = np.asarray(mask)
    _check_args(mask, tau, connectivity)
    h, w = mask.shape
    out = mask.copy()
    if mask.size == 0:
        return out, RefineStats()
    flat = np.ascontiguousarray(mask).reshape(-1)

    starts, lengths, run_comp, n_comp = _label_runs(flat, h, w, connectivity)
    run_val = flat[starts]
    area = np.bincount(run_comp, weights=lengths, minlength=n_comp)
    comp_val = np.empty(n_comp, dtype=flat.dtype)
    comp_val[run_comp] = run_val
    not_ignore = comp_val != ignore_index
    if include_background or background_id is None:
        eligible = not_ignore
    else:
        eligible = not_ignore & (comp_val != background_id)
    small = eligible & (area < tau)
    stats = RefineStats(components_seen=int(not_ignore.sum()), small_components=int(small.sum()))
    if not stats.small_components:
        return out, stats

    # Pixels of the small components, with the small component (0..n_small-1) each belongs to.
    small_idx = np.cumsum(small) - 1
    sel = small[run_comp]
    s_start, s_len, s_comp = starts[sel], lengths[sel], small_idx[run_comp[sel]]
    n_pix = int(s_len.sum())
    pix = np.repeat(s_start - (np.cumsum(s_len) - s_len), s_len) + np.arange(n_pix)
    pix_comp = np.repeat(s_comp, s_len).astype(np.int32)

    # The rings, found from the ring pixels' side so that each (component, ring pixel) pair comes out
    # once without a global sort/unique. Indices are taken in the image padded by one pixel on each
    # side (so no bounds checks): `owner` holds the small component of every pixel (-1 elsewhere);
    # the candidate ring pixels are all 3x3 neighbours of small-component pixels (padding excluded);
    # a candidate q is in the ring of every distinct component among its own 8 neighbours, except
    # the component q itself belongs to.
    wp = w + 2
    offsets = [dy * wp + dx for dy, dx in _RING_OFFSETS]
    pix_p = pix + (pix // w) * 2 + (wp + 1)
    owner = np.full((h + 2) * wp, -1, dtype=np.int32)
    owner[pix_p] = pix_comp
    cand = np.zeros((h + 2, wp), dtype=bool)
    cand_flat = cand.reshape(-1)
    for off in offsets:
        cand_flat[pix_p + off] = True
    cand[0] = cand[-1] = False
    cand[:, 0] = cand[:, -1] = False
    ring_p = np.flatnonzero(cand_flat)
    nb = np.empty((ring_p.size, len(offsets)), dtype=np.int32)
    for j, off in enumerate(offsets):
        np.take(owner, ring_p + off, out=nb[:, j])
    nb[nb == owner[ring_p][:, None]] = -1  # neighbours in q's own component do not make q their ring
    nb.sort(axis=1)
    first = nb != -1
    first[:, 1:] &= nb[:, 1:] != nb[:, :-1]  # keep each component once per ring pixel
    comp_keys = nb[first]
    ring_pix = np.repeat(ring_p - wp - 2 * (ring_p // wp) + 1, first.sum(axis=1))  # back to unpadded
    ring_val = flat[ring_pix]
    keep = ring_val != ignore_index
    comp_keys, ring_val = comp_keys[keep], ring_val[keep]

    n_small = stats.small_components
    own = comp_val[small]
    new = own.copy()
    if ring_val.size:
        labels, val_idx = np.unique(ring_val, return_inverse=True)  # sorted: argmax ties -> smallest
        counts = np.bincount(comp_keys * labels.size + val_idx, minlength=n_small * labels.size)
        counts = counts.reshape(n_small, labels.size)
        voted = counts.any(axis=1)
        new[voted] = labels[counts.argmax(axis=1)[voted]]
    changed = new != own
    stats.relabelled = int(changed.sum())
    out_flat = out.reshape(-1)
    out_flat[pix] = new[pix_comp]
    stats.pixels_changed = int(lengths[sel][changed[s_comp]].sum())
    return out, stats


# --------------------------------------------------------------------------------------------------
# Folders of mask PNGs


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
    ``out_dir`` exists and is not empty unless ``overwrite=True`` (which overwrites files of the same
    name and leaves other files there). Masks that cannot be read are reported by name: the others
    are still written, the summary lists the failures, and then a ``DatasetError`` is raised.
    """
    started = time.perf_counter()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if int(tau) != tau or tau < 0:
        raise ConfigError(f"tau must be a non-negative pixel count, got {tau!r}")
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
    if out_dir.exists() and not out_dir.is_dir():
        raise JoDiffusionError(f"{out_dir}: exists and is not a folder; choose a new output folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise JoDiffusionError(f"{out_dir}: output folder exists and is not empty; choose a new folder "
                               "or pass --overwrite (overwrite=True) to write into it anyway")
    files = sorted(p for p in in_dir.rglob("*") if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise DatasetError(f"{in_dir}: no .png masks found (searched recursively)")

    tasks = [_Task(p, out_dir / p.relative_to(in_dir), int(tau), connectivity, include_background,
                   background_id, ignore_index) for p in files]
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = min(workers, len(tasks))
    totals = RefineStats()
    failed: list[str] = []
    masks_changed = pixels_total = 0
    with tqdm(total=len(tasks), desc="refine", unit="mask", disable=not progress) as bar:
        for error, stats, n_pixels in _run(tasks, workers):
            if error:
                failed.append(error)
            else:
                totals = totals + RefineStats(**stats)
                masks_changed += stats["pixels_changed"] > 0
                pixels_total += n_pixels
            bar.update()

    from jodiffusion import __version__

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
