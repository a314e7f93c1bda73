"""The settings of ``jodiffusion generate`` (``GenerateConfig``) and ``jodiffusion sample`` (``SampleConfig``),
validated when built."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

from jodiffusion.data.captions import check_caption_length
from jodiffusion.errors import ConfigError
from jodiffusion.generation.filters import FilterConfig
from jodiffusion.generation.prompts import PromptConfig
from jodiffusion.utils.ownership import (
    check_path_component,
)
from jodiffusion.utils.safe_load import check_seed, read_text

log = logging.getLogger("jodiffusion")

FORMATS = ("folder", "webdataset")
IMAGE_FORMATS = ("png", "jpeg")
PRECISIONS = ("auto", "fp32", "bf16")
GENERATION_FORMAT = 1



def sampling_checks(cfg) -> list[tuple[bool, str]]:
    """The checks of the settings every command that samples pairs shares (generate, sample, eval-joint):
    ``batch_size``, ``tau``, ``steps`` and ``guidance``, as (holds, message) pairs."""
    return [
        (cfg.batch_size >= 1, f"batch_size={cfg.batch_size} must be >= 1"),
        (cfg.tau >= 0, f"tau={cfg.tau} must be >= 0 (0 turns refinement off)"),
        (cfg.steps is None or cfg.steps >= 1, f"steps={cfg.steps} must be >= 1"),
        (cfg.guidance is None or 0 <= cfg.guidance < math.inf, f"guidance={cfg.guidance} must be a finite number >= 0"),
    ]


def raise_first_failed(checks: list[tuple[bool, str]]) -> None:
    """A ConfigError with the message of the first check that does not hold."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)

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
    # post-processing threads; 0 = in the sampling thread (no overlap); more than the cores only contend
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    precision: str = "auto"      # auto: bf16 autocast where native (GPU, CPU with bf16 instructions)
    filters: FilterConfig = field(default_factory=lambda: FilterConfig(enabled=False))
    # give up when this many indices per wanted pair were generated and still too few were kept
    max_tries_per_pair: float = 20.0

    def __post_init__(self):
        if isinstance(self.num, bool) or int(self.num) != self.num or self.num <= 0:
            raise ConfigError(f"num={self.num!r}: the number of pairs must be a positive integer")
        if not str(self.out).strip():
            raise ConfigError("out: an output folder is required; give out=DIR (--out DIR)")
        raise_first_failed([
            *sampling_checks(self),
            (self.seed >= 0, f"seed={self.seed}: a seed must be an integer >= 0, e.g. seed=0 (--seed 0)"),
            (self.format in FORMATS, f"format='{self.format}': choose one of {', '.join(FORMATS)}"),
            (self.image_format in IMAGE_FORMATS,
             f"image_format='{self.image_format}': choose one of {', '.join(IMAGE_FORMATS)}"),
            (95 <= self.jpeg_quality <= 100,
             f"jpeg_quality={self.jpeg_quality} must be in 95..100 (lower quality blurs the edges the masks label)"),
            (self.shard_size >= 1, f"shard_size={self.shard_size} must be >= 1"),
            (0.0 <= self.min_confidence < 1.0, f"min_confidence={self.min_confidence} must be in [0, 1)"),
            (self.workers >= 0, f"workers={self.workers} must be >= 0"),
            (self.precision in PRECISIONS, f"precision='{self.precision}': choose one of {', '.join(PRECISIONS)}"),
            (self.max_tries_per_pair >= 1, f"max_tries_per_pair={self.max_tries_per_pair} must be >= 1"),
        ])
        check_path_component(self.split, "split name")


@dataclass
class SampleConfig:
    """The settings of ``jodiffusion sample``: a few prompts -> a folder of pairs and a picture of them."""
    out: str                     # output folder
    prompts: list[str] = field(default_factory=list)
    prompts_file: str | None = None  # one prompt per line, after ``prompts``
    # pairs written: the prompts taken in turn until there are ``num`` (None: ``per_prompt`` for each prompt)
    num: int | None = None
    per_prompt: int = 1          # pairs of each prompt, one after the other (when ``num`` is not given)
    seed: int = 0
    steps: int | None = None     # sampler steps / guidance; None: the model's defaults
    guidance: float | None = None
    batch_size: int = 8
    min_confidence: float = 0.0  # decoded mask pixels below this class probability -> ignore
    tau: int = 20                # mask refinement area threshold in pixels; 0 = off

    def __post_init__(self):
        if not str(self.out).strip():
            raise ConfigError("out: an output folder is required; give out=DIR (--out DIR)")
        if not self.prompts and not self.prompts_file:
            raise ConfigError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE "
                              "(prompts=[...], prompts_file=FILE)")
        for i, prompt in enumerate(self.prompts, start=1):
            check_caption_length(prompt, f"prompt {i}", "prompt")
        if self.num is not None and self.per_prompt != 1:
            raise ConfigError(f"num={self.num} and per_prompt={self.per_prompt}: give one of them (num: the pairs "
                              "written in all, prompts taken in turn; per_prompt: the pairs of each prompt)")
        check_seed(self.seed, "seed")
        raise_first_failed([
            (self.num is None or (not isinstance(self.num, bool) and self.num >= 1),
             f"num={self.num} must be >= 1 (the number of pairs written)"),
            (self.per_prompt >= 1, f"per_prompt={self.per_prompt} must be >= 1"),
            (0.0 <= self.min_confidence < 1.0, f"min_confidence={self.min_confidence} must be in [0, 1)"),
            *sampling_checks(self),
        ])

    def jobs(self) -> list[str]:
        """The prompt of every pair, in order: ``prompts`` then the file's lines, each ``per_prompt`` times
        in a row, or taken in turn until there are ``num``."""
        prompts = list(self.prompts)
        if self.prompts_file:
            text = read_text(self.prompts_file, "prompts file", "give a UTF-8 text file with one prompt per line")
            for lineno, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    check_caption_length(line.strip(), f"{self.prompts_file}, line {lineno}", "prompt")
                    prompts.append(line.strip())
            if not prompts:
                raise ConfigError(f"{self.prompts_file} holds no prompts; give one prompt per line")
        if self.num is not None:
            return [prompts[i % len(prompts)] for i in range(self.num)]
        return [p for p in prompts for _ in range(self.per_prompt)]
