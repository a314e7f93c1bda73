"""A trained JoDiffusion model as one self-describing folder, and text -> (image, mask) generation.

    model_dir/
      jodiffusion.json      format, package version, classes, resolution, schedule, codec and text
                            encoder references (rebuildable specs), sampler defaults, and the padding
                            (rows and columns ignore in every training mask, e.g. square data letterboxed
                            into a wide frame), which generated pairs get back as black and ignore
      denoiser/             config.json (its class: JointUViT or JointUNet) + model.safetensors (EMA weights)
      annotation_vae/       config.json + model.safetensors
      text_encoder/         only for the trainable caption encoder (a CLIP encoder is a reference)
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from jodiffusion import __version__
from jodiffusion.data.captions import write_captions
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.data.transforms import apply_padding
from jodiffusion.diffusion.sampling import SamplerConfig, sample_latents, sample_seed
from jodiffusion.diffusion.schedule import NoiseScheduleConfig
from jodiffusion.errors import CheckpointError
from jodiffusion.masks.refine import refine_mask
from jodiffusion.models.annotation_vae import AnnotationVAE
from jodiffusion.models.denoisers import load_denoiser
from jodiffusion.models.image_codec import ImageCodec, build_image_codec
from jodiffusion.models.text_encoder import CaptionTextEncoder, TextEncoder, build_text_encoder
from jodiffusion.utils.io import write_json_atomic
from jodiffusion.utils.safe_load import one_line, read_json

MANIFEST = "jodiffusion.json"
DENOISER_DIR = "denoiser"
FORMAT_VERSION = 1
PADDING_SIDES = ("top", "bottom", "left", "right")


class JoDiffusionPipeline:
    def __init__(self, denoiser: torch.nn.Module, vae: AnnotationVAE, codec: ImageCodec, text_encoder: TextEncoder,
                 classes: ClassInfo, resolution: tuple[int, int], schedule: NoiseScheduleConfig,
                 sampler: SamplerConfig | None = None, padding: tuple[int, int, int, int] | None = None):
        self.denoiser, self.vae, self.codec, self.text_encoder = denoiser, vae, codec, text_encoder
        self.classes = classes
        self.resolution = (int(resolution[0]), int(resolution[1]))
        # (top, bottom, left, right) rows and columns that are padding in every training mask (square data in a
        # wide frame): decoded pairs get them back as padding, so no class is drawn where the data has none
        self.padding = tuple(int(v) for v in padding) if padding and any(padding) else None
        self.schedule = schedule.resolved()  # the model folder records what "auto" meant when it was trained
        self.sampler = sampler or SamplerConfig()
        h, w = self.resolution
        self.img_shape = codec.latent_shape(h, w)
        f = vae.config.downsample
        self.mask_shape = (vae.config.latent_channels, h // f, w // f)
        if self.img_shape[1:] != self.mask_shape[1:]:
            raise CheckpointError(f"image latents {self.img_shape} and mask latents {self.mask_shape} are not on "
                                  "the same grid: the codec and the annotation VAE must downsample alike")
        self._null_text: torch.Tensor | None = None

    # -- devices -----------------------------------------------------------------------------------
    def to(self, device, dtype: torch.dtype | None = None) -> JoDiffusionPipeline:
        self.denoiser.to(device=device, dtype=dtype)
        self.vae.to(device)
        self.codec.to(device)
        self.text_encoder.to(device)
        self._null_text = None
        return self

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    # -- persistence -----------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, captions: dict[str, str] | None = None,
                        dataset: dict | None = None) -> Path:
        """Write the model folder. ``captions`` (the training captions, ``{stem: caption}``) go into
        ``captions.jsonl`` beside the weights, where ``generate``'s caption prompts are found; ``dataset``
        (the training data config) is recorded in the manifest, so the folder names everything
        generation needs and nothing is looked up in the training run around it."""
        folder = Path(folder)
        self.denoiser.save_pretrained(folder / DENOISER_DIR)
        self.vae.save_pretrained(folder / "annotation_vae")
        text_spec = self.text_encoder.to_dict()
        if isinstance(self.text_encoder, CaptionTextEncoder):
            self.text_encoder.save_pretrained(folder / "text_encoder")
            text_spec = {"kind": CaptionTextEncoder.kind, "path": "text_encoder"}
        if captions:  # before the manifest, which is written last and names them
            write_captions(folder / CAPTIONS_FILE, captions)
        write_json_atomic(folder / MANIFEST, {
            "format": FORMAT_VERSION, "jodiffusion_version": __version__,
            "classes": self.classes.to_dict(), "resolution": list(self.resolution),
            "schedule": asdict(self.schedule), "sampler": asdict(self.sampler),
            "codec": self.codec.to_dict(), "text_encoder": text_spec,
            "prompts": {"captions": CAPTIONS_FILE if captions else None}, "dataset": dataset,
            "padding": dict(zip(PADDING_SIDES, self.padding, strict=True)) if self.padding else None,
        })
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> JoDiffusionPipeline:
        folder = Path(folder)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise CheckpointError(f"{folder} is not a JoDiffusion model folder (no {MANIFEST}); pass the folder "
                                  "written by `jodiffusion train` (its export/ sub-folder)")
        meta = read_json(manifest_path, "model manifest", "export the model again (`jodiffusion train`)")
        if meta.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{manifest_path}: format {meta.get('format')} is not supported by "
                                  f"jodiffusion {__version__} (expects {FORMAT_VERSION})")
        try:  # every field of the manifest, before any weights are read
            text_spec = dict(meta["text_encoder"])
            if text_spec.get("kind") == CaptionTextEncoder.kind:
                text_spec["path"] = str(folder / text_spec["path"])
            codec_spec, classes = meta["codec"], ClassInfo.from_dict(meta["classes"])
            resolution = tuple(int(v) for v in meta["resolution"])
            schedule, sampler = NoiseScheduleConfig(**meta["schedule"]), SamplerConfig(**meta["sampler"])
            padding = meta.get("padding")  # absent in folders written before it was recorded: no padding known
            padding = tuple(int(padding[side]) for side in PADDING_SIDES) if padding else None
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{manifest_path} is not a valid model manifest ({one_line(exc)}); export the "
                                  "model again (`jodiffusion train`)") from None
        pipe = cls(load_denoiser(folder / DENOISER_DIR), AnnotationVAE.from_pretrained(folder / "annotation_vae"),
                   build_image_codec(codec_spec), build_text_encoder(text_spec), classes, resolution, schedule,
                   sampler, padding)
        for m in (pipe.denoiser, pipe.vae, pipe.text_encoder):
            m.eval()
        return pipe.to(device)

    # -- generation -----------------------------------------------------------------------------------
    def null_text(self) -> torch.Tensor:
        if self._null_text is None:
            with torch.no_grad():
                self._null_text = self.text_encoder.encode([""])
        return self._null_text

    @torch.no_grad()
    def generate_latents(self, prompts: list[str], seeds: list[int], sampler: SamplerConfig | None = None,
                         autocast_dtype: torch.dtype | None = None, trajectory_every: int = 0,
                         mode: str = "joint", given: torch.Tensor | None = None) -> dict:
        sampler = sampler or self.sampler
        text = self.text_encoder.encode(prompts)
        device_type = self.device.type
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return sample_latents(self.denoiser, text, self.null_text(), self.img_shape, self.mask_shape, seeds,
                                  sampler, self.schedule, mode=mode, given=given, trajectory_every=trajectory_every)

    def _check_size(self, array: np.ndarray, what: str) -> None:
        if tuple(array.shape[1:3]) != self.resolution:
            raise ValueError(f"{what} of size {array.shape[1]}x{array.shape[2]} given; this model works at "
                             f"{self.resolution[0]}x{self.resolution[1]}: resize them first")

    @torch.no_grad()
    def image_to_mask(self, images: np.ndarray, prompts: list[str], seed: int = 0,
                      sampler: SamplerConfig | None = None, min_confidence: float = 0.0) -> np.ndarray:
        """Label real images: (B, H, W, 3) uint8 -> (B, H, W) uint8 masks (mode img2mask)."""
        self._check_size(images, "images")
        x = torch.as_tensor(images, device=self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        given = self.codec.encode(x, sample=False)
        seeds = [sample_seed(seed, i) for i in range(len(prompts))]
        lat = self.generate_latents(prompts, seeds, sampler, mode="img2mask", given=given)
        return self.decode(lat["img"], lat["mask"], min_confidence)[1]

    @torch.no_grad()
    def mask_to_image(self, masks: np.ndarray, prompts: list[str], seed: int = 0,
                      sampler: SamplerConfig | None = None) -> np.ndarray:
        """Draw images for given masks: (B, H, W) class ids -> (B, H, W, 3) uint8 (mode mask2img)."""
        self._check_size(masks, "masks")
        given = self.vae.scale(self.vae.encode(torch.as_tensor(masks, device=self.device).long()))
        seeds = [sample_seed(seed, i) for i in range(len(prompts))]
        lat = self.generate_latents(prompts, seeds, sampler, mode="mask2img", given=given)
        return self.decode(lat["img"], lat["mask"])[0]

    @torch.no_grad()
    def decode(self, img_latents: torch.Tensor, mask_latents: torch.Tensor,
               min_confidence: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Latents -> (B, H, W, 3) uint8 images and (B, H, W) uint8 masks (low confidence -> ignore; the
        training data's padding, ``self.padding``, black and ignore)."""
        images = self.codec.decode(img_latents.float())
        images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        masks = self.vae.decode_to_mask(self.vae.unscale(mask_latents.float()), min_confidence=min_confidence)
        masks = masks.to(torch.uint8).cpu().numpy()
        apply_padding(images, masks, self.padding, self.classes.ignore_index)
        return images, masks

    def generate(self, prompts: list[str], seed: int = 0, start_index: int = 0, sampler: SamplerConfig | None = None,
                 min_confidence: float = 0.0, refine_tau: int = 0, autocast_dtype: torch.dtype | None = None):
        """Prompts -> list of (image, mask, refine stats). Sample i uses sample_seed(seed, start_index + i)."""
        seeds = [sample_seed(seed, start_index + i) for i in range(len(prompts))]
        lat = self.generate_latents(prompts, seeds, sampler, autocast_dtype)
        images, masks = self.decode(lat["img"], lat["mask"], min_confidence)
        out = []
        for image, mask in zip(images, masks, strict=True):
            stats = None
            if refine_tau > 0:
                mask, stats = refine_mask(mask, tau=refine_tau, ignore_index=self.classes.ignore_index,
                                          background_id=self.classes.background)
            out.append((image, mask, stats))
        return out
