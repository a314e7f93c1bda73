"""`train-seg`, `eval-seg` and `export-mmseg`: judge generated data by segmenters scored on real data."""

from __future__ import annotations

import argparse

from jodiffusion.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-seg", help="train a segmenter on real, synthetic or real+synthetic pairs",
                       description="Train a segmenter (mix=real, synthetic or real+synthetic), score it on the "
                                   "real dataset's val split and export it to <output_dir>/segmenter with "
                                   "eval.json.")
    add_config_args(p, "seg", default_preset="shapes")
    p.add_argument("--resume", metavar="CKPT", help="'latest' or a checkpoint folder to continue from")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval-seg", help="IoU per class and mIoU of a trained segmenter on a dataset split",
                       description="Segment every image of a split at full resolution and report the IoU "
                                   "per class and the mean.")
    p.add_argument("model", help="a segmenter folder (config.json + model.safetensors)")
    p.add_argument("--dataset", default="shapes", help="dataset name (default: shapes)")
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--split", default="val")
    p.add_argument("--resolution", type=int, default=64, help="shapes dataset only")
    p.add_argument("--num-images", type=int, default=128, help="shapes dataset only: images in the split")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=_eval)

    p = sub.add_parser("export-mmseg", help="write an MMSegmentation 1.x config for a generated dataset",
                       description="Write an MMSegmentation 1.x Python config that trains DeepLabV3 on a "
                                   "dataset in the generic folder layout, validating on a real dataset.")
    p.add_argument("dataset_dir", help="generated dataset (images/<split>/, masks/<split>/, classes.json)")
    p.add_argument("--out", required=True, metavar="FILE", help="the config file to write (.py)")
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


def _train(args) -> int:
    from jodiffusion.segmentation.config import SegRunConfig
    from jodiffusion.training.segmenter import train_segmenter

    cfg = config_from_args(args, SegRunConfig, "seg")
    model_dir = train_segmenter(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"segmenter written to {model_dir}")
    return 0


def _eval(args) -> int:
    from jodiffusion.data.config import DataConfig
    from jodiffusion.errors import ConfigError
    from jodiffusion.segmentation.inference import eval_report, evaluate_segmenter
    from jodiffusion.utils.io import write_json_atomic

    try:
        data = DataConfig(name=args.dataset, root=args.root, val_split=args.split, resolution=args.resolution,
                          num_train=args.num_images, num_val=args.num_images)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cm, names = evaluate_segmenter(args.model, data, args.split, batch_size=args.batch_size)
    print(cm.table(names))
    print(f"mIoU ({args.dataset} {args.split}): {cm.miou():.2f}")
    if args.json:
        write_json_atomic(args.json, eval_report(cm, names, args.split))
    return 0


def _export(args) -> int:
    from jodiffusion.segmentation.mmseg_export import write_mmseg_config

    out = write_mmseg_config(args.dataset_dir, args.out, model=args.model, crop=tuple(args.crop), split=args.split,
                             val_root=args.val_root, val_split=args.val_split, batch_size=args.batch_size,
                             max_iters=args.iters, sync_bn=args.sync_bn, base_dir=args.base_dir)
    print(f"MMSegmentation config written to {out}")
    return 0
