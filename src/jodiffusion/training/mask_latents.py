"""Mask latents of every training pair, encoded once by the frozen annotation VAE.

The annotation VAE is frozen while the joint model trains and its encoder is deterministic, so the
latent of a mask, and of its mirror image, is the same in every epoch. Encoding the batch's masks at
every step cost about a sixth of the demo's training step on a CPU (docs/benchmarks.md); encoding each
(mask, flip) once when training starts costs two epochs' worth of encoder passes, however long the
run. The table lives in memory next to the latent cache; a dataset whose table would not fit in
``max_bytes`` keeps the per-step encoding (``build`` returns None and says so).

The mirrored latent is the encoder's output on the mirrored mask, not the mirrored latent: a strided
convolution with padding is not exactly flip-equivariant, so this keeps what the network sees equal to
what the per-step encoding gave.
"""

from __future__ import annotations

import logging

import torch

from jodiffusion.utils.progress import progress_bar

log = logging.getLogger("jodiffusion")

MAX_TABLE_BYTES = 1 << 30


class MaskLatentTable:
    """Raw (unscaled) mask latents, ``latents[index, flip]``: (N, 2, C, h, w) in float32."""

    def __init__(self, latents: torch.Tensor):
        if latents.ndim != 5 or latents.shape[1] != 2:
            raise ValueError(f"mask latents must be (N, 2, C, h, w), got {tuple(latents.shape)}")
        self.latents = latents

    def __len__(self) -> int:
        return self.latents.shape[0]

    def lookup(self, index: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """The latents of a batch: ``index`` (B,) sample numbers, ``flip`` (B,) bools."""
        return self.latents[index.long().cpu(), flip.long().cpu()]

    @classmethod
    @torch.no_grad()
    def build(cls, cache, vae, device, batch_size: int = 64, max_bytes: int = MAX_TABLE_BYTES,
              progress: bool = True) -> MaskLatentTable | None:
        """Encode every mask of ``cache`` (a LatentCache) and its mirror image with ``vae``'s encoder.
        Returns None, leaving the encoding to each step, where the table would exceed ``max_bytes``."""
        n = len(cache)
        h, w = cache.mask(0).shape[-2:]
        f, c = vae.config.downsample, vae.config.latent_channels
        size = n * 2 * c * (h // f) * (w // f) * 4
        if size > max_bytes:
            log.info("mask latents: %d pairs would take %.1f GiB (over %.1f GiB): encoded at every step instead",
                     n, size / 2**30, max_bytes / 2**30)
            return None
        table = torch.empty(n, 2, c, h // f, w // f)
        for start in progress_bar(range(0, n, batch_size), desc="encode masks", disable=not progress):
            masks = torch.stack([cache.mask(i) for i in range(start, min(n, start + batch_size))]).to(device)
            table[start:start + len(masks), 0] = vae.encode(masks).float().cpu()
            table[start:start + len(masks), 1] = vae.encode(masks.flip(-1)).float().cpu()
        return cls(table)
