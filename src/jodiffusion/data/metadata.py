"""Class metadata of the public datasets: names, palettes and the raw-file-value -> train-id tables.

Every dataset is exposed as a ``ClassInfo`` (names, palette, ``ignore_index`` = 255, ``background``)
plus a 256-entry uint8 lookup table (LUT) that turns the values stored in its mask files into train ids:

======================  =========  ===========================================================
dataset                 classes    mask files hold -> train ids
======================  =========  ===========================================================
Pascal VOC 2012         21         0 background, 1..20 objects, 255 boundary (ignore): unchanged
ADE20K (SceneParse150)  150        0 "other" -> 255, v in 1..150 -> v - 1 ("reduce zero label")
COCO-Stuff 164k         171        COCO category id - 1 (0..181, 11 ids unused), 255 unlabelled
                                   -> contiguous 0..170 (80 things, then 91 stuff classes)
COCO things             81         0 background + raw COCO category ids 1..90 (80 used)
                                   -> 0 background, things 1..80 in category-id order
Cityscapes              19         ``*_gtFine_labelTrainIds.png``: 0..18, 255 ignore: unchanged
                                   (``*_gtFine_labelIds.png``: ``CITYSCAPES_LABELID_LUT``)
CamVid (SegNet)         11         0..10 classes, 11 void -> 255
======================  =========  ===========================================================

A raw value that the dataset's definition does not use (e.g. 21..254 in VOC, or the unused COCO ids)
is *not* silently made valid: when its own value lies outside the label space it is left as it is,
and when it would collide with a real class id it is mapped to ``UNMAPPED`` (254). Either way
``jodiffusion validate`` reports the raw file value instead of training on it.

The class names and palettes are the ones of the public dataset definitions (the VOC devkit, the
SceneParse150 ``objectInfo150`` short names, the COCO-Stuff label list, the Cityscapes ``labels.py``
train ids, the SegNet CamVid tutorial). Where a dataset defines no palette (COCO) the palette is the
deterministic ``default_palette``.

Background class (``ClassInfo.background``): VOC and COCO things have one, train id 0
("background"); ADE20K, COCO-Stuff, Cityscapes and CamVid label every pixel with a real class (their
unlabelled pixels are ignore), so they have none. In particular CamVid's id 0 is Sky and
Cityscapes' id 0 is road: ordinary classes that captions name and mask optimisation cleans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from jodiffusion.data.classes import IGNORE_INDEX, ClassInfo, default_palette

UNMAPPED = 254  # where raw values that would collide with a real class id go (reported by validate)


def build_lut(mapping: Mapping[int, int], num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A read-only (256,) uint8 table: ``mapping`` for the raw values it names, ``ignore_index`` stays
    ``ignore_index``, every other raw value keeps its value when that lies outside ``0..num_classes-1``
    and becomes ``UNMAPPED`` when it would otherwise pass for a class id."""
    if not 0 < num_classes < UNMAPPED:
        raise ValueError(f"num_classes must lie in 1..{UNMAPPED - 1}, got {num_classes}")
    lut = np.arange(256, dtype=np.int64)
    lut[lut < num_classes] = UNMAPPED
    if 0 <= ignore_index < 256:
        lut[ignore_index] = ignore_index
    for raw, train_id in mapping.items():
        if not 0 <= raw < 256:
            raise ValueError(f"raw value {raw} is outside 0..255")
        if not (0 <= train_id < num_classes or train_id == ignore_index):
            raise ValueError(f"raw value {raw} maps to {train_id}, outside 0..{num_classes - 1} and ignore")
        lut[raw] = train_id
    out = lut.astype(np.uint8)
    out.setflags(write=False)
    return out


def valid_raw_values(lut: np.ndarray, classes: ClassInfo) -> np.ndarray:
    """(256,) bool: which raw file values the LUT turns into a class id or the ignore index."""
    lut = np.asarray(lut)
    return (lut < classes.num_classes) | (lut == classes.ignore_index)


@dataclass(frozen=True)
class DatasetMetadata:
    classes: ClassInfo
    lut: np.ndarray  # (256,) uint8, read-only

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes


# --------------------------------------------------------------------------------------------------
# Pascal VOC 2012
# --------------------------------------------------------------------------------------------------

VOC_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


def voc_colormap(n: int = 256) -> tuple[tuple[int, int, int], ...]:
    """The VOC devkit colour map: the bits of the class id spread over the high bits of R, G and B."""
    colours = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


VOC_CLASSES = ClassInfo(names=VOC_NAMES, palette=voc_colormap(len(VOC_NAMES)), background=0)
VOC_LUT = build_lut({i: i for i in range(len(VOC_NAMES))}, len(VOC_NAMES))

# --------------------------------------------------------------------------------------------------
# ADE20K / SceneParse150 (ADEChallengeData2016)
# --------------------------------------------------------------------------------------------------

ADE20K_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock",
    "flag",
)

# The colours commonly used to draw SceneParse150 label maps (the devkit's colour table).
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)

ADE20K_CLASSES = ClassInfo(names=ADE20K_NAMES, palette=ADE20K_PALETTE, background=None)  # "other" is ignore
# File value 0 ("other objects") -> ignore; v -> v - 1 for the 150 classes.
ADE20K_LUT = build_lut({0: IGNORE_INDEX, **{v: v - 1 for v in range(1, len(ADE20K_NAMES) + 1)}},
                       len(ADE20K_NAMES))

# --------------------------------------------------------------------------------------------------
# COCO: 80 things (category ids 1..90) and COCO-Stuff 164k (91 stuff classes, ids 92..182)
# --------------------------------------------------------------------------------------------------

COCO_THING_IDS = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella",
    31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis", 36: "snowboard",
    37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove", 41: "skateboard",
    42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup", 48: "fork",
    49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich", 55: "orange",
    56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut", 61: "cake", 62: "chair",
    63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet", 72: "tv",
    73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}

COCO_STUFF_IDS = {
    92: "banner", 93: "blanket", 94: "branch", 95: "bridge", 96: "building-other", 97: "bush",
    98: "cabinet", 99: "cage", 100: "cardboard", 101: "carpet", 102: "ceiling-other",
    103: "ceiling-tile", 104: "cloth", 105: "clothes", 106: "clouds", 107: "counter", 108: "cupboard",
    109: "curtain", 110: "desk-stuff", 111: "dirt", 112: "door-stuff", 113: "fence",
    114: "floor-marble", 115: "floor-other", 116: "floor-stone", 117: "floor-tile", 118: "floor-wood",
    119: "flower", 120: "fog", 121: "food-other", 122: "fruit", 123: "furniture-other", 124: "grass",
    125: "gravel", 126: "ground-other", 127: "hill", 128: "house", 129: "leaves", 130: "light",
    131: "mat", 132: "metal", 133: "mirror-stuff", 134: "moss", 135: "mountain", 136: "mud",
    137: "napkin", 138: "net", 139: "paper", 140: "pavement", 141: "pillow", 142: "plant-other",
    143: "plastic", 144: "platform", 145: "playingfield", 146: "railing", 147: "railroad",
    148: "river", 149: "road", 150: "rock", 151: "roof", 152: "rug", 153: "salad", 154: "sand",
    155: "sea", 156: "shelf", 157: "sky-other", 158: "skyscraper", 159: "snow", 160: "solid-other",
    161: "stairs", 162: "stone", 163: "straw", 164: "structural-other", 165: "table", 166: "tent",
    167: "textile-other", 168: "towel", 169: "tree", 170: "vegetable", 171: "wall-brick",
    172: "wall-concrete", 173: "wall-other", 174: "wall-panel", 175: "wall-stone", 176: "wall-tile",
    177: "wall-wood", 178: "water-other", 179: "waterdrops", 180: "window-blind", 181: "window-other",
    182: "wood",
}

# COCO-Stuff 164k ``stuffthingmaps`` PNGs store category id - 1 (0..181); 255 = unlabelled.
_COCO_STUFF_ALL = {**COCO_THING_IDS, **COCO_STUFF_IDS}
_COCO_STUFF_SORTED_IDS = sorted(_COCO_STUFF_ALL)
COCO_STUFF_CLASSES = ClassInfo(names=tuple(_COCO_STUFF_ALL[i] for i in _COCO_STUFF_SORTED_IDS),
                               palette=default_palette(len(_COCO_STUFF_ALL)), background=None)
COCO_STUFF_LUT = build_lut({cat_id - 1: k for k, cat_id in enumerate(_COCO_STUFF_SORTED_IDS)},
                           len(_COCO_STUFF_ALL))

# COCO things: masks hold 0 = background and the raw category id (1..90) of the thing at each pixel
# (e.g. rendered from the instance annotations); the 80 used ids become 1..80 in id order. The 10
# unused ids below 91 (12, 26, 29, 30, 45, 66, 68, 69, 71, 83) are reported by validation.
_COCO_THING_SORTED_IDS = sorted(COCO_THING_IDS)
COCO_THINGS_CLASSES = ClassInfo(
    names=("background", *(COCO_THING_IDS[i] for i in _COCO_THING_SORTED_IDS)),
    palette=((0, 0, 0), *default_palette(len(COCO_THING_IDS))),
    background=0,
)
COCO_THINGS_LUT = build_lut({0: 0, **{cat_id: k + 1 for k, cat_id in enumerate(_COCO_THING_SORTED_IDS)}},
                            len(COCO_THING_IDS) + 1)

# --------------------------------------------------------------------------------------------------
# Cityscapes (19 evaluation classes, train ids)
# --------------------------------------------------------------------------------------------------

CITYSCAPES_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
CITYSCAPES_CLASSES = ClassInfo(names=CITYSCAPES_NAMES, palette=CITYSCAPES_PALETTE, background=None)  # 0 is road
# ``*_gtFine_labelTrainIds.png`` already holds train ids.
CITYSCAPES_LUT = build_lut({i: i for i in range(len(CITYSCAPES_NAMES))}, len(CITYSCAPES_NAMES))
# ``*_gtFine_labelIds.png`` holds the 34 full label ids (0..33): the 19 evaluated ones -> train ids,
# the other (void / not evaluated) ids -> ignore.
_CITYSCAPES_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                              24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_LABELID_LUT = build_lut(
    {label_id: _CITYSCAPES_LABEL_TO_TRAIN.get(label_id, IGNORE_INDEX) for label_id in range(34)},
    len(CITYSCAPES_NAMES))

# --------------------------------------------------------------------------------------------------
# CamVid, 11-class SegNet version
# --------------------------------------------------------------------------------------------------

CAMVID_NAMES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                "Pedestrian", "Bicyclist")
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
CAMVID_VOID = 11
CAMVID_CLASSES = ClassInfo(names=CAMVID_NAMES, palette=CAMVID_PALETTE, background=None)  # 0 is Sky, not background
CAMVID_LUT = build_lut({**{i: i for i in range(len(CAMVID_NAMES))}, CAMVID_VOID: IGNORE_INDEX},
                       len(CAMVID_NAMES))

# --------------------------------------------------------------------------------------------------

METADATA: dict[str, DatasetMetadata] = {
    "voc": DatasetMetadata(VOC_CLASSES, VOC_LUT),
    "ade20k": DatasetMetadata(ADE20K_CLASSES, ADE20K_LUT),
    "coco-stuff": DatasetMetadata(COCO_STUFF_CLASSES, COCO_STUFF_LUT),
    "coco-things": DatasetMetadata(COCO_THINGS_CLASSES, COCO_THINGS_LUT),
    "cityscapes": DatasetMetadata(CITYSCAPES_CLASSES, CITYSCAPES_LUT),
    "camvid": DatasetMetadata(CAMVID_CLASSES, CAMVID_LUT),
}


def get_metadata(name: str) -> DatasetMetadata:
    try:
        return METADATA[name]
    except KeyError:
        raise KeyError(f"no class metadata for dataset '{name}'; known: {', '.join(METADATA)}") from None
