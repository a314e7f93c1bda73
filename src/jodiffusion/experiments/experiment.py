"""`jodiffusion pipeline`: every stage of the paper on one dataset, resumable stage by stage.

    captions -> train-vae -> [train-codec] -> train-seg on real -> train (joint; its learning curves score image-mask
    agreement with the real-data segmenter) -> generate (x1, and x4 when asked)
    -> eval-joint (prompt adherence, the conditioning probe, image-mask agreement)
    -> train-seg on synthetic / synthetic x4 -> real+synthetic: the candidates (filter: the quality filter
    on the generated set; seg-real+synthetic[-<candidate>]), the best on val chosen (segmenters.py)
    -> seg-test (the held-out split, when there is one) -> report

Each stage is the library call behind its own command, configured by that command's preset and
overrides (``PipelineConfig``), and runs in ``<output_dir>/<stage>``; a rerun skips complete stages
and resumes the interrupted one (``stages.StageRunner``). The segmenters of every experiment share
one model and schedule, so their mIoUs compare the training data alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from jodiffusion.data.captions import caption_dataset, captions_path, read_caption_records, write_captions
from jodiffusion.data.config import DataConfig
from jodiffusion.data.layout import CAPTIONS_FILE, write_classes, write_pair
from jodiffusion.data.registry import build_dataset
from jodiffusion.data.transforms import FitCounter, describe_fit, fit_counts, resize_pair
from jodiffusion.errors import ConfigError
from jodiffusion.experiments.config import PipelineConfig
from jodiffusion.experiments.generation_stages import (
    dataset_figures,
    dataset_figures_settings,
    evaluate_joint,
    evaluate_joint_settings,
    generate,
    generate_settings,
    generation_config,
)
from jodiffusion.experiments.report_stage import REPORT_DIR, draw_pipeline_report, write_pipeline_report
from jodiffusion.experiments.results import DatasetFigures, GeneratedSet, JointStage, ResizedData, TemplateCaptions
from jodiffusion.experiments.segmenters import choose, seg_settings, segment, test_stage, train_candidates
from jodiffusion.experiments.stages import StageRunner, from_record, stage_config, to_record, train_args
from jodiffusion.training.codec import CodecResult, train_codec
from jodiffusion.training.config import CodecRunConfig, JointRunConfig, VAERunConfig
from jodiffusion.training.joint import train_joint
from jodiffusion.training.segmenter import SegmenterResult
from jodiffusion.training.vae import VAEResult, train_vae
from jodiffusion.utils.progress import progress_bar

log = logging.getLogger("jodiffusion")

SEG_METRIC_KEYS = {"real": "seg_miou_real", "synthetic": "seg_miou_synthetic",
                   "synthetic_x4": "seg_miou_synthetic_x4", "real+synthetic": "seg_miou_real_synthetic"}
FIGURES_DIR = "dataset-figures"


def run_pipeline(cfg: PipelineConfig, progress: bool = True, runner: StageRunner | None = None) -> dict:
    """Run (or finish) every stage; returns the metrics (also in ``<output_dir>/report/metrics.json`` when
    ``cfg.report``)."""
    root = Path(cfg.output_dir)
    runner = runner or StageRunner(root)
    fit = None
    # The dataset's own captions file, looked up here once; the stages are handed the path (None: the
    # dataset's built-in captions, or template captions written by the captions stage).
    captions = captions_path(cfg.data.captions, cfg.data.root)
    if cfg.resize_data:
        resized, fit, captions = _resized_data_stage(cfg, runner, captions, progress)
        cfg = dataclasses.replace(cfg, data=resized)
    real_train = build_dataset(cfg.data, cfg.data.train_split)
    if cfg.test_split:  # a missing held-out split fails now, not after an hour of training
        build_dataset(cfg.data, cfg.test_split)
    data, captions = _captions_stage(cfg, runner, real_train, captions, progress)

    # -- annotation VAE -----------------------------------------------------------------------------
    def vae_stage(folder: Path, resume: bool) -> VAEResult:
        vcfg = stage_config(VAERunConfig, "vae", cfg.vae, data=data, output_dir=str(folder))
        return train_vae(vcfg, progress=progress, **train_args(folder, resume))

    vae = runner.run("vae", {"data": data.record(), "spec": dataclasses.asdict(cfg.vae)}, vae_stage, VAEResult)
    codec = _codec_stage(cfg, runner, data, vae, progress)

    # -- the real-data segmenter: the baseline, and the judge of the joint model's learning curves ----------
    seg = {"real": runner.run("seg-real", seg_settings(cfg, data, "real", None),
                              lambda f, r: segment(cfg, data, "real", None, f, r, progress), SegmenterResult)}

    # -- joint diffusion model ------------------------------------------------------------------------
    def joint_stage(folder: Path, resume: bool) -> JointStage:
        jcfg = stage_config(JointRunConfig, "joint", cfg.joint, data=data, vae=str(vae.export),
                             probe_segmenter=str(seg["real"].export), output_dir=str(folder), **_joint_codec(codec))
        trained = train_joint(jcfg, progress=progress, **train_args(folder, resume))
        # the joint stage fits the pairs to its size itself (latent cache) unless the data were resized: count that
        counts = None if fit is not None else {
            data.train_split: fit_counts(real_train, jcfg.data.size, jcfg.data.resize)}
        return JointStage(trained.export, trained.samples_per_second, counts)

    joint = runner.run("joint", {"vae": to_record(vae), "spec": dataclasses.asdict(cfg.joint),
                                 "probe_segmenter": str(seg["real"].export),
                                 **({"codec": to_record(codec)} if codec else {})},
                       joint_stage, JointStage)
    fit = fit or joint.fit

    # -- synthetic datasets -----------------------------------------------------------------------------
    num = cfg.synthetic_pairs or len(real_train)

    def generated(stage: str, pairs: int) -> GeneratedSet:
        g = generation_config(cfg, pairs, runner.folder(stage), captions, data.train_split)
        return runner.run(stage, generate_settings(cfg, joint, data, g), lambda f, r: generate(joint, g, progress),
                          GeneratedSet)

    synthetic = {"synthetic": generated("generate", num)}
    if "synthetic_x4" in cfg.experiments:
        synthetic["synthetic_x4"] = generated("generate_x4", 4 * num)

    # -- scores and the segmenters of the generated data --------------------------------------------------
    quality = runner.run("eval-joint", evaluate_joint_settings(cfg, data, captions, joint, seg["real"].export),
                         lambda f, r: evaluate_joint(cfg, data, captions, joint, seg["real"].export, f, progress))
    selection = filtered = None
    for experiment in cfg.experiments:
        if experiment == "real":
            continue
        if experiment == "real+synthetic":  # the best of the candidates on val (experiments/segmenters.py)
            candidates, filtered = train_candidates(cfg, data, runner, synthetic["synthetic"], seg["real"],
                                                    len(real_train), progress)
            selection = choose(seg["real"].miou, candidates)
            selection["results"] = candidates
            if selection["chosen"] is not None:
                seg[experiment] = from_record(SegmenterResult, candidates[selection["chosen"]])
            continue
        folder = str(synthetic["synthetic_x4" if experiment == "synthetic_x4" else "synthetic"].out)
        seg[experiment] = runner.run(f"seg-{experiment}", seg_settings(cfg, data, "synthetic", folder),
                                     lambda f, r, s=folder: segment(cfg, data, "synthetic", s, f, r, progress),
                                     SegmenterResult)
    held_out = None
    if cfg.test_split:  # scored after the choice, which it never sees
        picks = {"real": str(seg["real"].export)}
        if selection and selection["chosen"] is not None:
            picks[selection["chosen"]] = str(seg["real+synthetic"].export)
        held_out = test_stage(cfg, data, runner, picks, progress)
    figures = runner.run(FIGURES_DIR, dataset_figures_settings(data, captions, synthetic["synthetic"]),
                         lambda f, r: dataset_figures(data, captions, synthetic["synthetic"]), DatasetFigures)

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
    if cfg.report:  # drawn from the results above; its time is kept beside the stages'
        g = generation_config(cfg, num, synthetic["synthetic"].out, captions, data.train_split)
        drawn = runner.timed(REPORT_DIR, lambda: draw_pipeline_report(root / REPORT_DIR, data, g, joint,
                                                                       synthetic["synthetic"], figures, metrics))
    metrics = {**metrics, "stage_seconds": dict(runner.seconds), "skipped_stages": list(runner.skipped),
               "total_seconds": round(sum(runner.seconds.values()), 2)}
    if cfg.report:
        write_pipeline_report(root / REPORT_DIR, metrics, *drawn)
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

CODEC_DIR = "codec"


def _codec_stage(cfg: PipelineConfig, runner: StageRunner, data: DataConfig, vae: VAEResult,
                 progress: bool) -> CodecResult | None:
    """The learned image codec (``cfg.codec``), trained on the real train images after the annotation
    VAE; None when the pipeline keeps the joint preset's own codec. Its grid must be the VAE's: that is
    checked before minutes of training, not after."""
    if cfg.codec is None:
        return None

    def make(folder: Path, resume: bool) -> CodecResult:
        ccfg = stage_config(CodecRunConfig, "codec", cfg.codec, data=data, output_dir=str(folder))
        vae_downsample = json.loads((vae.export / "config.json").read_text())["downsample"]
        if ccfg.model.downsample != vae_downsample:
            raise ConfigError(f"the codec stage (codec.preset={cfg.codec.preset}) downsamples by "
                              f"{ccfg.model.downsample} but the annotation VAE at {vae.export} by {vae_downsample}:"
                              " both latents must share one grid; give the codec "
                              f"{vae_downsample.bit_length()} blocks (model.block_out_channels) or retrain "
                              f"the VAE with model.downsample={ccfg.model.downsample}")
        return train_codec(ccfg, progress=progress, **train_args(folder, resume))

    return runner.run(CODEC_DIR, {"data": data.record(), "spec": dataclasses.asdict(cfg.codec)}, make, CodecResult)


def _joint_codec(codec: CodecResult | None) -> dict:
    """What the joint stage is told about the image codec: the learned one's export, else nothing."""
    return {"codec": {"kind": "sd-vae", "path": str(codec.export)}} if codec else {}


def _codec_metrics(codec: CodecResult | None) -> dict:
    if codec is None:
        return {}
    return {"codec_reconstruction_mae": codec.mae, "codec_reconstruction_psnr": codec.psnr,
            "codec_parameters": codec.parameters, "codec_export": str(codec.export)}


RESIZED_DATA_DIR = "data"


def _resized_data_stage(cfg: PipelineConfig, runner: StageRunner, captions: Path | None,
                        progress: bool) -> tuple[DataConfig, dict, Path | None]:
    """The real train and val splits at ``cfg.data.size``, as a folder dataset (its captions file copied
    beside them), with each pair's aspect ratio kept as ``data.resize`` says; returns it, what fitting
    changed per split (also in the stage record) and its captions file."""
    size, mode = cfg.data.size, cfg.data.resize
    captions = captions if captions is not None and captions.is_file() else None

    def make(folder: Path, resume: bool) -> ResizedData:
        names = (cfg.data.train_split, cfg.data.val_split, *([cfg.test_split] if cfg.test_split else []))
        splits = {s: build_dataset(cfg.data, s) for s in names}
        write_classes(folder, splits[cfg.data.train_split].classes)
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
        if captions is not None:
            write_captions(folder / CAPTIONS_FILE, read_caption_records(captions))
        return ResizedData(folder, fit)

    # the held-out split is recorded only when there is one, so a data stage written before keeps its record
    held_out = {"test_split": cfg.test_split} if cfg.test_split else {}
    done = runner.run(RESIZED_DATA_DIR, {"data": cfg.data.record(), **held_out}, make, ResizedData)
    data = DataConfig(name="folder", root=str(done.root), train_split=cfg.data.train_split,
                      val_split=cfg.data.val_split, resolution=size[0], width=cfg.data.width, resize=mode)
    return data, done.fit, done.root / CAPTIONS_FILE if captions is not None else None


def _captions_stage(cfg: PipelineConfig, runner: StageRunner, real_train, captions: Path | None,
                    progress: bool) -> tuple[DataConfig, Path | None]:
    """Datasets without captions (CamVid, Cityscapes, most folders) get template captions from their
    masks; the joint model is conditioned on them and generation draws its prompts from them. Returns the
    data config the stages train on and the captions file (None: the dataset's built-in captions)."""
    if captions is not None or callable(getattr(real_train, "captions", None)):
        return cfg.data, captions

    def make(folder: Path, resume: bool) -> TemplateCaptions:
        path = folder / CAPTIONS_FILE
        caption_dataset(real_train, path, method="template", progress=progress, overwrite=True,
                        split=cfg.data.train_split, min_fraction=cfg.caption_min_fraction)
        return TemplateCaptions(path)

    done = runner.run("captions", {"data": cfg.data.record(), "min_fraction": cfg.caption_min_fraction},
                      make, TemplateCaptions)
    return dataclasses.replace(cfg.data, captions=str(done.captions)), done.captions
