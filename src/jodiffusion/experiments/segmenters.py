"""The pipeline's segmenter stages, and how real+synthetic is chosen so that synthetic data cannot pull a
segmenter down unseen.

Every segmenter is ``train-seg`` with the pipeline's one ``seg`` preset, so their mIoUs compare the
training data alone. real+synthetic is not one recipe but the best of ``cfg.candidates`` on the val
split (``CANDIDATES`` in ``config.py``: mixed batches or synthetic-then-real, each on the generated set
as it is or on the pairs that pass the quality filter, judged by the real-only segmenter). Every
candidate's val figure is reported; the choice is the candidate best on val; the real-only segmenter
stays the pipeline's pick unless that candidate beats it there. A held-out split (``cfg.test_split``)
never takes part in the choice: the real-only and the chosen segmenter are scored there afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

from jodiffusion.data.config import DataConfig
from jodiffusion.evaluation.scoring import evaluate_segmenter
from jodiffusion.experiments.config import SYNTHETIC_SPLIT, PipelineConfig
from jodiffusion.experiments.results import GeneratedSet
from jodiffusion.experiments.stages import StageRunner, stage_config, to_record, train_args
from jodiffusion.generation.filter_folder import filter_folder
from jodiffusion.training.config import SegRunConfig
from jodiffusion.training.segmenter import SegmenterResult, train_segmenter

log = logging.getLogger("jodiffusion")

FILTER_STAGE = "filter"
TEST_STAGE = "seg-test"
MIX_STAGE = "seg-real+synthetic"  # the "mix" candidate: the folder the single real+synthetic run always had


def candidate_stage(name: str) -> str:
    """The stage folder of a real+synthetic candidate."""
    return MIX_STAGE if name == "mix" else f"{MIX_STAGE}-{name}"


def seg_settings(cfg: PipelineConfig, data: DataConfig, mix: str, synthetic: str | None,
                 ratio: float | None = None, phase: float | None = None) -> dict:
    settings = {"data": data.record(), "mix": mix, "synthetic": synthetic, "spec": dataclasses.asdict(cfg.seg)}
    if ratio is not None:
        settings["synthetic_ratio"] = ratio
    if phase is not None:
        settings["synthetic_phase"] = phase
    return settings


def segment(cfg: PipelineConfig, data: DataConfig, mix: str, synthetic: str | None, folder: Path, resume: bool,
            progress: bool, synthetic_ratio: float | None = None,
            synthetic_phase: float | None = None) -> SegmenterResult:
    fields = dict(data=data, mix=mix, synthetic=synthetic, synthetic_split=SYNTHETIC_SPLIT, output_dir=str(folder))
    if synthetic_ratio is not None:  # at least one sample of each source per batch
        batch = stage_config(SegRunConfig, "seg", cfg.seg, **fields).train.batch_size
        fields["synthetic_ratio"] = min(max(synthetic_ratio, 1 / batch), 1 - 1 / batch)
    if synthetic_phase is not None:
        fields["synthetic_phase"] = synthetic_phase
    scfg = stage_config(SegRunConfig, "seg", cfg.seg, **fields)
    return train_segmenter(scfg, progress=progress, **train_args(folder, resume))


def filter_stage(cfg: PipelineConfig, runner: StageRunner, synthetic: GeneratedSet, judge: SegmenterResult,
                 progress: bool) -> dict:
    """The generated set's pairs that pass ``cfg.filter``, the real-only segmenter judging consistency."""
    fcfg = dataclasses.replace(cfg.filter, consistency_segmenter=str(judge.export))
    settings = {"source": str(synthetic.out), "filter": dataclasses.asdict(fcfg)}
    return runner.run(FILTER_STAGE, settings,
                      lambda f, r: filter_folder(synthetic.out, f, fcfg, split=SYNTHETIC_SPLIT, progress=progress))


def train_candidates(cfg: PipelineConfig, data: DataConfig, runner: StageRunner, synthetic: GeneratedSet,
                     judge: SegmenterResult, num_real: int, progress: bool) -> tuple[dict[str, dict], dict | None]:
    """Train every candidate (skipping complete ones); returns ``{name: result}`` (``miou`` None and
    ``skipped`` saying why where a candidate had no pair to train on) and the filter's summary (None when
    no candidate filters)."""
    filtered = None
    if any(name.endswith("+filter") for name in cfg.candidates):
        filtered = filter_stage(cfg, runner, synthetic, judge, progress)
    results = {}
    for name in cfg.candidates:
        source = filtered if name.endswith("+filter") else to_record(synthetic)
        if not source["pairs"]:
            results[name] = {"miou": None, "skipped": "no generated pair passed the quality filter"}
            log.warning("candidate %s skipped: no generated pair passed the quality filter", name)
            continue
        if name.startswith("mix"):
            # the synthetic set's share of the union of both sets, unless synthetic_ratio says otherwise
            ratio = cfg.synthetic_ratio or source["pairs"] / (num_real + source["pairs"])
            mix, phase = "real+synthetic", None
        else:
            mix, ratio, phase = "synthetic-then-real", None, cfg.synthetic_phase
        settings = seg_settings(cfg, data, mix, source["out"], ratio, phase)
        run = functools.partial(_run_candidate, cfg, data, mix, source["out"], progress, ratio, phase)
        trained = runner.run(candidate_stage(name), settings, run, SegmenterResult)
        results[name] = {**to_record(trained), "pairs": source["pairs"], "mix": mix, "synthetic_phase": phase}
    return results, filtered


def _run_candidate(cfg: PipelineConfig, data: DataConfig, mix: str, synthetic: str, progress: bool,
                   ratio: float | None, phase: float | None, folder: Path, resume: bool) -> SegmenterResult:
    return segment(cfg, data, mix, synthetic, folder, resume, progress, synthetic_ratio=ratio, synthetic_phase=phase)


def choose(real_miou: float, candidates: dict[str, dict]) -> dict:
    """The choice on the val split: ``chosen`` is the candidate best on val (the first of a tie), None
    when none trained; ``selected`` is the segmenter the pipeline stands behind: ``chosen`` only when it
    beats real-only there, else ``"real"``."""
    scored = {name: r["miou"] for name, r in candidates.items() if r.get("miou") is not None}
    chosen = max(scored, key=lambda n: (scored[n], -list(scored).index(n))) if scored else None
    beats = chosen is not None and scored[chosen] > real_miou
    return {"split": "val", "real": real_miou, "candidates": {n: r.get("miou") for n, r in candidates.items()},
            "skipped": {n: r["skipped"] for n, r in candidates.items() if r.get("skipped")},
            "chosen": chosen, "selected": chosen if beats else "real", "synthetic_helps": beats,
            # how each used the synthetic set: pairs, share of the samples drawn (two-phase: of the steps)
            "recipes": {n: {k: r.get(k) for k in ("mix", "pairs", "synthetic_ratio", "synthetic_phase")}
                        for n, r in candidates.items() if r.get("miou") is not None}}


def test_stage(cfg: PipelineConfig, data: DataConfig, runner: StageRunner, segmenters: dict[str, str],
               progress: bool) -> dict:
    """``{name: mIoU}`` of each segmenter folder on the held-out ``cfg.test_split``."""
    def make(folder: Path, resume: bool) -> dict:
        scores = {}
        for name, export in segmenters.items():
            cm, _ = evaluate_segmenter(export, data, split=cfg.test_split, progress=progress)
            scores[name] = cm.miou()
            log.info("%s segmenter on the held-out %s split: mIoU %.2f", name, cfg.test_split, scores[name])
        return {"split": cfg.test_split, "miou": scores}

    return runner.run(TEST_STAGE, {"split": cfg.test_split, "data": data.record(), "segmenters": segmenters}, make)
