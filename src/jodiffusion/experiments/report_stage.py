"""The report folder of a pipeline run: figures, metrics.json and index.html.

Always rebuilt (it takes seconds), so it reflects every stage, skipped or freshly run. It only reads and
draws: every figure comes from the stages' results (the data's own figures from the dataset-figures
stage, what is sampled from the models from the model-figures stage, model_figures.py) and the pipeline
hands it the metrics with the stage times; no model is loaded here.
  pairs.png        generated pairs (image | mask | overlay) with their prompts
  real_vs_generated.png  real training pairs beside generated ones
  trajectory.png   the denoising trajectory of a few pairs (the paper's Fig. 4)
  class_histogram.png  real vs synthetic class pixel frequencies
  mask_refinement.png  generated masks before and after mask optimisation
  learning_curves.png  the joint model's quality against training samples (when it logged its probe)
  codec_reconstruction.png  real val images beside the learned image codec's reconstructions (with a codec stage)
  metrics.json, index.html
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.config import DataConfig
from jodiffusion.data.layout import IMAGES_DIR, MASKS_DIR
from jodiffusion.data.registry import build_dataset
from jodiffusion.data.transforms import resize_pair
from jodiffusion.experiments.config import SYNTHETIC_SPLIT
from jodiffusion.experiments.model_figures import (
    CODEC_FILE,
    REFINEMENT_FILE,
    classes_of,
    first_records,
    load_arrays,
    load_trajectory,
)
from jodiffusion.experiments.results import DatasetFigures, GeneratedSet, JointStage, ModelFigures
from jodiffusion.report.curves import learning_curves_figure, read_curves
from jodiffusion.report.figures import (
    class_histogram,
    pairs_figure,
    real_vs_generated,
    reconstruction_figure,
    refinement_figure,
    trajectory_figure,
)
from jodiffusion.report.html import write_report
from jodiffusion.utils.io import write_json_atomic

REPORT_DIR = "report"


def _first_pairs(folder: Path, n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """The first ``n`` generated pairs and their prompts, in index order (from manifest.jsonl)."""
    images, masks, prompts = [], [], []
    for record in first_records(folder, n):
        stem = record["stem"]
        image_path = next((folder / IMAGES_DIR / SYNTHETIC_SPLIT).glob(f"{stem}.*"))
        with Image.open(image_path) as im:
            images.append(np.asarray(im.convert("RGB")))
        with Image.open(folder / MASKS_DIR / SYNTHETIC_SPLIT / f"{stem}.png") as im:
            masks.append(np.asarray(im))
        prompts.append(record["prompt"])
    return images, masks, prompts


def _codec_figure(metrics: dict, samples: ModelFigures, out: Path) -> tuple[str, str]:
    """Real val images at the working size beside the learned codec's reconstructions."""
    saved = load_arrays(samples, CODEC_FILE)
    real, recon = list(saved["real"]), list(saved["reconstructions"])
    reconstruction_figure(real, recon, out / "codec_reconstruction.png", max_rows=len(real))
    return ("codec_reconstruction.png", f"The learned image codec: real val images, their reconstructions and the "
                                        f"error (row titles: mean absolute error; over the val split "
                                        f"{metrics['codec_reconstruction_mae']:.1f} / 255, PSNR "
                                        f"{metrics['codec_reconstruction_psnr']:.1f} dB).")


def draw_pipeline_report(out: Path, data: DataConfig, joint: JointStage, synthetic: GeneratedSet,
                         stats: DatasetFigures, samples: ModelFigures,
                         metrics: dict) -> tuple[list[tuple[str, str]], ClassInfo]:
    """Draw the figures into ``out``; returns them as (file, caption) in page order, and the classes."""
    out.mkdir(parents=True, exist_ok=True)
    classes = classes_of(samples)
    figures = []

    images, masks, prompts = _first_pairs(synthetic.out, 8)
    pairs_figure(images, masks, prompts, classes, out / "pairs.png")
    figures.append(("pairs.png", "Generated pairs (image | mask | overlay) and the prompts they were drawn from."))

    real_train = build_dataset(data, data.train_split)
    step = max(1, len(real_train) // 6)  # spread over the split: the first files are often one scene
    real = [(real_train.load_image(i), real_train.load_mask(i)) for i in range(0, len(real_train), step)][:6]
    gen_size = images[0].shape[:2]
    if real[0][0].shape[:2] != gen_size:  # another size than the model's: show them at the model's size
        real = [resize_pair(i, m, gen_size, data.resize, real_train.classes.ignore_index) for i, m in real]
    real_vs_generated(real, list(zip(images, masks, strict=True)), classes, out / "real_vs_generated.png",
                      scale=2 if max(gen_size) <= 96 else 1)
    figures.insert(0, ("real_vs_generated.png", "Real training pairs (left) beside generated pairs (right), "
                                                "each mask drawn over its image."))

    trajectory_figure(load_trajectory(samples), samples.prompts, classes, out / "trajectory.png")
    figures.append(("trajectory.png", "Denoising trajectory: the predicted clean image and mask at several "
                                      "solver steps (as in the paper's Fig. 4)."))

    frequency = stats.class_pixel_frequency
    class_histogram(*([frequency[s][name] for name in classes.names] for s in ("real", "synthetic")),
                    classes, out / "class_histogram.png")
    figures.append(("class_histogram.png", "Share of pixels per class, real training set vs generated set."))

    refined = load_arrays(samples, REFINEMENT_FILE)
    refinement_figure(list(refined["images"]), list(refined["before"]), list(refined["after"]), classes,
                      out / "mask_refinement.png")
    figures.append(("mask_refinement.png", f"Mask optimisation (tau = {samples.tau} pixels): generated masks "
                                           "before and after small regions take their boundary's majority label."))

    # The conditioning probe on real pairs: the reference every generated figure is read against.
    curves = read_curves(joint.export.parent / "metrics.jsonl")
    if any(k != "loss" for k in curves):
        learning_curves_figure(curves, out / "learning_curves.png", reference=stats.probe_real,
                               title="joint model: quality against training samples")
        figures.append(("learning_curves.png", "Learning curves of the joint model: the probe's figures on pairs "
                                               "drawn every few training steps; dashed lines: the real data."))

    if samples.codec:
        figures.append(_codec_figure(metrics, samples, out))

    return figures, classes


def write_pipeline_report(out: Path, metrics: dict, figures: list[tuple[str, str]], classes: ClassInfo,
                          title: str = "JoDiffusion pipeline report") -> None:
    """``metrics.json`` and ``index.html`` beside the figures ``draw_pipeline_report`` drew."""
    write_json_atomic(out / "metrics.json", metrics)
    write_report(out, metrics, figures, title, metrics["stage_seconds"], classes)
