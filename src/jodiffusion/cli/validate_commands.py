"""``jodiffusion validate``: check every image and mask of a dataset and list every problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jodiffusion.config.loader import config_from_dict
from jodiffusion.data.config import DataConfig
from jodiffusion.data.registry import build_dataset, dataset_names
from jodiffusion.data.validate import validate_dataset
from jodiffusion.errors import ConfigError, DatasetError
from jodiffusion.utils.io import write_json_atomic
from jodiffusion.utils.safe_load import read_yaml

EPILOG = """\
examples:
  jodiffusion validate --dataset camvid --root data/camvid
  jodiffusion validate --dataset voc --root data/VOC2012 --split val --json voc_val_report.json
  jodiffusion validate --config my_run.yaml          (uses the file's data: section)

exit status: 0 when every split is valid, 1 when problems were found (all are printed)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate", help="check a dataset's images and masks and report every problem",
        description=__doc__.split(":", 1)[1].strip().capitalize(), epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=dataset_names(), metavar="NAME",
                   help=f"dataset name: {', '.join(dataset_names())}")
    p.add_argument("--root", metavar="PATH", help="dataset root folder")
    p.add_argument("--split", action="append", default=[], metavar="SPLIT",
                   help="split to check (repeatable); default: the config's train and val splits")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML config whose 'data:' section (or the whole file) describes the dataset; "
                        "flags given here override it")
    p.add_argument("--no-trainaug", action="store_true",
                   help="VOC: check the plain train list, not SBD trainaug")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="reader threads (default: automatic)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_validate)


def _data_config(args: argparse.Namespace):
    data: dict = {}
    for file in args.config:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = read_yaml(path, "config file", "give a YAML file with a data: section", ConfigError) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping with a 'data:' section")
        section = loaded.get("data", loaded if "name" in loaded else None)
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: no 'data:' section describing the dataset")
        data.update(section)
    if args.dataset:
        data["name"] = args.dataset
    if args.root:
        data["root"] = args.root
    if args.no_trainaug:
        data["voc_trainaug"] = False
    if "name" not in data:
        raise ConfigError("say which dataset to check: --dataset NAME --root PATH, or --config FILE "
                          f"with a data: section (names: {', '.join(dataset_names())})")
    return config_from_dict(DataConfig, data)


def run_validate(args: argparse.Namespace) -> int:
    if args.json and Path(args.json).is_dir():  # before the (possibly long) checks, not after
        raise ConfigError(f"--json {args.json} is a folder; give a file name such as {Path(args.json) / 'report.json'}")
    cfg = _data_config(args)
    splits = list(dict.fromkeys(args.split or [cfg.train_split, cfg.val_split]))
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
