"""`sample`: text -> (image, mask) pairs from a trained joint model (`train` is in train_commands.py)."""

from __future__ import annotations

import argparse

from jodiffusion.data.captions import check_caption_length
from jodiffusion.generation.sample import sample_to_folder
from jodiffusion.utils.safe_load import read_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="text prompts -> (image, mask) pairs from a trained model",
                       description="Sample pairs with DPM-Solver++ and classifier-free guidance; masks are decoded "
                                   "by the annotation VAE and cleaned by mask optimisation.")
    p.add_argument("model", help="an exported model folder (<run>/export)")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts-file", help="a text file with one prompt per line")
    p.add_argument("--num", type=int, default=1, help="pairs per prompt (default 1)")
    p.add_argument("--out", required=True, help="output folder (images/, masks/, prompts.jsonl, grid.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="solver steps (default: the model's, usually 25)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="mask pixels whose top class probability is below this become ignore (255)")
    p.add_argument("--tau", type=int, default=20, help="mask optimisation area threshold (0: off)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_sample)


def _sample(args) -> int:
    prompts = list(args.prompt)
    if args.prompts_file:
        text = read_text(args.prompts_file, "prompts file", "give a UTF-8 text file with one prompt per line")
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                check_caption_length(line.strip(), f"{args.prompts_file}, line {lineno}", "prompt")
                prompts.append(line.strip())
    summary = sample_to_folder(args.model, prompts, args.out, num_per_prompt=args.num, seed=args.seed,
                               steps=args.steps, guidance=args.guidance, batch_size=args.batch_size,
                               min_confidence=args.min_confidence, tau=args.tau, device=args.device,
                               overwrite=args.overwrite)
    print(f"{summary['pairs']} pairs written to {args.out} ({summary['pairs_per_second']:.2f} pairs/s)")
    return 0
