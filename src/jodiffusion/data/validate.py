"""Check a whole dataset before training on it, and report every problem at once.

``validate_dataset`` reads every sample and collects, each with its file name:

* ``missing-image`` / ``missing-mask``: a mask without an image or an image without a mask (readers
  keep such files as incomplete samples instead of dropping them); where a file with the same stem lies
  in another format or folder near the dataset (``PartnerFinder``), the message names it and the
  ``jodiffusion import`` command that reads such folders;
* ``unreadable-image`` / ``unreadable-mask``: a file that does not decode (truncated PNG/JPEG,
  something that is not an image at all);
* ``mask-not-single-channel``: an RGB(A) colour rendering instead of a label image;
* ``size-mismatch``: image and mask of different sizes;
* ``bad-labels``: mask values outside ``0..K-1`` and the ignore index, with the offending values and
  their pixel counts. For file datasets with a lookup table the *raw file values* are reported (the
  values a user finds when opening the file), e.g. ``21`` in a VOC mask or an unused COCO id;
* ``bad-image``: (in-memory datasets) an image array that is not ``(H, W, 3)``;
* ``empty``: a dataset without samples.

Findings that do not stop training are listed as *notes* (``ValidationReport.notes``), e.g. a 16-bit
grayscale image, which is read scaled to 8 bit (``base.image_to_rgb``); a 32-bit integer or float image
has no defined range and is an ``unreadable-image`` problem.

File datasets (``FileSegmentationDataset``) are checked on their files directly, decoding each image
and mask completely, in a thread pool to overlap I/O. Any other ``SegmentationDataset`` is checked
through ``load_image``/``load_mask`` (serially unless ``workers`` is given, since an in-memory dataset
need not be thread safe).

``ensure_valid`` runs the check and raises ``DatasetError`` with the full report when anything is
wrong; the training stages call it before they start.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from jodiffusion.data.base import SIXTEEN_BIT_MODES, FileSegmentationDataset, SegmentationDataset, image_to_rgb
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.partners import PartnerFinder
from jodiffusion.errors import DatasetError
from jodiffusion.utils.progress import progress_bar
from jodiffusion.utils.safe_load import link_note

MASK_MODES = ("L", "P", "I", "I;16")  # the single-channel modes base.read_mask accepts

KIND_TITLES = {
    "empty": "dataset has no samples",
    "missing-image": "mask without an image",
    "missing-mask": "image without a mask",
    "unreadable-image": "unreadable or corrupt image",
    "unreadable-mask": "unreadable or corrupt mask",
    "bad-image": "image is not an (H, W, 3) RGB array",
    "mask-not-single-channel": "mask is not a single-channel label image",
    "size-mismatch": "image and mask sizes differ",
    "bad-labels": "mask values outside the label space",
}


@dataclass(frozen=True)
class Problem:
    path: str  # the file concerned (the sample's stem for in-memory datasets)
    kind: str  # a key of KIND_TITLES
    message: str

    def to_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "message": self.message}


@dataclass
class ValidationReport:
    dataset: str
    num_samples: int
    classes: ClassInfo
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)  # worth knowing, but no reason to stop (see module doc)
    # Pixels per train id 0..K-1 over the readable masks, pixels of the ignore index, and the
    # offending (raw) values over the whole dataset: value -> (pixels, files).
    class_pixels: list[int] = field(default_factory=list)
    ignore_pixels: int = 0
    bad_values: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts_by_kind(self) -> dict[str, int]:
        counts = Counter(p.kind for p in self.problems)
        return {kind: counts[kind] for kind in _ordered_kinds(counts)}

    def format(self) -> str:
        k, ignore = self.classes.num_classes, self.classes.ignore_index
        head = f"dataset {self.dataset}: {self.num_samples} samples, {k} classes (ignore {ignore})"
        lines = []
        if self.ok:
            lines.append(f"{head}: OK, no problems found")
        else:
            files = len({p.path for p in self.problems})
            lines.append(f"{head}: {len(self.problems)} problem(s) in {files} file(s)")
            groups: dict[str, list[Problem]] = defaultdict(list)
            for p in self.problems:
                groups[p.kind].append(p)
            for kind in _ordered_kinds(groups):
                title = KIND_TITLES.get(kind, kind)
                if kind == "bad-labels":
                    title += f" (0..{k - 1} and {ignore})"
                lines.append(f"\n{title}: {len(groups[kind])}")
                lines.extend(f"  {p.path}: {p.message}" for p in sorted(groups[kind], key=lambda p: p.path))
            if self.bad_values:
                summary = ", ".join(f"{v} ({px} px in {n} file{'s' if n > 1 else ''})"
                                    for v, (px, n) in sorted(self.bad_values.items()))
                lines.append(f"\noffending label values over the dataset: {summary}")
        if self.notes:
            lines.append(f"\nnotes: {len(self.notes)}")
            lines.extend(f"  {p.path}: {p.message}" for p in sorted(self.notes, key=lambda p: p.path))
        empty = [self.classes.names[i] for i, n in enumerate(self.class_pixels) if n == 0]
        if self.class_pixels and empty:
            lines.append(f"note: {len(empty)} class(es) have no pixels in this split: {', '.join(empty)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "ok": self.ok,
            "num_samples": self.num_samples,
            "num_classes": self.classes.num_classes,
            "ignore_index": self.classes.ignore_index,
            "num_problems": len(self.problems),
            "counts_by_kind": self.counts_by_kind(),
            "problems": [p.to_dict() for p in self.problems],
            "notes": [p.to_dict() for p in self.notes],
            "bad_label_values": {str(v): {"pixels": px, "files": n} for v, (px, n) in
                                 sorted(self.bad_values.items())},
            "class_pixels": {name: n for name, n in zip(self.classes.names, self.class_pixels, strict=False)},
            "ignore_pixels": self.ignore_pixels,
        }


def _ordered_kinds(kinds) -> list[str]:
    order = list(KIND_TITLES)
    return sorted(kinds, key=lambda k: order.index(k) if k in order else len(order))


@dataclass
class _Result:
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    train_id_pixels: np.ndarray | None = None  # (256,) pixels per mapped value
    bad: dict[int, int] = field(default_factory=dict)  # offending raw value -> pixels


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "no details"
    return text if isinstance(exc, DatasetError) else f"{type(exc).__name__}: {text}"


def _check_values(values: np.ndarray, counts: np.ndarray, valid: np.ndarray | None, classes: ClassInfo,
                  lut: np.ndarray | None, path: str, raw: bool, result: _Result) -> None:
    """``values``/``counts``: the distinct values of a mask and their pixel counts."""
    values = values.astype(np.int64)
    if valid is not None:
        in_table = (values >= 0) & (values < 256)
        ok = np.zeros(values.shape, dtype=bool)
        ok[in_table] = valid[values[in_table]]
    else:
        ok = ((values >= 0) & (values < classes.num_classes)) | (values == classes.ignore_index)
    mapped = values[ok]
    if lut is not None:
        mapped = lut[mapped].astype(np.int64)
    hist = np.zeros(256, dtype=np.int64)
    keep = (mapped >= 0) & (mapped < 256)
    np.add.at(hist, mapped[keep], counts[ok][keep])
    result.train_id_pixels = hist
    if not ok.all():
        bad = {int(v): int(c) for v, c in zip(values[~ok], counts[~ok], strict=True)}
        result.bad = bad
        listed = ", ".join(f"{v} ({c} px)" for v, c in sorted(bad.items()))
        space = f"0..{classes.num_classes - 1} and {classes.ignore_index}"
        what = "raw file values not in the dataset's label mapping" if raw else f"values outside {space}"
        result.problems.append(Problem(path, "bad-labels", f"{what}: {listed}"))


def _unique_counts(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if arr.dtype == np.uint8:
        counts = np.bincount(arr.ravel(), minlength=256)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(arr, return_counts=True)


def _check_file_sample(ds: FileSegmentationDataset, index: int, valid: np.ndarray | None,
                       partners: PartnerFinder | None = None) -> _Result:
    sample = ds.samples[index]
    result = _Result()
    image_size = mask_size = None
    if sample.image_path is None:
        where = str(sample.mask_path) if sample.mask_path is not None else sample.stem
        hint = partners.hint(sample.mask_path, sample.stem, "image") if partners and sample.mask_path else ""
        result.problems.append(Problem(where, "missing-image", f"no image for sample '{sample.stem}'{hint}"))
    else:
        try:
            with Image.open(sample.image_path) as im:
                im.load()
                if im.mode != "RGB":
                    image_to_rgb(im, sample.image_path)  # what base.read_image does; fails for unsupported modes
                if im.mode in SIXTEEN_BIT_MODES:
                    result.notes.append(Problem(
                        str(sample.image_path), "image-16-bit",
                        f"16-bit grayscale image (mode {im.mode}): read scaled to 8 bit (value * 255 / 65535) "
                        "as grey RGB"))
                image_size = im.size
        except Exception as exc:  # every decoder failure is a finding, not a crash
            result.problems.append(Problem(str(sample.image_path), "unreadable-image",
                                           _describe(exc) + link_note(sample.image_path)))
    if sample.mask_path is None:
        where = str(sample.image_path) if sample.image_path is not None else sample.stem
        hint = partners.hint(sample.image_path, sample.stem, "mask") if partners and sample.image_path else ""
        result.problems.append(Problem(where, "missing-mask", f"no mask for sample '{sample.stem}'{hint}"))
        return result
    mask_path = str(sample.mask_path)
    try:
        with Image.open(sample.mask_path) as im:
            im.load()
            mode, mask_size = im.mode, im.size
            arr = np.asarray(im) if mode in MASK_MODES else None
    except Exception as exc:
        result.problems.append(Problem(mask_path, "unreadable-mask", _describe(exc) + link_note(sample.mask_path)))
        return result
    if arr is None:
        result.problems.append(Problem(
            mask_path, "mask-not-single-channel",
            f"mode {mode}; expected a single-channel label PNG (mode L or P) of class ids, "
            "not a colour image"))
    if image_size is not None and image_size != mask_size:
        result.problems.append(Problem(
            mask_path, "size-mismatch",
            f"mask is {mask_size[0]}x{mask_size[1]} but image {Path(sample.image_path).name} is "
            f"{image_size[0]}x{image_size[1]} (width x height)"))
    if arr is not None:
        values, counts = _unique_counts(arr)
        _check_values(values, counts, valid, ds.classes, ds.label_lut, mask_path,
                      raw=ds.label_lut is not None, result=result)
    return result


def _check_loaded_sample(ds: SegmentationDataset, index: int) -> _Result:
    result = _Result()
    try:
        where = str(ds.stem(index))
    except Exception:
        where = f"sample {index}"
    image = mask = None
    try:
        image = np.asarray(ds.load_image(index))
    except Exception as exc:  # DatasetError or whatever the dataset raises
        kind = "missing-image" if "has no image" in str(exc) else "unreadable-image"
        result.problems.append(Problem(where, kind, _describe(exc)))
    try:
        mask = np.asarray(ds.load_mask(index))
    except Exception as exc:
        kind = "missing-mask" if "has no mask" in str(exc) else "unreadable-mask"
        result.problems.append(Problem(where, kind, _describe(exc)))
    if image is not None and (image.ndim != 3 or image.shape[2] != 3):
        result.problems.append(Problem(where, "bad-image",
                                       f"image has shape {image.shape}, expected (H, W, 3)"))
    if mask is None:
        return result
    if mask.ndim != 2:
        result.problems.append(Problem(where, "mask-not-single-channel",
                                       f"mask has shape {mask.shape}, expected (H, W)"))
        return result
    if image is not None and image.ndim >= 2 and image.shape[:2] != mask.shape:
        result.problems.append(Problem(where, "size-mismatch",
                                       f"mask is {mask.shape[1]}x{mask.shape[0]} but image is "
                                       f"{image.shape[1]}x{image.shape[0]} (width x height)"))
    if not np.issubdtype(mask.dtype, np.integer):
        if mask.size and not np.array_equal(mask, np.round(mask)):
            result.problems.append(Problem(where, "bad-labels",
                                           f"mask dtype {mask.dtype} holds non-integer values"))
            return result
        mask = mask.astype(np.int64)
    values, counts = _unique_counts(mask)
    _check_values(values, counts, None, ds.classes, None, where, raw=False, result=result)
    return result


def default_workers() -> int:
    return max(1, min(8, 2 * (os.cpu_count() or 1)))


def validate_dataset(dataset: SegmentationDataset, progress: bool = True,
                     workers: int | None = None) -> ValidationReport:
    """Scan every sample of ``dataset`` and return a report listing every problem found."""

    classes: ClassInfo = dataset.classes
    name = getattr(dataset, "name", None) or type(dataset).__name__
    n = len(dataset)
    report = ValidationReport(dataset=str(name), num_samples=n, classes=classes)
    if n == 0:
        report.problems.append(Problem(str(name), "empty", "the dataset has no samples"))
        return report

    if isinstance(dataset, FileSegmentationDataset):
        valid = None
        if dataset.label_lut is not None:
            lut = dataset.label_lut
            valid = (lut < classes.num_classes) | (lut == classes.ignore_index)

        partners = PartnerFinder()

        def check(i: int) -> _Result:
            return _check_file_sample(dataset, i, valid, partners)

        workers = default_workers() if workers is None else workers
    else:
        def check(i: int) -> _Result:
            return _check_loaded_sample(dataset, i)

        workers = 1 if workers is None else workers

    total_hist = np.zeros(256, dtype=np.int64)
    bad_pixels: Counter[int] = Counter()
    bad_files: Counter[int] = Counter()
    bar = progress_bar(total=n, desc=f"validate {name}", unit="sample", disable=not progress, leave=False)
    try:
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="validate") as pool:
                results = pool.map(check, range(n))
                for result in results:
                    _collect(result, report, total_hist, bad_pixels, bad_files)
                    bar.update(1)
        else:
            for i in range(n):
                _collect(check(i), report, total_hist, bad_pixels, bad_files)
                bar.update(1)
    finally:
        bar.close()
    report.class_pixels = [int(c) for c in total_hist[: classes.num_classes]]
    if 0 <= classes.ignore_index < 256:
        report.ignore_pixels = int(total_hist[classes.ignore_index])
    report.bad_values = {v: (bad_pixels[v], bad_files[v]) for v in sorted(bad_pixels)}
    return report


def _collect(result: _Result, report: ValidationReport, hist: np.ndarray, bad_pixels: Counter,
             bad_files: Counter) -> None:
    report.problems.extend(result.problems)
    report.notes.extend(result.notes)
    if result.train_id_pixels is not None:
        hist += result.train_id_pixels
    for value, pixels in result.bad.items():
        bad_pixels[value] += pixels
        bad_files[value] += 1


def ensure_valid(dataset: SegmentationDataset, progress: bool = True,
                 workers: int | None = None) -> ValidationReport:
    """Validate ``dataset``; raise ``DatasetError`` with the full report when anything is wrong."""
    report = validate_dataset(dataset, progress=progress, workers=workers)
    if not report.ok:
        raise DatasetError(
            report.format()
            + "\n\nFix, replace or remove the files listed above (missing partners: add the missing file "
            "or delete the orphan; bad label values: check the dataset name and its label encoding), "
            "then start again. `jodiffusion validate --dataset NAME --root PATH` re-checks a dataset "
            "without training.")
    return report
