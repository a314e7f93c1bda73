"""The joint denoisers: ``DENOISERS`` maps a backbone name (``model.backbone``) to its class, with its
architecture presets and fields; a model folder's denoiser is found by the class name in its ``config.json``."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.models import joint_unet, uvit
from jodiffusion.models.joint_unet import UNET_PRESETS, JointUNet
from jodiffusion.models.persistence import CONFIG_NAME
from jodiffusion.models.uvit import UVIT_PRESETS, JointUViT
from jodiffusion.utils.registry import Registry

# Each entry: a PretrainedMixin class built as cls(cls.config_class(**fields)); its info: presets (name ->
# architecture fields) and arch_fields (the fields a preset or model.arch may set).
DENOISERS: Registry[type] = Registry("denoiser backbone", error=ConfigError)
DENOISERS.register("uvit", JointUViT, presets=UVIT_PRESETS, arch_fields=uvit.ARCH_FIELDS)
DENOISERS.register("unet", JointUNet, presets=UNET_PRESETS, arch_fields=joint_unet.ARCH_FIELDS)


def denoiser_classes() -> dict[str, type]:
    return {cls.__name__: cls for cls in DENOISERS.values()}


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
    """(architecture presets, architecture fields) of a backbone: a name in ``DENOISERS``."""
    info = DENOISERS.info(backbone)
    return info["presets"], info["arch_fields"]


def build_denoiser(backbone: str, preset: str, arch: dict, **shapes) -> nn.Module:
    """A fresh denoiser: the preset's architecture, ``arch`` replacing some of its fields, and the shape
    fields (``uvit.SHAPE_FIELDS``) that training takes from the codec, the annotation VAE and the text
    encoder."""
    cls = DENOISERS.get(backbone)
    presets, _ = backbone_presets(backbone)
    return cls(cls.config_class(**{**presets[preset], **arch, **shapes}))


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
