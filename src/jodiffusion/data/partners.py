"""Files that could be the missing partner of an image or a mask: what ``validate`` names when a sample
has no mask (or no image) but a file with the same stem lies in another format or another folder."""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from pathlib import Path


class PartnerFinder:
    """Files that share a stem with an image or mask whose partner is missing: a JPEG mask where the reader
    takes PNG, an image in a sibling folder. It indexes, once and only when asked, the picture files up to
    ``MAX_DEPTH`` levels below the folder two levels above the sample's file (the dataset root of
    ``images/<split>/<stem>``), at most ``MAX_FILES`` of them."""

    SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
    FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
    MAX_DEPTH, MAX_FILES = 4, 200_000

    def __init__(self):
        self._lock = threading.Lock()
        self._index: dict[Path, dict[str, list[Path]]] = {}

    def _files(self, base: Path) -> dict[str, list[Path]]:
        with self._lock:
            if base not in self._index:
                found: dict[str, list[Path]] = defaultdict(list)
                count = 0
                for folder, dirs, names in os.walk(base):
                    depth = len(Path(folder).relative_to(base).parts)
                    dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < self.MAX_DEPTH else []
                    for name in sorted(names):
                        path = Path(folder) / name
                        if path.suffix.lower() in self.SUFFIXES and not name.startswith("."):
                            found[path.stem].append(path)
                            count += 1
                    if count >= self.MAX_FILES:
                        break
                self._index[base] = found
            return self._index[base]

    def hint(self, present: Path, stem: str, missing: str) -> str:
        """'' or a sentence naming the files with ``stem`` near ``present`` (the file that is there) and
        the command that pairs them; ``missing``: "mask" or "image"."""
        present = Path(present)
        base = present.parents[min(2, len(present.parents) - 1)]
        try:
            others = [p for p in self._files(base).get(stem, []) if p != present]
        except OSError:
            return ""
        if not others:
            return ""

        def name(p: Path) -> str:
            rel = p.relative_to(base).as_posix()
            return f"{rel} ({self.FORMATS.get(p.suffix.lower(), p.suffix.lstrip('.').upper())})"

        shown = ", ".join(name(p) for p in others[:2]) + (f" and {len(others) - 2} more" if len(others) > 2 else "")
        what = ("masks are single-channel PNGs in the mask folder" if missing == "mask"
                else "images are PNG or JPEG files in the image folder")
        return (f"; a file with this stem exists: {shown} in {base}, not read as its {missing} here ({what}). "
                f"`jodiffusion import {base} --out NEW_FOLDER` pairs images and masks by stem across folders "
                "and formats (PNG, JPEG, BMP, TIFF) and writes them in this layout")
