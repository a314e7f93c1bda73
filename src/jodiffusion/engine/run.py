"""A training run's folder, from start to export: what every stage (VAE, joint, segmenter) shares.

``TrainingRun`` sets up accelerate, prepares (or refuses) the output folder, resolves ``--resume``,
writes the resolved config (refusing changed settings on resume) and opens the metric log. The loop
itself is :func:`jodiffusion.engine.loop.fit`.

An interrupted start is never a dead end: a folder this command marked that holds no checkpoint and no
finished model yet, or a folder a kill left holding only temporary files (the marker's own, killed while
it was written), is started again by the obvious command (with or without ``--resume latest`` or
``--overwrite``). ``--resume latest`` where there is no earlier run (a missing or empty folder, or one
holding only a lock) is refused, naming the folder, before anything is created. The main process holds
the folder's lock (``jodiffusion.utils.lock``) from preparing the folder to the end of the run, so that a
second run into the same folder is refused, naming the first.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from jodiffusion.config.loader import config_changes, config_to_dict, save_run_config
from jodiffusion.engine.checkpoint import CheckpointManager
from jodiffusion.engine.config import TrainConfig
from jodiffusion.engine.runtime import MetricLogger, make_accelerator
from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.utils.io import write_json_atomic
from jodiffusion.utils.lock import LOCK_FILE
from jodiffusion.utils.output_folder import OutputRules, check, output_folder, prepare
from jodiffusion.utils.ownership import foreign_entries, is_blank, read_owner, remove_tree
from jodiffusion.utils.ranks import main_decides
from jodiffusion.utils.tempnames import describe_removed

T = TypeVar("T")
log = logging.getLogger("jodiffusion")

# What each training command writes at the top of its run folder (besides the owner marker and
# temporary files): all that ``--overwrite`` may delete (see ``jodiffusion.utils.ownership``).
_RUN_ENTRIES = ("config.yaml", "classes.json", "checkpoints", "metrics.jsonl", "tensorboard", "eval.json")
FINAL_OUTPUT = {"train": "export", "train-vae": "annotation_vae", "train-codec": "image_codec",
                "train-seg": "segmenter"}
RUN_OUTPUTS = {
    "train": (*_RUN_ENTRIES, "export", "samples", "cache"),
    "train-vae": (*_RUN_ENTRIES, "annotation_vae"),
    "train-codec": (*_RUN_ENTRIES, "image_codec"),
    "train-seg": (*_RUN_ENTRIES, "segmenter"),
}
# Kept when an interrupted start begins again: it is rebuilt only if its fingerprint differs.
_KEPT_ON_RESTART = ("cache",)

# Settings a resumed run may change: how long it runs and how it reports, never what it computes.
# Each change is applied and recorded in metrics.jsonl at the step it takes effect.
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.eval_every", "train.save_every",
                     "train.keep_checkpoints", "train.num_workers", "sample_every", "sample_count",
                     "eval_batch_size")


def run_rules(command: str) -> OutputRules:
    """The output-folder rules of a training command (``utils.output_folder``)."""
    return OutputRules(command, RUN_OUTPUTS.get(command, _RUN_ENTRIES),
                       not_empty="output folder {folder} already holds a run; pass --resume latest to continue it, "
                                 "--overwrite to start again there, or choose another output_dir")


def interrupted_start(run_dir: Path, command: str) -> bool:
    """True for a folder ``command`` marked that holds no checkpoint and no finished model: a run killed
    before its first save (or one holding only temporary files: killed while writing its marker). Starting
    it again loses nothing but the minutes it ran."""
    if is_blank(run_dir):
        return True
    if read_owner(run_dir) != command or CheckpointManager(run_dir).list():
        return False
    if (run_dir / FINAL_OUTPUT[command]).exists() or (run_dir / "eval.json").exists():
        return False
    return not foreign_entries(run_dir, RUN_OUTPUTS[command])


def check_earlier_run(run_dir: Path) -> None:
    """``--resume latest`` needs an earlier run in ``run_dir``: a missing or empty folder, or one holding
    nothing but a lock, is none (a mistyped path must not start a long run from step 0 without a word).
    Raises naming the folder; changes nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        return  # a file in the way: refused by the folder checks, naming it
    if run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        return
    state = "is empty" if run_dir.is_dir() else "does not exist"
    raise CheckpointError(f"--resume latest: output folder {run_dir} {state}, so there is no earlier run to "
                          "continue; check output_dir, or start without --resume. Nothing was changed")


def prepare_run_dir(run_dir: str | Path, resume: str | None, overwrite: bool, command: str = "train") -> Path:
    """Refuse to write into a previous run's folder unless resuming or explicitly overwriting.

    A new run marks its folder as written by ``jodiffusion <command>``; ``--overwrite`` replaces only a
    folder so marked that holds nothing but that command's outputs, and refuses anything else, naming
    what would be lost. With ``resume``, the checkpoint is resolved (and checked complete, see
    ``CheckpointManager.resolve``) before anything is written. A run killed before its first checkpoint
    (``interrupted_start``) starts again, with or without ``--resume latest``. Temporary checkpoint
    folders of saves a kill interrupted are removed (this runs on the main process before training
    starts or resumes, so no save is under way)."""
    run_dir = Path(run_dir)
    rules = run_rules(command)
    ckpt = CheckpointManager(run_dir)
    if resume == "latest":
        check_earlier_run(run_dir)
    restart = run_dir.is_dir() and interrupted_start(run_dir, command) and (resume in (None, "latest"))
    keep = restart or resume is not None  # what is there is continued, not refused or cleared
    check(run_dir, rules, overwrite, resume=keep)  # before anything is deleted
    if restart:
        if any(p.name != LOCK_FILE for p in run_dir.iterdir()):  # an empty folder: a new start
            log.info("%s holds a run stopped before its first checkpoint: starting it again from step 0", run_dir)
        for name in rules.entries:
            if name not in _KEPT_ON_RESTART and (run_dir / name).exists():
                remove_tree(run_dir / name)
        resume = None
    if resume is not None:  # a missing or corrupt checkpoint is refused before anything is written
        ckpt.resolve(resume)
    prepare(run_dir, rules, overwrite, resume=keep)  # cleared for --overwrite, marked, temporary files removed
    removed = ckpt.remove_temporary()  # saves that a kill interrupted
    if removed:
        log.info("removed %d temporary checkpoint folder(s) of an interrupted save: %s", len(removed),
                 describe_removed(removed))
    return run_dir


class TrainingRun:
    """One run of a training command in ``cfg.output_dir``: accelerate, the folder, resume, config, log."""

    def __init__(self, cfg: Any, command: str, resume: str | None = None, overwrite: bool = False,
                 progress: bool = True):
        self.cfg = cfg
        self.train: TrainConfig = cfg.train
        self.run_dir = Path(cfg.output_dir)
        self.accelerator = make_accelerator(cfg.train)
        self.main = self.accelerator.is_main_process
        self.progress = progress and self.main
        self._folder = contextlib.ExitStack()  # the folder's lock, held until close()

        def take_folder() -> None:
            if resume == "latest":  # before the lock creates the folder: a refusal changes nothing
                check_earlier_run(self.run_dir)
            self._folder.enter_context(output_folder(
                self.run_dir, run_rules(command),
                take=lambda: prepare_run_dir(self.run_dir, resume, overwrite, command=command)))

        # the main process takes the folder; a refusal stops every process at once, not at a barrier
        main_decides(self.main, self.accelerator.num_processes, take_folder)
        self.accelerator.wait_for_everyone()
        self.ckpt = CheckpointManager(self.run_dir, keep=cfg.train.keep_checkpoints)
        # No checkpoint left after preparing means an interrupted start began again from step 0.
        self.resume_path: Path | None = self.ckpt.resolve(resume) if resume is not None and self.ckpt.list() else None
        self.resumed_changes: dict[str, tuple[Any, Any]] = {}
        self.logger: MetricLogger | None = None

    def close(self) -> None:
        """Release the folder's lock (and remove a folder the lock created that is empty again)."""
        self._folder.close()

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, build: Callable[[], T], classes=None) -> T:
        """Start the run, the same way for every stage, and return what ``build()`` returned:

        1. on resume, compare the config with the one the run wrote (a changed setting that alters what is
           computed is refused, naming it, before anything is built or written);
        2. seed torch with ``train.seed`` and call ``build()``: the model (and whatever the stage must set up
           before its first write: a backbone file that may be refused, a latent cache) comes out with
           identical initial weights on every process;
        3. write the resolved config (and ``classes``) into the run folder and open the metric log.

        A refusal in 1 or 2 leaves the run folder as it was."""
        self._check_config()
        torch.manual_seed(self.train.seed)
        built = build()
        self._write_config(classes)
        return built

    def _check_config(self) -> None:
        """On resume, compare the config with the one the run wrote: a changed setting that alters what is
        computed is refused, naming it; the run-length and reporting settings in ``RESUMABLE_CHANGES`` are
        applied (and recorded in metrics.jsonl by ``fit``). Writes nothing."""
        path = self.run_dir / "config.yaml"
        if self.resume_path is not None and path.is_file():
            try:
                previous = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise ConfigError(f"{path} is unreadable ({exc}); cannot check the settings of this resume") from None
            changes = config_changes(previous, config_to_dict(self.cfg))
            refused = {k: v for k, v in changes.items() if k not in RESUMABLE_CHANGES}
            if refused:
                shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(refused.items())[:8])
                raise ConfigError(
                    f"--resume with changed settings ({shown}): the checkpoint was trained with the values in {path}. "
                    f"Resume with those values, or start a new run in another output_dir. Only "
                    f"{', '.join(RESUMABLE_CHANGES)} may change on resume")
            self.resumed_changes = changes

    def _write_config(self, classes=None) -> None:
        """Write the resolved config (and the classes) into the run folder and open the metric log."""
        if self.main:
            save_run_config(self.cfg, self.run_dir)
            if classes is not None:
                write_json_atomic(self.run_dir / "classes.json", classes.to_dict())
        self.logger = MetricLogger(self.run_dir, enabled=self.main)
        if self.resumed_changes and self.main:
            for key, (old, new) in self.resumed_changes.items():
                log.info("resume: %s changed from %r to %r", key, old, new)

    def log(self, step: int, **values) -> None:
        if self.logger is not None:
            self.logger.log(step, **values)
