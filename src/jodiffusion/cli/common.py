"""Shared argument handling for config-driven commands: --preset, --config FILE, key.sub=value, and the
shorthand flags that stand for overrides (``--num 8`` is ``num=8``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jodiffusion.config.loader import list_presets, load_config
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


@dataclass(frozen=True)
class Shorthand:
    """A flag that stands for ``key=value``: its value (or, with ``keys``, the settings it implies) is merged
    after --preset and --config and before the KEY=VALUE overrides, so an explicit override wins.

    ``keys``: value -> {dotted key: value}, for a flag that sets several keys or converts its text;
    ``check``: raises a ConfigError for a spelling whose meaning moved to another flag."""
    flags: tuple[str, ...]
    key: str
    help: str
    kwargs: dict = field(default_factory=dict)  # argparse's: type, action, metavar, choices
    keys: Callable[[Any], dict[str, Any]] | None = None
    check: Callable[[Any], None] | None = None
    group: str | None = None  # the --help section it is listed under

    @property
    def dest(self) -> str:
        return "shorthand_" + self.flags[-1].lstrip("-").replace("-", "_")

    def settings(self, value: Any) -> dict[str, Any]:
        return self.keys(value) if self.keys else {self.key: value}


def add_shorthands(parser: argparse.ArgumentParser, table: Sequence[Shorthand]) -> None:
    """Register each flag of ``table`` (its --help ends with the key it sets); ``config_from_args`` reads them."""
    groups: dict[str, Any] = {}
    for sh in table:
        target = parser
        if sh.group:
            target = groups.setdefault(sh.group, parser.add_argument_group(sh.group))
        kwargs = dict(sh.kwargs)
        kwargs.setdefault("default", [] if kwargs.get("action") == "append" else None)
        if kwargs.get("action") != "store_true" and "choices" not in kwargs:  # not SHORTHAND_SEED
            kwargs.setdefault("metavar", sh.flags[-1].lstrip("-").upper().replace("-", "_"))
        target.add_argument(*sh.flags, dest=sh.dest, help=f"{sh.help} [sets {sh.key}]".replace("%", "%%"),
                            **kwargs)
    parser.set_defaults(shorthands=tuple(table))


def _nested(dotted: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def shorthand_layers(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """The settings of the shorthand flags given, one layer per flag, in the command's table order."""
    layers = []
    for sh in getattr(args, "shorthands", ()):
        value = getattr(args, sh.dest, None)
        if value is None or value is False or value == []:
            continue
        if sh.check:
            sh.check(value)
        layers.append((sh.flags[-1], _nested(sh.settings(value))))
    return layers


def config_from_args(args: argparse.Namespace, schema: type[T], group: str, **kwargs: Any) -> T:
    """Merge order: defaults < --preset < --config FILE < shorthand flags < KEY=VALUE."""
    return load_config(schema, group=group, preset=args.preset, files=args.config, overrides=args.overrides,
                       flags=shorthand_layers(args), **kwargs)


def add_output_file_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--output-file FILE`` of a command that writes one file; ``--out``, a folder in every other command,
    is refused here by ``output_file`` naming the new spelling."""
    parser.add_argument("--output-file", metavar="FILE", help=f"{what} to write")
    parser.add_argument("--out", help=argparse.SUPPRESS)


def output_file(args: argparse.Namespace, command: str) -> str:
    if args.out is not None:
        raise ConfigError(f"--out {args.out}: --out names an output folder in every command; {command} writes one "
                          f"file: give it as --output-file {args.out}")
    if not args.output_file:
        raise ConfigError(f"{command}: say which file to write with --output-file FILE")
    return args.output_file


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


# The dataset a scoring command reads (eval-*): flag -> the override it stands for. The split scored is
# data.val_split.
DATA_SHORTHANDS = (
    Shorthand(("--dataset",), "data.name", "dataset name (default: shapes)"),
    Shorthand(("--root",), "data.root", "dataset root folder"),
    Shorthand(("--split",), "data.val_split", "the split scored (default: val)"),
    Shorthand(("--resolution",), "data.resolution", "the working size; the image size of the shapes dataset "
              "(default: 64)", {"type": int}),
)
NUM_IMAGES = Shorthand(("--num-images",), "data.num_train data.num_val",
                       "shapes dataset only: images in the split (default: 128)", {"type": int},
                       keys=lambda v: {"data.num_train": v, "data.num_val": v})
