"""Image codecs: the frozen map between RGB images and the latent grid the diffusion model denoises.

Every codec has the same small interface (``ImageCodec``): ``encode_moments`` gives the posterior
mean and standard deviation of the *raw* latents, ``encode`` draws (or takes the mean of) a latent
and normalises it, ``decode`` maps normalised latents back to images in [-1, 1]. The normalisation
``z = (raw - shift_factor) * scaling_factor`` lives in the codec, never as a constant elsewhere.

* ``StableDiffusionVAECodec``: a diffusers ``AutoencoderKL`` (Stable Diffusion, UniDiffuser, ...),
  with its scaling and shift factors read from the VAE's own config.
* ``PixelUnshuffleCodec``: weight-free and exact, ``(B, 3, H, W) -> (B, 3 f^2, H/f, W/f)``; the
  offline default for the tiny datasets and the tests.
* ``PatchPCACodec``: the f x f pixel patches projected on their top-k principal components, fitted
  from the training images in seconds (closed form, no training stage): a linear image autoencoder
  for data without a pretrained codec, ``(B, 3, H, W) -> (B, k, H/f, W/f)`` with k << 3 f^2.

``to_dict()`` describes how to rebuild a codec; ``build_image_codec(spec)`` rebuilds it.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.utils.registry import Registry
from jodiffusion.utils.safe_load import check_weight_folder, pickle_refusal


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``torch.float16`` / ``"float16"`` / ``"fp16"`` / ``"bf16"`` / ``None`` (float32) -> a torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    key = str(dtype).removeprefix("torch.").lower()
    if key not in names:
        raise ValueError(f"unknown dtype '{dtype}'; use one of {', '.join(names)}")
    return names[key]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def looks_like_local_path(source: str) -> bool:
    """A string meant as a folder rather than a hub id (``owner/name``)."""
    return (source.startswith(("/", ".", "~", "\\")) or source.count("/") > 1 or (len(source) > 1 and source[1] == ":")
            or Path(source).expanduser().exists())


def pretrained_source(path_or_hub_id, subfolder: str | None, pipeline_subfolder: str, marker: str, what: str,
                      holds: str) -> tuple[str, bool | None, str | None, Path | None]:
    """Where diffusers / transformers should load a pretrained component from: ``(source,
    local_files_only, subfolder, local folder or None)``. A local folder is never looked up online, and a
    pipeline folder (no ``marker`` file, a ``pipeline_subfolder``) is entered; a missing folder is a
    CheckpointError saying what it should hold."""
    source = str(path_or_hub_id)
    if not looks_like_local_path(source):
        return source, None, subfolder, None
    folder = Path(source).expanduser().absolute()
    if not folder.is_dir():
        raise CheckpointError(f"{what} folder '{source}' does not exist (or is not a folder); pass a folder {holds}")
    if subfolder is None and not (folder / marker).is_file() and (folder / pipeline_subfolder).is_dir():
        subfolder = pipeline_subfolder
    return str(folder), True, subfolder, folder


class ImageCodec(nn.Module):
    """A frozen image autoencoder. Images are (B, 3, H, W) floats in [-1, 1], H and W multiples of
    ``downsample``; latents are (B, latent_channels, H / downsample, W / downsample)."""

    kind: ClassVar[str] = ""
    deterministic: ClassVar[bool] = False  # True: encode_moments always returns std = 0

    latent_channels: int
    downsample: int
    scaling_factor: float
    shift_factor: float = 0.0

    # -- to implement -----------------------------------------------------------------------------
    def _moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """What ``build_image_codec`` needs to rebuild this codec (JSON-serialisable)."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def train(self, mode: bool = True) -> ImageCodec:
        return super().train(False)  # frozen: dropout / norm statistics never switch to training

    def check_size(self, height: int, width: int) -> None:
        f = self.downsample
        if height % f or width % f:
            raise ValueError(f"image size {height}x{width} is not divisible by the codec's downsampling factor "
                             f"{f}; resize or crop to a multiple of {f} (e.g. "
                             f"{math.ceil(height / f) * f}x{math.ceil(width / f) * f})")

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        self.check_size(height, width)
        return self.latent_channels, height // self.downsample, width // self.downsample

    @torch.no_grad()
    def encode_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, std) of the raw (unscaled) latents, both (B, C, h, w) float32."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        self.check_size(*images.shape[-2:])
        mean, std = self._moments(images)
        return mean.float(), std.float()

    def scale(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw latents -> the normalised latents the diffusion model sees."""
        return (raw - self.shift_factor) * self.scaling_factor

    def unscale(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.scaling_factor + self.shift_factor

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None,
               sample: bool = True) -> torch.Tensor:
        """Images in [-1, 1] -> normalised latents: a posterior sample, or its mean with ``sample=False``."""
        mean, std = self.encode_moments(images)
        if sample and not self.deterministic:
            mean = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.scale(mean)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> images (B, 3, H, W) float32 in [-1, 1]."""
        return self._decode_raw(self.unscale(latents.float())).float().clamp(-1, 1)


# --- Stable Diffusion VAE ------------------------------------------------------------------------

class StableDiffusionVAECodec(ImageCodec):
    """A diffusers ``AutoencoderKL``; scaling / shift factors come from its config unless overridden."""

    kind = "sd-vae"

    def __init__(self, vae: nn.Module, source: str | None = None, subfolder: str | None = None,
                 scaling_factor: float | None = None, shift_factor: float | None = None):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        config = vae.config
        self.source, self.subfolder = source, subfolder
        self.latent_channels = int(config.latent_channels)
        self.downsample = 2 ** (len(config.block_out_channels) - 1)
        if scaling_factor is None:
            scaling_factor = getattr(config, "scaling_factor", None)
        if shift_factor is None:
            shift_factor = getattr(config, "shift_factor", None)
        if scaling_factor is None:
            raise CheckpointError(f"the VAE config of {source} has no scaling_factor; pass scaling_factor")
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor or 0.0)
        if not (self.scaling_factor > 0 and math.isfinite(self.scaling_factor)):
            raise ValueError(f"scaling_factor={self.scaling_factor} must be a positive finite number")

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, subfolder: str | None = None,
                        dtype: torch.dtype | str | None = torch.float32, scaling_factor: float | None = None,
                        shift_factor: float | None = None, local_files_only: bool | None = None
                        ) -> StableDiffusionVAECodec:
        """Load a VAE folder (``config.json`` + weights), or a full pipeline folder / hub id holding a
        ``vae/`` subfolder. A local folder is never looked up online."""
        # imported here: diffusers takes seconds to import and only this path needs it (CLI start-up)
        from diffusers import AutoencoderKL

        source, local, subfolder, folder = pretrained_source(
            path_or_hub_id, subfolder, "vae", "config.json", "VAE",
            "holding an AutoencoderKL (config.json + weights) or a Stable Diffusion pipeline folder with a vae/ "
            "subfolder")
        is_local = folder is not None
        local_files_only = local if is_local else local_files_only
        torch_dtype = resolve_dtype(dtype)
        tries = [subfolder] if subfolder is not None or is_local else [None, "vae"]
        error: Exception | None = None
        for sub in tries:
            if is_local:
                check_weight_folder(Path(source) / (sub or ""), "the AutoencoderKL")
            try:
                vae = AutoencoderKL.from_pretrained(source, subfolder=sub, torch_dtype=torch_dtype,
                                                    local_files_only=bool(local_files_only))
            except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) refused a payload
                raise CheckpointError(pickle_refusal(Path(source) / (sub or ""), exc, "give the VAE as "
                                                     "diffusion_pytorch_model.safetensors")) from None
            except (OSError, ValueError, KeyError, EOFError, RuntimeError) as exc:
                error = exc
                continue
            return cls(vae, source=source, subfolder=sub, scaling_factor=scaling_factor, shift_factor=shift_factor)
        where = os.path.join(source, subfolder) if subfolder else source
        reason = str(error).rstrip(".")
        raise CheckpointError(f"cannot load an AutoencoderKL from '{where}': {reason}. Pass a VAE folder, a Stable "
                              "Diffusion / UniDiffuser pipeline folder (with vae/), or a hub id such as "
                              "'stabilityai/sd-vae-ft-mse' (needs internet access the first time).") from None

    def _moments(self, images):
        posterior = self.vae.encode(images.to(self.device, self.dtype)).latent_dist
        return posterior.mean, posterior.std

    def _decode_raw(self, latents):
        return self.vae.decode(latents.to(self.device, self.dtype)).sample

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.source, "subfolder": self.subfolder, "dtype": dtype_name(self.dtype),
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor}


# --- pixel unshuffle --------------------------------------------------------------------------------

class PixelUnshuffleCodec(ImageCodec):
    """Weight-free, exact codec: each f x f pixel block becomes 3 f^2 channels of one latent pixel.

    The latents are the pixel values themselves (std 0), so ``decode(encode(x)) == x``. The default
    factors (1, 0) keep them in [-1, 1]; a trainer may measure better ones from the data and pass them.
    """

    kind = "pixel-unshuffle"
    deterministic = True

    def __init__(self, factor: int = 4, scaling_factor: float = 1.0, shift_factor: float = 0.0):
        super().__init__()
        if int(factor) < 1:
            raise ValueError(f"factor={factor} must be a positive integer")
        if not (scaling_factor > 0 and math.isfinite(scaling_factor)):
            raise ValueError(f"scaling_factor={scaling_factor} must be a positive finite number")
        self.downsample = int(factor)
        self.latent_channels = 3 * self.downsample**2
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor)

    def _moments(self, images):
        mean = F.pixel_unshuffle(images.float(), self.downsample)  # (B, 3 f^2, H/f, W/f)
        return mean, torch.zeros_like(mean)

    def _decode_raw(self, latents):
        return F.pixel_shuffle(latents, self.downsample)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "factor": self.downsample, "scaling_factor": self.scaling_factor,
                "shift_factor": self.shift_factor}


# --- patch PCA ---------------------------------------------------------------------------------------

class PatchPCACodec(ImageCodec):
    """A linear autoencoder of f x f patches: latents are the coordinates of each patch (minus the mean
    patch) on the top ``components`` principal axes of the training patches; decoding maps them back.

    Why: with pixel-unshuffle every latent cell holds 3 f^2 = 48 numbers, most of them redundant
    copies of one colour, and a diffusion model trained from scratch on a CPU spends its few steps on
    them. The principal axes keep the patch's colour and its main edges in k numbers (k = 8..12 holds
    nearly all of the variance of flat-coloured data) and are fitted in closed form from a few hundred
    images, so there is no extra training stage and nothing to download. The basis travels in the
    codec spec (``to_dict``), so a model folder describes its codec completely.
    """

    kind = "pca"
    deterministic = True

    def __init__(self, factor: int = 4, components: int = 12, mean: list[float] | None = None,
                 basis: list[list[float]] | None = None, scaling_factor: float = 1.0, shift_factor: float = 0.0,
                 explained: float | None = None):
        super().__init__()
        if int(factor) < 1:
            raise ValueError(f"factor={factor} must be a positive integer")
        dim = 3 * int(factor) ** 2
        if not 1 <= int(components) <= dim:
            raise ValueError(f"components={components} must lie in 1..{dim} (3 x factor^2)")
        self.downsample, self.latent_channels = int(factor), int(components)
        self.scaling_factor, self.shift_factor = float(scaling_factor), float(shift_factor)
        self.explained = explained
        self.register_buffer("mean", torch.zeros(dim) if mean is None else torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("basis", torch.zeros(self.latent_channels, dim) if basis is None
                             else torch.tensor(basis, dtype=torch.float32))
        if tuple(self.mean.shape) != (dim,) or tuple(self.basis.shape) != (self.latent_channels, dim):
            raise ValueError(f"a PCA codec with factor {factor} and {components} components needs a mean of {dim} "
                             f"values and a {components} x {dim} basis")
        self.fitted = basis is not None

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> PatchPCACodec:
        """Fit mean and basis on (N, 3, H, W) images in [-1, 1]; sets the scale to 1 / latent std."""
        self.check_size(*images.shape[-2:])
        patches = F.pixel_unshuffle(images.float(), self.downsample).permute(0, 2, 3, 1).reshape(-1, self.mean.numel())
        mean = patches.mean(0)
        centred = (patches - mean).double()
        cov = centred.T @ centred / max(len(centred) - 1, 1)
        values, vectors = torch.linalg.eigh(cov)  # ascending
        order = values.argsort(descending=True)[: self.latent_channels]
        basis = vectors[:, order].T.float()
        basis = basis * torch.where(basis.sum(1, keepdim=True) < 0, -1.0, 1.0)  # a fixed sign per axis
        self.mean.copy_(mean)
        self.basis.copy_(basis)
        self.explained = float(values[order].sum() / values.sum().clamp(min=1e-12))
        z = (patches - mean) @ basis.T
        self.scaling_factor, self.shift_factor = 1.0 / max(float(z.std()), 1e-6), 0.0
        self.fitted = True
        return self

    def _moments(self, images):
        patches = F.pixel_unshuffle(images.float(), self.downsample)  # (B, 3 f^2, h, w)
        z = torch.einsum("kd,bdhw->bkhw", self.basis, patches - self.mean.view(1, -1, 1, 1))
        return z, torch.zeros_like(z)

    def _decode_raw(self, latents):
        patches = torch.einsum("kd,bkhw->bdhw", self.basis, latents.float()) + self.mean.view(1, -1, 1, 1)
        return F.pixel_shuffle(patches, self.downsample)

    def to_dict(self) -> dict[str, Any]:
        if not self.fitted:
            raise ConfigError("this PCA codec has not been fitted yet (PatchPCACodec.fit on training images)")
        return {"kind": self.kind, "factor": self.downsample, "components": self.latent_channels,
                "mean": self.mean.tolist(), "explained": self.explained, "basis": self.basis.tolist(),
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor}


# --- registry --------------------------------------------------------------------------------------

def _build_sd_vae(spec: dict[str, Any]) -> ImageCodec:
    if not spec.get("path"):
        raise ConfigError("an 'sd-vae' image codec needs 'path' (a VAE or pipeline folder, or a hub id)")
    return StableDiffusionVAECodec.from_pretrained(
        spec["path"], subfolder=spec.get("subfolder"), dtype=spec.get("dtype"),
        scaling_factor=spec.get("scaling_factor"), shift_factor=spec.get("shift_factor"))


def _build_pixel_unshuffle(spec: dict[str, Any]) -> ImageCodec:
    return PixelUnshuffleCodec(factor=int(spec.get("factor", 4)), scaling_factor=float(spec.get("scaling_factor", 1.0)),
                               shift_factor=float(spec.get("shift_factor", 0.0)))


def _build_pca(spec: dict[str, Any]) -> ImageCodec:
    keys = ("factor", "components", "mean", "basis", "scaling_factor", "shift_factor", "explained")
    return PatchPCACodec(**{k: spec[k] for k in keys if spec.get(k) is not None})


# A spec's "kind" -> the builder that rebuilds it from the spec (the form to_dict() writes).
IMAGE_CODECS: Registry[Callable[[dict[str, Any]], ImageCodec]] = Registry(
    "image codec kind", error=ConfigError, valid="kinds")
IMAGE_CODECS.register(PatchPCACodec.kind, _build_pca)
IMAGE_CODECS.register(StableDiffusionVAECodec.kind, _build_sd_vae)
IMAGE_CODECS.register(PixelUnshuffleCodec.kind, _build_pixel_unshuffle)


def build_image_codec(spec: dict[str, Any]) -> ImageCodec:
    """Rebuild a codec from ``to_dict()`` output (or a config section of the same shape)."""
    return IMAGE_CODECS.get(spec.get("kind"))(dict(spec))


__all__ = ["IMAGE_CODECS", "ImageCodec", "PatchPCACodec", "PixelUnshuffleCodec", "StableDiffusionVAECodec",
           "build_image_codec", "resolve_dtype"]
