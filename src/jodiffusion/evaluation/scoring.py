"""A trained model scored on a dataset split: the library calls of `eval-vae` (:func:`evaluate_vae`),
`eval-codec` (:func:`evaluate_codec`) and `eval-seg` (:func:`evaluate_segmenter`), and the reconstruction
scorers the training stages also call while they train (:func:`reconstruction_confusion` for the annotation
VAE, :func:`reconstruction_error` for the learned image codec). `eval-joint` is in joint_quality.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from jodiffusion.data.config import DataConfig
from jodiffusion.data.registry import build_split
from jodiffusion.data.transforms import ImageSet, MaskDataset, pad_collate
from jodiffusion.errors import ConfigError
from jodiffusion.models.annotation_vae import AnnotationVAE
from jodiffusion.models.image_codec import StableDiffusionVAECodec
from jodiffusion.models.persistence import num_parameters
from jodiffusion.segmentation.inference import evaluate
from jodiffusion.segmentation.metrics import ConfusionMatrix
from jodiffusion.segmentation.models import load_segmenter
from jodiffusion.utils.precision import autocast_dtype
from jodiffusion.utils.progress import progress_bar

GREY_LEVELS = 127.5        # images live in [-1, 1]: one unit there is 127.5 grey levels of 255


def reconstruction_confusion(model: AnnotationVAE, masks: MaskDataset, batch_size: int, device, rank: int = 0,
                             world: int = 1, progress: bool = True) -> ConfusionMatrix:
    """Reconstruction confusion matrix at full resolution (each process takes every world-th mask)."""
    cfg = model.config
    subset = torch.utils.data.Subset(masks, list(range(rank, len(masks), world)))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size,
                                         collate_fn=pad_collate(cfg.downsample, cfg.ignore_index))
    cm = ConfusionMatrix(cfg.num_classes, cfg.ignore_index)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in progress_bar(loader, desc="eval", disable=not progress, leave=False):
            batch = batch.to(device)
            pred = model.decode_to_mask(model.encode(batch))
            cm.update(pred.cpu(), batch.cpu())
    model.train(was_training)
    return cm


def evaluate_vae(model_dir: str | Path, data: DataConfig, split: str | None = None, batch_size: int = 8,
                 device: str | None = None, progress: bool = True) -> tuple[ConfusionMatrix, tuple[str, ...]]:
    """Reconstruction confusion matrix of a trained annotation VAE on a dataset split (full resolution)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AnnotationVAE.from_pretrained(model_dir).to(device)
    dataset = build_split(data, split or data.val_split)
    if dataset.classes.num_classes != model.config.num_classes:
        raise ConfigError(f"the model at {model_dir} has {model.config.num_classes} classes but dataset "
                          f"'{data.name}' has {dataset.classes.num_classes}")
    cm = reconstruction_confusion(model, MaskDataset(dataset), batch_size, device, progress=progress)
    return cm, dataset.classes.names


@torch.no_grad()
def reconstruction_error(reconstruct: Callable[[torch.Tensor], torch.Tensor], images: ImageSet, batch_size: int,
                         device, rank: int = 0, world: int = 1, accelerator=None, progress: bool = False) -> dict:
    """Mean absolute error (grey levels of 255) and PSNR (dB, of the split's mean squared error) of the
    reconstructions of ``images``; each process takes every world-th image, the sums are reduced."""
    subset = torch.utils.data.Subset(images, list(range(rank, len(images), world)))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # |error|, error^2, values
    for batch in progress_bar(loader, desc="eval", disable=not progress, leave=False):
        batch = batch.to(device)
        error = (reconstruct(batch).float().clamp(-1, 1) - batch).double()
        sums += torch.stack([error.abs().sum(), (error * error).sum(), torch.tensor(error.numel(), device=device)])
    if accelerator is not None and world > 1:
        sums = accelerator.reduce(sums, "sum")
    count = max(float(sums[2]), 1.0)
    mse01 = float(sums[1]) / count / 4.0  # in [0, 1] units
    return {"mae": float(sums[0]) / count * GREY_LEVELS, "psnr": 10 * math.log10(1.0 / max(mse01, 1e-12)),
            "images": len(images)}


def evaluate_codec(model_dir: str | Path, data: DataConfig, split: str | None = None, batch_size: int = 16,
                   device: str | None = None, progress: bool = True) -> dict:
    """Reconstruction error of an exported codec (loaded as ``codec.kind=sd-vae`` loads it) on a split at
    ``data.size``."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    codec = StableDiffusionVAECodec.from_pretrained(model_dir).to(device)
    split = split or data.val_split
    images = ImageSet(build_split(data, split), data.size, data.resize)
    codec.check_size(*data.size)
    report = reconstruction_error(lambda x: codec.decode(codec.encode(x, sample=False)), images, batch_size,
                                  device, progress=progress)
    return {"split": split, **report, "parameters": num_parameters(codec)}


def evaluate_segmenter(model_dir: str | Path, data: DataConfig, split: str | None = None, batch_size: int = 8,
                       device: str | None = None, progress: bool = True) -> tuple[ConfusionMatrix, tuple[str, ...]]:
    """Confusion matrix of a trained segmenter on a dataset split, at full resolution."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_segmenter(model_dir)
    dataset = build_split(data, split or data.val_split, progress=progress)
    if tuple(config.class_names) != tuple(dataset.classes.names):
        raise ConfigError(f"the segmenter at {model_dir} was trained on classes ({', '.join(config.class_names)}) "
                          f"but dataset '{data.name}' has ({', '.join(dataset.classes.names)})")
    cm = evaluate(model.to(dev), dataset, config.input_size, batch_size, dev, amp_dtype=autocast_dtype("auto", dev),
                  progress=progress)
    return cm, dataset.classes.names
