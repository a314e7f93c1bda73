"""The demo (README's main command): the whole pipeline on the embedded shapes dataset, on a CPU.

    data (shapes, written to <out>/data) -> captions are the dataset's own -> annotation VAE -> joint
    model -> synthetic set -> segmenters on real / synthetic / real+synthetic -> report

It is ``run_pipeline`` with the ``pipeline/demo`` preset (``demo-quick`` for smoke tests), so the demo
and a real-data run share every line of code; rerunning it skips the stages already complete.
"""

from __future__ import annotations

import logging
from pathlib import Path

from jodiffusion.config.loader import load_config
from jodiffusion.data.shapes_folder import write_shapes_dataset
from jodiffusion.errors import JoDiffusionError
from jodiffusion.experiments.config import CANDIDATES, PipelineConfig
from jodiffusion.experiments.experiment import run_pipeline
from jodiffusion.experiments.model_figures import MODEL_FIGURES_DIR
from jodiffusion.experiments.plan import FIGURES_DIR
from jodiffusion.experiments.segmenters import FILTER_STAGE, TEST_STAGE, candidate_stage
from jodiffusion.experiments.stages import StageRunner
from jodiffusion.experiments.summary import print_summary
from jodiffusion.utils.output_folder import OutputRules, output_folder

log = logging.getLogger("jodiffusion")
DATA_DIR = "data"
# What a demo folder holds: its stage folders and the report (see experiments/experiment.py).
DEMO_ENTRIES = (DATA_DIR, "captions", "vae", "codec", "joint", "generate", "generate_x4", "seg-real", "eval-joint",
                "seg-synthetic", "seg-synthetic_x4", FILTER_STAGE, *map(candidate_stage, CANDIDATES), TEST_STAGE,
                FIGURES_DIR, MODEL_FIGURES_DIR, "report")
DEMO_RULES = OutputRules("demo", DEMO_ENTRIES)


def run_demo(out: str | Path, overwrite: bool = False, quick: bool = False, progress: bool = True,
             overrides: tuple[str, ...] = (), preset: str | None = None) -> dict:
    """Run (or finish) the demo in ``out``; returns its metrics (``<out>/report/metrics.json``).
    ``preset``: another pipeline preset on the embedded dataset (``shapes-cpu``: the longer proof)."""
    out = Path(out)
    preset = preset or ("demo-quick" if quick else "demo")
    cfg = load_config(PipelineConfig, group="pipeline", preset=preset,
                      overrides=[f"data.root={out / DATA_DIR}", f"output_dir={out}", *overrides])
    if cfg.data.name != "folder":
        raise JoDiffusionError(f"the demo writes the shapes dataset as a folder: keep data.name=folder (preset "
                               f"{preset!r} says {cfg.data.name!r})")
    # one demo at a time in a folder (each stage also locks its own); a rerun continues it, --overwrite
    # replaces only a folder an earlier demo wrote, holding nothing else
    with output_folder(out, DEMO_RULES, overwrite=overwrite, resume=not overwrite):
        runner = StageRunner(out)
        shapes = {"num_train": cfg.data.num_train, "num_val": cfg.data.num_val, "resolution": cfg.data.resolution,
                  "seed": cfg.data.seed, "difficulty": cfg.data.difficulty}
        if cfg.data.num_test:  # recorded only when asked for, so a data stage written before keeps its record
            shapes["num_test"] = cfg.data.num_test

        def make_data(folder: Path, resume: bool) -> dict:
            write_shapes_dataset(folder, **shapes, overwrite=True, progress=progress)
            return {"root": str(folder)}

        runner.run(DATA_DIR, shapes, make_data)
        metrics = run_pipeline(cfg, progress=progress, runner=runner)
    print_summary(metrics, out)
    return metrics
