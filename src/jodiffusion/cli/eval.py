"""`eval-joint`: score a trained joint model's generated pairs (prompt adherence, image-mask agreement)."""

from __future__ import annotations

import json

from jodiffusion.cli.common import DATA_SHORTHANDS, Shorthand, add_config_args, add_shorthands, config_from_args
from jodiffusion.data.captions import dataset_captions
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.data.registry import build_dataset
from jodiffusion.errors import JoDiffusionError
from jodiffusion.evaluation.config import JointEvalConfig
from jodiffusion.evaluation.joint_quality import evaluate_model
from jodiffusion.utils.io import write_json_atomic

# flag -> the override it stands for (cli/common.py)
SHORTHANDS = (
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


def register(sub) -> None:
    p = sub.add_parser("eval-joint", help="generate pairs from dataset captions and score them",
                       description="Generate one pair per caption of a dataset split and report prompted-class "
                                   "precision/recall and, with --segmenter, the agreement (mIoU) between a "
                                   "segmenter's prediction on each generated image and the generated mask. "
                                   "Settings: JointEvalConfig (evaluation/config.py); each option stands for the "
                                   "KEY=VALUE override it names, and KEY=VALUE overrides given too come after.")
    p.add_argument("model", help="an exported joint model folder (<run>/export)")
    add_config_args(p, "eval-joint")
    add_shorthands(p, SHORTHANDS)
    p.set_defaults(func=_run)


def _run(args) -> int:
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
