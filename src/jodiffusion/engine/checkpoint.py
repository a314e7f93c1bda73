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
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from jodiffusion.errors import CheckpointError
from jodiffusion.utils.io import replace_folder
from jodiffusion.utils.safe_load import disk_full_error, is_disk_full
from jodiffusion.utils.tempnames import is_temp_name, make_temp_dir, standing_for

log = logging.getLogger("jodiffusion")

CHECKPOINT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d{8})$")
# ``save`` writes into a temporary folder standing for ``step_XXXXXXXX`` (``utils.tempnames``), then renames it


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


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning logged once per process (a run resolves its checkpoint before and when it loads it)."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _tensor_file_problem(file: Path) -> str | None:
    if not file.is_file():
        return f"{file} is missing"
    try:
        with safe_open(str(file), framework="pt"):
            pass  # opening checks the header against the file size: a truncated file fails here
    except Exception as exc:  # SafetensorError, OSError: every failure is a finding
        return f"{file} is corrupt or incomplete ({exc})"
    return None


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing; resume from another checkpoint") from None
    except Exception as exc:  # SafetensorError and the like
        raise CheckpointError(f"{file} is corrupt or incomplete ({exc}); resume from another checkpoint "
                              "(--resume latest takes the newest complete one)") from None


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

    def remove_temporary(self) -> list[str]:
        """Delete the temporary folders of saves a kill interrupted (``.jodiffusion-<token>.step_XXXXXXXX.tmp``);
        returns their names. Call it when a run starts or resumes, while no save of this run is under way."""
        if not self.root.is_dir():
            return []
        removed = []
        for path in sorted(self.root.iterdir()):
            if is_temp_name(path.name) and _STEP_RE.match(standing_for(path.name) or "") and path.is_dir() \
                    and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed

    def latest(self) -> Path | None:
        items = self.list()
        return items[-1][1] if items else None

    def resolve(self, spec: str) -> Path:
        """``latest`` or a checkpoint folder path, checked to be complete (``verify``) before anything is
        loaded or written. ``latest`` passes over corrupt newer checkpoints (naming the bad file in a
        warning) to the newest complete one; a corrupt explicit folder is an error naming the file."""
        if spec == "latest":
            items = self.list()
            if not items:
                raise CheckpointError(f"--resume latest: no checkpoint in {self.root}; start without --resume")
            problems = []
            for _, path in reversed(items):
                problem = self.verify(path)
                if problem is None:
                    if problems:
                        _warn_once(f"{'; '.join(problems)}: resuming from {path}, the newest complete checkpoint, "
                                   "instead")
                    return path
                problems.append(problem)
            raise CheckpointError(f"--resume latest: no complete checkpoint in {self.root} ({'; '.join(problems)}); "
                                  "start again with --overwrite, or without --resume in another output_dir")
        path = Path(spec)
        if not (path / "state.json").is_file():
            raise CheckpointError(f"{path} is not a checkpoint folder (no state.json)")
        problem = self.verify(path)
        if problem is not None:
            raise CheckpointError(f"{problem}; nothing was changed. Resume from another checkpoint "
                                  "(--resume latest takes the newest complete one)")
        return path

    @staticmethod
    def verify(path: Path) -> str | None:
        """None when ``path`` is a complete checkpoint: a readable state.json and, for every module it
        names (and the optimizer), a safetensors file whose header and size agree. Otherwise what is
        wrong, naming the file. Reads headers only, never the tensors."""
        state_file = path / "state.json"
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"{state_file} is unreadable ({exc})"
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) \
                or not isinstance(state.get("modules"), list):
            return f"{state_file} is not a checkpoint state (no step and modules)"
        names = [f"{name}.safetensors" for name in state["modules"]]
        if "optimizer" in state:
            names.append("optimizer.safetensors")
        for name in names:
            problem = _tensor_file_problem(path / name)
            if problem is not None:
                return problem
        return None
    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizer=None, scheduler=None,
             extra: dict[str, Any] | None = None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step_{step:08d}"
        tmp = make_temp_dir(self.root, final.name)
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
            # re-saving the same step (a final save right after a periodic one) swaps the folders, so that
            # a kill in between never leaves the step missing
            replace_folder(tmp, final)
        except Exception as exc:
            if is_disk_full(exc):  # the temporary folder goes (below); earlier checkpoints are kept
                raise disk_full_error(final, "checkpoint") from None
            raise
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
                module.load_state_dict(_load_tensors(path / f"{name}.safetensors"))
            if optimizer is not None and "optimizer" in state:
                tensors = _load_tensors(path / "optimizer.safetensors")
                optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
            if scheduler is not None and "scheduler" in state:
                scheduler.load_state_dict(state["scheduler"])
        except (OSError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot restore checkpoint {path}: {exc}") from None
        return state
