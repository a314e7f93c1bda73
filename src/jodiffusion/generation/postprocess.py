"""What happens to a generated batch off the main thread: refinement, the quality filter, image encoding
and file writing, in a thread pool (PIL's encoders and scipy release the GIL)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jodiffusion.data.classes import ClassInfo
from jodiffusion.diffusion.sampling import sample_seed
from jodiffusion.generation import output as store
from jodiffusion.generation.config import GenerateConfig
from jodiffusion.masks.refine import refine_mask

log = logging.getLogger("jodiffusion")

@dataclass
class Batch:
    unit: int
    indices: list[int]
    prompts: list
    images: np.ndarray
    masks: np.ndarray
    write: set[int]  # indices whose files must be written (the others are done already)


class PostProcessor:
    def __init__(self, cfg: GenerateConfig, classes: ClassInfo, out: Path, identity: dict, pair_filter):
        self.cfg, self.classes, self.out, self.pair_filter = cfg, classes, out, pair_filter
        self.fingerprint = identity["model_fingerprint"]

    def _filter(self, images, masks, prompt_classes):
        if self.pair_filter is None:
            return [None] * len(masks)
        if hasattr(self.pair_filter, "filter_batch"):
            return self.pair_filter.filter_batch(list(images), list(masks), prompt_classes)
        return [self.pair_filter(i, m, c) for i, m, c in zip(images, masks, prompt_classes, strict=True)]

    def __call__(self, batch: Batch) -> list[tuple[dict, bytes | None, bytes | None]]:
        cfg, names = self.cfg, self.classes.names
        masks, stats = [], []
        for mask in batch.masks:
            if cfg.tau > 0:
                mask, st = refine_mask(mask, tau=cfg.tau, ignore_index=self.classes.ignore_index,
                                       background_id=self.classes.background)
                stats.append(st.to_dict())
            else:
                stats.append(None)
            masks.append(mask)
        results = self._filter(batch.images, masks, [set(p.classes) for p in batch.prompts])
        out = []
        for index, prompt, image, mask, st, res in zip(batch.indices, batch.prompts, batch.images, masks, stats,
                                                       results, strict=True):
            stem = store.stem_of(index)
            keep = res is None or bool(res.keep)
            if res is not None and keep:
                mask = np.asarray(res.mask, dtype=np.uint8)
            record = {"index": index, "stem": stem, "kept": keep, "reason": None if keep else res.reason,
                      "prompt": prompt.text, "prompt_source": prompt.source,
                      "prompt_classes": [names[c] for c in prompt.classes], "seed": cfg.seed,
                      "sample_seed": sample_seed(cfg.seed, index), "model": self.fingerprint, "refine": st,
                      "scores": _plain(res.scores) if res is not None else None}
            if not keep:
                out.append((record, None, None))
                continue
            counts = np.bincount(mask.ravel(), minlength=256)
            record["class_pixels"] = {names[k]: int(counts[k]) for k in range(len(names)) if counts[k]}
            record["ignore_pixels"] = int(counts[self.classes.ignore_index])
            image_bytes = store.encode_image(image, cfg.image_format, cfg.jpeg_quality)
            mask_bytes = store.encode_mask(mask, self.classes)
            if cfg.format == "folder":
                img_rel, mask_rel = store.folder_paths(stem, cfg.split, cfg.image_format)
                record["files"] = {"image": img_rel, "mask": mask_rel}
                if index in batch.write:  # image, then mask; the record (the "done" mark) comes last
                    store.write_bytes_atomic(self.out / img_rel, image_bytes)
                    store.write_bytes_atomic(self.out / mask_rel, mask_bytes)
                image_bytes = mask_bytes = None
            else:
                record["files"] = {"shard": store.shard_name(index // cfg.shard_size)}
            out.append((record, image_bytes, mask_bytes))
        return out


def _plain(value):
    """JSON-safe copy of filter scores (numpy scalars -> Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
