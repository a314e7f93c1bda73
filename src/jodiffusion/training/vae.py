"""Stage 1: train the annotation VAE (paper, "Annotation VAE": cross-entropy only); its reconstruction
scorer, and ``evaluate_vae`` (`eval-vae`), are in evaluation/scoring.py."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jodiffusion.data.registry import build_split
from jodiffusion.data.transforms import MaskDataset, pad_collate
from jodiffusion.engine.loop import TrainingStage, evaluate_on_every_rank, fit
from jodiffusion.engine.run import TrainingRun
from jodiffusion.engine.runtime import EpochShuffleSampler, make_lr_scheduler, make_optimizer
from jodiffusion.errors import ConfigError
from jodiffusion.evaluation.scoring import reconstruction_confusion
from jodiffusion.models.annotation_vae import AnnotationVAE
from jodiffusion.segmentation.metrics import eval_report
from jodiffusion.training.config import VAERunConfig
from jodiffusion.utils.io import write_json_atomic

log = logging.getLogger("jodiffusion")

MODEL_DIR = "annotation_vae"  # the exported model inside a run folder


@dataclass(frozen=True)
class VAEResult:
    """A finished train-vae run: the exported model and the figures ``eval.json`` also holds."""
    export: Path
    miou: float          # reconstruction mIoU on the val split
    parameters: int


def balanced_class_weights(masks: MaskDataset, num_classes: int, clip: float = 10.0) -> torch.Tensor:
    """Inverse square-root frequency weights, clipped to [1/clip, clip] and normalised so the
    average weight over training pixels is 1 (the loss keeps its scale)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for i in range(len(masks)):
        m = masks._mask(i)
        counts += np.bincount(m[m < num_classes].ravel(), minlength=num_classes)[:num_classes]
    freq = counts / max(counts.sum(), 1.0)
    weights = 1.0 / np.sqrt(np.maximum(freq, 1e-12))  # absent classes never occur as targets
    weights = np.clip(weights / np.median(weights[freq > 0]), 1.0 / clip, clip)
    weights /= max((weights * freq).sum(), 1e-12)
    return torch.tensor(weights, dtype=torch.float32)


@torch.no_grad()
def measure_latent_stats(model: AnnotationVAE, masks: MaskDataset, max_samples: int, batch_size: int,
                         device) -> tuple[float, float]:
    """Mean and std of the encoder's latents over up to ``max_samples`` masks (padding excluded)."""
    cfg = model.config
    n = min(max_samples, len(masks))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(masks, list(range(n))), batch_size=batch_size,
                                         collate_fn=pad_collate(cfg.downsample, cfg.ignore_index))
    model.eval()
    return mean_and_std(model.encode(batch.to(device)) for batch in loader)


def mean_and_std(batches: Iterable[torch.Tensor]) -> tuple[float, float]:
    """Mean and std of every value of ``batches`` (latents), accumulated in float64: a latent scale."""
    total, total_sq, count = 0.0, 0.0, 0
    for z in batches:
        z = z.double()
        total += z.sum().item()
        total_sq += (z * z).sum().item()
        count += z.numel()
    mean = total / count
    return mean, max(total_sq / count - mean * mean, 1e-12) ** 0.5


def train_vae(cfg: VAERunConfig, resume: str | None = None, overwrite: bool = False,
              progress: bool = True) -> VAEResult:
    """Train, measure the latent scale, export ``<output_dir>/annotation_vae`` and evaluate it."""
    with TrainingRun(cfg, "train-vae", resume, overwrite, progress) as run:  # holds the folder's lock
        return _train_vae(cfg, run)


def _train_vae(cfg: VAERunConfig, run: TrainingRun) -> VAEResult:
    accelerator, main = run.accelerator, run.main

    train_set = build_split(cfg.data, cfg.data.train_split)
    val_set = build_split(cfg.data, cfg.data.val_split)
    classes = train_set.classes
    if cfg.model.num_classes == 0:
        cfg.model.num_classes = classes.num_classes
    elif cfg.model.num_classes != classes.num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the dataset has {classes.num_classes} "
                          "classes; set model.num_classes=0 to take it from the dataset")
    cfg.model.ignore_index = classes.ignore_index

    train_masks = MaskDataset(train_set, crop_size=cfg.crop_size, hflip=cfg.hflip)
    class_weights = None
    if cfg.class_balance:
        class_weights = balanced_class_weights(train_masks, cfg.model.num_classes).to(accelerator.device)
        if main:
            pairs = zip(classes.names, class_weights.tolist(), strict=True)
            log.info("class weights: %s", ", ".join(f"{n} {w:.2f}" for n, w in pairs))
    val_masks = MaskDataset(val_set)
    f = cfg.model.downsample
    # keyed: each mask's crop and flip come from its own seed (exact on resume, whatever the workers)
    sampler = EpochShuffleSampler(len(train_masks), cfg.train.seed, keyed=True)
    loader = torch.utils.data.DataLoader(
        train_masks, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.train.num_workers,
        drop_last=len(train_masks) >= cfg.train.batch_size * accelerator.num_processes,
        collate_fn=pad_collate(f, classes.ignore_index), persistent_workers=cfg.train.num_workers > 0)

    model = run.start(lambda: AnnotationVAE(cfg.model), classes)
    optimizer = make_optimizer(model.parameters(), cfg.train)
    scheduler = make_lr_scheduler(optimizer, cfg.train)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    raw_model: AnnotationVAE = accelerator.unwrap_model(model)
    if main:
        log.info("annotation VAE: %.2fM parameters, %d classes, latent %dx/%d, %d train / %d val masks",
                 raw_model.num_parameters() / 1e6, cfg.model.num_classes, cfg.model.latent_channels, f,
                 len(train_masks), len(val_masks))

    def step(masks, seed):
        logits, _ = model(masks, latent_noise=cfg.latent_noise)
        loss = F.cross_entropy(logits.float(), masks, weight=class_weights, ignore_index=classes.ignore_index)
        return loss, {}

    def evaluate_now() -> dict[str, float]:
        return {"val_miou": evaluate_on_every_rank(reconstruction_confusion, accelerator, raw_model, val_masks,
                                                   cfg.eval_batch_size, progress=False).miou()}

    def export(final_step: int) -> VAEResult:
        # Measure the latent scale on the (un-augmented) training masks, evaluate, export.
        stats_masks = MaskDataset(train_set, cache=False)
        mean, std = measure_latent_stats(raw_model, stats_masks, cfg.scale_samples, cfg.eval_batch_size,
                                         accelerator.device)
        raw_model.config.shift_factor = float(mean)
        raw_model.config.scale_factor = float(1.0 / std)
        cm = evaluate_on_every_rank(reconstruction_confusion, accelerator, raw_model, val_masks, cfg.eval_batch_size,
                                    progress=run.progress)
        model_dir = run.run_dir / MODEL_DIR
        report = eval_report(cm, classes.names, split=cfg.data.val_split)  # every process scored the whole split
        result = VAEResult(model_dir, report["miou"], raw_model.num_parameters())
        if main:
            raw_model.save_pretrained(model_dir)
            report.update(latent_mean=mean, latent_std=std, parameters=result.parameters, steps=final_step)
            write_json_atomic(run.run_dir / "eval.json", report)
            run.log(final_step, val_miou=cm.miou(), latent_mean=mean, latent_std=std)
            log.info("latent mean %.4f std %.4f -> scale_factor %.4f", mean, std, raw_model.config.scale_factor)
            log.info("%s\nreconstruction mIoU on %s: %.2f", cm.table(classes.names), cfg.data.val_split, cm.miou())
        return result

    return fit(run, TrainingStage(model, optimizer, scheduler, loader, step, modules={"model": raw_model},
                                  desc="train-vae", evaluate=evaluate_now, export=export))

