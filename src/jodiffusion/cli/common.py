"""Shared argument handling for config-driven commands: --preset, --config FILE, key.sub=value."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from jodiffusion.config.loader import list_presets, load_config
from jodiffusion.data.config import DataConfig
from jodiffusion.errors import ConfigError

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser, group: str, default_preset: str | None = None) -> None:
    presets = ", ".join(list_presets(group)) or "none"
    parser.add_argument("--preset", default=default_preset,
                        help=f"named preset shipped with the package ({presets}); default: {default_preset}")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config file merged over the preset (repeatable)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides merged last, e.g. train.steps=200 data.root=/data/voc")


def config_from_args(args: argparse.Namespace, schema: type[T], group: str) -> T:
    return load_config(schema, group=group, preset=args.preset, files=args.config, overrides=args.overrides)


def add_training_command(sub: argparse._SubParsersAction, name: str, *, help: str, description: str, group: str,
                         default_preset: str, schema: type, train: Callable[..., Any],
                         done: str) -> argparse.ArgumentParser:
    """A training command: ``--preset``/``--config``/overrides of ``group``, ``--resume``, ``--overwrite``;
    it builds ``schema`` and calls ``train(cfg, resume=, overwrite=)``, then prints ``done`` with the result
    (``schema``: the config class; ``train``: the stage's train function)."""
    p = sub.add_parser(name, help=help, description=description)
    add_config_args(p, group, default_preset=default_preset)
    p.add_argument("--resume", metavar="CKPT", help="'latest' or a checkpoint folder to continue from")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")

    def run(args: argparse.Namespace) -> int:
        cfg = config_from_args(args, schema, group)
        result = train(cfg, resume=args.resume, overwrite=args.overwrite)
        print(done.format(result))
        return 0

    p.set_defaults(func=run)
    return p


def add_eval_dataset_args(p: argparse.ArgumentParser, shapes_size: bool = False) -> None:
    """``--dataset``, ``--root``, ``--split``, ``--resolution`` (and ``--num-images``), ``--batch-size``,
    ``--json`` of the commands that score a trained model on a dataset split."""
    p.add_argument("--dataset", default="shapes", help="dataset name (default: shapes)")
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--split", default="val")
    p.add_argument("--resolution", type=int, default=64, help="shapes dataset only")
    if shapes_size:
        p.add_argument("--num-images", type=int, default=128, help="shapes dataset only: images in the split")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")


def eval_data_config(args: argparse.Namespace):
    """The DataConfig those arguments name; a bad one is a ConfigError naming the flag."""
    sizes = {"num_train": args.num_images, "num_val": args.num_images} if hasattr(args, "num_images") else {}
    try:
        return DataConfig(name=args.dataset, root=args.root, val_split=args.split, resolution=args.resolution,
                          **sizes)
    except ValueError as exc:
        raise ConfigError(str(exc).replace("data.root", "--root").replace("data.name", "--dataset")) from None
