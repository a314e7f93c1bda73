"""The training commands (`train-vae`, `train-codec`, `train`, `train-seg`) and those that score a trained
model on a dataset split (`eval-vae`, `eval-seg`, `eval-codec`): one table each, so the stages' commands
cannot drift."""

from __future__ import annotations

import argparse
import json

from jodiffusion.cli.common import (
    DATA_SHORTHANDS,
    NUM_IMAGES,
    Shorthand,
    add_config_args,
    add_shorthands,
    add_training_command,
    config_from_args,
)
from jodiffusion.evaluation.config import EvalConfig
from jodiffusion.segmentation.inference import evaluate_segmenter
from jodiffusion.segmentation.metrics import eval_report
from jodiffusion.training.codec import evaluate_codec, train_codec
from jodiffusion.training.config import CodecRunConfig, JointRunConfig, SegRunConfig, VAERunConfig
from jodiffusion.training.joint import train_joint
from jodiffusion.training.segmenter import train_segmenter
from jodiffusion.training.vae import evaluate_vae, train_vae
from jodiffusion.utils.io import write_json_atomic

# name, preset group, default preset, config class, train function, what it prints, help, description
TRAINING = (
    ("train-vae", "vae", "shapes", VAERunConfig, train_vae,
     "annotation VAE written to {.export}", "train the annotation VAE (masks -> latents -> class logits)",
     "Train the annotation VAE on a dataset's masks, measure its latent scale factor and export it to "
     "<output_dir>/annotation_vae."),
    ("train-codec", "codec", "shapes", CodecRunConfig, train_codec,
     "image codec written to {.export} (use it with codec.kind=sd-vae codec.path=<that folder>)",
     "train a learned image codec (a small AutoencoderKL) on a dataset's images",
     "Train a small diffusers AutoencoderKL from scratch on a dataset's train images at data.size, measure its "
     "latents' scale and shift, export it to <output_dir>/image_codec (for `train` with codec.kind=sd-vae "
     "codec.path=<that folder>) and write the val reconstruction error to eval.json."),
    ("train", "joint", "small", JointRunConfig, train_joint,
     "model exported to {.export}", "train the joint image-mask diffusion model",
     "Train the denoiser (U-ViT or conv UNet) of image and mask latents together, conditioned on captions; "
     "exports <output_dir>/export for `sample` and `generate`."),
    ("train-seg", "seg", "shapes", SegRunConfig,
     train_segmenter, "segmenter written to {.export}",
     "train a segmenter on real, synthetic or real+synthetic pairs",
     "Train a segmenter (mix=real, synthetic or real+synthetic), score it on the real dataset's val split and "
     "export it to <output_dir>/segmenter with eval.json."),
)

# name, evaluate function, model folder, the score's label, help, description
SCORING = (
    ("eval-vae", evaluate_vae, "an annotation_vae folder", "reconstruction mIoU ({split})",
     "reconstruction IoU per class and mIoU of a trained annotation VAE",
     "Encode and decode every mask of a split at full resolution and report the reconstruction IoU per class "
     "and the mean."),
    ("eval-seg", evaluate_segmenter, "a segmenter folder",
     "mIoU ({dataset} {split})",
     "IoU per class and mIoU of a trained segmenter on a dataset split",
     "Segment every image of a split at full resolution and report the IoU per class and the mean."),
)


def register(sub: argparse._SubParsersAction) -> None:
    for name, group, preset, schema, train, done, help_text, description in TRAINING:
        add_training_command(sub, name, help=help_text, description=description, group=group,
                             default_preset=preset, schema=schema, train=train, done=done)
    for name, evaluate, model, score, help_text, description in SCORING:
        p = sub.add_parser(name, help=help_text, description=description + SCORING_NOTE)
        p.add_argument("model", help=f"{model} (config.json + model.safetensors)")
        add_config_args(p, "eval")
        add_shorthands(p, EVAL_SHORTHANDS)
        p.set_defaults(func=_score, evaluate=evaluate, score=score)
    p = sub.add_parser("eval-codec", help="reconstruction error of a trained image codec on a dataset split",
                       description="Encode and decode every image of a split at --resolution (fitted as training "
                                   "fits it) and report the mean absolute error (grey levels of 255) and PSNR."
                                   + SCORING_NOTE)
    p.add_argument("model", help="an image_codec folder (train-codec) or any AutoencoderKL folder")
    add_config_args(p, "eval")
    add_shorthands(p, EVAL_SHORTHANDS)
    p.set_defaults(func=_score_codec)


SCORING_NOTE = (" Settings: EvalConfig (evaluation/config.py); each option stands for the KEY=VALUE override it "
                "names, and KEY=VALUE overrides given too come after.")
EVAL_SHORTHANDS = (
    *DATA_SHORTHANDS, NUM_IMAGES,
    Shorthand(("--batch-size",), "batch_size", "images per batch (default: 8)", {"type": int}),
    Shorthand(("--json",), "json", "also write the report as JSON", {"metavar": "FILE"}),
)


def _score(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, EvalConfig, "eval")
    split = cfg.data.val_split
    cm, names = args.evaluate(args.model, cfg.data, split, batch_size=cfg.batch_size)
    print(cm.table(names))
    print(f"{args.score.format(dataset=cfg.data.name, split=split)}: {cm.miou():.2f}")
    if cfg.json:
        write_json_atomic(cfg.json, eval_report(cm, names, split))
    return 0


def _score_codec(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, EvalConfig, "eval")
    split = cfg.data.val_split
    report = evaluate_codec(args.model, cfg.data, split, batch_size=cfg.batch_size)
    print(json.dumps(report, indent=1))
    print(f"reconstruction error ({split}): {report['mae']:.2f} / 255, PSNR {report['psnr']:.2f} dB")
    if cfg.json:
        write_json_atomic(cfg.json, report)
    return 0
