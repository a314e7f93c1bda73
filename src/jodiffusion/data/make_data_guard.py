"""What ``write_shapes_dataset`` (``jodiffusion make-data``) may write over: nothing but a dataset it wrote.

The function signs its folder with ``dataset.json`` (``"generator": "jodiffusion make-data ..."``). A
non-empty output folder is refused unless ``overwrite``; with it, the folder is replaced only when that
signature is there *and* every top-level entry is one the function writes (``MAKE_DATA_ENTRIES``, or a
temporary file). Anything else is refused before anything is rendered, naming what would be lost, the
same for the CLI and for a library caller (see ``jodiffusion.utils.ownership``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jodiffusion.errors import DatasetError, JoDiffusionError
from jodiffusion.utils.ownership import check_replaceable, describe_entries, has_content

MAKE_DATA_COMMAND = "make-data"
# What make-data writes into its folder (all that overwrite may replace) and how it signs it:
# dataset.json's "generator" names the command.
MAKE_DATA_ENTRIES = ("classes.json", "images", "masks", "splits", "captions.jsonl", "dataset.json")
MAKE_DATA_GENERATOR = "jodiffusion make-data"


def made_by_make_data(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a dataset ``jodiffusion make-data`` wrote (its dataset.json says so)."""
    try:
        meta = json.loads((Path(folder) / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("generator", "")).startswith(MAKE_DATA_GENERATOR)


def check_make_data_output(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """The absolute output path, once it is known that writing there loses nothing: a new path, an empty
    folder, or (``overwrite``) a dataset make-data wrote holding nothing else. Raises a DatasetError
    naming the path otherwise; nothing is changed either way."""
    out = Path(out_dir).expanduser().absolute()
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise DatasetError(f"{parent} is a file, so {out} cannot be created under it; choose another "
                               "output path")
    if out.exists() and not out.is_dir():
        if overwrite:
            _check_replaceable(check_replaceable, out)
        raise DatasetError(f"{out} exists and is not a folder; choose another output path")
    if has_content(out):  # only temporary files (a kill during the first write) count as empty
        if not overwrite:
            raise DatasetError(f"{out} is not empty; choose an empty or new folder, or pass overwrite "
                               "(--overwrite) to replace a dataset make-data wrote")
        if not made_by_make_data(out):
            raise DatasetError(
                f"--overwrite refused: {out} is not a dataset `jodiffusion make-data` wrote (no dataset.json of "
                f"it); replacing it would delete {describe_entries(out, (p.name for p in out.iterdir()))}. "
                "Nothing was changed: move those away yourself or choose another output folder")
        _check_replaceable(check_replaceable, out, owned=True)  # and it holds nothing else
    return out


def _check_replaceable(check, out: Path, **kw) -> None:
    try:
        check(out, MAKE_DATA_COMMAND, MAKE_DATA_ENTRIES, **kw)
    except DatasetError:
        raise
    except JoDiffusionError as exc:  # a DatasetError for library callers, the same one-line message
        raise DatasetError(str(exc)) from None
