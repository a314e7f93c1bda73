"""`eval-joint`: score a trained joint model's generated pairs (prompt adherence, image-mask agreement)."""

from __future__ import annotations

import json

from jodiffusion.data.captions import dataset_captions
from jodiffusion.data.config import DataConfig
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.data.registry import build_dataset
from jodiffusion.errors import JoDiffusionError
from jodiffusion.evaluation.joint_quality import evaluate_model
from jodiffusion.utils.io import write_json_atomic


def register(sub) -> None:
    p = sub.add_parser("eval-joint", help="generate pairs from dataset captions and score them",
                       description="Generate one pair per caption of a dataset split and report prompted-class "
                                   "precision/recall and, with --segmenter, the agreement (mIoU) between a "
                                   "segmenter's prediction on each generated image and the generated mask.")
    p.add_argument("model", help="an exported joint model folder (<run>/export)")
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--root", help="dataset root (captions from <root>/captions.jsonl unless --captions)")
    p.add_argument("--captions", help="captions.jsonl to draw prompts from")
    p.add_argument("--split", default="val")
    p.add_argument("--resolution", type=int, default=64, help="shapes dataset only")
    p.add_argument("--num", type=int, default=128, help="number of pairs (prompts cycle if fewer)")
    p.add_argument("--segmenter", help="a segmenter folder trained on the real data (train-seg)")
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--tau", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--grid", help="write a PNG grid of the first pairs")
    p.set_defaults(func=_run)


def _run(args) -> int:
    if args.num < 1:
        raise JoDiffusionError("--num must be >= 1")
    dataset = build_dataset(DataConfig(name=args.dataset, root=args.root, val_split=args.split,
                                       resolution=args.resolution), args.split)
    captions = dataset_captions(dataset, args.captions, args.root)
    if captions is None:
        raise JoDiffusionError(f"no captions for dataset '{args.dataset}': pass --captions FILE (or --root of a "
                               f"dataset folder holding {CAPTIONS_FILE})")
    prompts = [captions[dataset.stem(i)] for i in range(len(dataset)) if dataset.stem(i) in captions]
    if not prompts:
        raise JoDiffusionError(f"no captions found for split '{args.split}'")
    prompts = [prompts[i % len(prompts)] for i in range(args.num)]
    result = evaluate_model(args.model, prompts, args.segmenter, args.steps, args.guidance, args.batch_size,
                            args.seed, args.tau, grid_path=args.grid)
    print(json.dumps({k: v for k, v in result.items() if k != "agreement_iou"}, indent=1))
    if args.json:
        write_json_atomic(args.json, result)
    return 0
