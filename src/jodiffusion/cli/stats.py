"""`stats`: label statistics of a real and/or a synthetic set, side by side (stats.json + PNG plots)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from jodiffusion.data.config import DataConfig
from jodiffusion.data.registry import build_dataset, dataset_names
from jodiffusion.errors import ConfigError, DatasetError
from jodiffusion.evaluation.dataset_stats import compute_stats, write_stats_report

log = logging.getLogger("jodiffusion")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="class frequencies, object sizes and classes per image of real vs synthetic data",
                       description="Compute class pixel and image frequencies, object sizes (connected "
                                   "components) and classes per image of a real and/or a synthetic dataset and "
                                   "write stats.json and PNG plots comparing them side by side.")
    p.add_argument("--real", metavar="NAME_OR_DIR",
                   help="real dataset: a dataset name (shapes, voc, ade20k, ...; with --real-root) or a folder "
                        "in the generic layout (images/, masks/, classes.json)")
    p.add_argument("--real-root", metavar="PATH", help="dataset root when --real is a dataset name")
    p.add_argument("--real-split", default="train", help="split of the real dataset (default: train)")
    p.add_argument("--synthetic", metavar="DIR", help="generated dataset folder (generic layout)")
    p.add_argument("--synthetic-split", default="train", help="split of the generated set (default: train)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for stats.json and the plots")
    p.add_argument("--max-images", type=int, metavar="N", help="read at most N masks of each set")
    p.add_argument("--resolution", type=int, default=64, help="shapes dataset only")
    p.add_argument("--num-images", type=int, default=512, help="shapes dataset only: images in the split")
    p.set_defaults(func=_stats)


def _data_config(spec: str, root: str | None, split: str, args, option: str):
    """A DataConfig from a dataset name (+ root) or a folder path."""
    if spec in dataset_names() and not Path(spec).is_dir():
        name = spec
    else:
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise DatasetError(f"{option} {spec}: no such folder, and not a dataset name "
                               f"({', '.join(dataset_names())}); give a generated/generic dataset folder or a name")
        if root:
            raise ConfigError(f"{option} is a folder ({spec}); --real-root is only for dataset names")
        name, root = "folder", str(folder)
    try:
        return DataConfig(name=name, root=root, train_split=split, resolution=args.resolution,
                          num_train=args.num_images, num_val=args.num_images)
    except ValueError as exc:
        raise ConfigError(f"{option} {spec}: {exc}".replace("data.root", "--real-root")) from None


def _stats(args) -> int:
    if not args.real and not args.synthetic:
        raise ConfigError("give --real, --synthetic or both")
    if args.max_images is not None and args.max_images < 1:
        raise ConfigError(f"--max-images={args.max_images} must be at least 1")
    real = synthetic = None
    if args.real:
        data = _data_config(args.real, args.real_root, args.real_split, args, "--real")
        real = compute_stats(build_dataset(data, args.real_split), name="real", max_images=args.max_images,
                             source=f"{args.real} ({args.real_split})")
    elif args.real_root:
        raise ConfigError("--real-root needs --real NAME")
    if args.synthetic:
        data = _data_config(args.synthetic, None, args.synthetic_split, args, "--synthetic")
        if data.name != "folder":
            raise ConfigError(f"--synthetic {args.synthetic}: give the folder of a generated set, not a dataset name")
        synthetic = compute_stats(build_dataset(data, args.synthetic_split), name="synthetic",
                                  max_images=args.max_images, source=f"{args.synthetic} ({args.synthetic_split})")
    report = write_stats_report(real, synthetic, args.out)
    for key in ("real", "synthetic"):
        if report[key]:
            r = report[key]
            log.info("%s %s: %d images, %.2f non-background classes per image", r["name"], r["source"],
                     r["num_images"], r["classes_per_image"]["mean"])
    if report["comparison"]:
        c = report["comparison"]
        log.info("class pixel distributions: total-variation distance %.3f", c["pixel_frequency_tv_distance"])
        if c["classes_never_in_synthetic"]:
            log.info("classes of the real set never generated: %s", ", ".join(c["classes_never_in_synthetic"]))
    print(f"statistics written to {Path(args.out) / 'stats.json'}")
    return 0
