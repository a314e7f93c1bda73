"""`train-vae` and `eval-vae`."""

from __future__ import annotations

import argparse

from jodiffusion.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-vae", help="train the annotation VAE (masks -> latents -> class logits)",
                       description="Train the annotation VAE on a dataset's masks, measure its latent "
                                   "scale factor and export it to <output_dir>/annotation_vae.")
    add_config_args(p, "vae", default_preset="shapes")
    p.add_argument("--resume", metavar="CKPT", help="'latest' or a checkpoint folder to continue from")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval-vae", help="reconstruction IoU per class and mIoU of a trained annotation VAE",
                       description="Encode and decode every mask of a split at full resolution and "
                                   "report the reconstruction IoU per class and the mean.")
    p.add_argument("model", help="an annotation_vae folder (config.json + model.safetensors)")
    p.add_argument("--dataset", default="shapes", help="dataset name (default: shapes)")
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--split", default="val")
    p.add_argument("--resolution", type=int, default=64, help="shapes dataset only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=_eval)


def _train(args) -> int:
    from jodiffusion.training.vae import VAERunConfig, train_vae

    cfg = config_from_args(args, VAERunConfig, "vae")
    model_dir = train_vae(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"annotation VAE written to {model_dir}")
    return 0


def _eval(args) -> int:
    from jodiffusion.data.config import DataConfig
    from jodiffusion.errors import ConfigError
    from jodiffusion.training.vae import eval_report, evaluate_vae
    from jodiffusion.utils.io import write_json_atomic

    try:
        data = DataConfig(name=args.dataset, root=args.root, val_split=args.split, resolution=args.resolution)
    except ValueError as exc:
        raise ConfigError(str(exc).replace("data.root", "--root").replace("data.name", "--dataset")) from None
    cm, names = evaluate_vae(args.model, data, args.split, batch_size=args.batch_size)
    print(cm.table(names))
    print(f"reconstruction mIoU ({args.split}): {cm.miou():.2f}")
    if args.json:
        write_json_atomic(args.json, eval_report(cm, names, args.split))
    return 0
