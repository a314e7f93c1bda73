"""``jodiffusion refine``: mask optimisation of a folder of generated masks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from jodiffusion.data import layout
from jodiffusion.data.classes import IGNORE_INDEX
from jodiffusion.errors import DatasetError
from jodiffusion.masks.folder import SUMMARY_FILE, refine_folder

REFINE_HELP = "remove speckle noise from generated masks (relabel small connected components)"

REFINE_DESCRIPTION = """\
Mask optimisation. Every connected component of a class whose area is below --tau pixels is
relabelled with the most frequent label on its one-pixel outer boundary (the 3x3 ring around it).
Ignore pixels are never relabelled and never chosen. Components of the dataset's background class
are kept unless --include-background is given; the background (and the ignore index) is read from
--classes (the dataset's classes.json, or a folder holding one) or given with --background-id.
Without either no class is background and small components of every class are relabelled (right for
datasets without a background: CamVid's id 0 is Sky, Cityscapes' id 0 is road). All decisions are
taken from the input mask and applied at once.

Every *.png under IN_DIR (recursively) is refined into OUT_DIR with the same relative path and the
same PNG palette; a summary with the totals is written to OUT_DIR/refine_summary.json."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("refine", help=REFINE_HELP, description=REFINE_DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("in_dir", metavar="IN_DIR", help="folder of mask PNGs (class ids), searched recursively")
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="new folder for the refined masks (must not exist or be empty, see --overwrite)")
    p.add_argument("--tau", type=int, default=20,
                   help="area threshold in pixels: components with fewer pixels are relabelled, "
                        "a component of exactly TAU pixels is kept (default: 20)")
    p.add_argument("--connectivity", type=int, choices=(4, 8), default=4,
                   help="pixel connectivity that defines a component: 4 (edges) or 8 (edges and "
                        "corners) (default: 4)")
    p.add_argument("--include-background", action="store_true",
                   help="also relabel small components of the background class (default: keep them)")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="classes.json / classes.yaml of the masks' dataset (or a folder holding one): "
                        "gives the background class and the ignore index")
    p.add_argument("--background-id", "--background", type=int, default=None, metavar="ID",
                   help="class id of the background, whose small components are kept (default: the "
                        "background of --classes, else none)")
    p.add_argument("--ignore-index", type=int, default=None, metavar="ID",
                   help="label of ignore pixels: never relabelled, never chosen (default: the ignore "
                        "index of --classes, else 255)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help=f"worker processes; 1 runs in this process (default: all cores, {os.cpu_count()})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT_DIR if an earlier refine wrote it (and it holds only masks and the summary)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run_refine)


def _classes_from(path: str):
    """The ClassInfo of a classes.json / classes.yaml file, or of the folder that holds one."""
    path = Path(path)
    if path.is_dir():
        return layout.read_classes(path)
    if not path.is_file():
        raise DatasetError(f"--classes {path}: no such file or folder; give the dataset's classes.json")
    return layout.read_classes_file(path)


def run_refine(args: argparse.Namespace) -> int:
    classes = _classes_from(args.classes) if args.classes else None
    background_id = args.background_id if args.background_id is not None else (
        classes.background if classes is not None else None)
    ignore_index = args.ignore_index if args.ignore_index is not None else (
        classes.ignore_index if classes is not None else IGNORE_INDEX)
    summary = refine_folder(args.in_dir, args.out_dir, tau=args.tau, connectivity=args.connectivity,
                            include_background=args.include_background, workers=args.workers,
                            ignore_index=ignore_index, progress=not args.no_progress,
                            overwrite=args.overwrite, background_id=background_id)
    print(f"refined {summary['masks']} masks into {summary['out_dir']} in {summary['seconds']:.1f} s "
          f"(tau={summary['tau']}, connectivity={summary['connectivity']}, "
          f"background={'none' if summary['background_id'] is None else summary['background_id']})")
    print(f"  masks changed:      {summary['masks_changed']}")
    print(f"  components seen:    {summary['components_seen']}")
    print(f"  small components:   {summary['small_components']}")
    print(f"  relabelled:         {summary['relabelled']}")
    print(f"  pixels changed:     {summary['pixels_changed']} ({summary['percent_pixels_changed']:.3f}%)")
    print(f"  summary:            {os.path.join(summary['out_dir'], SUMMARY_FILE)}")
    return 0
