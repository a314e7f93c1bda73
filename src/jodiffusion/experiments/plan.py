"""The pipeline's plan: the ``PipelineConfig`` resolved, once and before any stage runs, into each stage's own
config, so that a stage is handed its config and never the pipeline's.

What a stage needs from an earlier one is a folder whose name is known in advance: the resized data
``<output_dir>/data``, template captions ``<output_dir>/captions/captions.jsonl``, the VAE's export
``<output_dir>/vae/annotation_vae``, the codec's ``<output_dir>/codec/image_codec``, the real-only segmenter
``<output_dir>/seg-real/segmenter``, the generated sets ``<output_dir>/generate[_x4]`` and the filtered pairs
``<output_dir>/filter``; the plan names them before they exist and the pipeline checks that each stage
wrote where it was planned. Only what a stage's result decides is left to the pipeline: the records of
earlier results in the later stages' settings, a mixed candidate's share of synthetic samples, the held-out
split's segmenters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from jodiffusion.data.captions import captions_path
from jodiffusion.data.config import DataConfig
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.data.registry import build_dataset
from jodiffusion.experiments.config import SYNTHETIC_SPLIT, PipelineConfig
from jodiffusion.experiments.generation_stages import generation_fields, generation_record
from jodiffusion.experiments.model_figures import MODEL_FIGURES_DIR
from jodiffusion.experiments.segmenters import FILTER_STAGE, TEST_STAGE, candidate_stage, seg_settings
from jodiffusion.experiments.stages import load_stage_configs
from jodiffusion.generation.config import GenerateConfig
from jodiffusion.generation.filters import FilterConfig
from jodiffusion.training.codec import MODEL_DIR as CODEC_EXPORT
from jodiffusion.training.config import CodecRunConfig, JointRunConfig, SegRunConfig, VAERunConfig
from jodiffusion.training.segmenter import MODEL_DIR as SEGMENTER_EXPORT
from jodiffusion.training.vae import MODEL_DIR as VAE_EXPORT

RESIZED_DATA_DIR = "data"
CAPTIONS_DIR = "captions"
CODEC_DIR = "codec"
FIGURES_DIR = "dataset-figures"
SYNTHETIC_STAGES = {"synthetic": "generate", "synthetic_x4": "generate_x4"}  # experiment -> its generate stage


@dataclass(frozen=True)
class ResizePlan:
    """The real splits written at the working size into ``<output_dir>/data`` (``resize_data``)."""
    source: DataConfig          # the dataset as given
    splits: tuple[str, ...]     # train, val and the held-out split when there is one
    captions: Path | None       # the dataset's captions file, copied beside the pairs


@dataclass(frozen=True)
class CaptionsPlan:
    """Template captions from the masks, for a dataset without its own."""
    source: DataConfig          # the data they describe (before its captions are set)
    path: Path
    min_fraction: float


@dataclass(frozen=True)
class PipelinePlan:
    root: Path
    data: DataConfig                          # what every stage reads: resized and/or with its captions set
    captions: Path | None                     # the captions file stages are handed (None: the dataset's own)
    real_pairs: int                           # real training pairs
    resize: ResizePlan | None
    template_captions: CaptionsPlan | None
    vae: VAERunConfig
    codec: CodecRunConfig | None
    segmenters: dict[str, SegRunConfig]       # by stage: seg-real, seg-synthetic[_x4]
    joint: JointRunConfig
    generate: dict[str, GenerateConfig]       # by stage: generate[, generate_x4]
    eval_joint: GenerateConfig                # eval-joint's pairs: the generation settings, into its folder
    filter: FilterConfig | None               # the "+filter" candidates' quality filter
    # real+synthetic's candidates by name (CANDIDATES); a mixed one's synthetic_ratio is set when it runs
    candidates: dict[str, SegRunConfig]
    synthetic_ratio: float | None
    experiments: tuple[str, ...]             # the segmenters' experiments, in the order they run
    test_split: str | None
    report: bool
    # by stage: what its STAGE.json settings hold that is known before any stage runs (the pipeline adds the
    # records of the earlier results a stage depends on)
    settings: dict[str, dict]

    def stage_settings(self, stage: str, **results) -> dict:
        return {**self.settings[stage], **results}


def plan_stages(cfg: PipelineConfig, root: str | Path) -> PipelinePlan:
    """Every stage's config, from ``cfg``, without running anything (the real data is only listed)."""
    root = Path(root)
    source = dataclasses.replace(cfg.data)  # the plan's own copy: nothing done to ``cfg`` later changes it
    # the dataset's own captions file, looked up once (None: built-in captions, or template captions below)
    captions = captions_path(source.captions, source.root)
    real_train = build_dataset(source, source.train_split)
    if cfg.test_split:  # a missing held-out split fails now, not after an hour of training
        build_dataset(source, cfg.test_split)
    data, resize = source, None
    if cfg.resize_data:
        captions = captions if captions is not None and captions.is_file() else None
        resize = ResizePlan(source, (source.train_split, source.val_split, *([cfg.test_split] if cfg.test_split
                                                                                 else [])), captions)
        size = source.size
        data = DataConfig(name="folder", root=str(root / RESIZED_DATA_DIR), train_split=source.train_split,
                          val_split=source.val_split, resolution=size[0], width=source.width, resize=source.resize)
        captions = root / RESIZED_DATA_DIR / CAPTIONS_FILE if captions is not None else None
    template = None
    # only the embedded shapes dataset has built-in captions, and a resized copy is a folder without them
    if captions is None and (resize is not None or not callable(getattr(real_train, "captions", None))):
        template = CaptionsPlan(data, root / CAPTIONS_DIR / CAPTIONS_FILE, cfg.caption_min_fraction)
        captions = template.path
        data = dataclasses.replace(data, captions=str(captions))
    return _stage_configs(cfg, root, data, captions, len(real_train), resize, template)


def _stage_configs(cfg: PipelineConfig, root: Path, data: DataConfig, captions: Path | None, real_pairs: int,
                   resize: ResizePlan | None, template: CaptionsPlan | None) -> PipelinePlan:
    """Every stage's config in one pass through the loader (its preset and overrides, then what ties it to
    the run), and what each stage's record compares."""
    record = data.record()
    judge = str(root / "seg-real" / SEGMENTER_EXPORT)
    requests = {"vae": (VAERunConfig, "vae", cfg.vae, {"data": data, "output_dir": str(root / "vae")})}
    settings: dict[str, dict] = {"vae": {"data": record, "spec": dataclasses.asdict(cfg.vae)}}
    if resize is not None:
        settings[RESIZED_DATA_DIR] = {"data": resize.source.record(),
                                      # recorded only when there is one, so a stage written before keeps its record
                                      **({"test_split": cfg.test_split} if cfg.test_split else {})}
    if template is not None:
        settings[CAPTIONS_DIR] = {"data": template.source.record(), "min_fraction": template.min_fraction}
    codec_fields = {}
    if cfg.codec is not None:
        requests[CODEC_DIR] = (CodecRunConfig, "codec", cfg.codec, {"data": data, "output_dir": str(root / CODEC_DIR)})
        settings[CODEC_DIR] = {"data": record, "spec": dataclasses.asdict(cfg.codec)}
        codec_fields = {"codec": {"kind": "sd-vae", "path": str(root / CODEC_DIR / CODEC_EXPORT)}}
    requests["joint"] = (JointRunConfig, "joint", cfg.joint,
                         {"data": data, "vae": str(root / "vae" / VAE_EXPORT), "probe_segmenter": judge,
                          "output_dir": str(root / "joint"), **codec_fields})
    settings["joint"] = {"spec": dataclasses.asdict(cfg.joint), "probe_segmenter": judge}

    num = cfg.synthetic_pairs or real_pairs
    generated = {"synthetic": num, "synthetic_x4": 4 * num if "synthetic_x4" in cfg.experiments else 0}
    for experiment, stage in SYNTHETIC_STAGES.items():
        if generated[experiment]:
            requests[stage] = (GenerateConfig, "generate", cfg.generate,
                               generation_fields(generated[experiment], root / stage, captions, data.train_split))
    requests["eval-joint"] = (GenerateConfig, "generate", cfg.generate,
                              generation_fields(cfg.eval_pairs, root / "eval-joint", captions, data.train_split))

    seg_spec = dataclasses.asdict(cfg.seg)
    segmenters, candidates = {}, {}

    def segmenter(stage: str, mix: str, synthetic: str | None, phase: float | None = None) -> None:
        settings[stage] = seg_settings(record, seg_spec, mix, synthetic, phase)
        fields = {"data": data, "mix": mix, "synthetic": synthetic, "synthetic_split": SYNTHETIC_SPLIT,
                  "output_dir": str(root / stage), **({"synthetic_phase": phase} if phase is not None else {})}
        requests[stage] = (SegRunConfig, "seg", cfg.seg, fields)

    segmenter("seg-real", "real", None)
    segmenters["seg-real"] = "seg-real"
    for experiment in ("synthetic", "synthetic_x4"):
        if experiment in cfg.experiments:
            segmenter(f"seg-{experiment}", "synthetic", str(root / SYNTHETIC_STAGES[experiment]))
            segmenters[f"seg-{experiment}"] = f"seg-{experiment}"
    fcfg = None
    if "real+synthetic" in cfg.experiments:
        if any(name.endswith("+filter") for name in cfg.candidates):
            fcfg = dataclasses.replace(cfg.filter, consistency_segmenter=judge)
            settings[FILTER_STAGE] = {"source": str(root / "generate"), "filter": dataclasses.asdict(fcfg)}
        for name in cfg.candidates:
            synthetic = str(root / (FILTER_STAGE if name.endswith("+filter") else "generate"))
            if name.startswith("mix"):
                segmenter(candidate_stage(name), "real+synthetic", synthetic)
            else:
                segmenter(candidate_stage(name), "synthetic-then-real", synthetic, cfg.synthetic_phase)
            candidates[name] = candidate_stage(name)
    if cfg.test_split:
        settings[TEST_STAGE] = {"split": cfg.test_split, "data": record}
    settings[FIGURES_DIR] = {"data": record, "captions": str(captions) if captions else None}

    configs = load_stage_configs(requests)
    generate = {stage: configs[stage] for stage in SYNTHETIC_STAGES.values() if stage in configs}
    for stage, g in generate.items():
        settings[stage] = {"captions": data.captions, **generation_record(cfg.synthetic_pairs, g)}
    settings["eval-joint"] = {"segmenter": judge, "pairs": cfg.eval_pairs,
                              "generate": generation_record(cfg.synthetic_pairs, configs["eval-joint"])}
    settings[MODEL_FIGURES_DIR] = {"generate": generation_record(cfg.synthetic_pairs, generate["generate"]),
                                   **({"data": record} if cfg.codec is not None else {})}
    return PipelinePlan(root, data, captions, real_pairs, resize, template, configs["vae"], configs.get(CODEC_DIR),
                        {stage: configs[stage] for stage in segmenters}, configs["joint"], generate,
                        configs["eval-joint"], fcfg, {name: configs[stage] for name, stage in candidates.items()},
                        cfg.synthetic_ratio, tuple(cfg.experiments), cfg.test_split, cfg.report, settings)
