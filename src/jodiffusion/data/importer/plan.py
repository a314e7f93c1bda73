"""The mask plan: how every mask becomes class ids. ``make_plan`` chooses the mask type (flag, or what the
scans show) and checks the value map against it; one function per mask type builds its plan."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from jodiffusion.data.classes import IGNORE_INDEX, ClassInfo, background_by_name
from jodiffusion.data.importer.class_files import ClassFile
from jodiffusion.data.importer.colour_fit import check_fit, clustering_radius, measure
from jodiffusion.data.importer.mask_scan import MaskScan, colour_clusters, hex_colour, is_colour, unpack
from jodiffusion.data.importer.options import BINARY_NAMES, ImportOptions
from jodiffusion.data.importer.value_map import (
    background_id,
    make_classes,
    resolve_target,
    value_list,
)
from jodiffusion.errors import ConfigError


@dataclass
class MaskPlan:
    """How every mask is turned into class ids."""

    mask_type: str
    reason: str
    classes: ClassInfo
    threshold: int
    value_map: dict[int, int] = field(default_factory=dict)   # ids: raw value -> class id / ignore
    palette_colours: np.ndarray | None = None                 # colour: (P,) packed colours
    palette_targets: np.ndarray | None = None                 # colour: (P,) class id / ignore of each
    palette_rows: list[dict] = field(default_factory=list)


def check_arguments(options: ImportOptions, value_map_raw: dict, class_file: ClassFile | None) -> None:
    """Flag combinations, class names and value-map targets that are wrong whatever the masks hold: checked
    before any file of SRC is read, so a mistake costs no scan."""
    colour_keys = [k for k in value_map_raw if isinstance(k, tuple)]
    value_keys = [k for k in value_map_raw if not isinstance(k, tuple)]
    if options.mask_type == "binary" and value_map_raw:
        raise ConfigError("--value-map with --mask-type binary: a value map reads masks as class ids; drop "
                          "--mask-type binary (e.g. --value-map 255=1 turns 0/255 masks into ids 0/1)")
    if colour_keys and value_keys:
        raise ConfigError("--value-map mixes colours (#rrggbb) and numbers; colour masks take colours, masks of "
                          "class ids take numbers")
    if options.mask_type == "colour" and value_keys:
        raise ConfigError("colour masks take --value-map keys as colours (#rrggbb=TARGET), not numbers: "
                          + ", ".join(f"{k}={value_map_raw[k]}" for k in value_keys))
    if options.mask_type == "ids" and colour_keys:
        raise ConfigError("--value-map names colours but --mask-type ids reads class ids; use --mask-type colour "
                          "(or auto) or give numeric values (255=1)")
    names = class_file.classes.names if class_file is not None else options.names
    if names is None:
        return
    if options.mask_type == "binary" and len(names) != 2:
        raise ConfigError(f"binary masks give 2 classes, but {len(names)} class names were given "
                          f"({', '.join(names)}); use --mask-type ids or colour for more")
    classes = class_file.classes if class_file is not None else make_classes(names)
    background_id(options.background, classes.names, None)
    for key, target in value_map_raw.items():
        shown = hex_colour(key[1]) if isinstance(key, tuple) else key
        resolve_target(target, classes, f"{shown}={target}")


def _palettes_disagree(palettes: list[MaskScan]) -> str | None:
    """Why palette PNGs are read by colour rather than by index, or None: an index stands for different
    colours in different files, and there are no more colours than indices (the colours are what stays)."""
    colours_of: dict[int, set[int]] = {}
    for s in palettes:
        for index, colour in (s.index_colours or {}).items():
            colours_of.setdefault(index, set()).add(colour)
    differing = [i for i, c in colours_of.items() if len(c) > 1]
    all_colours = set().union(*colours_of.values()) if colours_of else set()
    if differing and len(all_colours) <= len(colours_of):
        return (f"auto: the palette PNGs give {len(differing)} indices different colours in different files, "
                "so they are read by colour")
    return None


def choose_type(options: ImportOptions, scans: list[MaskScan], value_map: dict,
                class_file: ClassFile | None) -> tuple[str, str]:
    if options.mask_type != "auto":
        return options.mask_type, "--mask-type"
    colour = [s for s in scans if is_colour(s)]
    palettes = [s for s in scans if s.kind == "index"]
    if colour:
        mixed = f", {len(palettes)} palette PNGs read by their colours too" if palettes else ""
        return "colour", f"auto: {len(colour)} of {len(scans)} masks are colour-coded RGB{mixed}"
    if any(isinstance(k, tuple) for k in value_map):
        return "colour", "auto: the value map names colours"
    if value_map:
        return "ids", "auto: a value map was given"
    if palettes:
        if class_file is not None and class_file.colours:
            return "colour", "auto: palette PNGs, read by their colours, which the classes file gives"
        disagree = _palettes_disagree(palettes)
        if disagree:
            return "colour", disagree
        return "ids", "auto: palette PNGs, whose indices are class ids (the classes file gives no colours)" \
            if class_file is not None else "auto: palette PNGs, whose indices are class ids"
    names = class_file.classes.names if class_file is not None else options.names
    if names is not None and len(names) != 2:
        return "ids", f"auto: {len(names)} class names"
    values = set()
    for s in scans:
        values.update(int(v) for v in s.values)
    lossy = sum(s.lossy for s in scans)
    if lossy:
        return "binary", f"auto: {lossy} lossy JPEG masks, thresholded at {options.threshold}"
    if values <= {0, 1}:
        return "binary", "auto: values 0 and 1 only"
    if values <= {0, 255}:
        return "binary", "auto: values 0 and 255 only"
    return "ids", f"auto: values {value_list(values)}"


def make_plan(options: ImportOptions, scans: dict[str, MaskScan], value_map_raw: dict,
              class_file: ClassFile | None = None, class_file_hint: str = "") -> MaskPlan:
    """The plan; ``class_file_hint`` ends the errors that ask for class names (the class files in SRC)."""
    scan_list = list(scans.values())
    mask_type, reason = choose_type(options, scan_list, value_map_raw, class_file)
    file_info = class_file.classes if class_file is not None else None
    colour_keys = {k: v for k, v in value_map_raw.items() if isinstance(k, tuple)}
    value_keys = {k: v for k, v in value_map_raw.items() if not isinstance(k, tuple)}
    if mask_type == "colour" and value_keys:
        raise ConfigError("colour masks take --value-map keys as colours (#rrggbb=TARGET), not numbers: "
                          + ", ".join(f"{k}={v}" for k, v in value_keys.items()))
    if mask_type != "colour" and colour_keys:
        raise ConfigError(f"--value-map names colours but the masks are read as {mask_type}; "
                          "add --mask-type colour or give numeric values (255=1)")
    if mask_type == "binary" and value_map_raw:
        raise ConfigError("--value-map with --mask-type binary: a value map reads masks as class ids; drop "
                          "--mask-type binary (e.g. --value-map 255=1 turns 0/255 masks into ids 0/1)")
    if mask_type == "binary":
        return binary_plan(options, reason, file_info)
    if mask_type == "ids":
        return ids_plan(options, reason, scan_list, file_info, value_keys, class_file_hint)
    return colour_plan(options, reason, scan_list, file_info, bool(class_file and class_file.colours), colour_keys,
                       class_file_hint)


def binary_plan(options: ImportOptions, reason: str, file_info: ClassInfo | None) -> MaskPlan:
    """Binary figure-ground masks: two classes, foreground from the threshold."""
    if file_info is not None:
        classes = file_info
    else:
        names = options.names or BINARY_NAMES
        classes = make_classes(names, background=background_id(options.background, names, 0))
    if classes.num_classes != 2:
        raise ConfigError(f"binary masks give 2 classes, but {classes.num_classes} class names were given "
                          f"({', '.join(classes.names)}); use --mask-type ids or colour for more")
    if file_info is not None and options.background is not None:
        classes = make_classes(classes.names, classes.palette, classes.ignore_index,
                                background_id(options.background, classes.names, classes.background))
    return MaskPlan("binary", reason, classes, options.threshold)


def ids_plan(options: ImportOptions, reason: str, scan_list: list[MaskScan], file_info: ClassInfo | None,
             value_keys: dict, class_file_hint: str = "") -> MaskPlan:
    """Masks of class ids: the names come from --names or --classes; the value map rewrites raw values."""
    for s in scan_list:
        if s.kind == "rgb" and is_colour(s):
            raise ConfigError("colour-coded RGB masks cannot be read as class ids: use --mask-type colour "
                              "(or auto)")
    if file_info is None and options.names is None:
        values = set()
        for s in scan_list:
            values.update(int(v) for v in s.values)
        ids = sorted(v for v in values if v != IGNORE_INDEX)
        from_one = ""
        if ids and ids == list(range(1, len(ids) + 1)):  # trimaps and other masks whose ids start at 1
            example = ",".join(f"{v}=NAME{v - 1}" for v in ids)
            from_one = (f" The values run 1..{len(ids)}, so give {len(ids)} names and --value-map {example}, which "
                        f"keeps every class ({len(ids)}=ignore with {len(ids) - 1} names if {len(ids)} means "
                        "'unknown').")
        raise ConfigError(f"masks of class ids need the class names: the masks hold the values "
                          f"{value_list(values)}. Give --names NAME0,NAME1,... (one per id, in id order; "
                          f"{IGNORE_INDEX} is the ignore index) or --classes FILE, and --value-map for values "
                          f"that are not ids (e.g. 255=1 or 0=ignore).{from_one}{class_file_hint}")
    if file_info is not None:
        classes = file_info
        if options.background is not None:
            classes = make_classes(classes.names, classes.palette, classes.ignore_index,
                                    background_id(options.background, classes.names, classes.background))
    else:
        names = options.names
        classes = make_classes(names, background=background_id(options.background, names,
                                                              background_by_name(names)))
    vmap = {k: resolve_target(t, classes, f"{k}={t}") for k, t in value_keys.items()}
    return MaskPlan("ids", reason, classes, options.threshold, value_map=vmap)


def colour_plan(options: ImportOptions, reason: str, scan_list: list[MaskScan], file_info: ClassInfo | None,
                file_palette: bool, colour_keys: dict, class_file_hint: str = "") -> MaskPlan:
    """Colour-coded masks (RGB, or palette PNGs read by their colours): a palette (the classes file's, or
    the distinct colours found) maps colours to class ids; a palette that does not fit is refused
    (``colour_fit``)."""
    counts: Counter[int] = Counter()
    for s in scan_list:
        counts.update(dict(zip(s.colours.tolist(), s.colour_counts.tolist(), strict=True)))
    total = sum(counts.values())
    names = file_info.names if file_info is not None else options.names
    radius, radius_why = clustering_radius(scan_list, counts, options.min_colour_fraction)
    if file_info is not None and file_palette:
        palette = [c[0] << 16 | c[1] << 8 | c[2] for c in file_info.palette]
        classes = file_info
        how = "palette of the classes file"
        table = f"the palette of --classes {options.classes_file}"
    else:
        mapped = {k[1] for k in colour_keys}
        clusters = colour_clusters([(c, n) for c, n in counts.most_common() if c not in mapped], radius)
        found = [(c, n) for c, n in clusters if n >= options.min_colour_fraction * total][:256]
        if names is None:
            listed = ", ".join(f"{hex_colour(c)} ({100 * n / max(total, 1):.1f}%)" for c, n in sorted(found))
            raise ConfigError(f"colour masks need the class names: {len(found)} colours cover at least "
                              f"{100 * options.min_colour_fraction:g}% of the mask pixels ({radius_why}): {listed}. "
                              "Give --names with one name per colour in this order (colours sorted by value), or "
                              f"--classes FILE with names and colours.{class_file_hint}")
        if len(clusters) < len(names):
            raise ConfigError(f"{len(names)} class names but only {len(clusters)} distinct colours in the masks ("
                              + ", ".join(hex_colour(c) for c, _ in clusters)
                              + "); give a --classes FILE with the palette")
        palette = sorted(c for c, _ in clusters[:len(names)])
        rgb = [tuple(int(x) for x in unpack(c)) for c in palette]
        if file_info is not None:
            classes = make_classes(file_info.names, rgb, file_info.ignore_index, file_info.background)
        else:
            classes = make_classes(names, rgb, background=background_by_name(names))
        how = "distinct colours found, sorted by value"
        table = f"the {len(names)} most frequent colours, one per class name"
    if options.background is not None:
        classes = make_classes(classes.names, classes.palette, classes.ignore_index,
                                background_id(options.background, classes.names, classes.background))
    # the value map's colours first: where one is also a palette colour, the value map wins
    colours = [packed for (_, packed) in colour_keys]
    targets = [resolve_target(t, classes, f"{hex_colour(packed)}={t}") for (_, packed), t in colour_keys.items()]
    # palette PNGs read by colour: the colour of their ignore index (VOC's boundary #e0e0c0) stays ignore
    ignore_colours = {s.index_colours[classes.ignore_index] for s in scan_list
                      if s.index_colours and classes.ignore_index in s.index_colours} - set(palette) - set(colours)
    colours += sorted(ignore_colours)
    targets += [classes.ignore_index] * len(ignore_colours)
    colours += palette
    targets += list(range(len(palette)))
    colour_array, target_array = np.asarray(colours, dtype=np.int64), np.asarray(targets)
    fit = measure(counts, colour_array, target_array, classes.num_classes, radius)
    check_fit(fit, classes, colour_array, target_array, table, options.accept_colour_table)
    rows = [{"class": classes.names[t] if t < classes.num_classes else "ignore", "colour": hex_colour(c),
             "pixels": int(counts.get(c, 0))} for c, t in zip(colours, targets, strict=True)]
    return MaskPlan("colour", f"{reason}; palette: {how}; {radius_why}", classes, options.threshold,
                    palette_colours=colour_array, palette_targets=target_array, palette_rows=rows)
