"""`export-mmseg`: an MMSegmentation config that trains on a generated dataset (train-seg is in train.py,
eval-seg in eval.py)."""

from __future__ import annotations

import argparse

from jodiffusion.cli.common import add_output_file_arg, output_file
from jodiffusion.segmentation.mmseg_export import write_mmseg_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-mmseg", help="write an MMSegmentation 1.x config for a generated dataset",
                       description="Write an MMSegmentation 1.x Python config that trains DeepLabV3 on a "
                                   "dataset in the generic folder layout, validating on a real dataset.")
    p.add_argument("dataset_dir", help="generated dataset (images/<split>/, masks/<split>/, classes.json)")
    add_output_file_arg(p, "the MMSegmentation config file (.py)")
    p.add_argument("--split", default="train", help="training split (default: train)")
    p.add_argument("--val-root", metavar="PATH", help="real dataset in the generic layout to validate on")
    p.add_argument("--val-split", default="val")
    p.add_argument("--model", default="deeplabv3_r50", help="deeplabv3_r50 (default) or deeplabv3_r101")
    p.add_argument("--crop", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    p.add_argument("--iters", type=int, default=20000, help="training iterations (default: 20000)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--sync-bn", action="store_true", help="SyncBN for training on several GPUs")
    p.add_argument("--base-dir", metavar="PATH", help="configs/ of an mmsegmentation checkout (default: mmseg::)")
    p.set_defaults(func=_export)


def _export(args) -> int:
    path = output_file(args, "export-mmseg")
    out = write_mmseg_config(args.dataset_dir, path, model=args.model, crop=tuple(args.crop), split=args.split,
                             val_root=args.val_root, val_split=args.val_split, batch_size=args.batch_size,
                             max_iters=args.iters, sync_bn=args.sync_bn, base_dir=args.base_dir)
    print(f"MMSegmentation config written to {out}")
    return 0
