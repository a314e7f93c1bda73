"""`demo` (every stage on the embedded shapes dataset) and `pipeline` (every stage on a real dataset)."""

from __future__ import annotations

from pathlib import Path

from jodiffusion.cli.common import add_config_args, config_from_args
from jodiffusion.experiments.config import PipelineConfig
from jodiffusion.experiments.demo import run_demo
from jodiffusion.experiments.experiment import run_pipeline
from jodiffusion.experiments.summary import print_summary


def register(sub) -> None:
    p = sub.add_parser("demo", help="run every stage on the embedded shapes dataset and write a report",
                       description="Make the embedded dataset, train the annotation VAE and the joint model, "
                                   "generate a synthetic set, train segmenters on real, synthetic and "
                                   "real+synthetic data, and write a report folder (index.html, figures, "
                                   "metrics.json). CPU only, no downloads. A rerun skips complete stages.")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="delete the output folder first and start again")
    p.add_argument("--quick", action="store_true", help="toy sizes: a smoke run in about a minute")
    p.add_argument("--preset", default=None,
                   help="a pipeline preset on the embedded dataset: demo (default), shapes-cpu (the longer proof, "
                        "under an hour on 2 cores) or demo-quick (same as --quick)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the pipeline/demo preset, e.g. synthetic_pairs=256")
    p.set_defaults(func=_demo)

    p = sub.add_parser("pipeline", help="run every stage on a dataset: VAE, joint model, generation, segmenters",
                       description="Captions (templates from the masks when the dataset has none) -> annotation "
                                   "VAE -> joint model -> synthetic sets -> segmenters trained on real, "
                                   "synthetic (1x, 4x) and real+synthetic data, scored on the real val split -> "
                                   "report. Each stage runs in <output_dir>/<stage>; a rerun skips complete "
                                   "stages and resumes an interrupted one from its latest checkpoint.")
    add_config_args(p, "pipeline", default_preset=None)
    p.set_defaults(func=_pipeline)


def _demo(args) -> int:
    run_demo(args.out, overwrite=args.overwrite, quick=args.quick, overrides=tuple(args.overrides), preset=args.preset)
    return 0


def _pipeline(args) -> int:
    cfg = config_from_args(args, PipelineConfig, "pipeline")
    metrics = run_pipeline(cfg)
    print_summary(metrics, Path(cfg.output_dir), title="jodiffusion pipeline")
    return 0
