"""`pipeline`: every stage on a real dataset (VAE, joint model, generation, segmenters), then the report."""

from __future__ import annotations

from pathlib import Path

from jodiffusion.cli.common import add_config_args, config_from_args
from jodiffusion.experiments.config import PipelineConfig
from jodiffusion.experiments.experiment import run_pipeline
from jodiffusion.experiments.summary import print_summary


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="run every stage on a dataset: VAE, joint model, generation, segmenters",
                       description="Captions (templates from the masks when the dataset has none) -> annotation "
                                   "VAE -> joint model -> synthetic sets -> segmenters trained on real, "
                                   "synthetic (1x, 4x) and real+synthetic data, scored on the real val split -> "
                                   "report. Each stage runs in <output_dir>/<stage>; a rerun skips complete "
                                   "stages and resumes an interrupted one from its latest checkpoint.")
    add_config_args(p, "pipeline", default_preset=None)
    p.set_defaults(func=_pipeline)


def _pipeline(args) -> int:
    cfg = config_from_args(args, PipelineConfig, "pipeline")
    metrics = run_pipeline(cfg)
    print_summary(metrics, Path(cfg.output_dir), title="jodiffusion pipeline")
    return 0
