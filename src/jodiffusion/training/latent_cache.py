"""A cache of image latents (and frozen text embeddings), built once per dataset.

The image codec and a frozen text encoder never change during diffusion training, so each image is
encoded once. For every sample the cache keeps, at the model resolution:

* the posterior mean and std of the raw (unscaled) image latents, for the image and for its mirror
  image, so every epoch can draw a fresh latent ``z = mean + std * eps`` under a random flip;
* the resized mask (uint8; the mirrored mask is the same array flipped, so it is not stored twice);
* the caption, and for a frozen text encoder (CLIP) its embedding in float16.

A cache lives in ``<cache_dir>/<dataset>-<fingerprint>/``: shards of safetensors, ``samples.json``
(stems and captions) and ``meta.json`` (written last). The fingerprint hashes everything the contents
depend on: the dataset's identity (file sizes and times for file datasets, the generator settings for
``shapes``), the captions, the codec and its weights, a frozen text encoder and its weights, the
resolution and resize method and the cache format; change any of them and a new cache is built.
The codec's scaling and shift factors are not part of it: the cache holds raw latents.

A build goes to a temporary folder beside the cache's folder that is renamed into place only when complete,
so an interrupted build is never taken for a valid cache. The builder holds the cache folder's lock, beside
it (``utils.output_folder``): the build folders of builds that died are removed when the next one starts,
and a process that needs the same cache while another builds it waits for that build, then loads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data
from safetensors import safe_open
from safetensors.torch import load_file

from jodiffusion import __version__
from jodiffusion.data.base import FileSegmentationDataset, SegmentationDataset
from jodiffusion.data.captions import read_captions
from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.data.transforms import resize_pair
from jodiffusion.errors import DatasetError
from jodiffusion.models.image_codec import ImageCodec
from jodiffusion.models.text_encoder import TextEncoder
from jodiffusion.utils.io import replace_folder, save_safetensors_atomic, write_json_atomic
from jodiffusion.utils.lock import FolderLockedError
from jodiffusion.utils.output_folder import OutputRules, output_folder
from jodiffusion.utils.progress import progress_bar
from jodiffusion.utils.tempnames import make_temp_dir

log = logging.getLogger("jodiffusion")

CACHE_FORMAT_VERSION = 1
META_NAME = "meta.json"
SAMPLES_NAME = "samples.json"
RESIZE_METHODS = {"crop": "short-side resize (bicubic image, nearest mask) + center crop",
                  "letterbox": "long-side resize (bicubic image, nearest mask) + padding (black, ignore)"}
# built beside its folder and renamed in; only `jodiffusion train` builds one
CACHE_RULES = OutputRules("train", beside=True)
LOCK_POLL_SECONDS = 2.0  # how often a process waiting for another's build of the same cache looks again
PRELOAD_MAX_BYTES = 1 << 30  # smaller caches are read into memory; larger ones are memory-mapped


# --- fingerprints ----------------------------------------------------------------------------------

def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer of ``module`` (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dataset_identity(dataset: SegmentationDataset) -> dict[str, Any]:
    """What tells this dataset's samples apart from any other's, cheaply (no image is decoded,
    except one rendered probe of the procedural ``shapes`` dataset, which catches generator changes).
    A dataset class may define ``cache_identity() -> dict`` to describe itself."""
    custom = getattr(dataset, "cache_identity", None)
    if callable(custom):
        return {"type": type(dataset).__name__, **custom()}
    if isinstance(dataset, ShapesDataset):
        probe = dataset.render(0)
        return {"type": "shapes", "split": dataset.split, "seed": dataset.seed, "resolution": dataset.resolution,
                "num_images": len(dataset), "probe": _sha(probe.image.tobytes() + probe.mask.tobytes())}
    if isinstance(dataset, FileSegmentationDataset):
        h = hashlib.sha256()
        for sample in dataset.samples:
            for path in (sample.image_path, sample.mask_path):
                try:
                    st = path.stat() if path is not None else None
                except OSError as exc:
                    raise DatasetError(f"{dataset.name}: cannot read {path}: {exc}") from None
                h.update(f"{sample.stem}|{path}|{st and st.st_size}|{st and st.st_mtime_ns}\n".encode())
        lut = None if dataset.label_lut is None else _sha(dataset.label_lut.tobytes())
        return {"type": "files", "name": dataset.name, "num_samples": len(dataset), "files": h.hexdigest(),
                "label_lut": lut}
    stems = [dataset.stem(i) for i in range(len(dataset))]
    return {"type": type(dataset).__qualname__, "num_samples": len(stems), "stems": _sha("\n".join(stems))}


def _slug(identity: dict[str, Any]) -> str:
    if identity["type"] == "shapes":
        name = f"shapes-{identity['split']}"
    else:
        name = str(identity.get("name", identity["type"]))
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower() or "dataset"


def codec_identity(codec: ImageCodec) -> dict[str, Any]:
    spec = {k: v for k, v in codec.to_dict().items() if k not in ("scaling_factor", "shift_factor")}
    if any(True for _ in codec.parameters()):
        spec["weights"] = module_digest(codec)
    return spec


def text_encoder_identity(text_encoder: TextEncoder) -> dict[str, Any]:
    if text_encoder.trainable:  # only the captions are cached: which encoder it is does not matter
        return {"trainable": True}
    return {**text_encoder.to_dict(), "weights": module_digest(text_encoder)}


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    return _sha(json.dumps(fingerprint, sort_keys=True, separators=(",", ":")))


# --- the cache --------------------------------------------------------------------------------------

def sample_latent(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A posterior sample ``mean + std * eps`` (raw latents; the codec's ``scale`` normalises them)."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * eps


class LatentCache(torch.utils.data.Dataset):
    """Index -> ``{"img_mean", "img_std"}`` (C, h, w) float32 raw latents, ``"mask"`` (H, W) long,
    ``"caption"``, ``"text_emb"`` (L, D) float32 (frozen text encoders only), ``"stem"`` and ``"flip"``.
    With ``random_flip`` each item is mirrored (latents and mask together) with probability 1/2."""

    sample_latent = staticmethod(sample_latent)

    def __init__(self, folder: str | os.PathLike, random_flip: bool = True, preload: bool | None = None):
        self.folder = Path(folder)
        self.meta = _read_meta(self.folder)
        samples = _read_json(self.folder / SAMPLES_NAME)
        self.stems: list[str] = samples["stems"]
        self.captions: list[str] = samples["captions"]
        self.random_flip = random_flip
        self.epoch, self.flip_seed = 0, 0
        self.fingerprint: str = self.meta["fingerprint"]
        self.resolution: tuple[int, int] = tuple(self.meta["resolution"])
        self.latent_shape: tuple[int, int, int] = tuple(self.meta["latent_shape"])
        self.has_text_embeddings: bool = self.meta["text_shape"] is not None
        self._shards = [self.folder / s["file"] for s in self.meta["shards"]]
        counts = [s["count"] for s in self.meta["shards"]]
        self._starts = np.cumsum([0, *counts])
        if preload is None:
            preload = sum(p.stat().st_size for p in self._shards) <= PRELOAD_MAX_BYTES
        self._data: dict[str, torch.Tensor] | None = None
        if preload:
            parts = [load_file(str(p)) for p in self._shards]
            self._data = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.meta["num_samples"])

    def __getstate__(self) -> dict[str, Any]:  # open file handles do not travel to DataLoader workers
        return {**self.__dict__, "_handles": {}}

    def _row(self, key: str, index: int) -> torch.Tensor:
        if self._data is not None:
            return self._data[key][index]
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self._shards[shard]), framework="pt")
        return self._handles[shard].get_slice(key)[int(index - self._starts[shard])]

    def get(self, index: int, flip: bool = False) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        k = int(bool(flip))
        mean = self._row("img_mean", index)[k].float()
        std = self._row("img_std", index)[k].float() if self.meta["has_std"] else torch.zeros_like(mean)
        mask = self.mask(index)
        item = {"img_mean": mean, "img_std": std, "mask": mask.flip(-1) if flip else mask,
                "caption": self.captions[index], "stem": self.stems[index], "flip": bool(flip), "index": index}
        if self.has_text_embeddings:
            item["text_emb"] = self._row("text_emb", index).float()
        return item

    def mask(self, index: int) -> torch.Tensor:
        """The resized mask of sample ``index`` (unflipped), without reading its image latents."""
        return self._row("mask", index).long()

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop's loader each epoch: flips are a function of (epoch, index),
        so a resumed run sees the same flips as an uninterrupted one."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        flip = False
        if self.random_flip:
            flip = bool(np.random.SeedSequence([self.flip_seed, self.epoch, int(index)]).generate_state(1)[0] & 1)
        return self.get(index, flip)

    def always_ignore(self, ignore_index: int) -> np.ndarray:
        """(H, W) bool: the pixels that are ``ignore_index`` in every cached mask (letterbox padding)."""
        if self._data is not None:
            return (self._data["mask"] == ignore_index).all(dim=0).numpy()
        always = None
        for i in range(len(self)):
            ignored = self._row("mask", i) == ignore_index
            always = ignored if always is None else always & ignored
        return always.numpy() if always is not None else np.zeros(self.resolution, dtype=bool)

    def latent_stats(self, max_samples: int = 1024) -> tuple[float, float]:
        """Mean and std of the posterior means over up to ``max_samples`` evenly spaced samples: a
        codec's ``shift_factor`` and ``1 / scaling_factor`` measured from this data."""
        idx = np.unique(np.linspace(0, len(self) - 1, min(max_samples, len(self))).round().astype(int))
        z = torch.stack([self._row("img_mean", int(i))[0].float() for i in idx])
        return float(z.mean()), float(z.std())

    # -- building -------------------------------------------------------------------------------------
    @classmethod
    def build_or_load(cls, dataset: SegmentationDataset, captions: Mapping[str, str] | str | os.PathLike,
                      codec: ImageCodec, text_encoder: TextEncoder, cache_dir: str | os.PathLike,
                      resolution: int | tuple[int, int] | None = None, batch_size: int = 16,
                      device: str | torch.device | None = None, progress: bool = True, *,
                      captions_file: str | os.PathLike | None = None, storage_dtype: torch.dtype = torch.float16,
                      shard_size: int = 1024, random_flip: bool = True, preload: bool | None = None,
                      resize: str = "letterbox") -> LatentCache:
        """The cache of ``dataset`` under ``cache_dir``: loaded when a valid one with the same
        fingerprint exists, otherwise built (images encoded by ``codec``, moved to ``device`` when
        given, as is a frozen ``text_encoder``). ``captions``: ``{stem: caption}`` or a captions file;
        ``captions_file`` names the file in error messages when a mapping is given. ``resolution``
        defaults to ``dataset.resolution``; pairs of another aspect ratio are fitted to it as ``resize``
        says (``data.transforms.resize_pair``). ``dataset.transform`` is not applied: the cache resizes
        and flips by itself, and random transforms cannot be cached."""
        if isinstance(captions, (str, os.PathLike)):
            captions_file = captions
            captions = read_captions(captions, split=getattr(dataset, "split", None))
        size = _resolve_resolution(dataset, resolution)
        codec.check_size(*size)
        stems = [dataset.stem(i) for i in range(len(dataset))]
        if not stems:
            raise DatasetError(f"{type(dataset).__name__} is empty; nothing to cache")
        texts = _captions_for(stems, captions, captions_file)
        identity = dataset_identity(dataset)
        fingerprint = {
            "format_version": CACHE_FORMAT_VERSION, "dataset": identity, "captions": _sha(json.dumps(texts)),
            "codec": codec_identity(codec), "text_encoder": text_encoder_identity(text_encoder),
            "resolution": list(size), "resize": RESIZE_METHODS[resize], "storage_dtype": str(storage_dtype),
        }
        digest = fingerprint_digest(fingerprint)
        cache_dir = Path(cache_dir).expanduser().absolute()
        final = cache_dir / f"{_slug(identity)}-{digest[:16]}"
        if _is_valid(final, digest):
            return cls(final, random_flip=random_flip, preload=preload)

        with _building(final):  # the build folders of dead builds are removed here
            if _is_valid(final, digest):  # built by another process while this one waited
                return cls(final, random_flip=random_flip, preload=preload)
            tmp = make_temp_dir(cache_dir, final.name)
            try:
                meta = _encode_all(dataset, texts, codec, text_encoder, tmp, size, batch_size, device, progress,
                                   storage_dtype, shard_size, desc=f"caching latents ({final.name})", resize=resize)
                write_json_atomic(tmp / SAMPLES_NAME, {"stems": stems, "captions": texts})
                meta.update(format_version=CACHE_FORMAT_VERSION, fingerprint=digest, identity=fingerprint,
                            codec=codec.to_dict(), text_encoder=text_encoder.to_dict(),
                            jodiffusion_version=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                write_json_atomic(tmp / META_NAME, meta)  # last: its presence marks a complete cache
                replace_folder(tmp, final)  # an incomplete or stale folder of the same name is replaced
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return cls(final, random_flip=random_flip, preload=preload)


# --- helpers ---------------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = _read_json(folder / META_NAME)
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{folder} is not a complete latent cache ({META_NAME}: {exc}); "
                           "delete it to rebuild") from None
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        raise DatasetError(f"{folder} was written in cache format {meta.get('format_version')}, this version "
                           f"reads {CACHE_FORMAT_VERSION}; delete it to rebuild")
    return meta


def _is_valid(folder: Path, digest: str) -> bool:
    """A complete cache with this fingerprint: meta, samples and every shard's header in order."""
    if not (folder / META_NAME).is_file():
        return False
    try:
        meta = _read_meta(folder)
        samples = _read_json(folder / SAMPLES_NAME)
        n = meta["num_samples"]
        if meta["fingerprint"] != digest or len(samples["stems"]) != n or len(samples["captions"]) != n:
            return False
        if sum(s["count"] for s in meta["shards"]) != n:
            return False
        for shard in meta["shards"]:
            with safe_open(str(folder / shard["file"]), framework="pt") as f:
                if any(f.get_slice(k).get_shape()[0] != shard["count"] for k in f.keys()):
                    return False
    except Exception:  # whatever is unreadable or malformed: not a valid cache, rebuild it
        return False
    return True


def _resolve_resolution(dataset: SegmentationDataset, resolution: int | tuple[int, int] | None) -> tuple[int, int]:
    if resolution is None:
        resolution = getattr(dataset, "resolution", None)
        if resolution is None:
            raise ValueError(f"{type(dataset).__name__} has no fixed resolution; pass resolution (the model's "
                             "image size) so that every image is resized and cropped to it")
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(int(s) for s in resolution)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"resolution must be a positive int or (height, width), got {resolution!r}")
    return size


def _captions_for(stems: list[str], captions: Mapping[str, str], captions_file: Any) -> list[str]:
    missing = [s for s in stems if s not in captions]
    if missing:
        where = f"captions file {captions_file}" if captions_file else "the captions given"
        more = f" (and {len(missing) - 1} other samples)" if len(missing) > 1 else ""
        raise DatasetError(f"no caption for sample '{missing[0]}'{more} in {where}; add a line "
                           f'{{"stem": "{missing[0]}", "caption": "..."}} or regenerate the file with '
                           "`jodiffusion caption`")
    return [captions[s] for s in stems]


@contextlib.contextmanager
def _building(final: Path) -> Iterator[None]:
    """Hold the lock of the cache folder ``final`` for its build; while another process holds it (building
    the same cache), wait for it, saying so once."""
    with contextlib.ExitStack() as stack:
        waiting = False
        while True:
            try:
                stack.enter_context(output_folder(final, CACHE_RULES, resume=True))
                break
            except FolderLockedError as exc:
                if not waiting:
                    log.info("waiting for the latent cache %s: %s", final.name, exc)
                    waiting = True
                time.sleep(LOCK_POLL_SECONDS)
        yield


def _load_batch(dataset: SegmentationDataset, indices: range, size: tuple[int, int], resize: str) -> list[tuple]:
    out = []
    for i in indices:
        image, mask = dataset.load_image(i), dataset.load_mask(i)
        if image.shape[:2] != mask.shape[:2]:
            raise DatasetError(f"sample '{dataset.stem(i)}': image {image.shape[1]}x{image.shape[0]} and mask "
                               f"{mask.shape[1]}x{mask.shape[0]} differ in size")
        out.append(resize_pair(image, mask, size, resize, dataset.classes.ignore_index))
    return out


def _encode_all(dataset, texts, codec, text_encoder, folder: Path, size, batch_size, device, progress,
                storage_dtype, shard_size, desc, resize: str = "letterbox") -> dict[str, Any]:
    """Encode every sample into shards under ``folder``; returns the shape part of the metadata."""

    if device is not None:
        codec.to(device)
        if not text_encoder.trainable:
            text_encoder.to(device)
    target = torch.device(device) if device is not None else codec.device
    frozen_text = not text_encoder.trainable
    has_std = not getattr(codec, "deterministic", False)
    n = len(dataset)
    buffers: dict[str, list[torch.Tensor]] = {}
    shards: list[dict[str, Any]] = []

    def flush(final: bool = False) -> None:
        while buffers:
            total = sum(len(t) for t in buffers["mask"])
            if total == 0 or (total < shard_size and not final):
                return
            joined = {k: torch.cat(v) for k, v in buffers.items()}
            count = min(shard_size, total)
            name = f"shard_{len(shards):05d}.safetensors"
            save_safetensors_atomic({k: v[:count] for k, v in joined.items()}, folder / name)
            shards.append({"file": name, "count": count})
            buffers.clear()
            if total > count:
                buffers.update({k: [v[count:]] for k, v in joined.items()})

    text_shape = None
    with (ThreadPoolExecutor(max_workers=1) as loader,
          progress_bar(total=n, desc=desc, unit="img", disable=not progress) as bar):
        # one loader thread reads the next batch while this one encodes (datasets need not be thread-safe)
        pending = loader.submit(_load_batch, dataset, range(0, min(n, batch_size)), size, resize)
        for start in range(0, n, batch_size):
            pairs = pending.result()
            nxt = start + batch_size
            if nxt < n:
                pending = loader.submit(_load_batch, dataset, range(nxt, min(n, nxt + batch_size)), size, resize)
            images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
            images = images.float().div(127.5).sub(1)
            b = len(pairs)
            mean, std = codec.encode_moments(torch.cat([images, images.flip(-1)]).to(target))
            latent_shape = tuple(mean.shape[1:])
            chunk = {"img_mean": mean.view(2, b, *latent_shape).transpose(0, 1).to("cpu", storage_dtype),
                     "mask": torch.from_numpy(np.stack([p[1] for p in pairs])).to(torch.uint8)}
            if has_std:
                chunk["img_std"] = std.view(2, b, *latent_shape).transpose(0, 1).to("cpu", storage_dtype)
            if frozen_text:
                with torch.no_grad():
                    emb = text_encoder.encode(texts[start:start + b])  # (B, L, D)
                chunk["text_emb"] = emb.to("cpu", torch.float16)
                text_shape = list(emb.shape[1:])
            for k, v in chunk.items():
                buffers.setdefault(k, []).append(v.contiguous())
            flush()
            bar.update(b)
    flush(final=True)
    return {"num_samples": n, "shards": shards, "resolution": list(size), "latent_shape": list(latent_shape),
            "has_std": has_std, "text_shape": text_shape, "storage_dtype": str(storage_dtype),
            "shard_size": shard_size}


__all__ = ["CACHE_FORMAT_VERSION", "LatentCache", "dataset_identity", "module_digest",
           "sample_latent"]
