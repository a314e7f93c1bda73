"""README's command table shows one config syntax: every example there builds its command's config."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from jodiffusion.cli.common import config_from_args
from jodiffusion.cli.main import build_parser
from jodiffusion.data.config import ValidateConfig
from jodiffusion.evaluation.config import EvalConfig, JointEvalConfig
from jodiffusion.experiments.config import PipelineConfig
from jodiffusion.generation.config import GenerateConfig, SampleConfig
from jodiffusion.training.config import CodecRunConfig, JointRunConfig, SegRunConfig, VAERunConfig

README = Path(__file__).resolve().parents[1] / "README.md"
SCHEMAS = {"train-vae": (VAERunConfig, "vae"), "train-codec": (CodecRunConfig, "codec"),
           "train": (JointRunConfig, "joint"), "train-seg": (SegRunConfig, "seg"),
           "generate": (GenerateConfig, "generate"), "sample": (SampleConfig, "sample"),
           "eval-vae": (EvalConfig, "eval"), "eval-seg": (EvalConfig, "eval"), "eval-codec": (EvalConfig, "eval"),
           "eval-joint": (JointEvalConfig, "eval-joint"), "validate": (ValidateConfig, "validate"),
           "pipeline": (PipelineConfig, "pipeline")}
EXAMPLES = re.findall(r"^\| [^|]+ \| [^|]+ \| `(jodiffusion [^`]+)` \|$", README.read_text(), flags=re.M)


def test_the_table_lists_every_config_driven_command():
    assert {shlex.split(example)[1] for example in EXAMPLES} >= set(SCHEMAS) - {"eval-vae", "eval-codec"}


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_example_builds_its_config(example):
    argv = shlex.split(example)[1:]
    schema, group = SCHEMAS[argv[0]]
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args, schema, group)
    for override in (a for a in argv[1:] if "=" in a and not a.startswith("-")):
        key, value = override.split("=", 1)
        target = cfg
        for part in key.split("."):
            target = getattr(target, part)
        assert str(value).strip("[]") in str(target), f"{key}={value} did not reach the config ({target!r})"
