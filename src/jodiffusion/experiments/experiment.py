"""`jodiffusion pipeline`: every stage of the paper on one dataset, resumable stage by stage.

    captions -> train-vae -> [train-codec] -> train-seg on real -> train (joint; its learning curves score image-mask
    agreement with the real-data segmenter) -> generate (x1, and x4 when asked)
    -> eval-joint (prompt adherence, the conditioning probe, image-mask agreement)
    -> train-seg on synthetic / synthetic x4 -> real+synthetic: the candidates (filter: the quality filter
    on the generated set; seg-real+synthetic[-<candidate>]), the best on val chosen (segmenters.py)
    -> seg-test (the held-out split, when there is one) -> dataset-figures -> model-figures
    -> report (which only draws)

Each stage is the library call behind its own command, configured by that command's preset and
overrides (``PipelineConfig``). The config is resolved once, before any stage runs, into every stage's
own config (``plan.plan_stages``), and each stage is handed its own. A stage runs in
``<output_dir>/<stage>``; a rerun skips complete stages and resumes the interrupted one
(``stages.StageRunner``). The segmenters of every experiment share
one model and schedule, so their mIoUs compare the training data alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from jodiffusion.data.captions import caption_dataset, read_caption_records, write_captions
from jodiffusion.data.config import DataConfig
from jodiffusion.data.layout import CAPTIONS_FILE, write_classes, write_pair
from jodiffusion.data.registry import build_dataset
from jodiffusion.data.transforms import FitCounter, describe_fit, fit_counts, resize_pair
from jodiffusion.errors import ConfigError
from jodiffusion.experiments.config import PipelineConfig
from jodiffusion.experiments.generation_stages import dataset_figures, evaluate_joint, generate
from jodiffusion.experiments.model_figures import MODEL_FIGURES_DIR, make_model_figures
from jodiffusion.experiments.plan import (
    CAPTIONS_DIR,
    CODEC_DIR,
    FIGURES_DIR,
    RESIZED_DATA_DIR,
    SYNTHETIC_STAGES,
    CaptionsPlan,
    PipelinePlan,
    ResizePlan,
    plan_stages,
)
from jodiffusion.experiments.report_stage import REPORT_DIR, draw_pipeline_report, write_pipeline_report
from jodiffusion.experiments.results import (
    DatasetFigures,
    GeneratedSet,
    JointStage,
    ModelFigures,
    ResizedData,
    TemplateCaptions,
)
from jodiffusion.experiments.segmenters import choose, segment, test_stage, train_candidates
from jodiffusion.experiments.stages import StageRunner, check_planned, from_record, to_record, train_args
from jodiffusion.training.codec import CodecResult, train_codec
from jodiffusion.training.config import CodecRunConfig, JointRunConfig
from jodiffusion.training.joint import train_joint
from jodiffusion.training.segmenter import SegmenterResult
from jodiffusion.training.vae import VAEResult, train_vae
from jodiffusion.utils.progress import progress_bar

log = logging.getLogger("jodiffusion")

SEG_METRIC_KEYS = {"real": "seg_miou_real", "synthetic": "seg_miou_synthetic",
                   "synthetic_x4": "seg_miou_synthetic_x4", "real+synthetic": "seg_miou_real_synthetic"}


def run_pipeline(cfg: PipelineConfig, progress: bool = True, runner: StageRunner | None = None) -> dict:
    """Run (or finish) every stage; returns the metrics (also in ``<output_dir>/report/metrics.json`` when
    ``cfg.report``)."""
    plan = plan_stages(cfg, cfg.output_dir)
    return run_plan(plan, runner or StageRunner(plan.root), progress)


def run_plan(plan: PipelinePlan, runner: StageRunner, progress: bool = True) -> dict:
    """Run (or finish) the stages of ``plan``, in order; returns the metrics."""
    data, captions = plan.data, plan.captions
    fit = None
    if plan.resize is not None:
        fit = runner.run(RESIZED_DATA_DIR, plan.settings[RESIZED_DATA_DIR], _resize(plan.resize, plan.data, progress),
                         ResizedData).fit
    if plan.template_captions is not None:
        made = runner.run(CAPTIONS_DIR, plan.settings[CAPTIONS_DIR], _template_captions(plan.template_captions,
                                                                                       progress), TemplateCaptions)
        check_planned(made.captions, plan.template_captions.path, CAPTIONS_DIR)

    vae = runner.run("vae", plan.settings["vae"], lambda f, r: train_vae(plan.vae, progress=progress,
                                                                          **train_args(f, r)), VAEResult)
    check_planned(vae.export, plan.joint.vae, "vae")
    codec = None
    if plan.codec is not None:
        codec = runner.run(CODEC_DIR, plan.settings[CODEC_DIR], _codec(plan.codec, vae, plan.settings[CODEC_DIR],
                                                                       progress), CodecResult)
        check_planned(codec.export, plan.joint.codec.path, CODEC_DIR)

    # -- the real-data segmenter: the baseline, and the judge of the joint model's learning curves ----------
    seg = {"real": runner.run("seg-real", plan.settings["seg-real"], segment(plan.segmenters["seg-real"], progress),
                              SegmenterResult)}
    check_planned(seg["real"].export, plan.joint.probe_segmenter, "seg-real")

    # -- joint diffusion model (it fits the pairs to its size itself unless the data were resized) ------------
    joint = runner.run("joint", plan.stage_settings("joint", vae=to_record(vae),
                                                    **({"codec": to_record(codec)} if codec else {})),
                       _joint(plan.joint, data, count_fit=fit is None, progress=progress), JointStage)
    fit = fit or joint.fit

    # -- synthetic datasets, their scores and segmenters -------------------------------------------------
    synthetic = {experiment: runner.run(stage, plan.stage_settings(stage, joint=to_record(joint)),
                                        lambda f, r, g=plan.generate[stage]: generate(joint.export, g, progress),
                                        GeneratedSet)
                 for experiment, stage in SYNTHETIC_STAGES.items() if stage in plan.generate}
    quality = runner.run("eval-joint", plan.stage_settings("eval-joint", joint=to_record(joint)),
                         lambda f, r: evaluate_joint(plan.eval_joint, joint.export, seg["real"].export, progress))
    selection = filtered = None
    for experiment in plan.experiments:
        if experiment == "real+synthetic":  # the best of the candidates on val (experiments/segmenters.py)
            candidates, filtered = train_candidates(runner, plan.candidates, plan.settings, plan.filter,
                                                    synthetic["synthetic"], plan.real_pairs, plan.synthetic_ratio,
                                                    progress)
            selection = choose(seg["real"].miou, candidates)
            selection["results"] = candidates
            if selection["chosen"] is not None:
                seg[experiment] = from_record(SegmenterResult, candidates[selection["chosen"]])
        elif experiment != "real":
            stage = f"seg-{experiment}"
            seg[experiment] = runner.run(stage, plan.settings[stage], segment(plan.segmenters[stage], progress),
                                         SegmenterResult)
    held_out = None
    if plan.test_split:  # scored after the choice, which it never sees
        picks = {"real": str(seg["real"].export)}
        if selection and selection["chosen"] is not None:
            picks[selection["chosen"]] = str(seg["real+synthetic"].export)
        held_out = test_stage(runner, data, plan.test_split, plan.settings["seg-test"], picks, progress)
    figures = runner.run(FIGURES_DIR, plan.stage_settings(FIGURES_DIR, synthetic=to_record(synthetic["synthetic"])),
                         lambda f, r: dataset_figures(data, captions, synthetic["synthetic"]), DatasetFigures)
    samples = runner.run(MODEL_FIGURES_DIR, plan.stage_settings(
        MODEL_FIGURES_DIR, joint=to_record(joint), synthetic=to_record(synthetic["synthetic"]),
        **({"codec": to_record(codec)} if codec else {})),
        lambda f, r: make_model_figures(joint.export, plan.generate["generate"], synthetic["synthetic"].out,
                                        codec.export if codec else None, data, f, progress), ModelFigures)

    metrics = {
        "data_fit": fit,
        "vae_reconstruction_miou": vae.miou, "vae_parameters": vae.parameters,
        **_codec_metrics(codec),
        "prompt_precision": quality["prompt_precision"], "prompt_recall": quality["prompt_recall"],
        "agreement_miou": quality.get("agreement_miou"), "not_applicable": quality.get("not_applicable", {}),
        "probe": quality.get("probe"),
        "joint_samples_per_second": joint.samples_per_second,
        "pairs": synthetic["synthetic"].pairs, "pairs_per_second": synthetic["synthetic"].pairs_per_second,
        **{SEG_METRIC_KEYS[e]: seg[e].miou for e in seg},
        "seg_per_class": {e: seg[e].per_class for e in seg},
        "eval_joint": quality,
        **_selection_metrics(selection, filtered, held_out),
        "probe_real": figures.probe_real,
        "class_pixel_frequency": figures.class_pixel_frequency,
    }
    if plan.report:  # drawn from the results above; its time is kept beside the stages'
        drawn = runner.timed(REPORT_DIR, lambda: draw_pipeline_report(plan.root / REPORT_DIR, data, joint,
                                                                       synthetic["synthetic"], figures, samples,
                                                                       metrics))
    metrics = {**metrics, "stage_seconds": dict(runner.seconds), "skipped_stages": list(runner.skipped),
               "total_seconds": round(sum(runner.seconds.values()), 2)}
    if plan.report:
        write_pipeline_report(plan.root / REPORT_DIR, metrics, *drawn)
    return metrics


def _selection_metrics(selection: dict | None, filtered: dict | None, held_out: dict | None) -> dict:
    """Every real+synthetic candidate's val figure, the choice, the filter's counts and the held-out scores."""
    out = {}
    if selection is not None:
        out["seg_real_synthetic_candidate"] = selection["chosen"]
        out["seg_selection"] = {k: v for k, v in selection.items() if k != "results"}
        if selection["chosen"] is None:
            out["seg_miou_real_synthetic"] = None
    if filtered is not None:
        out["filter"] = {k: filtered[k] for k in ("seen", "kept", "dropped", "dropped_total", "thresholds")}
    if held_out is not None:
        scores = held_out["miou"]
        out["test_split"] = held_out["split"]
        out["test_miou_real"] = scores["real"]
        chosen = selection["chosen"] if selection else None
        out["test_miou_real_synthetic"] = scores.get(chosen) if chosen else None
    return out


# --- stages -------------------------------------------------------------------------------------------

def _codec(ccfg: CodecRunConfig, vae: VAEResult, settings: dict, progress: bool):
    """The learned image codec, trained on the real train images after the annotation VAE. Its grid must be
    the VAE's: that is checked before minutes of training, not after."""
    def make(folder: Path, resume: bool) -> CodecResult:
        vae_downsample = json.loads((vae.export / "config.json").read_text())["downsample"]
        if ccfg.model.downsample != vae_downsample:
            raise ConfigError(f"the codec stage (codec.preset={settings['spec']['preset']}) downsamples by "
                              f"{ccfg.model.downsample} but the annotation VAE at {vae.export} by {vae_downsample}:"
                              " both latents must share one grid; give the codec "
                              f"{vae_downsample.bit_length()} blocks (model.block_out_channels) or retrain "
                              f"the VAE with model.downsample={ccfg.model.downsample}")
        return train_codec(ccfg, progress=progress, **train_args(folder, resume))

    return make


def _joint(jcfg: JointRunConfig, data: DataConfig, count_fit: bool, progress: bool):
    """The joint model; ``count_fit``: also count what fitting the real train pairs to its size changed."""
    def make(folder: Path, resume: bool) -> JointStage:
        trained = train_joint(jcfg, progress=progress, **train_args(folder, resume))
        counts = {data.train_split: fit_counts(build_dataset(data, data.train_split), jcfg.data.size,
                                               jcfg.data.resize)} if count_fit else None
        return JointStage(trained.export, trained.samples_per_second, counts)

    return make


def _codec_metrics(codec: CodecResult | None) -> dict:
    if codec is None:
        return {}
    return {"codec_reconstruction_mae": codec.mae, "codec_reconstruction_psnr": codec.psnr,
            "codec_parameters": codec.parameters, "codec_export": str(codec.export)}


def _resize(resize: ResizePlan, data: DataConfig, progress: bool):
    """The real splits at ``data.size`` into ``data.root``, as a folder dataset (the captions file copied
    beside them), each pair's aspect ratio kept as ``data.resize`` says; the result records what fitting
    changed per split."""
    size, mode = data.size, data.resize

    def make(folder: Path, resume: bool) -> ResizedData:
        splits = {s: build_dataset(resize.source, s) for s in resize.splits}
        write_classes(folder, splits[resize.source.train_split].classes)
        fit = {}
        for split, ds in splits.items():
            counter = FitCounter(size, mode)
            ignore = ds.classes.ignore_index
            for i in progress_bar(range(len(ds)), desc=f"fit {split} to {size[0]}x{size[1]} ({mode})",
                                  disable=not progress):
                image, mask = ds.load_image(i), ds.load_mask(i)
                counter.add(ds.stem(i), *mask.shape[:2])
                image, mask = resize_pair(image, mask, size, mode, ignore)
                write_pair(folder, split, ds.stem(i), image, mask, ds.classes)
            fit[split] = counter.to_dict()
            log.info("%s: %s", split, describe_fit(fit[split]))
        if resize.captions is not None:
            write_captions(folder / CAPTIONS_FILE, read_caption_records(resize.captions))
        check_planned(folder, data.root, RESIZED_DATA_DIR)
        return ResizedData(folder, fit)

    return make


def _template_captions(captions: CaptionsPlan, progress: bool):
    """Captions from the masks for a dataset without its own (CamVid, Cityscapes, most folders): the joint
    model is conditioned on them and generation draws its prompts from them."""
    def make(folder: Path, resume: bool) -> TemplateCaptions:
        path = folder / CAPTIONS_FILE
        real_train = build_dataset(captions.source, captions.source.train_split)
        caption_dataset(real_train, path, method="template", progress=progress, overwrite=True,
                        split=captions.source.train_split, min_fraction=captions.min_fraction)
        return TemplateCaptions(path)

    return make
