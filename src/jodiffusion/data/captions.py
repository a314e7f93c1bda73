"""Captions: the text that conditions the joint image-mask model.

A captions file is JSON lines, one ``{"stem": ..., "caption": ...}`` per sample (an optional
``"split"`` key says which split the stem belongs to). Captions come from one of three sources:

* ``template``: built from the mask alone, e.g. ``"a photo of road, car and sky"`` (no model needed;
  the dataset's background class, ``ClassInfo.background``, is not named);
* ``blip2``: a BLIP-2 captioning model (``models/captioner.py``), from a local folder or a hub id;
* ``dataset``: the dataset's own captions (the embedded shapes dataset has them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.errors import DatasetError
from jodiffusion.models.captioner import DEFAULT_BLIP2_MODEL, Blip2Captioner
from jodiffusion.models.token_layout import CLIP_TEXT_TOKENS
from jodiffusion.utils.io import write_text_atomic
from jodiffusion.utils.progress import progress_bar

CAPTION_METHODS = ("template", "blip2", "dataset")
# Longest caption accepted. A text encoder reads CLIP_TEXT_TOKENS tokens (CLIP; the caption encoder fewer), a few
# hundred characters; anything far beyond is not a caption (a pasted file, a runaway generator) and would
# be copied into every captions.jsonl and manifest downstream. Refused with its line number.
MAX_CAPTION_CHARS = 2000


def check_caption_length(text: str, where: str, what: str = "caption") -> None:
    """Refuse a caption or prompt longer than ``MAX_CAPTION_CHARS``, naming ``where`` (file and line)."""
    if len(text) > MAX_CAPTION_CHARS:
        raise DatasetError(f"{where}: the {what} has {len(text):,} characters, more than the {MAX_CAPTION_CHARS} "
                           f"accepted (a text encoder reads {CLIP_TEXT_TOKENS} tokens, a few hundred characters); "
                           "shorten it")


# --- captions files ---------------------------------------------------------------------------

def captions_path(captions: str | os.PathLike | None, root: str | os.PathLike | None = None) -> Path | None:
    """The one place that finds a captions file: ``captions`` (a file, or a folder holding
    ``CAPTIONS_FILE``: a dataset root or an exported model), else ``<root>/CAPTIONS_FILE`` when it exists.
    None when neither names an existing file (``captions`` given but missing is left to the reader,
    which names it)."""
    if captions:
        path = Path(captions).expanduser()
        return path / CAPTIONS_FILE if path.is_dir() else path
    if root:
        path = Path(root) / CAPTIONS_FILE
        return path if path.is_file() else None
    return None


def dataset_captions(dataset, captions: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                     split: str | None = None) -> dict[str, str] | None:
    """``{stem: caption}`` of a dataset: from the file ``captions_path`` finds, else the dataset's own
    captions (the embedded shapes dataset has them), else None."""
    path = captions_path(captions, root)
    if path is not None:
        return read_captions(path, split=split)
    own = getattr(dataset, "captions", None)
    return own() if callable(own) else None


def read_caption_records(path: str | os.PathLike) -> list[dict]:
    """Every record of a captions file, validated: a dict with string ``stem`` and ``caption``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(
            f"captions file {path} does not exist; write one with `jodiffusion caption`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read captions file {path}: {exc}") from None
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({exc.msg}); expected "
                               '{"stem": "...", "caption": "..."}') from None
        if not isinstance(record, dict):
            raise DatasetError(f'{where}: expected a JSON object {{"stem": ..., "caption": ...}}, '
                               f"got {type(record).__name__}")
        for key in ("stem", "caption"):
            if key not in record:
                raise DatasetError(f"{where}: missing key '{key}'")
            if not isinstance(record[key], str):
                raise DatasetError(f"{where}: '{key}' must be a string, got {type(record[key]).__name__}")
        if not record["stem"]:
            raise DatasetError(f"{where}: empty stem")
        check_caption_length(record["caption"], where)
        if "split" in record and not isinstance(record["split"], str):
            raise DatasetError(f"{where}: 'split' must be a string")
        record["_line"] = lineno
        records.append(record)
    return records


def read_captions(path: str | os.PathLike, split: str | None = None) -> dict[str, str]:
    """``{stem: caption}`` from a captions file.

    With ``split``, lines whose ``"split"`` names another split are skipped (lines without a split
    are kept). A stem that appears twice among the lines kept is an error naming both lines.
    """
    captions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for record in read_caption_records(path):
        if split is not None and record.get("split", split) != split:
            continue
        stem = record["stem"]
        if stem in captions:
            raise DatasetError(f"{path}, line {record['_line']}: duplicate stem '{stem}' (first on line "
                               f"{first_line[stem]}); keep one caption per image")
        captions[stem] = record["caption"]
        first_line[stem] = record["_line"]
    return captions


def _normalise_records(mapping_or_items: Mapping[str, str] | Iterable[Any]) -> list[dict]:
    if isinstance(mapping_or_items, Mapping):
        items: Iterable[Any] = mapping_or_items.items()
    else:
        items = mapping_or_items
    records = []
    seen: set[tuple[str | None, str]] = set()
    for item in items:
        if isinstance(item, Mapping):
            record = {k: v for k, v in item.items() if not str(k).startswith("_")}
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            record = {"stem": item[0], "caption": item[1]}
        else:
            raise ValueError(f"caption items must be {{'stem', 'caption'}} dicts or (stem, caption) pairs, "
                             f"got {item!r}")
        if "stem" not in record or "caption" not in record:
            raise ValueError(f"caption record {record!r} needs 'stem' and 'caption'")
        stem, caption = record["stem"], record["caption"]
        if not isinstance(stem, str) or not stem or not isinstance(caption, str):
            raise ValueError(f"caption record {record!r}: stem and caption must be strings (stem non-empty)")
        key = (record.get("split"), record["stem"])
        if key in seen:
            raise ValueError(f"duplicate caption for stem '{record['stem']}'"
                             + (f" in split '{key[0]}'" if key[0] is not None else ""))
        seen.add(key)
        # stem and caption first, whatever the order of the input
        records.append({"stem": record["stem"], "caption": record["caption"],
                        **{k: v for k, v in record.items() if k not in ("stem", "caption")}})
    return records


def write_captions(path: str | os.PathLike, mapping_or_items: Mapping[str, str] | Iterable[Any]) -> Path:
    """Write a captions file atomically from ``{stem: caption}`` or from records / (stem, caption) pairs.

    Records may carry extra keys (e.g. ``"split"``); they are written as they are.
    """
    records = _normalise_records(mapping_or_items)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path = Path(path)
    write_text_atomic(path, text)
    return path


# --- template captions -------------------------------------------------------------------------

def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def template_caption(mask: np.ndarray, classes: ClassInfo, min_fraction: float = 0.01,
                     prefix: str = "a photo of", max_classes: int | None = None,
                     empty: str = "an empty scene") -> str:
    """A caption that lists the classes of a mask: ``"a photo of road, car and sky"``.

    Classes are ordered by area (largest first); those covering less than ``min_fraction`` of the
    labelled pixels are dropped; ignore pixels (and ids outside the label space) are not counted;
    the background class (``classes.background``) is left out, though its pixels count towards the
    labelled total. Where there is no background (``None``: CamVid, Cityscapes, ...) every class can
    be named. A mask with nothing else gives ``"<prefix> <empty>"``. Underscores in class names
    become spaces.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if not 0.0 <= min_fraction < 1.0:
        raise ValueError(f"min_fraction must lie in [0, 1), got {min_fraction}")
    values = mask.ravel().astype(np.int64)
    valid = (values >= 0) & (values < classes.num_classes)
    counts = np.bincount(values[valid], minlength=classes.num_classes)
    total = int(counts.sum())
    chosen = [(int(n), cid) for cid, n in enumerate(counts)
              if n > 0 and n >= min_fraction * total and not classes.is_background(cid)]
    chosen.sort(key=lambda t: (-t[0], t[1]))
    if max_classes is not None:
        chosen = chosen[:max_classes]
    if not chosen:
        return f"{prefix} {empty}".strip()
    names = [classes.names[cid].replace("_", " ") for _, cid in chosen]
    return f"{prefix} {_join(names)}".strip()


# --- captioning a dataset ---------------------------------------------------------------------

def caption_dataset(dataset: Any, out_path: str | os.PathLike, method: str = "template",
                    model: Blip2Captioner | str | os.PathLike | None = None, batch_size: int = 8,
                    progress: bool = True, overwrite: bool = False, split: str | None = None,
                    min_fraction: float = 0.01, prompt: str | None = None, device: str | None = None, dtype: Any = None,
                    max_new_tokens: int = 30) -> Path:
    """Caption every sample of ``dataset`` (a ``SegmentationDataset``) and write ``out_path``.

    ``method``: ``"template"`` (from the masks), ``"blip2"`` (``model``: a ``Blip2Captioner``, or a
    folder / hub id to load; default ``DEFAULT_BLIP2_MODEL``) or ``"dataset"`` (the dataset's own
    ``caption(index)``). Template captions leave out ``dataset.classes.background``. Each record
    gets ``"split": split`` when ``split`` is given. An existing ``out_path`` is refused unless
    ``overwrite``. Images and masks are read untransformed.
    """

    if method not in CAPTION_METHODS:
        raise ValueError(f"unknown caption method '{method}'; choose one of {', '.join(CAPTION_METHODS)}")
    out = Path(out_path)
    if out.is_dir():
        raise DatasetError(f"{out} is a folder; give a file name such as {out / 'captions.jsonl'}")
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists; pass overwrite (--overwrite) to replace it, or choose "
                           "another output file")
    n = len(dataset)
    if n == 0:
        raise DatasetError("the dataset is empty; nothing to caption")
    captions: list[str] = []
    if method == "template":
        for i in progress_bar(range(n), desc="captioning (template)", unit="img", disable=not progress):
            captions.append(template_caption(dataset.load_mask(i), dataset.classes, min_fraction=min_fraction))
    elif method == "dataset":
        if not callable(getattr(dataset, "caption", None)):
            raise DatasetError(f"{type(dataset).__name__} has no captions of its own; use method "
                               "'template' or 'blip2'")
        captions = [dataset.caption(i) for i in progress_bar(range(n), desc="captioning (dataset)", unit="img",
                                                     disable=not progress)]
    else:
        if isinstance(model, Blip2Captioner):
            captioner = model
        else:
            captioner = Blip2Captioner.from_pretrained(model or DEFAULT_BLIP2_MODEL, device=device,
                                                       dtype=dtype, prompt=prompt,
                                                       max_new_tokens=max_new_tokens)
        with progress_bar(total=n, desc="captioning (blip2)", unit="img", disable=not progress) as bar:
            for start in range(0, n, batch_size):
                idx = range(start, min(n, start + batch_size))
                images = [dataset.load_image(i) for i in idx]
                captions.extend(captioner.caption(images, batch_size=batch_size))
                bar.update(len(idx))
    records = []
    for i, caption in enumerate(captions):
        record = {"stem": dataset.stem(i), "caption": caption}
        if split is not None:
            record["split"] = split
        records.append(record)
    try:
        return write_captions(out, records)
    except ValueError as exc:  # duplicate stems in the dataset
        raise DatasetError(f"cannot write {out}: {exc}") from None
