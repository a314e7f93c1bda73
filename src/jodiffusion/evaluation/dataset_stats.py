"""Label statistics of a segmentation dataset, and a real-vs-synthetic comparison (JSON + PNG plots).

A generated set can look fine pair by pair and still be skewed as a whole: a rare class never
drawn, objects all of one size, one object per image where real scenes hold five. These statistics
put that side by side with the real data:

* class pixel frequency: share of the labelled (non-ignore) pixels per class;
* image frequency: share of the images that contain a class at all;
* object sizes: connected components of each class (8-connectivity: pixels touching at a corner
  form one object), each as a fraction of its image's area, so sets of different resolutions compare;
* classes per image: the number of non-background classes present in an image (the dataset's
  ``ClassInfo.background``, which is in every scene and says nothing; without one, every class counts).

Only masks are read. Pixel values that are neither a class id nor ``ignore_index`` are counted as
``invalid_pixels`` (``jodiffusion validate`` says which files hold them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jodiffusion.data.base import SegmentationDataset
from jodiffusion.data.classes import ClassInfo
from jodiffusion.errors import DatasetError
from jodiffusion.report.stats_plots import class_histogram_figure, classes_per_image_figure, object_size_figure
from jodiffusion.utils.io import write_json_atomic
from jodiffusion.utils.progress import progress_bar

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
STATS_FILE = "stats.json"
PLOT_FILES = {"pixel_frequency": "class_pixel_frequency.png", "image_frequency": "class_image_frequency.png",
              "object_sizes": "object_sizes.png", "classes_per_image": "classes_per_image.png"}


@dataclass
class DatasetStats:
    """Accumulated label statistics of one set; :meth:`update` adds one mask."""

    classes: ClassInfo
    name: str = "dataset"
    source: str = ""                     # where the masks came from (dataset, folder, split), for the report
    num_images: int = 0
    total_pixels: int = 0
    ignore_pixels: int = 0
    invalid_pixels: int = 0
    pixel_counts: np.ndarray = None      # (K,) labelled pixels per class
    image_counts: np.ndarray = None      # (K,) images that contain the class
    object_sizes: list[list[float]] = None  # per class: every component's area / its image's area
    classes_per_image: list[int] = field(default_factory=list)

    def __post_init__(self):
        k = self.classes.num_classes
        if self.pixel_counts is None:
            self.pixel_counts = np.zeros(k, dtype=np.int64)
        if self.image_counts is None:
            self.image_counts = np.zeros(k, dtype=np.int64)
        if self.object_sizes is None:
            self.object_sizes = [[] for _ in range(k)]
        self._background = np.array([self.classes.is_background(c) for c in range(k)], dtype=bool)

    def update(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"{self.name}: masks must be (H, W) class ids, got shape {mask.shape}")
        k, area = self.classes.num_classes, mask.size
        counts = np.bincount(mask.ravel(), minlength=256)
        self.num_images += 1
        self.total_pixels += area
        self.ignore_pixels += int(counts[self.classes.ignore_index])
        self.invalid_pixels += int(area - counts[:k].sum() - counts[self.classes.ignore_index])
        self.pixel_counts += counts[:k]
        present = np.flatnonzero(counts[:k])
        self.image_counts[present] += 1
        self.classes_per_image.append(int((~self._background[present]).sum()))
        # imported here: scipy.ndimage takes a third of a second to import (CLI start-up)
        from scipy import ndimage

        for c in present:
            labels, n = ndimage.label(mask == c, structure=EIGHT_CONNECTED)
            sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
            self.object_sizes[c].extend((sizes / area).tolist())

    # --- derived values ----------------------------------------------------------------------------

    def pixel_frequency(self) -> np.ndarray:
        return self.pixel_counts / max(int(self.pixel_counts.sum()), 1)

    def image_frequency(self) -> np.ndarray:
        return self.image_counts / max(self.num_images, 1)

    def to_dict(self) -> dict:
        names = self.classes.names
        per_image = np.asarray(self.classes_per_image, dtype=np.int64)
        histogram = np.bincount(per_image, minlength=1) if per_image.size else np.zeros(1, np.int64)
        return {
            "name": self.name,
            "source": self.source,
            "num_images": self.num_images,
            "classes": list(names),
            "total_pixels": self.total_pixels,
            "ignore_fraction": self.ignore_pixels / max(self.total_pixels, 1),
            "invalid_pixels": self.invalid_pixels,
            "pixel_frequency": dict(zip(names, self.pixel_frequency().tolist(), strict=True)),
            "image_frequency": dict(zip(names, self.image_frequency().tolist(), strict=True)),
            "object_sizes": {n: _size_summary(s) for n, s in zip(names, self.object_sizes, strict=True)},
            "classes_per_image": {"mean": float(per_image.mean()) if per_image.size else None,
                                  "histogram": {str(i): int(v) for i, v in enumerate(histogram)}},
        }


def _size_summary(sizes: Sequence[float]) -> dict:
    if not sizes:
        return {"count": 0, "mean": None, "median": None, "p10": None, "p90": None}
    a = np.asarray(sizes, dtype=np.float64)
    p10, median, p90 = np.quantile(a, [0.1, 0.5, 0.9]).tolist()
    return {"count": int(a.size), "mean": float(a.mean()), "median": median, "p10": p10, "p90": p90}


def compute_stats(dataset: SegmentationDataset, name: str = "dataset", max_images: int | None = None,
                  progress: bool = True, source: str = "") -> DatasetStats:
    """Statistics of the masks of ``dataset`` (the first ``max_images`` when given)."""

    stats = DatasetStats(dataset.classes, name=name, source=source)
    n = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    for i in progress_bar(range(n), desc=f"stats {name}", disable=not progress, unit="img"):
        stats.update(dataset.load_mask(i))
    return stats


def compare_stats(real: DatasetStats | None, synthetic: DatasetStats | None) -> dict:
    """``{"real", "synthetic", "comparison"}``; ``comparison`` (both given) holds per-class differences
    (synthetic - real) and the total-variation distance between the class pixel distributions
    (0: identical, 1: disjoint)."""
    if real is None and synthetic is None:
        raise ValueError("compare_stats needs at least one of real and synthetic")
    out = {"real": real.to_dict() if real else None, "synthetic": synthetic.to_dict() if synthetic else None,
           "comparison": None}
    if real is not None and synthetic is not None:
        _check_same_classes(real, synthetic)
        names = real.classes.names
        pix = synthetic.pixel_frequency() - real.pixel_frequency()
        img = synthetic.image_frequency() - real.image_frequency()
        out["comparison"] = {
            "pixel_frequency_tv_distance": float(0.5 * np.abs(pix).sum()),
            "pixel_frequency_difference": dict(zip(names, pix.tolist(), strict=True)),
            "image_frequency_difference": dict(zip(names, img.tolist(), strict=True)),
            "classes_never_in_synthetic": [n for n, r, s in zip(names, real.image_counts, synthetic.image_counts,
                                                                strict=True) if r and not s],
            "classes_per_image_mean_difference": _mean_or_nan(synthetic.classes_per_image)
            - _mean_or_nan(real.classes_per_image),
        }
    return out


def _mean_or_nan(values: Sequence[int]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _check_same_classes(real: DatasetStats, synthetic: DatasetStats) -> None:
    if tuple(real.classes.names) != tuple(synthetic.classes.names):
        raise DatasetError(f"the classes of '{synthetic.name}' do not match those of '{real.name}':\n"
                           f"  synthetic: {', '.join(synthetic.classes.names)}\n"
                           f"  real:      {', '.join(real.classes.names)}\n"
                           "compare a generated set with the dataset its model was trained on, or fix its classes.json")


def write_stats_report(real: DatasetStats | None, synthetic: DatasetStats | None, out_dir: str | Path) -> dict:
    """Write ``stats.json`` and the PNG plots to ``out_dir``; returns the JSON content, with the paths
    of the files written under ``"files"``."""
    report = compare_stats(real, synthetic)
    sets = [s for s in (real, synthetic) if s is not None]
    names = sets[0].classes.names
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "pixel_frequency": class_histogram_figure(
            real.pixel_frequency() if real else None, synthetic.pixel_frequency() if synthetic else None,
            names, out / PLOT_FILES["pixel_frequency"]),
        "image_frequency": class_histogram_figure(
            real.image_frequency() if real else None, synthetic.image_frequency() if synthetic else None,
            names, out / PLOT_FILES["image_frequency"], title="images containing each class",
            ylabel="share of images"),
        "object_sizes": object_size_figure(sets, out / PLOT_FILES["object_sizes"]),
        "classes_per_image": classes_per_image_figure(sets, out / PLOT_FILES["classes_per_image"]),
    }
    report["files"] = {key: p.name for key, p in files.items()}
    write_json_atomic(out / STATS_FILE, _json_safe(report))
    report["files"] = {key: str(p) for key, p in files.items()}
    return report


def _json_safe(obj):
    """NaN/inf -> None: stats.json stays strict JSON for other tools."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
