"""Annotation VAE: a small conv autoencoder that maps a label mask onto the image codec's latent grid.

Encoder: bit-encoded mask (B, ceil(log2 K), H, W) -> latent (B, C, H/f, W/f), f = ``downsample``.
Decoder: latent -> K logits per pixel at full resolution. Trained with cross-entropy only (no KL):
it is a compressor, not a generative model; the diffusion model supplies the prior. The encoder is
deterministic; robustness to the imperfect latents a diffusion model produces comes from optional
noise added to the latents in training (``latent_noise`` in the training config).

``scale_factor`` (multiplied into latents before diffusion) is measured from data after training
(1 / std of the latents) and saved in the config, never hard-coded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from jodiffusion.errors import ConfigError
from jodiffusion.models.bit_encoding import encode_bits, num_bits
from jodiffusion.models.persistence import PretrainedMixin


@dataclass
class AnnotationVAEConfig:
    num_classes: int = 0          # 0: take it from the dataset when training starts
    ignore_index: int = 255
    latent_channels: int = 4      # matches Stable Diffusion's image latents
    downsample: int = 8           # matches Stable Diffusion's image latents (H/8 x W/8)
    base_channels: int = 64       # width at full resolution; doubled per stage up to max_channels
    max_channels: int = 256
    blocks_per_stage: int = 1     # residual blocks after each resampling
    scale_factor: float = 1.0     # measured after training: 1 / std of the latents
    shift_factor: float = 0.0     # measured after training: mean of the latents

    def __post_init__(self):
        if self.num_classes != 0 and not 2 <= self.num_classes <= 255:
            raise ConfigError(f"model.num_classes={self.num_classes} must lie in 2..255 (or 0 = from the dataset)")
        if not 0 <= self.ignore_index <= 255 or 0 <= self.ignore_index < self.num_classes:
            raise ConfigError(f"model.ignore_index={self.ignore_index} must be a mask value in 0..255 that is no "
                             f"class id (0..{max(self.num_classes, 2) - 1}); 255 is the usual one")
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ConfigError(f"model.downsample={self.downsample} must be a power of two")
        for name in ("latent_channels", "base_channels", "max_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive")
        if self.blocks_per_stage < 0:
            raise ConfigError("model.blocks_per_stage must be >= 0")
        if not (self.scale_factor > 0 and math.isfinite(self.scale_factor)):
            raise ConfigError(f"model.scale_factor={self.scale_factor} must be a positive finite number")

    @property
    def num_stages(self) -> int:
        return int(math.log2(self.downsample))

    def stage_channels(self) -> list[int]:
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(self.num_stages + 1)]


def _norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


class MaskEncoder(nn.Module):
    def __init__(self, cfg: AnnotationVAEConfig):
        super().__init__()
        chans = cfg.stage_channels()
        self.stem = nn.Conv2d(num_bits(cfg.num_classes), chans[0], 3, padding=1)
        stages = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            layers = [_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
            layers += [ResBlock(c_out) for _ in range(cfg.blocks_per_stage)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(_norm(chans[-1]), nn.SiLU(), nn.Conv2d(chans[-1], cfg.latent_channels, 3, padding=1))

    def forward(self, bits):  # (B, nb, H, W) -> (B, C, H/f, W/f)
        return self.head(self.stages(self.stem(bits)))


class MaskDecoder(nn.Module):
    def __init__(self, cfg: AnnotationVAEConfig):
        super().__init__()
        chans = cfg.stage_channels()[::-1]
        self.stem = nn.Conv2d(cfg.latent_channels, chans[0], 3, padding=1)
        stages = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            # Residual blocks run *before* each upsampling, so none runs at full resolution, where
            # they would cost most of the compute for little gain in a mask decoder.
            layers = [ResBlock(c_in) for _ in range(cfg.blocks_per_stage)]
            layers += [_norm(c_in), nn.SiLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(_norm(chans[-1]), nn.SiLU(), nn.Conv2d(chans[-1], cfg.num_classes, 3, padding=1))

    def forward(self, z):  # (B, C, h, w) -> (B, K, h*f, w*f)
        return self.head(self.stages(self.stem(z)))


class AnnotationVAE(PretrainedMixin, nn.Module):
    config_class = AnnotationVAEConfig
    written_by = "`jodiffusion train-vae`"

    def __init__(self, config: AnnotationVAEConfig):
        super().__init__()
        if config.num_classes < 2:
            raise ValueError("AnnotationVAEConfig.num_classes must be set (2..255) before building the model")
        self.config = config
        self.encoder = MaskEncoder(config)
        self.decoder = MaskDecoder(config)

    # -- shapes -----------------------------------------------------------------------------
    def check_mask_size(self, height: int, width: int) -> None:
        f = self.config.downsample
        if height % f or width % f:
            raise ValueError(f"mask size {height}x{width} is not divisible by {f}; pad or crop it to a multiple "
                             f"of {f} (e.g. {math.ceil(height / f) * f}x{math.ceil(width / f) * f})")

    # -- encoding / decoding ------------------------------------------------------------------
    def encode(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, H, W) class ids -> raw latents (B, C, H/f, W/f) (not scaled)."""
        self.check_mask_size(*mask.shape[-2:])
        bits = encode_bits(mask, self.config.num_classes, self.config.ignore_index)
        return self.encoder(bits.to(self.encoder.stem.weight.dtype))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> (B, K, H, W) class logits."""
        return self.decoder(latents)

    def scale(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> the normalised latents the diffusion model sees."""
        return (latents - self.config.shift_factor) * self.config.scale_factor

    def unscale(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.config.scale_factor + self.config.shift_factor

    @torch.no_grad()
    def decode_to_mask(self, latents: torch.Tensor, min_confidence: float = 0.0) -> torch.Tensor:
        """Raw latents -> (B, H, W) class ids by argmax; pixels whose top probability is below
        ``min_confidence`` become ``ignore_index`` (never background)."""
        logits = self.decode(latents).float()
        if min_confidence > 0:
            prob, ids = logits.softmax(1).max(1)
            return ids.masked_fill(prob < min_confidence, self.config.ignore_index)
        return logits.argmax(1)

    def forward(self, mask: torch.Tensor, latent_noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction logits and latents. ``latent_noise`` adds Gaussian noise scaled by each
        sample's latent std, so the decoder learns to tolerate imperfect latents."""
        z = self.encode(mask)
        if latent_noise > 0:
            std = z.detach().flatten(1).std(1).clamp(min=1e-6).view(-1, 1, 1, 1)
            z = z + latent_noise * std * torch.randn_like(z)
        return self.decode(z), z



__all__ = ["AnnotationVAE", "AnnotationVAEConfig"]
