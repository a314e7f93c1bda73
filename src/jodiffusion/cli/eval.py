"""The commands that score a trained model: on a dataset split (`eval-vae`, `eval-seg`, `eval-codec`; the
library calls are in evaluation/scoring.py) and by the pairs it generates from a dataset's captions
(`eval-joint`: prompt adherence, image-mask agreement; evaluation/joint_quality.py)."""

from __future__ import annotations

import argparse
import json

from jodiffusion.cli.common import (
    DATA_SHORTHANDS,
    NUM_IMAGES,
    Shorthand,
    add_config_args,
    add_shorthands,
    config_from_args,
)
from jodiffusion.data.captions import dataset_captions
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.data.registry import build_dataset
from jodiffusion.errors import JoDiffusionError
from jodiffusion.evaluation.config import EvalConfig, JointEvalConfig
from jodiffusion.evaluation.joint_quality import evaluate_model
from jodiffusion.evaluation.scoring import evaluate_codec, evaluate_segmenter, evaluate_vae
from jodiffusion.segmentation.metrics import eval_report
from jodiffusion.utils.io import write_json_atomic

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

# eval-joint: flag -> the override it stands for (cli/common.py)
JOINT_SHORTHANDS = (
    *DATA_SHORTHANDS,
    Shorthand(("--captions",), "data.captions", "captions.jsonl to draw prompts from (default: "
              "<root>/captions.jsonl)", {"metavar": "FILE"}),
    Shorthand(("-n", "--num"), "num", "number of pairs generated and scored (the captions taken in turn) "
              "(default: 128)", {"type": int, "metavar": "N"}),
    Shorthand(("--segmenter",), "segmenter", "a segmenter folder trained on the real data (train-seg)",
              {"metavar": "DIR"}),
    Shorthand(("--steps",), "steps", "sampler steps (default: the model's)", {"type": int}),
    Shorthand(("--guidance",), "guidance", "classifier-free guidance scale (default: the model's)", {"type": float}),
    Shorthand(("--tau",), "tau", "mask optimisation area threshold (0: off) (default: 20)", {"type": int}),
    Shorthand(("--batch-size",), "batch_size", "pairs sampled at once (default: 16)", {"type": int}),
    Shorthand(("--seed",), "seed", "global seed (default: 0)", {"type": int}),
    Shorthand(("--json",), "json", "write the report as JSON", {"metavar": "FILE"}),
    Shorthand(("--grid",), "grid", "write a PNG grid of the first pairs", {"metavar": "FILE"}),
)


def register(sub: argparse._SubParsersAction) -> None:
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

    p = sub.add_parser("eval-joint", help="generate pairs from dataset captions and score them",
                       description="Generate one pair per caption of a dataset split and report prompted-class "
                                   "precision/recall and, with --segmenter, the agreement (mIoU) between a "
                                   "segmenter's prediction on each generated image and the generated mask. "
                                   "Settings: JointEvalConfig (evaluation/config.py); each option stands for the "
                                   "KEY=VALUE override it names, and KEY=VALUE overrides given too come after.")
    p.add_argument("model", help="an exported joint model folder (<run>/export)")
    add_config_args(p, "eval-joint")
    add_shorthands(p, JOINT_SHORTHANDS)
    p.set_defaults(func=_score_joint)


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


def _score_joint(args) -> int:
    cfg = config_from_args(args, JointEvalConfig, "eval-joint")
    split = cfg.data.val_split
    dataset = build_dataset(cfg.data, split)
    captions = dataset_captions(dataset, cfg.data.captions, cfg.data.root)
    if captions is None:
        raise JoDiffusionError(f"no captions for dataset '{cfg.data.name}': pass --captions FILE (or --root of a "
                               f"dataset folder holding {CAPTIONS_FILE})")
    prompts = [captions[dataset.stem(i)] for i in range(len(dataset)) if dataset.stem(i) in captions]
    if not prompts:
        raise JoDiffusionError(f"no captions found for split '{split}'")
    prompts = [prompts[i % len(prompts)] for i in range(cfg.num)]
    result = evaluate_model(args.model, prompts, cfg.segmenter, cfg.steps, cfg.guidance, cfg.batch_size,
                            cfg.seed, cfg.tau, grid_path=cfg.grid)
    print(json.dumps({k: v for k, v in result.items() if k != "agreement_iou"}, indent=1))
    if cfg.json:
        write_json_atomic(cfg.json, result)
    return 0
