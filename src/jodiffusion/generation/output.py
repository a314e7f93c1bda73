"""On-disk side of ``jodiffusion generate``: encoding, crash-safe writing, per-sample records, the final merge.

Output folder (``format=folder``; what ``read_folder`` and MMSegmentation's ``BaseSegDataset`` read)::

    out/
      generation.json           model fingerprint + generation config of the run (written first)
      classes.json              the model's classes
      images/train/<stem>.png   (or .jpg)     masks/train/<stem>.png   palette PNG, 255 = ignore
      splits/train.txt          kept stems in index order
      captions.jsonl            {"stem", "caption", "split"}: the prompt of every kept pair
      manifest.jsonl            one record per index up to the last kept one (kept and dropped), by index
      summary.json, README.md   totals and the dataset card
      records/*.jsonl           while running: append-only per-process journals (merged into the manifest)

With ``format=webdataset`` the pairs go to ``shards/shard-<k>.tar`` instead: shard ``k`` holds the kept
samples of indices ``[k * shard_size, (k + 1) * shard_size)`` as ``<stem>.png|jpg``, ``<stem>.mask.png``
and ``<stem>.json``, consecutive per stem (what the ``webdataset`` package groups into one sample).

Crash safety: every file is written under a temporary name and renamed. A sample counts as done only
once its record line is in a journal, and the line is appended only after its files (or its whole
shard) were renamed into place; a line cut short by a kill is not valid JSON and is ignored. So after a
``kill -9`` at any moment, the records that can be read describe complete files only.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.layout import CAPTIONS_FILE, IMAGES_DIR, MASKS_DIR, SPLITS_DIR, palette_bytes
from jodiffusion.data.readers.common import format_stem_line
from jodiffusion.utils.io import atomic_path, write_text_atomic
from jodiffusion.utils.tempnames import temp_name

log = logging.getLogger("jodiffusion")

GENERATION_FILE = "generation.json"
MANIFEST_FILE = "manifest.jsonl"
SUMMARY_FILE = "summary.json"
CARD_FILE = "README.md"
RECORDS_DIR = "records"
SHARDS_DIR = "shards"
SHARD_LIST = "shards.txt"


def stem_of(index: int) -> str:
    return f"{index:08d}"


def shard_name(unit: int) -> str:
    return f"{SHARDS_DIR}/shard-{unit:06d}.tar"


# --- encoding ------------------------------------------------------------------------------------

def encode_image(image: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG")
    else:  # 4:4:4: chroma subsampling would smear the colours across the mask's class boundaries
        Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), subsampling=0)
    return buf.getvalue()


def encode_mask(mask: np.ndarray, classes: ClassInfo) -> bytes:
    """The same palette PNG as ``layout.save_mask_png``, as bytes."""
    im = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    im.putpalette(palette_bytes(classes))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def image_suffix(fmt: str) -> str:
    return ".png" if fmt == "png" else ".jpg"


def folder_paths(stem: str, split: str, fmt: str) -> tuple[str, str]:
    return f"{IMAGES_DIR}/{split}/{stem}{image_suffix(fmt)}", f"{MASKS_DIR}/{split}/{stem}.png"


# --- records ---------------------------------------------------------------------------------------

class Journal:
    """This process's append-only record file. A fresh file per process and run, so no two writers ever
    share one and a partial last line (from a kill) is simply never continued."""

    def __init__(self, out: Path, rank: int):
        self.path = out / RECORDS_DIR / f"{rank:03d}-{uuid.uuid4().hex[:12]}.jsonl"
        self._file = None

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        self._file.write("".join(json.dumps(r) + "\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return out
    for line in text.split("\n"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # empty, or cut short by a kill
        if isinstance(record, dict) and isinstance(record.get("index"), int):
            out.append(record)
    return out


def read_records(out: Path) -> dict[int, dict]:
    """Every valid record of the folder: the merged manifest of an earlier run plus all journals."""
    records = {r["index"]: r for r in _read_jsonl(out / MANIFEST_FILE)}
    journals = sorted((out / RECORDS_DIR).glob("*.jsonl")) if (out / RECORDS_DIR).is_dir() else []
    for path in journals:
        records.update((r["index"], r) for r in _read_jsonl(path))
    return records


def files_present(out: Path, record: dict) -> bool:
    files = record.get("files") or {}
    return all((out / rel).is_file() for rel in files.values())


# --- webdataset shards ------------------------------------------------------------------------------

def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # fixed metadata: a shard's bytes depend on its samples only
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """One shard at a time: members are appended to a temporary tar, renamed when the shard is complete."""

    def __init__(self, out: Path):
        self.out = out
        self.unit: int | None = None
        self._tar = self._tmp = None
        self.records: list[dict] = []

    def open(self, unit: int) -> None:
        path = self.out / shard_name(unit)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.unit, self._tmp, self.records = unit, path.with_name(temp_name(path.name)), []
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)

    def add(self, record: dict, image_name: str, image: bytes | None, mask: bytes | None) -> None:
        if record["kept"]:
            stem = record["stem"]
            _tar_add(self._tar, f"{stem}{image_name}", image)
            _tar_add(self._tar, f"{stem}.mask.png", mask)
            _tar_add(self._tar, f"{stem}.json", json.dumps(record, sort_keys=True).encode("utf-8"))
        self.records.append(record)

    def close(self) -> list[dict]:
        """Rename the finished shard into place; returns its records (to be journalled now)."""
        if self._tar is None:
            return []
        self._tar.close()
        os.replace(self._tmp, self.out / shard_name(self.unit))
        records, self._tar, self.unit, self.records = self.records, None, None, []
        return records


def rewrite_shard(path: Path, keep_stems: set[str]) -> None:
    """Keep only the members of ``keep_stems`` (the shard that holds the last kept index)."""
    with tarfile.open(path) as src, atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as dst:
            for member in src.getmembers():
                if member.name.split(".", 1)[0] in keep_stems:
                    _tar_add(dst, member.name, src.extractfile(member).read())


# --- merge -------------------------------------------------------------------------------------------

def select_final(records: dict[int, dict], num: int) -> tuple[list[dict], int]:
    """Records of indices up to the ``num``-th kept one, by index, and that index (the cut-off)."""
    kept = sorted(i for i, r in records.items() if r["kept"])
    if len(kept) < num:
        raise RuntimeError(f"only {len(kept)} kept of {num}")  # the caller generates until there are enough
    cutoff = kept[num - 1]
    return [records[i] for i in sorted(records) if i <= cutoff], cutoff


def merge(out: Path, final: list[dict], cutoff: int, fmt: str, split: str, shard_size: int) -> None:
    """Rank 0, after every process is done: the manifest, split list and captions; then remove what lies
    beyond the cut-off and the journals. Each step is idempotent, so a kill here is repaired by a rerun."""
    kept = [r for r in final if r["kept"]]
    write_text_atomic(out / MANIFEST_FILE, "".join(json.dumps(r) + "\n" for r in final))
    if fmt == "folder":
        write_text_atomic(out / SPLITS_DIR / f"{split}.txt", "".join(format_stem_line(r["stem"]) + "\n" for r in kept))
        write_text_atomic(out / CAPTIONS_FILE, "".join(
            json.dumps({"stem": r["stem"], "caption": r["prompt"], "split": split}) + "\n" for r in kept))
    # the journals are merged now: drop them before deleting files they may still name
    for path in sorted((out / RECORDS_DIR).glob("*.jsonl")) if (out / RECORDS_DIR).is_dir() else []:
        path.unlink()
    if (out / RECORDS_DIR).is_dir():
        (out / RECORDS_DIR).rmdir()
    keep = {r["stem"] for r in kept}
    if fmt == "folder":
        for folder in (out / IMAGES_DIR / split, out / MASKS_DIR / split):
            for path in folder.iterdir() if folder.is_dir() else []:
                if path.stem not in keep:  # beyond the cut-off (overshoot of the last round) or stray
                    path.unlink()
        return
    last_unit = cutoff // shard_size
    shards = sorted((out / SHARDS_DIR).glob("shard-*.tar"))
    for path in shards:
        unit = int(path.stem.split("-")[1])
        if unit > last_unit:
            path.unlink()
        elif unit == last_unit and (cutoff + 1) % shard_size:
            rewrite_shard(path, keep)
    names = [shard_name(u) for u in sorted({r["index"] // shard_size for r in kept})]
    write_text_atomic(out / SHARD_LIST, "".join(n + "\n" for n in names))
