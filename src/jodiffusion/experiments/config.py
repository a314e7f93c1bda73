"""The config of the end-to-end pipeline (`jodiffusion pipeline`, and the demo built on it).

Each stage is described by the preset of its own command plus dotted overrides, so a stage of the
pipeline is exactly the command a user would run by hand (``train-vae --preset shapes ...``); the
pipeline only fills in what ties the stages together (the dataset, the folders, the trained VAE).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jodiffusion.data.config import DataConfig
from jodiffusion.errors import ConfigError
from jodiffusion.generation.filters import FilterConfig

EXPERIMENTS = ("real", "synthetic", "synthetic_x4", "real+synthetic")
SYNTHETIC_SPLIT = "train"  # the split the generate stages write and the segmenters and the report read
# The ways of using the synthetic set beside the real one (the real+synthetic experiment), each a segmenter:
#   mix               every batch holds real and synthetic pairs (synthetic_ratio)
#   two-phase         synthetic batches for synthetic_phase of the steps, then real ones (mix=synthetic-then-real)
#   <either>+filter   the same on the pairs that pass the quality filter (filter: generate's filters, with
#                     the real-only segmenter as the consistency judge)
CANDIDATES = ("mix", "mix+filter", "two-phase", "two-phase+filter")


@dataclass
class StageSpec:
    preset: str | None = None                         # a preset of the stage's command
    overrides: list[str] = field(default_factory=list)  # dotted key=value, applied after the preset


@dataclass
class PipelineConfig:
    # The real dataset: its train split trains every model, its val split scores the segmenters.
    data: DataConfig = field(default_factory=DataConfig)
    # Datasets without captions get template captions from their masks ("a photo of road, car and sky").
    caption_min_fraction: float = 0.01
    vae: StageSpec = field(default_factory=lambda: StageSpec("shapes"))
    # A learned image codec trained after the annotation VAE (`train-codec`, e.g. ``codec.preset=shapes``),
    # handed to the joint stage as codec.kind=sd-vae codec.path=<its export>. None: the joint preset's
    # own codec (pixel-unshuffle in every shipped preset).
    codec: StageSpec | None = None
    joint: StageSpec = field(default_factory=lambda: StageSpec("small"))
    # The generate command's preset and overrides (``GenerateConfig``); the pipeline sets the number of pairs,
    # the folder, the split and the prompts (the training captions). eval-joint samples with the same
    # settings, seed + 1.
    generate: StageSpec = field(default_factory=lambda: StageSpec("pipeline"))
    # Pairs per synthetic experiment: 0 means "as many as the real training split" (the paper's 1x setting);
    # synthetic_x4 uses four times that. Sample i depends only on (seed, i), so the x1 set is the first
    # quarter of the x4 set and is generated once.
    synthetic_pairs: int = 0
    seg: StageSpec = field(default_factory=lambda: StageSpec("shapes"))
    # Segmenters to train, each scored on the real val split with the same model and schedule.
    experiments: list[str] = field(default_factory=lambda: ["real", "synthetic", "real+synthetic"])
    # real+synthetic: the share of every segmenter batch drawn from the synthetic set. None: the synthetic
    # set's share of the union of both sets (the paper trains on the union), e.g. 512 / (2048 + 512) = 0.2.
    synthetic_ratio: float | None = None
    # real+synthetic: the candidates (CANDIDATES) trained beside the real-only baseline. The one best on the
    # val split is the real+synthetic figure; the test split (test_split), when there is one, never takes
    # part in the choice. Each candidate is one more segmenter run.
    candidates: list[str] = field(default_factory=lambda: ["mix"])
    synthetic_phase: float = 0.2   # two-phase candidates: the share of the segmenter's steps on synthetic pairs
    # The "+filter" candidates' quality filter: generate's filters (filters.py) applied to the generated set,
    # its consistency judge the real-only segmenter (set by the pipeline). "drop" keeps whole pairs whose
    # confidently contradicted share of labelled pixels is at most max_disagreement: 0.05, about a third of a
    # typical demo object (objects cover a median 14% of the image); generate's own 0.3 dropped none of the
    # demo's pairs, whose confidently contradicted share stays under 4.3% for 90% of them (docs/results.md).
    filter: FilterConfig = field(default_factory=lambda: FilterConfig(consistency_mode="drop", max_disagreement=0.05))
    # A split of the real dataset held out from every choice (CamVid: test): the real-only segmenter and the
    # chosen real+synthetic one are also scored there. None: no such split.
    test_split: str | None = None
    eval_pairs: int = 128          # generated pairs scored for prompt adherence and image-mask agreement
    # Write the real dataset at data.resolution x data.width (data.size) into <output_dir>/data first
    # (images bicubic, masks nearest, centre crop where the aspect differs), so every stage, the
    # segmenters and their val scores run at that reduced size: the CPU recipes.
    resize_data: bool = False
    report: bool = True
    output_dir: str = "runs/pipeline"

    def __post_init__(self):
        unknown = [e for e in self.experiments if e not in EXPERIMENTS]
        if unknown or not self.experiments:
            raise ConfigError(f"experiments={list(self.experiments)}: choose from {', '.join(EXPERIMENTS)}")
        if "real" not in self.experiments:
            raise ConfigError("experiments must include 'real': it is the baseline and scores image-mask agreement")
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown or not self.candidates or len(set(self.candidates)) != len(self.candidates):
            raise ConfigError(f"candidates={list(self.candidates)}: name each once, from {', '.join(CANDIDATES)}")
        if not 0 < self.synthetic_phase < 1:
            raise ConfigError(f"synthetic_phase={self.synthetic_phase} must lie strictly between 0 and 1")
        if self.filter.consistency_segmenter is not None:
            raise ConfigError("filter.consistency_segmenter is set by the pipeline (its real-only segmenter); "
                             "leave it unset")
        if self.test_split is not None and self.test_split in (self.data.train_split, self.data.val_split):
            raise ConfigError(f"test_split={self.test_split!r} must be a split other than data.train_split and "
                             "data.val_split (it is held out from training and from the choice)")
        if self.synthetic_ratio is not None and not 0 < self.synthetic_ratio < 1:
            raise ConfigError(f"synthetic_ratio={self.synthetic_ratio} must lie strictly between 0 and 1 (or null)")
        if self.synthetic_pairs < 0:
            raise ConfigError(f"synthetic_pairs={self.synthetic_pairs} must be >= 0 (0: as many pairs as real "
                             "training images)")
        if self.eval_pairs < 1:
            raise ConfigError(f"eval_pairs={self.eval_pairs} must be >= 1")
        if not 0 <= self.caption_min_fraction < 1:
            raise ConfigError(f"caption_min_fraction={self.caption_min_fraction} must lie in [0, 1)")
