"""``jodiffusion generate``: a synthetic segmentation dataset of N pairs (resumable, multi-process)."""

from __future__ import annotations

import argparse
import os

from jodiffusion.errors import ConfigError
from jodiffusion.generation.filters import FilterConfig
from jodiffusion.generation.generate import GenerateConfig, generate_dataset
from jodiffusion.generation.prompts import PromptConfig, parse_class_weights

GENERATE_HELP = "generate a synthetic segmentation dataset of N (image, mask) pairs"

GENERATE_DESCRIPTION = """\
Generate N (image, mask) pairs with a trained model into a dataset folder that `read_folder`,
`train-seg` and MMSegmentation load (or WebDataset tar shards with --format webdataset).

Pair i depends only on (--seed, i, the model, the settings): the same N pairs come out on one or
several processes and after an interruption. Rerun the same command to resume; an output folder of
another model or other settings is refused unless --overwrite. Several processes (GPUs) share the work:

  torchrun --nproc_per_node 4 -m jodiffusion.cli.main generate MODEL -n 20000 --out DIR

With the quality filter (--filter or any filter option), dropped pairs are recorded in manifest.jsonl
with their reason and further indices are generated until N pairs are kept: the output holds the
first N kept indices."""


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help=GENERATE_HELP, description=GENERATE_DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="model folder written by `jodiffusion train` (<run>/export)")
    p.add_argument("-n", "--num", type=int, required=True, metavar="N",
                   help="number of pairs to write (kept pairs); under torchrun write -n N (torchrun takes --num)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new, empty, or this run's)")
    g = p.add_argument_group("prompts")
    g.add_argument("--prompts", default="captions", metavar="SOURCE",
                   help="'captions': the training captions of the model's dataset (default, as in the paper); "
                        "'templates': class-balanced prompts like 'a photo of a car and a tree'; or a FILE with "
                        'one prompt per line (or {"prompt": ..., "classes": [...]} per line)')
    g.add_argument("--captions", metavar="PATH",
                   help="captions.jsonl, or the dataset folder that has one (default: the training captions "
                        "the model folder carries)")
    g.add_argument("--class-weights", metavar="NAME=W,...",
                   help="templates: target share of prompts naming each class, e.g. 'car=1,bicycle=3' or a JSON "
                        "object; classes not named get 0 (default: uniform over the non-background classes)")
    g.add_argument("--template", default="a photo of {classes}",
                   help="templates: the prompt, '{classes}' becomes e.g. 'a car, a road and a tree' "
                        "(default: '%(default)s')")
    g.add_argument("--max-classes", type=int, default=3, metavar="K",
                   help="templates: each prompt names 1..K classes (default: 3)")
    s = p.add_argument_group("sampling")
    s.add_argument("--seed", type=int, default=0, help="global seed (default: 0)")
    s.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    s.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    s.add_argument("--batch-size", type=int, default=8, help="pairs sampled at once per process (default: 8)")
    s.add_argument("--tau", type=int, default=20,
                   help="mask refinement: relabel connected components below TAU pixels; 0 = off (default: 20)")
    s.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                   help="mask pixels whose class probability is below P become ignore (255) (default: 0)")
    s.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast where the hardware runs it natively (a GPU, or a CPU with "
                        "AVX512-BF16 or AMX), else fp32 (default: auto)")
    s.add_argument("--device", help="cuda, cuda:1, cpu (default: the process's GPU when there is one)")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=("folder", "webdataset"), default="folder",
                   help="folder: images/, masks/, splits/ (default); webdataset: tar shards under shards/")
    o.add_argument("--shard-size", type=int, default=1000, metavar="N",
                   help="webdataset: indices per shard (default: 1000)")
    o.add_argument("--image-format", choices=("png", "jpeg"), default="png",
                   help="image files: lossless PNG (default) or JPEG")
    o.add_argument("--jpeg-quality", type=int, default=95, metavar="Q", help="JPEG quality, 95..100 (default: 95)")
    o.add_argument("--split", default="train", help="split name of the folder layout (default: train)")
    o.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="threads that refine, filter, encode and write while the next batch is sampled; "
                        "0 = none (default: %(default)s)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an output folder that holds another model's or other settings' samples "
                        "(a folder of this same generation is simply continued)")
    o.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    f = p.add_argument_group("quality filter (any option below turns it on)")
    f.add_argument("--filter", action="store_true",
                   help="drop degenerate pairs with the default thresholds: almost no foreground, mostly ignore, "
                        "or missing a class the prompt asked for")
    f.add_argument("--drop-empty", action="store_true",
                   help="drop pairs with almost no foreground (see --min-foreground) and nothing else, unless "
                        "--filter or other options add checks")
    f.add_argument("--min-foreground", type=_fraction, metavar="F",
                   help="drop pairs whose non-background share of pixels is below F (default: 0.01)")
    f.add_argument("--max-ignore", type=_fraction, metavar="F",
                   help="drop pairs with more than F of the pixels ignore (default: 0.5)")
    f.add_argument("--allow-missing-classes", action="store_true",
                   help="keep pairs whose mask lacks a class the prompt asked for (default: drop them)")
    f.add_argument("--consistency-segmenter", metavar="DIR",
                   help="segmenter trained on real data (`jodiffusion train-seg` <run>/segmenter): pixels it "
                        "confidently contradicts become ignore (or the pair is dropped, --consistency-mode drop)")
    f.add_argument("--consistency-mode", choices=("ignore", "drop"), help="what to do with contradicted pixels")
    f.add_argument("--confidence", type=_fraction, metavar="P",
                   help="segmenter probability needed to contradict a generated label (default: 0.9)")
    p.set_defaults(func=run_generate)


def _filter_config(args: argparse.Namespace):
    given = {"min_foreground": args.min_foreground, "max_ignore": args.max_ignore,
             "consistency_segmenter": args.consistency_segmenter, "consistency_mode": args.consistency_mode,
             "confidence": args.confidence}
    given = {k: v for k, v in given.items() if v is not None}
    if args.allow_missing_classes:
        given["require_prompted_classes"] = False
    if args.drop_empty and not args.filter:  # only the emptiness check, unless other checks are asked for
        given.setdefault("require_prompted_classes", False)
        given.setdefault("max_ignore", 1.0)
    enabled = bool(given) or args.filter or args.drop_empty
    return FilterConfig(enabled=enabled, **given)


def run_generate(args: argparse.Namespace) -> int:
    source, prompts_file = args.prompts, None
    if source not in ("captions", "templates"):
        source, prompts_file = "file", args.prompts
    try:
        prompts = PromptConfig(source=source, captions=args.captions, file=prompts_file, template=args.template,
                               max_classes=args.max_classes,
                               class_weights=parse_class_weights(args.class_weights) if args.class_weights else None)
        cfg = GenerateConfig(num=args.num, out=args.out, seed=args.seed, prompts=prompts, steps=args.steps,
                             guidance=args.guidance, batch_size=args.batch_size, tau=args.tau,
                             min_confidence=args.min_confidence, format=args.format, image_format=args.image_format,
                             jpeg_quality=args.jpeg_quality, shard_size=args.shard_size, split=args.split,
                             workers=args.workers, precision=args.precision, filters=_filter_config(args))
    except ValueError as exc:  # FilterConfig and SamplerConfig say what is wrong with a ValueError
        raise ConfigError(str(exc)) from None
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
