"""Mask optimisation: remove the speckle noise of generated masks.

Every connected component of a class whose area is below ``tau`` pixels is relabelled with the most
frequent label on its one-pixel outer boundary. :func:`refine_mask` does one mask (a few ms for a
512x512 mask on one core); :func:`jodiffusion.masks.folder.refine_folder` does a folder of mask PNGs
on several processes.

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

from dataclasses import asdict, dataclass

import numpy as np

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
    # scipy.sparse loads in about 0.4 s: imported here, not at the top, so that every CLI start (which
    # imports this module with the `refine` command) does not pay for it.
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

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
