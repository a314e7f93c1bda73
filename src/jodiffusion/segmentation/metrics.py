"""Segmentation metrics: mIoU from a confusion matrix accumulated over a whole split.

IoU is computed once from the pixel counts of the whole split (not averaged per image), as
MMSegmentation and most papers do. **All scores are percentages (0..100).**

Conventions:

* Pixels whose *target* is ``ignore_index`` are skipped entirely (whatever was predicted there).
* Every other target value must be a class id ``0..K-1``; anything else raises ``DatasetError``.
* A *prediction* outside ``0..K-1`` (e.g. 255 or K) is counted as wrong: it is a false negative of
  the target's class and a false positive of no class. Such pixels are kept in a separate column
  (:attr:`ConfusionMatrix.invalid_predictions`) and do count in the pixel-accuracy denominator.
* The IoU of a class absent from both prediction and target (no TP, FP or FN) is NaN, and mIoU is the
  mean over the other classes (``nanmean``).
"""

from __future__ import annotations

import numpy as np
import torch

from jodiffusion.errors import DatasetError


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _check_integer(x, what: str) -> None:
    dtype = x.dtype
    is_int = (not (dtype.is_floating_point or dtype.is_complex) and dtype != _torch().bool
              if _is_torch(x) else np.issubdtype(dtype, np.integer))
    if not is_int:
        raise TypeError(f"{what} must hold integer class ids, got dtype {dtype}; for logits or "
                        "probabilities pass their argmax over the class dimension")


def _torch():
    return torch


class ConfusionMatrix:
    """Pixel confusion matrix of ``num_classes`` classes, rows = target class, columns = prediction.

    ``update`` can be called once per batch (numpy arrays or torch tensors of any equal shape);
    matrices of several processes or shards are summed with ``merge`` or ``+``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        # Column K counts predictions outside 0..K-1 for each target class.
        self.counts = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    # ---------------------------------------------------------------- accumulation
    def update(self, pred, target) -> ConfusionMatrix:
        """Add the pixels of a prediction/target pair (or batch) of the same shape; returns self."""
        pred = pred if _is_torch(pred) else np.asarray(pred)
        target = target if _is_torch(target) else np.asarray(target)
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target shape "
                             f"{tuple(target.shape)}")
        _check_integer(pred, "prediction")
        _check_integer(target, "target")
        k = self.num_classes
        if _is_torch(pred) and _is_torch(target):
            counts = self._bincount_torch(pred, target)
        else:
            if _is_torch(pred):
                pred = pred.detach().cpu().numpy()
            if _is_torch(target):
                target = target.detach().cpu().numpy()
            t = np.asarray(target).reshape(-1)
            p = np.asarray(pred).reshape(-1)
            valid = t != self.ignore_index
            t = t[valid].astype(np.int64)
            p = p[valid].astype(np.int64)
            self._check_target(t.min() if t.size else 0, t.max() if t.size else 0, t)
            p[(p < 0) | (p >= k)] = k
            counts = np.bincount(t * (k + 1) + p, minlength=k * (k + 1))
        self.counts += counts.reshape(k, k + 1)
        return self

    def _bincount_torch(self, pred, target) -> np.ndarray:
        torch = _torch()
        k = self.num_classes
        t = target.detach().reshape(-1)
        p = pred.detach().reshape(-1).to(t.device)
        valid = t != self.ignore_index
        t = t[valid].long()
        p = p[valid].long()
        if t.numel():
            self._check_target(int(t.min()), int(t.max()), t)
        p = torch.where((p < 0) | (p >= k), torch.full_like(p, k), p)
        return torch.bincount(t * (k + 1) + p, minlength=k * (k + 1)).cpu().numpy()

    def _check_target(self, lo: int, hi: int, t) -> None:
        if lo < 0 or hi >= self.num_classes:
            bad = t[(t < 0) | (t >= self.num_classes)]
            bad = sorted({int(v) for v in bad[:100000].tolist()})[:10]
            raise DatasetError(f"target contains label(s) {bad} outside 0..{self.num_classes - 1} that are "
                               f"not the ignore index {self.ignore_index}; map them to class ids or to "
                               "the ignore index (or check num_classes)")

    def reset(self) -> None:
        self.counts[:] = 0

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts into this matrix (e.g. from another process); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(f"cannot merge a confusion matrix of {other.num_classes} classes (ignore "
                             f"{other.ignore_index}) into one of {self.num_classes} classes (ignore "
                             f"{self.ignore_index})")
        self.counts += other.counts
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        result = ConfusionMatrix(self.num_classes, self.ignore_index)
        result.counts[:] = self.counts
        return result.merge(other)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    # ---------------------------------------------------------------- results
    @property
    def matrix(self) -> np.ndarray:
        """(K, K) counts: ``matrix[t, p]`` pixels of target class t predicted as class p."""
        return self.counts[:, : self.num_classes].copy()

    @property
    def invalid_predictions(self) -> np.ndarray:
        """(K,) counts of pixels of each target class predicted as a value outside 0..K-1."""
        return self.counts[:, self.num_classes].copy()

    @property
    def total(self) -> int:
        """Number of counted (non-ignore) pixels."""
        return int(self.counts.sum())

    def class_pixels(self) -> np.ndarray:
        """(K,) number of target pixels of each class."""
        return self.counts.sum(axis=1)

    def iou(self) -> np.ndarray:
        """(K,) per-class IoU in percent, NaN for classes absent from both prediction and target."""
        tp = np.diag(self.counts[:, : self.num_classes]).astype(np.float64)
        fn = self.counts.sum(axis=1) - tp
        fp = self.counts[:, : self.num_classes].sum(axis=0) - tp
        denom = tp + fp + fn
        out = np.full(self.num_classes, np.nan)
        present = denom > 0
        out[present] = 100.0 * tp[present] / denom[present]
        return out

    def miou(self) -> float:
        """Mean IoU in percent over the classes whose IoU is defined; NaN when no class is."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels, in percent; NaN when nothing was counted."""
        total = self.total
        return 100.0 * float(np.trace(self.counts[:, : self.num_classes])) / total if total else float("nan")

    def table(self, class_names: list[str] | tuple[str, ...] | None = None) -> str:
        """A per-class text table (name, IoU %, target pixel count) followed by mIoU and accuracy."""
        if class_names is None:
            class_names = [str(i) for i in range(self.num_classes)]
        if len(class_names) != self.num_classes:
            raise ValueError(f"got {len(class_names)} class names for {self.num_classes} classes")
        iou, pixels = self.iou(), self.class_pixels()
        width = max([len("class")] + [len(str(n)) for n in class_names])
        lines = [f"{'class':<{width}}  {'IoU (%)':>8}  {'pixels':>12}", "-" * (width + 24)]
        for name, v, n in zip(class_names, iou, pixels, strict=True):
            score = "-" if np.isnan(v) else f"{v:.2f}"
            lines.append(f"{name!s:<{width}}  {score:>8}  {int(n):>12}")
        lines.append("-" * (width + 24))
        miou, acc = self.miou(), self.pixel_accuracy()
        lines.append(f"{'mIoU':<{width}}  {'-' if np.isnan(miou) else f'{miou:.2f}':>8}  {self.total:>12}")
        lines.append(f"{'pixel acc.':<{width}}  {'-' if np.isnan(acc) else f'{acc:.2f}':>8}")
        return "\n".join(lines)

    def to_dict(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict:
        """JSON-ready scores (NaN written as None)."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        iou = self.iou()
        return {"miou": _none_if_nan(self.miou()), "pixel_accuracy": _none_if_nan(self.pixel_accuracy()),
                "iou": {str(n): _none_if_nan(float(v)) for n, v in zip(names, iou, strict=True)},
                "pixels": self.total}

    def __repr__(self) -> str:
        return (f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"pixels={self.total}, miou={self.miou():.2f})")


def _none_if_nan(v: float) -> float | None:
    return None if np.isnan(v) else v


def eval_report(cm: ConfusionMatrix, names, split: str) -> dict:
    """What eval.json holds for a model scored on a split: mIoU, pixel accuracy, IoU per class."""
    return {"split": split, **cm.to_dict(names)}
