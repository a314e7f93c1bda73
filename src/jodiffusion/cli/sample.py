"""`sample`: text -> (image, mask) pairs from a trained joint model (`train` is in train.py)."""

from __future__ import annotations

import argparse
import logging

from jodiffusion.cli.common import Shorthand, add_config_args, add_shorthands, config_from_args
from jodiffusion.generation.config import SampleConfig
from jodiffusion.generation.sample import sample_to_folder

log = logging.getLogger("jodiffusion")

# flag -> the override it stands for (cli/common.py)
SHORTHANDS = (
    Shorthand(("--prompt",), "prompts", "a prompt (repeatable)", {"action": "append", "metavar": "TEXT"}),
    Shorthand(("--prompts-file",), "prompts_file", "a text file with one prompt per line", {"metavar": "FILE"}),
    Shorthand(("-n", "--num"), "num", "number of pairs written, the prompts taken in turn (default: --per-prompt "
              "pairs of each prompt)", {"type": int, "metavar": "N"}),
    Shorthand(("--per-prompt",), "per_prompt", "pairs of each prompt, one after the other (default: 1)",
              {"type": int, "metavar": "K"}),
    Shorthand(("--out",), "out", "output folder (images/, masks/, prompts.jsonl, grid.png)", {"metavar": "DIR"}),
    Shorthand(("--seed",), "seed", "global seed (default: 0)", {"type": int}),
    Shorthand(("--steps",), "steps", "solver steps (default: the model's, usually 25)", {"type": int}),
    Shorthand(("--guidance",), "guidance", "classifier-free guidance scale (default: the model's)", {"type": float}),
    Shorthand(("--batch-size",), "batch_size", "pairs sampled at once (default: 8)", {"type": int}),
    Shorthand(("--min-confidence",), "min_confidence",
              "mask pixels whose top class probability is below this become ignore (255) (default: 0)",
              {"type": float}),
    Shorthand(("--tau",), "tau", "mask optimisation area threshold (0: off) (default: 20)", {"type": int}),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="text prompts -> (image, mask) pairs from a trained model",
                       description="Sample pairs with DPM-Solver++ and classifier-free guidance; masks are decoded "
                                   "by the annotation VAE and cleaned by mask optimisation. Each option stands for "
                                   "the KEY=VALUE override it names; KEY=VALUE overrides given too come after.")
    p.add_argument("model", help="an exported model folder (<run>/export)")
    add_config_args(p, "sample")
    add_shorthands(p, SHORTHANDS)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_sample)


def _sample(args) -> int:
    cfg = config_from_args(args, SampleConfig, "sample")
    if cfg.num is not None and len(set(cfg.jobs())) > 1:
        # --num once meant the pairs of each prompt here; it cannot be told apart from today's meaning, so say it
        log.warning("num=%d is the number of pairs in all, the prompts taken in turn (as in generate and "
                    "eval-joint); for %d pairs of each prompt use --per-prompt %d", cfg.num, cfg.num, cfg.num)
    summary = sample_to_folder(args.model, cfg.jobs(), cfg.out, seed=cfg.seed, steps=cfg.steps,
                               guidance=cfg.guidance, batch_size=cfg.batch_size, min_confidence=cfg.min_confidence,
                               tau=cfg.tau, device=args.device, overwrite=args.overwrite)
    print(f"{summary['pairs']} pairs written to {cfg.out} ({summary['pairs_per_second']:.2f} pairs/s)")
    return 0
