"""The typed results of the pipeline's own stages, as their ``STAGE.json`` records them (``stages.to_record``).

The training stages record what their train function returns (``VAEResult``, ``CodecResult``,
``SegmenterResult``); the stages below add what only the pipeline knows. Each field keeps the key and the
value the stage recorded before its result was typed, so a folder completed then is still skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jodiffusion.experiments.stages import OMIT_NONE


@dataclass(frozen=True)
class ResizedData:
    """The real dataset written at the working size, and what fitting each split's pairs changed."""
    root: Path
    fit: dict = field(default_factory=dict)  # {split: FitCounter.to_dict()}


@dataclass(frozen=True)
class TemplateCaptions:
    """Captions written from the masks, for a dataset without its own."""
    captions: Path


@dataclass(frozen=True)
class JointStage:
    """The joint model: its export, its training speed and, when the stage fitted the pairs to its size
    itself (no resized data stage), what that changed ({split: counts})."""
    export: Path
    samples_per_second: float | None
    fit: dict | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class GeneratedSet:
    """A generated dataset folder and how many pairs it holds."""
    out: Path
    pairs: int
    pairs_per_second: float | None


@dataclass(frozen=True)
class DatasetFigures:
    """The figures of the data themselves, not of a model: the conditioning probe on real training pairs
    (the reference every generated figure is read against) and the share of pixels per class of the real
    training set and of the generated set ({"real" | "synthetic": {class name: share}})."""
    probe_real: dict
    class_pixel_frequency: dict


@dataclass(frozen=True)
class ModelFigures:
    """What the report draws of the trained models, sampled once (model_figures.py): the arrays lie in
    ``out`` (the trajectory's decoded frames, raw masks before and after refinement, the codec's
    reconstructions when there is a codec); the record names what they were drawn with."""
    out: Path
    classes: dict                 # the joint model's classes (ClassInfo.to_dict), which colour every mask
    prompts: list                 # the trajectory's prompts, one pair of rows each; the refinement's start with them
    steps: list                   # the solver step (from 0) of each trajectory frame
    timesteps: list               # the timestep the solver used at each frame
    num_steps: int                # solver steps in all
    tau: int                      # the mask optimisation's tau
    codec: bool = False           # whether ``out`` holds the codec's reconstructions
