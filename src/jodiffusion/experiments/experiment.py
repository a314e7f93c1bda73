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
import os
from pathlib import Path

from jodiffusion.data.captions import (
    caption_dataset,
    captions_path,
    read_caption_records,
    read_captions,
    write_captions,
)
from jodiffusion.data.config import DataConfig
from jodiffusion.data.layout import CAPTIONS_FILE, write_classes, write_pair
from jodiffusion.data.registry import build_dataset
from jodiffusion.data.transforms import FitCounter, describe_fit, fit_counts, resize_pair
from jodiffusion.engine.loop import training_rate
from jodiffusion.errors import ConfigError
from jodiffusion.evaluation.joint_quality import evaluate_model
from jodiffusion.experiments.config import SYNTHETIC_SPLIT, PipelineConfig
from jodiffusion.experiments.report_stage import write_pipeline_report
from jodiffusion.experiments.segmenters import choose, seg_settings, segment, test_stage, train_candidates
from jodiffusion.experiments.stages import StageRunner, stage_config, train_args
from jodiffusion.generation.generate import GenerateConfig, generate_dataset
from jodiffusion.generation.prompts import PromptConfig
from jodiffusion.training.codec import train_codec
from jodiffusion.training.config import CodecRunConfig, JointRunConfig, VAERunConfig
from jodiffusion.training.joint import train_joint
from jodiffusion.training.vae import train_vae
from jodiffusion.utils.io import write_json_atomic
from jodiffusion.utils.progress import progress_bar

log = logging.getLogger("jodiffusion")

SEG_METRIC_KEYS = {"real": "seg_miou_real", "synthetic": "seg_miou_synthetic",
                   "synthetic_x4": "seg_miou_synthetic_x4", "real+synthetic": "seg_miou_real_synthetic"}


def run_pipeline(cfg: PipelineConfig, progress: bool = True, runner: StageRunner | None = None) -> dict:
    """Run (or finish) every stage; returns the metrics (also in ``<output_dir>/report/metrics.json``)."""
    root = Path(cfg.output_dir)
    runner = runner or StageRunner(root)
    fit = None
    if cfg.resize_data:
        resized, fit = _resized_data_stage(cfg, runner, progress)
        cfg = dataclasses.replace(cfg, data=resized)
    real_train = build_dataset(cfg.data, cfg.data.train_split)
    if cfg.test_split:  # a missing held-out split fails now, not after an hour of training
        build_dataset(cfg.data, cfg.test_split)
    data = _captions_stage(cfg, runner, real_train, progress)

    # -- annotation VAE -----------------------------------------------------------------------------
    def vae_stage(folder: Path, resume: bool) -> dict:
        vcfg = stage_config(VAERunConfig, "vae", cfg.vae, data=data, output_dir=str(folder))
        export = train_vae(vcfg, progress=progress, **train_args(folder, resume))
        evaluation = json.loads((folder / "eval.json").read_text())
        return {"export": str(export), "miou": evaluation["miou"], "parameters": evaluation.get("parameters")}

    vae = runner.run("vae", {"data": data.record(), "spec": dataclasses.asdict(cfg.vae)}, vae_stage)
    codec = _codec_stage(cfg, runner, data, vae, progress)

    # -- the real-data segmenter: the baseline, and the judge of the joint model's learning curves ----------
    seg = {"real": runner.run("seg-real", seg_settings(cfg, data, "real", None),
                              lambda f, r: segment(cfg, data, "real", None, f, r, progress))}

    # -- joint diffusion model ------------------------------------------------------------------------
    def joint_stage(folder: Path, resume: bool) -> dict:
        jcfg = stage_config(JointRunConfig, "joint", cfg.joint, data=data, vae=vae["export"],
                             probe_segmenter=seg["real"]["export"], output_dir=str(folder), **_joint_codec(codec))
        result = {"export": str(train_joint(jcfg, progress=progress, **train_args(folder, resume)))}
        world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
        result["samples_per_second"] = training_rate(folder, jcfg.train.batch_size * jcfg.train.grad_accum * world)
        if fit is None:  # the joint stage fits the pairs to its size itself (latent cache): count that
            result["fit"] = {data.train_split: fit_counts(real_train, jcfg.data.size, jcfg.data.resize)}
        return result

    joint = runner.run("joint", {"vae": vae, "spec": dataclasses.asdict(cfg.joint),
                                 "probe_segmenter": seg["real"]["export"], **({"codec": codec} if codec else {})},
                       joint_stage)
    fit = fit or joint.get("fit")

    # -- synthetic datasets -----------------------------------------------------------------------------
    num = cfg.generate.num or len(real_train)
    synthetic = {"synthetic": runner.run("generate", _gen_settings(cfg, joint, num, data),
                                         lambda f, r: _generate(cfg, joint, data, f, num, progress))}
    if "synthetic_x4" in cfg.experiments:
        synthetic["synthetic_x4"] = runner.run("generate_x4", _gen_settings(cfg, joint, 4 * num, data),
                                               lambda f, r: _generate(cfg, joint, data, f, 4 * num, progress))

    # -- scores and the segmenters of the generated data --------------------------------------------------
    quality = runner.run("eval-joint", {"joint": joint, "segmenter": seg["real"]["export"],
                                        "pairs": cfg.eval_pairs, "generate": dataclasses.asdict(cfg.generate)},
                         lambda f, r: _evaluate_joint(cfg, data, joint, seg["real"], f, progress))
    selection = filtered = None
    for experiment in cfg.experiments:
        if experiment == "real":
            continue
        if experiment == "real+synthetic":  # the best of the candidates on val (experiments/segmenters.py)
            candidates, filtered = train_candidates(cfg, data, runner, synthetic["synthetic"], seg["real"],
                                                    len(real_train), progress)
            selection = choose(seg["real"]["miou"], candidates)
            selection["results"] = candidates
            if selection["chosen"] is not None:
                seg[experiment] = candidates[selection["chosen"]]
            continue
        folder = synthetic["synthetic_x4" if experiment == "synthetic_x4" else "synthetic"]["out"]
        seg[experiment] = runner.run(f"seg-{experiment}", seg_settings(cfg, data, "synthetic", folder),
                                     lambda f, r, s=folder: segment(cfg, data, "synthetic", s, f, r, progress))
    held_out = None
    if cfg.test_split:  # scored after the choice, which it never sees
        picks = {"real": seg["real"]["export"]}
        if selection and selection["chosen"] is not None:
            picks[selection["chosen"]] = seg["real+synthetic"]["export"]
        held_out = test_stage(cfg, data, runner, picks, progress)

    metrics = {
        "data_fit": fit,
        "vae_reconstruction_miou": vae["miou"], "vae_parameters": vae.get("parameters"),
        **_codec_metrics(codec),
        "prompt_precision": quality["prompt_precision"], "prompt_recall": quality["prompt_recall"],
        "agreement_miou": quality.get("agreement_miou"), "not_applicable": quality.get("not_applicable", {}),
        "probe": quality.get("probe"),
        "joint_samples_per_second": joint.get("samples_per_second"),
        "pairs": synthetic["synthetic"]["pairs"], "pairs_per_second": synthetic["synthetic"]["pairs_per_second"],
        **{SEG_METRIC_KEYS[e]: seg[e]["miou"] for e in seg},
        "seg_per_class": {e: seg[e]["per_class"] for e in seg},
        "eval_joint": quality,
        **_selection_metrics(selection, filtered, held_out),
    }
    if cfg.report:
        runner.seconds["report"] = 0.0
        metrics = write_pipeline_report(cfg, data, joint, synthetic["synthetic"], metrics, runner, progress)
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


def _codec_stage(cfg: PipelineConfig, runner: StageRunner, data: DataConfig, vae: dict,
                 progress: bool) -> dict | None:
    """The learned image codec (``cfg.codec``), trained on the real train images after the annotation
    VAE; None when the pipeline keeps the joint preset's own codec. Its grid must be the VAE's: that is
    checked before minutes of training, not after."""
    if cfg.codec is None:
        return None

    def make(folder: Path, resume: bool) -> dict:
        ccfg = stage_config(CodecRunConfig, "codec", cfg.codec, data=data, output_dir=str(folder))
        vae_downsample = json.loads((Path(vae["export"]) / "config.json").read_text())["downsample"]
        if ccfg.model.downsample != vae_downsample:
            raise ConfigError(f"the codec stage (codec.preset={cfg.codec.preset}) downsamples by "
                              f"{ccfg.model.downsample} but the annotation VAE at {vae['export']} by {vae_downsample}:"
                              " both latents must share one grid; give the codec "
                              f"{vae_downsample.bit_length()} blocks (model.block_out_channels) or retrain "
                              f"the VAE with model.downsample={ccfg.model.downsample}")
        export = train_codec(ccfg, progress=progress, **train_args(folder, resume))
        evaluation = json.loads((folder / "eval.json").read_text())
        return {"export": str(export), "mae": evaluation["mae"], "psnr": evaluation["psnr"],
                "parameters": evaluation["parameters"]}

    return runner.run(CODEC_DIR, {"data": data.record(), "spec": dataclasses.asdict(cfg.codec)}, make)


def _joint_codec(codec: dict | None) -> dict:
    """What the joint stage is told about the image codec: the learned one's export, else nothing."""
    return {"codec": {"kind": "sd-vae", "path": codec["export"]}} if codec else {}


def _codec_metrics(codec: dict | None) -> dict:
    if codec is None:
        return {}
    return {"codec_reconstruction_mae": codec["mae"], "codec_reconstruction_psnr": codec["psnr"],
            "codec_parameters": codec["parameters"], "codec_export": codec["export"]}


RESIZED_DATA_DIR = "data"


def _resized_data_stage(cfg: PipelineConfig, runner: StageRunner, progress: bool) -> tuple[DataConfig, dict]:
    """The real train and val splits at ``cfg.data.size``, as a folder dataset (captions kept), with
    each pair's aspect ratio kept as ``data.resize`` says; returns it and what fitting changed, per split
    (also in the stage record)."""
    size, mode = cfg.data.size, cfg.data.resize

    def make(folder: Path, resume: bool) -> dict:
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
        source = captions_path(cfg.data.captions, cfg.data.root)
        if source is not None and source.is_file():
            write_captions(folder / CAPTIONS_FILE, read_caption_records(source))
        return {"root": str(folder), "fit": fit}

    # the held-out split is recorded only when there is one, so a data stage written before keeps its record
    held_out = {"test_split": cfg.test_split} if cfg.test_split else {}
    done = runner.run(RESIZED_DATA_DIR, {"data": cfg.data.record(), **held_out}, make)
    data = DataConfig(name="folder", root=done["root"], train_split=cfg.data.train_split,
                      val_split=cfg.data.val_split, resolution=size[0], width=cfg.data.width, resize=mode)
    return data, done.get("fit", {})


def _captions_stage(cfg: PipelineConfig, runner: StageRunner, real_train, progress: bool) -> DataConfig:
    """Datasets without captions (CamVid, Cityscapes, most folders) get template captions from their
    masks; the joint model is conditioned on them and generation draws its prompts from them."""
    has_own = callable(getattr(real_train, "captions", None)) or captions_path(cfg.data.captions, cfg.data.root)
    if has_own:
        return cfg.data

    def make(folder: Path, resume: bool) -> dict:
        path = folder / CAPTIONS_FILE
        caption_dataset(real_train, path, method="template", progress=progress, overwrite=True,
                        split=cfg.data.train_split, min_fraction=cfg.caption_min_fraction)
        return {"captions": str(path)}

    done = runner.run("captions", {"data": cfg.data.record(), "min_fraction": cfg.caption_min_fraction},
                      make)
    return dataclasses.replace(cfg.data, captions=done["captions"])


def _gen_settings(cfg: PipelineConfig, joint: dict, num: int, data: DataConfig) -> dict:
    return {"joint": joint, "num": num, "captions": data.captions, **dataclasses.asdict(cfg.generate)}


def _generate(cfg: PipelineConfig, joint: dict, data: DataConfig, folder: Path, num: int, progress: bool) -> dict:
    g = cfg.generate
    found = captions_path(data.captions, data.root)
    captions = str(found) if found else None  # None: the captions the exported model carries
    gcfg = GenerateConfig(num=num, out=str(folder), seed=g.seed, steps=g.steps, guidance=g.guidance,
                          batch_size=g.batch_size, tau=g.tau, workers=g.workers, split=SYNTHETIC_SPLIT,
                          prompts=PromptConfig(source="captions", captions=captions, split=data.train_split))
    summary = generate_dataset(joint["export"], gcfg, progress=progress)
    return {"out": str(folder), "pairs": summary.get("pairs", num),
            "pairs_per_second": summary.get("pairs_per_second")}


def _evaluate_joint(cfg: PipelineConfig, data: DataConfig, joint: dict, seg_real: dict, folder: Path,
                    progress: bool) -> dict:
    """Prompt adherence and image-mask agreement of fresh pairs drawn from the training captions."""
    source = captions_path(data.captions, data.root) or captions_path(joint["export"])  # the export carries them
    prompts = list(read_captions(source, split=data.train_split).values())
    prompts = [prompts[i % len(prompts)] for i in range(cfg.eval_pairs)]
    g = cfg.generate
    result = evaluate_model(joint["export"], prompts, segmenter_dir=seg_real["export"], steps=g.steps,
                            guidance=g.guidance, batch_size=g.batch_size, seed=g.seed + 1, tau=g.tau,
                            grid_path=folder / "grid.png", progress=progress)
    write_json_atomic(folder / "eval_joint.json", result)
    return result
