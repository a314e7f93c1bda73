"""``jodiffusion presets``: every preset of every stage in one listing, each with what it changes.

A stage's presets are the YAML files in ``config/presets/<group>/``; this shows, for each, its opening
comment and the dotted settings it gives (against the stage's defaults), so nobody has to open the files
to compare them. The model architectures a preset names are listed with ``--models``.
"""

from __future__ import annotations

import argparse
import textwrap
from importlib import resources

from jodiffusion.cli.train import TRAINING
from jodiffusion.config.loader import (
    PRESET_PACKAGE,
    config_changes,
    config_to_dict,
    flatten_config,
    list_presets,
    load_config,
)
from jodiffusion.experiments.config import PipelineConfig
from jodiffusion.generation.config import GenerateConfig
from jodiffusion.models.denoisers import DENOISERS

# preset group -> its command's config class: the training commands' table, generate's and the pipeline's
GROUPS = {group: schema for _, group, _, schema, *_ in TRAINING}
GROUPS["generate"] = GenerateConfig
GROUPS["pipeline"] = PipelineConfig
# what a group's config cannot be built without (given on the command line), left out of the listing
PLACEHOLDERS = {"generate": {"num": 1, "out": "<out>"}}
DATA_ROOT = {"data": {"root": "<data.root>"}}  # presets of datasets need a root


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list every stage's presets and what each one changes",
                       description="For each preset of each stage (or of GROUP): its description and the settings "
                                   "it gives that differ from the stage's defaults.")
    p.add_argument("group", nargs="?", choices=sorted(GROUPS), help="only this stage's presets")
    p.add_argument("--models", action="store_true", help="also list the denoiser architecture presets")
    p.set_defaults(func=_run)


def preset_changes(group: str, name: str) -> tuple[str, dict]:
    """(description, {dotted key: value}) of one preset: its opening comment and the settings whose
    resolved value differs from the defaults of its stage's config."""
    text = (resources.files(PRESET_PACKAGE) / group / f"{name}.yaml").read_text(encoding="utf-8")
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").rstrip())
    schema = GROUPS[group]
    values = PLACEHOLDERS.get(group, DATA_ROOT)
    preset = config_to_dict(load_config(schema, group=group, preset=name, values=values))
    default = config_to_dict(load_config(schema, values=values))
    given = set(flatten_config(values))
    changes = {k: new for k, (_, new) in config_changes(default, preset).items() if k not in given}
    return " ".join(comment), changes


def _run(args: argparse.Namespace) -> int:
    for group in [args.group] if args.group else sorted(GROUPS):
        print(f"== {group} (config/presets/{group}/)")
        for name in list_presets(group):
            about, changes = preset_changes(group, name)
            print(f"  {name}")
            for line in textwrap.wrap(about, 96):
                print(f"      {line}")
            for key, value in changes.items():
                print(f"      {key} = {value}")
    if args.models:
        print("== denoiser architectures (model.preset; model.arch.<field> changes one field)")
        for backbone in DENOISERS.names():
            for name, fields in DENOISERS.info(backbone)["presets"].items():
                print(f"  {backbone}/{name}: " + ", ".join(f"{k}={v}" for k, v in fields.items()))
    return 0
