"""``jodiffusion make-data``: render the embedded shapes dataset to a folder."""

from __future__ import annotations

import argparse
import logging

from jodiffusion.data.shapes_folder import write_shapes_dataset
from jodiffusion.errors import ConfigError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "make-data", help="render the embedded shapes dataset to a folder",
        description="Render the procedural shapes dataset (coloured, textured shapes with captions; no "
                    "download) into the generic folder layout: images/<split>/, masks/<split>/, "
                    "classes.json, captions.jsonl and splits/<split>.txt, for the 'train' and 'val' "
                    "splits. Read it back with data.name=folder data.root=OUT_DIR.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to create (must be new or empty)")
    p.add_argument("--num-train", type=int, default=512, metavar="N", help="number of training images")
    p.add_argument("--num-val", type=int, default=128, metavar="N", help="number of validation images")
    p.add_argument("--resolution", type=int, default=64, metavar="R",
                   help="image side in pixels (a multiple of 8, at least 16)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="random seed; the same seed gives the same dataset")
    p.add_argument("--difficulty", choices=("full", "easy"), default="full",
                   help="full: every texture and background pattern; easy: solid objects on plain backgrounds")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT_DIR if it already holds a dataset")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run_make_data)


def run_make_data(args: argparse.Namespace) -> int:
    if args.resolution < 16 or args.resolution % 8:
        raise ConfigError(f"--resolution {args.resolution}: must be a multiple of 8 and at least 16")
    if args.num_train < 1 or args.num_val < 1:
        raise ConfigError("--num-train and --num-val must be positive")
    if args.seed < 0:
        raise ConfigError("--seed must be non-negative")
    out = write_shapes_dataset(args.out_dir, num_train=args.num_train, num_val=args.num_val,
                               resolution=args.resolution, seed=args.seed, overwrite=args.overwrite,
                               progress=not args.no_progress, difficulty=args.difficulty)
    log.info("wrote %d train + %d val images (%dx%d) to %s", args.num_train, args.num_val,
             args.resolution, args.resolution, out)
    return 0
