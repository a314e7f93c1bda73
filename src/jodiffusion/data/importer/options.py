"""What ``jodiffusion import`` is told (``ImportOptions``) and what it reports (``ImportSummary``,
``import.json``), with the constants both share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jodiffusion.data import layout
from jodiffusion.errors import ConfigError

IMPORT_COMMAND = "import"
IMPORT_FILE = "import.json"
IMPORT_ENTRIES = (layout.CLASSES_FILE, layout.IMAGES_DIR, layout.MASKS_DIR, layout.SPLITS_DIR, IMPORT_FILE)
LOSSY_SUFFIXES = (".jpg", ".jpeg")
COPY_SUFFIXES = (".png", ".jpg", ".jpeg")  # what the folder reader reads as it is
MASK_TYPES = ("auto", "ids", "binary", "colour")
RESIZE_MODES = ("image", "mask", "none")
BINARY_NAMES = ("background", "foreground")
# An RGB(A) mask is colour-coded when a pixel's channels differ by more than this (lossy JPEG noise of a
# grey mask stays far below), or by anything at all in a lossless file.
COLOUR_SPREAD = 32
SHOWN = 20  # files named in an error before "and N more"


# --- options and summary ---------------------------------------------------------------------------

@dataclass
class ImportOptions:
    """How to read the source folder; every field has a command-line flag of the same name."""

    images: str | None = None         # folder or glob of the images, relative to SRC (default: found)
    masks: str | None = None          # folder or glob of the masks, relative to SRC (default: found)
    mask_type: str = "auto"           # auto, ids, binary or colour
    threshold: int = 128              # binary masks: value >= threshold is foreground (0/1 masks: 1 is)
    value_map: str | None = None      # "255=1,0=ignore" (colour masks: "#ffffff=ignore")
    names: Sequence[str] | None = None  # class names, id order
    classes_file: str | None = None   # classes.json / .yaml (names, optional palette, ignore, background)
    background: str | None = None     # a class name or id, or "none"; default: see background_id
    resize: str = "image"             # image: image -> mask size; mask: mask -> image size; none: refuse
    aspect_tolerance: float = 0.02    # largest relative difference of the aspect ratios that is resized
    val_fraction: float = 0.2         # share of the pairs that become val when the source has no val split
    seed: int = 0                     # seed of that split
    min_colour_fraction: float = 0.001  # colour masks without a palette: a colour covering less is noise
    accept_colour_table: bool = False   # import with a colour table that snaps many pixels or empties a class

    def __post_init__(self):
        if self.mask_type not in MASK_TYPES:
            raise ConfigError(f"--mask-type {self.mask_type!r}: choose one of {', '.join(MASK_TYPES)}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"--resize {self.resize!r}: choose one of {', '.join(RESIZE_MODES)}")
        if not 0 < self.threshold <= 255:
            raise ConfigError(f"--threshold {self.threshold}: must lie in 1..255")
        if not 0 <= self.aspect_tolerance < 1:
            raise ConfigError(f"--aspect-tolerance {self.aspect_tolerance}: must lie in [0, 1), e.g. 0.02 for 2%")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction {self.val_fraction}: must lie in [0, 1)")
        if not 0 < self.min_colour_fraction < 1:
            raise ConfigError(f"--min-colour-fraction {self.min_colour_fraction}: must lie in (0, 1)")
        if self.names is not None and self.classes_file is not None:
            raise ConfigError("give the classes either as --names or as --classes FILE, not both")
        if self.names is not None:
            self.names = tuple(self.names)


@dataclass(frozen=True)
class LeftOut:
    path: str    # the file concerned, relative to SRC
    kind: str    # no-mask, no-image, unreadable-image, empty-image, constant-image, unreadable-mask,
                 # aspect-ratio, size-mismatch
    reason: str


@dataclass
class ImportSummary:
    src: str
    out: str
    images_from: str
    masks_from: str
    found_by: str                     # how the two were found: --images/--masks, folder names, or content
    unused: list[dict]                # image files found but not used: {"where", "files", "reason"}
    mask_type: str
    mask_type_reason: str
    classes: dict
    splits: dict[str, int]
    splits_from: str
    pairs: int = 0
    resized_images: int = 0
    resized_masks: int = 0
    copied_images: int = 0
    mask_pixels: int = 0
    snapped_pixels: int = 0
    snapped_masks: int = 0
    snapped_note: str = ""
    value_mapped_pixels: int = 0
    palette: list[dict] = field(default_factory=list)
    class_pixels: dict = field(default_factory=dict)  # class name (and "ignore") -> pixels written
    warnings: list[str] = field(default_factory=list)            # e.g. classes without a pixel, with a hint
    left_out: list[LeftOut] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    validation: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def left_out_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(x.kind for x in self.left_out).items()))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["left_out_by_kind"] = self.left_out_by_kind()
        return data

    def format(self) -> str:
        split_text = ", ".join(f"{s} {n}" for s, n in self.splits.items())
        lines = [f"imported {self.pairs} pairs from {self.src} into {self.out} ({split_text}; {self.splits_from})",
                 f"  images: {self.images_from}  [found by {self.found_by}]",
                 f"  masks: {self.masks_from}, read as {self.mask_type} ({self.mask_type_reason})",
                 f"  classes: {', '.join(self.classes['names'])} (ignore {self.classes['ignore_index']}, "
                 f"background {self.classes['background']})"]
        if self.class_pixels:
            lines.append("  pixels per class: " + ", ".join(f"{name} {share(n, self.mask_pixels)}"
                                                            for name, n in self.class_pixels.items()))
        if self.palette:
            lines.append("  palette: " + ", ".join(f"{p['colour']}={p['class']} ({p['pixels']} px)"
                                                   for p in self.palette))
        if self.value_mapped_pixels:
            lines.append(f"  value map: {self.value_mapped_pixels} pixels rewritten "
                         f"({share(self.value_mapped_pixels, self.mask_pixels)} of mask pixels; "
                         f"{self.options.get('value_map')})")
        lines.append(f"  resized: {self.resized_images} of {self.pairs} images to their mask's size, "
                     f"{self.resized_masks} of {self.pairs} masks to their image's size (nearest)")
        lines.append(f"  snapped: {self.snapped_pixels} pixels ({share(self.snapped_pixels, self.mask_pixels)} of "
                     f"mask pixels) in {self.snapped_masks} of {self.pairs} masks"
                     + (f" ({self.snapped_note})" if self.snapped_note else ""))
        if self.left_out:
            kinds = ", ".join(f"{k} {n}" for k, n in self.left_out_by_kind().items())
            total = self.pairs + len(self.left_out)
            lines.append(f"  left out: {len(self.left_out)} files ({share(len(self.left_out), total)} of "
                         f"{total}; {kinds})")
            lines.extend(f"    {x.path}: {x.reason}" for x in sorted(self.left_out, key=lambda x: x.path))
        else:
            lines.append("  left out: none")
        for u in self.unused:
            lines.append(f"  not used: {u['where']} ({u['files']} files): {u['reason']}")
        if self.ignored_files:
            shown = ", ".join(self.ignored_files[:5]) + (" ..." if len(self.ignored_files) > 5 else "")
            lines.append(f"  ignored: {len(self.ignored_files)} files that are not PNG/JPEG/BMP/TIFF ({shown})")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        if self.validation:
            state = "OK" if self.validation.get("ok") else "problems"
            state += f", {len(self.warnings)} warnings above" if self.warnings else ""
            lines.append(f"  validate: {state} ("
                         + ", ".join(f"{s} {r['num_samples']}" for s, r in self.validation["splits"].items())
                         + ")")
        lines.append(f"  summary: {Path(self.out) / IMPORT_FILE}")
        return "\n".join(lines)


def share(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole``, with enough digits that a few pixels do not read 0.0%."""
    if not whole:
        return "n/a"
    value = 100 * part / whole
    return f"{value:.1f}%" if value >= 0.1 or part == 0 else f"{value:.2g}%"

