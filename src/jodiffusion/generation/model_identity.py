"""Which model a generated folder came from: a content fingerprint of the model folder (cached by
file size and mtime, so a large model is hashed once) and the classes it was trained on."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from jodiffusion.data.classes import ClassInfo
from jodiffusion.errors import CheckpointError
from jodiffusion.pipelines.model_folder import MANIFEST
from jodiffusion.utils.io import write_json_atomic

log = logging.getLogger("jodiffusion")

def _fingerprint_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jodiffusion" / "fingerprints.json"


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the model folder's files (configs, vocabulary, weights), by relative path.

    Weight files are hashed once per (path, size, mtime) and remembered in ~/.cache/jodiffusion. A text
    encoder that is only a reference (a CLIP model id) enters through jodiffusion.json, not its weights."""
    model_dir = Path(model_dir).resolve()
    cache_path = _fingerprint_cache()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    total, dirty = hashlib.sha256(), False
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        st = path.stat()
        key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
        digest = cache.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):  # noqa: B023 - f is the loop's own file
                    h.update(chunk)
            digest = h.hexdigest()
            if path.stat().st_size > 1 << 20:
                cache[key], dirty = digest, True
        total.update(f"{path.relative_to(model_dir).as_posix()}\0{digest}\n".encode())
    if dirty:  # forget files that are gone (temporary models), so that the cache does not grow forever
        cache = {k: v for k, v in cache.items() if Path(k.rsplit(":", 2)[0]).is_file()}
        try:
            write_json_atomic(cache_path, cache)
        except OSError:
            pass  # only a cache
    return total.hexdigest()[:24]


def read_model_classes(model_dir: str | Path) -> ClassInfo:
    path = Path(model_dir) / MANIFEST
    try:
        return ClassInfo.from_dict(json.loads(path.read_text())["classes"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{model_dir} is not a JoDiffusion model folder (no readable {MANIFEST}); pass the "
                              "folder written by `jodiffusion train` (its export/ sub-folder)") from None
