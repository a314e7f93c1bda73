"""Make a folder laid out like a figure-ground dataset as downloaded, from CamVid (for README's "Your own
data" walk-through and docs/results.md; the package never reads it).

    rgb/<stem>.jpg            photos, cut to mixed aspect ratios: portrait 2:3, wide 8:3, square, 4:3
    figure_ground/<stem>.jpg  car (255) against everything else (0), lossy JPEG, at half the photo's scale
    gray/<stem>.jpg           grey copies of the photos (a folder a downloader brings along)

    python scripts/examples/make_mixed_download.py ../shared/data/camvid /tmp/cars --pairs 120
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CAR = 8  # CamVid's class index of Car
CUTS = {"portrait": (360, 240), "wide": (180, 480), "square": (360, 360), "full": (360, 480)}  # (h, w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("camvid", type=Path, help="CamVid as distributed with SegNet (train/, trainannot/)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--pairs", type=int, default=120)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder")
    stems = sorted(p.stem for p in (args.camvid / "train").glob("*.png"))[: args.pairs]
    for name in ("rgb", "figure_ground", "gray"):
        (args.out / name).mkdir(parents=True)
    for i, stem in enumerate(stems):
        photo = np.asarray(Image.open(args.camvid / "train" / f"{stem}.png").convert("RGB"))
        ids = np.asarray(Image.open(args.camvid / "trainannot" / f"{stem}.png"))
        h, w = list(CUTS.values())[i % len(CUTS)]
        top, left = (photo.shape[0] - h) // 2, (photo.shape[1] - w) // 2
        photo, ids = photo[top:top + h, left:left + w], ids[top:top + h, left:left + w]
        figure = np.where(ids == CAR, 255, 0).astype(np.uint8)
        Image.fromarray(photo).save(args.out / "rgb" / f"{stem}.jpg", quality=90)
        Image.fromarray(photo).convert("L").save(args.out / "gray" / f"{stem}.jpg", quality=90)
        half = Image.fromarray(figure).resize((w // 2, h // 2), Image.Resampling.NEAREST)
        half.save(args.out / "figure_ground" / f"{stem}.jpg", quality=85)
    print(f"{len(stems)} pairs in {args.out}")


if __name__ == "__main__":
    main()
