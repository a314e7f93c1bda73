"""Train a segmenter on real, synthetic or mixed pairs and score it on the REAL validation split.

This is how generated data is judged: a segmenter trained on synthetic (or real + synthetic) pairs
must do well on real images (mIoU). Training follows the other stages: accelerate, a run folder with
the resolved config, numbered checkpoints and ``--resume latest``, ``metrics.jsonl``; the result is
``<output_dir>/segmenter`` (``config.json`` + ``model.safetensors``) and ``eval.json``.

This module holds the training loop only; the run settings live in :mod:`.config`, the training data
(frame fitting, augmentation, mixed batches) in :mod:`.data`, and evaluation and prediction in
:mod:`.inference`. Their public names are re-exported here, where callers have always imported them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from jodiffusion.config.loader import save_run_config
from jodiffusion.data.base import SegmentationDataset
from jodiffusion.engine.checkpoint import CheckpointManager
from jodiffusion.engine.runtime import (
    MetricLogger,
    infinite_batches,
    log_running_means,
    make_accelerator,
    make_lr_scheduler,
    make_optimizer,
    optimizer_step,
    prepare_run_dir,
)
from jodiffusion.metrics import ConfusionMatrix
from jodiffusion.segmentation.config import MIX_MODES, MODEL_DIR, SegRunConfig
from jodiffusion.segmentation.data import (
    MixedBatchSampler,
    TrainPairs,
    augment_pair,
    batch_split,
    build_split,
    check_same_classes,
    frame_size,
    synthetic_data_config,
)
from jodiffusion.segmentation.inference import (
    eval_report,
    evaluate,
    evaluate_segmenter,
    predict,
    predict_proba,
    segment_logits,
)
from jodiffusion.segmentation.models import (
    RANDOM_INIT,
    SegmenterConfig,
    build_segmenter,
    num_parameters,
    save_segmenter,
)
from jodiffusion.utils.io import write_json_atomic

__all__ = [
    "MIX_MODES",
    "MODEL_DIR",
    "MixedBatchSampler",
    "SegRunConfig",
    "TrainPairs",
    "augment_pair",
    "batch_split",
    "check_same_classes",
    "eval_report",
    "evaluate",
    "evaluate_segmenter",
    "frame_size",
    "predict",
    "predict_proba",
    "segment_logits",
    "synthetic_data_config",
    "train_segmenter",
]

log = logging.getLogger("jodiffusion")


def _distributed_eval(model, dataset, input_size, cfg: SegRunConfig, accelerator, progress: bool) -> ConfusionMatrix:
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
    cm = evaluate(model, dataset, input_size, cfg.eval_batch_size, accelerator.device, accelerator.process_index,
                  accelerator.num_processes, amp_dtype=amp, progress=progress)
    if accelerator.num_processes > 1:
        total = accelerator.reduce(torch.as_tensor(cm.counts, device=accelerator.device), "sum")
        cm.counts = total.cpu().numpy().astype(np.int64)
    return cm


def train_segmenter(cfg: SegRunConfig, resume: str | None = None, overwrite: bool = False,
                    progress: bool = True) -> Path:
    """Train, evaluate on the real val split, export ``<output_dir>/segmenter`` and ``eval.json``."""
    run_dir = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.train, None)
    main = accelerator.is_main_process
    if main:
        prepare_run_dir(run_dir, resume, overwrite, command="train-seg")
    accelerator.wait_for_everyone()
    show = progress and main

    val_set = build_split(cfg.data, cfg.data.val_split, show)
    classes = val_set.classes
    n_real, n_syn = batch_split(cfg)
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
                       cache=cfg.cache)
    sampler = MixedBatchSampler([len(ds) for ds, _ in sources], [k for k in (n_real, n_syn) if k], cfg.train.seed,
                                min_batches=accelerator.num_processes)
    loader = torch.utils.data.DataLoader(pairs, batch_sampler=sampler, num_workers=cfg.train.num_workers,
                                         persistent_workers=cfg.train.num_workers > 0)
    num_train = {"real": len(sources[0][0]) if n_real else 0, "synthetic": len(sources[-1][0]) if n_syn else 0}

    ckpt = CheckpointManager(run_dir, keep=cfg.train.keep_checkpoints)
    resume_path = ckpt.resolve(resume) if resume is not None else None
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every process
    # A resumed run takes its weights from the checkpoint: the backbone file is not needed again.
    model, backbone = build_segmenter(cfg.model, classes.num_classes,
                                      None if resume_path else cfg.backbone_weights, cfg.aux_loss)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if main:
        save_run_config(cfg, run_dir)
        write_json_atomic(run_dir / "classes.json", classes.to_dict())
        log.info("segmenter %s: %.2fM parameters, %s; %d classes; frame %dx%d, crops %dx%d; %d real + %d synthetic "
                 "train pairs, %d real + %d synthetic per batch; %d val images", cfg.model,
                 num_parameters(model) / 1e6, backbone, classes.num_classes, frame[1], frame[0], out_size[1],
                 out_size[0], num_train["real"], num_train["synthetic"], n_real, n_syn, len(val_set))
    optimizer = make_optimizer(model.parameters(), cfg.train)
    scheduler = make_lr_scheduler(optimizer, cfg.train)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    raw_model = accelerator.unwrap_model(model)

    step = 0
    seen = torch.zeros(2, dtype=torch.long, device=accelerator.device)  # (real, synthetic) samples drawn
    if resume_path is not None:
        state = ckpt.load(resume_path, {"model": raw_model}, optimizer, scheduler)
        step = int(state["step"])
        backbone = state["extra"].get("backbone", backbone)
        if main:
            seen += torch.tensor(state["extra"].get("samples_seen", [0, 0]), device=accelerator.device)
            log.info("resumed from step %d", step)
    logger = MetricLogger(run_dir, enabled=main)

    def save(at: int) -> None:
        total = accelerator.reduce(seen.clone(), "sum").tolist()  # every process takes part
        if main:
            ckpt.save(at, {"model": raw_model}, optimizer, scheduler, extra={"samples_seen": total,
                                                                              "backbone": backbone})
        accelerator.wait_for_everyone()

    ignore = classes.ignore_index
    batches = infinite_batches(loader, accelerator, step, max(1, len(loader)))
    bar = tqdm(total=cfg.train.steps, initial=step, desc="train-seg", disable=not show)
    running, postfix = {"loss": []}, {}
    model.train()
    while step < cfg.train.steps:
        # dropout draws from a generator seeded by (seed, step, rank): a resumed run continues exactly
        torch.manual_seed(cfg.train.seed * 1_000_003 + step * 4096 + accelerator.process_index)
        for _ in range(cfg.train.grad_accum):
            _, batch = next(batches)
            images = batch["image"].float().div_(255)
            masks = batch["mask"]
            synthetic = batch["synthetic"].long().sum()
            seen += torch.stack([len(masks) - synthetic, synthetic])
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    logits, aux = model(images, with_aux=True)
                    loss = F.cross_entropy(logits.float(), masks, ignore_index=ignore)
                    if aux is not None:
                        loss = loss + cfg.aux_weight * F.cross_entropy(aux.float(), masks, ignore_index=ignore)
                optimizer_step(accelerator, model, loss, optimizer, scheduler, cfg.train.grad_clip)
            running["loss"].append(loss.detach())
        step += 1
        bar.update(1)
        log_running_means(step, cfg.train, running, accelerator, bar, logger, scheduler, postfix)
        if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < cfg.train.steps:
            cm = _distributed_eval(raw_model, val_set, frame, cfg, accelerator, progress=False)
            logger.log(step, val_miou=cm.miou())
            postfix["val_miou"] = f"{cm.miou():.2f}"
            bar.set_postfix(postfix)
        if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.train.steps:
            save(step)
    bar.close()

    cm = _distributed_eval(raw_model, val_set, frame, cfg, accelerator, progress=show)
    save(step)
    total_seen = accelerator.reduce(seen.clone(), "sum").tolist()
    model_dir = run_dir / MODEL_DIR
    if main:
        config = SegmenterConfig(model=cfg.model, num_classes=classes.num_classes, class_names=list(classes.names),
                                 ignore_index=ignore, input_height=frame[0], input_width=frame[1],
                                 aux_loss=cfg.aux_loss, backbone=backbone)
        save_segmenter(raw_model, config, model_dir)
        report = eval_report(cm, classes.names, cfg.data.val_split)
        report.update(
            dataset=cfg.data.name, mix=cfg.mix, synthetic=cfg.synthetic if n_syn else None,
            synthetic_ratio=n_syn / (n_real + n_syn), num_real_train=num_train["real"],
            num_synthetic_train=num_train["synthetic"], per_batch={"real": n_real, "synthetic": n_syn},
            samples_seen={"real": total_seen[0], "synthetic": total_seen[1]}, model=cfg.model,
            backbone=backbone, backbone_loaded=backbone != RANDOM_INIT, parameters=num_parameters(raw_model),
            input_size=list(frame), steps=step)
        write_json_atomic(run_dir / "eval.json", report)
        logger.log(step, val_miou=cm.miou())
        log.info("%s\nmIoU on the real %s split (%s training): %.2f", cm.table(classes.names), cfg.data.val_split,
                 cfg.mix, cm.miou())
    accelerator.wait_for_everyone()
    return model_dir
