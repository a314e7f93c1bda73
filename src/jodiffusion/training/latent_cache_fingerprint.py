"""What a latent cache depends on, hashed: its fingerprint names the cache's folder.

The fingerprint hashes everything the contents depend on: the dataset's identity (file sizes and times
for file datasets, the generator settings for ``shapes``), the captions, the codec and its weights, a
frozen text encoder and its weights, the resolution and resize method and the cache format; change any
of them and a new cache is built. The codec's scaling and shift factors are not part of it: the cache
holds raw latents.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import torch

from jodiffusion.data.base import FileSegmentationDataset, SegmentationDataset
from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.errors import DatasetError
from jodiffusion.models.image_codec import ImageCodec
from jodiffusion.models.text_encoder import TextEncoder


def sha(data: bytes | str) -> str:
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
                "num_images": len(dataset), "probe": sha(probe.image.tobytes() + probe.mask.tobytes())}
    if isinstance(dataset, FileSegmentationDataset):
        h = hashlib.sha256()
        for sample in dataset.samples:
            for path in (sample.image_path, sample.mask_path):
                try:
                    st = path.stat() if path is not None else None
                except OSError as exc:
                    raise DatasetError(f"{dataset.name}: cannot read {path}: {exc}") from None
                h.update(f"{sample.stem}|{path}|{st and st.st_size}|{st and st.st_mtime_ns}\n".encode())
        lut = None if dataset.label_lut is None else sha(dataset.label_lut.tobytes())
        return {"type": "files", "name": dataset.name, "num_samples": len(dataset), "files": h.hexdigest(),
                "label_lut": lut}
    stems = [dataset.stem(i) for i in range(len(dataset))]
    return {"type": type(dataset).__qualname__, "num_samples": len(stems), "stems": sha("\n".join(stems))}


def slug(identity: dict[str, Any]) -> str:
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
    return sha(json.dumps(fingerprint, sort_keys=True, separators=(",", ":")))


__all__ = ["codec_identity", "dataset_identity", "fingerprint_digest", "module_digest", "sha", "slug",
           "text_encoder_identity"]
