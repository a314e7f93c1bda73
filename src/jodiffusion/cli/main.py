"""The ``jodiffusion`` command: one subcommand per stage. Each command module registers its parsers
and calls into the library; nothing here does real work."""

from __future__ import annotations

import argparse
import logging
import sys

from jodiffusion import __version__
from jodiffusion.cli import (
    caption,
    demo,
    eval,
    export_mmseg,
    generate,
    import_folder,
    make_data,
    pipeline,
    presets,
    refine,
    sample,
    stats,
    train,
    validate,
)
from jodiffusion.errors import JoDiffusionError
from jodiffusion.utils.safe_load import os_error_line

# Each module defines register(subparsers) and is named after its command(s); a parser's `func` default runs
# the command. The order is --help's.
COMMAND_MODULES = (
    make_data,      # make-data
    caption,        # caption
    validate,       # validate
    import_folder,  # import
    train,          # train-vae, train-codec, train, train-seg
    eval,           # eval-vae, eval-seg, eval-codec, eval-joint
    export_mmseg,   # export-mmseg
    refine,         # refine
    sample,         # sample
    generate,       # generate
    stats,          # stats
    demo,           # demo
    pipeline,       # pipeline
    presets,        # presets
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jodiffusion", description=__doc__.split(":")[0] + ".")
    parser.add_argument("--version", action="version", version=f"jodiffusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parse_intermixed(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except JoDiffusionError as exc:
        _close_distributed(wait=False)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system refused (full disk, a file where a folder belongs): one line
        _close_distributed(wait=False)
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _close_distributed(wait=False)
        print("interrupted", file=sys.stderr)
        return 130
    _close_distributed(wait=True)
    return int(result or 0)


def parse_intermixed(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that a command's ``KEY=VALUE`` overrides may come anywhere among
    its options (``train output_dir=X --overwrite cache_dir=Y``): argparse fills a positional list from one
    run of words only, and the words after an option come back unrecognised. Those are appended to the
    overrides in the order given. Anything else unrecognised is refused as before."""
    args, extras = parser.parse_known_args(argv)
    if extras and isinstance(getattr(args, "overrides", None), list):
        stray = [word for word in extras if word.startswith("-") or "=" not in word]
        if not stray:
            args.overrides = [*args.overrides, *extras]
            extras = []
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _close_distributed(wait: bool) -> None:
    """Under torchrun / accelerate launch: let every rank finish, then close the process group. Exiting
    with it open lets gloo's threads be torn down mid-flight ("terminate called without an active
    exception", SIGABRT) on a rank that finished first."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
