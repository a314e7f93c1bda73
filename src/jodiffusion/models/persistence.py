"""Saving and loading a model as a self-describing folder: ``config.json`` (its dataclass config
plus the class name) and ``model.safetensors``. Shared by every network we train."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

from jodiffusion.errors import CheckpointError
from jodiffusion.utils.io import save_safetensors_atomic, write_json_atomic
from jodiffusion.utils.safe_load import load_safetensors, read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def num_parameters(module, trainable_only: bool = False) -> int:
    """Parameters of a module (only those with gradients when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class PretrainedMixin:
    """For an ``nn.Module`` built as ``cls(config)`` from a dataclass ``config_class``."""

    config_class: ClassVar[type]
    written_by: ClassVar[str] = "save_pretrained"  # named in the error for a missing file

    def num_parameters(self, trainable_only: bool = False) -> int:
        return num_parameters(self, trainable_only)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        save_safetensors_atomic(self.state_dict(), folder / WEIGHTS_NAME)
        write_json_atomic(folder / CONFIG_NAME, {"class": type(self).__name__, **asdict(self.config)})

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str = "cpu"):
        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise CheckpointError(f"{p} not found: a {cls.__name__} folder holds {CONFIG_NAME} and "
                                      f"{WEIGHTS_NAME} (written by {cls.written_by})")
        hint = f"write the folder again with {cls.written_by}"
        data = read_json(cfg_path, "model config", hint)
        kind = data.pop("class", cls.__name__)
        if kind != cls.__name__:
            raise CheckpointError(f"{cfg_path} describes a {kind}, not a {cls.__name__}")
        try:
            config = cls.config_class(**data)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{cfg_path}: invalid {cls.__name__} config: {exc}") from None
        model = cls(config)
        try:
            model.load_state_dict(load_safetensors(w_path, map_location, hint))
        except RuntimeError as exc:
            detail = " ".join(str(exc).split("\n")[1:]).strip() or str(exc)
            raise CheckpointError(f"{w_path} does not match {cfg_path}: {detail[:500]}") from None
        return model
