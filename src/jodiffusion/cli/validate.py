"""``jodiffusion validate``: check every image and mask of a dataset and list every problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jodiffusion.cli.common import Shorthand, add_config_args, add_shorthands, config_from_args
from jodiffusion.data.config import ValidateConfig
from jodiffusion.data.registry import build_dataset, dataset_names
from jodiffusion.data.validate import validate_dataset
from jodiffusion.errors import ConfigError, DatasetError
from jodiffusion.utils.io import write_json_atomic

EPILOG = """\
examples:
  jodiffusion validate --dataset camvid --root data/camvid
  jodiffusion validate --dataset voc --root data/VOC2012 --split val --json voc_val_report.json
  jodiffusion validate --config runs/vae/config.yaml   (reads the file's data: section)
  jodiffusion validate data.name=folder data.root=data/shapes splits=[train]

exit status: 0 when every split is valid, 1 when problems were found (all are printed)."""


# flag -> the override it stands for (cli/common.py)
SHORTHANDS = (
    Shorthand(("--dataset",), "data.name", f"dataset name: {', '.join(dataset_names())}", {"metavar": "NAME"}),
    Shorthand(("--root",), "data.root", "dataset root folder", {"metavar": "PATH"}),
    Shorthand(("--split",), "splits", "split to check (repeatable); default: the config's train and val splits",
              {"action": "append", "metavar": "SPLIT"}),
    Shorthand(("--no-trainaug",), "data.voc_trainaug=false", "VOC: check the plain train list, not SBD trainaug",
              {"action": "store_true"}, keys=lambda _: {"data.voc_trainaug": False}),
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate", help="check a dataset's images and masks and report every problem",
        description=__doc__.split(":", 1)[1].strip().capitalize(), epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, "validate")
    add_shorthands(p, SHORTHANDS)
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="reader threads (default: automatic)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_validate)


def validate_config(args: argparse.Namespace) -> ValidateConfig:
    """The dataset and splits to check: --preset, the ``data:`` section of each --config file (a run's
    config.yaml will do), the flags, then KEY=VALUE."""
    named = args.preset or args.config or args.shorthand_dataset or any(
        o.startswith("data.name=") or o.startswith("data=") for o in args.overrides)
    if not named:  # DataConfig's default dataset (shapes) is no dataset a user asked to check
        raise ConfigError("say which dataset to check: --dataset NAME --root PATH (data.name=NAME data.root=PATH), "
                          f"or --config FILE with a data: section (names: {', '.join(dataset_names())})")
    return config_from_args(args, ValidateConfig, "validate", file_keys=("data",))


def run_validate(args: argparse.Namespace) -> int:
    if args.json and Path(args.json).is_dir():  # before the (possibly long) checks, not after
        raise ConfigError(f"--json {args.json} is a folder; give a file name such as {Path(args.json) / 'report.json'}")
    config = validate_config(args)
    cfg = config.data
    splits = config.checked_splits()
    progress = not args.no_progress and sys.stderr.isatty()
    results: dict[str, dict] = {}
    all_ok = True
    for split in splits:
        try:
            dataset = build_dataset(cfg, split)
        except DatasetError as exc:
            all_ok = False
            print(f"dataset {cfg.name}:{split}: cannot be read: {exc}\n", flush=True)
            results[split] = {"ok": False, "error": str(exc)}
            continue
        report = validate_dataset(dataset, progress=progress, workers=args.workers)
        all_ok &= report.ok
        print(report.format() + "\n", flush=True)
        results[split] = report.to_dict()
    if args.json:
        write_json_atomic(args.json, {"dataset": cfg.name, "root": cfg.root, "ok": all_ok, "splits": results})
        print(f"report written to {args.json}")
    if not all_ok:
        print("problems found: fix, replace or remove the files listed above and run validate again",
              file=sys.stderr)
    return 0 if all_ok else 1
