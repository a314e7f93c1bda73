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

from jodiffusion.errors import ConfigError


@dataclass
class JointObjectiveConfig:
    img_weight: float = 1.0
    mask_weight: float = 1.0
    independent_timesteps: float = 0.0   # probability per sample of independent timesteps
    caption_dropout: float = 0.1         # probability per sample of training on the empty prompt
    # Min-SNR-gamma loss weighting (Hang et al., 2023): the clean-sample error of each sample is weighted
    # by min(SNR_t, gamma) (an epsilon error by min(SNR_t, gamma) / SNR_t, a v error by
    # min(SNR_t, gamma) / (SNR_t + 1)), so the many nearly clean timesteps stop dominating the gradient;
    # it converges several times faster from scratch. 0 turns it off (the paper's plain MSE).
    snr_gamma: float = 0.0
    # Self-conditioning (a denoiser built with model.arch.self_condition=true): the share of batches whose
    # main pass sees the network's own clean estimate from a first pass without gradients (Chen et al.,
    # 2022, use one half); the others see zeros, as the first sampling step does.
    self_condition_prob: float = 0.5
    # Immiscible diffusion (Li et al., 2024): each batch's noise draws are assigned to its samples by a
    # linear assignment that minimises the total distance between clean latents and noise, so that every
    # noisy sample points back to a nearby clean one rather than to the batch's average.
    immiscible: bool = False

    def __post_init__(self):
        if self.img_weight < 0 or self.mask_weight < 0 or self.img_weight + self.mask_weight == 0:
            raise ConfigError("objective.img_weight and objective.mask_weight must be >= 0, not both 0")
        if self.snr_gamma < 0:
            raise ConfigError(f"objective.snr_gamma={self.snr_gamma} must be >= 0 (0: off)")
        for name in ("independent_timesteps", "caption_dropout", "self_condition_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"objective.{name}={getattr(self, name)} must lie in [0, 1]")


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
    if cfg.immiscible:
        order = immiscible_order(torch.cat([img.flatten(1), mask.flatten(1)], 1),
                                 torch.cat([noise_img.flatten(1), noise_mask.flatten(1)], 1))
        noise_img, noise_mask = noise_img[order], noise_mask[order]
    noisy_img = scheduler.add_noise(img, noise_img, t_img)
    noisy_mask = scheduler.add_noise(mask, noise_mask, t_mask)
    if cfg.caption_dropout > 0:
        drop = torch.rand(b, device=device, generator=generator) < cfg.caption_dropout
        text = torch.where(drop.view(b, 1, 1), null_text.to(text.dtype).expand_as(text), text)
    kind = scheduler.config.prediction_type
    self_cond = None
    if _self_conditioning(model) and \
            torch.rand((), device=device, generator=generator).item() < cfg.self_condition_prob:
        with torch.no_grad():
            first_img, first_mask = model(noisy_img, noisy_mask, t_img, t_mask, text)
            self_cond = (clean_estimate(first_img, noisy_img, t_img, scheduler.alphas_cumprod, kind).detach(),
                         clean_estimate(first_mask, noisy_mask, t_mask, scheduler.alphas_cumprod, kind).detach())
    if self_cond is None:
        pred_img, pred_mask = model(noisy_img, noisy_mask, t_img, t_mask, text)
    else:
        pred_img, pred_mask = model(noisy_img, noisy_mask, t_img, t_mask, text, self_cond=self_cond)
    v_pred = kind == "v_prediction"
    target_img, target_mask = {"epsilon": lambda: (noise_img, noise_mask),
                               "v_prediction": lambda: (scheduler.get_velocity(img, noise_img, t_img),
                                                        scheduler.get_velocity(mask, noise_mask, t_mask)),
                               "sample": lambda: (img, mask)}[kind]()
    loss_img = _weighted_mse(pred_img, target_img, t_img, scheduler, cfg.snr_gamma, v_pred)
    loss_mask = _weighted_mse(pred_mask, target_mask, t_mask, scheduler, cfg.snr_gamma, v_pred)
    loss = (cfg.img_weight * loss_img + cfg.mask_weight * loss_mask) / (cfg.img_weight + cfg.mask_weight)
    return loss, {"loss_img": loss_img.detach(), "loss_mask": loss_mask.detach()}


def _self_conditioning(model) -> bool:
    """Whether ``model`` (possibly wrapped for several processes) takes its own estimate as input."""
    return bool(getattr(getattr(model, "module", model), "self_conditioning", False))


def clean_estimate(output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor,
                   prediction_type: str, limit: float | None = 20.0) -> torch.Tensor:
    """The clean latents implied by the network's ``output`` at noisy latents ``x_t`` and timesteps ``t``
    (any shape with the batch first). ``limit``: an epsilon estimate, which divides by sqrt(alpha) and so
    blows up near zero SNR, is clamped to +-limit (None: left as it is, as the trajectory pictures show it)."""
    if prediction_type == "sample":
        return output
    alpha = alphas_cumprod.to(x_t.device)[t.long()].float().view(-1, *([1] * (x_t.dim() - 1)))
    if prediction_type == "v_prediction":
        return (alpha.sqrt() * x_t.float() - (1 - alpha).sqrt() * output.float()).to(output.dtype)
    if limit is None:
        return ((x_t.float() - (1 - alpha).sqrt() * output.float()) / alpha.sqrt()).to(output.dtype)
    x0 = (x_t.float() - (1 - alpha).sqrt() * output.float()) / alpha.sqrt().clamp(min=1e-4)
    return x0.clamp(-limit, limit).to(output.dtype)


@torch.no_grad()
def immiscible_order(clean: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The permutation of ``noise`` rows (B, N) that minimises the summed L2 distance to ``clean`` rows."""
    # imported here: scipy.optimize is needed only by this option (CLI start-up)
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(clean.float(), noise.float()).cpu().numpy()
    _, cols = linear_sum_assignment(cost)
    return torch.as_tensor(cols, device=noise.device, dtype=torch.long)


def _weighted_mse(pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, scheduler, snr_gamma: float,
                  v_pred: bool = False):
    if snr_gamma <= 0:
        return F.mse_loss(pred.float(), target.float())
    # imported here: diffusers takes seconds to import and only this path needs it (CLI start-up)
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, t)
    # The weight of the clean-sample error is min(SNR, gamma) (Hang et al., 2023). An epsilon error is the
    # clean-sample error times SNR, so its weight is min(SNR, gamma) / SNR; a v error times SNR + 1.
    clipped = torch.clamp(snr, max=snr_gamma)
    if scheduler.config.prediction_type == "sample":
        weight = clipped
    else:
        weight = clipped / (snr + 1 if v_pred else snr.clamp(min=1e-12))
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
    return (per_sample * weight).mean()
