"""``jodiffusion import``: turn a segmentation folder as downloaded into the project's layout, then validate it."""

from __future__ import annotations

import argparse
import sys

from jodiffusion.data.importer.folder import import_folder
from jodiffusion.data.importer.options import ImportOptions

EPILOG = """\
examples:
  jodiffusion import downloads/pets --out data/pets
      images/ and masks/ (or imgs/, labels/, annotations/, ...) found in the folder, paired by stem
  jodiffusion import downloads/pets --out data/pets --images 'photos/*.jpg' --masks trimaps --names background,pet
  jodiffusion import downloads/voc_colour --out data/voc --mask-type colour --classes classes.json
  jodiffusion import downloads/CamVid --out data/camvid --classes downloads/CamVid/label_colors.txt
  jodiffusion import downloads/lgg --out data/lgg --images '*/*.tif' --masks '*/*_mask.tif'
      (case folders: also found without flags; an image pairs only with a mask in the same folders)
  jodiffusion import downloads/seg --out data/seg --names background,road,car --value-map 0=ignore,255=1

masks: class ids (grey or palette PNG), binary (0/255, 0/1, lossy JPEG: --threshold), or colour-coded RGB
(palette from --classes, else the distinct colours found, exactly for lossless masks; other colours are
snapped to the nearest one, and a table that snaps over 3% of the pixels or empties a class is refused).
auto picks: colour when masks are colour-coded (palette PNGs among them read by colour too), when the class
file gives colours for palette PNGs or their palettes disagree; ids for other palette PNGs or a value map;
binary for lossy JPEG or 0/255 or 0/1 masks (with no or 2 class names), ids otherwise.

sizes: where mask and image sizes differ, --resize image (default: the mask is the truth, image bicubic)
or --resize mask (nearest); pairs whose aspect ratios differ by more than --aspect-tolerance are left out.

splits: split-named first sub-folders (train/, val/, test/, ...) are kept; otherwise --val-fraction of
the pairs (seeded) become val. Nothing in SRC is modified; OUT appears only once complete and valid,
with import.json (the summary). Then: jodiffusion validate --dataset folder --root OUT"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="turn a downloaded image/mask folder into the project's layout and validate it",
        description="Read a folder of images and masks as it comes (PNG, JPEG, BMP, TIFF; masks as class ids, "
                    "binary or colour-coded, at any size) and write it in the project's folder layout "
                    "(images/<split>/, masks/<split>/, classes.json, splits/), then validate it. Every pair left "
                    "out is listed with its reason; the summary is also written to OUT/import.json.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="the downloaded folder (only read, never modified)")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty)")
    p.add_argument("--images", metavar="FOLDER_OR_GLOB",
                   help="the images, relative to SRC: a folder (searched recursively) or a glob such as "
                        "'photos/*.jpg' (default: images/, imgs/, JPEGImages/, ... whichever exists)")
    p.add_argument("--masks", metavar="FOLDER_OR_GLOB",
                   help="the masks, relative to SRC (default: masks/, labels/, annotations/, "
                        "SegmentationClass/, ... whichever exists)")
    p.add_argument("--mask-type", default="auto", choices=("auto", "ids", "binary", "colour"),
                   help="how masks encode the classes (default: auto, see below)")
    p.add_argument("--threshold", type=int, default=128, metavar="T",
                   help="binary masks: a value >= T is foreground (masks holding only 0 and 1: 1 is); default 128")
    p.add_argument("--value-map", metavar="MAP",
                   help="rewrite raw mask values first: '255=1,0=ignore' (targets: a class id, a class name or "
                        "ignore); colour masks: '#e0e0c0=ignore'")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="class names in id order, comma- or space-separated (binary masks default to "
                        "background,foreground)")
    p.add_argument("--classes", metavar="FILE", dest="classes_file",
                   help="the class file: classes.json / .yaml with names (and optionally palette, ignore_index, "
                        "background), or as the dataset ships it: CamVid's label_colors.txt (R G B name), "
                        "class_dict.csv (name,r,g,b), {name: colour} or [{name, color}] JSON")
    p.add_argument("--background", metavar="NAME_OR_ID",
                   help="the background class, or 'none' (default: binary masks 0; else the class named "
                        "'background' if any, or the classes file's)")
    p.add_argument("--resize", default="image", choices=("image", "mask", "none"),
                   help="when sizes differ: resize the image to the mask (default), the mask to the image, or "
                        "leave the pair out")
    p.add_argument("--aspect-tolerance", type=float, default=0.02, metavar="F",
                   help="largest relative difference of image and mask aspect ratios that is resized "
                        "(default 0.02 = 2%%)")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="share of the pairs that become the val split when the source has none (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    p.add_argument("--min-colour-fraction", type=float, default=0.001, metavar="F",
                   help="colour masks without a palette: colours covering less of the pixels are not classes")
    p.add_argument("--accept-colour-table", action="store_true",
                   help="import colour masks even when the colour table snaps more than 3%% of the pixels to another "
                        "colour or leaves a class without pixels (refused by default, with the figures)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DIR when an earlier `jodiffusion import` wrote it (and nothing else is in it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_import)


def _names(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def run_import(args: argparse.Namespace) -> int:
    options = ImportOptions(images=args.images, masks=args.masks, mask_type=args.mask_type, threshold=args.threshold,
                            value_map=args.value_map, names=_names(args.names), classes_file=args.classes_file,
                            background=args.background, resize=args.resize, aspect_tolerance=args.aspect_tolerance,
                            val_fraction=args.val_fraction, seed=args.seed,
                            min_colour_fraction=args.min_colour_fraction,
                            accept_colour_table=args.accept_colour_table)
    progress = not args.no_progress and sys.stderr.isatty()
    summary = import_folder(args.src, args.out, options, overwrite=args.overwrite, progress=progress)
    print(summary.format())
    print(f"next: jodiffusion validate --dataset folder --root {summary.out}   (already passed), then\n"
          f"      jodiffusion pipeline --preset camvid-cpu data.name=folder data.root={summary.out} "
          "output_dir=runs/mydata")
    return 0
