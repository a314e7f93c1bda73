"""The joint denoisers a model folder may hold, found by the class name in its ``config.json``."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from jodiffusion.errors import CheckpointError
from jodiffusion.models import joint_unet, uvit
from jodiffusion.models.joint_unet import UNET_PRESETS, JointUNet, JointUNetConfig
from jodiffusion.models.persistence import CONFIG_NAME
from jodiffusion.models.uvit import UVIT_PRESETS, JointUViT, UViTConfig


def denoiser_classes() -> dict[str, type]:
    return {JointUViT.__name__: JointUViT, JointUNet.__name__: JointUNet}


def load_denoiser(folder: str | Path) -> nn.Module:
    """A ``JointUViT`` or ``JointUNet`` saved with ``save_pretrained``."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} not found: a denoiser folder holds {CONFIG_NAME} and model.safetensors")
    try:
        kind = json.loads(path.read_text()).get("class", "JointUViT")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is not a valid JSON config ({exc}); re-export the model") from None
    classes = denoiser_classes()
    if kind not in classes:
        raise CheckpointError(f"{path} describes a {kind}; known denoisers: {', '.join(classes)}")
    return classes[kind].from_pretrained(folder)


def backbone_presets(backbone: str) -> tuple[dict[str, dict], tuple[str, ...]]:
    """(architecture presets, architecture fields) of a backbone: ``"uvit"`` or ``"unet"``."""
    if backbone == "unet":
        return UNET_PRESETS, joint_unet.ARCH_FIELDS
    return UVIT_PRESETS, uvit.ARCH_FIELDS


def build_denoiser(backbone: str, preset: str, arch: dict, **shapes) -> nn.Module:
    """A fresh denoiser: the preset's architecture, ``arch`` replacing some of its fields, and the shape
    fields (``uvit.SHAPE_FIELDS``) that training takes from the codec, the annotation VAE and the text
    encoder."""
    presets, _ = backbone_presets(backbone)
    fields = {**presets[preset], **arch, **shapes}
    if backbone == "unet":
        return JointUNet(JointUNetConfig(**fields))
    return JointUViT(UViTConfig(**fields))


class DenoiserWithText(nn.Module):
    """The trained parts as one module (one DDP wrapper, one EMA, one checkpoint entry)."""

    def __init__(self, denoiser: nn.Module, text_encoder: nn.Module | None):
        super().__init__()
        self.denoiser = denoiser  # a JointUViT or a JointUNet
        self.text_encoder = text_encoder  # None when the text encoder is frozen (its outputs are cached)

    @property
    def self_conditioning(self) -> bool:
        return bool(getattr(self.denoiser, "self_conditioning", False))

    def forward(self, img, mask, t_img, t_mask, text, self_cond=None):
        if self_cond is None:  # the U-ViT takes no self-conditioning input
            return self.denoiser(img, mask, t_img, t_mask, text)
        return self.denoiser(img, mask, t_img, t_mask, text, self_cond=self_cond)
