"""The training objective of joint diffusion (paper, equations 3 and 6).

Image and mask latents are noised with ONE shared timestep and the network predicts both noises;
the loss is an MSE per modality with configurable weights (the authors' single flat MSE lets the
larger modality dominate). Optionally, with probability ``independent_timesteps``, each modality
gets its own timestep (UniDiffuser style), which teaches the same network the conditional modes:
mask from image (image at t=0) and image from mask (mask at t=0).
Caption dropout replaces the text with the empty prompt's embedding, for classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class JointObjectiveConfig:
    img_weight: float = 1.0
    mask_weight: float = 1.0
    independent_timesteps: float = 0.0   # probability per sample of independent timesteps
    caption_dropout: float = 0.1         # probability per sample of training on the empty prompt
    # Min-SNR-gamma loss weighting (Hang et al., 2023): each sample's MSE is weighted by
    # min(SNR_t, gamma) / SNR_t, so the many nearly clean timesteps stop dominating the gradient;
    # it converges several times faster from scratch. 0 turns it off (the paper's plain MSE).
    snr_gamma: float = 0.0

    def __post_init__(self):
        if self.img_weight < 0 or self.mask_weight < 0 or self.img_weight + self.mask_weight == 0:
            raise ValueError("objective.img_weight and objective.mask_weight must be >= 0, not both 0")
        if self.snr_gamma < 0:
            raise ValueError(f"objective.snr_gamma={self.snr_gamma} must be >= 0 (0: off)")
        for name in ("independent_timesteps", "caption_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"objective.{name}={getattr(self, name)} must lie in [0, 1]")


def draw_timesteps(batch: int, num_train_timesteps: int, independent: float, device,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared timesteps, replaced by independent ones for a fraction ``independent`` of the batch."""
    t_img = torch.randint(0, num_train_timesteps, (batch,), device=device, generator=generator)
    t_mask = t_img.clone()
    if independent > 0:
        other = torch.randint(0, num_train_timesteps, (batch,), device=device, generator=generator)
        pick = torch.rand(batch, device=device, generator=generator) < independent
        t_mask = torch.where(pick, other, t_mask)
    return t_img, t_mask


def joint_loss(model, scheduler, img: torch.Tensor, mask: torch.Tensor, text: torch.Tensor,
               null_text: torch.Tensor, cfg: JointObjectiveConfig,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training loss. ``img``/``mask``: scaled clean latents (B, C, h, w); ``text``: (B, L, D);
    ``null_text``: (1, L, D) embedding of the empty prompt."""
    b, device = img.shape[0], img.device
    t_img, t_mask = draw_timesteps(b, scheduler.config.num_train_timesteps, cfg.independent_timesteps, device,
                                   generator)
    noise_img = torch.randn(img.shape, device=device, generator=generator, dtype=img.dtype)
    noise_mask = torch.randn(mask.shape, device=device, generator=generator, dtype=mask.dtype)
    noisy_img = scheduler.add_noise(img, noise_img, t_img)
    noisy_mask = scheduler.add_noise(mask, noise_mask, t_mask)
    if cfg.caption_dropout > 0:
        drop = torch.rand(b, device=device, generator=generator) < cfg.caption_dropout
        text = torch.where(drop.view(b, 1, 1), null_text.to(text.dtype).expand_as(text), text)
    pred_img, pred_mask = model(noisy_img, noisy_mask, t_img, t_mask, text)
    kind = scheduler.config.prediction_type
    v_pred = kind == "v_prediction"
    target_img, target_mask = {"epsilon": lambda: (noise_img, noise_mask),
                               "v_prediction": lambda: (scheduler.get_velocity(img, noise_img, t_img),
                                                        scheduler.get_velocity(mask, noise_mask, t_mask)),
                               "sample": lambda: (img, mask)}[kind]()
    loss_img = _weighted_mse(pred_img, target_img, t_img, scheduler, cfg.snr_gamma, v_pred)
    loss_mask = _weighted_mse(pred_mask, target_mask, t_mask, scheduler, cfg.snr_gamma, v_pred)
    loss = (cfg.img_weight * loss_img + cfg.mask_weight * loss_mask) / (cfg.img_weight + cfg.mask_weight)
    return loss, {"loss_img": loss_img.detach(), "loss_mask": loss_mask.detach()}


def _weighted_mse(pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, scheduler, snr_gamma: float,
                  v_pred: bool = False):
    if snr_gamma <= 0 or scheduler.config.prediction_type == "sample":  # min-SNR is defined for eps and v
        return F.mse_loss(pred.float(), target.float())
    # imported here: diffusers takes seconds to import and only this path needs it (CLI start-up)
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, t)
    # min(SNR, gamma) / SNR for epsilon targets; the v target already carries a factor SNR + 1
    weight = torch.clamp(snr, max=snr_gamma) / (snr + 1 if v_pred else snr)
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
    return (per_sample * weight).mean()
