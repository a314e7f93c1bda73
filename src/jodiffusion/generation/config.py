"""The settings of ``jodiffusion generate`` (``GenerateConfig``), validated when built."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from jodiffusion.errors import ConfigError
from jodiffusion.generation.filters import FilterConfig
from jodiffusion.generation.prompts import PromptConfig
from jodiffusion.utils.ownership import (
    check_path_component,
)

log = logging.getLogger("jodiffusion")

FORMATS = ("folder", "webdataset")
IMAGE_FORMATS = ("png", "jpeg")
PRECISIONS = ("auto", "fp32", "bf16")
GENERATION_FORMAT = 1


@dataclass
class GenerateConfig:
    num: int                     # pairs to KEEP
    out: str                     # output folder
    seed: int = 0
    prompts: PromptConfig = field(default_factory=PromptConfig)
    steps: int | None = None     # sampler steps / guidance; None: the model's defaults
    guidance: float | None = None
    batch_size: int = 8
    tau: int = 20                # mask refinement area threshold in pixels; 0 = off
    min_confidence: float = 0.0  # decoded mask pixels below this class probability -> ignore
    format: str = "folder"
    image_format: str = "png"
    jpeg_quality: int = 95
    shard_size: int = 1000       # webdataset: indices per shard (fewer samples when the filter drops some)
    split: str = "train"
    workers: int = 4             # post-processing threads; 0 = in the sampling thread (no overlap)
    precision: str = "auto"      # auto: bf16 autocast where native (GPU, CPU with bf16 instructions)
    filters: FilterConfig = field(default_factory=lambda: FilterConfig(enabled=False))
    # give up when this many indices per wanted pair were generated and still too few were kept
    max_tries_per_pair: float = 20.0

    def __post_init__(self):
        if isinstance(self.num, bool) or int(self.num) != self.num or self.num <= 0:
            raise ConfigError(f"num={self.num!r}: the number of pairs must be a positive integer")
        if not str(self.out).strip():
            raise ConfigError("an output folder is required")
        checks = [
            (self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1"),
            (self.seed >= 0, f"--seed {self.seed}: a seed must be an integer >= 0, e.g. --seed 0"),
            (self.format in FORMATS, f"format '{self.format}': choose one of {', '.join(FORMATS)}"),
            (self.image_format in IMAGE_FORMATS,
             f"image format '{self.image_format}': choose one of {', '.join(IMAGE_FORMATS)}"),
            (95 <= self.jpeg_quality <= 100,
             f"jpeg_quality={self.jpeg_quality} must be in 95..100 (lower quality blurs the edges the masks label)"),
            (self.shard_size >= 1, f"shard_size={self.shard_size} must be >= 1"),
            (self.tau >= 0, f"tau={self.tau} must be >= 0 (0 turns refinement off)"),
            (0.0 <= self.min_confidence < 1.0, f"min_confidence={self.min_confidence} must be in [0, 1)"),
            (self.workers >= 0, f"workers={self.workers} must be >= 0"),
            (self.precision in PRECISIONS, f"precision '{self.precision}': choose one of {', '.join(PRECISIONS)}"),
            (self.steps is None or self.steps >= 1, f"steps={self.steps} must be >= 1"),
            (self.guidance is None or 0 <= self.guidance < math.inf,
             f"guidance={self.guidance} must be a finite number >= 0"),
            (self.max_tries_per_pair >= 1, "max_tries_per_pair must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_path_component(self.split, "split name")
