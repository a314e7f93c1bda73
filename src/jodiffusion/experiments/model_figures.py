"""The model-figures stage: what the report shows of the trained models, sampled once and saved, so that the
report (report_stage.py) only reads and draws and a rerun of it samples nothing.

  trajectory.npz   the denoising trajectory of the first generated pairs' prompts, decoded at a few steps
  refinement.npz   raw generated masks (no refinement) and the same masks after mask optimisation
  codec.npz        real val images at the working size and the learned codec's reconstructions (codec stage)

The stage's record (``results.ModelFigures``) holds the prompts, the frames' steps and timesteps, tau and
the classes the masks are coloured by.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.config import DataConfig
from jodiffusion.data.registry import build_dataset
from jodiffusion.data.transforms import resize_pair
from jodiffusion.experiments.results import ModelFigures
from jodiffusion.generation.config import GenerateConfig
from jodiffusion.generation.output import MANIFEST_FILE
from jodiffusion.masks.refine import refine_mask
from jodiffusion.models.image_codec import StableDiffusionVAECodec
from jodiffusion.pipelines.batching import generate_batches
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline, Trajectory
from jodiffusion.report.figures import TrajectoryFrames, frame_indices

MODEL_FIGURES_DIR = "model-figures"
TRAJECTORY_FILE = "trajectory.npz"
REFINEMENT_FILE = "refinement.npz"
CODEC_FILE = "codec.npz"
TRAJECTORY_PROMPTS, REFINEMENT_PAIRS, CODEC_IMAGES, FRAMES = 3, 6, 6, 6


def first_records(folder: Path, n: int) -> list[dict]:
    """The manifest records of the first ``n`` kept pairs of a generated folder, in index order."""
    with open(folder / MANIFEST_FILE, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return sorted((r for r in records if r.get("kept", True)), key=lambda r: r["index"])[:n]


def trajectory_frames(pipe: JoDiffusionPipeline, trajectory: Trajectory, num_frames: int = FRAMES) -> TrajectoryFrames:
    """``num_frames`` entries of a trajectory, spread evenly with the last included, decoded to pixels."""
    frames = frame_indices(len(trajectory.latents), num_frames)
    decoded = []
    for f in frames:
        with torch.no_grad():
            decoded.append(pipe.decode(*trajectory.latents[f]))
    return TrajectoryFrames(np.stack([images for images, _ in decoded]), np.stack([masks for _, masks in decoded]),
                            [int(trajectory.steps[f]) for f in frames], [int(trajectory.timesteps[f]) for f in frames],
                            int(trajectory.num_steps))


def codec_reconstructions(codec_export: Path, data: DataConfig, n: int = CODEC_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """Real val images at the working size and the learned codec's reconstructions (posterior mean, as the
    joint model's latents are encoded)."""
    codec = StableDiffusionVAECodec.from_pretrained(codec_export)
    val = build_dataset(data, data.val_split)
    picks = range(0, len(val), max(1, len(val) // n))
    real = [resize_pair(val.load_image(i), val.load_mask(i), data.size, data.resize, val.classes.ignore_index)[0]
            for i in picks][:n]
    x = torch.from_numpy(np.stack(real)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    with torch.no_grad():
        recon = codec.decode(codec.encode(x, sample=False))
    recon = recon.add(1).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return np.stack(real), recon


def make_model_figures(joint_export: Path, generation: GenerateConfig, synthetic: Path, codec_export: Path | None,
                       data: DataConfig, folder: Path, progress: bool) -> ModelFigures:
    """Sample the figures' pairs with the generate stage's sampler settings and save their arrays in ``folder``."""
    prompts = [r["prompt"] for r in first_records(synthetic, REFINEMENT_PAIRS)]
    pipe = JoDiffusionPipeline.from_pretrained(joint_export, device="cuda" if torch.cuda.is_available() else "cpu")
    sampler = pipe.sampler.override(generation.steps, generation.guidance)
    # every step is kept (latents are small) and the frames picked afterwards: keeping every k-th step alone
    # cannot give an exact number of evenly spaced frames that also ends on the last step
    drawn = generate_batches(pipe, prompts[:TRAJECTORY_PROMPTS], TRAJECTORY_PROMPTS, seed=generation.seed,
                             sampler=sampler, trajectory_every=1, progress=progress, desc="trajectory")
    frames = trajectory_frames(pipe, drawn.trajectory)
    np.savez_compressed(folder / TRAJECTORY_FILE, images=frames.images, masks=frames.masks)
    # raw masks straight from the annotation VAE (no refinement), then the mask optimisation of the paper
    raw = generate_batches(pipe, prompts, REFINEMENT_PAIRS, seed=generation.seed + 2, sampler=sampler)
    after = [refine_mask(m, tau=generation.tau, ignore_index=pipe.classes.ignore_index,
                         background_id=pipe.classes.background)[0] for m in raw.masks]
    np.savez_compressed(folder / REFINEMENT_FILE, images=raw.images, before=raw.masks, after=np.stack(after))
    if codec_export is not None:
        real, recon = codec_reconstructions(codec_export, data)
        np.savez_compressed(folder / CODEC_FILE, real=real, reconstructions=recon)
    return ModelFigures(folder, pipe.classes.to_dict(), prompts[:TRAJECTORY_PROMPTS], frames.steps, frames.timesteps,
                        frames.num_steps, generation.tau, codec_export is not None)


def load_trajectory(figures: ModelFigures) -> TrajectoryFrames:
    with np.load(figures.out / TRAJECTORY_FILE) as saved:
        return TrajectoryFrames(saved["images"], saved["masks"], list(figures.steps), list(figures.timesteps),
                                figures.num_steps)


def load_arrays(figures: ModelFigures, name: str) -> dict[str, np.ndarray]:
    """The arrays of one of the stage's files (REFINEMENT_FILE, CODEC_FILE) by name."""
    with np.load(figures.out / name) as saved:
        return {key: saved[key] for key in saved.files}


def classes_of(figures: ModelFigures) -> ClassInfo:
    return ClassInfo.from_dict(figures.classes)
