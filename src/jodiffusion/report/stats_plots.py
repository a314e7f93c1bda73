"""The dataset-statistics plots (``jodiffusion stats``, the report's class histogram): class frequencies
side by side, object sizes per class and classes per image, real against synthetic. ``sets`` are
``DatasetStats`` (``evaluation/dataset_stats.py``, which computes them and calls these)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jodiffusion.utils.io import atomic_path

REAL_COLOUR, SYNTHETIC_COLOUR = "#4c72b0", "#dd8452"


def _new_figure(width: float, height: float):
    # A bare Figure renders with the Agg canvas: no pyplot, no global backend switch, no display needed.
    # matplotlib is imported here, not at the top: it takes a second, and the CLI imports this module.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _width_for(n: int) -> float:
    return min(max(6.0, 0.35 * n + 2.0), 40.0)


def class_histogram_figure(real_freq: Sequence[float] | None, synth_freq: Sequence[float] | None,
                           names: Sequence[str], path: str | Path, title: str = "class pixel frequency",
                           ylabel: str = "share of labelled pixels", log_scale: bool = False) -> Path:
    """Bars per class, real and synthetic side by side (either may be None), class names on the x axis."""
    return _save(draw_class_histogram(real_freq, synth_freq, names, title, ylabel, log_scale), path)


def draw_class_histogram(real_freq: Sequence[float] | None, synth_freq: Sequence[float] | None,
                         names: Sequence[str], title: str = "class pixel frequency",
                         ylabel: str = "share of labelled pixels", log_scale: bool = False):
    """The figure ``class_histogram_figure`` saves: one bar per class and set, real bars first."""
    series = [(lbl, np.asarray(f, dtype=float), c) for lbl, f, c in
              (("real", real_freq, REAL_COLOUR), ("synthetic", synth_freq, SYNTHETIC_COLOUR)) if f is not None]
    if not series:
        raise ValueError("class_histogram_figure needs real_freq, synth_freq or both")
    for label, freq, _ in series:
        if freq.shape != (len(names),):
            raise ValueError(f"{label} frequencies have shape {freq.shape}; expected one per class ({len(names)})")
    fig = _new_figure(_width_for(len(names)), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    width = 0.8 / len(series)
    for j, (label, freq, colour) in enumerate(series):
        ax.bar(x + (j - (len(series) - 1) / 2) * width, freq, width, label=label, color=colour)
    ax.set_xticks(x, list(names), rotation=60 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center",
                  fontsize=8 if len(names) > 30 else 10)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_scale:
        ax.set_yscale("log")
    ax.legend()
    return fig


def object_size_figure(sets: Sequence[Any], path: str | Path) -> Path:
    """Per class box plots of log10(object area / image area), one box per set, side by side."""
    names = sets[0].classes.names
    fig = _new_figure(_width_for(len(names)), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(sets)
    colours = (REAL_COLOUR, SYNTHETIC_COLOUR) if len(sets) == 2 else (REAL_COLOUR,) * len(sets)
    for j, (stats, colour) in enumerate(zip(sets, colours, strict=False)):
        data = [np.log10(np.asarray(s)) if s else np.array([np.nan]) for s in stats.object_sizes]
        positions = np.arange(len(names)) + (j - (len(sets) - 1) / 2) * width
        # classes without objects get an empty (NaN) box so positions stay aligned with the names
        boxes = ax.boxplot([d[~np.isnan(d)] for d in data], positions=positions, widths=width * 0.9,
                           patch_artist=True, showfliers=False, manage_ticks=False,
                           medianprops={"color": "black"})
        for patch in boxes["boxes"]:
            patch.set_facecolor(colour)
        ax.plot([], [], color=colour, linewidth=8, label=stats.name)
    ax.set_xticks(np.arange(len(names)), list(names), rotation=60 if len(names) > 8 else 0,
                  ha="right" if len(names) > 8 else "center", fontsize=8 if len(names) > 30 else 10)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("log10(object area / image area)")
    ax.set_title("object size per class (connected components)")
    ax.legend()
    return _save(fig, path)


def classes_per_image_figure(sets: Sequence[Any], path: str | Path) -> Path:
    """Share of images holding 0, 1, 2, ... non-background classes, one bar per set."""
    top = max((max(s.classes_per_image, default=0) for s in sets), default=0)
    fig = _new_figure(max(5.0, 0.5 * top + 3), 4.0)
    ax = fig.add_subplot()
    x = np.arange(top + 1)
    width = 0.8 / len(sets)
    colours = (REAL_COLOUR, SYNTHETIC_COLOUR) if len(sets) == 2 else (REAL_COLOUR,) * len(sets)
    for j, (stats, colour) in enumerate(zip(sets, colours, strict=False)):
        hist = np.bincount(np.asarray(stats.classes_per_image, dtype=np.int64), minlength=top + 1)
        ax.bar(x + (j - (len(sets) - 1) / 2) * width, hist / max(stats.num_images, 1), width, label=stats.name,
               color=colour)
    ax.set_xticks(x)
    ax.set_xlabel("non-background classes in the image")
    ax.set_ylabel("share of images")
    ax.set_title("classes per image")
    ax.legend()
    return _save(fig, path)
