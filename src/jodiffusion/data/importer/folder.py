"""``import_folder``: the import from start to end (see the package doc), the output folder's checks,
the splits, and the validation of the result before it is renamed into place."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from jodiffusion.data import layout
from jodiffusion.data.importer.class_files import candidate_hint, read_class_file
from jodiffusion.data.importer.discovery import find_sides
from jodiffusion.data.importer.hints import empty_class_warnings
from jodiffusion.data.importer.mask_scan import scan_mask
from jodiffusion.data.importer.options import (
    IMPORT_COMMAND,
    IMPORT_ENTRIES,
    IMPORT_FILE,
    SHOWN,
    ImportOptions,
    ImportSummary,
    LeftOut,
)
from jodiffusion.data.importer.pairing import pair_files, shown_key
from jodiffusion.data.importer.plan import check_arguments, choose_type, make_plan
from jodiffusion.data.importer.value_map import parse_value_map
from jodiffusion.data.importer.write import bad_values, can_copy, raise_bad_values, write_pair
from jodiffusion.data.readers.common import format_stem_line
from jodiffusion.data.readers.folder import read_folder
from jodiffusion.data.validate import validate_dataset
from jodiffusion.errors import DatasetError
from jodiffusion.utils.io import replace_folder, write_json_atomic, write_text_atomic
from jodiffusion.utils.output_folder import OutputRules, check, output_folder
from jodiffusion.utils.ownership import is_blank, write_owner
from jodiffusion.utils.progress import progress_bar
from jodiffusion.utils.tempnames import temp_name

log = logging.getLogger(__name__)
# built beside OUT and renamed in at the end (the lock sits beside it too)
RULES = OutputRules(IMPORT_COMMAND, IMPORT_ENTRIES, error=DatasetError, beside=True,
                    not_empty="--out {folder} is not empty{hint}; choose a new folder. Nothing was written")

# --- splits -------------------------------------------------------------------------------------------

def assign_splits(pairs: list[tuple[str | None, str]], val_fraction: float, seed: int) -> tuple[dict, str]:
    """{(source split, stem): output split} and how the splits came about: the source's own train and val
    folders when it has both; val carved out of train when it has train only (other split folders, e.g.
    test, are kept); else train and val made from every pair."""
    have = {s for s, _ in pairs}
    if None not in have and {"train", "val"} <= have:
        return {p: p[0] for p in pairs}, "splits from the source folders"
    if None not in have and "train" in have:
        pool = sorted(p for p in pairs if p[0] == "train")
        out = {p: p[0] for p in pairs}
        how = f"val made from {100 * val_fraction:g}% of the source's train split, seed {seed}"
    else:
        if have - {None}:
            log.warning("the source's split folders (%s) do not give a train split for every pair: train and val "
                        "are made from --val-fraction instead", ", ".join(sorted(have - {None})))
        pool = sorted(pairs, key=lambda p: (p[0] or "", p[1]))
        out = {}
        how = f"splits made: {100 * val_fraction:g}% val, seed {seed}"
    n_val = int(round(val_fraction * len(pool)))
    if val_fraction > 0 and len(pool) >= 2:
        n_val = min(max(n_val, 1), len(pool) - 1)
    order = np.random.default_rng(seed).permutation(len(pool))
    val = {pool[i] for i in order[:n_val]}
    for p in pool:
        out[p] = "val" if p in val else "train"
    return out, how


# --- the import ------------------------------------------------------------------------------------

def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    if out == src or src in out.parents:
        raise DatasetError(f"--out {out} lies inside the source folder {src}, which import never modifies; "
                           "choose an output folder outside it")
    if out in src.parents:
        raise DatasetError(f"--out {out} holds the source folder {src}; choose an output folder beside it")
    check(out, RULES, overwrite)


def import_folder(src: str | os.PathLike, out: str | os.PathLike, options: ImportOptions | None = None, *,
                  overwrite: bool = False, progress: bool = True) -> ImportSummary:
    """Read the segmentation folder ``src`` as it is and write it to ``out`` in the project's layout
    (see the module doc); returns the summary, which is also ``out/import.json``."""

    options = options or ImportOptions()
    src_path = Path(src).expanduser()
    if not src_path.is_dir():
        state = "is not a folder" if src_path.exists() else "does not exist"
        raise DatasetError(f"source {src_path} {state}: give the folder that holds the images and masks")
    src_path = src_path.resolve()
    out_path = Path(out).expanduser().absolute()
    out_path = out_path.parent.resolve() / out_path.name
    _check_out(src_path, out_path, overwrite)
    # one import into OUT at a time, checked again under the lock; the build folders of killed ones go
    with output_folder(out_path, RULES, overwrite=overwrite):
        return _import(src_path, out_path, options, progress)


def _import(src_path: Path, out_path: Path, options: ImportOptions, progress: bool) -> ImportSummary:
    """The import itself, holding OUT's lock: find, scan, plan, write into a hidden folder, swap it in."""
    value_map_raw = parse_value_map(options.value_map)
    class_file = read_class_file(options.classes_file) if options.classes_file is not None else None
    check_arguments(options, value_map_raw, class_file)

    found = find_sides(src_path, options.images, options.masks)
    images_at, image_others = found.images.where, found.images.others
    masks_at, mask_others = found.masks.where, found.masks.others
    pairing = pair_files(found)
    images, masks, names = pairing.images, pairing.masks, pairing.names
    left_out: list[LeftOut] = []
    for key in sorted(images.keys() - masks.keys(), key=str):
        f = images[key]
        left_out.append(LeftOut(f.rel, "no-mask", f"no mask for '{shown_key(f)}' in {masks_at}"))
    for key in sorted(masks.keys() - images.keys(), key=str):
        f = masks[key]
        left_out.append(LeftOut(f.rel, "no-image", f"no image for '{shown_key(f)}' in {images_at}"))
    keys = pairing.keys

    colour_forced = options.mask_type == "colour"
    scans: dict = {}
    for key in progress_bar(keys, desc="import: scan masks", unit="mask", disable=not progress, leave=False):
        try:
            scans[key] = scan_mask(masks[key].path, colour_forced)
        except Exception as exc:
            text = str(exc).strip() or type(exc).__name__
            left_out.append(LeftOut(masks[key].rel, "unreadable-mask", f"does not decode as a mask ({text})"))
    if not scans:
        raise DatasetError(f"{src_path}: no image-mask pairs to import ({len(left_out)} files left out: "
                           + "; ".join(f"{x.path}: {x.reason}" for x in left_out[:5]) + ")")
    if choose_type(options, list(scans.values()), value_map_raw, class_file)[0] == "colour":
        for key, s in list(scans.items()):  # colour counts of the grey masks too
            if s.colours is None:
                scans[key] = scan_mask(masks[key].path, True)
    names_given = class_file is not None or options.names is not None
    plan = make_plan(options, scans, value_map_raw, class_file, "" if names_given else candidate_hint(src_path))
    bad = {masks[k].rel: b for k, s in scans.items() if (b := bad_values(s, plan))}
    raw_values = {int(v) for s in scans.values() for v in s.values.tolist()}
    if bad:
        raise_bad_values(bad, plan, raw_values)

    pair_keys = [k for k in keys if k in scans]
    split_of_pair = {}
    for k in pair_keys:
        split_of_pair[k] = images[k].split or masks[k].split
    assignment, splits_from = assign_splits([(split_of_pair[k], names[k]) for k in pair_keys],
                                             options.val_fraction, options.seed)

    copy_images = can_copy(pair_keys, images, scans, options)
    tmp = out_path.parent / temp_name(out_path.name)  # the tool's own name: a killed run's is removed next time
    summary = ImportSummary(
        src=str(src_path), out=str(out_path), images_from=found.images.described, masks_from=found.masks.described,
        found_by=found.how, unused=[u.to_dict() for u in found.unused],
        mask_type=plan.mask_type, mask_type_reason=plan.reason, classes=plan.classes.to_dict(), splits={},
        splits_from=splits_from, palette=plan.palette_rows, ignored_files=sorted(image_others + mask_others),
        options={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()})
    if plan.mask_type == "binary":
        summary.snapped_note = f"values other than 0 and 255, set by the threshold {plan.threshold}"
    elif plan.mask_type == "colour":
        summary.snapped_note = "colours not in the palette, set to the nearest palette colour"
    try:
        tmp.mkdir(parents=True)
        write_owner(tmp, IMPORT_COMMAND)
        written: dict[str, list[str]] = {}
        for key in progress_bar(pair_keys, desc="import: write pairs", unit="pair", disable=not progress, leave=False):
            split = assignment[(split_of_pair[key], names[key])]
            if write_pair(tmp, split, names[key], images[key], masks[key], plan, options, summary, left_out,
                          copy_images):
                written.setdefault(split, []).append(names[key])
        empty = [s for s in ("train", "val") if s in set(assignment.values()) and not written.get(s)]
        if not written or empty:
            raise DatasetError(f"{src_path}: no pairs left in the {' and '.join(empty) or 'train'} split after "
                               f"leaving out {len(left_out)} files:\n"
                               + "\n".join(f"  {x.path}: {x.reason}" for x in left_out[:SHOWN]))
        for split, stems in sorted(written.items()):
            write_text_atomic(tmp / layout.SPLITS_DIR / f"{split}.txt",
                              "".join(format_stem_line(s) + "\n" for s in sorted(stems)))
        layout.write_classes(tmp, plan.classes)
        summary.splits = {s: len(written[s]) for s in sorted(written, key=_split_order)}
        summary.pairs = sum(summary.splits.values())
        summary.left_out = sorted(left_out, key=lambda x: x.path)
        summary.validation = _validate(tmp, list(summary.splits))
        by_id = summary.class_pixels
        pixels = [by_id.get(k, 0) for k in range(plan.classes.num_classes)]
        summary.class_pixels = dict(zip(plan.classes.names, pixels, strict=True))
        if by_id.get(plan.classes.ignore_index):
            summary.class_pixels["ignore"] = by_id[plan.classes.ignore_index]
        summary.warnings = empty_class_warnings(pixels, plan.classes, plan.mask_type, raw_values, plan.value_map,
                                                plan.threshold)
        write_json_atomic(tmp / IMPORT_FILE, summary.to_dict())
        _move_into_place(tmp, out_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _split_order(split: str) -> tuple[int, str]:
    order = {"train": 0, "val": 1, "test": 2}
    return order.get(split, 3), split



def _validate(root: Path, splits: list[str]) -> dict:
    results = {}
    for split in splits:
        report = validate_dataset(read_folder(root, split), progress=False, workers=1)
        if not report.ok:
            raise DatasetError("the imported folder does not validate (a bug of `jodiffusion import`; nothing was "
                               "written):\n" + report.format())
        results[split] = {"ok": True, "num_samples": report.num_samples, "notes": len(report.notes)}
    return {"ok": True, "splits": results}


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished temporary folder onto ``out`` (an empty folder, or an earlier import's)."""
    if out.is_dir() and is_blank(out):
        shutil.rmtree(out)  # empty, or holding only temporary files: nothing finished to lose
    replace_folder(tmp, out)
