"""Shared argument handling for config-driven commands: --preset, --config FILE, key.sub=value."""

from __future__ import annotations

import argparse
from typing import TypeVar

from jodiffusion.config.loader import list_presets, load_config

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
