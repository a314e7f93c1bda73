"""The settings of the commands that score a trained model: ``EvalConfig`` (``eval-vae``, ``eval-seg``,
``eval-codec``: a model scored on a dataset split) and ``JointEvalConfig`` (``eval-joint``: pairs generated
from a split's captions, then scored). The split scored is ``data.val_split``."""

from __future__ import annotations

from dataclasses import dataclass, field

from jodiffusion.data.config import DataConfig
from jodiffusion.errors import ConfigError
from jodiffusion.generation.config import raise_first_failed, sampling_checks
from jodiffusion.utils.safe_load import check_seed


def _scored_data() -> DataConfig:
    # the embedded shapes dataset at 64 px, 128 images in a split: a quick score without a download
    return DataConfig(num_train=128, num_val=128)


@dataclass
class EvalConfig:
    data: DataConfig = field(default_factory=_scored_data)
    batch_size: int = 8
    json: str | None = None      # also write the report here

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")


@dataclass
class JointEvalConfig:
    data: DataConfig = field(default_factory=DataConfig)  # prompts: the captions of its val split
    num: int = 128               # pairs generated and scored (the captions taken in turn)
    segmenter: str | None = None  # a real-data segmenter (train-seg): image-mask agreement
    steps: int | None = None     # sampler steps / guidance; None: the model's defaults
    guidance: float | None = None
    tau: int = 20
    batch_size: int = 16
    seed: int = 0
    json: str | None = None      # also write the report here
    grid: str | None = None      # a PNG grid of the first pairs

    def __post_init__(self):
        check_seed(self.seed, "seed")
        raise_first_failed([
            (not isinstance(self.num, bool) and self.num >= 1, f"num={self.num} must be >= 1 (the pairs scored)"),
            *sampling_checks(self),
        ])
