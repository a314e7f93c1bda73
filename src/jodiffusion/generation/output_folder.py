"""The output folder of ``generate``: whether it holds this same run (to resume) or something else (refused,
naming the differences), and preparing it by the rules every command's output folder follows
(``utils.output_folder``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from jodiffusion.config.loader import config_changes
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.layout import CAPTIONS_FILE, CLASSES_FILE, IMAGES_DIR, MASKS_DIR, SPLITS_DIR, write_classes
from jodiffusion.errors import JoDiffusionError
from jodiffusion.generation import output as store
from jodiffusion.generation.config import GENERATION_FORMAT, GenerateConfig
from jodiffusion.generation.process_group import ProcessGroup
from jodiffusion.utils.io import write_json_atomic
from jodiffusion.utils.output_folder import OutputRules, check, prepare
from jodiffusion.utils.ownership import foreign_entries, is_blank, read_owner

log = logging.getLogger("jodiffusion")

COMMAND = "generate"  # the owner marker's name for folders this command writes
# everything ``generate`` writes at the top of its output folder: all that ``--overwrite`` may delete
OUTPUT_ENTRIES = (store.GENERATION_FILE, CLASSES_FILE, IMAGES_DIR, MASKS_DIR, SPLITS_DIR, CAPTIONS_FILE,
                  store.MANIFEST_FILE, store.SUMMARY_FILE, store.CARD_FILE, store.RECORDS_DIR, store.SHARDS_DIR,
                  store.SHARD_LIST)
# temporary files of killed writes are looked for in the subfolders too (images/, masks/, records/ ...)
RULES = OutputRules(COMMAND, OUTPUT_ENTRIES, nested=True)


def _read_meta(out: Path) -> dict | None:
    """generation.json when it is one this command wrote (a dict of this format); else None."""
    try:
        meta = json.loads((out / store.GENERATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != GENERATION_FORMAT or "model_fingerprint" not in meta:
        return None
    return meta


def _check_output(out: Path, identity: dict, num: int) -> dict | None:
    """The stored generation.json when ``out`` continues this very generation; None for a new folder
    (also one an interrupted first start left with nothing but its marker and temporary files, or with only
    the temporary file of that marker). Raises when ``out`` holds something else."""
    check(out, RULES, resume=True)  # a file in the way
    if not out.exists() or is_blank(out):
        return None
    meta_path = out / store.GENERATION_FILE
    if not meta_path.is_file():
        if read_owner(out) == COMMAND and not foreign_entries(out, ()):
            return None  # killed before its first file was in place: start it again
        raise JoDiffusionError(f"{out} is not empty and holds no {store.GENERATION_FILE}: it is not a generated "
                               "dataset; choose an empty or new folder")
    meta = _read_meta(out)
    if meta is None:
        raise JoDiffusionError(f"{meta_path} is not a generation record of `jodiffusion generate` (unreadable or "
                               "of another format); nothing was changed. Choose an empty or new folder")
    if meta.get("model_fingerprint") != identity["model_fingerprint"]:
        raise JoDiffusionError(
            f"{out} holds samples of another model (fingerprint {meta.get('model_fingerprint')}, this model "
            f"{identity['model_fingerprint']}); nothing was changed. Pass --overwrite to replace them or choose "
            "another --out")
    diffs = [f"{key}: {old!r} -> {new!r}" for key, (old, new) in
             config_changes(meta.get("config", {}), identity["config"]).items()]
    if diffs:
        raise JoDiffusionError(f"{out} holds samples of another generation config ({'; '.join(diffs)}); nothing "
                               "was changed. Rerun with the same settings to continue, --overwrite to replace, "
                               "or choose another --out")
    if num < meta.get("num", 0):
        raise JoDiffusionError(f"{out} was started for {meta['num']} pairs; --num {num} would delete some of them. "
                               f"Pass --num {meta['num']} (or more) to continue, or --overwrite to start again")
    return meta


def prepare_output(group: ProcessGroup, out: Path, identity: dict, cfg: GenerateConfig, classes: ClassInfo,
                    overwrite: bool) -> dict | None:
    """Every rank checks (so that all raise alike); rank 0 then clears / creates the folder. Rank 0 holds
    the folder's lock (``jodiffusion.utils.lock``) around this call and the whole generation.

    ``overwrite`` replaces only a folder this command wrote that holds nothing else (``RULES``); anything
    else is refused, naming what would be lost."""
    meta = None
    if group.rank == 0 or not overwrite:
        try:
            meta = _check_output(out, identity, cfg.num)
        except JoDiffusionError:
            if not overwrite:
                raise
            check(out, RULES, overwrite=True)
            meta = "replace"
    group.barrier()  # nobody reads the folder while rank 0 changes it
    if group.rank == 0:
        # this same generation is continued; else what is there is replaced (checked above), then marked
        prepare(out, RULES, overwrite=meta == "replace", resume=meta != "replace")
        meta = None if meta == "replace" else meta
        complete = bool(meta and meta.get("complete") and meta.get("num") == cfg.num)
        write_json_atomic(out / store.GENERATION_FILE, {**identity, "num": cfg.num, "complete": complete})
        write_classes(out, classes)
    group.barrier()
    return meta if isinstance(meta, dict) else None
