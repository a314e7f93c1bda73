"""`jodiffusion sample`: prompts -> a folder of (image, mask) pairs with a picture of them."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from jodiffusion.data.layout import IMAGES_DIR, MASKS_DIR, save_image_png, save_mask_png
from jodiffusion.errors import JoDiffusionError
from jodiffusion.utils.io import write_text_atomic
from jodiffusion.utils.ownership import check_replaceable, write_owner
from jodiffusion.utils.precision import autocast_dtype
from jodiffusion.utils.progress import progress_bar
from jodiffusion.utils.safe_load import check_seed

COMMAND = "sample"
OUTPUT_ENTRIES = (IMAGES_DIR, MASKS_DIR, "prompts.jsonl", "grid.png")  # all that --overwrite may delete


def sample_to_folder(model_dir, prompts: list[str], out, num_per_prompt: int = 1, seed: int = 0,
                     steps: int | None = None, guidance: float | None = None, batch_size: int = 8,
                     min_confidence: float = 0.0, tau: int = 20, device: str | None = None,
                     overwrite: bool = False, progress: bool = True) -> dict:
    from jodiffusion.generation.pipeline import JoDiffusionPipeline
    from jodiffusion.report.viz import colorize, grid, overlay, save_png

    if not prompts:
        raise JoDiffusionError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    if num_per_prompt < 1 or batch_size < 1:
        raise JoDiffusionError("--num and --batch-size must be >= 1")
    check_seed(seed, "--seed", error=JoDiffusionError)
    if not 0.0 <= min_confidence < 1.0 or tau < 0:
        raise JoDiffusionError(f"--min-confidence {min_confidence} must be in [0, 1) and --tau {tau} >= 0")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise JoDiffusionError(f"{out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise JoDiffusionError(f"{out} is not empty; pass --overwrite to replace it or choose another --out")
        check_replaceable(out, COMMAND, OUTPUT_ENTRIES)  # only a folder this command wrote, nothing else in it
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = JoDiffusionPipeline.from_pretrained(model_dir, device=device)  # before anything is changed
    try:
        sampler = pipe.sampler.override(steps, guidance)
    except ValueError as exc:  # SamplerConfig's checks: --steps 0, a negative or nan --guidance
        raise JoDiffusionError(str(exc).replace("sampler.steps", "--steps").replace("sampler.guidance_scale",
                                                                                    "--guidance")) from None
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_owner(out, COMMAND)
    autocast = autocast_dtype("auto", device)
    jobs = [p for p in prompts for _ in range(num_per_prompt)]
    records, rows = [], []
    start = time.perf_counter()
    with progress_bar(total=len(jobs), desc="sample", unit="pair", disable=not progress) as bar:
        for first in range(0, len(jobs), batch_size):
            batch = jobs[first: first + batch_size]
            pairs = pipe.generate(batch, seed=seed, start_index=first, sampler=sampler, min_confidence=min_confidence,
                                  refine_tau=tau, autocast_dtype=autocast)
            for i, (prompt, (image, mask, stats)) in enumerate(zip(batch, pairs, strict=True)):
                index = first + i
                stem = f"{index:06d}"
                save_image_png(image, out / IMAGES_DIR / f"{stem}.png")
                save_mask_png(mask, out / MASKS_DIR / f"{stem}.png", pipe.classes)
                records.append({"index": index, "stem": stem, "prompt": prompt, "seed": seed,
                                "refine": stats.to_dict() if stats else None})
                if len(rows) < 16:
                    rows.append([image, colorize(mask, pipe.classes), overlay(image, mask, pipe.classes)])
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    write_text_atomic(out / "prompts.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    save_png(grid(rows, ["image", "mask", "overlay"], row_titles=[r["prompt"][:40] for r in records[:16]]),
             out / "grid.png")
    return {"pairs": len(records), "seconds": seconds, "pairs_per_second": len(records) / max(seconds, 1e-9)}
