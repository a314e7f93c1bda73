"""A trained JoDiffusion model as one object: text -> (image, mask), and the modes that label a real image
or draw an image for a mask. Its folder format is ``model_folder.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jodiffusion.data.captions import write_captions
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.data.transforms import apply_padding
from jodiffusion.diffusion.sampling import SamplerConfig, sample_latents, sample_seed
from jodiffusion.diffusion.schedule import NoiseScheduleConfig
from jodiffusion.errors import CheckpointError
from jodiffusion.masks.refine import RefineStats, refine_mask
from jodiffusion.models.annotation_vae import AnnotationVAE
from jodiffusion.models.denoisers import load_denoiser
from jodiffusion.models.image_codec import ImageCodec, build_image_codec
from jodiffusion.models.text_encoder import CaptionTextEncoder, TextEncoder, build_text_encoder
from jodiffusion.pipelines.model_folder import (
    DENOISER_DIR,
    TEXT_ENCODER_DIR,
    VAE_DIR,
    Manifest,
    denoiser_dir,
    read_manifest,
    write_manifest,
)


@dataclass
class Trajectory:
    """The predicted clean latents at some solver steps (the paper's Fig. 4), in the order they were taken."""

    latents: list[tuple[torch.Tensor, torch.Tensor]]  # (image, mask) latents, scaled: ``pipe.decode`` draws them
    steps: list[int]        # the solver step of each entry, from 0
    timesteps: list[int]    # the timestep the solver used at that step
    num_steps: int          # solver steps in all


@dataclass
class PipelineOutput:
    """What one pipeline call returns: pair i is ``images[i]``, ``masks[i]``, ``refine[i]``."""

    images: np.ndarray                  # (B, H, W, 3) uint8
    masks: np.ndarray                   # (B, H, W) uint8, after mask optimisation when it was asked for
    refine: list[RefineStats | None]    # what the mask optimisation changed (None without it)
    trajectory: Trajectory | None = None

    def __len__(self) -> int:
        return len(self.images)

    def pairs(self) -> list[tuple[np.ndarray, np.ndarray, RefineStats | None]]:
        return list(zip(self.images, self.masks, self.refine, strict=True))


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
        self.vae.save_pretrained(folder / VAE_DIR)
        text_spec = self.text_encoder.to_dict()
        if isinstance(self.text_encoder, CaptionTextEncoder):
            self.text_encoder.save_pretrained(folder / TEXT_ENCODER_DIR)
            text_spec = {"kind": CaptionTextEncoder.kind, "path": TEXT_ENCODER_DIR}
        if captions:  # before the manifest, which is written last and names them
            write_captions(folder / CAPTIONS_FILE, captions)
        write_manifest(folder, Manifest(self.classes, self.resolution, self.schedule, self.sampler,
                                        self.codec.to_dict(), text_spec, self.padding),
                       captions=bool(captions), dataset=dataset)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> JoDiffusionPipeline:
        folder = Path(folder)
        m = read_manifest(folder, CaptionTextEncoder.kind)
        pipe = cls(load_denoiser(denoiser_dir(folder)), AnnotationVAE.from_pretrained(folder / VAE_DIR),
                   build_image_codec(m.codec), build_text_encoder(m.text_encoder), m.classes, m.resolution,
                   m.schedule, m.sampler, m.padding)
        for module in (pipe.denoiser, pipe.vae, pipe.text_encoder):
            module.eval()
        return pipe.to(device)

    # -- generation -----------------------------------------------------------------------------------
    def null_text(self) -> torch.Tensor:
        if self._null_text is None:
            with torch.no_grad():
                self._null_text = self.text_encoder.encode([""])
        return self._null_text

    @torch.no_grad()
    def __call__(self, prompts: list[str], seed: int = 0, start_index: int = 0, sampler: SamplerConfig | None = None,
                 min_confidence: float = 0.0, refine_tau: int = 0, autocast_dtype: torch.dtype | None = None,
                 trajectory_every: int = 0) -> PipelineOutput:
        """Prompts -> pairs. Pair i uses sample_seed(seed, start_index + i), so it does not depend on the batch
        it is drawn in. ``refine_tau`` > 0: the mask optimisation (small regions take their boundary's label);
        ``trajectory_every`` > 0: the predicted clean latents every that many solver steps and at the last."""
        seeds = [sample_seed(seed, start_index + i) for i in range(len(prompts))]
        lat = self.generate_latents(prompts, seeds, sampler, autocast_dtype, trajectory_every=trajectory_every)
        images, masks = self.decode(lat["img"], lat["mask"], min_confidence)
        stats: list[RefineStats | None] = [None] * len(masks)
        if refine_tau > 0:
            for i, mask in enumerate(masks):  # the same shape and dtype: written back in place of the raw mask
                masks[i], stats[i] = refine_mask(mask, tau=refine_tau, ignore_index=self.classes.ignore_index,
                                                 background_id=self.classes.background)
        trajectory = None
        if trajectory_every:
            trajectory = Trajectory(lat["trajectory"], lat["trajectory_steps"], lat["trajectory_timesteps"],
                                    lat["steps"])
        return PipelineOutput(images, masks, stats, trajectory)

    @torch.no_grad()
    def generate_latents(self, prompts: list[str], seeds: list[int], sampler: SamplerConfig | None = None,
                         autocast_dtype: torch.dtype | None = None, trajectory_every: int = 0,
                         mode: str = "joint", given: torch.Tensor | None = None) -> dict:
        """The sampler's latents, undecoded (``diffusion.sampling.sample_latents``'s dict)."""
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
