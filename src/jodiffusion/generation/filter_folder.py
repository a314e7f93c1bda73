"""The quality filter of ``generate`` (``filters.py``) run on pairs already on disk.

``generate`` filters while it samples and generates more pairs until enough are kept. The pipeline
instead filters the set it has already generated, once the real-data segmenter exists: nothing is
sampled again, and the segmenters trained on the filtered and the unfiltered set see the same
generated pairs, so their scores differ by the filter alone. The result is a folder dataset of the
kept pairs (images copied byte for byte; masks as the filter left them, e.g. with contradicted pixels
set to ignore), with ``filter.json`` (the filter's summary: thresholds, seen / kept / dropped by
reason) and ``manifest.jsonl`` (every pair's decision and scores).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from jodiffusion.data.layout import CLASSES_FILE, IMAGES_DIR, MASKS_DIR, save_mask_png
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.errors import DatasetError
from jodiffusion.generation.filters import FilterConfig, build_pair_filter
from jodiffusion.generation.output import MANIFEST_FILE
from jodiffusion.utils.io import replace_folder, write_json_atomic, write_text_atomic
from jodiffusion.utils.progress import progress_bar

log = logging.getLogger("jodiffusion")

SUMMARY_FILE = "filter.json"


def _prompt_classes(source: Path, names: tuple[str, ...]) -> dict[str, set[int]]:
    """``{stem: class ids the prompt asked for}`` from generate's manifest; empty without one (the
    prompted-class check then has nothing to check)."""
    path = source / MANIFEST_FILE
    if not path.is_file():
        return {}
    asked = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("kept", True) and "stem" in record:
            asked[record["stem"]] = {names.index(n) for n in record.get("prompt_classes") or [] if n in names}
    return asked


def filter_folder(source: str | Path, out: str | Path, cfg: FilterConfig, split: str = "train",
                  device: str | None = None, batch_size: int = 32, progress: bool = True) -> dict:
    """Write the pairs of ``source`` (a folder dataset, e.g. ``generate``'s output) that pass ``cfg`` to
    ``out`` (replaced as a whole, so an interrupted run leaves the old folder or the new one); returns
    the filter's summary with ``pairs`` (kept) and ``out``."""
    source, out = Path(source), Path(out)
    if not cfg.enabled:
        raise DatasetError("filter_folder: the filter is disabled (filter.enabled=false); nothing to do")
    dataset = read_folder(source, split)
    classes = dataset.classes
    pair_filter = build_pair_filter(cfg, classes, device)
    asked = _prompt_classes(source, tuple(classes.names))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        shutil.copyfile(source / CLASSES_FILE, tmp / CLASSES_FILE)
        (tmp / IMAGES_DIR / split).mkdir(parents=True)
        (tmp / MASKS_DIR / split).mkdir(parents=True)
        records = []
        bar = progress_bar(total=len(dataset), desc="filter pairs", unit="pair", disable=not progress)
        for first in range(0, len(dataset), batch_size):
            indices = range(first, min(first + batch_size, len(dataset)))
            stems = [dataset.stem(i) for i in indices]
            results = pair_filter.filter_batch([dataset.load_image(i) for i in indices],
                                               [dataset.load_mask(i) for i in indices],
                                               [asked.get(s, set()) for s in stems])
            for i, stem, result in zip(indices, stems, results, strict=True):
                records.append({"stem": stem, "kept": bool(result.keep), "reason": result.reason,
                                "scores": json.loads(json.dumps(result.scores, default=float))})
                if result.keep:
                    image_path = Path(dataset.samples[i].image_path)
                    shutil.copyfile(image_path, tmp / IMAGES_DIR / split / image_path.name)
                    save_mask_png(result.mask, tmp / MASKS_DIR / split / f"{stem}.png", classes)
            bar.update(len(stems))
        bar.close()
        summary = {**pair_filter.summary(), "source": str(source), "split": split}
        write_text_atomic(tmp / MANIFEST_FILE, "".join(json.dumps(r) + "\n" for r in records))
        write_json_atomic(tmp / SUMMARY_FILE, summary)
        replace_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("filter: %d of %d pairs of %s kept (dropped: %s)", summary["kept"], summary["seen"], source,
             summary["dropped"] or "none")
    return {**summary, "pairs": summary["kept"], "out": str(out)}
