"""Segmenters that score generated data: a registry of networks that map images to class logits.

Every segmenter takes ``(B, 3, H, W)`` float images in ``[0, 1]`` (ImageNet normalisation happens
inside) and returns ``(B, K, H, W)`` logits at the input resolution. ``forward(x, with_aux=True)``
returns ``(logits, aux_logits or None)`` for training with an auxiliary head.

* ``small``: a compact context network (about 0.33M parameters) that trains in a minute or two on
  a CPU.
* ``deeplabv3_resnet50`` / ``deeplabv3_resnet101``: torchvision's DeepLabV3, always built without
  downloading anything; ImageNet backbone weights come only from a local file (``backbone_weights``).

A trained segmenter is saved as a folder (``config.json`` + ``model.safetensors``) that rebuilds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.models.persistence import PretrainedMixin
from jodiffusion.utils.registry import Registry
from jodiffusion.utils.safe_load import load_safetensors, load_torch_weights

log = logging.getLogger("jodiffusion")

RANDOM_INIT = "random initialisation"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """[0, 1] RGB -> ImageNet-normalised input (the statistics torchvision backbones expect)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class DilatedResidual(nn.Module):
    """relu(x + bn(dilated 3x3 conv(x))): widens the receptive field without losing resolution."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.norm(self.conv(x)))


@dataclass
class SegmenterConfig:
    """What rebuilds a trained segmenter and how to feed it."""

    model: str = "small"
    num_classes: int = 2
    class_names: list[str] = field(default_factory=list)
    ignore_index: int = 255
    # Images are resized to (input_height, input_width) before the network, the size it was trained
    # at; logits are resized back. 0: use images as given.
    input_height: int = 0
    input_width: int = 0
    aux_loss: bool = False
    backbone: str = RANDOM_INIT  # where the initial weights came from

    @property
    def input_size(self) -> tuple[int, int] | None:
        return (self.input_height, self.input_width) if self.input_height and self.input_width else None


class Segmenter(PretrainedMixin, nn.Module):
    """Every segmenter: saved as one folder whose ``config.json`` (class "Segmenter") names the network."""

    config_class = SegmenterConfig
    saved_class = "Segmenter"
    record_version = True
    written_by = "`jodiffusion train-seg` to <output_dir>/segmenter"
    config: SegmenterConfig  # set by build_segmenter, replaced by save_segmenter with the trained one's

    @classmethod
    def from_config(cls, config: SegmenterConfig) -> Segmenter:
        model, _ = build_segmenter(config.model, config.num_classes, aux_loss=config.aux_loss)
        model.config = config
        return model


class SmallContextNet(Segmenter):
    """The CPU segmenter (about 0.33M parameters), for any input size.

    A stride-4 stem, then residual dilated convolutions at 1/4 resolution whose receptive field spans
    a whole 64 px image, fused with 1/2-resolution stem features before the logits are upsampled.
    Naming a shape takes its whole outline, whatever its colour and texture: on the shapes dataset
    this context network reaches a given mIoU several times sooner on a CPU than a U-Net of the same
    size, whose pooled encoder sees the outline only at coarse resolution.
    """

    def __init__(self, num_classes: int, channels: int = 64, dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4, 8),
                 fine_channels: int = 16):
        super().__init__()
        self.normalize = Normalize()
        self.stem2 = conv_bn_relu(3, fine_channels, stride=2)
        self.stem4 = conv_bn_relu(fine_channels, channels, stride=2)
        self.context = nn.Sequential(*(DilatedResidual(channels, d) for d in dilations))
        self.fuse = conv_bn_relu(channels + fine_channels, 32)
        self.head = nn.Conv2d(32, num_classes, 1)

    def forward(self, images, with_aux: bool = False):
        size = images.shape[-2:]
        fine = self.stem2(self.normalize(images))            # (B, 16, H/2, W/2)
        x = self.context(self.stem4(fine))                   # (B, C, H/4, W/4)
        x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat([x, fine], dim=1))           # (B, 32, H/2, W/2)
        logits = F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)  # (B, K, H, W)
        return (logits, None) if with_aux else logits


class DeepLabV3(Segmenter):
    """torchvision's DeepLabV3 (output stride 8), built offline, with ImageNet normalisation inside."""

    def __init__(self, depth: int, num_classes: int, aux_loss: bool = False):
        super().__init__()
        # imported here: torchvision only for the DeepLabV3 models; the CLI imports this module at start
        from torchvision.models import segmentation

        build = {50: segmentation.deeplabv3_resnet50, 101: segmentation.deeplabv3_resnet101}[depth]
        self.depth = depth
        self.normalize = Normalize()
        self.net = build(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)

    @property
    def backbone(self) -> nn.Module:
        """The ResNet trunk (torchvision ResNet key names, without ``fc``)."""
        return self.net.backbone

    def forward(self, images, with_aux: bool = False):
        size = images.shape[-2:]
        features = self.net.backbone(self.normalize(images))
        logits = F.interpolate(self.net.classifier(features["out"]), size=size, mode="bilinear",
                               align_corners=False)
        if not with_aux:
            return logits
        aux = None
        if self.net.aux_classifier is not None:  # computed only when asked, unlike torchvision's forward
            aux = F.interpolate(self.net.aux_classifier(features["aux"]), size=size, mode="bilinear",
                                align_corners=False)
        return logits, aux


# name -> constructor(num_classes, aux_loss); info: backbone (default True), whether the network has a
# pretrained backbone to load and an auxiliary head. A network saved with save_segmenter subclasses Segmenter.
SEGMENTERS: Registry[Callable[[int, bool], Segmenter]] = Registry("segmenter")
SEGMENTERS.register("small", lambda k, aux: SmallContextNet(k), backbone=False)
SEGMENTERS.register("deeplabv3_resnet50", lambda k, aux: DeepLabV3(50, k, aux))
SEGMENTERS.register("deeplabv3_resnet101", lambda k, aux: DeepLabV3(101, k, aux))


def build_segmenter(name: str, num_classes: int, backbone_weights: str | Path | None = None,
                    aux_loss: bool = False) -> tuple[nn.Module, str]:
    """A freshly initialised segmenter and a line saying where its weights came from:
    ``"random initialisation"`` or ``"backbone from <file>"`` (plus any ignored keys)."""
    make = SEGMENTERS.get(name)
    if num_classes < 2:
        raise ConfigError(f"a segmenter needs at least 2 classes, got num_classes={num_classes}")
    if not SEGMENTERS.info(name).get("backbone", True) and (aux_loss or backbone_weights):
        raise ConfigError(f"the '{name}' segmenter has no pretrained backbone and no auxiliary head; "
                          "unset backbone_weights and aux_loss, or choose a deeplabv3 model")
    model = make(num_classes, aux_loss)
    info = RANDOM_INIT
    if backbone_weights:
        info = load_backbone_weights(model, backbone_weights)
    model.config = SegmenterConfig(model=name, num_classes=num_classes, aux_loss=aux_loss, backbone=info)
    return model, info


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"backbone weights file {path} not found; give the path of a torchvision "
                              "ResNet state dict (.pth or .safetensors)")
    if path.suffix == ".safetensors":
        state = load_safetensors(path, hint="give a torchvision ResNet state dict")
    else:  # one line naming the file for an empty, truncated or pickled one
        state = load_torch_weights(path, hint="give a torchvision ResNet state dict (.pth or .safetensors)")
    for key in ("state_dict", "model"):  # training checkpoints often nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def _strip_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix (``module.``, ``backbone.``, ...) when that makes the keys match."""
    best = state
    for prefix in ("module.", "backbone.", "model.", "module.backbone.", "net.backbone."):
        stripped = {k.removeprefix(prefix): v for k, v in state.items()}
        if len(expected & stripped.keys()) > len(expected & best.keys()):
            best = stripped
    return best


def load_backbone_weights(model: nn.Module, path: str | Path) -> str:
    """Copy a torchvision ResNet state dict into ``model.backbone``; ``fc.*`` and other extra keys are
    ignored and reported. Missing keys or wrong shapes mean the file is for another network."""
    path = Path(path)
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ConfigError(f"{type(model).__name__} has no pretrained backbone to load")
    target = backbone.state_dict()
    state = _strip_prefix(_read_state_dict(path), set(target))
    expected = f"a torchvision resnet{getattr(model, 'depth', '')} state dict"
    missing = sorted(k for k in target.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    if missing:
        raise CheckpointError(f"{path} does not match the backbone: {len(missing)} of its {len(target)} tensors "
                              f"are missing (e.g. {', '.join(missing[:3])}); expected {expected}")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in target.items()
             if k in state and state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path} does not match the backbone: {len(wrong)} tensor(s) have the wrong "
                              f"shape (e.g. {'; '.join(wrong[:3])}); expected {expected}")
    backbone.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    unexpected = sorted(state.keys() - target.keys())
    info = f"backbone from {path}"
    if unexpected:
        shown = ", ".join(unexpected[:4]) + (", ..." if len(unexpected) > 4 else "")
        info += f" (ignored {len(unexpected)} unexpected key(s): {shown})"
    log.info("%s", info)
    return info


# --- saved segmenters -------------------------------------------------------------------------------

def save_segmenter(model: Segmenter, config: SegmenterConfig, folder: str | Path) -> Path:
    """Write ``model`` with ``config`` (what rebuilds it and how to feed it) as a segmenter folder."""
    model.config = config
    model.save_pretrained(folder)
    return Path(folder)


def load_segmenter(folder: str | Path, map_location: str = "cpu") -> tuple[Segmenter, SegmenterConfig]:
    """Rebuild a segmenter saved by :func:`save_segmenter` (eval mode) and its config."""
    model = Segmenter.from_pretrained(folder, map_location)
    return model.eval(), model.config
