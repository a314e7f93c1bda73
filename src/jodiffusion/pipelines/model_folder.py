"""The model folder's format: what ``jodiffusion.json`` records and where the weights lie.

    model_dir/
      jodiffusion.json      format, package version, classes, resolution, schedule, codec and text
                            encoder references (rebuildable specs), sampler defaults, and the padding
                            (rows and columns ignore in every training mask, e.g. square data letterboxed
                            into a wide frame), which generated pairs get back as black and ignore
      captions.jsonl        the training captions (generate's default prompts), when given
      denoiser/             config.json (its class: JointUViT or JointUNet) + model.safetensors (EMA weights)
      annotation_vae/       config.json + model.safetensors
      text_encoder/         only for the trainable caption encoder (a CLIP encoder is a reference)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from jodiffusion import __version__
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.diffusion.sampling import SamplerConfig
from jodiffusion.diffusion.schedule import NoiseScheduleConfig
from jodiffusion.errors import CheckpointError
from jodiffusion.utils.io import write_json_atomic
from jodiffusion.utils.safe_load import one_line, read_json

MANIFEST = "jodiffusion.json"
DENOISER_DIR = "denoiser"
VAE_DIR = "annotation_vae"
TEXT_ENCODER_DIR = "text_encoder"
FORMAT_VERSION = 1
PADDING_SIDES = ("top", "bottom", "left", "right")


@dataclass
class Manifest:
    """What a model folder's ``jodiffusion.json`` says, parsed and checked."""

    classes: ClassInfo
    resolution: tuple[int, int]
    schedule: NoiseScheduleConfig
    sampler: SamplerConfig
    codec: dict
    text_encoder: dict  # a trainable encoder's "path" is relative to the folder in the file, absolute here
    padding: tuple[int, int, int, int] | None = None


def write_manifest(folder: Path, manifest: Manifest, captions: bool, dataset: dict | None) -> None:
    """Write ``jodiffusion.json`` (last, after the weights and captions it names)."""
    write_json_atomic(folder / MANIFEST, {
        "format": FORMAT_VERSION, "jodiffusion_version": __version__,
        "classes": manifest.classes.to_dict(), "resolution": list(manifest.resolution),
        "schedule": asdict(manifest.schedule), "sampler": asdict(manifest.sampler),
        "codec": manifest.codec, "text_encoder": manifest.text_encoder,
        "prompts": {"captions": CAPTIONS_FILE if captions else None}, "dataset": dataset,
        "padding": dict(zip(PADDING_SIDES, manifest.padding, strict=True)) if manifest.padding else None,
    })


def read_manifest(folder: Path, caption_encoder_kind: str) -> Manifest:
    """Every field of the manifest, checked before any weights are read. ``caption_encoder_kind``: the
    text-encoder kind whose weights live in the folder (its path is made absolute)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{folder} is not a JoDiffusion model folder (no {MANIFEST}); pass the folder "
                              "written by `jodiffusion train` (its export/ sub-folder)")
    meta = read_json(manifest_path, "model manifest", "export the model again (`jodiffusion train`)")
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path}: format {meta.get('format')} is not supported by "
                              f"jodiffusion {__version__} (expects {FORMAT_VERSION})")
    try:
        text_spec = dict(meta["text_encoder"])
        if text_spec.get("kind") == caption_encoder_kind:
            text_spec["path"] = str(folder / text_spec["path"])
        padding = meta.get("padding")  # absent in folders written before it was recorded: no padding known
        return Manifest(classes=ClassInfo.from_dict(meta["classes"]),
                        resolution=tuple(int(v) for v in meta["resolution"]),
                        schedule=NoiseScheduleConfig(**meta["schedule"]), sampler=SamplerConfig(**meta["sampler"]),
                        codec=meta["codec"], text_encoder=text_spec,
                        padding=tuple(int(padding[side]) for side in PADDING_SIDES) if padding else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{manifest_path} is not a valid model manifest ({one_line(exc)}); export the "
                              "model again (`jodiffusion train`)") from None


def denoiser_dir(folder: Path) -> Path:
    """The denoiser's sub-folder."""
    return folder / DENOISER_DIR
