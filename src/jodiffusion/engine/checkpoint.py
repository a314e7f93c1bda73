"""Numbered, rotated, atomic training checkpoints in safetensors + JSON (no pickle anywhere).

    run_dir/checkpoints/step_00001000/
        <name>.safetensors        one per module (model, ema, ...)
        optimizer.safetensors     tensors of the optimizer state, flattened
        state.json                step, optimizer/scheduler structure, RNG-free extras, config

A checkpoint folder is written under a temporary name and renamed when complete, so a run killed at
any moment leaves either the previous checkpoint or the new one, never a partial one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from jodiffusion.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d{8})$")


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and a JSON-able skeleton."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton_state: dict[str, dict] = {}
    for pid, pstate in state["state"].items():
        entry = {}
        for key, value in pstate.items():
            if torch.is_tensor(value):
                name = f"state.{pid}.{key}"
                tensors[name] = value.detach().contiguous().cpu()
                entry[key] = {"tensor": name}
            else:
                entry[key] = {"value": value}
        skeleton_state[str(pid)] = entry
    return tensors, {"state": skeleton_state, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], skeleton: dict) -> dict:
    state = {}
    for pid, entry in skeleton["state"].items():
        state[int(pid)] = {k: tensors[v["tensor"]] if "tensor" in v else v["value"] for k, v in entry.items()}
    return {"state": state, "param_groups": skeleton["param_groups"]}


class CheckpointManager:
    def __init__(self, run_dir: str | Path, keep: int = 3):
        self.root = Path(run_dir) / CHECKPOINT_DIR
        self.keep = keep

    def list(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = _STEP_RE.match(p.name)
            if m and (p / "state.json").is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        items = self.list()
        return items[-1][1] if items else None

    def resolve(self, spec: str) -> Path:
        """``latest`` or a checkpoint folder path."""
        if spec == "latest":
            path = self.latest()
            if path is None:
                raise CheckpointError(f"--resume latest: no checkpoint in {self.root}; start without --resume")
            return path
        path = Path(spec)
        if not (path / "state.json").is_file():
            raise CheckpointError(f"{path} is not a checkpoint folder (no state.json)")
        return path

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizer=None, scheduler=None,
             extra: dict[str, Any] | None = None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step_{step:08d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:08d}.", dir=self.root))
        try:
            for name, module in modules.items():
                sd = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
                save_file(sd, str(tmp / f"{name}.safetensors"))
            state: dict[str, Any] = {"step": step, "modules": sorted(modules), "extra": extra or {}}
            if optimizer is not None:
                tensors, skeleton = _flatten_optimizer(optimizer.state_dict())
                save_file(tensors, str(tmp / "optimizer.safetensors"))
                state["optimizer"] = skeleton
            if scheduler is not None:
                state["scheduler"] = scheduler.state_dict()
            (tmp / "state.json").write_text(json.dumps(state, indent=1))
            if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        self._rotate()
        return final

    def _rotate(self) -> None:
        items = self.list()
        for _, path in items[: max(0, len(items) - self.keep)]:
            shutil.rmtree(path, ignore_errors=True)

    def load(self, path: Path, modules: dict[str, torch.nn.Module], optimizer=None, scheduler=None) -> dict:
        """Restore modules (and optimizer/scheduler) in place; returns the saved state (step, extra)."""
        try:
            state = json.loads((path / "state.json").read_text())
            for name, module in modules.items():
                module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
            if optimizer is not None and "optimizer" in state:
                tensors = load_file(str(path / "optimizer.safetensors"))
                optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
            if scheduler is not None and "scheduler" in state:
                scheduler.load_state_dict(state["scheduler"])
        except (OSError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot restore checkpoint {path}: {exc}") from None
        return state
