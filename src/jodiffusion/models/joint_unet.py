"""Joint conv UNet: image and mask latents as channels of one grid, denoised by diffusers' UNet.

The U-ViT (``uvit.py``) is the UniDiffuser fine-tuning path. From scratch on a CPU budget a conv
UNet learns far sooner: its locality ties each mask cell to the image cell under it from the first
step (the U-ViT has to learn that through attention), and it costs a fraction of the FLOPs per sample.

Both latents share the grid, so they are concatenated along the channels and split again at the
output. The network is diffusers' ``UNet2DConditionModel``: the image timestep is its timestep, the
mask timestep enters through its ``class_embed_type="timestep"`` embedding (added to the time
embedding), so the joint, mask-from-image and image-from-mask modes are one call as with the U-ViT;
the caption tokens condition it by cross-attention at the coarse levels (``attention_levels``) and,
with ``pooled_text``, through a global path: diffusers' ``addition_embed_type="text"`` pools the caption
tokens by attention and adds the result to the time embedding, which scales and shifts every ResNet
block at every level. Without it a caption reaches the fine levels only through the coarse ones, and a
global attribute (the background's brightness) was ignored entirely (docs/results.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import nn

from jodiffusion.errors import ConfigError
from jodiffusion.models.persistence import PretrainedMixin
from jodiffusion.models.token_layout import CLIP_TEXT_TOKENS
from jodiffusion.models.uvit import SHAPE_FIELDS
from jodiffusion.utils.safe_load import UnknownPresetError


@dataclass
class JointUNetConfig:
    img_channels: int = 4
    mask_channels: int = 4
    latent_height: int = 16
    latent_width: int = 16
    # Channels of each resolution level (the grid halves between levels).
    block_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    # Levels with cross-attention to the text (same length as block_channels); the middle block always has it.
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, True])
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_num_groups: int = 16
    text_dim: int = 128
    num_text_tokens: int = 16
    # The caption's global path (see the module docstring). False in folders written before it existed.
    pooled_text: bool = False
    # Self-conditioning (Chen et al., "Analog Bits", 2022): the network also sees its own previous estimate
    # of the clean latents, as extra input channels (zeros when there is none). Training gives it that
    # estimate for half of the batches (diffusion/objective.py), the sampler at every step after the first.
    self_condition: bool = False

    def __post_init__(self):
        self.block_channels = [int(c) for c in self.block_channels]
        self.attention_levels = [bool(a) for a in self.attention_levels]
        for name in ("img_channels", "mask_channels", "latent_height", "latent_width", "layers_per_block",
                     "attention_head_dim", "norm_num_groups", "text_dim", "num_text_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"JointUNetConfig.{name}={getattr(self, name)} must be positive")
        if not self.block_channels or len(self.attention_levels) != len(self.block_channels):
            raise ConfigError(f"JointUNetConfig: block_channels {self.block_channels} and attention_levels "
                             f"{self.attention_levels} must be non-empty lists of the same length")
        for c in self.block_channels:
            if c % self.norm_num_groups:
                raise ConfigError(f"JointUNetConfig.block_channels={self.block_channels}: every entry must be a "
                                 f"multiple of norm_num_groups={self.norm_num_groups}")
            if c % self.attention_head_dim:
                raise ConfigError(f"JointUNetConfig.block_channels={self.block_channels}: every entry must be a "
                                 f"multiple of attention_head_dim={self.attention_head_dim}")
        f = 2 ** (len(self.block_channels) - 1)
        if self.latent_height % f or self.latent_width % f:
            raise ConfigError(f"a {len(self.block_channels)}-level UNet halves the grid {len(self.block_channels) - 1}"
                             f" times: latent {self.latent_height}x{self.latent_width} must be divisible by {f}; "
                             "use fewer levels (model.block_channels) or another resolution")


# A preset is an architecture only; training fills in the shape fields (``uvit.SHAPE_FIELDS``: latent
# channels and grid, text width and length) from the data (training/joint.py).
UNET_PRESETS = {
    # seconds on CPU, for tests
    "tiny": dict(block_channels=[16, 32], attention_levels=[False, True], attention_head_dim=8, norm_num_groups=8,
                 pooled_text=True),
    # the CPU demo: 16 x 16 latent grid, about 4M parameters
    "small": dict(block_channels=[32, 64, 128], attention_levels=[False, False, True], pooled_text=True),
    "base": dict(block_channels=[128, 256, 512], attention_levels=[False, True, True], layers_per_block=2,
                 attention_head_dim=64, norm_num_groups=32, pooled_text=True),
}
# The shapes each preset was designed at, used when a preset is built without data (tests, benchmarks).
REFERENCE_SHAPES = {"tiny": dict(text_dim=32, num_text_tokens=8), "small": {},
                    "base": dict(text_dim=768, num_text_tokens=CLIP_TEXT_TOKENS)}
ARCH_FIELDS = tuple(f.name for f in fields(JointUNetConfig) if f.name not in SHAPE_FIELDS)


def unet_config(preset: str, **overrides) -> JointUNetConfig:
    if preset not in UNET_PRESETS:
        raise UnknownPresetError(f"model.preset={preset!r} is not a UNet preset; choose one of "
                                 f"{', '.join(UNET_PRESETS)}")
    return JointUNetConfig(**{**REFERENCE_SHAPES[preset], **UNET_PRESETS[preset], **overrides})


class JointUNet(PretrainedMixin, nn.Module):
    config_class = JointUNetConfig

    def __init__(self, config: JointUNetConfig):
        super().__init__()
        # imported here: diffusers takes seconds to import and only this path needs it (CLI start-up)
        from diffusers import UNet2DConditionModel

        self.config = config
        channels = config.img_channels + config.mask_channels
        in_channels = 2 * channels if config.self_condition else channels
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
        self.unet = UNet2DConditionModel(
            sample_size=(config.latent_height, config.latent_width), in_channels=in_channels, out_channels=channels,
            block_out_channels=tuple(config.block_channels), layers_per_block=config.layers_per_block,
            down_block_types=down, up_block_types=up, cross_attention_dim=config.text_dim,
            attention_head_dim=config.attention_head_dim, norm_num_groups=config.norm_num_groups,
            class_embed_type="timestep", **_pooled_text_kwargs(config))

    @property
    def self_conditioning(self) -> bool:
        return self.config.self_condition

    def forward(self, img: torch.Tensor, mask: torch.Tensor, t_img: torch.Tensor, t_mask: torch.Tensor,
                text: torch.Tensor, self_cond: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as ``JointUViT.forward``: predictions for (img (B, Ci, H, W), mask (B, Cm, H, W)).
        ``self_cond``: the previous estimate of the clean (img, mask) latents, for a self-conditioning model
        (None: zeros, the first step)."""
        c = self.config
        b = img.shape[0]
        expected = {"img": (img, (b, c.img_channels, c.latent_height, c.latent_width)),
                    "mask": (mask, (b, c.mask_channels, c.latent_height, c.latent_width)),
                    "text": (text, (b, c.num_text_tokens, c.text_dim))}
        for name, (x, shape) in expected.items():
            if tuple(x.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(x.shape)}; this model expects {shape} (JointUNetConfig)")
        # expand() broadcasts a scalar timestep and leaves a (B,) one as it is
        t_img, t_mask = (torch.as_tensor(t, device=img.device).expand(b) for t in (t_img, t_mask))
        x = torch.cat([img, mask.to(img.dtype)], dim=1)
        if c.self_condition:
            previous = torch.zeros_like(x) if self_cond is None else torch.cat(
                [self_cond[0].to(img.dtype), self_cond[1].to(img.dtype)], dim=1)
            x = torch.cat([x, previous], dim=1)
        elif self_cond is not None:
            raise ValueError("this denoiser was built without self-conditioning (model.arch.self_condition=false)")
        out = self.unet(x, t_img, encoder_hidden_states=text.to(img.dtype), class_labels=t_mask).sample
        return out[:, : c.img_channels], out[:, c.img_channels:]


def _pooled_text_kwargs(config: JointUNetConfig) -> dict:
    """diffusers' text-to-time-embedding path: attention pooling with heads of 32 channels (its default of
    64 heads would split a 128-wide caption into heads of 2)."""
    if not config.pooled_text:
        return {}
    heads = max(1, config.text_dim // 32) if config.text_dim % 32 == 0 else 1
    return {"addition_embed_type": "text", "addition_embed_type_num_heads": heads}


__all__ = ["ARCH_FIELDS", "UNET_PRESETS", "JointUNet", "JointUNetConfig", "unet_config"]
