"""Prompts fed through a pipeline in batches: the one loop every sampling caller shares (training's sample
grids and probes, eval-joint, sample, generate and the report)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from jodiffusion.diffusion.sampling import SamplerConfig
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline, PipelineOutput, Trajectory
from jodiffusion.utils.precision import autocast_dtype
from jodiffusion.utils.progress import progress_bar

BatchCallback = Callable[[int, list[str], PipelineOutput], None]


def generate_batches(pipe: JoDiffusionPipeline, prompts: Sequence[str], batch_size: int, *, seed: int = 0,
                     start_index: int = 0, sampler: SamplerConfig | None = None, min_confidence: float = 0.0,
                     refine_tau: int = 0, precision: str = "fp32", trajectory_every: int = 0,
                     progress: bool = False, desc: str = "generate",
                     on_batch: BatchCallback | None = None) -> PipelineOutput | None:
    """One pair per prompt, ``batch_size`` prompts per pipeline call. Pair i is seeded by
    sample_seed(seed, start_index + i) whatever the batch size. ``precision`` (``auto``, ``bf16``, ``fp32``)
    is turned into the autocast dtype once, for every batch.

    Without ``on_batch``, returns every pair in one :class:`PipelineOutput`. With it, each batch is handed
    over as it is drawn, ``on_batch(index of its first pair, its prompts, its output)``, and nothing is kept
    (a writer that streams holds one batch at a time); returns None."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    amp = autocast_dtype(precision, pipe.device)
    prompts = list(prompts)
    outputs = []
    with progress_bar(total=len(prompts), desc=desc, unit="pair", disable=not progress) as bar:
        for first in range(0, len(prompts), batch_size):
            batch = prompts[first: first + batch_size]
            out = pipe(batch, seed=seed, start_index=start_index + first, sampler=sampler,
                       min_confidence=min_confidence, refine_tau=refine_tau, autocast_dtype=amp,
                       trajectory_every=trajectory_every)
            if on_batch is None:
                outputs.append(out)
            else:
                on_batch(start_index + first, batch, out)
            bar.update(len(batch))
    return None if on_batch is not None else _concatenate(pipe, outputs)


def _concatenate(pipe: JoDiffusionPipeline, outputs: list[PipelineOutput]) -> PipelineOutput:
    if not outputs:
        h, w = pipe.resolution
        return PipelineOutput(np.zeros((0, h, w, 3), np.uint8), np.zeros((0, h, w), np.uint8), [])
    if len(outputs) == 1:
        return outputs[0]
    trajectory = None
    if outputs[0].trajectory is not None:  # every batch took its entries at the same steps
        first = outputs[0].trajectory
        latents = [(torch.cat([o.trajectory.latents[k][0] for o in outputs]),
                    torch.cat([o.trajectory.latents[k][1] for o in outputs])) for k in range(len(first.latents))]
        trajectory = Trajectory(latents, first.steps, first.timesteps, first.num_steps)
    return PipelineOutput(np.concatenate([o.images for o in outputs]), np.concatenate([o.masks for o in outputs]),
                          [s for o in outputs for s in o.refine], trajectory)
