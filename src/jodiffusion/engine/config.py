"""Optimisation settings shared by every training stage (VAE, joint diffusion, segmenter)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from jodiffusion.errors import ConfigError

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8           # per process
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # "constant" or "cosine" (to 0 at `steps`), both after warmup
    grad_clip: float = 1.0        # 0 disables clipping
    # "auto": bf16 autocast where the hardware runs it natively (a GPU, or a CPU with AVX512-BF16 / AMX),
    # else full precision; "no" turns it off (utils/precision.py).
    mixed_precision: str = "auto"
    num_workers: int = 2
    seed: int = 0
    log_every: int = 20
    eval_every: int = 0           # 0: only at the end
    save_every: int = 500         # 0: only at the end
    keep_checkpoints: int = 3

    def warmup(self) -> tuple[int, str | None]:
        """(warm-up steps this run uses, a one-line notice when that differs from ``warmup_steps``).

        A preset's warm-up is sized for the preset's run length; one that is not shorter than the run
        (``train.steps=30`` with a preset's 100) would leave the run at a fraction of its learning rate,
        so it becomes a tenth of the run. Resolved where the scheduler is made, not here: presets and
        overrides are merged after construction."""
        if self.warmup_steps < self.steps:
            return self.warmup_steps, None
        scaled = self.steps // 10
        return scaled, (f"train.warmup_steps={self.warmup_steps} is not shorter than train.steps={self.steps}: "
                        f"warming up over {scaled} steps (a tenth of the run) instead; set train.warmup_steps "
                        f"below {self.steps} to choose")

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be >= 1")
        for name in ("warmup_steps", "num_workers", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be >= 0")
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"train.{name}={value} is not a finite number")
        if not 0 <= self.seed < 2**31:  # each process seeds with seed + rank; numpy wants < 2**32
            raise ConfigError(f"train.seed={self.seed}: a seed must be in 0 .. 2**31-1; give e.g. train.seed=0")
        if not self.lr > 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"train.lr_schedule='{self.lr_schedule}'; choose one of {', '.join(LR_SCHEDULES)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"train.mixed_precision='{self.mixed_precision}'; "
                             f"choose one of {', '.join(MIXED_PRECISION)}")
