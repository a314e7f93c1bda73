"""Benchmark mask optimisation (``jodiffusion.masks.refine.refine_mask``) against a naive method.

    .venv/bin/python benchmarks/bench_refine.py [--size 512] [--masks 20] [--tau 20] [--connectivity 4]

It makes masks that look like a diffusion model's raw output (a few large class regions with wavy
borders, a few medium blobs and several hundred small specks), runs the fast implementation and the
naive one on the same masks in this one process (one core), checks that both give identical
outputs and prints the time per mask of each and the speedup.

The naive method is also the reference that ``tests/test_refine.py`` compares against: label each
class with ``scipy.ndimage.label``, dilate every small component over the full image with a 3x3
``binary_dilation``, take the mode of the ring (ignore excluded, ties to the smallest label), decide
everything from the input and apply all decisions at once.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

STRUCTURES = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}
RING = np.ones((3, 3), dtype=bool)


def refine_mask_naive(mask: np.ndarray, tau: int = 20, connectivity: int = 4,
                      include_background: bool = False, background_id: int | None = None,
                      ignore_index: int = 255) -> np.ndarray:
    """Straightforward, slow reference for ``refine_mask`` (same semantics, output only)."""
    out = mask.copy()
    for value in np.unique(mask):
        if value == ignore_index or (background_id is not None and value == background_id
                                     and not include_background):
            continue
        labels, n = ndimage.label(mask == value, structure=STRUCTURES[connectivity])
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        for comp_id in range(1, n + 1):
            if areas[comp_id] >= tau:
                continue
            comp = labels == comp_id
            ring = ndimage.binary_dilation(comp, structure=RING) & ~comp
            votes = mask[ring]
            votes = votes[votes != ignore_index]
            if votes.size == 0:
                continue
            candidates, counts = np.unique(votes, return_counts=True)
            out[comp] = candidates[np.argmax(counts)]  # np.unique sorts: ties go to the smallest label
    return out


def count_regions(mask: np.ndarray, connectivity: int = 4) -> int:
    """Connected regions of all values (ignore included), counted one class at a time."""
    return sum(ndimage.label(mask == v, structure=STRUCTURES[connectivity])[1] for v in np.unique(mask))


def make_mask(rng: np.random.Generator, size: int = 512, num_classes: int = 21, n_specks: int = 430,
              ignore_index: int = 255) -> np.ndarray:
    """A synthetic raw generated mask: large wavy regions, some medium blobs, many small specks."""
    h = w = size
    # Large regions: nearest of a few seeds under a smooth random warp, so borders are wavy.
    n_seeds = int(rng.integers(4, 8))
    classes = np.concatenate([[0], rng.choice(np.arange(1, num_classes), size=3, replace=False)])
    seed_cls = rng.choice(classes, size=n_seeds)
    seeds = rng.uniform(0, size, size=(n_seeds, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = ndimage.gaussian_filter(rng.normal(size=(2, h, w)).astype(np.float32), sigma=(0, 24, 24))
    warp *= 40.0 / (np.abs(warp).max() + 1e-6)
    dist = ((yy[None] + warp[0] - seeds[:, 0, None, None]) ** 2
            + (xx[None] + warp[1] - seeds[:, 1, None, None]) ** 2)
    mask = seed_cls[dist.argmin(axis=0)].astype(np.uint8)
    # Medium blobs (mostly above tau): a few dozen discs of radius 3..8.
    for _ in range(int(rng.integers(20, 40))):
        cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(3, 9)
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, h), max(cx - r, 0), min(cx + r + 1, w)
        disc = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        mask[y0:y1, x0:x1][disc] = rng.choice(classes)
    # Specks: random subsets of small patches (1..~12 pixels), mostly of the classes in the image,
    # a few of other classes and of ignore, often sitting on region borders.
    for _ in range(n_specks):
        ph, pw = rng.integers(1, 5, size=2)
        cy, cx = rng.integers(0, h - ph), rng.integers(0, w - pw)
        patch = rng.random((ph, pw)) < 0.6
        patch[rng.integers(ph), rng.integers(pw)] = True
        u = rng.random()
        value = rng.choice(classes) if u < 0.8 else (ignore_index if u < 0.85 else rng.integers(num_classes))
        mask[cy:cy + ph, cx:cx + pw][patch] = value
    return mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="mask side in pixels (default 512)")
    parser.add_argument("--masks", type=int, default=20, help="number of masks (default 20)")
    parser.add_argument("--tau", type=int, default=20, help="area threshold (default 20)")
    parser.add_argument("--connectivity", type=int, choices=(4, 8), default=4)
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed passes of the fast method over all masks; the best is kept (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from jodiffusion.masks.refine import refine_mask

    rng = np.random.default_rng(args.seed)
    masks = [make_mask(rng, args.size) for _ in range(args.masks)]
    regions = [count_regions(m, args.connectivity) for m in masks]
    # The masks are VOC-like (class 0 in every one): id 0 is their background, kept as it is.
    kw = {"tau": args.tau, "connectivity": args.connectivity, "background_id": 0}
    small = [refine_mask(m, **kw)[1].small_components for m in masks]
    print(f"{args.masks} masks of {args.size}x{args.size}, tau={args.tau}, connectivity={args.connectivity}")
    print(f"connected regions per mask: mean {np.mean(regions):.0f} "
          f"(min {min(regions)}, max {max(regions)}); "
          f"small components (area < tau) per mask: mean {np.mean(small):.0f}")

    for m in masks[:2]:  # warm-up (imports, caches)
        refine_mask(m, **kw)
    times = np.zeros((args.repeat, len(masks)))  # every call timed on its own
    for r in range(args.repeat):
        fast_out = []
        for i, m in enumerate(masks):
            t0 = time.perf_counter()
            fast_out.append(refine_mask(m, **kw)[0])
            times[r, i] = time.perf_counter() - t0
    fast_ms = times.sum(axis=1).min() / len(masks) * 1e3  # mean over the masks, fastest pass
    median_ms = float(np.median(times)) * 1e3

    t0 = time.perf_counter()
    naive_out = [refine_mask_naive(m, **kw) for m in masks]
    naive_ms = (time.perf_counter() - t0) / len(masks) * 1e3

    mismatched = sum(not np.array_equal(a, b) for a, b in zip(fast_out, naive_out, strict=True))
    print(f"refine_mask: {fast_ms:.2f} ms/mask (mean of the fastest of {args.repeat} passes; "
          f"median call {median_ms:.2f} ms, slowest call {times.max() * 1e3:.2f} ms)")
    print(f"naive:       {naive_ms:.1f} ms/mask")
    print(f"speedup:     {naive_ms / fast_ms:.0f}x")
    print(f"outputs identical: {mismatched == 0} ({mismatched} of {len(masks)} masks differ)")
    return 0 if mismatched == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
