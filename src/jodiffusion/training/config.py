"""The run configs of the training stages, one dataclass tree per command: ``VAERunConfig``
(``train-vae``, the ``vae`` preset group), ``CodecRunConfig`` (``train-codec``, ``codec``),
``JointRunConfig`` with its ``codec``, ``text`` and ``model`` sections (``train``, ``joint``) and
``SegRunConfig`` (``train-seg``, ``seg``). Every config checks itself on construction, so a bad value
fails when the config is loaded rather than part-way into a run. The other two commands keep theirs the
same way beside their code: ``generation/config.py`` (``generate``) and ``experiments/config.py``
(``pipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jodiffusion.data.config import DataConfig
from jodiffusion.diffusion.objective import JointObjectiveConfig
from jodiffusion.diffusion.sampling import SamplerConfig
from jodiffusion.diffusion.schedule import NoiseScheduleConfig
from jodiffusion.engine.config import TrainConfig
from jodiffusion.errors import ConfigError
from jodiffusion.models.annotation_vae import AnnotationVAEConfig
from jodiffusion.models.denoisers import DENOISERS, backbone_presets
from jodiffusion.models.uvit import SHAPE_FIELDS
from jodiffusion.segmentation.models import SEGMENTERS

# --- train-vae: the annotation VAE ------------------------------------------------------------------

@dataclass
class VAERunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: AnnotationVAEConfig = field(default_factory=AnnotationVAEConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=2e-4, weight_decay=0.05))
    crop_size: int = 0            # random square crops in training; 0 = whole masks
    hflip: bool = True
    latent_noise: float = 0.1     # noise (relative to latent std) added in training
    # Weight the cross-entropy by inverse square-root class frequency, so rare thin classes (poles,
    # signs) are learned early instead of last; the weights are measured from the training masks.
    class_balance: bool = False
    eval_batch_size: int = 8
    scale_samples: int = 512      # masks used to measure the latent scale factor
    output_dir: str = "runs/vae"

    def __post_init__(self):
        if self.crop_size < 0 or (self.crop_size and self.crop_size % self.model.downsample):
            raise ConfigError(f"crop_size={self.crop_size} must be 0 or a positive multiple of "
                             f"model.downsample={self.model.downsample}")
        if self.latent_noise < 0:
            raise ConfigError(f"latent_noise={self.latent_noise} must be >= 0")
        if self.eval_batch_size < 1 or self.scale_samples < 1:
            raise ConfigError("eval_batch_size and scale_samples must be >= 1")


# --- train-codec: a learned image codec (a small AutoencoderKL trained from scratch) -----------------

CODEC_LOSSES = ("l1", "mse")


@dataclass
class CodecModelConfig:
    # One encoder / decoder block per entry, each but the last halving the size: the downsampling factor
    # is 2 ** (len - 1), and it must be the annotation VAE's (both latents share one grid).
    block_out_channels: list[int] = field(default_factory=lambda: [16, 64, 64])
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8      # GroupNorm groups; must divide every entry of block_out_channels
    mid_attention: bool = True    # self-attention in the middle block, on the latent grid

    def __post_init__(self):
        self.block_out_channels = [int(c) for c in self.block_out_channels]
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise ConfigError(f"model.block_out_channels={self.block_out_channels} must list positive widths")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if self.norm_num_groups < 1 or bad:
            raise ConfigError(f"model.norm_num_groups={self.norm_num_groups} must divide every block width "
                             f"(not {bad}); e.g. model.norm_num_groups=8")
        if self.latent_channels < 1 or self.layers_per_block < 1:
            raise ConfigError("model.latent_channels and model.layers_per_block must be >= 1")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class CodecRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: CodecModelConfig = field(default_factory=CodecModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, weight_decay=0.0))
    # "l1": sharper edges than "mse" on flat-coloured data (the median, not the mean, of what an edge
    # could be), and it is the figure eval.json reports (mean absolute error)
    loss: str = "l1"
    # KL of the latent posterior against N(0, 1), per latent value, against the per-pixel reconstruction
    # loss: small, so the latents stay bounded and the posterior keeps a little noise without blurring
    kl_weight: float = 1e-4
    hflip: bool = True
    eval_batch_size: int = 16
    scale_samples: int = 512      # train images the latents' mean and std (shift / scaling factor) come from
    output_dir: str = "runs/codec"

    def __post_init__(self):
        if self.loss not in CODEC_LOSSES:
            raise ConfigError(f"loss='{self.loss}'; choose one of {', '.join(CODEC_LOSSES)}")
        if self.kl_weight < 0:
            raise ConfigError(f"kl_weight={self.kl_weight} must be >= 0")
        if self.eval_batch_size < 1 or self.scale_samples < 1:
            raise ConfigError("eval_batch_size and scale_samples must be >= 1")
        h, w = self.data.size
        if h % self.model.downsample or w % self.model.downsample:
            raise ConfigError(f"data size {h}x{w} is not divisible by the codec's downsampling factor "
                             f"{self.model.downsample} (2 ** (len(model.block_out_channels) - 1))")


# --- train: the joint image-mask diffusion model ------------------------------------------------

CODEC_KINDS = ("pixel-unshuffle", "pca", "sd-vae")
TEXT_KINDS = ("caption", "clip")


@dataclass
class CodecConfig:
    # "pixel-unshuffle": weight-free; "pca": patch PCA fitted on the training images (no training stage);
    # "sd-vae": Stable Diffusion's (or any diffusers) AutoencoderKL folder
    kind: str = "pixel-unshuffle"
    factor: int = 4                 # pixel-unshuffle and pca: the patch side
    components: int = 12            # pca: latent channels per patch
    fit_images: int = 512           # pca: training images the principal axes are fitted on
    path: str | None = None      # sd-vae: a VAE or pipeline folder, or a hub id already in the local cache
    subfolder: str | None = None

    def __post_init__(self):
        if self.kind not in CODEC_KINDS:
            raise ConfigError(f"codec.kind='{self.kind}'; choose one of {', '.join(CODEC_KINDS)}")
        if self.kind == "sd-vae" and not self.path:
            raise ConfigError("codec.path is required for codec.kind=sd-vae (a local folder or cached hub id)")


@dataclass
class TextConfig:
    kind: str = "caption"           # "caption": small encoder trained with the model; "clip": frozen CLIP
    path: str | None = None      # clip: a folder (or pipeline folder) or cached hub id
    dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    max_tokens: int = 16

    def __post_init__(self):
        if self.kind not in TEXT_KINDS:
            raise ConfigError(f"text.kind='{self.kind}'; choose one of {', '.join(TEXT_KINDS)}")
        if self.kind == "clip" and not self.path:
            raise ConfigError("text.path is required for text.kind=clip (a local folder or cached hub id)")


@dataclass
class JointModelConfig:
    # "uvit": the UniDiffuser-style transformer (models/uvit.py; the path for pretrained UniDiffuser
    # weights); "unet": diffusers' conv UNet with both latents as channels (models/joint_unet.py), which
    # learns far sooner from scratch on a CPU (docs/results.md).
    backbone: str = "uvit"
    preset: str = "small"           # an architecture preset of the backbone (UVIT_PRESETS or UNET_PRESETS)
    # Architecture fields replacing the preset's, e.g. {width: 512, depth: 13} (U-ViT: width, depth,
    # num_heads, patch_size, final_conv, gradient_checkpointing, pos_embed_init, ...; UNet: block_channels,
    # attention_levels, layers_per_block, attention_head_dim, norm_num_groups). The shape fields (latent
    # channels and grid, text width and length) always come from the codec, the VAE, the data and the text.
    arch: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None   # UniDiffuser-v1 weights: original checkpoint or diffusers folder

    def __post_init__(self):
        if self.backbone not in DENOISERS:
            raise ConfigError(f"model.backbone='{self.backbone}'; choose one of {', '.join(DENOISERS.names())}")
        presets, arch_fields = backbone_presets(self.backbone)
        if self.preset not in presets:
            raise ConfigError(f"model.preset='{self.preset}' is not a {self.backbone} preset; choose one of "
                             f"{', '.join(presets)}")
        self.arch = dict(self.arch)
        for key in self.arch:
            if key in SHAPE_FIELDS:
                raise ConfigError(f"model.arch.{key} is set from the data, the codec, the VAE and the text encoder "
                                 "(resolution, codec.*, text.*), not by the model config")
            if key not in arch_fields:
                raise ConfigError(f"model.arch.{key} is not a {self.backbone} architecture field; valid fields: "
                                 f"{', '.join(arch_fields)}")
        if self.backbone == "unet" and self.init_from:
            raise ConfigError("model.init_from loads UniDiffuser weights into the U-ViT: use model.backbone=uvit")


CHANNELS_LAST = ("auto", "true", "false")


@dataclass
class JointRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    vae: str = "runs/vae-shapes/annotation_vae"   # a trained annotation VAE folder
    codec: CodecConfig = field(default_factory=CodecConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: JointModelConfig = field(default_factory=JointModelConfig)
    schedule: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)
    objective: JointObjectiveConfig = field(default_factory=JointObjectiveConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-4, weight_decay=0.03, warmup_steps=100))
    ema_decay: float = 0.999
    # Conv UNet only: weights and latents in channels_last memory format. Its worth depends on the number
    # format: on a CPU it sped fp32 training up and slowed bf16 down (benchmarks/bench_joint_stage.py,
    # docs/benchmarks.md), so ``auto`` uses it where the run computes in fp32 and not under bf16;
    # ``true`` / ``false`` force it.
    channels_last: str = "auto"
    random_flip: bool = True
    # Encode every training mask (and its mirror image) once with the frozen annotation VAE when training
    # starts, instead of at every step (training/mask_latents.py); false: the per-step encoding.
    cache_mask_latents: bool = True
    sample_every: int = 0        # sample grids every N steps (0: only at the end)
    sample_count: int = 4
    # Learning curves: every N steps (0: never) the EMA model draws one pair for each of ``probe_pairs``
    # training captions (``probe_steps`` solver steps) and logs prompt adherence, the conditioning probe
    # (evaluation/probe.py) and, with ``probe_segmenter`` (a real-data segmenter folder), image-mask
    # agreement and its per-class IoU to metrics.jsonl and TensorBoard as ``probe/<figure>``.
    probe_every: int = 0
    probe_pairs: int = 32
    probe_steps: int = 10
    probe_segmenter: str | None = None
    cache_dir: str | None = None   # default: <output_dir>/cache
    output_dir: str = "runs/joint"

    def __post_init__(self):
        self.channels_last = str(self.channels_last).strip().lower()
        if self.channels_last not in CHANNELS_LAST:
            raise ConfigError(f"channels_last={self.channels_last!r}: choose one of {', '.join(CHANNELS_LAST)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay} must lie in [0, 1)")
        if self.sample_every < 0 or self.sample_count < 0:
            raise ConfigError("sample_every and sample_count must be >= 0")
        if self.probe_every < 0 or self.probe_pairs < 1 or self.probe_steps < 1:
            raise ConfigError(f"probe_every={self.probe_every} must be >= 0 (0: off), probe_pairs={self.probe_pairs} "
                             f"and probe_steps={self.probe_steps} >= 1")


# --- train-seg: a segmenter on real, synthetic or real+synthetic pairs -------------------------------

# "synthetic-then-real": the two-phase schedule, synthetic pairs only for the first ``synthetic_phase`` of the
# steps, then real pairs only (pre-train on the generated set, fine-tune on the real one).
MIX_MODES = ("real", "synthetic", "real+synthetic", "synthetic-then-real")


@dataclass
class SegRunConfig:
    # The REAL dataset: its train split is the "real" training data, its val split always scores.
    data: DataConfig = field(default_factory=DataConfig)
    # A generated dataset in the generic layout (images/<split>/, masks/<split>/, classes.json).
    synthetic: str | None = None
    synthetic_split: str = "train"
    mix: str = "real"               # "real", "synthetic", "real+synthetic" or "synthetic-then-real"
    synthetic_ratio: float = 0.5    # real+synthetic: fraction of every batch drawn from synthetic data
    # synthetic-then-real: the fraction of train.steps on synthetic batches; the rest are real batches. One
    # warmup + LR schedule spans both phases (continued, not restarted): the real phase starts at an LR the
    # schedule has already lowered and ends annealed on real data, as a fine-tune does; a restart to the peak
    # LR would largely overwrite what the synthetic phase taught. 0.2: on the demo's pairs 0.5 scored 29.0 val
    # mIoU and 0.2 scored 43.6 (real only 60.2; docs/results.md): the real phase needs most of the steps.
    synthetic_phase: float = 0.2
    model: str = "small"            # a name in segmentation.models.SEGMENTERS
    backbone_weights: str | None = None  # local torchvision ResNet state dict (.pth / .safetensors)
    aux_loss: bool = False          # deeplabv3 only: auxiliary FCN head on layer3
    aux_weight: float = 0.4
    input_size: int = 0             # short side of the training frame; 0: the images' own size
    crop_size: int = 0              # square random training crop; 0: the whole frame
    min_scale: float = 0.75         # random rescaling of each training pair before the crop
    max_scale: float = 1.25
    hflip: bool = True
    # Vertical flips and quarter turns as well (segmentation/data.py augment_pair): for data whose classes do
    # not depend on which way is up (the shapes), eight views of every pair; never for street scenes.
    dihedral: bool = False
    cache: bool = True              # hold the frame-sized training pairs in memory
    eval_batch_size: int = 8
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, weight_decay=1e-4))
    output_dir: str = "runs/seg"

    def __post_init__(self):
        if self.mix not in MIX_MODES:
            raise ConfigError(f"mix='{self.mix}'; choose one of {', '.join(MIX_MODES)}")
        if self.mix != "real" and not self.synthetic:
            raise ConfigError(f"mix='{self.mix}' needs synthetic=<folder of generated pairs>")
        if not 0.0 < self.synthetic_ratio < 1.0:
            raise ConfigError(f"synthetic_ratio={self.synthetic_ratio} must lie strictly between 0 and 1")
        if not 0.0 < self.synthetic_phase < 1.0:
            raise ConfigError(f"synthetic_phase={self.synthetic_phase} must lie strictly between 0 and 1 (the "
                             "share of train.steps on synthetic pairs before the real ones)")
        if self.model not in SEGMENTERS:
            raise ConfigError(f"model='{self.model}' is not a segmenter; choose one of {', '.join(SEGMENTERS)}")
        if self.input_size < 0 or self.crop_size < 0:
            raise ConfigError("input_size and crop_size must be >= 0 (0: use the images' own size)")
        if not 0.0 < self.min_scale <= self.max_scale:
            raise ConfigError(f"need 0 < min_scale <= max_scale, got {self.min_scale} and {self.max_scale}")
        if self.eval_batch_size < 1 or self.aux_weight < 0:
            raise ConfigError("eval_batch_size must be >= 1 and aux_weight >= 0")
