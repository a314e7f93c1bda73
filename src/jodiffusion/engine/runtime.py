"""What every training stage shares: the accelerate set-up, the run folder, the LR schedule, logging.

Written once so that each stage's loop stays short. Everything degrades to one CPU process.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from jodiffusion.engine.config import TrainConfig
from jodiffusion.errors import JoDiffusionError
from jodiffusion.utils.precision import resolve_mixed_precision

log = logging.getLogger("jodiffusion")


def make_accelerator(train: TrainConfig, run_dir: Path | None = None) -> Accelerator:
    mixed_precision = resolve_mixed_precision(train.mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision:
        # accelerate keeps one precision per process; stages of one pipeline may differ (one stage with
        # mixed_precision=no, another on auto = bf16): forget the precision, keep the process group
        AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=train.grad_accum,
        project_dir=str(run_dir) if run_dir else None,
    )
    # Different processes get different seeds for augmentation and noise; model init is identical
    # because accelerate broadcasts nothing here, so we build models before calling this per rank.
    set_seed(train.seed + accelerator.process_index)
    if accelerator.is_main_process:
        logging.getLogger("jodiffusion").info(
            "accelerate: %d process(es), device %s, mixed precision %s", accelerator.num_processes,
            accelerator.device.type, accelerator.mixed_precision)
    return accelerator


def make_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    fused = torch.cuda.is_available()
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=fused)


def make_lr_scheduler(optimizer, train: TrainConfig):
    # imported here: diffusers takes seconds to import and only this path needs it (CLI start-up)
    from diffusers.optimization import get_scheduler

    name = {"constant": "constant_with_warmup", "cosine": "cosine"}[train.lr_schedule]
    warmup, notice = train.warmup()
    if notice:
        logging.getLogger("jodiffusion").warning(notice)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=train.steps)


class MetricLogger:
    """One JSON line per logged step in ``metrics.jsonl`` and the same scalars in TensorBoard
    (``<run_dir>/tensorboard``); main process only."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.start = time.time()
        self.writer = None
        if enabled and tensorboard:
            # imported here: tensorboard takes seconds to import and only the main process writes it
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time_s": round(time.time() - self.start, 2)}
        row.update({k: (float(v) if isinstance(v, (int, float, torch.Tensor)) else v) for k, v in values.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def add_image(self, tag: str, image, step: int) -> None:
        """An (H, W, 3) uint8 picture, e.g. a sample grid."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")


class NonFiniteLossError(JoDiffusionError):
    """The training loss (or its gradient norm) became inf or NaN: the run stops and exports nothing."""


def _stop_unless_finite(accelerator: Accelerator, value: torch.Tensor, what: str, collective: bool) -> None:
    bad = ~torch.isfinite(value.detach().float()).all()
    if collective and accelerator.num_processes > 1:  # every rank stops together (no one waits in a collective)
        bad = accelerator.reduce(bad.float().reshape(1), "sum")[0] > 0
    if bool(bad):
        shown = value.detach().float().reshape(-1)[0].item() if value.numel() else value
        raise NonFiniteLossError(
            f"the training {what} became {shown} (not a finite number), so the run stopped and exported nothing; "
            "lower train.lr, check the data and the model settings, or continue from an earlier checkpoint "
            "with --resume")


def optimizer_step(accelerator: Accelerator, model, loss, optimizer, lr_scheduler, grad_clip: float) -> None:
    """Backward, clip (on the micro-step that syncs gradients), step and reset: call it inside
    ``accelerator.accumulate(model)`` and outside autocast.

    A non-finite loss raises ``NonFiniteLossError`` before anything is applied (on every process alike),
    and so does a non-finite gradient norm when no fp16 loss scaler is there to skip such steps."""
    _stop_unless_finite(accelerator, loss, "loss", collective=True)
    accelerator.backward(loss)
    if accelerator.sync_gradients and grad_clip > 0:
        norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)
        if norm is not None and accelerator.scaler is None:  # the gradients are synced: the same on every rank
            _stop_unless_finite(accelerator, torch.as_tensor(norm), "gradient norm", collective=False)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def log_running_means(step: int, train: TrainConfig, running: dict[str, list], accelerator: Accelerator, bar,
                      logger: MetricLogger, lr_scheduler, postfix: dict | None = None) -> None:
    """At a log step (every ``train.log_every`` and the last): average each running metric over the steps
    since the last log and across processes, empty the lists, show the loss on ``bar`` (next to what
    ``postfix`` already holds) and write every mean and the learning rate to ``logger``."""
    if step % train.log_every and step != train.steps:
        return
    values = {k: accelerator.reduce(torch.stack(v).mean(), "mean").item() for k, v in running.items()}
    for v in running.values():
        v.clear()
    postfix = postfix if postfix is not None else {}
    postfix["loss"] = f"{values['loss']:.4f}"
    bar.set_postfix(postfix)
    logger.log(step, **values, lr=lr_scheduler.get_last_lr()[0])


def infinite_batches(loader, accelerator: Accelerator, start_step: int, steps_per_epoch: int):
    """Yield (epoch, batch) forever, resuming mid-epoch after ``start_step`` optimizer steps.

    The sampler reshuffles per epoch from a fixed seed, so a resumed run sees the same order.
    """
    epoch, offset = divmod(start_step * accelerator.gradient_accumulation_steps, steps_per_epoch)
    while True:
        if hasattr(loader, "set_epoch"):  # accelerate's loaders pass it on to the sampler
            loader.set_epoch(epoch)
        elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        it = accelerator.skip_first_batches(loader, offset) if offset else loader
        for batch in it:
            yield epoch, batch
        offset = 0
        epoch += 1


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation of ``range(n)`` that depends only on (seed, epoch): resumable, same on every rank
    (accelerate then gives each rank its own slice of the batches). With ``keyed`` it yields
    ``(index, item_seed)``, the seed a function of (seed, epoch, position), for datasets whose random
    augmentation must not depend on worker processes or on where a run was resumed."""

    def __init__(self, n: int, seed: int, keyed: bool = False):
        self.n, self.seed, self.epoch, self.keyed = n, seed, 0, keyed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if not self.keyed:
            return iter(order)

        seeds = np.random.SeedSequence([self.seed, self.epoch]).generate_state(max(self.n, 1), dtype=np.uint32)
        return iter(zip(order, (int(s) for s in seeds), strict=False))


class StopRequest:
    """Turns the first SIGINT / SIGTERM into a request the training loop answers by saving a
    checkpoint and leaving cleanly (resume with ``--resume latest``); a second signal interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested: saving a checkpoint after this step (signal again to stop at once)")

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainingInterrupted(JoDiffusionError):
    """Raised after a stop request was answered by saving a checkpoint."""
