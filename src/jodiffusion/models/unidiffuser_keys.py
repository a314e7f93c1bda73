"""UniDiffuser-v1's U-ViT weights under our names: the key tables, the conversion and its checks.

Two key sets are read: the thu-ml release ``uvit_v1.pth`` (``libs/uvit_multi_post_ln_v1.py``; a flat
state dict: ``patch_embed.proj.*``, ``pos_embed``, ``in_blocks.N.*``, ``mid_block.*``, ``out_blocks.N.*``,
``decoder_pred.*``, ``text_embed.*``, ...) and a diffusers ``UniDiffuserModel``'s, converted to the release
names first (``diffusers_to_original``, the inverse of diffusers' conversion script).
``convert_unidiffuser_state_dict`` maps release names onto a JointUViT's keys with every shape checked,
without writing a tensor; reading the files and copying the weights in is ``unidiffuser_weights.py``.

UniDiffuser feeds CLIP-L text through the caption decoder's 768 -> 64 ``encode_prefix`` before its
``text_embed``; that projection is our ``text_proj``. The mask patch embedding, mask head and mask
position embeddings start as copies of the image ones; image positions are interpolated (bicubic) when
our latent grid differs. UniDiffuser's text and CLIP-image output layers have no counterpart here and
are skipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from jodiffusion.errors import CheckpointError
from jodiffusion.models.token_layout import CLIP_TEXT_TOKENS

WHAT_TO_PASS = ("pass UniDiffuser-v1's uvit_v1.pth (thu-ml release, .pth or .safetensors) or a diffusers "
                "UniDiffuserPipeline folder such as a local copy of thu-ml/unidiffuser-v1 (or its unet/ subfolder)")

# release name -> ours; each entry covers .weight and .bias
_TOP = (("patch_embed.proj", "img_in.proj"), ("text_embed", "text_in"), ("clip_img_embed", "clip_img_in"),
        ("norm", "final_norm"), ("decoder_pred", "img_out.linear"))
_BLOCK = (("norm2", "norm1"), ("attn.qkv", "attn.qkv"), ("attn.proj", "attn.proj"), ("norm3", "norm2"),
          ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))
_SKIP = (("skip_linear", "skip_linear"), ("norm1", "skip_norm"))
_OPTIONAL = ("attn.qkv.bias",)               # absent when qkv_bias=False (UniDiffuser-v1)
_NO_COUNTERPART = ("text_out.", "clip_img_out.")  # UniDiffuser's text / CLIP-image noise heads
_COMPAT_SOURCES = ("clip_img_embed.", "token_embedding.", "pos_embed_token")  # used only with unidiffuser_tokens
_MIRRORED = (("img_in.proj", "mask_in.proj"), ("img_out.linear", "mask_out.linear"))

# diffusers UniDiffuserModel -> release names
_DIFFUSERS_TOP = {"vae_img_in.proj": "patch_embed.proj", "clip_img_in": "clip_img_embed", "text_in": "text_embed",
                  "transformer.norm_out": "norm", "vae_img_out": "decoder_pred", "clip_img_out": "clip_img_out",
                  "text_out": "text_out", "pos_embed": "pos_embed", "data_type_pos_embed_token": "pos_embed_token",
                  "data_type_token_embedding": "token_embedding"}
_DIFFUSERS_BLOCK_RE = re.compile(
    r"transformer\.transformer_(in_blocks\.\d+|mid_block|out_blocks\.\d+)\.(skip\.|block\.)?(.+)")
_DIFFUSERS_BLOCK = {"attn1.to_out.0": "attn.proj", "norm1": "norm2", "norm3": "norm3", "ff.net.0.proj": "mlp.fc1",
                    "ff.net.2": "mlp.fc2"}
_DIFFUSERS_SKIP = {"skip_linear": "skip_linear", "norm": "norm1"}
_DIFFUSERS_UNUSED = ("transformer.pos_embed.",)  # a patch embedding diffusers builds but never calls


@dataclass
class UniDiffuserLoadReport:
    source: str
    format: str = "original"
    loaded: list[str] = field(default_factory=list)          # our keys taken from the checkpoint
    copied: dict[str, str] = field(default_factory=dict)     # our key -> the key it was copied from
    missing: list[str] = field(default_factory=list)         # our keys left at their initialisation
    ignored: list[str] = field(default_factory=list)         # checkpoint keys with no counterpart by design
    unexpected: list[str] = field(default_factory=list)      # checkpoint keys with no place (strict=False only)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"UniDiffuser weights from {self.source} ({self.format} format): {len(self.loaded)} tensors loaded, "
                 f"{len(self.copied)} copied, {len(self.missing)} left at initialisation"]
        lines += [f"  copied: {k} <- {v}" for k, v in self.copied.items()]
        if self.missing:
            lines.append(f"  left at initialisation: {', '.join(self.missing)}")
        if self.ignored:
            lines.append(f"  skipped (no counterpart): {', '.join(self.ignored)}")
        if self.unexpected:
            lines.append(f"  UNEXPECTED (not loaded): {', '.join(self.unexpected)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def unidiffuser_state_shapes(width: int = 1536, depth: int = 30, patch_size: int = 2, latent_size: int = 64,
                             in_channels: int = 4, text_dim: int = 64,
                             num_text_tokens: int = CLIP_TEXT_TOKENS, clip_img_dim: int = 512,
                             mlp_ratio: float = 4.0, qkv_bias: bool = False,
                             data_type_token: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of UniDiffuser's U-ViT state dict (release names). ``depth`` is UniDiffuser's:
    in-blocks + out-blocks, the mid block not counted (v1: 30 -> 31 blocks). The head count changes no
    shape. ``data_type_token``: v1's data-type token (absent in v0)."""
    d, hidden, n = width, int(width * mlp_ratio), (latent_size // patch_size) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, 1 + 1 + num_text_tokens + 1 + n, d),
        "patch_embed.proj.weight": (d, in_channels, patch_size, patch_size), "patch_embed.proj.bias": (d,),
        "text_embed.weight": (d, text_dim), "text_embed.bias": (d,),
        "text_out.weight": (text_dim, d), "text_out.bias": (text_dim,),
        "clip_img_embed.weight": (d, clip_img_dim), "clip_img_embed.bias": (d,),
        "clip_img_out.weight": (clip_img_dim, d), "clip_img_out.bias": (clip_img_dim,),
    }

    def block(prefix: str, skip: bool) -> None:
        if skip:
            shapes.update({f"{prefix}.skip_linear.weight": (d, 2 * d), f"{prefix}.skip_linear.bias": (d,),
                           f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,)})
        shapes.update({f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
                       f"{prefix}.attn.qkv.weight": (3 * d, d)})
        if qkv_bias:
            shapes[f"{prefix}.attn.qkv.bias"] = (3 * d,)
        shapes.update({f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
                       f"{prefix}.norm3.weight": (d,), f"{prefix}.norm3.bias": (d,),
                       f"{prefix}.mlp.fc1.weight": (hidden, d), f"{prefix}.mlp.fc1.bias": (hidden,),
                       f"{prefix}.mlp.fc2.weight": (d, hidden), f"{prefix}.mlp.fc2.bias": (d,)})

    for i in range(depth // 2):
        block(f"in_blocks.{i}", skip=False)
    block("mid_block", skip=False)
    for i in range(depth // 2):
        block(f"out_blocks.{i}", skip=True)
    shapes.update({"norm.weight": (d,), "norm.bias": (d,),
                   "decoder_pred.weight": (patch_size * patch_size * in_channels, d),
                   "decoder_pred.bias": (patch_size * patch_size * in_channels,)})
    if data_type_token:
        shapes.update({"token_embedding.weight": (2, d), "pos_embed_token": (1, 1, d)})
    return shapes


# -- conversion ---------------------------------------------------------------------------------
def convert_unidiffuser_state_dict(state: dict[str, torch.Tensor], model: nn.Module, *,
                                   encode_prefix: dict[str, torch.Tensor] | None = None, strict: bool = True,
                                   source: str = "the checkpoint", source_names: dict[str, str] | None = None,
                                   ) -> tuple[dict[str, torch.Tensor], UniDiffuserLoadReport]:
    """Map a UniDiffuser state dict (release names) onto ``model``'s keys; no tensor is written.
    Returns our key -> tensor (shapes checked) and the report. Works on a meta-device model."""
    cfg, layout = model.config, model.layout
    own = model.state_dict()
    names = source_names or {}
    report = UniDiffuserLoadReport(source=source)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    if not cfg.post_norm:
        raise CheckpointError("UniDiffuser-v1's blocks are post-LN: build the model with post_norm=True "
                              "(preset 'unidiffuser-v1')")
    n_in = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"in_blocks\.(\d+)\.", k))), default=-1)
    if n_in != cfg.depth // 2:
        raise CheckpointError(f"{source} holds {n_in} in-blocks ({2 * n_in + 1} blocks, UniDiffuser depth="
                              f"{2 * n_in}); this model has depth={cfg.depth} ({cfg.depth // 2} in-blocks): "
                              f"build it with depth={2 * n_in + 1}")

    def take(key: str, required: bool = True) -> torch.Tensor | None:
        if key not in state:
            if required:
                raise CheckpointError(f"{source} has no key {names.get(key, key)!r}; is it a UniDiffuser-v1 "
                                      f"U-ViT checkpoint? ({WHAT_TO_PASS})")
            return None
        used.add(key)
        return state[key]

    def put(ours: str, tensor: torch.Tensor, what: str) -> None:
        expected, found = tuple(own[ours].shape), tuple(tensor.shape)
        if expected != found:
            raise CheckpointError(f"{source}: {what} has shape {found}, but this model's {ours!r} expects "
                                  f"{expected}{_hint(ours)}")
        out[ours] = tensor
        report.loaded.append(ours)

    # 1. tensors that map one to one
    pairs = [(f"{a}.{p}", f"{b}.{p}") for a, b in _TOP for p in ("weight", "bias")]
    pairs.append(("token_embedding.weight", "data_type_embed.weight"))
    blocks = [(f"in_blocks.{i}", False) for i in range(n_in)] + [("mid_block", False)]
    blocks += [(f"out_blocks.{i}", True) for i in range(n_in)]
    for prefix, skip in blocks:
        for a, b in _BLOCK + (_SKIP if skip else ()):
            pairs += [(f"{prefix}.{a}.{p}", f"{prefix}.{b}.{p}") for p in ("weight", "bias")]
    for src, ours in pairs:
        if ours not in own:
            continue  # e.g. no compat tokens, or no qkv bias here: the source key stays unused
        tensor = take(src, required=not src.endswith(_OPTIONAL))
        if tensor is not None:
            put(ours, tensor, repr(names.get(src, src)))

    # 2. position embeddings, assembled in our token order
    put("pos_embed", _assemble_pos_embed(take, cfg, layout, report, source), "the assembled pos_embed")

    # 3. the CLIP 768 -> 64 text projection lives in UniDiffuser's caption decoder
    if model.text_proj is not None:
        if encode_prefix is not None:
            put("text_proj.weight", encode_prefix["weight"], "the caption decoder's 'encode_prefix.weight'")
            put("text_proj.bias", encode_prefix["bias"], "the caption decoder's 'encode_prefix.bias'")
        else:
            report.notes.append("text_proj (CLIP 768 -> 64) is not in the U-ViT checkpoint and was left at its "
                                "initialisation: pass caption_decoder= (UniDiffuser's caption_decoder.pth or the "
                                "pipeline's text_decoder/ folder) or the pretrained text_embed sees random inputs")

    # 4. mask parts start as copies of the image parts; a final conv starts as the identity
    for img_mod, mask_mod in _MIRRORED:
        for p in ("weight", "bias"):
            a, b = f"{img_mod}.{p}", f"{mask_mod}.{p}"
            if a not in out:
                continue
            if tuple(own[b].shape) != tuple(out[a].shape):
                raise CheckpointError(f"cannot initialise {b} {tuple(own[b].shape)} from the image's {a} "
                                      f"{tuple(out[a].shape)}: mask_channels={cfg.mask_channels} must equal "
                                      f"the checkpoint's image channels ({out['img_in.proj.weight'].shape[1]})")
            out[b] = out[a].clone()
            report.copied[b] = a
    for head in ("img_out", "mask_out"):
        key = f"{head}.conv.weight"
        if key in own:
            out[key] = nn.init.dirac_(torch.empty(own[key].shape))
            out[f"{head}.conv.bias"] = torch.zeros(own[key].shape[0])
            report.notes.append(f"{head}.conv (final_conv) set to the identity so outputs start as UniDiffuser's")

    # 5. what is left over, on either side
    for key in state:
        if key in used:
            continue
        if key.startswith(_NO_COUNTERPART) or (not cfg.unidiffuser_tokens and key.startswith(_COMPAT_SOURCES)):
            report.ignored.append(names.get(key, key))
        else:
            report.unexpected.append(names.get(key, key))
    if not cfg.unidiffuser_tokens:
        report.notes.append("this model has no UniDiffuser compat tokens (t_text, data_type, clip_img): outputs "
                            "will differ from UniDiffuser's until fine-tuned")
    if report.unexpected and strict:
        shown = ", ".join(report.unexpected[:8]) + (" ..." if len(report.unexpected) > 8 else "")
        raise CheckpointError(f"{source}: {len(report.unexpected)} checkpoint key(s) have no place in this model: "
                              f"{shown}; check the model config, or pass strict=False to skip them")
    report.missing = sorted(k for k in own if k not in out)
    return out, report


def _assemble_pos_embed(take, cfg, layout, report: UniDiffuserLoadReport, source: str) -> torch.Tensor:
    """UniDiffuser orders positions [t_img, t_text, text(CLIP_TEXT_TOKENS), clip_img, img(N)] plus a separate data-type
    position; ours follow ``layout``. Attention has no notion of order, so only the pairing matters."""
    pos = take("pos_embed")
    t = CLIP_TEXT_TOKENS
    n_img = pos.shape[1] - (t + 3) if pos.ndim == 3 else -1
    side = math.isqrt(max(n_img, 0))
    if pos.ndim != 3 or pos.shape[0] != 1 or n_img < 1 or side * side != n_img:
        raise CheckpointError(f"{source}: pos_embed has shape {tuple(pos.shape)}; expected (1, 3 + {t} + N, width) "
                              "with N a square number of image tokens (UniDiffuser-v1: (1, 1104, 1536))")
    src = {"t_img": pos[:, :1], "t_text": pos[:, 1:2], "text": pos[:, 2:2 + t], "clip_img": pos[:, 2 + t:3 + t],
           "img": pos[:, 3 + t:]}
    if "data_type" in layout.extra:
        src["data_type"] = take("pos_embed_token")
    grid = cfg.grid
    if grid != (side, side):
        img = src["img"].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, side, side)
        img = F.interpolate(img, size=grid, mode="bicubic", align_corners=False)
        src["img"] = img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos.dtype)
        report.notes.append(f"image position embeddings interpolated (bicubic) from a {side}x{side} patch grid to "
                            f"{grid[0]}x{grid[1]}")
    if cfg.num_text_tokens > t:
        raise CheckpointError(f"UniDiffuser has {t} text positions; this model asks for num_text_tokens="
                              f"{cfg.num_text_tokens}")
    if cfg.num_text_tokens < t:
        report.notes.append(f"text position embeddings: the first {cfg.num_text_tokens} of {t} kept")
    src["text"] = src["text"][:, :cfg.num_text_tokens]
    src["t_mask"], src["mask"] = src["t_img"], src["img"]
    report.notes.append("pos_embed: t_mask position copied from t_img, mask positions copied from the image's")
    return torch.cat([src[name] for name in layout.names], dim=1)


def _hint(ours: str) -> str:
    if ours == "text_in.weight":
        return " (UniDiffuser's text_embed takes 64-dim text: set text_bottleneck=64, text_dim=768)"
    if ours.startswith(("img_in.", "img_out.")):
        return " (img_channels and patch_size must match the checkpoint: SD-VAE latents, 4 channels, patch 2)"
    if ours.startswith("pos_embed") or ours.endswith(".weight"):
        return " (width, mlp_ratio and the block layout must match UniDiffuser-v1: width 1536, mlp_ratio 4)"
    return ""


def diffusers_to_original(state: dict[str, torch.Tensor]
                          ) -> tuple[dict[str, torch.Tensor], list[str], dict[str, str]]:
    """diffusers ``UniDiffuserModel`` keys -> release keys (to_q/to_k/to_v fused into qkv).
    Returns (state, diffusers keys skipped by design, release key -> diffusers key for messages)."""
    out: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    ignored: list[str] = []
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if key.startswith(_DIFFUSERS_UNUSED):
            ignored.append(key)
            continue
        module, _, param = key.rpartition(".")
        if (m := _DIFFUSERS_BLOCK_RE.fullmatch(key)) is not None:
            prefix, part, rest = m.groups()
            inner, _, param = rest.rpartition(".")
            if part == "skip." and inner in _DIFFUSERS_SKIP:
                new = f"{prefix}.{_DIFFUSERS_SKIP[inner]}.{param}"
            elif inner in ("attn1.to_q", "attn1.to_k", "attn1.to_v"):
                qkv.setdefault(f"{prefix}.attn.qkv.{param}", {})[inner[-1]] = tensor
                names[f"{prefix}.attn.qkv.{param}"] = key.replace(inner, "attn1.to_{q,k,v}")
                continue
            elif part != "skip." and inner in _DIFFUSERS_BLOCK:
                new = f"{prefix}.{_DIFFUSERS_BLOCK[inner]}.{param}"
            else:
                new = key  # unknown: stays under its own name and is reported as unexpected
        elif module in _DIFFUSERS_TOP:
            new = f"{_DIFFUSERS_TOP[module]}.{param}"
        elif key in _DIFFUSERS_TOP:
            new = _DIFFUSERS_TOP[key]
        else:
            new = key
        out[new] = tensor
        names[new] = key
    for new, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{names[new]}: only {sorted(parts)} of q, k, v found")
        out[new] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out, ignored, names


__all__ = ["WHAT_TO_PASS", "UniDiffuserLoadReport", "convert_unidiffuser_state_dict", "diffusers_to_original",
           "unidiffuser_state_shapes"]
