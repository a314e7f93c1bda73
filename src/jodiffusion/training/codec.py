"""A learned image codec: a small diffusers ``AutoencoderKL`` trained from scratch on a dataset's training
images, as a stage of its own (like the annotation VAE).

Why: the weight-free pixel-unshuffle codec hands the joint model 3 f^2 raw pixel values per latent cell,
and a denoiser trained from scratch on a CPU leaves their fine structure as coloured noise. A learned
autoencoder of about a million parameters reconstructs the flat-coloured shapes data to a few grey levels
in a few minutes, and its latents are smooth enough that the joint model's images come out flat and sit
on their masks (docs/results.md).

The stage: the train images fitted to the working size the way every generative stage fits them
(``resize_pair``, ``data.resize``), a reconstruction loss (L1 or MSE) plus a small KL term, the project's
one training loop; then the latents' mean and std on the train images become the model's ``shift_factor``
and ``scaling_factor`` (1 / std), and ``<output_dir>/image_codec`` is written as a diffusers
AutoencoderKL folder that ``codec.kind=sd-vae codec.path=<it>`` loads. ``eval.json`` holds the val
reconstruction error (mean absolute error in grey levels of 255, PSNR) and the parameter count; the scorer,
and ``evaluate_codec`` (`eval-codec`), are in evaluation/scoring.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jodiffusion.data.registry import build_split
from jodiffusion.data.transforms import ImageSet
from jodiffusion.engine.loop import TrainingStage, fit
from jodiffusion.engine.run import TrainingRun
from jodiffusion.engine.runtime import EpochShuffleSampler, make_lr_scheduler, make_optimizer
from jodiffusion.evaluation.scoring import reconstruction_error
from jodiffusion.models.persistence import num_parameters
from jodiffusion.training.config import CodecModelConfig, CodecRunConfig
from jodiffusion.training.vae import mean_and_std
from jodiffusion.utils.io import write_json_atomic

log = logging.getLogger("jodiffusion")

MODEL_DIR = "image_codec"  # the exported model inside a run folder


def build_autoencoder(model: CodecModelConfig, sample_size: int):
    """A fresh diffusers ``AutoencoderKL`` of the given widths (weights from torch's current seed)."""
    # imported here: diffusers takes seconds to import and only the codec paths need it (CLI start-up)
    from diffusers import AutoencoderKL

    blocks = len(model.block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=tuple(model.block_out_channels),
                         down_block_types=("DownEncoderBlock2D",) * blocks,
                         up_block_types=("UpDecoderBlock2D",) * blocks, latent_channels=model.latent_channels,
                         layers_per_block=model.layers_per_block, norm_num_groups=model.norm_num_groups,
                         sample_size=sample_size, mid_block_add_attention=model.mid_attention)


class _Reconstruction(nn.Module):
    """One training forward pass as a module's ``forward`` (what a distributed wrapper calls): the
    reconstruction from a posterior sample and the KL per latent value of each image."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.autoencoder.encode(images).latent_dist
        latents = posterior.sample()
        recon = self.autoencoder.decode(latents).sample
        return recon, posterior.kl() / latents[0].numel()


def _reconstructor(autoencoder: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images -> their reconstruction from the posterior mean (what the joint model's cache encodes)."""
    def reconstruct(images: torch.Tensor) -> torch.Tensor:
        return autoencoder.decode(autoencoder.encode(images).latent_dist.mean).sample
    return reconstruct


@torch.no_grad()
def measure_latent_stats(autoencoder: nn.Module, images: ImageSet, max_samples: int, batch_size: int,
                         device) -> tuple[float, float]:
    """Mean and std of the posterior means over up to ``max_samples`` evenly spread images: the codec's
    ``shift_factor`` and ``1 / scaling_factor``, so the joint model sees latents of mean 0 and std 1."""
    picks = np.unique(np.linspace(0, len(images) - 1, min(max_samples, len(images))).round().astype(int))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(images, picks.tolist()), batch_size=batch_size)
    return mean_and_std(autoencoder.encode(batch.to(device)).latent_dist.mean for batch in loader)


@dataclass(frozen=True)
class CodecResult:
    """A finished train-codec run: the exported codec and the figures ``eval.json`` also holds."""
    export: Path
    mae: float           # val reconstruction error, grey levels of 255
    psnr: float          # dB
    parameters: int


def train_codec(cfg: CodecRunConfig, resume: str | None = None, overwrite: bool = False,
                progress: bool = True) -> CodecResult:
    """Train, measure the latent scale, export ``<output_dir>/image_codec`` and evaluate it."""
    with TrainingRun(cfg, "train-codec", resume, overwrite, progress) as run:  # holds the folder's lock
        return _train_codec(cfg, run)


def _train_codec(cfg: CodecRunConfig, run: TrainingRun) -> CodecResult:
    accelerator, main = run.accelerator, run.main
    size = cfg.data.size

    train_set = build_split(cfg.data, cfg.data.train_split)
    val_set = build_split(cfg.data, cfg.data.val_split)
    train_images = ImageSet(train_set, size, cfg.data.resize, hflip=cfg.hflip)
    val_images = ImageSet(val_set, size, cfg.data.resize)
    # keyed: each image's flip comes from its own seed (exact on resume, whatever the workers)
    sampler = EpochShuffleSampler(len(train_images), cfg.train.seed, keyed=True)
    loader = torch.utils.data.DataLoader(
        train_images, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.train.num_workers,
        drop_last=len(train_images) >= cfg.train.batch_size * accelerator.num_processes,
        persistent_workers=cfg.train.num_workers > 0)

    autoencoder = run.start(lambda: build_autoencoder(cfg.model, max(size)))
    model = _Reconstruction(autoencoder)
    optimizer = make_optimizer(model.parameters(), cfg.train)
    scheduler = make_lr_scheduler(optimizer, cfg.train)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    raw = accelerator.unwrap_model(model).autoencoder
    if main:
        log.info("image codec: %.2fM parameters, %d latent channels, downsample %d, %dx%d images, %d train / "
                 "%d val", num_parameters(raw) / 1e6, cfg.model.latent_channels, cfg.model.downsample, *size,
                 len(train_images), len(val_images))
    reconstruction_loss = F.l1_loss if cfg.loss == "l1" else F.mse_loss

    def step(images, seed):
        recon, kl = model(images)
        rec = reconstruction_loss(recon.float(), images)
        kl = kl.float().mean()
        return rec + cfg.kl_weight * kl, {"rec": rec.detach(), "kl": kl.detach()}

    def evaluate_now() -> dict[str, float]:
        raw.eval()
        try:
            error = reconstruction_error(_reconstructor(raw), val_images, cfg.eval_batch_size, accelerator.device,
                                         accelerator.process_index, accelerator.num_processes, accelerator)
        finally:
            raw.train()
        return {"val_mae": error["mae"], "val_psnr": error["psnr"]}

    def export(final_step: int) -> CodecResult:
        raw.eval()
        stats_images = ImageSet(train_set, size, cfg.data.resize)
        mean, std = measure_latent_stats(raw, stats_images, cfg.scale_samples, cfg.eval_batch_size,
                                         accelerator.device)
        raw.register_to_config(scaling_factor=float(1.0 / std), shift_factor=float(mean))
        error = reconstruction_error(_reconstructor(raw), val_images, cfg.eval_batch_size, accelerator.device,
                                     accelerator.process_index, accelerator.num_processes, accelerator,
                                     progress=run.progress)
        model_dir = run.run_dir / MODEL_DIR
        result = CodecResult(model_dir, error["mae"], error["psnr"], num_parameters(raw))
        if main:
            raw.save_pretrained(model_dir, safe_serialization=True)
            report = {"split": cfg.data.val_split, **error, "parameters": result.parameters,
                      "downsample": cfg.model.downsample, "latent_channels": cfg.model.latent_channels,
                      "resolution": list(size), "latent_mean": mean, "latent_std": std,
                      "scaling_factor": 1.0 / std, "shift_factor": mean, "steps": final_step}
            write_json_atomic(run.run_dir / "eval.json", report)
            run.log(final_step, val_mae=error["mae"], val_psnr=error["psnr"], latent_mean=mean, latent_std=std)
            log.info("latent mean %.4f std %.4f -> scaling_factor %.4f", mean, std, 1.0 / std)
            log.info("reconstruction on %s: mean absolute error %.2f / 255, PSNR %.2f dB", cfg.data.val_split,
                     error["mae"], error["psnr"])
        return result

    return fit(run, TrainingStage(model, optimizer, scheduler, loader, step, modules={"model": raw},
                                  desc="train-codec", evaluate=evaluate_now, export=export))

