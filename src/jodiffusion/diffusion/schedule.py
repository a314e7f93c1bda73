"""Noise schedules, from diffusers: training adds noise with DDPM's schedule, sampling solves with
DPM-Solver++. The defaults are UniDiffuser's (scaled-linear betas 0.00085 -> 0.012, 1000 steps)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from jodiffusion.errors import ConfigError

SCHEDULES = ("scaled_linear", "linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class NoiseScheduleConfig:
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    # What the network predicts: "epsilon" (the paper, UniDiffuser) or "v_prediction" (Salimans & Ho,
    # 2022), whose target stays well scaled at every noise level: at high noise it is close to the clean
    # sample instead of the input noise, which a network trained from scratch learns much sooner.
    # "sample" predicts the clean latent itself (x0), the target Li and He (2025) recommend when the
    # latents are high-dimensional (pixel patches): the network never has to reproduce the noise.
    prediction_type: str = "epsilon"
    # Rescale the betas to zero terminal SNR (Lin et al., 2024): the last training timestep is pure noise,
    # as sampling assumes. Needs prediction_type v_prediction or sample (epsilon is undefined there).
    # None (the default): on wherever it is defined (``zero_snr``). It stays None in configs, so that a
    # preset or override of prediction_type decides it; an exported model records the resolved value.
    # Without it the last timestep still carries the data's global brightness, the network learns to
    # read it from the noise instead of the caption, and sampling starts every image from the data's
    # mean brightness (docs/results.md).
    rescale_betas_zero_snr: bool | None = None

    def __post_init__(self):
        if self.num_train_timesteps < 2:
            raise ConfigError("schedule.num_train_timesteps must be >= 2")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(f"schedule betas must satisfy 0 < beta_start < beta_end < 1, "
                             f"got {self.beta_start}, {self.beta_end}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"schedule.prediction_type='{self.prediction_type}'; choose one of "
                             f"{', '.join(PREDICTION_TYPES)}")
        if self.rescale_betas_zero_snr and self.prediction_type == "epsilon":
            raise ConfigError("schedule.rescale_betas_zero_snr needs prediction_type v_prediction or sample: at zero "
                             "terminal SNR the noise prediction cannot recover the clean sample")
        if self.beta_schedule not in SCHEDULES:
            raise ConfigError(f"schedule.beta_schedule='{self.beta_schedule}'; choose one of {', '.join(SCHEDULES)}")

    @property
    def zero_snr(self) -> bool:
        """Whether the betas are rescaled to zero terminal SNR (None: wherever the prediction allows it)."""
        if self.rescale_betas_zero_snr is None:
            return self.prediction_type != "epsilon"
        return bool(self.rescale_betas_zero_snr)

    def resolved(self) -> NoiseScheduleConfig:
        """A copy with every automatic setting made explicit (what an exported model records)."""
        return replace(self, rescale_betas_zero_snr=self.zero_snr)

    def kwargs(self) -> dict:
        return {"num_train_timesteps": self.num_train_timesteps, "beta_start": self.beta_start,
                "beta_end": self.beta_end, "beta_schedule": self.beta_schedule, "prediction_type": self.prediction_type,
                "rescale_betas_zero_snr": self.zero_snr}


def training_scheduler(cfg: NoiseScheduleConfig):
    # imported here: diffusers takes seconds to import and only this path needs it (CLI start-up)
    from diffusers import DDPMScheduler

    return DDPMScheduler(**cfg.kwargs())


def sampling_scheduler(cfg: NoiseScheduleConfig, solver_order: int = 2):
    # imported here: diffusers takes seconds to import and only this path needs it (CLI start-up)
    from diffusers import DPMSolverMultistepScheduler

    # Zero terminal SNR: start sampling at the last training timestep ("trailing"), which is pure noise.
    extra = {"timestep_spacing": "trailing", "final_sigmas_type": "zero"} if cfg.zero_snr else {}
    return DPMSolverMultistepScheduler(**cfg.kwargs(), algorithm_type="dpmsolver++", solver_order=solver_order,
                                       lower_order_final=True, **extra)
