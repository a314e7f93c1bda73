"""The pipeline's stages on generated pairs: the generate stages, eval-joint and the dataset figures.

A generate stage is the generate command (``GenerateConfig``) with the pipeline's ``generate`` preset and
overrides; the pipeline sets only what ties it to the run: the number of pairs, the folder, the split the
segmenters read and the prompts (the training captions). eval-joint samples its pairs with the same
settings (seed + 1), so nothing of the generation is written down twice.
"""

from __future__ import annotations

import logging
from pathlib import Path

from jodiffusion.config.loader import config_changes, config_to_dict
from jodiffusion.data.captions import captions_path, dataset_captions, read_captions
from jodiffusion.data.config import DataConfig
from jodiffusion.data.registry import build_dataset
from jodiffusion.evaluation.dataset_stats import compute_stats
from jodiffusion.evaluation.joint_quality import evaluate_model
from jodiffusion.evaluation.probe import probe_pairs
from jodiffusion.experiments.config import SYNTHETIC_SPLIT
from jodiffusion.experiments.results import DatasetFigures, GeneratedSet
from jodiffusion.generation.config import GenerateConfig
from jodiffusion.generation.generate import generate_dataset
from jodiffusion.generation.prompts import PromptConfig
from jodiffusion.utils.io import write_json_atomic

log = logging.getLogger("jodiffusion")

# What a generate stage's record names on its own: the settings the pipeline's generation had before it
# was the generate command's preset and overrides (a folder completed then keeps its record).
RECORDED = ("seed", "steps", "guidance", "batch_size", "tau", "workers")
FILLED = ("num", "out", "split", "prompts")  # set by the pipeline, recorded by the stage's own settings


def generation_fields(num: int, out: str | Path, captions: Path | None, train_split: str) -> dict:
    """What the pipeline sets in a generate stage's config: ``num`` pairs into ``out``, in the split the
    segmenters read, prompted with the training captions (``captions`` None: those the exported model carries)."""
    prompts = PromptConfig(source="captions", captions=str(captions) if captions else None, split=train_split)
    return {"num": num, "out": str(out), "split": SYNTHETIC_SPLIT, "prompts": prompts}


def generation_record(synthetic_pairs: int, g: GenerateConfig) -> dict:
    """The generation settings a stage's record compares: ``synthetic_pairs`` (the pipeline's, 0: as many
    as the real training pairs), the RECORDED settings, and under ``other`` any further setting of the
    generate command that is not its default."""
    record = {"num": synthetic_pairs, **{k: getattr(g, k) for k in RECORDED}}
    default = GenerateConfig(**{k: getattr(g, k) for k in FILLED})
    other = {k: new for k, (_, new) in config_changes(config_to_dict(default), config_to_dict(g)).items()
             if k.split(".")[0] not in (*RECORDED, *FILLED)}
    return {**record, "other": other} if other else record


def generate(export: Path, g: GenerateConfig, progress: bool) -> GeneratedSet:
    summary = generate_dataset(export, g, progress=progress)
    return GeneratedSet(Path(g.out), summary.get("pairs", g.num), summary.get("pairs_per_second"))


def evaluate_joint(g: GenerateConfig, export: Path, segmenter: Path, progress: bool) -> dict:
    """Prompt adherence and image-mask agreement of ``g.num`` fresh pairs drawn from the training captions
    (``g.prompts``) with ``g``'s sampler settings, seed + 1; the grid and ``eval_joint.json`` go into ``g.out``."""
    folder = Path(g.out)
    source = g.prompts.captions or captions_path(export)  # a dataset's own captions: the export carries them
    prompts = list(read_captions(source, split=g.prompts.split).values())
    prompts = [prompts[i % len(prompts)] for i in range(g.num)]
    result = evaluate_model(export, prompts, segmenter_dir=segmenter, steps=g.steps, guidance=g.guidance,
                            batch_size=g.batch_size, seed=g.seed + 1, tau=g.tau, grid_path=folder / "grid.png",
                            progress=progress)
    write_json_atomic(folder / "eval_joint.json", result)
    return result


def dataset_figures(data: DataConfig, captions: Path | None, synthetic: GeneratedSet) -> DatasetFigures:
    """The probe on (up to 256, evenly spread) real training pairs, and the class pixel frequencies of
    the real training set and of the generated set."""
    real_train = build_dataset(data, data.train_split)
    picks = range(0, len(real_train), max(1, len(real_train) // 256))
    texts = dataset_captions(real_train, captions, split=data.train_split) or {}
    probe = probe_pairs([texts.get(real_train.stem(i), "") for i in picks],
                        [real_train.load_image(i) for i in picks], [real_train.load_mask(i) for i in picks],
                        real_train.classes)
    synth_set = build_dataset(DataConfig(name="folder", root=str(synthetic.out)), SYNTHETIC_SPLIT)
    names = real_train.classes.names
    frequency = {name: dict(zip(names, map(float, compute_stats(ds, name, progress=False).pixel_frequency()),
                                strict=True))
                 for name, ds in (("real", real_train), ("synthetic", synth_set))}
    return DatasetFigures(probe, frequency)
