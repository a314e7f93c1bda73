"""The PNG figures of the demo's report: generated pairs, the denoising trajectory, mask optimisation,
real vs synthetic class frequencies and the learned image codec's reconstructions. Each function writes
one PNG (atomically) and returns its path."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jodiffusion.data.classes import ClassInfo
from jodiffusion.report.stats_plots import class_histogram_figure
from jodiffusion.report.viz import LINE_H, colorize, grid, overlay, pairs_grid, save_png


def _label(text: str, width: int, max_lines: int) -> str:
    """Wrap ``text`` into at most ``max_lines`` lines of ``width`` characters (ellipsis when cut).
    Non-Latin-1 characters become '?': Pillow's fallback bitmap font (no FreeType) cannot draw them."""
    text = " ".join(str(text).split()).encode("latin-1", "replace").decode("latin-1")
    lines = textwrap.wrap(text, width=width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(width - 3, 1)] + "..."
    return "\n".join(lines)


def _max_lines(tile_height: int, scale: int) -> int:
    # row titles must fit beside their tile, or they would run into the next row
    return max(1, (tile_height * scale) // LINE_H)


def pairs_figure(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], prompts: Sequence[str],
                 classes: ClassInfo, path: str | Path, max_rows: int = 12, scale: int = 2,
                 prompt_width: int = 28) -> Path:
    """Generated pairs, one per row: image | coloured mask | overlay, with the prompt beside the row."""
    lines = _max_lines(images[0].shape[0], scale) if len(images) else 1
    titles = [_label(p, prompt_width, lines) for p in prompts[:max_rows]]
    return save_png(pairs_grid(images, masks, classes, titles, max_rows=max_rows, scale=scale), path)


def real_vs_generated(real: Sequence[tuple[np.ndarray, np.ndarray]], generated: Sequence[tuple[np.ndarray, np.ndarray]],
                      classes: ClassInfo, path: str | Path, max_rows: int = 6, scale: int = 2) -> Path:
    """Real training pairs beside generated ones, one of each per row: image | mask overlay for both.
    The quickest check of a generator: do its images look like the data, and do its masks fit them?"""
    n = min(len(real), len(generated), max_rows)
    if n == 0:
        raise ValueError("real_vs_generated needs at least one real and one generated pair")
    rows = [[ri, overlay(ri, rm, classes), gi, overlay(gi, gm, classes)]
            for (ri, rm), (gi, gm) in zip(real[:n], generated[:n], strict=True)]
    return save_png(grid(rows, ["real image", "real mask", "generated image", "generated mask"], scale=scale), path)


def refinement_figure(images: Sequence[np.ndarray], before: Sequence[np.ndarray], after: Sequence[np.ndarray],
                      classes: ClassInfo, path: str | Path, truths: Sequence[np.ndarray] | None = None,
                      max_rows: int = 8, scale: int = 3) -> Path:
    """Mask optimisation, one example per row: image | [truth |] mask before | mask after.
    The row title gives the share of pixels the optimisation changed, so no-op rows stand out."""
    n = min(len(images), len(before), len(after), max_rows)
    if n == 0:
        raise ValueError("refinement_figure needs at least one (image, before, after)")
    rows, titles = [], []
    for i in range(n):
        row = [images[i]]
        if truths is not None:
            row.append(colorize(truths[i], classes))
        row += [colorize(before[i], classes), colorize(after[i], classes)]
        rows.append(row)
        changed = 100.0 * float(np.mean(np.asarray(before[i]) != np.asarray(after[i])))
        titles.append(f"{changed:.1f}%\nchanged")
    columns = ["image", *(["truth"] if truths is not None else []), "before", "after"]
    return save_png(grid(rows, columns, row_titles=titles, scale=scale), path)


def reconstruction_figure(images: Sequence[np.ndarray], reconstructions: Sequence[np.ndarray], path: str | Path,
                          max_rows: int = 6, scale: int = 2, gain: float = 4.0) -> Path:
    """An image codec's reconstructions, one image per row: real | reconstruction | error (the absolute
    difference, ``gain`` times brighter, so a few grey levels show). The row title gives the image's mean
    absolute error in grey levels of 255."""
    n = min(len(images), len(reconstructions), max_rows)
    if n == 0:
        raise ValueError("reconstruction_figure needs at least one image and its reconstruction")
    rows, titles = [], []
    for real, recon in zip(images[:n], reconstructions[:n], strict=True):
        diff = np.abs(real.astype(np.float32) - recon.astype(np.float32))
        rows.append([real, recon, np.clip(diff * gain, 0, 255).astype(np.uint8)])
        titles.append(f"{diff.mean():.1f}\n/ 255")
    return save_png(grid(rows, ["real", "reconstruction", f"error x{gain:g}"], row_titles=titles, scale=scale), path)


def frame_indices(steps: int, num_frames: int) -> list[int]:
    """``num_frames`` sampler step indices spread evenly over ``0..steps-1``, first and last included."""
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames} must be >= 1")
    if num_frames == 1:
        return [steps - 1]
    return sorted({int(round(v)) for v in np.linspace(0, steps - 1, min(num_frames, steps))})


@dataclass(frozen=True)
class TrajectoryFrames:
    """Frames of a denoising trajectory, decoded: ``images[f][b]`` and ``masks[f][b]`` are prompt b's predicted
    clean image and mask at frame f, taken at solver step ``steps[f]`` (from 0) and timestep ``timesteps[f]``."""

    images: np.ndarray      # (frames, prompts, H, W, 3) uint8
    masks: np.ndarray       # (frames, prompts, H, W) uint8
    steps: list[int]
    timesteps: list[int]
    num_steps: int          # solver steps in all


def trajectory_figure(frames: TrajectoryFrames, prompts: Sequence[str], classes: ClassInfo, path: str | Path,
                      scale: int = 2) -> Path:
    """The denoising trajectory (the paper's Fig. 4): for each prompt, a row of predicted clean images and a
    row of predicted clean masks, one column per frame, titled with its step and timestep."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("trajectory_figure needs at least one prompt")
    rows, titles = [], []
    lines = _max_lines(frames.images.shape[2], scale)
    for b, prompt in enumerate(prompts):
        rows.append([images[b] for images in frames.images])
        rows.append([colorize(masks[b], classes) for masks in frames.masks])
        titles += [_label(f"{b + 1}: {prompt}", 20, lines), "mask"]
    columns = [f"step {step + 1}/{frames.num_steps}\nt={t}" for step, t in zip(frames.steps, frames.timesteps,
                                                                                 strict=True)]
    return save_png(grid(rows, columns, row_titles=titles, scale=scale), path)


def class_histogram(real_freq, synth_freq, classes: ClassInfo | Sequence[str], path: str | Path, **kwargs) -> Path:
    """Real vs synthetic class frequencies; ``kwargs`` go to ``stats_plots.class_histogram_figure``."""
    names = list(classes.names) if isinstance(classes, ClassInfo) else list(classes)
    result = class_histogram_figure(real_freq, synth_freq, names, path, **kwargs)
    return Path(result) if result is not None else Path(path)
