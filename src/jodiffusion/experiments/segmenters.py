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
from jodiffusion.experiments.config import SYNTHETIC_SPLIT
from jodiffusion.experiments.results import GeneratedSet
from jodiffusion.experiments.stages import StageRunner, check_planned, to_record, train_args
from jodiffusion.generation.filter_folder import filter_folder
from jodiffusion.generation.filters import FilterConfig
from jodiffusion.training.config import SegRunConfig
from jodiffusion.training.segmenter import SegmenterResult, train_segmenter

log = logging.getLogger("jodiffusion")

FILTER_STAGE = "filter"
TEST_STAGE = "seg-test"
MIX_STAGE = "seg-real+synthetic"  # the "mix" candidate: the folder the single real+synthetic run always had


def candidate_stage(name: str) -> str:
    """The stage folder of a real+synthetic candidate."""
    return MIX_STAGE if name == "mix" else f"{MIX_STAGE}-{name}"


def seg_settings(data_record: dict, spec: dict, mix: str, synthetic: str | None, phase: float | None = None) -> dict:
    """What a segmenter stage's record compares (a mixed candidate adds its ``synthetic_ratio`` when it runs)."""
    settings = {"data": data_record, "mix": mix, "synthetic": synthetic, "spec": spec}
    if phase is not None:
        settings["synthetic_phase"] = phase
    return settings


def segment(scfg: SegRunConfig, progress: bool):
    """The stage function training ``scfg`` (its output_dir is the stage folder)."""
    return functools.partial(_train, scfg, progress)


def _train(scfg: SegRunConfig, progress: bool, folder: Path, resume: bool) -> SegmenterResult:
    return train_segmenter(scfg, progress=progress, **train_args(folder, resume))


def with_ratio(scfg: SegRunConfig, ratio: float) -> SegRunConfig:
    """``scfg`` drawing ``ratio`` of every batch from the synthetic set, at least one sample of each source."""
    batch = scfg.train.batch_size
    return dataclasses.replace(scfg, synthetic_ratio=min(max(ratio, 1 / batch), 1 - 1 / batch))


def filter_stage(runner: StageRunner, fcfg: FilterConfig, synthetic: GeneratedSet, out: str, settings: dict,
                 progress: bool) -> dict:
    """The generated set's pairs that pass ``fcfg`` (its consistency judge: the real-only segmenter), in ``out``."""
    def make(folder: Path, resume: bool) -> dict:
        return filter_folder(synthetic.out, folder, fcfg, split=SYNTHETIC_SPLIT, progress=progress)

    filtered = runner.run(FILTER_STAGE, settings, make)
    check_planned(filtered["out"], out, FILTER_STAGE)
    return filtered


def train_candidates(runner: StageRunner, candidates: dict[str, SegRunConfig], settings: dict[str, dict],
                     fcfg: FilterConfig | None, synthetic: GeneratedSet, num_real: int,
                     synthetic_ratio: float | None, progress: bool) -> tuple[dict[str, dict], dict | None]:
    """Train every candidate (skipping complete ones); returns ``{name: result}`` (``miou`` None and
    ``skipped`` saying why where a candidate had no pair to train on) and the filter's summary (None when
    no candidate filters). A mixed candidate's share of synthetic samples is known only now, from the
    pairs its source holds: ``synthetic_ratio``, else the synthetic set's share of the union of both sets."""
    filtered = None
    if fcfg is not None:
        filtered = filter_stage(runner, fcfg, synthetic, _filtered_source(candidates), settings[FILTER_STAGE],
                                progress)
    results = {}
    for name, scfg in candidates.items():
        source = filtered if name.endswith("+filter") else to_record(synthetic)
        if not source["pairs"]:
            results[name] = {"miou": None, "skipped": "no generated pair passed the quality filter"}
            log.warning("candidate %s skipped: no generated pair passed the quality filter", name)
            continue
        check_planned(source["out"], scfg.synthetic, candidate_stage(name))
        stage_settings = settings[candidate_stage(name)]
        phase = scfg.synthetic_phase if scfg.mix == "synthetic-then-real" else None
        if scfg.mix == "real+synthetic":
            ratio = synthetic_ratio or source["pairs"] / (num_real + source["pairs"])
            scfg, stage_settings = with_ratio(scfg, ratio), {**stage_settings, "synthetic_ratio": ratio}
        trained = runner.run(candidate_stage(name), stage_settings, segment(scfg, progress), SegmenterResult)
        results[name] = {**to_record(trained), "pairs": source["pairs"], "mix": scfg.mix, "synthetic_phase": phase}
    return results, filtered


def _filtered_source(candidates: dict[str, SegRunConfig]) -> str:
    return next(scfg.synthetic for name, scfg in candidates.items() if name.endswith("+filter"))


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


def test_stage(runner: StageRunner, data: DataConfig, split: str, settings: dict, segmenters: dict[str, str],
               progress: bool) -> dict:
    """``{name: mIoU}`` of each segmenter folder on the held-out ``split``."""
    def make(folder: Path, resume: bool) -> dict:
        scores = {}
        for name, export in segmenters.items():
            cm, _ = evaluate_segmenter(export, data, split=split, progress=progress)
            scores[name] = cm.miou()
            log.info("%s segmenter on the held-out %s split: mIoU %.2f", name, split, scores[name])
        return {"split": split, "miou": scores}

    return runner.run(TEST_STAGE, {**settings, "segmenters": segmenters}, make)
