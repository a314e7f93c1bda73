"""Learning curves of a joint-model run: quality against training samples, from its ``metrics.jsonl``.

The joint stage logs its probe figures every ``probe_every`` steps as ``probe/<figure>`` together with
``samples_seen`` (training/joint.py). One picture shows whether more steps still buy quality and which
figure stalls: prompt adherence, image-mask agreement, the background tone per caption word (with the
real data's values as dashed lines), colour and count adherence, per-class IoU (shape fidelity) and loss.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from jodiffusion.utils.io import atomic_path

PREFIX = "probe/"
# (panel title, figures, y label)
PANELS = (
    ("prompt adherence (classes)", ("prompt_precision", "prompt_recall"), "%"),
    ("image-mask agreement", ("agreement_miou",), "mIoU"),
    ("background grey per caption word", ("background_dark", "background_light"), "grey level (0-255)"),
    ("attribute adherence", ("background_accuracy", "colour_accuracy", "count_accuracy"), "%"),
)


def read_curves(metrics_path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """``figure -> (training samples, values)`` for every ``probe/*`` figure and the training loss."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    path = Path(metrics_path)
    if not path.is_file():
        return curves
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    # samples per step, from the first row that records both: the loss rows carry only their step
    per_step = next((float(r["samples_seen"]) / int(r["step"]) for r in rows if "samples_seen" in r and r.get("step")),
                    None)
    for row in rows:
        step = row.get("step")
        if step is None:
            continue
        samples = row.get("samples_seen", step * per_step if per_step else step)
        for key, value in row.items():
            if isinstance(value, (int, float)) and (key.startswith(PREFIX) or key == "loss"):
                xs, ys = curves.setdefault(key.removeprefix(PREFIX), ([], []))
                xs.append(float(samples))
                ys.append(float(value))
    return curves


def learning_curves_figure(curves: Mapping[str, tuple[list[float], list[float]]], path: str | Path,
                           reference: Mapping[str, float] | None = None, title: str = "learning curves") -> Path:
    """Panels of quality against training samples; ``reference``: the real data's probe figures (dashed)."""
    # imported here: matplotlib takes a second to import; only the figures need it (CLI start-up)
    from matplotlib.figure import Figure  # the Agg canvas: no pyplot, no display
    from matplotlib.ticker import FuncFormatter

    iou = sorted(k for k in curves if k.startswith("iou_") and k != "iou_background")
    panels = [p for p in PANELS if any(f in curves for f in p[1])]
    if iou:
        panels.append(("shape fidelity: per-class IoU", tuple(iou), "IoU"))
    if "loss" in curves:
        panels.append(("training loss", ("loss",), "loss"))
    if not panels:
        raise ValueError("no learning-curve figures to draw: train with probe_every > 0")
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), dpi=100, layout="constrained")
    fig.suptitle(title)
    for n, (name, keys, ylabel) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, n + 1)
        for key in keys:
            if key in curves:
                xs, ys = curves[key]
                line = ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3,
                               label=key.removeprefix("iou_"))[0]
                if reference and reference.get(key) is not None:
                    ax.axhline(reference[key], color=line.get_color(), linestyle="--", linewidth=1)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training samples")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"))
        ax.set_ylabel(ylabel)
        if name == "training loss":
            ax.set_yscale("log")
        ax.legend(fontsize=7 if len(keys) > 3 else 8, ncol=2 if len(keys) > 4 else 1)
    if reference:
        fig.text(0.01, 0.005, "dashed: the real data's value", fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


__all__ = ["learning_curves_figure", "read_curves"]
