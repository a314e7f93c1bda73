"""Resumable stages: each stage of a pipeline runs once, and a rerun skips what is complete.

A stage owns the folder ``<root>/<name>``. When its function returns, ``<root>/<name>/STAGE.json``
records the stage's settings, its result and its wall time; that file is written last (atomically),
so it exists only for a complete stage. On a rerun:

* marker present, same settings  -> skipped, the recorded result is returned;
* marker present, other settings -> refused (the output belongs to another configuration);
* no marker, folder present      -> the stage is resumed: its function is told so, and the training
  commands continue from their latest checkpoint (generation resumes by itself).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from jodiffusion.config.loader import config_to_dict, load_config
from jodiffusion.errors import JoDiffusionError
from jodiffusion.utils.io import write_json_atomic

log = logging.getLogger("jodiffusion")
MARKER = "STAGE.json"
T = TypeVar("T")


# The metadata of a typed result's field that its record leaves out when it is None (a key that records
# written before it existed do not have, so their stages' settings still compare equal).
OMIT_NONE = {"omit_none": True}


def to_record(result):
    """A stage result as its ``STAGE.json`` holds it: a typed result (a dataclass) as a dict of its fields,
    paths as text; anything else as it is."""
    if not dataclasses.is_dataclass(result):
        return result
    record = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if value is None and f.metadata.get("omit_none"):
            continue
        record[f.name] = str(value) if isinstance(value, Path) else value
    return record


def from_record(kind: type[T] | None, record: dict) -> T:
    """The typed result ``kind`` from its record (the fields it declares; a missing one takes its default).
    ``kind`` None: the record as it is."""
    if kind is None:
        return record
    values = {}
    for f in dataclasses.fields(kind):
        if f.name in record:
            value = record[f.name]
            values[f.name] = Path(value) if f.type in ("Path", Path) and value is not None else value
    return kind(**values)


class StageRunner:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.seconds: dict[str, float] = {}   # wall time of every stage (as recorded when it ran)
        self.skipped: list[str] = []

    def folder(self, name: str) -> Path:
        return self.root / name

    def run(self, name: str, settings: dict, fn: Callable[[Path, bool], T], kind: type[T] | None = None) -> T:
        """Run ``fn(folder, resume)`` unless stage ``name`` is already complete with these settings.
        ``settings`` must be JSON-serialisable; ``fn`` returns a typed result of class ``kind`` (recorded
        with ``to_record``, rebuilt from the record when the stage is skipped) or, ``kind`` None, a
        JSON-serialisable dict."""
        folder = self.folder(name)
        marker = folder / MARKER
        settings = json.loads(json.dumps(settings))  # normalise (tuples -> lists) before comparing
        if marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("settings") != settings:
                raise JoDiffusionError(
                    f"stage '{name}' in {folder} was completed with other settings; delete that folder to "
                    f"redo it, or choose another output_dir (recorded: {done.get('settings')}; now: {settings})")
            log.info("== %s: complete, skipped (%s)", name, marker)
            self.seconds[name] = done["seconds"]
            self.skipped.append(name)
            return from_record(kind, done["result"])
        resume = folder.exists() and any(folder.iterdir())
        log.info("== %s%s", name, " (resuming)" if resume else "")
        folder.mkdir(parents=True, exist_ok=True)
        start = time.time()
        result = fn(folder, resume)
        seconds = round(time.time() - start, 2)
        write_json_atomic(marker, {"stage": name, "settings": settings, "result": to_record(result),
                                   "seconds": seconds})
        self.seconds[name] = seconds
        return result

    def timed(self, name: str, fn: Callable[[], T]) -> T:
        """Run ``fn()``, a step redone on every run (the report), and keep its wall time beside the stages'."""
        start = time.time()
        result = fn()
        self.seconds[name] = round(time.time() - start, 2)
        return result


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a training run folder holds a checkpoint to resume from."""
    ckpts = run_dir / "checkpoints"
    return ckpts.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in ckpts.iterdir())


def train_args(folder: Path, resume: bool) -> dict:
    """How to (re)start a training command in a stage folder: continue from its latest checkpoint;
    a folder without one holds only an interrupted start, which is replaced."""
    if resume and has_checkpoint(folder):
        return {"resume": "latest", "overwrite": False}
    return {"resume": None, "overwrite": True}


def stage_config(schema, group: str, spec, **fields):
    """The stage's own preset and overrides, then what the pipeline ties together (dataset, folders)."""
    values = {k: config_to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in fields.items()}
    return load_config(schema, group=group, preset=spec.preset, overrides=list(spec.overrides), values=values)


def load_stage_configs(requests: dict[str, tuple]) -> dict:
    """Every stage's config in one pass through the loader: ``{stage: (schema, group, spec, fields)}`` ->
    ``{stage: config}``, each as ``stage_config`` builds it."""
    return {stage: stage_config(schema, group, spec, **fields)
            for stage, (schema, group, spec, fields) in requests.items()}


def check_planned(made: str | Path, planned: str | Path, stage: str) -> None:
    """Later stages were configured with ``planned`` before ``stage`` ran (experiments/plan.py): the folder
    the stage wrote must be that one."""
    if str(made) != str(planned):
        raise JoDiffusionError(f"stage '{stage}' wrote {made}, but the later stages were planned on {planned}")
