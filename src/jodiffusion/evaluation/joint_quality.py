"""How good are generated pairs? Two measures, both computed without any human label:

* prompted-class precision / recall: the classes a prompt names against the classes present in the
  generated mask (above a minimum area). Precision: present classes that were asked for; recall:
  asked-for classes that are present. The dataset's background class (``ClassInfo.background``) is
  not counted on either side; where a dataset has none (CamVid, Cityscapes, ...) every class counts.
* image-mask agreement: a segmenter trained on the REAL data labels each generated image; the mIoU
  of its prediction against the generated mask says whether the mask describes the image.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from jodiffusion.data.classes import ClassInfo, classes_named, classes_present
from jodiffusion.evaluation.probe import probe_pairs
from jodiffusion.pipelines.batching import generate_batches
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline
from jodiffusion.report.viz import pairs_grid, save_png
from jodiffusion.segmentation.inference import predict
from jodiffusion.segmentation.metrics import ConfusionMatrix
from jodiffusion.segmentation.models import load_segmenter

__all__ = ["PromptAdherence", "evaluate_model", "evaluate_pairs", "generate_pairs",
           "not_applicable", "probe_model", "segmenter_predictor"]


@dataclass
class PromptAdherence:
    true_positive: int = 0
    present: int = 0
    named: int = 0

    def update(self, named: set[int], present: set[int]) -> None:
        self.true_positive += len(named & present)
        self.present += len(present)
        self.named += len(named)

    @property
    def precision(self) -> float:
        return 100.0 * self.true_positive / self.present if self.present else float("nan")

    @property
    def recall(self) -> float:
        return 100.0 * self.true_positive / self.named if self.named else float("nan")


def evaluate_pairs(prompts: Sequence[str], images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                   classes: ClassInfo, predict: Callable[[np.ndarray], np.ndarray] | None = None,
                   min_fraction: float = 0.005) -> dict:
    """Prompt adherence and (with ``predict``: (B, H, W, 3) uint8 -> (B, H, W) ids) image-mask agreement.

    A figure that cannot discriminate is None, with the reason under ``not_applicable`` (never a score
    of 100 that means nothing): see :func:`not_applicable`."""
    adherence = PromptAdherence()
    named_sets = set()
    for prompt, mask in zip(prompts, masks, strict=True):
        named = classes_named(prompt, classes)
        named_sets.add(frozenset(named))
        adherence.update(named, classes_present(mask, classes, min_fraction))
    result = {"pairs": len(prompts), "prompt_precision": adherence.precision, "prompt_recall": adherence.recall}
    if predict is not None:
        cm = ConfusionMatrix(classes.num_classes, classes.ignore_index)
        for start in range(0, len(images), 16):
            pred = predict(np.stack(images[start: start + 16]))
            cm.update(pred, np.stack(masks[start: start + 16]))
        result["agreement_miou"] = cm.miou()
        result["agreement_iou"] = {n: (None if np.isnan(v) else float(v))
                                   for n, v in zip(classes.names, cm.iou(), strict=True)}
    missing = not_applicable(classes, named_sets, adherence)
    for key in missing.keys() & result.keys():
        result[key] = None
    if missing:
        result["not_applicable"] = missing
    return result


def not_applicable(classes: ClassInfo, named_sets: set[frozenset], adherence: PromptAdherence) -> dict[str, str]:
    """{figure: why it cannot discriminate} for the figures of :func:`evaluate_pairs`.

    Prompted-class precision and recall compare what each prompt names with what its mask holds; when
    every prompt names the same classes (one caption for every image, or a dataset of one class besides
    its background) a model that ignores its prompt scores 100, so they say nothing. Agreement needs two
    classes to be more than a count of labelled pixels."""
    out = {}
    countable = [n for i, n in enumerate(classes.names) if i != classes.background]
    if len(countable) <= 1:
        reason = (f"one class ({', '.join(countable) or 'none'}) besides the background: every prompt names it, "
                  "so the figure cannot tell a prompt followed from one ignored")
    elif len(named_sets) <= 1:
        only = sorted(next(iter(named_sets), frozenset()))
        names = ", ".join(classes.names[i] for i in only) or "no class"
        reason = (f"every prompt names the same classes ({names}), so the figure cannot tell a prompt followed "
                  "from one ignored")
    else:
        reason = None
    if reason is not None:
        out["prompt_precision"] = out["prompt_recall"] = reason
    else:  # each undefined alone: no class drawn leaves recall a real 0, no class named leaves precision
        if not adherence.present:
            out["prompt_precision"] = "no class present in any generated mask"
        if not adherence.named:
            out["prompt_recall"] = "the prompts name no class of the dataset"
    if classes.num_classes < 2:
        out["agreement_miou"] = "the dataset has one class: every labelled pixel agrees"
    return out


def generate_pairs(pipe, prompts: Sequence[str], sampler=None, seed: int = 0, batch_size: int = 16, tau: int = 0,
                   progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One (image, mask) per prompt, in batches; pair i uses sample_seed(seed, i), whatever the batch size."""
    out = generate_batches(pipe, prompts, batch_size, seed=seed, sampler=sampler, refine_tau=tau, precision="auto",
                           progress=progress)
    return list(out.images), list(out.masks)


def segmenter_predictor(segmenter_dir, device) -> Callable[[np.ndarray], np.ndarray]:
    """A saved segmenter as ``(B, H, W, 3) uint8 -> (B, H, W) class ids``, loaded once onto ``device``."""
    net, seg_cfg = load_segmenter(segmenter_dir)
    net = net.to(device).eval()
    return lambda images: predict(net, images, input_size=seg_cfg.input_size)


def probe_model(pipe, prompts: Sequence[str], predict: Callable[[np.ndarray], np.ndarray] | None = None,
                sampler=None, seed: int = 0, batch_size: int = 32, tau: int = 0) -> dict:
    """The cheap quality figures of a model in training (its learning curves): one pair per prompt, then
    prompt adherence, the conditioning probe and, with ``predict`` (a real-data segmenter), image-mask
    agreement with its per-class IoU (shape fidelity). A flat dict of numbers (None: not applicable)."""
    images, masks = generate_pairs(pipe, prompts, sampler, seed, batch_size, tau)
    with torch.no_grad():
        result = evaluate_pairs(prompts, images, masks, pipe.classes, predict)
    figures = {k: result[k] for k in ("prompt_precision", "prompt_recall", "agreement_miou") if k in result}
    for name, value in result.get("agreement_iou", {}).items():
        figures[f"iou_{name}"] = value
    probe = probe_pairs(prompts, images, masks, pipe.classes)
    figures.update({k: v for k, v in probe.items() if k != "not_applicable"})
    return {k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)) for k, v in figures.items()}


def evaluate_model(model_dir, prompts: Sequence[str], segmenter_dir=None, steps: int | None = None,
                   guidance: float | None = None, batch_size: int = 16, seed: int = 0, tau: int = 20,
                   device: str | None = None, grid_path=None, progress: bool = True) -> dict:
    """Generate one pair per prompt with a trained model and score the pairs (see module doc)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = JoDiffusionPipeline.from_pretrained(model_dir, device=device)
    sampler = pipe.sampler.override(steps, guidance)
    start = time.perf_counter()
    images, masks = generate_pairs(pipe, prompts, sampler, seed, batch_size, tau, progress)
    seconds = time.perf_counter() - start
    predict = segmenter_predictor(segmenter_dir, device) if segmenter_dir is not None else None
    result = evaluate_pairs(prompts, images, masks, pipe.classes, predict)
    result["probe"] = probe_pairs(prompts, images, masks, pipe.classes)
    result.update(steps=sampler.steps, guidance_scale=sampler.guidance_scale, tau=tau, seed=seed,
                  seconds=round(seconds, 2), pairs_per_second=len(prompts) / max(seconds, 1e-9))
    if grid_path is not None:
        save_png(pairs_grid(images, masks, pipe.classes, [p[:48] for p in prompts], max_rows=12), grid_path)
    return result
