"""The report folder of a pipeline run: figures, metrics.json and index.html.

Always rebuilt (it takes seconds), so it reflects every stage, skipped or freshly run. It only draws:
every figure it names comes from the stages' results (the data's own figures from the dataset-figures
stage), and the pipeline hands it the metrics with the stage times.
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

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.config import DataConfig
from jodiffusion.data.layout import IMAGES_DIR, MASKS_DIR
from jodiffusion.data.registry import build_dataset
from jodiffusion.data.transforms import resize_pair
from jodiffusion.experiments.config import SYNTHETIC_SPLIT
from jodiffusion.experiments.results import DatasetFigures, GeneratedSet, JointStage
from jodiffusion.generation.config import GenerateConfig
from jodiffusion.masks.refine import refine_mask
from jodiffusion.models.image_codec import StableDiffusionVAECodec
from jodiffusion.pipelines.batching import generate_batches
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline
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
    with open(folder / "manifest.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = sorted((r for r in records if r.get("kept", True)), key=lambda r: r["index"])
    for record in records[:n]:
        stem = record["stem"]
        image_path = next((folder / IMAGES_DIR / SYNTHETIC_SPLIT).glob(f"{stem}.*"))
        with Image.open(image_path) as im:
            images.append(np.asarray(im.convert("RGB")))
        with Image.open(folder / MASKS_DIR / SYNTHETIC_SPLIT / f"{stem}.png") as im:
            masks.append(np.asarray(im))
        prompts.append(record["prompt"])
    return images, masks, prompts


def _codec_figure(metrics: dict, data: DataConfig, out: Path, n: int = 6) -> tuple[str, str]:
    """Real val images at the working size beside the learned codec's reconstructions (posterior mean,
    as the joint model's latents are encoded)."""
    codec = StableDiffusionVAECodec.from_pretrained(metrics["codec_export"])
    val = build_dataset(data, data.val_split)
    picks = range(0, len(val), max(1, len(val) // n))
    real = [resize_pair(val.load_image(i), val.load_mask(i), data.size, data.resize, val.classes.ignore_index)[0]
            for i in picks][:n]
    x = torch.from_numpy(np.stack(real)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    recon = codec.decode(codec.encode(x, sample=False))
    recon = recon.add(1).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    reconstruction_figure(real, list(recon), out / "codec_reconstruction.png", max_rows=n)
    return ("codec_reconstruction.png", f"The learned image codec: real val images, their reconstructions and the "
                                        f"error (row titles: mean absolute error; over the val split "
                                        f"{metrics['codec_reconstruction_mae']:.1f} / 255, PSNR "
                                        f"{metrics['codec_reconstruction_psnr']:.1f} dB).")


def draw_pipeline_report(out: Path, data: DataConfig, generation: GenerateConfig, joint: JointStage,
                         synthetic: GeneratedSet, stats: DatasetFigures,
                         metrics: dict) -> tuple[list[tuple[str, str]], ClassInfo]:
    """Draw the figures into ``out``; returns them as (file, caption) in page order, and the classes."""
    out.mkdir(parents=True, exist_ok=True)
    synth_dir = synthetic.out
    figures = []

    images, masks, prompts = _first_pairs(synth_dir, 8)
    pipe = JoDiffusionPipeline.from_pretrained(joint.export, device="cuda" if torch.cuda.is_available() else "cpu")
    pairs_figure(images, masks, prompts, pipe.classes, out / "pairs.png")
    figures.append(("pairs.png", "Generated pairs (image | mask | overlay) and the prompts they were drawn from."))

    real_train = build_dataset(data, data.train_split)
    step = max(1, len(real_train) // 6)  # spread over the split: the first files are often one scene
    real = [(real_train.load_image(i), real_train.load_mask(i)) for i in range(0, len(real_train), step)][:6]
    gen_size = images[0].shape[:2]
    if real[0][0].shape[:2] != gen_size:  # another size than the model's: show them at the model's size

        real = [resize_pair(i, m, gen_size, data.resize, real_train.classes.ignore_index) for i, m in real]
    real_vs_generated(real, list(zip(images, masks, strict=True)), pipe.classes, out / "real_vs_generated.png",
                      scale=2 if max(gen_size) <= 96 else 1)
    figures.insert(0, ("real_vs_generated.png", "Real training pairs (left) beside generated pairs (right), "
                                                "each mask drawn over its image."))

    sampler = pipe.sampler.override(generation.steps, generation.guidance)
    # every step is kept (latents are small) and the frames picked afterwards: keeping every k-th step alone
    # cannot give an exact number of evenly spaced frames that also ends on the last step
    drawn = generate_batches(pipe, prompts[:3], 3, seed=generation.seed, sampler=sampler, trajectory_every=1)
    trajectory_figure(pipe, drawn.trajectory, prompts[:3], out / "trajectory.png")
    figures.append(("trajectory.png", "Denoising trajectory: the predicted clean image and mask at several "
                                      "solver steps (as in the paper's Fig. 4)."))

    frequency = stats.class_pixel_frequency
    class_histogram(*([frequency[s][name] for name in pipe.classes.names] for s in ("real", "synthetic")),
                    pipe.classes, out / "class_histogram.png")
    figures.append(("class_histogram.png", "Share of pixels per class, real training set vs generated set."))

    # Raw masks straight from the annotation VAE (no refinement), then the mask optimisation of the paper.
    raw = generate_batches(pipe, prompts[:6], 6, seed=generation.seed + 2, sampler=sampler)
    before = list(raw.masks)
    after = [refine_mask(m, tau=generation.tau, ignore_index=pipe.classes.ignore_index,
                         background_id=pipe.classes.background)[0] for m in before]
    refinement_figure(list(raw.images), before, after, pipe.classes, out / "mask_refinement.png")
    figures.append(("mask_refinement.png", f"Mask optimisation (tau = {generation.tau} pixels): generated masks "
                                           "before and after small regions take their boundary's majority label."))

    # The conditioning probe on real pairs: the reference every generated figure is read against.
    curves = read_curves(joint.export.parent / "metrics.jsonl")
    if any(k != "loss" for k in curves):
        learning_curves_figure(curves, out / "learning_curves.png", reference=stats.probe_real,
                               title="joint model: quality against training samples")
        figures.append(("learning_curves.png", "Learning curves of the joint model: the probe's figures on pairs "
                                               "drawn every few training steps; dashed lines: the real data."))

    if metrics.get("codec_export"):
        figures.append(_codec_figure(metrics, data, out))

    return figures, pipe.classes


def write_pipeline_report(out: Path, metrics: dict, figures: list[tuple[str, str]], classes: ClassInfo,
                          title: str = "JoDiffusion pipeline report") -> None:
    """``metrics.json`` and ``index.html`` beside the figures ``draw_pipeline_report`` drew."""
    write_json_atomic(out / "metrics.json", metrics)
    write_report(out, metrics, figures, title, metrics["stage_seconds"], classes)
