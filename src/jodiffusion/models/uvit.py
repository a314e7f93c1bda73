"""Joint U-ViT: one transformer denoises image latents and annotation-mask latents together.

All inputs become tokens of one sequence (see ``token_layout.py``): a sinusoidal timestep token per
noised modality, the text tokens, and the patches of both latent grids. Every modality has its own
timestep, so joint generation (both noised), mask-from-image (image at t=0) and image-from-mask (mask
at t=0) are the same call; marginals use t=1000 for the other modality. Full self-attention over the
sequence, U-ViT long skips (out-block i sees in-block i's output), one output head per modality.

With ``post_norm`` and ``unidiffuser_tokens`` the network is UniDiffuser-v1's U-ViT plus mask tokens,
so its weights load exactly (``unidiffuser_weights.py``). The network is a plain module: noise
schedules, losses and samplers live in ``jodiffusion.diffusion``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from jodiffusion.errors import ConfigError
from jodiffusion.models.persistence import PretrainedMixin
from jodiffusion.models.token_layout import CLIP_TEXT_TOKENS, UNIDIFFUSER_EXTRA, TokenLayout
from jodiffusion.utils.safe_load import UnknownPresetError


@dataclass
class UViTConfig:
    img_channels: int = 4
    mask_channels: int = 4
    latent_height: int = 8
    latent_width: int = 8
    patch_size: int = 2
    width: int = 256
    depth: int = 7                   # all blocks: depth // 2 in-blocks, one mid block, depth // 2 out-blocks
    num_heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 768              # width of the text encoder's token embeddings (CLIP-L: 768)
    num_text_tokens: int = CLIP_TEXT_TOKENS
    text_bottleneck: int = 0         # >0: text_dim -> text_bottleneck -> width (UniDiffuser: 64); 0: one Linear
    post_norm: bool = False          # post-LN blocks (UniDiffuser-v1); False: pre-LN (U-ViT)
    unidiffuser_tokens: bool = False  # add UniDiffuser's text-timestep, data-type and CLIP-image tokens
    clip_img_dim: int = 512          # input width of the CLIP-image token (only with unidiffuser_tokens)
    data_type: int = 1               # UniDiffuser-v1 data-type id fed to its token (1: its default)
    final_conv: bool = False         # a 3x3 conv on each predicted latent (U-ViT)
    qkv_bias: bool = False
    gradient_checkpointing: bool = False
    # "sincos": image and mask tokens of one grid cell start from the SAME 2-D sine-cosine position
    # (the network then knows from step 0 which mask patch lies under which image patch; learning that
    # from random positions cost most of a short CPU run); "random": truncated normal, as U-ViT.
    pos_embed_init: str = "sincos"
    # A global path for the caption: the mean of its tokens, projected (zero-initialised, so pretrained
    # weights start unchanged), is added to every timestep, image and mask token. Attention alone let a
    # short run ignore a global attribute such as the background's brightness (docs/results.md).
    pooled_text: bool = False

    def __post_init__(self):
        for name in ("img_channels", "mask_channels", "latent_height", "latent_width", "patch_size", "width",
                     "num_heads", "text_dim", "num_text_tokens", "clip_img_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"UViTConfig.{name}={getattr(self, name)} must be positive")
        p = self.patch_size
        for name in ("latent_height", "latent_width"):
            size = getattr(self, name)
            if size % p:
                raise ConfigError(f"UViTConfig.{name}={size} is not divisible by patch_size={p}; use a latent "
                                 f"size that is a multiple of {p} (e.g. {math.ceil(size / p) * p}) or patch_size=1")
        if self.depth < 1 or self.depth % 2 == 0:
            raise ConfigError(f"UViTConfig.depth={self.depth} must be odd (in-blocks + mid block + out-blocks); "
                             "UniDiffuser's depth=30 is 31 blocks here")
        if self.width % self.num_heads:
            raise ConfigError(f"UViTConfig.width={self.width} is not divisible by num_heads={self.num_heads}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"UViTConfig.mlp_ratio={self.mlp_ratio} must be positive")
        if self.text_bottleneck < 0:
            raise ConfigError(f"UViTConfig.text_bottleneck={self.text_bottleneck} must be >= 0 (0: no bottleneck)")
        if self.pos_embed_init not in ("sincos", "random"):
            raise ConfigError(f"UViTConfig.pos_embed_init='{self.pos_embed_init}'; choose 'sincos' or 'random'")
        if self.data_type not in (0, 1):
            raise ConfigError(f"UViTConfig.data_type={self.data_type} must be 0 or 1")

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) of each latent."""
        return self.latent_height // self.patch_size, self.latent_width // self.patch_size

    @property
    def layout(self) -> TokenLayout:
        n = self.grid[0] * self.grid[1]
        extra = UNIDIFFUSER_EXTRA if self.unidiffuser_tokens else ()
        return TokenLayout(num_text=self.num_text_tokens, img_tokens=n, mask_tokens=n, extra=extra)


# The fields a training run takes from its data, not from a preset: latent channels (image codec and
# annotation VAE), the latent grid (data size / codec factor) and the text tokens (text encoder).
SHAPE_FIELDS = ("img_channels", "mask_channels", "latent_height", "latent_width", "text_dim", "num_text_tokens")

# A preset is an architecture only; training fills in SHAPE_FIELDS from the data (training/joint.py).
UVIT_PRESETS = {
    "tiny": dict(width=32, depth=3, num_heads=2, final_conv=True, pooled_text=True),  # seconds on CPU, for tests
    "small": dict(width=256, depth=7, num_heads=4, final_conv=True, pooled_text=True),  # a CPU
    "base": dict(width=1024, depth=13, num_heads=16, final_conv=True, pooled_text=True),  # one GPU
    # UniDiffuser-v1's U-ViT (depth 30 = 15 + 1 + 15 blocks) plus the mask tokens
    "unidiffuser-v1": dict(width=1536, depth=31, num_heads=24, text_bottleneck=64, post_norm=True,
                           unidiffuser_tokens=True),
}
# The shapes each preset was designed at, used when a preset is built without data (tests, benchmarks):
# tiny with a 32-wide text encoder; small for 64 px through a pixel-unshuffle codec (factor 4) -> 48 x 16
# x 16; base for 256 px through the SD VAE (4 x 32 x 32) with CLIP-L text; unidiffuser-v1 at 512 px.
REFERENCE_SHAPES = {
    "tiny": dict(text_dim=32, num_text_tokens=8),
    "small": dict(img_channels=48, mask_channels=4, latent_height=16, latent_width=16, text_dim=128,
                  num_text_tokens=16),
    "base": dict(latent_height=32, latent_width=32, text_dim=768, num_text_tokens=CLIP_TEXT_TOKENS),
    "unidiffuser-v1": dict(latent_height=64, latent_width=64, text_dim=768, num_text_tokens=CLIP_TEXT_TOKENS),
}
ARCH_FIELDS = tuple(f.name for f in fields(UViTConfig) if f.name not in SHAPE_FIELDS)


def uvit_config(preset: str, **overrides) -> UViTConfig:
    """A preset's architecture at its reference shapes, with some fields replaced, e.g.
    ``uvit_config("small", depth=9)`` or ``uvit_config("small", latent_height=24, latent_width=32)``."""
    if preset not in UVIT_PRESETS:
        raise UnknownPresetError(f"model.preset={preset!r} is not a U-ViT preset; choose one of "
                                 f"{', '.join(UVIT_PRESETS)}")
    valid = [f.name for f in fields(UViTConfig)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown UViTConfig field(s) {unknown}; valid fields: {', '.join(valid)}")
    return UViTConfig(**{**REFERENCE_SHAPES[preset], **UVIT_PRESETS[preset], **overrides})


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) float32, [cos | sin] halves as in UniDiffuser (no MLP).
    Timesteps are used as given (0..1000 scale) and may be fractional."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) / half * torch.arange(half, dtype=torch.float32, device=t.device))
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def sincos_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """(rows * cols, dim) fixed 2-D position code: half the channels encode the row, half the column,
    each as [sin | cos] of geometrically spaced frequencies (MAE / DiT style), row-major like the patches."""
    rows, cols = grid
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1))
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32),
                          indexing="ij")
    parts = []
    for coord in (r.reshape(-1), c.reshape(-1)):
        args = coord[:, None] * freqs[None]
        parts += [torch.sin(args), torch.cos(args)]
    out = torch.cat(parts, dim=1)
    return F.pad(out, (0, dim - out.shape[1]))  # widths not divisible by 4: zero-pad the last channels


class PatchEmbed(nn.Module):
    def __init__(self, channels: int, width: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):  # (B, C, H, W) -> (B, H/p * W/p, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, width: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x):  # (B, L, D)
        b, n, d = x.shape
        # The qkv features are laid out (3, heads, head_dim), as in UniDiffuser's checkpoints.
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Transformer block; out-blocks (``skip=True``) first merge the long skip: Linear(2D -> D)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, post_norm: bool,
                 skip: bool = False):
        super().__init__()
        self.post_norm = post_norm
        self.skip_linear = nn.Linear(2 * width, width) if skip else None
        self.skip_norm = nn.LayerNorm(width) if skip and post_norm else None
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x, skip=None):  # (B, L, D) -> (B, L, D)
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
            if self.skip_norm is not None:
                x = self.skip_norm(x)
        if self.post_norm:
            x = self.norm1(x + self.attn(x))
            return self.norm2(x + self.mlp(x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OutputHead(nn.Module):
    """Tokens of one latent -> its prediction: Linear to p*p*C, unpatchify, optional 3x3 conv."""

    def __init__(self, width: int, channels: int, patch_size: int, grid: tuple[int, int], final_conv: bool):
        super().__init__()
        self.channels, self.patch_size, self.grid = channels, patch_size, grid
        self.linear = nn.Linear(width, patch_size * patch_size * channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if final_conv else None

    def forward(self, x):  # (B, N, D) -> (B, C, H, W)
        b, p, c, (h, w) = x.shape[0], self.patch_size, self.channels, self.grid
        # Patch features are laid out (p, p, C), as in UniDiffuser's decoder_pred.
        x = self.linear(x).view(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * p, w * p)
        return self.conv(x) if self.conv is not None else x


class JointUViT(PretrainedMixin, nn.Module):
    config_class = UViTConfig
    written_by = "JointUViT.save_pretrained"

    def __init__(self, config: UViTConfig):
        super().__init__()
        self.config = config
        self.layout = config.layout
        c, d = config, config.width
        self.img_in = PatchEmbed(c.img_channels, d, c.patch_size)
        self.mask_in = PatchEmbed(c.mask_channels, d, c.patch_size)
        self.text_proj = nn.Linear(c.text_dim, c.text_bottleneck) if c.text_bottleneck else None
        self.text_in = nn.Linear(c.text_bottleneck or c.text_dim, d)
        self.pooled_text_in = nn.Linear(c.text_dim, d) if c.pooled_text else None
        if c.unidiffuser_tokens:
            self.clip_img_in = nn.Linear(c.clip_img_dim, d)
            self.data_type_embed = nn.Embedding(2, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.layout.length, d))

        block = partial(Block, d, c.num_heads, c.mlp_ratio, c.qkv_bias, c.post_norm)
        self.in_blocks = nn.ModuleList([block() for _ in range(c.depth // 2)])
        self.mid_block = block()
        self.out_blocks = nn.ModuleList([block(skip=True) for _ in range(c.depth // 2)])
        self.final_norm = nn.LayerNorm(d)
        self.img_out = OutputHead(d, c.img_channels, c.patch_size, c.grid, c.final_conv)
        self.mask_out = OutputHead(d, c.mask_channels, c.patch_size, c.grid, c.final_conv)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U-ViT initialisation: truncated normal (std 0.02) for linear layers and position embeddings."""
        def init(m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=0.02)

        self.apply(init)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.config.pos_embed_init == "sincos":
            with torch.no_grad():
                grid = sincos_2d(self.config.grid, self.config.width)
                self.pos_embed[0, self.layout.img] = grid
                self.pos_embed[0, self.layout.mask] = grid
        if self.pooled_text_in is not None:  # starts as no change: a loaded pretrained network is intact
            nn.init.zeros_(self.pooled_text_in.weight)
            nn.init.zeros_(self.pooled_text_in.bias)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, img: torch.Tensor, mask: torch.Tensor, t_img: torch.Tensor, t_mask: torch.Tensor,
                text: torch.Tensor, *, t_text: torch.Tensor | None = None,
                clip_img: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise predictions for both latents.

        img (B, Ci, H, W), mask (B, Cm, H, W): noised latents; t_img, t_mask: (B,) timesteps on the
        0..1000 scale (int or float; a scalar is broadcast); text: (B, L, text_dim) embeddings.
        Only with ``unidiffuser_tokens``: ``t_text`` (default 0: clean text) and ``clip_img``
        (B, clip_img_dim) (default zeros) feed UniDiffuser's extra tokens.
        Returns (eps_img (B, Ci, H, W), eps_mask (B, Cm, H, W)).
        """
        self._check_inputs(img, mask, text, t_text, clip_img)
        b = img.shape[0]
        x_img, x_mask = self.img_in(img), self.mask_in(mask)  # (B, N, D) each
        dtype = x_img.dtype
        pooled = self.pooled_text_in(text.mean(1)).unsqueeze(1) if self.pooled_text_in is not None else None
        if self.text_proj is not None:
            text = self.text_proj(text)
        parts = {
            "t_img": self._time_token(t_img, b, dtype),
            "t_mask": self._time_token(t_mask, b, dtype),
            "text": self.text_in(text),
            "img": x_img,
            "mask": x_mask,
        }
        if self.config.unidiffuser_tokens:
            parts["t_text"] = self._time_token(0 if t_text is None else t_text, b, dtype)
            parts["data_type"] = self.data_type_embed.weight[self.config.data_type].to(dtype).expand(b, 1, -1)
            if clip_img is None:
                clip_img = x_img.new_zeros(b, self.config.clip_img_dim)
            parts["clip_img"] = self.clip_img_in(clip_img.reshape(b, 1, -1))
        if pooled is not None:
            for name in ("t_img", "t_mask", "img", "mask"):
                parts[name] = parts[name] + pooled
        x = torch.cat([parts[name] for name in self.layout.names], dim=1) + self.pos_embed  # (B, L, D)

        skips = []
        for blk in self.in_blocks:
            x = self._run(blk, x)
            skips.append(x)
        x = self._run(self.mid_block, x)
        for blk in self.out_blocks:
            x = self._run(blk, x, skips.pop())
        x = self.final_norm(x)
        return self.img_out(x[:, self.layout.img]), self.mask_out(x[:, self.layout.mask])

    def _run(self, block: Block, x, skip=None):
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, skip, use_reentrant=False)
        return block(x, skip)

    def _time_token(self, t, batch: int, dtype: torch.dtype) -> torch.Tensor:  # -> (B, 1, D)
        t = torch.as_tensor(t, device=self.pos_embed.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"a timestep tensor has shape {tuple(t.shape)}; expected ({batch},) or a scalar")
        return timestep_embedding(t, self.config.width).to(dtype).unsqueeze(1)

    def _check_inputs(self, img, mask, text, t_text, clip_img) -> None:
        c = self.config
        b = img.shape[0]
        expected = {
            "img": (img, (b, c.img_channels, c.latent_height, c.latent_width), "img_channels, latent_height/width"),
            "mask": (mask, (b, c.mask_channels, c.latent_height, c.latent_width),
                     "mask_channels, latent_height/width"),
            "text": (text, (b, c.num_text_tokens, c.text_dim), "num_text_tokens, text_dim"),
        }
        for name, (x, shape, fields_) in expected.items():
            if tuple(x.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(x.shape)}; this model expects {shape} "
                                 f"(UViTConfig {fields_})")
        if not c.unidiffuser_tokens and (t_text is not None or clip_img is not None):
            raise ValueError("t_text and clip_img feed UniDiffuser's extra tokens; this model has none "
                             "(UViTConfig.unidiffuser_tokens=False)")
        if clip_img is not None and clip_img.numel() != b * c.clip_img_dim:
            raise ValueError(f"clip_img has shape {tuple(clip_img.shape)}; expected ({b}, {c.clip_img_dim})")

    # -- bookkeeping ----------------------------------------------------------------------------


__all__ = ["ARCH_FIELDS", "SHAPE_FIELDS", "JointUViT", "UVIT_PRESETS", "UViTConfig", "sincos_2d", "timestep_embedding",
           "uvit_config"]
