"""``jodiffusion make-data``: the shapes dataset's splits rendered into the generic folder layout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jodiffusion import __version__
from jodiffusion.data.captions import write_captions
from jodiffusion.data.layout import (
    CAPTIONS_FILE,
    MAKE_DATA_GENERATOR,
    MAKE_DATA_RULES,
    SPLITS_DIR,
    write_classes,
    write_pair,
)
from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.data.shapes_scene import SHAPES_CLASSES
from jodiffusion.utils.io import replace_folder, write_json_atomic, write_text_atomic
from jodiffusion.utils.output_folder import check, output_folder
from jodiffusion.utils.progress import progress_bar
from jodiffusion.utils.tempnames import make_temp_dir


def write_shapes_dataset(out_dir: str | os.PathLike, num_train: int = 512, num_val: int = 128,
                         resolution: int = 64, seed: int = 0, overwrite: bool = False,
                         progress: bool = True, difficulty: str = "full", num_test: int = 0) -> Path:
    """Render both splits into the generic folder layout (see ``jodiffusion.data.layout``).

    Writes ``images/{train,val}/<stem>.png``, ``masks/{train,val}/<stem>.png``, ``classes.json``,
    ``captions.jsonl`` (``{"stem", "caption", "split"}`` per line) and ``splits/{train,val}.txt``; with
    ``num_test`` also a ``test`` split, for scores that no choice has seen.
    Everything goes to a temporary sibling folder that is renamed onto ``out_dir`` at the end, so an
    interrupted run leaves no half-written dataset. A non-empty ``out_dir`` is refused unless
    ``overwrite``, and even then unless it is a dataset this function wrote holding nothing else
    (``MAKE_DATA_RULES``): nothing the caller had is ever deleted.
    """

    out = Path(out_dir).expanduser().absolute()
    check(out, MAKE_DATA_RULES, overwrite)  # before anything is rendered or written
    if int(num_train) < 1 or int(num_val) < 1:
        raise ValueError("num_train and num_val must be positive")
    splits = {"train": ShapesDataset("train", num_train, resolution, seed, difficulty=difficulty),
              "val": ShapesDataset("val", num_val, resolution, seed, difficulty=difficulty)}
    if int(num_test) < 0:
        raise ValueError("num_test must be >= 0 (0: no test split)")
    if num_test:
        splits["test"] = ShapesDataset("test", num_test, resolution, seed, difficulty=difficulty)

    # one run into out at a time, checked again under the lock; the build folders of killed runs are removed
    with output_folder(out, MAKE_DATA_RULES, overwrite=overwrite):
        tmp = make_temp_dir(out.parent, out.name)
        try:
            write_classes(tmp, SHAPES_CLASSES)
            records = []
            total = sum(len(d) for d in splits.values())
            with progress_bar(total=total, desc="rendering shapes", unit="img", disable=not progress) as bar:
                for split, ds in splits.items():
                    stems = []
                    for i in range(len(ds)):
                        sample = ds.render(i)
                        stem = ds.stem(i)
                        write_pair(tmp, split, stem, sample.image, sample.mask, SHAPES_CLASSES)
                        records.append({"stem": stem, "caption": sample.caption, "split": split})
                        stems.append(stem)
                        bar.update(1)
                    write_text_atomic(tmp / SPLITS_DIR / f"{split}.txt", "\n".join(stems) + "\n")
            write_captions(tmp / CAPTIONS_FILE, records)
            write_json_atomic(tmp / "dataset.json", {
                "generator": f"{MAKE_DATA_GENERATOR} (embedded shapes dataset)", "jodiffusion_version": __version__,
                "num_train": num_train, "num_val": num_val, "num_test": num_test, "resolution": resolution,
                "seed": seed,
                "difficulty": difficulty})
            replace_folder(tmp, out)  # out was empty or a dataset folder (checked above)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out
