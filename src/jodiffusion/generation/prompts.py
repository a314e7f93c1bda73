"""Where the prompts of a generated dataset come from.

Three sources, each a pure function ``index -> Prompt`` of (seed, index, source config), so that
sample ``i`` gets the same prompt on any rank, in any batch and after any restart:

* ``captions`` (default, as in the paper): the training captions of the model's dataset, taken from a
  ``captions.jsonl`` (or a dataset folder holding one). Every epoch of ``len(captions)`` indices walks
  a seeded permutation of them, so each caption is used once per epoch.
* ``templates``: class-balanced prompts such as ``"a photo of a car, a road and a tree"``. Prompt ``i``
  names 1-3 classes drawn so that the share of prompts naming class ``c`` follows a target histogram
  (default uniform over the classes but the background, ``ClassInfo.background``): rare classes get
  as many pairs as common ones.
* ``file``: one prompt per line of a text file, cycled in file order. A line may also be a JSON object
  ``{"prompt": "...", "classes": ["car", "road"]}`` that says which classes the prompt asks for.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jodiffusion.data.captions import captions_path, check_caption_length, read_caption_records
from jodiffusion.data.classes import ClassInfo, classes_named
from jodiffusion.data.layout import CAPTIONS_FILE
from jodiffusion.errors import ConfigError, DatasetError
from jodiffusion.utils.safe_load import read_text

PROMPT_SOURCES = ("captions", "templates", "file")
# Mixed into the seeds of the prompt generators so that they never coincide with the noise seeds.
_CAPTIONS_TAG, _TEMPLATES_TAG = 0x6361_7074, 0x7465_6D70


class UnknownClassError(ConfigError):
    """A prompt or a target histogram names a class the model does not have."""


@dataclass
class PromptConfig:
    source: str = "captions"
    # captions: a captions.jsonl or a dataset folder that has one (default: found from the model folder)
    captions: str | None = None
    split: str | None = "train"  # captions lines of another split are skipped (lines without a split are kept)
    # file: one prompt per line (or {"prompt": ..., "classes": [...]} per line)
    file: str | None = None
    # templates: "{classes}" is replaced by the class phrases, each written with `item` and joined
    # as "a, b and c"
    template: str = "a photo of {classes}"
    item: str = "a {name}"
    min_classes: int = 1
    max_classes: int = 3
    # target share of prompts naming each class, by class name (default: uniform over non-background)
    class_weights: dict[str, float] | None = None

    def __post_init__(self):
        if self.source not in PROMPT_SOURCES:
            raise ConfigError(f"prompt source '{self.source}' is unknown; choose one of {', '.join(PROMPT_SOURCES)}")
        if self.source == "file" and not self.file:
            raise ConfigError("prompt source 'file' needs a prompts file (one prompt per line)")
        if "{classes}" not in self.template:
            raise ConfigError(f"template {self.template!r} must contain '{{classes}}'")
        if "{name}" not in self.item:
            raise ConfigError(f"template item {self.item!r} must contain '{{name}}'")
        if not 1 <= self.min_classes <= self.max_classes:
            raise ConfigError(f"need 1 <= min_classes ({self.min_classes}) <= max_classes ({self.max_classes})")
        if self.class_weights is not None:
            self.class_weights = {str(k): float(v) for k, v in dict(self.class_weights).items()}
            bad = {k: v for k, v in self.class_weights.items() if not np.isfinite(v) or v < 0}
            if bad:
                raise ConfigError(f"class weights must be finite and >= 0, got {bad}")
            if not any(v > 0 for v in self.class_weights.values()):
                raise ConfigError("class weights are all zero: give at least one class a positive weight")


@dataclass(frozen=True)
class Prompt:
    text: str
    source: str
    classes: tuple[int, ...] = field(default=())  # ids the prompt asks for


def unknown_class_error(names, classes: ClassInfo, where: str) -> UnknownClassError:
    names = sorted(set(names))
    return UnknownClassError(f"{where} names unknown class{'es' if len(names) > 1 else ''} "
                             f"{', '.join(repr(n) for n in names)}; valid classes: {', '.join(classes.names)}")


def parse_class_weights(text: str) -> dict[str, float]:
    """``"car=2,road=1"`` (or a JSON object) -> ``{"car": 2.0, "road": 1.0}``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return {str(k): float(v) for k, v in json.loads(text).items()}
        except (ValueError, AttributeError) as exc:
            raise ConfigError(f"class weights {text!r}: not a JSON object of numbers ({exc})") from None
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.rpartition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            weights[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"class weights: cannot read {part!r}; write NAME=WEIGHT[,NAME=WEIGHT...]") from None
    return weights


# --- the sources -------------------------------------------------------------------------------

class PromptSource:
    name = ""

    def __init__(self, seed: int, classes: ClassInfo):
        self.seed, self.classes = int(seed), classes

    def __call__(self, index: int) -> Prompt:
        raise NotImplementedError

    def identity(self) -> dict:
        """What makes the prompts of this source what they are (stored with the generated dataset)."""
        raise NotImplementedError


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]


class ListSource(PromptSource):
    """A fixed list of prompts, in file order (``file``) or a seeded permutation per epoch (``captions``)."""

    def __init__(self, name: str, prompts: list[str], seed: int, classes: ClassInfo, origin: str,
                 shuffle: bool, explicit: list[tuple[int, ...] | None] | None = None):
        super().__init__(seed, classes)
        if not prompts:
            raise DatasetError(f"{origin} holds no prompts")
        self.name, self.prompts, self.origin, self.shuffle = name, prompts, origin, shuffle
        self.explicit = explicit or [None] * len(prompts)

    @functools.lru_cache(maxsize=4)  # noqa: B019 - a handful of epochs per source, freed with it
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, _CAPTIONS_TAG, epoch]).permutation(len(self.prompts))

    def __call__(self, index: int) -> Prompt:
        epoch, pos = divmod(int(index), len(self.prompts))
        k = int(self._order(epoch)[pos]) if self.shuffle else pos
        text = self.prompts[k]
        ids = self.explicit[k]
        if ids is None:
            ids = tuple(sorted(classes_named(text, self.classes)))
        return Prompt(text, self.name, ids)

    def identity(self) -> dict:
        # not the file's path: moving the file does not change the prompts
        return {"source": self.name, "count": len(self.prompts),
                "sha256": _digest(self.prompts + [json.dumps(e) for e in self.explicit])}


def inclusion_probabilities(weights: np.ndarray, k: int) -> np.ndarray:
    """Per-class probabilities of being among ``k`` drawn classes, proportional to ``weights`` and capped
    at 1 (a class that would need more than certainty is always drawn and the rest share the remainder)."""
    pi = np.zeros_like(weights, dtype=np.float64)
    free = weights > 0
    left = float(k)
    while True:
        pi[free] = left * weights[free] / weights[free].sum()
        over = free & (pi >= 1.0)
        if not over.any():
            return pi
        pi[over] = 1.0
        free &= ~over
        left = k - float((pi == 1.0).sum())
        if left <= 0 or not free.any():
            return pi


class TemplateSource(PromptSource):
    """Class-balanced template prompts. Prompt ``i`` draws ``k`` (uniform in min..max) distinct classes by
    systematic sampling with inclusion probabilities ``k * weight`` (capped at 1): over many prompts the
    share naming class ``c`` follows its weight wherever no cap applies."""

    name = "templates"

    def __init__(self, cfg: PromptConfig, seed: int, classes: ClassInfo):
        super().__init__(seed, classes)
        self.cfg = cfg
        if cfg.class_weights is None:
            w = np.array([0.0 if classes.is_background(c) else 1.0 for c in range(classes.num_classes)])
        else:
            unknown = set(cfg.class_weights) - set(classes.names)
            if unknown:
                raise unknown_class_error(unknown, classes, "the target class histogram")
            w = np.array([cfg.class_weights.get(n, 0.0) for n in classes.names], dtype=np.float64)
        if not (w > 0).any():
            raise ConfigError("no class has a positive target weight")
        self.weights = w / w.sum()
        self.candidates = np.flatnonzero(self.weights > 0)

    def phrase(self, ids) -> str:
        items = [self.cfg.item.format(name=self.classes.names[c].replace("_", " ")) for c in ids]
        joined = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        return self.cfg.template.format(classes=joined)

    def __call__(self, index: int) -> Prompt:
        rng = np.random.default_rng([self.seed, _TEMPLATES_TAG, int(index)])
        k = min(int(rng.integers(self.cfg.min_classes, self.cfg.max_classes + 1)), len(self.candidates))
        order = rng.permutation(self.candidates)
        cum = np.cumsum(inclusion_probabilities(self.weights[order], k))
        points = rng.random() + np.arange(k)
        picked = np.minimum(np.searchsorted(cum, points, side="right"), len(order) - 1)
        ids = list(dict.fromkeys(int(order[p]) for p in picked))  # float round-off could repeat one
        return Prompt(self.phrase(ids), self.name, tuple(ids))

    def identity(self) -> dict:
        return {"source": self.name, "template": self.cfg.template, "item": self.cfg.item,
                "min_classes": self.cfg.min_classes, "max_classes": self.cfg.max_classes,
                "weights": {self.classes.names[c]: float(self.weights[c]) for c in self.candidates}}


# --- building a source -------------------------------------------------------------------------

def read_prompt_file(path: str | Path, classes: ClassInfo) -> tuple[list[str], list[tuple[int, ...] | None]]:
    path = Path(path).expanduser()
    lines = read_text(path, "prompts file", "give UTF-8 text, one prompt per line", DatasetError).splitlines()
    prompts, explicit = [], []
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        ids = None
        if line.startswith("{"):
            try:
                record = json.loads(line)
                text, names = str(record["prompt"]), [str(n) for n in record.get("classes", [])]
            except (ValueError, KeyError, TypeError):
                raise DatasetError(f"{path}, line {lineno}: a line starting with '{{' must be a JSON object "
                                   '{"prompt": "...", "classes": [...]}') from None
            unknown = set(names) - set(classes.names)
            if unknown:
                raise unknown_class_error(unknown, classes, f"{path}, line {lineno}")
            ids, line = tuple(classes.names.index(n) for n in names), text
        check_caption_length(line, f"{path}, line {lineno}", "prompt")
        prompts.append(line)
        explicit.append(ids)
    return prompts, explicit


def _read_captions(path: Path, split: str | None) -> tuple[list[str], str]:
    records = read_caption_records(path)
    texts = [r["caption"] for r in records if split is None or r.get("split", split) == split]
    return texts, str(path.resolve())


def training_captions(cfg: PromptConfig, model_dir: str | Path | None) -> tuple[list[str], str]:
    """The caption prompts: ``cfg.captions`` (a captions file or a folder holding one), else the
    training captions the exported model folder carries (``JoDiffusionPipeline.save_pretrained``)."""
    if cfg.captions:
        path = captions_path(cfg.captions)
        if not path.is_file():
            raise DatasetError(f"no captions file at {path}: give a {CAPTIONS_FILE} or a dataset folder that has one")
        return _read_captions(path, cfg.split)
    carried = captions_path(None, model_dir) if model_dir is not None else None
    if carried is not None:
        return _read_captions(carried, cfg.split)
    raise DatasetError(f"the model folder {model_dir} carries no training captions ({CAPTIONS_FILE}; folders "
                       f"exported by earlier versions do not): pass --captions PATH (a {CAPTIONS_FILE} or the dataset "
                       "folder), or use --prompts templates or --prompts FILE")


def build_prompt_source(cfg: PromptConfig, classes: ClassInfo, seed: int,
                        model_dir: str | Path | None = None) -> PromptSource:
    if cfg.source == "templates":
        return TemplateSource(cfg, seed, classes)
    if cfg.class_weights is not None:
        raise ConfigError("class weights (a target class histogram) only apply to --prompts templates")
    if cfg.source == "file":
        prompts, explicit = read_prompt_file(cfg.file, classes)
        return ListSource("file", prompts, seed, classes, str(Path(cfg.file).expanduser().resolve()),
                          shuffle=False, explicit=explicit)
    prompts, origin = training_captions(cfg, model_dir)
    return ListSource("captions", [re.sub(r"\s+", " ", p).strip() for p in prompts], seed, classes, origin,
                      shuffle=True)
