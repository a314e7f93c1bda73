"""What to do about an empty class or values outside the class ids, worded for the data at hand: masks
whose values run 1..K (trimaps) are the usual case, where ``--value-map K=ignore`` would leave class 0
empty and the mapping one lower keeps every class."""

from __future__ import annotations

from jodiffusion.data.classes import ClassInfo


def _target_name(classes: ClassInfo, target: int) -> str:
    return classes.names[target] if 0 <= target < classes.num_classes else "ignore"


def shift_map(values: set[int], classes: ClassInfo, value_map: dict[int, int]) -> str | None:
    """``1=NAME0,2=NAME1,...``: each value one lower, for masks whose values start at 1 (values already
    mapped to ignore stay ignore; values beyond the last class become ignore); None where it does not fit."""
    raw = sorted(v for v in values if value_map.get(v) != classes.ignore_index and v != classes.ignore_index)
    if not raw or raw[0] < 1 or raw[-1] > classes.num_classes + 1:
        return None
    items = []
    for v in sorted(values):
        if v == classes.ignore_index and v not in value_map:
            continue
        target = classes.ignore_index if value_map.get(v) == classes.ignore_index else v - 1
        items.append(f"{v}={_target_name(classes, target) if target < classes.num_classes else 'ignore'}")
    return ",".join(items)


def bad_values_hint(values: set[int], bad: list[int], classes: ClassInfo, value_map: dict[int, int]) -> str:
    """The --value-map to suggest for values outside the class ids."""
    shifted = shift_map(values, classes, value_map)
    if shifted and sorted(v for v in values if v != classes.ignore_index) == list(range(1, classes.num_classes + 1)):
        return (f"The values run 1..{classes.num_classes} while the class ids run 0..{classes.num_classes - 1}: "
                f"--value-map {shifted} keeps every class ({bad[0]}=ignore instead would leave class 0, "
                f"{classes.names[0]}, without pixels)")
    return f"Map them with --value-map (e.g. --value-map {bad[0]}=ignore), or give more class names"


def empty_class_warnings(class_pixels: list[int], classes: ClassInfo, mask_type: str, values: set[int],
                         value_map: dict[int, int], threshold: int) -> list[str]:
    """One warning per class without a pixel in any imported mask, with a hint that fits the data."""
    empty = [k for k in range(classes.num_classes) if class_pixels[k] == 0]
    if not empty:
        return []
    named = ", ".join(f"{classes.names[k]} (id {k})" for k in empty)
    what = f"{len(empty)} of {classes.num_classes} classes have no pixel in any mask: {named}."
    if mask_type == "binary":
        return [f"{what} Binary masks: check --threshold ({threshold}) or whether the masks are empty"]
    if mask_type == "colour":
        return [f"{what} No mask holds their colours; check the class file's colours, or drop the classes"]
    shown = ", ".join(str(v) for v in sorted(values)[:12])
    shifted = shift_map(values, classes, value_map)
    if 0 in empty and 0 not in values and shifted:
        return [f"{what} The masks hold the values {shown} (none is 0, the first class id): --value-map {shifted} "
                "keeps every class"]
    return [f"{what} The masks hold the values {shown}; check --names / --classes and --value-map"]


__all__ = ["bad_values_hint", "empty_class_warnings", "shift_map"]
