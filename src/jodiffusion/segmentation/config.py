"""The settings of a segmenter training run (``jodiffusion train-seg``, the ``seg`` config group).

``SegRunConfig`` checks itself on construction, so a bad mix, ratio, model name or size fails when the
config is loaded rather than part-way into a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jodiffusion.data.config import DataConfig
from jodiffusion.engine.config import TrainConfig
from jodiffusion.segmentation.models import SEGMENTERS

MODEL_DIR = "segmenter"  # the exported model inside a run folder
MIX_MODES = ("real", "synthetic", "real+synthetic")


@dataclass
class SegRunConfig:
    # The REAL dataset: its train split is the "real" training data, its val split always scores.
    data: DataConfig = field(default_factory=DataConfig)
    # A generated dataset in the generic layout (images/<split>/, masks/<split>/, classes.json).
    synthetic: str | None = None
    synthetic_split: str = "train"
    mix: str = "real"               # "real", "synthetic" or "real+synthetic"
    synthetic_ratio: float = 0.5    # real+synthetic: fraction of every batch drawn from synthetic data
    model: str = "small"            # a name in segmentation.models.SEGMENTERS
    backbone_weights: str | None = None  # local torchvision ResNet state dict (.pth / .safetensors)
    aux_loss: bool = False          # deeplabv3 only: auxiliary FCN head on layer3
    aux_weight: float = 0.4
    input_size: int = 0             # short side of the training frame; 0: the images' own size
    crop_size: int = 0              # square random training crop; 0: the whole frame
    min_scale: float = 0.75         # random rescaling of each training pair before the crop
    max_scale: float = 1.25
    hflip: bool = True
    cache: bool = True              # hold the frame-sized training pairs in memory
    eval_batch_size: int = 8
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, weight_decay=1e-4))
    output_dir: str = "runs/seg"

    def __post_init__(self):
        if self.mix not in MIX_MODES:
            raise ValueError(f"mix='{self.mix}'; choose one of {', '.join(MIX_MODES)}")
        if self.mix != "real" and not self.synthetic:
            raise ValueError(f"mix='{self.mix}' needs synthetic=<folder of generated pairs>")
        if not 0.0 < self.synthetic_ratio < 1.0:
            raise ValueError(f"synthetic_ratio={self.synthetic_ratio} must lie strictly between 0 and 1")
        if self.model not in SEGMENTERS:
            raise ValueError(f"model='{self.model}' is not a segmenter; choose one of {', '.join(SEGMENTERS)}")
        if self.input_size < 0 or self.crop_size < 0:
            raise ValueError("input_size and crop_size must be >= 0 (0: use the images' own size)")
        if not 0.0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale} and {self.max_scale}")
        if self.eval_batch_size < 1 or self.aux_weight < 0:
            raise ValueError("eval_batch_size must be >= 1 and aux_weight >= 0")
