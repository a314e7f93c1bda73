"""The latent cache on disk: its files, the format version, and what makes a folder a complete cache.

A cache folder holds shards of safetensors (``img_mean``, ``img_std`` when the codec is not deterministic,
``mask``, and ``text_emb`` for a frozen text encoder; one row per sample), ``samples.json`` (stems and
captions) and ``meta.json`` (the shards, shapes, fingerprint and format version), written last: its
presence marks a complete cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

from jodiffusion.errors import DatasetError

CACHE_FORMAT_VERSION = 1
META_NAME = "meta.json"
SAMPLES_NAME = "samples.json"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = read_json(folder / META_NAME)
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{folder} is not a complete latent cache ({META_NAME}: {exc}); "
                           "delete it to rebuild") from None
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        raise DatasetError(f"{folder} was written in cache format {meta.get('format_version')}, this version "
                           f"reads {CACHE_FORMAT_VERSION}; delete it to rebuild")
    return meta


def is_valid(folder: Path, digest: str) -> bool:
    """A complete cache with this fingerprint: meta, samples and every shard's header in order."""
    if not (folder / META_NAME).is_file():
        return False
    try:
        meta = read_meta(folder)
        samples = read_json(folder / SAMPLES_NAME)
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


__all__ = ["CACHE_FORMAT_VERSION", "META_NAME", "SAMPLES_NAME", "is_valid", "read_json", "read_meta"]
