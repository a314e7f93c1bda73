"""Sampling (image, mask) latents with DPM-Solver++ (diffusers) and classifier-free guidance.

Guidance runs the conditional and the unconditional branch in ONE batched forward (the authors'
release makes two calls per step). Modes, from the same network call:
  joint     both modalities start from noise and share the timestep (the paper)
  img2mask  the image latents are given and held clean (t = 0): label a real image
  mask2img  the mask latents are given and held clean (t = 0): draw an image for a mask
The initial noise of sample i comes from its own seed, so a pair never depends on batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from jodiffusion.diffusion.objective import clean_estimate
from jodiffusion.diffusion.schedule import NoiseScheduleConfig, sampling_scheduler
from jodiffusion.errors import ConfigError

MODES = ("joint", "img2mask", "mask2img")


@dataclass
class SamplerConfig:
    steps: int = 25
    guidance_scale: float = 3.0
    solver_order: int = 2

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"sampler.steps={self.steps} must be >= 1")
        if not 0 <= self.guidance_scale < math.inf:  # nan and inf too: they give nan images
            raise ConfigError(f"sampler.guidance_scale={self.guidance_scale} must be a finite number >= 0")
        if self.solver_order not in (1, 2, 3):
            raise ConfigError(f"sampler.solver_order={self.solver_order} must be 1, 2 or 3")

    def override(self, steps: int | None = None, guidance_scale: float | None = None) -> SamplerConfig:
        """A copy with the given settings replaced (None keeps the current value)."""
        changes = {k: v for k, v in (("steps", steps), ("guidance_scale", guidance_scale)) if v is not None}
        return replace(self, **changes)


def sample_seed(global_seed: int, index: int) -> int:
    """The seed of sample ``index``: a function of (global seed, index) only."""
    return int(np.random.SeedSequence([int(global_seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
               % (2**63))


def initial_noise(seeds: list[int], shape: tuple[int, ...], device, dtype=torch.float32) -> torch.Tensor:
    """(B, *shape) standard normal noise, sample b drawn from a CPU generator seeded with seeds[b]."""
    out = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(out).to(device=device, dtype=dtype)


def guided_eps(model, img, mask, t_img, t_mask, text, null_text, guidance_scale: float):
    """Classifier-free guidance with both branches in one batch: eps_u + s * (eps_c - eps_u)."""
    guided, _ = _guided(model, img, mask, t_img, t_mask, text, null_text, guidance_scale)
    return guided


def _guided(model, img, mask, t_img, t_mask, text, null_text, guidance_scale: float, self_cond=None):
    """The guided (img, mask) outputs and the network's raw outputs (both branches, 2B rows, or B rows
    without guidance), which a self-conditioning model's next step takes as its own estimate."""
    extra = {} if self_cond is None else {"self_cond": self_cond}
    if guidance_scale == 1.0:
        out = model(img, mask, t_img, t_mask, text, **extra)
        return out, out
    b = img.shape[0]
    eps_img, eps_mask = model(torch.cat([img, img]), torch.cat([mask, mask]), torch.cat([t_img, t_img]),
                              torch.cat([t_mask, t_mask]), torch.cat([text, null_text.expand_as(text)]), **extra)
    cond_i, unc_i = eps_img[:b], eps_img[b:]
    cond_m, unc_m = eps_mask[:b], eps_mask[b:]
    guided = unc_i + guidance_scale * (cond_i - unc_i), unc_m + guidance_scale * (cond_m - unc_m)
    return guided, (eps_img, eps_mask)


@torch.no_grad()
def sample_latents(model, text: torch.Tensor, null_text: torch.Tensor, img_shape: tuple[int, int, int],
                   mask_shape: tuple[int, int, int], seeds: list[int], sampler: SamplerConfig,
                   schedule: NoiseScheduleConfig, mode: str = "joint", given: torch.Tensor | None = None,
                   trajectory_every: int = 0) -> dict:
    """Denoise a batch. ``text``: (B, L, D) prompt embeddings; ``null_text``: (1, L, D).
    ``given``: the clean latents of the conditioning modality for img2mask / mask2img.
    Returns {"img", "mask"} latents (scaled) and optionally "trajectory": predicted clean latents
    every ``trajectory_every`` steps and at the last, for pictures of the denoising process, with
    "trajectory_steps" (the solver step of each), "trajectory_timesteps" (the timestep the solver used there)
    and "steps" (solver steps in all)."""
    if mode not in MODES:
        raise ValueError(f"mode='{mode}'; choose one of {', '.join(MODES)}")
    if len(seeds) != text.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {text.shape[0]} prompts")
    if mode != "joint" and given is None:
        raise ValueError(f"mode '{mode}' needs the conditioning latents (given=...)")
    device, dtype = text.device, text.dtype
    b = len(seeds)
    n_img = int(np.prod(img_shape))
    noise = initial_noise(seeds, (n_img + int(np.prod(mask_shape)),), device)
    scheduler = sampling_scheduler(schedule, sampler.solver_order)
    scheduler.set_timesteps(sampler.steps, device=device)

    def split(x):  # the solver works on one flat tensor; the network on two latent grids
        return x[:, :n_img].view(b, *img_shape), x[:, n_img:].view(b, *mask_shape)

    x = noise * scheduler.init_noise_sigma
    zeros = torch.zeros(b, device=device, dtype=torch.long)
    trajectory, trajectory_steps = [], []
    self_conditioning = bool(getattr(model, "self_conditioning", False))
    previous = None  # a self-conditioning model's estimate of the clean latents from the step before
    for i, t in enumerate(scheduler.timesteps):
        img, mask = split(x)
        tt = t.to(device=device, dtype=torch.long).reshape(1).expand(b)  # no host sync per step
        if mode == "img2mask":
            img, t_img, t_mask = given, zeros, tt
        elif mode == "mask2img":
            mask, t_img, t_mask = given, tt, zeros
        else:
            t_img = t_mask = tt
        (eps_img, eps_mask), raw = _guided(model, img.to(dtype), mask.to(dtype), t_img, t_mask, text, null_text,
                                           sampler.guidance_scale, previous)
        if self_conditioning:
            rows = raw[0].shape[0] // b  # 2 with guidance: each branch keeps its own estimate
            kind, ac = schedule.prediction_type, scheduler.alphas_cumprod
            previous = (clean_estimate(raw[0], img.to(dtype).repeat(rows, 1, 1, 1), t_img.repeat(rows), ac, kind),
                        clean_estimate(raw[1], mask.to(dtype).repeat(rows, 1, 1, 1), t_mask.repeat(rows), ac, kind))
        eps = torch.cat([eps_img.float().reshape(b, -1), eps_mask.float().reshape(b, -1)], 1)
        if trajectory_every and (i % trajectory_every == 0 or i == len(scheduler.timesteps) - 1):
            # the network's output ("eps" here) is v or the clean sample under those prediction types
            trajectory.append(split(clean_estimate(eps, x, tt, scheduler.alphas_cumprod, schedule.prediction_type,
                                                   limit=None)))
            trajectory_steps.append(i)
        x = scheduler.step(eps, t, x).prev_sample
    img, mask = split(x)
    if mode == "img2mask":
        img = given
    elif mode == "mask2img":
        mask = given
    out = {"img": img, "mask": mask}
    if trajectory_every:
        out["trajectory"] = trajectory
        out["trajectory_steps"] = trajectory_steps
        # read from the device once, after the loop: no host sync per step
        out["trajectory_timesteps"] = [int(t) for t in scheduler.timesteps[trajectory_steps].tolist()]
        out["steps"] = len(scheduler.timesteps)
    return out
