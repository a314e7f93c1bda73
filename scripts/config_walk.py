"""Follow a config through the code: the two walks of docs/architecture.md's refactor table.

    python scripts/config_walk.py [--out runs/walk]

runs ``jodiffusion demo --quick`` (the whole pipeline at toy size, about a minute) under a profiler and prints:

* **run_pipeline's walk**: every call of a jodiffusion function that receives the pipeline's config (a
  ``PipelineConfig``) or one of its sections (the dataclasses inside it) as an argument, in call order, by
  module, consecutive calls in one module counted once. A *return* is a step into a module the walk had
  already left: the fewer, the more the run goes one way.
* **train_joint's walk**: the jodiffusion calls made from the start of ``train_joint`` until the first call
  into ``jodiffusion.data`` (where its data is touched): the fewer, the sooner the stage meets its data.

Comprehensions and generator expressions are not counted as calls. The figures depend on the code only, not
on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path


def _sections(obj, seen: dict) -> None:
    """Every dataclass reachable from ``obj`` (kept alive in ``seen`` so that their ids stay theirs)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if id(obj) in seen:
            return
        seen[id(obj)] = obj
        for f in dataclasses.fields(obj):  # a config still in its __init__ lacks the later fields
            _sections(getattr(obj, f.name, None), seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _sections(value, seen)


def _arguments(frame) -> list:
    code = frame.f_code
    count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)
    return [frame.f_locals.get(name) for name in code.co_varnames[:count]]


class Walker:
    def __init__(self, root_type: type):
        self.root_type = root_type
        self.tracked: dict = {}
        self.pipeline: list[str] = []
        self.joint: list[str] | None = None   # None: train_joint not entered yet
        self.joint_done = False

    def __call__(self, frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("jodiffusion.") or frame.f_code.co_name.startswith("<"):
            return
        where = f"{module}.{frame.f_code.co_name}"
        if not self.joint_done:
            if self.joint is None and where == "jodiffusion.training.joint.train_joint":
                self.joint = []
            elif self.joint is not None:
                if module.startswith("jodiffusion.data"):
                    self.joint_done = True
                else:
                    self.joint.append(where)
        for value in _arguments(frame):
            if isinstance(value, self.root_type):
                self.pipeline.append(module)
                for f in dataclasses.fields(value):  # again each time: a config met in its __init__ was not whole
                    _sections(getattr(value, f.name, None), self.tracked)
                return
            if value is not None and self.tracked.get(id(value)) is value:
                self.pipeline.append(module)
                return


def collapse(seq: list[str]) -> list[str]:
    return [m for i, m in enumerate(seq) if i == 0 or seq[i - 1] != m]


def returns(seq: list[str]) -> int:
    return sum(1 for i, m in enumerate(seq) if m in seq[:i])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/walk", help="the demo folder (replaced)")
    parser.add_argument("--json", help="also write the walks here")
    args = parser.parse_args()
    from jodiffusion.experiments.config import PipelineConfig
    from jodiffusion.experiments.demo import run_demo

    shutil.rmtree(args.out, ignore_errors=True)
    walker = Walker(PipelineConfig)
    sys.setprofile(walker)
    try:
        run_demo(args.out, quick=True, progress=False)
    finally:
        sys.setprofile(None)
    steps = collapse(walker.pipeline)
    joint = walker.joint or []
    print(f"run_pipeline's walk: {len(steps)} module steps, {returns(steps)} returns to modules already left")
    print("  " + " -> ".join(m.removeprefix("jodiffusion.") for m in steps))
    joint_modules = collapse([w.rsplit(".", 1)[0] for w in joint])
    print(f"train_joint's walk: {len(joint)} calls ({len(joint_modules)} module steps) before its data is touched")
    print("  " + " -> ".join(w.removeprefix("jodiffusion.") for w in joint))
    if args.json:
        Path(args.json).write_text(json.dumps({"pipeline_steps": steps, "pipeline_returns": returns(steps),
                                               "train_joint_calls": joint, "train_joint_modules": joint_modules},
                                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
