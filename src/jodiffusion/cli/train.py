"""The training commands (`train-vae`, `train-codec`, `train`, `train-seg`): one table, so the stages'
commands cannot drift (those that score a trained model, `eval-*`, are in eval.py)."""

from __future__ import annotations

import argparse

from jodiffusion.cli.common import add_training_command
from jodiffusion.training.codec import train_codec
from jodiffusion.training.config import CodecRunConfig, JointRunConfig, SegRunConfig, VAERunConfig
from jodiffusion.training.joint import train_joint
from jodiffusion.training.segmenter import train_segmenter
from jodiffusion.training.vae import train_vae

# name, preset group, default preset, config class, train function, what it prints, help, description
TRAINING = (
    ("train-vae", "vae", "shapes", VAERunConfig, train_vae,
     "annotation VAE written to {.export}", "train the annotation VAE (masks -> latents -> class logits)",
     "Train the annotation VAE on a dataset's masks, measure its latent scale factor and export it to "
     "<output_dir>/annotation_vae."),
    ("train-codec", "codec", "shapes", CodecRunConfig, train_codec,
     "image codec written to {.export} (use it with codec.kind=sd-vae codec.path=<that folder>)",
     "train a learned image codec (a small AutoencoderKL) on a dataset's images",
     "Train a small diffusers AutoencoderKL from scratch on a dataset's train images at data.size, measure its "
     "latents' scale and shift, export it to <output_dir>/image_codec (for `train` with codec.kind=sd-vae "
     "codec.path=<that folder>) and write the val reconstruction error to eval.json."),
    ("train", "joint", "small", JointRunConfig, train_joint,
     "model exported to {.export}", "train the joint image-mask diffusion model",
     "Train the denoiser (U-ViT or conv UNet) of image and mask latents together, conditioned on captions; "
     "exports <output_dir>/export for `sample` and `generate`."),
    ("train-seg", "seg", "shapes", SegRunConfig,
     train_segmenter, "segmenter written to {.export}",
     "train a segmenter on real, synthetic or real+synthetic pairs",
     "Train a segmenter (mix=real, synthetic or real+synthetic), score it on the real dataset's val split and "
     "export it to <output_dir>/segmenter with eval.json."),
)


def register(sub: argparse._SubParsersAction) -> None:
    for name, group, preset, schema, train, done, help_text, description in TRAINING:
        add_training_command(sub, name, help=help_text, description=description, group=group,
                             default_preset=preset, schema=schema, train=train, done=done)
