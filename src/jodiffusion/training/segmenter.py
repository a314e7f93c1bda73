"""Stage 5 (the proof): train a segmenter on real, synthetic or mixed pairs and score it on the REAL
validation split.

This is how generated data is judged: a segmenter trained on synthetic (or real + synthetic) pairs
must do well on real images (mIoU). The loop is the shared engine's (``engine.loop.fit``: resume,
graceful stop, checkpoints, ``metrics.jsonl``); the result is ``<output_dir>/segmenter``
(``config.json`` + ``model.safetensors``) and ``eval.json``. The run settings live in
``training/config.py`` (``SegRunConfig``), the training data (frame fitting, augmentation, mixed batches) in
``segmentation/data.py``, evaluation and prediction in ``segmentation/inference.py``.

Synthetic pairs enter in one of three ways: alone (``mix=synthetic``), as a fixed share of every batch
(``mix=real+synthetic``, ``synthetic_ratio``), or first and alone for ``synthetic_phase`` of the steps,
then real pairs alone (``mix=synthetic-then-real``: pre-train on the generated set, fine-tune on the real).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from jodiffusion.data.base import SegmentationDataset
from jodiffusion.data.registry import build_split
from jodiffusion.engine.loop import TrainingStage, evaluate_on_every_rank, fit
from jodiffusion.engine.run import TrainingRun
from jodiffusion.engine.runtime import make_lr_scheduler, make_optimizer
from jodiffusion.errors import ConfigError
from jodiffusion.models.persistence import num_parameters
from jodiffusion.segmentation.data import (
    MixedBatchSampler,
    TrainPairs,
    frame_size,
    synthetic_data_config,
)
from jodiffusion.segmentation.inference import evaluate
from jodiffusion.segmentation.metrics import eval_report
from jodiffusion.segmentation.models import RANDOM_INIT, SegmenterConfig, build_segmenter, save_segmenter
from jodiffusion.training.config import SegRunConfig
from jodiffusion.utils.io import write_json_atomic

log = logging.getLogger("jodiffusion")

MODEL_DIR = "segmenter"  # the exported model inside a run folder


def batch_split(cfg: SegRunConfig) -> tuple[int, int]:
    """(real, synthetic) samples in every batch; for the two-phase schedule, in a batch of each phase."""
    b = cfg.train.batch_size
    if cfg.mix == "real":
        return b, 0
    if cfg.mix == "synthetic":
        return 0, b
    if cfg.mix == "synthetic-then-real":
        return b, b
    n_syn = round(cfg.synthetic_ratio * b)
    if not 0 < n_syn < b:
        raise ConfigError(f"synthetic_ratio={cfg.synthetic_ratio} of train.batch_size={b} gives {n_syn} synthetic "
                          "samples per batch; mixing needs at least one of each: raise the batch size or "
                          "move the ratio towards 0.5")
    return b - n_syn, n_syn


def synthetic_steps(cfg: SegRunConfig) -> int:
    """Two-phase schedule: the optimizer steps trained on synthetic pairs before the real ones."""
    steps = cfg.train.steps
    if steps < 2:
        raise ConfigError(f"mix=synthetic-then-real needs train.steps >= 2 (one per phase), got {steps}")
    return min(max(round(cfg.synthetic_phase * steps), 1), steps - 1)


def _batch_sampler(cfg: SegRunConfig, sizes: list[int], n_real: int, n_syn: int,
                   num_processes: int) -> MixedBatchSampler:
    """Fixed shares per batch, or for the two-phase schedule all-synthetic batches until the switch, then
    all-real ones. Batch numbers count every process's micro-batches, so the switch falls on a step."""
    if cfg.mix != "synthetic-then-real":
        return MixedBatchSampler(sizes, [k for k in (n_real, n_syn) if k], cfg.train.seed,
                                 min_batches=num_processes)
    b = cfg.train.batch_size
    switch = synthetic_steps(cfg) * cfg.train.grad_accum * num_processes
    return MixedBatchSampler(sizes, [0, b], cfg.train.seed, min_batches=num_processes, switch_at=switch,
                             per_batch_after=[b, 0])


@dataclass(frozen=True)
class SegmenterResult:
    """A finished train-seg run: the exported segmenter and its scores on the real val split (as in
    ``eval.json``)."""
    export: Path
    miou: float | None                   # None when no class of the split has a defined IoU
    per_class: dict[str, float | None]   # IoU per class name
    synthetic_ratio: float               # the share of the samples drawn from the synthetic set (two-phase: steps)


def train_segmenter(cfg: SegRunConfig, resume: str | None = None, overwrite: bool = False,
                    progress: bool = True) -> SegmenterResult:
    """Train, evaluate on the real val split, export ``<output_dir>/segmenter`` and ``eval.json``."""
    with TrainingRun(cfg, "train-seg", resume, overwrite, progress) as run:  # holds the folder's lock
        return _train_segmenter(cfg, run)


def _train_segmenter(cfg: SegRunConfig, run: TrainingRun) -> SegmenterResult:
    accelerator, main, show = run.accelerator, run.main, run.progress

    val_set = build_split(cfg.data, cfg.data.val_split, show)
    classes = val_set.classes
    n_real, n_syn = batch_split(cfg)
    two_phase = cfg.mix == "synthetic-then-real"
    if two_phase:
        synthetic_steps(cfg)  # a run too short for two phases fails here, before any data is read
    sources: list[tuple[SegmentationDataset, bool]] = []
    if n_real:
        sources.append((build_split(cfg.data, cfg.data.train_split, show), False))
    if n_syn:
        synthetic = build_split(synthetic_data_config(cfg.synthetic, cfg.synthetic_split), cfg.synthetic_split, show,
                                 same_classes_as=classes)
        sources.append((synthetic, True))
    elif cfg.synthetic and main:
        log.info("mix=real: the synthetic set %s is not used", cfg.synthetic)
    frame = frame_size(sources[0][0], cfg.input_size)
    out_size = (cfg.crop_size, cfg.crop_size) if cfg.crop_size else frame
    pairs = TrainPairs(sources, frame, out_size, (cfg.min_scale, cfg.max_scale), cfg.hflip, classes.ignore_index,
                       cache=cfg.cache, resize=cfg.data.resize, dihedral=cfg.dihedral)
    sampler = _batch_sampler(cfg, [len(ds) for ds, _ in sources], n_real, n_syn, accelerator.num_processes)
    loader = torch.utils.data.DataLoader(pairs, batch_sampler=sampler, num_workers=cfg.train.num_workers,
                                         persistent_workers=cfg.train.num_workers > 0)
    num_train = {"real": len(sources[0][0]) if n_real else 0, "synthetic": len(sources[-1][0]) if n_syn else 0}

    # A resumed run takes its weights from the checkpoint: the backbone file is not needed again. It is read
    # inside start(), before the config is written, so a refused file leaves nothing behind.
    model, backbone = run.start(lambda: build_segmenter(cfg.model, classes.num_classes,
                                                        None if run.resume_path else cfg.backbone_weights,
                                                        cfg.aux_loss), classes)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if main:
        batches = (f"synthetic batches for {synthetic_steps(cfg)} steps, then real ones" if two_phase else
                   f"{n_real} real + {n_syn} synthetic per batch")
        log.info("segmenter %s: %.2fM parameters, %s; %d classes; frame %dx%d, crops %dx%d; %d real + %d synthetic "
                 "train pairs, %s; %d val images", cfg.model,
                 num_parameters(model) / 1e6, backbone, classes.num_classes, frame[1], frame[0], out_size[1],
                 out_size[0], num_train["real"], num_train["synthetic"], batches, len(val_set))
    optimizer = make_optimizer(model.parameters(), cfg.train)
    scheduler = make_lr_scheduler(optimizer, cfg.train)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    raw_model = accelerator.unwrap_model(model)
    seen = torch.zeros(2, dtype=torch.long, device=accelerator.device)  # (real, synthetic) samples drawn
    ignore = classes.ignore_index

    def step(batch, seed):
        images = batch["image"].float().div_(255)
        masks = batch["mask"]
        synthetic = batch["synthetic"].long().sum()
        seen.add_(torch.stack([len(masks) - synthetic, synthetic]))
        logits, aux = model(images, with_aux=True)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=ignore)
        if aux is not None:
            loss = loss + cfg.aux_weight * F.cross_entropy(aux.float(), masks, ignore_index=ignore)
        # the two-phase schedule logs each step's synthetic share, so the curves show where the switch fell
        return loss, ({"synthetic_share": synthetic.float() / len(masks)} if two_phase else {})

    def on_resume(extra: dict) -> None:
        nonlocal backbone
        backbone = extra.get("backbone", backbone)
        if main:  # the totals so far live on the main process; every process adds its own from here
            seen.add_(torch.tensor(extra.get("samples_seen", [0, 0]), device=accelerator.device))

    def extra_state() -> dict:
        return {"samples_seen": accelerator.reduce(seen.clone(), "sum").tolist(), "backbone": backbone}

    def score(progress: bool):  # the val split's confusion matrix, scored by every process
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
        return evaluate_on_every_rank(evaluate, accelerator, raw_model, val_set, frame, cfg.eval_batch_size,
                                      amp_dtype=amp, progress=progress)

    def evaluate_now() -> dict[str, float]:
        return {"val_miou": score(progress=False).miou()}

    def export(final_step: int) -> SegmenterResult:
        cm = score(progress=show)
        total_seen = accelerator.reduce(seen.clone(), "sum").tolist()
        model_dir = run.run_dir / MODEL_DIR
        report = eval_report(cm, classes.names, cfg.data.val_split)  # every process scored the whole split
        # the share of the samples drawn from the synthetic set (two-phase: the share of the steps)
        share = synthetic_steps(cfg) / cfg.train.steps if two_phase else n_syn / (n_real + n_syn)
        result = SegmenterResult(model_dir, report["miou"], report["iou"], share)
        if main:
            config = SegmenterConfig(model=cfg.model, num_classes=classes.num_classes, class_names=list(classes.names),
                                     ignore_index=ignore, input_height=frame[0], input_width=frame[1],
                                     aux_loss=cfg.aux_loss, backbone=backbone)
            save_segmenter(raw_model, config, model_dir)
            report.update(
                dataset=cfg.data.name, mix=cfg.mix, synthetic=cfg.synthetic if n_syn else None,
                synthetic_ratio=share, num_real_train=num_train["real"],
                num_synthetic_train=num_train["synthetic"], per_batch={"real": n_real, "synthetic": n_syn},
                synthetic_phase_steps=synthetic_steps(cfg) if two_phase else None,
                samples_seen={"real": total_seen[0], "synthetic": total_seen[1]}, model=cfg.model,
                backbone=backbone, backbone_loaded=backbone != RANDOM_INIT, parameters=num_parameters(raw_model),
                input_size=list(frame), steps=final_step)
            write_json_atomic(run.run_dir / "eval.json", report)
            run.log(final_step, val_miou=cm.miou())
            log.info("%s\nmIoU on the real %s split (%s training): %.2f", cm.table(classes.names),
                     cfg.data.val_split, cfg.mix, cm.miou())
        return result

    return fit(run, TrainingStage(model, optimizer, scheduler, loader, step, modules={"model": raw_model},
                                  desc="train-seg", evaluate=evaluate_now, export=export, extra_state=extra_state,
                                  on_resume=on_resume))
