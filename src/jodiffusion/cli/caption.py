"""``jodiffusion caption``: write a captions file for a dataset split."""

from __future__ import annotations

import argparse
import logging

from jodiffusion.cli.common import add_output_file_arg, output_file
from jodiffusion.data.captions import caption_dataset
from jodiffusion.data.config import DataConfig
from jodiffusion.data.registry import build_dataset, dataset_names
from jodiffusion.errors import ConfigError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "caption", help="write a captions file for a dataset split",
        description="Caption every image of a dataset split and write a captions file (JSON lines, one "
                    '{"stem", "caption", "split"} per image). Methods: "template" lists the classes of '
                    'each mask by area ("a photo of road, car and sky"); "blip2" runs a BLIP-2 captioning '
                    'model on the images; "dataset" uses the dataset\'s own captions (shapes only).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="shapes", choices=dataset_names(), help="dataset reader")
    p.add_argument("--root", default=None, metavar="PATH",
                   help="dataset root folder (required for every dataset but shapes)")
    p.add_argument("--split", default="train", metavar="SPLIT", help="which split to caption")
    add_output_file_arg(p, "captions file (.jsonl)")
    p.add_argument("--method", default="template", choices=("template", "blip2", "dataset"),
                   help="where captions come from")
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="blip2: local model folder or hub id (default: Salesforce/blip2-opt-2.7b)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="blip2: images per batch")
    p.add_argument("--prompt", default=None, help='blip2: text the captions start from, e.g. "a photo of"')
    p.add_argument("--max-new-tokens", type=int, default=30, metavar="N", help="blip2: longest caption")
    p.add_argument("--device", default=None, help="blip2: torch device (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                   help="blip2: model precision (default: float16 on cuda, float32 on cpu)")
    p.add_argument("--min-fraction", type=float, default=0.01, metavar="F",
                   help="template: leave out classes covering less than this fraction of the pixels")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run_caption)


def run_caption(args: argparse.Namespace) -> int:
    path = output_file(args, "caption")  # before the dataset is read
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be positive")
    if args.model and args.method != "blip2":
        raise ConfigError("--model is only used with --method blip2")
    try:
        cfg = DataConfig(name=args.dataset, root=args.root)
    except ValueError as exc:
        raise ConfigError(str(exc).replace("data.root", "--root")) from None
    dataset = build_dataset(cfg, args.split)
    out = caption_dataset(dataset, path, method=args.method, model=args.model, batch_size=args.batch_size,
                          progress=not args.no_progress, overwrite=args.overwrite, split=args.split,
                          min_fraction=args.min_fraction, prompt=args.prompt, device=args.device,
                          dtype=args.dtype, max_new_tokens=args.max_new_tokens)
    log.info("wrote %d captions of %s/%s to %s", len(dataset), args.dataset, args.split, out)
    return 0
