"""``jodiffusion generate``: a synthetic segmentation dataset of N pairs (resumable, multi-process)."""

from __future__ import annotations

import argparse

from jodiffusion.cli.common import Shorthand, add_config_args, add_shorthands, config_from_args
from jodiffusion.errors import ConfigError
from jodiffusion.generation.config import FORMATS, IMAGE_FORMATS, PRECISIONS
from jodiffusion.generation.generate import GenerateConfig, generate_dataset
from jodiffusion.generation.prompts import parse_class_weights

GENERATE_HELP = "generate a synthetic segmentation dataset of N (image, mask) pairs"

GENERATE_DESCRIPTION = """\
Generate N (image, mask) pairs with a trained model into a dataset folder that `read_folder`,
`train-seg` and MMSegmentation load (or WebDataset tar shards with --format webdataset).

Pair i depends only on (--seed, i, the model, the settings): the same N pairs come out on one or
several processes and after an interruption. Rerun the same command to resume; an output folder of
another model or other settings is refused unless --overwrite. Several processes (GPUs) share the work:

  torchrun --nproc_per_node 4 -m jodiffusion.cli.main generate MODEL -n 20000 --out DIR

Every option of the sections below stands for the KEY=VALUE override it names (shown in [sets ...]);
KEY=VALUE overrides given as well are applied after them.

With the quality filter (--filter or any filter option), dropped pairs are recorded in manifest.jsonl
with their reason and further indices are generated until N pairs are kept: the output holds the
first N kept indices."""


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


PROMPT_SOURCES = ("captions", "templates")


def _prompt_source(value: str) -> None:
    if value not in PROMPT_SOURCES:
        raise ConfigError(f"--prompts {value}: --prompts is 'captions' or 'templates'; a prompts file is given as "
                          f"--prompts-file {value} (prompts.source=file prompts.file={value})")


FILTER = "quality filter (any option below turns it on)"
# flag -> the override it stands for (cli/common.py); the order matters where two set one key: a later
# flag wins (--max-ignore after --drop-empty)
SHORTHANDS = (
    Shorthand(("-n", "--num"), "num", "number of pairs to write (kept pairs); under torchrun write -n N "
              "(torchrun takes --num)", {"type": int, "metavar": "N"}),
    Shorthand(("--out",), "out", "output folder (new, empty, or this run's)", {"metavar": "DIR"}),
    Shorthand(("--prompts",), "prompts.source",
              "'captions': the training captions of the model's dataset (default, as in the paper); "
              "'templates': class-balanced prompts like 'a photo of a car and a tree'",
              {"metavar": "SOURCE"}, check=_prompt_source, group="prompts"),
    Shorthand(("--prompts-file",), "prompts.source=file prompts.file",
              'a file with one prompt per line (or {"prompt": ..., "classes": [...]} per line)',
              {"metavar": "FILE"}, keys=lambda v: {"prompts.source": "file", "prompts.file": v}, group="prompts"),
    Shorthand(("--captions",), "prompts.captions",
              "captions.jsonl, or the dataset folder that has one (default: the training captions the model "
              "folder carries)", {"metavar": "PATH"}, group="prompts"),
    Shorthand(("--class-weights",), "prompts.class_weights",
              "templates: target share of prompts naming each class, e.g. 'car=1,bicycle=3' or a JSON object; "
              "classes not named get 0 (default: uniform over the non-background classes)",
              {"metavar": "NAME=W,..."}, keys=lambda v: {"prompts.class_weights": parse_class_weights(v)},
              group="prompts"),
    Shorthand(("--template",), "prompts.template",
              "templates: the prompt, '{classes}' becomes e.g. 'a car, a road and a tree' "
              "(default: 'a photo of {classes}')", group="prompts"),
    Shorthand(("--max-classes",), "prompts.max_classes", "templates: each prompt names 1..K classes (default: 3)",
              {"type": int, "metavar": "K"}, group="prompts"),
    Shorthand(("--seed",), "seed", "global seed (default: 0)", {"type": int}, group="sampling"),
    Shorthand(("--steps",), "steps", "sampler steps (default: the model's)", {"type": int}, group="sampling"),
    Shorthand(("--guidance",), "guidance", "classifier-free guidance scale (default: the model's)",
              {"type": float}, group="sampling"),
    Shorthand(("--batch-size",), "batch_size", "pairs sampled at once per process (default: 8)", {"type": int},
              group="sampling"),
    Shorthand(("--tau",), "tau", "mask refinement: relabel connected components below TAU pixels; 0 = off "
              "(default: 20)", {"type": int}, group="sampling"),
    Shorthand(("--min-confidence",), "min_confidence",
              "mask pixels whose class probability is below P become ignore (255) (default: 0)",
              {"type": float, "metavar": "P"}, group="sampling"),
    Shorthand(("--precision",), "precision", "auto: bf16 autocast where the hardware runs it natively (a GPU, or "
              "a CPU with AVX512-BF16 or AMX), else fp32 (default: auto)", {"choices": PRECISIONS},
              group="sampling"),
    Shorthand(("--format",), "format", "folder: images/, masks/, splits/ (default); webdataset: tar shards "
              "under shards/", {"choices": FORMATS}, group="output"),
    Shorthand(("--shard-size",), "shard_size", "webdataset: indices per shard (default: 1000)",
              {"type": int, "metavar": "N"}, group="output"),
    Shorthand(("--image-format",), "image_format", "image files: lossless PNG (default) or JPEG",
              {"choices": IMAGE_FORMATS}, group="output"),
    Shorthand(("--jpeg-quality",), "jpeg_quality", "JPEG quality, 95..100 (default: 95)",
              {"type": int, "metavar": "Q"}, group="output"),
    Shorthand(("--split",), "split", "split name of the folder layout (default: train)", group="output"),
    Shorthand(("--workers",), "workers", "threads that refine, filter, encode and write while the next batch is "
              "sampled; 0 = none (default: 4)", {"type": int, "metavar": "N"}, group="output"),
    Shorthand(("--drop-empty",), "filters.enabled=true filters.require_prompted_classes=false filters.max_ignore",
              "drop pairs with almost no foreground (see --min-foreground) and nothing else, unless --filter or "
              "other options add checks", {"action": "store_true"},
              keys=lambda _: {"filters.enabled": True, "filters.require_prompted_classes": False,
                              "filters.max_ignore": 1.0}, group=FILTER),
    Shorthand(("--filter",), "filters.enabled", "drop degenerate pairs with the default thresholds: almost no "
              "foreground, mostly ignore, or missing a class the prompt asked for", {"action": "store_true"},
              group=FILTER),
)
# the filter's thresholds: each turns the filter on too
SHORTHANDS += tuple(
    Shorthand((flag,), f"filters.enabled=true filters.{key}", text, kwargs,
              keys=lambda v, key=key: {"filters.enabled": True, f"filters.{key}": v}, group=FILTER)
    for flag, key, text, kwargs in (
        ("--min-foreground", "min_foreground", "drop pairs whose non-background share of pixels is below F "
         "(default: 0.01)", {"type": _fraction, "metavar": "F"}),
        ("--max-ignore", "max_ignore", "drop pairs with more than F of the pixels ignore (default: 0.5)",
         {"type": _fraction, "metavar": "F"}),
        ("--consistency-segmenter", "consistency_segmenter", "segmenter trained on real data (`jodiffusion "
         "train-seg` <run>/segmenter): pixels it confidently contradicts become ignore (or the pair is dropped, "
         "--consistency-mode drop)", {"metavar": "DIR"}),
        ("--consistency-mode", "consistency_mode", "what to do with contradicted pixels",
         {"choices": ("ignore", "drop")}),
        ("--confidence", "confidence", "segmenter probability needed to contradict a generated label "
         "(default: 0.9)", {"type": _fraction, "metavar": "P"}),
    ))
SHORTHANDS += (
    Shorthand(("--allow-missing-classes",), "filters.enabled=true filters.require_prompted_classes=false",
              "keep pairs whose mask lacks a class the prompt asked for (default: drop them)",
              {"action": "store_true"},
              keys=lambda _: {"filters.enabled": True, "filters.require_prompted_classes": False}, group=FILTER),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help=GENERATE_HELP, description=GENERATE_DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="model folder written by `jodiffusion train` (<run>/export)")
    add_config_args(p, "generate")
    add_shorthands(p, SHORTHANDS)
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: the process's GPU when there is one)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output folder that holds another model's or other settings' samples "
                        "(a folder of this same generation is simply continued)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run_generate)


def generate_config(args: argparse.Namespace) -> GenerateConfig:
    """The GenerateConfig of a command line: preset, files, shorthand flags, then KEY=VALUE."""
    if args.shorthand_filter:  # --filter's thresholds include --drop-empty's check; the full filter it is
        args.shorthand_drop_empty = False
    return config_from_args(args, GenerateConfig, "generate")


def run_generate(args: argparse.Namespace) -> int:
    cfg = generate_config(args)
    summary = generate_dataset(args.model, cfg, device=args.device, overwrite=args.overwrite,
                               progress=not args.no_progress)
    if summary.get("rank"):
        return 0
    print(f"wrote {summary['pairs']} pairs to {summary['out']} ({summary['format']}) in {summary['seconds']:.1f} s, "
          f"{summary['pairs_per_second']:.2f} pairs/s on {summary['processes']} process(es)")
    if summary["dropped"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in summary["dropped_by_reason"].items())
        print(f"  dropped: {summary['dropped']} ({reasons})")
    shown = sorted(summary["class_histogram"].items(), key=lambda kv: -kv[1]["images"])
    print("  images per class: " + ", ".join(f"{k} {v['images']}" for k, v in shown))
    return 0
