"""Stage 2: train the joint image-mask diffusion model (paper, "Joint Diffusion", eq. 3-6).

Frozen: the image codec and the annotation VAE (and a CLIP text encoder, when used). Trained: the
denoiser (U-ViT or conv UNet) and, for the offline default, the small caption text encoder. Image
latents come from a cache of posterior moments (a fresh sample and a random flip every epoch); mask
latents are encoded on the fly by the annotation VAE, which is cheap and follows the flip exactly.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jodiffusion.config.loader import config_to_dict
from jodiffusion.data.captions import dataset_captions
from jodiffusion.data.config import DataConfig
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.data.registry import build_split
from jodiffusion.data.transforms import padding_bars, resize_pair
from jodiffusion.diffusion.objective import joint_loss
from jodiffusion.diffusion.sampling import SamplerConfig
from jodiffusion.diffusion.schedule import training_scheduler
from jodiffusion.engine.ema import EMA
from jodiffusion.engine.loop import TrainingStage, fit, training_rate
from jodiffusion.engine.run import TrainingRun
from jodiffusion.engine.runtime import EpochShuffleSampler, make_lr_scheduler, make_optimizer
from jodiffusion.errors import ConfigError, DatasetError
from jodiffusion.evaluation.joint_quality import probe_model, segmenter_predictor
from jodiffusion.models.annotation_vae import AnnotationVAE
from jodiffusion.models.denoisers import DenoiserWithText, build_denoiser
from jodiffusion.models.image_codec import PatchPCACodec, build_image_codec
from jodiffusion.models.text_encoder import CaptionTextEncoder, CLIPTextEncoder
from jodiffusion.models.unidiffuser_weights import load_unidiffuser_weights
from jodiffusion.pipelines.batching import generate_batches
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline
from jodiffusion.report.viz import pairs_grid, save_png
from jodiffusion.training.config import JointRunConfig
from jodiffusion.training.latent_cache import sample_latent
from jodiffusion.training.latent_cache_build import build_or_load_cache
from jodiffusion.training.mask_latents import MaskLatentTable
from jodiffusion.utils.ranks import launched_rank

log = logging.getLogger("jodiffusion")

EXPORT_DIR = "export"
def _load_captions(dataset, data: DataConfig) -> dict[str, str]:
    captions = dataset_captions(dataset, data.captions, data.root)
    if captions is None:
        where = Path(data.root) / CAPTIONS_FILE if data.root else "data.captions"
        raise DatasetError(f"no captions for dataset '{data.name}': expected {where}; write one with "
                           "`jodiffusion caption` or set data.captions")
    return captions


def build_components(cfg: JointRunConfig, captions: dict[str, str]):
    """The frozen annotation VAE and codec, the text encoder, and a fresh denoiser sized for them."""
    vae = AnnotationVAE.from_pretrained(cfg.vae).eval().requires_grad_(False)
    if cfg.codec.kind == "pca":
        codec = PatchPCACodec(factor=cfg.codec.factor, components=cfg.codec.components)  # fitted in train_joint
    else:
        codec = build_image_codec({"kind": cfg.codec.kind, "factor": cfg.codec.factor, "path": cfg.codec.path,
                                   "subfolder": cfg.codec.subfolder})
    if codec.downsample != vae.config.downsample:
        raise ConfigError(f"the image codec downsamples by {codec.downsample} but the annotation VAE at {cfg.vae} "
                          f"by {vae.config.downsample}: both latents must share one grid; retrain the VAE with "
                          f"model.downsample={codec.downsample} or change the codec")
    if cfg.text.kind == "caption":
        text = CaptionTextEncoder.from_captions(list(captions.values()), dim=cfg.text.dim,
                                                num_layers=cfg.text.num_layers, num_heads=cfg.text.num_heads,
                                                max_tokens=cfg.text.max_tokens)
    else:
        text = CLIPTextEncoder.from_pretrained(cfg.text.path)

    h, w = cfg.data.size
    net = build_denoiser(cfg.model.backbone, cfg.model.preset, cfg.model.arch, img_channels=codec.latent_channels,
                         mask_channels=vae.config.latent_channels, latent_height=h // codec.downsample,
                         latent_width=w // codec.downsample, text_dim=text.dim, num_text_tokens=text.num_tokens)
    if cfg.model.init_from:
        report = load_unidiffuser_weights(net, cfg.model.init_from)
        log.info("initialised from %s: %s", cfg.model.init_from, report)
    return vae, codec, text, net


@dataclass(frozen=True)
class JointResult:
    """A finished train run: the exported model folder and the training speed."""
    export: Path
    samples_per_second: float | None  # training samples per second, probes excluded; None: no step was timed


def train_joint(cfg: JointRunConfig, resume: str | None = None, overwrite: bool = False,
                progress: bool = True) -> JointResult:
    """Train; returns the exported model folder (``<output_dir>/export``) and the training speed."""
    # the data first: a dataset or captions file that cannot be read is refused before the run folder is
    # locked, created or changed, and before accelerate starts
    dataset = build_split(cfg.data, cfg.data.train_split, progress=progress and launched_rank() == 0)
    captions = _load_captions(dataset, cfg.data)
    with TrainingRun(cfg, "train", resume, overwrite, progress) as run:  # holds the folder's lock
        export = _train_joint(cfg, run, dataset, captions)
        samples_per_step = cfg.train.batch_size * cfg.train.grad_accum * run.accelerator.num_processes
    # read once the run has closed its metric log, which then holds every step's time
    return JointResult(export, training_rate(run.run_dir, samples_per_step))


def _train_joint(cfg: JointRunConfig, run: TrainingRun, dataset, captions: dict[str, str]) -> Path:
    accelerator, main, run_dir = run.accelerator, run.main, run.run_dir
    device = accelerator.device

    def build():  # the networks, then the latent cache (written by rank 0): see TrainingRun.start
        vae, codec, text_encoder, denoiser = build_components(cfg, captions)
        if vae.config.num_classes != dataset.classes.num_classes:
            raise ConfigError(f"the annotation VAE at {cfg.vae} knows {vae.config.num_classes} classes but the dataset "
                              f"has {dataset.classes.num_classes}")
        vae.to(device)
        if codec.kind == "pca":
            _fit_pca_codec(codec, dataset, cfg, run.progress)
        codec.to(device)

        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else run_dir / "cache"
        with accelerator.main_process_first():  # rank 0 builds the cache, the others then load it
            cache = build_or_load_cache(dataset, captions, codec, text_encoder, cache_dir,
                                        resolution=cfg.data.size, device=device,
                                        progress=run.progress, random_flip=cfg.random_flip,
                                        resize=cfg.data.resize)
        if codec.kind == "pixel-unshuffle":  # weight-free codec: normalise its latents with the data's statistics
            mean, std = cache.latent_stats()
            codec.shift_factor, codec.scaling_factor = mean, 1.0 / max(std, 1e-6)
        return vae, codec, text_encoder, denoiser, cache

    # start() checks a resume's settings before the cache is touched and writes the config only after it
    # was built, so a refused dataset or caption leaves the run folder as it was.
    vae, codec, text_encoder, denoiser, cache = run.start(build)
    mask_table = MaskLatentTable.build(cache, vae, device, progress=run.progress) if cfg.cache_mask_latents else None
    padding = padding_bars(cache.always_ignore(dataset.classes.ignore_index))
    if main and any(padding):
        log.info("every training mask is padding at its edges (top, bottom, left, right: %s px): generated masks "
                 "write it as ignore and images as black, as the data has it", padding)
    trainable_text = text_encoder if text_encoder.trainable else None
    if trainable_text is None:
        text_encoder.to(device).eval().requires_grad_(False)
    memory_format = memory_format_for(cfg, accelerator.mixed_precision == "bf16")
    if memory_format is not None:
        denoiser.to(memory_format=memory_format)
    model = DenoiserWithText(denoiser, trainable_text)
    ema = EMA(model, cfg.ema_decay)
    if main:
        log.info("joint %s: %.2fM parameters (%s), %d training pairs, latents %s + %s", cfg.model.backbone,
                 denoiser.num_parameters() / 1e6, cfg.model.preset, len(cache), tuple(cache.latent_shape),
                 vae.config.latent_channels)

    sampler = EpochShuffleSampler(len(cache), cfg.train.seed)
    loader = torch.utils.data.DataLoader(
        cache, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.train.num_workers,
        drop_last=len(cache) >= cfg.train.batch_size * accelerator.num_processes,
        persistent_workers=False)  # fresh workers each epoch see the cache's current epoch (its flips)
    cache.flip_seed = cfg.train.seed
    optimizer = make_optimizer(model.parameters(), cfg.train)
    lr_scheduler = make_lr_scheduler(optimizer, cfg.train)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    raw: DenoiserWithText = accelerator.unwrap_model(model)
    ema.module.to(device)
    noise_scheduler = training_scheduler(cfg.schedule)
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    null_frozen = None if trainable_text is not None else text_encoder.encode([""]).to(device)

    def encode_text(captions_batch, batch):
        if trainable_text is not None:
            module = raw.text_encoder
            return module.encode(list(captions_batch)), module.encode([""])
        return batch["text_emb"].to(device), null_frozen

    def step(batch, seed):
        # Noise, timesteps and caption dropout come from a generator seeded by (seed, step, rank),
        # so a resumed run continues exactly as an uninterrupted one would.
        gen = torch.Generator(device).manual_seed(seed)
        with torch.no_grad():
            img = codec.scale(sample_latent(batch["img_mean"], batch["img_std"], gen))
            if mask_table is not None:
                mask = vae.scale(mask_table.lookup(batch["index"], batch["flip"]).to(device))
            else:
                mask = vae.scale(vae.encode(batch["mask"]))
            if memory_format is not None:
                img, mask = img.contiguous(memory_format=memory_format), mask.contiguous(memory_format=memory_format)
        text, null = encode_text(batch["caption"], batch)
        loss, parts = joint_loss(model, noise_scheduler, img, mask, text, null, cfg.objective, gen)
        return loss, {"loss_img": parts["loss_img"], "loss_mask": parts["loss_mask"]}

    probe = _Probe(cfg, captions, device) if main and cfg.probe_every else None

    def after_step(at: int) -> None:
        ema.update(raw)
        if main and cfg.sample_every and at % cfg.sample_every == 0 and at < cfg.train.steps and cfg.sample_count:
            _sample_grid(_pipeline(ema.module, vae, codec, text_encoder, dataset, cfg, padding), captions, cfg,
                         run_dir, at, run.logger)
        if probe is not None and (at % cfg.probe_every == 0 or at == cfg.train.steps):
            pipe = _pipeline(ema.module, vae, codec, text_encoder, dataset, cfg, padding)
            samples = at * cfg.train.batch_size * cfg.train.grad_accum * accelerator.num_processes
            run.log(at, samples_seen=samples, **{f"probe/{k}": v for k, v in probe(pipe).items() if v is not None})

    def on_resume(extra: dict) -> None:
        ema.updates = int(extra.get("ema_updates", 0))

    def export(final_step: int) -> Path:
        path = run_dir / EXPORT_DIR
        if main:
            pipe = _pipeline(ema.module, vae, codec, text_encoder, dataset, cfg, padding)
            pipe.save_pretrained(path, captions=captions, dataset=config_to_dict(cfg.data))
            if cfg.sample_count:
                _sample_grid(pipe, captions, cfg, run_dir, final_step, run.logger)
            log.info("exported the model to %s", path)
        return path

    return fit(run, TrainingStage(model, optimizer, lr_scheduler, loader, step,
                                  modules={"model": raw, "ema": ema.module}, desc="train", after_step=after_step,
                                  extra_state=lambda: {"ema_updates": ema.updates}, on_resume=on_resume,
                                  export=export))


def memory_format_for(cfg: JointRunConfig, bf16: bool):
    """channels_last for the conv UNet where it is faster (``JointRunConfig.channels_last``), else None."""
    if cfg.model.backbone != "unet" or cfg.channels_last == "false":
        return None
    return torch.channels_last if cfg.channels_last == "true" or not bf16 else None


class _Probe:
    """The learning-curve figures of the EMA model (``JointRunConfig.probe_*``), on a fixed set of captions
    spread evenly over the training captions, with the same seeds every time."""

    def __init__(self, cfg: JointRunConfig, captions: dict[str, str], device):
        texts = list(captions.values())
        picks = np.linspace(0, len(texts) - 1, min(cfg.probe_pairs, len(texts))).round().astype(int)
        self.prompts = [texts[i] for i in picks]
        self.sampler = SamplerConfig(**{**asdict(cfg.sampler), "steps": cfg.probe_steps})
        self.seed, self.run = cfg.train.seed, probe_model
        self.predict = segmenter_predictor(cfg.probe_segmenter, device) if cfg.probe_segmenter else None

    def __call__(self, pipe) -> dict:
        with _eval_mode(pipe):
            return self.run(pipe, self.prompts, self.predict, sampler=self.sampler, seed=self.seed)


@contextlib.contextmanager
def _eval_mode(pipe):
    """The pipeline's trained modules in eval mode for a sample, then back in the mode they were in."""
    modules = (pipe.denoiser, pipe.text_encoder)
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)


def _fit_pca_codec(codec, dataset, cfg: JointRunConfig, progress: bool) -> None:
    """Fit the patch-PCA codec on up to ``codec.fit_images`` training images (evenly spread), at the
    training size. Deterministic: a resumed run or another process fits the same axes."""
    n = min(len(dataset), cfg.codec.fit_images)
    picks = np.linspace(0, len(dataset) - 1, n).round().astype(int)
    images = [resize_pair(dataset.load_image(int(i)), dataset.load_mask(int(i)), cfg.data.size,
                          cfg.data.resize)[0] for i in picks]
    x = torch.as_tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    codec.fit(x)
    log.info("PCA image codec: %d components of %dx%d patches keep %.2f%% of the variance (%d images)",
             codec.latent_channels, codec.downsample, codec.downsample, 100 * codec.explained, n)


def _pipeline(ema_module: DenoiserWithText, vae, codec, text_encoder, dataset, cfg: JointRunConfig,
              padding: tuple[int, int, int, int] | None = None):
    text = ema_module.text_encoder if ema_module.text_encoder is not None else text_encoder
    res = cfg.data.size
    return JoDiffusionPipeline(ema_module.denoiser, vae, codec, text, dataset.classes, res, cfg.schedule, cfg.sampler,
                               padding)


def _sample_grid(pipe, captions: dict[str, str], cfg: JointRunConfig, run_dir: Path, step: int, logger) -> Path:
    """A grid of generated (image | mask | overlay) for the first training captions."""
    prompts = list(captions.values())[: cfg.sample_count]
    with _eval_mode(pipe):
        pairs = generate_batches(pipe, prompts, len(prompts), seed=cfg.train.seed)
    path = save_png(pairs_grid(pairs.images, pairs.masks, pipe.classes, [p[:40] for p in prompts]),
                    run_dir / "samples" / f"step_{step:08d}.png")
    logger.log(step, sample_grid=str(path))
    with Image.open(path) as im:
        logger.add_image("samples", np.asarray(im.convert("RGB")), step)
    return path
