"""Building a latent cache, or loading the one already built: ``build_or_load_cache``.

Every image is encoded once by the frozen image codec (and its mirror image); a frozen text encoder
embeds every caption once. A build goes to a temporary folder beside the cache's folder that is renamed
into place only when complete, so an interrupted build is never taken for a valid cache. The builder
holds the cache folder's lock, beside it (``utils.output_folder``): the build folders of builds that died
are removed when the next one starts, and a process that needs the same cache while another builds it
waits for that build, then loads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jodiffusion import __version__
from jodiffusion.data.base import SegmentationDataset
from jodiffusion.data.captions import read_captions
from jodiffusion.data.transforms import resize_pair
from jodiffusion.errors import DatasetError
from jodiffusion.models.image_codec import ImageCodec
from jodiffusion.models.text_encoder import TextEncoder
from jodiffusion.training.latent_cache import LatentCache
from jodiffusion.training.latent_cache_fingerprint import (
    codec_identity,
    dataset_identity,
    fingerprint_digest,
    sha,
    slug,
    text_encoder_identity,
)
from jodiffusion.training.latent_cache_format import CACHE_FORMAT_VERSION, META_NAME, SAMPLES_NAME, is_valid
from jodiffusion.utils.io import replace_folder, save_safetensors_atomic, write_json_atomic
from jodiffusion.utils.lock import FolderLockedError
from jodiffusion.utils.output_folder import OutputRules, output_folder
from jodiffusion.utils.progress import progress_bar
from jodiffusion.utils.tempnames import make_temp_dir

log = logging.getLogger("jodiffusion")

RESIZE_METHODS = {"crop": "short-side resize (bicubic image, nearest mask) + center crop",
                  "letterbox": "long-side resize (bicubic image, nearest mask) + padding (black, ignore)"}
# built beside its folder and renamed in; only `jodiffusion train` builds one
CACHE_RULES = OutputRules("train", beside=True)
LOCK_POLL_SECONDS = 2.0  # how often a process waiting for another's build of the same cache looks again


def build_or_load_cache(dataset: SegmentationDataset, captions: Mapping[str, str] | str | os.PathLike,
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
        "format_version": CACHE_FORMAT_VERSION, "dataset": identity, "captions": sha(json.dumps(texts)),
        "codec": codec_identity(codec), "text_encoder": text_encoder_identity(text_encoder),
        "resolution": list(size), "resize": RESIZE_METHODS[resize], "storage_dtype": str(storage_dtype),
    }
    digest = fingerprint_digest(fingerprint)
    cache_dir = Path(cache_dir).expanduser().absolute()
    final = cache_dir / f"{slug(identity)}-{digest[:16]}"
    if is_valid(final, digest):
        return LatentCache(final, random_flip=random_flip, preload=preload)

    with _building(final):  # the build folders of dead builds are removed here
        if is_valid(final, digest):  # built by another process while this one waited
            return LatentCache(final, random_flip=random_flip, preload=preload)
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
    return LatentCache(final, random_flip=random_flip, preload=preload)


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


__all__ = ["CACHE_RULES", "RESIZE_METHODS", "build_or_load_cache"]
