"""Which dataset to read and how: the ``data`` section of every stage's config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from jodiffusion.data.registry import dataset_names, needs_root
from jodiffusion.data.shapes_scene import DIFFICULTIES
from jodiffusion.data.transforms import RESIZE_MODES
from jodiffusion.errors import ConfigError

SHAPES_ONLY = ("num_train", "num_val", "num_test", "seed", "difficulty")  # settings of the embedded "shapes" generator


@dataclass
class DataConfig:
    # A dataset registered in data/registry.py (``dataset_names()``; ``DATASETS.register`` adds your own):
    # shapes, voc, ade20k, coco-stuff, coco-things, cityscapes, camvid, folder. "shapes" is the embedded
    # procedural dataset (no download, the default).
    name: str = "shapes"
    # Dataset root folder (not used by "shapes").
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    # captions.jsonl (one {"stem", "caption"} per line); default: <root>/captions.jsonl when present.
    captions: str | None = None
    # VOC only: use SBD's "trainaug" list when it is present.
    voc_trainaug: bool = True
    # The training size of the generative stages, for every dataset (height = resolution, width = ``width``
    # or resolution); pairs are fitted to it as ``resize`` says. It is also the image size of the embedded
    # "shapes" dataset.
    resolution: int = 64
    # Embedded "shapes" dataset: number of images per split, and its seed.
    num_train: int = 512
    num_val: int = 128
    # ... and of a "test" split held out from every choice (0: none written; read as split "test")
    num_test: int = 0
    seed: int = 0
    # Embedded "shapes" dataset: "full" (every texture and background pattern) or "easy" (solid objects on
    # plain backgrounds, the demo's default; see data/shapes_scene.py DIFFICULTIES).
    difficulty: str = "full"
    # Width of the training size when it is not square: keep a dataset's aspect ratio (CamVid 360x480 ->
    # resolution=96 width=128).
    width: int | None = None
    # How a pair whose aspect ratio differs from the training size is fitted to it: "letterbox" (scaled to
    # fit inside; the image padded with black, the mask with ignore, so no pixel is lost and padding is
    # never scored) or "crop" (scaled to cover, the centre cut out: what is cut is lost).
    resize: str = "letterbox"

    def __post_init__(self):
        if self.name not in dataset_names():
            raise ConfigError(f"data.name='{self.name}' is not a known dataset; "
                             f"choose one of {', '.join(dataset_names())} (or register yours with "
                             "jodiffusion.data.registry.DATASETS.register)")
        if needs_root(self.name) and not self.root:
            raise ConfigError(f"data.root is required for dataset '{self.name}' (the folder that holds it)")
        if self.resolution < 16 or self.resolution % 8:
            raise ConfigError(f"data.resolution={self.resolution} must be a multiple of 8 and at least 16")
        if self.width is not None and (self.width < 16 or self.width % 8):
            raise ConfigError(f"data.width={self.width} must be a multiple of 8 and at least 16 (or null: square)")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"data.resize='{self.resize}'; choose one of {', '.join(RESIZE_MODES)}")
        if self.difficulty not in DIFFICULTIES:
            raise ConfigError(f"data.difficulty='{self.difficulty}'; choose one of {', '.join(DIFFICULTIES)}")
        if self.seed < 0:
            raise ConfigError(f"data.seed={self.seed}: a seed must be an integer >= 0; give e.g. data.seed=0")
        if self.num_train < 1 or self.num_val < 1:
            raise ConfigError("data.num_train and data.num_val must be positive")
        if self.num_test < 0:
            raise ConfigError(f"data.num_test={self.num_test} must be >= 0 (0: no test split)")

    def record(self) -> dict:
        """The settings that apply to this dataset, for stage records: the embedded generator's
        (``num_train``, ``difficulty``, ...) only for "shapes", ``voc_trainaug`` only for VOC, ``root``
        only for datasets read from disk."""
        skip = set()
        if self.name != "shapes":
            skip |= set(SHAPES_ONLY)
        else:
            skip.add("root")
        if self.name != "voc":
            skip.add("voc_trainaug")
        return {k: v for k, v in asdict(self).items() if k not in skip}

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) the generative models train at."""
        return self.resolution, self.width or self.resolution


@dataclass
class ValidateConfig:
    """The settings of ``jodiffusion validate``: which dataset, and which of its splits (default: its train
    and val splits). A run's config.yaml gives its ``data`` section."""
    data: DataConfig = field(default_factory=DataConfig)
    splits: list[str] = field(default_factory=list)

    def checked_splits(self) -> list[str]:
        return list(dict.fromkeys(self.splits or [self.data.train_split, self.data.val_split]))
