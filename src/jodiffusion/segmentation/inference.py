"""Run a segmenter on images and score it on a dataset split, at full resolution (`eval-seg`'s
``evaluate_segmenter``, evaluation/scoring.py, loads a segmenter folder and calls :func:`evaluate`).

Images are resized to the segmenter's training frame for the network, the logits are resized back
to the image's size (bilinear) and the argmax taken: predictions and scores are at the resolution
of the original masks, whatever size the network saw.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jodiffusion.data.base import SegmentationDataset
from jodiffusion.segmentation.metrics import ConfusionMatrix
from jodiffusion.segmentation.models import load_segmenter
from jodiffusion.utils.precision import autocast_dtype
from jodiffusion.utils.progress import progress_bar


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    return autocast_dtype("auto", device)


def segment_logits(model: torch.nn.Module, images: torch.Tensor, input_size: tuple[int, int] | None = None,
                   amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, H, W, 3) uint8 images on the model's device -> (B, K, H, W) float32 logits: the images are
    resized to ``input_size`` for the network and the logits resized back (bilinear)."""
    x = images.permute(0, 3, 1, 2).float().div_(255)         # (B, 3, H, W)
    h, w = x.shape[-2:]
    if input_size is not None and (h, w) != tuple(input_size):
        x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=True)
    amp = torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with amp:
        logits = model(x).float()                             # (B, K, h', w')
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SegmentationDataset, input_size: tuple[int, int] | None,
             batch_size: int, device, rank: int = 0, world: int = 1, amp_dtype: torch.dtype | None = None,
             progress: bool = True) -> ConfusionMatrix:
    """Full-resolution confusion matrix over a dataset split (each process takes every world-th image)."""
    device = torch.device(device)
    cm = ConfusionMatrix(dataset.classes.num_classes, dataset.classes.ignore_index)
    was_training = model.training
    model.eval()
    indices = list(range(rank, len(dataset), world))
    for start in progress_bar(range(0, len(indices), batch_size), desc="eval", disable=not progress, leave=False):
        chunk = indices[start:start + batch_size]
        images = [dataset.load_image(i) for i in chunk]
        masks = [dataset.load_mask(i) for i in chunk]
        # images of different sizes go through one at a time
        groups = [list(range(len(chunk)))] if len({m.shape for m in masks}) == 1 else [[j] for j in range(len(chunk))]
        for group in groups:
            batch = torch.from_numpy(np.stack([images[j] for j in group])).to(device)
            pred = segment_logits(model, batch, input_size, amp_dtype).argmax(1)
            cm.update(pred, torch.from_numpy(np.stack([masks[j] for j in group])).to(device))
    model.train(was_training)
    return cm


def _resolve_model(model, input_size, device) -> tuple[torch.nn.Module, tuple[int, int] | None, torch.device]:
    if isinstance(model, (str, Path)):
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        net, config = load_segmenter(model)
        return net.to(device), input_size or config.input_size, device
    return model, input_size, next(model.parameters()).device


@torch.no_grad()
def predict_proba(model: torch.nn.Module | str | Path, images, input_size: tuple[int, int] | None = None,
                  batch_size: int = 16, device: str | None = None):
    """Class probabilities (B, K, H, W) float32 for uint8 images (B, H, W, 3).

    ``model``: a segmenter folder (its training size is used and it is loaded on ``device``) or a
    module (used where it is; ``input_size`` (H, W) optional). Numpy in gives numpy out; a tensor
    gives a tensor on the images' device. For many calls, load once with ``models.load_segmenter``.
    """
    net, size, dev = _resolve_model(model, input_size, device)
    as_numpy = not torch.is_tensor(images)
    images_t = torch.from_numpy(np.ascontiguousarray(images)) if as_numpy else images
    if images_t.ndim != 4 or images_t.shape[-1] != 3 or images_t.dtype != torch.uint8:
        raise ValueError(f"images must be (B, H, W, 3) uint8, got {tuple(images_t.shape)} {images_t.dtype}")
    was_training = net.training
    net.eval()
    out = [segment_logits(net, images_t[i:i + batch_size].to(dev), size, _amp_dtype(dev)).softmax(1)
           for i in range(0, len(images_t), batch_size)]
    net.train(was_training)
    probs = torch.cat(out)
    return probs.cpu().numpy() if as_numpy else probs.to(images_t.device)


def predict(model: torch.nn.Module | str | Path, images, input_size: tuple[int, int] | None = None,
            batch_size: int = 16, device: str | None = None):
    """Class ids (B, H, W) int64 for uint8 images (B, H, W, 3); see :func:`predict_proba`."""
    return predict_proba(model, images, input_size, batch_size, device).argmax(1)

