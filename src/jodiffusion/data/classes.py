"""Class metadata: names, colour palette and ignore index of a label space."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

IGNORE_INDEX = 255  # the conventional "do not train on this pixel" value, shared by every reader


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct, deterministic colours for ``n`` classes (golden-ratio hue walk)."""
    colours = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        s = 0.65 + 0.35 * ((i // 7) % 2)
        v = 0.95 - 0.3 * ((i // 3) % 2)
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return tuple(colours)


@dataclass(frozen=True)
class ClassInfo:
    """The label space of a dataset after its reader's mapping: ids ``0..K-1`` plus ``ignore_index``."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] = field(default=())
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        if len(self.names) < 2:
            raise ValueError(f"a label space needs at least 2 classes, got {len(self.names)}")
        if len(self.names) > 256:
            raise ValueError(f"at most 256 classes are supported, got {len(self.names)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError("class names must be unique")
        if not self.palette:
            object.__setattr__(self, "palette", default_palette(len(self.names)))
        if len(self.palette) != len(self.names):
            raise ValueError(f"palette has {len(self.palette)} colours for {len(self.names)} classes")
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "palette", tuple(tuple(int(c) for c in col) for col in self.palette))
        if 0 <= self.ignore_index < len(self.names):
            raise ValueError(f"ignore_index {self.ignore_index} collides with class id {self.ignore_index}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "palette": [list(c) for c in self.palette],
                "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, data: dict) -> ClassInfo:
        return cls(names=tuple(data["names"]), palette=tuple(tuple(c) for c in data.get("palette", ())),
                   ignore_index=int(data.get("ignore_index", IGNORE_INDEX)))
