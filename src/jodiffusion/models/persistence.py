"""Saving and loading a model as a self-describing folder: ``config.json`` (its dataclass config
plus the class name) and ``model.safetensors``. Shared by every network we train."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

from jodiffusion import __version__
from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.utils.io import save_safetensors_atomic, write_json_atomic
from jodiffusion.utils.safe_load import load_safetensors, read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def num_parameters(module, trainable_only: bool = False) -> int:
    """Parameters of a module (only those with gradients when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


VERSION_KEY = "jodiffusion_version"


class PretrainedMixin:
    """For an ``nn.Module`` built as ``cls(config)`` from a dataclass ``config_class`` (or by ``from_config``)."""

    config_class: ClassVar[type]
    written_by: ClassVar[str] = "save_pretrained"  # named in the error for a missing file
    # The class name config.json records and loading checks: the class's own name, or one name for a family
    # of networks whose config says which one to build (the segmenters: "Segmenter").
    saved_class: ClassVar[str | None] = None
    # Whether config.json also records the package version (the segmenter folders always have; the
    # other models' config.json never did, and stays as it was).
    record_version: ClassVar[bool] = False

    @classmethod
    def class_name(cls) -> str:
        return cls.saved_class or cls.__name__

    @classmethod
    def from_config(cls, config):
        """A fresh model for ``config``."""
        return cls(config)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return num_parameters(self, trainable_only)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        save_safetensors_atomic(self.state_dict(), folder / WEIGHTS_NAME)
        version = {VERSION_KEY: __version__} if self.record_version else {}
        write_json_atomic(folder / CONFIG_NAME, {"class": self.class_name(), **version, **asdict(self.config)})

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str = "cpu"):
        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise CheckpointError(f"{p} not found: a {cls.class_name()} folder holds {CONFIG_NAME} and "
                                      f"{WEIGHTS_NAME} (written by {cls.written_by})")
        hint = f"write the folder again with {cls.written_by}"
        data = read_json(cfg_path, "model config", hint)
        data.pop(VERSION_KEY, None)  # a record of what wrote the folder, never a config field
        kind = data.pop("class", cls.class_name())
        if kind != cls.class_name():
            raise CheckpointError(f"{cfg_path} describes a {kind}, not a {cls.class_name()}")
        try:
            config = cls.config_class(**data)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{cfg_path}: invalid {cls.class_name()} config: {exc}") from None
        try:
            model = cls.from_config(config)
        except (KeyError, ConfigError) as exc:  # a family's from_config: a member or a size it cannot build
            raise CheckpointError(f"{cfg_path}: invalid {cls.class_name()} config: {exc}") from None
        try:
            model.load_state_dict(load_safetensors(w_path, map_location, hint))
        except RuntimeError as exc:
            detail = " ".join(str(exc).split("\n")[1:]).strip() or str(exc)
            raise CheckpointError(f"{w_path} does not match {cfg_path}: {detail[:500]}") from None
        return model
