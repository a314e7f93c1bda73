"""The one training loop of every stage (annotation VAE, joint diffusion, segmenter).

A stage hands :func:`fit` one :class:`TrainingStage`: its prepared model, optimizer, scheduler and loader
and its functions: ``step`` (one micro-batch -> loss), ``evaluate`` (-> metrics), ``export`` (-> the model
folder) and, where the stage keeps state of its own, ``after_step``, ``extra_state`` and ``on_resume``. The
loop owns everything around them, the same for all three: resume from a checkpoint, per-step seeding
(so a resumed run continues exactly as an uninterrupted one would), gradient accumulation and mixed
precision, running means in the progress bar and ``metrics.jsonl``, periodic evaluation and
checkpoints, and the graceful stop (SIGINT / SIGTERM: save a checkpoint, then leave).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jodiffusion.diffusion.sampling import sample_seed
from jodiffusion.engine.run import TrainingRun
from jodiffusion.engine.runtime import (
    StopRequest,
    TrainingInterrupted,
    infinite_batches,
    log_running_means,
    optimizer_step,
)
from jodiffusion.utils.progress import progress_bar

log = logging.getLogger("jodiffusion")

StepFn = Callable[[Any, int], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


def step_seed(seed: int, step: int, micro: int, grad_accum: int, rank: int) -> int:
    """The seed of one micro-step: a function of (run seed, step, micro-step, process) only."""
    return sample_seed(seed, (step * grad_accum + micro) * 4096 + rank)


@dataclass
class TrainingStage:
    """What one training stage hands to :func:`fit`.

    - ``step(batch, seed)`` runs the forward pass of one micro-batch (inside accumulate and autocast;
      the global torch RNG is seeded with ``seed`` first, which the stage may also use for its own
      generator) and returns the loss and a dict of detached extra scalars to log.
    - ``modules``: what a checkpoint holds besides optimizer and scheduler (e.g. ``model``, ``ema``).
    - ``desc``: the progress bar's label (the command's name).
    - ``evaluate()``: metrics every ``train.eval_every`` steps (not at the last: ``export`` evaluates).
    - ``export(step)``: after the final checkpoint, on every process; its result is what ``fit`` returns.
    - ``after_step(step)``: after each optimizer step, on every process (EMA update, sample grids).
    - ``extra_state()``: JSON-able extras for a checkpoint; called on every process (it may reduce).
    - ``on_resume(extra)``: receives those extras when the run resumes.
    """

    model: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    step: StepFn
    modules: dict[str, torch.nn.Module]
    desc: str
    evaluate: Callable[[], dict[str, float]] | None = None
    export: Callable[[int], Any] | None = None
    after_step: Callable[[int], None] | None = None
    extra_state: Callable[[], dict] | None = None
    on_resume: Callable[[dict], None] | None = None


def fit(run: TrainingRun, stage: TrainingStage) -> Any:
    """Train ``stage.model`` for ``run.train.steps`` optimizer steps and return ``stage.export(final_step)``."""
    model, optimizer, scheduler, loader, step = stage.model, stage.optimizer, stage.scheduler, stage.loader, stage.step
    modules, desc, evaluate, export = stage.modules, stage.desc, stage.evaluate, stage.export
    after_step, extra_state, on_resume = stage.after_step, stage.extra_state, stage.on_resume
    train, accelerator, ckpt = run.train, run.accelerator, run.ckpt
    if run.logger is None:
        raise RuntimeError("TrainingRun.start() opens the log: call it before fit()")
    start = 0
    if run.resume_path is not None:
        state = ckpt.load(run.resume_path, modules, optimizer, scheduler)
        start = int(state["step"])
        if on_resume is not None:
            on_resume(state.get("extra", {}))
        if run.main:
            log.info("resumed from step %d", start)
        if run.resumed_changes:
            run.log(start, config_changed={k: [old, new] for k, (old, new) in run.resumed_changes.items()})

    def save(at: int) -> None:
        extra = extra_state() if extra_state is not None else {}
        if run.main:
            ckpt.save(at, modules, optimizer, scheduler, extra=extra)
        accelerator.wait_for_everyone()

    current = start
    batches = infinite_batches(loader, accelerator, current, max(1, len(loader)))
    bar = progress_bar(total=train.steps, initial=current, desc=desc, disable=not run.progress)
    running: dict[str, list] = {}
    postfix: dict[str, str] = {}
    model.train()
    with StopRequest() as stop:
        while current < train.steps:
            started = time.perf_counter()  # the step's own time: loading, forward, backward, optimizer
            for micro in range(train.grad_accum):
                _, batch = next(batches)
                # After fetching: a loader drawing its workers' base seed from the global generator (at
                # each epoch's start, and at a resume's first batch) must not shift what the step draws.
                seed = step_seed(train.seed, current, micro, train.grad_accum, accelerator.process_index)
                torch.manual_seed(seed)  # dropout, latent noise: the same on resume
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        loss, parts = step(batch, seed)
                    optimizer_step(accelerator, model, loss, optimizer, scheduler, train.grad_clip)
                for key, value in {"loss": loss.detach(), **parts}.items():
                    running.setdefault(key, []).append(value)
            # seconds per optimizer step without what after_step adds (EMA, probes, sample grids), so that
            # the logged throughput is the training's own (training_rate)
            running.setdefault("step_s", []).append(torch.tensor(time.perf_counter() - started))
            current += 1
            bar.update(1)
            if after_step is not None:
                after_step(current)
            log_running_means(current, train, running, accelerator, bar, run.logger, scheduler, postfix)
            if evaluate is not None and train.eval_every and current % train.eval_every == 0 \
                    and current < train.steps:
                metrics = evaluate()
                run.log(current, **metrics)
                postfix.update({k: f"{v:.2f}" for k, v in metrics.items()})
                bar.set_postfix(postfix)
            if (train.save_every and current % train.save_every == 0 and current < train.steps) or stop.requested:
                save(current)
            if stop.requested:
                bar.close()
                raise TrainingInterrupted(f"stopped at step {current}; checkpoint saved in {ckpt.root}; "
                                          "continue with --resume latest")
    bar.close()
    save(current)
    result = export(current) if export is not None else None
    accelerator.wait_for_everyone()
    return result


def evaluate_on_every_rank(evaluate: Callable[..., Any], accelerator, *args: Any, **kwargs: Any):
    """Score a split with every process: ``evaluate(*args, device=, rank=, world=, **kwargs)`` scores this
    process's share (every world-th sample) and returns a ConfusionMatrix; the matrices are summed over the
    processes, so every process returns the whole split's."""
    cm = evaluate(*args, device=accelerator.device, rank=accelerator.process_index, world=accelerator.num_processes,
                  **kwargs)
    if accelerator.num_processes > 1:
        total = accelerator.reduce(torch.as_tensor(cm.counts, device=accelerator.device), "sum")
        cm.counts = total.cpu().numpy().astype(np.int64)
    return cm


def training_rate(run_dir: str | Path, samples_per_step: int) -> float | None:
    """Training samples per second of a run, from the ``step_s`` means in its ``metrics.jsonl`` (probes,
    evaluation and checkpoints excluded); the first logged interval, which holds the warm-up, is left out
    where there are more. None when the log holds no timing."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    timed = [r["step_s"] for r in rows if "step_s" in r]
    timed = timed[1:] if len(timed) > 1 else timed
    return samples_per_step / (sum(timed) / len(timed)) if timed else None
