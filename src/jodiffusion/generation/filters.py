"""Quality stage for generated pairs: drop degenerate pairs and clean masks a segmenter contradicts.

Two kinds of checks run on every generated (image, mask) pair, in this order:

1. Degenerate masks (cheap, no network), each a drop with its reason:

   * ``empty``: less than ``min_foreground`` of the pixels hold a real (non-background, non-ignore)
     class; such pairs teach a segmenter nothing but "everything is background". The background is
     the dataset's ``ClassInfo.background``; without one, every class id is real.
   * ``mostly ignore``: more than ``max_ignore`` of the pixels are ``ignore_index``.
   * ``missing classes``: a class the prompt asked for covers less than ``min_class_fraction`` of the
     labelled pixels (the generator ignored part of the prompt, so the caption and mask disagree).

2. Consistency with a segmenter trained on REAL data (optional, ``consistency_segmenter``). A pixel is
   *confidently disagreeing* when the segmenter's most likely class differs from the generated label
   and its probability reaches the threshold of the pixel's generated class (``class_confidence`` by
   class name, else the global ``confidence``). Class-wise thresholds follow FreeMask: classes a
   segmenter is weak on (rare, small) get a higher bar, so that their pixels are not overruled by a
   segmenter that merely never learnt them.

   * ``consistency_mode="ignore"``: those pixels become ``ignore_index`` (the downstream segmenter
     skips them); the pair is then dropped as ``mostly ignore`` if too little label is left.
   * ``consistency_mode="drop"``: the pair is dropped as ``disagreement`` when the disagreeing share of
     the labelled pixels exceeds ``max_disagreement``; kept pairs are left as they are.

Only pairs that survive step 1 reach the segmenter, and :meth:`PairFilter.filter_batch` runs it once
per batch (per image size). The filter keeps running totals for :meth:`PairFilter.summary`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from jodiffusion.data.classes import ClassInfo, classes_present
from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.segmentation.inference import predict_proba
from jodiffusion.segmentation.models import load_segmenter

log = logging.getLogger("jodiffusion")

CONSISTENCY_MODES = ("ignore", "drop")
# Drop reasons, as they appear in FilterResult.reason and in summary()["dropped"].
EMPTY = "empty"
MOSTLY_IGNORE = "mostly ignore"
MISSING_CLASSES = "missing classes"
DISAGREEMENT = "disagreement"

# (B, H, W, 3) uint8 images -> (B, K, H, W) class probabilities
PredictFn = Callable[[np.ndarray], np.ndarray]


def _fraction(name: str, value: float, *, open_low: bool = False) -> None:
    ok = (0.0 < value <= 1.0) if open_low else (0.0 <= value <= 1.0)
    if not ok:
        bound = "in (0, 1]" if open_low else "in [0, 1]"
        raise ValueError(f"filter.{name}={value} must be a fraction {bound}")


@dataclass
class FilterConfig:
    enabled: bool = True
    # Degenerate pairs. Fractions of the image's pixels (min_foreground, max_ignore) or, for
    # min_class_fraction, of its labelled (non-ignore) pixels, as in evaluation.joint_quality.
    min_foreground: float = 0.01
    max_ignore: float = 0.5
    require_prompted_classes: bool = True
    min_class_fraction: float = 0.005
    # Consistency with a segmenter folder exported by `jodiffusion train-seg` (<run>/segmenter).
    consistency_segmenter: str | None = None
    consistency_mode: str = "ignore"      # "ignore" or "drop" (see the module doc)
    confidence: float = 0.9               # segmenter probability needed to overrule a generated label
    class_confidence: dict[str, float] | None = None  # per generated class name, overrides `confidence`
    max_disagreement: float = 0.3         # drop mode: largest tolerated share of overruled labelled pixels

    def __post_init__(self):
        _fraction("min_foreground", self.min_foreground)
        _fraction("max_ignore", self.max_ignore)
        _fraction("min_class_fraction", self.min_class_fraction)
        _fraction("confidence", self.confidence, open_low=True)
        _fraction("max_disagreement", self.max_disagreement)
        if self.consistency_mode not in CONSISTENCY_MODES:
            raise ConfigError(f"filter.consistency_mode='{self.consistency_mode}'; choose one of "
                             f"{', '.join(CONSISTENCY_MODES)}")
        if self.consistency_segmenter is not None and not str(self.consistency_segmenter).strip():
            raise ConfigError("filter.consistency_segmenter is empty; give a segmenter folder or leave it unset")
        if self.class_confidence is not None:
            if not isinstance(self.class_confidence, dict):
                raise ConfigError("filter.class_confidence must map class names to probabilities, "
                                 f"got {type(self.class_confidence).__name__}")
            # omegaconf hands over a DictConfig-like mapping: store a plain dict of floats
            self.class_confidence = {str(k): float(v) for k, v in self.class_confidence.items()}
            for name, value in self.class_confidence.items():
                _fraction(f"class_confidence[{name}]", value, open_low=True)


@dataclass
class FilterResult:
    keep: bool
    mask: np.ndarray            # the (possibly cleaned) mask to write when ``keep``
    scores: dict                # foreground, ignore, missing_classes, and disagreement / ignored_pixels
    reason: str | None = None   # why the pair was dropped; None when kept


@dataclass
class _Totals:
    seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    ignored_pixels: np.ndarray | None = None  # per class: pixels set to ignore by the consistency filter


class PairFilter:
    """Checks generated pairs (see the module doc); keeps running totals for :meth:`summary`.

    ``predict_fn`` maps (B, H, W, 3) uint8 images to (B, K, H, W) class probabilities; without it the
    consistency check is off. :func:`build_pair_filter` builds one from a segmenter folder.
    """

    def __init__(self, cfg: FilterConfig, classes: ClassInfo, predict_fn: PredictFn | None = None,
                 segmenter: str | None = None):
        self.cfg = cfg
        self.classes = classes
        self.predict_fn = predict_fn
        self.segmenter = segmenter  # shown in summary() only
        k = classes.num_classes
        self.background = np.array([classes.is_background(c) for c in range(k)], dtype=bool)
        # Threshold by generated class id; ids >= K (ignore and stray values) never take part.
        self.thresholds = np.full(k, cfg.confidence, dtype=np.float32)
        unknown = sorted(set(cfg.class_confidence or {}) - set(classes.names))
        if unknown:
            raise ConfigError(f"filter.class_confidence names unknown classes: {', '.join(unknown)}; "
                              f"valid names: {', '.join(classes.names)}")
        for name, value in (cfg.class_confidence or {}).items():
            self.thresholds[classes.names.index(name)] = value
        self._totals = _Totals(ignored_pixels=np.zeros(k, dtype=np.int64))
        # (top, bottom, left, right): the model's padding (``JoDiffusionPipeline.padding``), ignore by design;
        # the shares of foreground and ignore are taken over the picture inside it
        self.padding: tuple[int, int, int, int] | None = None

    # --- single checks ---------------------------------------------------------------------------

    def _degenerate(self, mask: np.ndarray, prompt_classes: set[int]) -> tuple[str | None, dict]:
        """Drop reason (or None) and scores of the mask-only checks."""
        k, ignore = self.classes.num_classes, self.classes.ignore_index
        if self.padding:
            top, bottom, left, right = self.padding
            mask = mask[top:mask.shape[0] - bottom, left:mask.shape[1] - right]
        counts = np.bincount(mask.ravel(), minlength=256)
        total = max(int(mask.size), 1)
        foreground = float(counts[:k][~self.background].sum()) / total
        ignored = float(counts[ignore]) / total
        asked = {c for c in prompt_classes if 0 <= c < k and not self.background[c]}
        present = classes_present(mask, self.classes, self.cfg.min_class_fraction)
        missing = sorted(asked - present)
        scores = {"foreground": foreground, "ignore": ignored,
                  "missing_classes": [self.classes.names[c] for c in missing]}
        if foreground < self.cfg.min_foreground:
            return EMPTY, scores
        if ignored > self.cfg.max_ignore:
            return MOSTLY_IGNORE, scores
        if self.cfg.require_prompted_classes and missing:
            return MISSING_CLASSES, scores
        return None, scores

    def _disagreeing(self, mask: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """(H, W) bool: labelled pixels whose label the segmenter confidently contradicts."""
        k = self.classes.num_classes
        if probs.shape[0] != k:
            raise ConfigError(f"the consistency segmenter gives {probs.shape[0]} classes; the generated pairs "
                              f"have {k} ({', '.join(self.classes.names)})")
        pred = probs.argmax(0)
        conf = probs.max(0)
        labelled = mask < k
        threshold = self.thresholds[np.where(labelled, mask, 0)]
        return labelled & (pred != mask) & (conf >= threshold)

    def _consistency(self, mask: np.ndarray, probs: np.ndarray, scores: dict) -> FilterResult:
        bad = self._disagreeing(mask, probs)
        labelled = int((mask < self.classes.num_classes).sum())
        scores["disagreement"] = float(bad.sum()) / max(labelled, 1)
        if self.cfg.consistency_mode == "drop":
            if scores["disagreement"] > self.cfg.max_disagreement:
                return FilterResult(False, mask, scores, DISAGREEMENT)
            return FilterResult(True, mask, scores, None)
        cleaned = mask.copy()
        cleaned[bad] = self.classes.ignore_index
        scores["ignored_pixels"] = int(bad.sum())
        scores["ignore"] = float((cleaned == self.classes.ignore_index).sum()) / max(cleaned.size, 1)
        if scores["ignore"] > self.cfg.max_ignore:  # too little trustworthy label left
            return FilterResult(False, cleaned, scores, MOSTLY_IGNORE)
        # counted only for pairs that are written: the summary says what the written data lost
        self._totals.ignored_pixels += np.bincount(mask[bad], minlength=self.classes.num_classes)[
            : self.classes.num_classes]
        return FilterResult(True, cleaned, scores, None)

    def _record(self, result: FilterResult) -> FilterResult:
        self._totals.seen += 1
        if result.keep:
            self._totals.kept += 1
        else:
            self._totals.dropped[result.reason] += 1
        return result

    # --- public API --------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray, mask: np.ndarray, prompt_classes: set[int]) -> FilterResult:
        return self.filter_batch([image], [mask], [prompt_classes])[0]

    def filter_batch(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                     prompt_classes_list: Sequence[set[int]]) -> list[FilterResult]:
        """One result per pair; the segmenter runs once per image size on the pairs that pass the
        degenerate checks."""
        if not len(images) == len(masks) == len(prompt_classes_list):
            raise ValueError(f"filter_batch: {len(images)} images, {len(masks)} masks and "
                             f"{len(prompt_classes_list)} prompt class sets; give one of each per pair")
        results: list[FilterResult | None] = [None] * len(masks)
        pending: dict[tuple[int, int], list[tuple[int, dict]]] = {}
        for i, (image, mask, asked) in enumerate(zip(images, masks, prompt_classes_list, strict=True)):
            mask = np.asarray(mask)
            if mask.ndim != 2 or mask.dtype != np.uint8:
                raise ValueError(f"pair {i}: mask must be (H, W) uint8, got {mask.shape} {mask.dtype}")
            if image.shape[:2] != mask.shape:
                raise ValueError(f"pair {i}: image {image.shape[:2]} and mask {mask.shape} differ in size")
            reason, scores = self._degenerate(mask, set(asked))
            if reason is not None or self.predict_fn is None:
                results[i] = FilterResult(reason is None, mask, scores, reason)
            else:
                pending.setdefault(mask.shape, []).append((i, scores))
        for group in pending.values():
            batch = np.stack([np.asarray(images[i], dtype=np.uint8) for i, _ in group])
            probs = np.asarray(self.predict_fn(batch))
            if probs.ndim != 4 or probs.shape[0] != len(group) or probs.shape[2:] != batch.shape[1:3]:
                raise ValueError(f"predict_fn returned {probs.shape}; expected (B, K, H, W) = "
                                 f"({len(group)}, K, {batch.shape[1]}, {batch.shape[2]})")
            for (i, scores), p in zip(group, probs, strict=True):
                results[i] = self._consistency(np.asarray(masks[i]), p, scores)
        return [self._record(r) for r in results]

    def summary(self) -> dict:
        """Thresholds used, pairs seen / kept / dropped by reason, pixels set to ignore per class."""
        t = self._totals
        out = {"thresholds": asdict(self.cfg), "segmenter": self.segmenter,
               "class_thresholds": ({n: float(v) for n, v in zip(self.classes.names, self.thresholds, strict=True)}
                                    if self.predict_fn is not None else None),
               "seen": t.seen, "kept": t.kept, "dropped": dict(t.dropped),
               "dropped_total": int(sum(t.dropped.values()))}
        out["ignored_pixels"] = {n: int(v) for n, v in zip(self.classes.names, t.ignored_pixels, strict=True)}
        return out


def build_pair_filter(cfg: FilterConfig, classes: ClassInfo, device=None) -> PairFilter | None:
    """The filter ``cfg`` describes, with its segmenter loaded on ``device``; None when disabled."""
    if not cfg.enabled:
        return None
    pair_filter = PairFilter(cfg, classes)  # checks the class names before a segmenter is loaded
    if cfg.consistency_segmenter is not None:
        folder = Path(cfg.consistency_segmenter).expanduser()
        if not folder.is_dir():
            raise CheckpointError(f"filter.consistency_segmenter: {folder} is not a folder; give the segmenter "
                                  "exported by `jodiffusion train-seg` (<output_dir>/segmenter), or unset it to "
                                  "skip the consistency filter")
        net, seg_cfg = load_segmenter(folder)
        if tuple(seg_cfg.class_names) != tuple(classes.names):
            raise ConfigError(f"the consistency segmenter {folder} was trained on classes "
                              f"({', '.join(seg_cfg.class_names)}) but the generated pairs have "
                              f"({', '.join(classes.names)}); train it on the real dataset of this model")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        net = net.to(dev)

        def predict_fn(images: np.ndarray) -> np.ndarray:
            return predict_proba(net, images, seg_cfg.input_size)

        pair_filter.predict_fn, pair_filter.segmenter = predict_fn, str(folder)
    where = pair_filter.segmenter
    log.info("pair filter: min_foreground=%s max_ignore=%s prompted classes %s%s", cfg.min_foreground,
             cfg.max_ignore, "required" if cfg.require_prompted_classes else "not required",
             f"; consistency ({cfg.consistency_mode}) with {where}" if where else "")
    return pair_filter
