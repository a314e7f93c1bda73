"""`jodiffusion sample`: prompts -> a folder of (image, mask) pairs with a picture of them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from jodiffusion.data.captions import check_caption_length
from jodiffusion.data.layout import IMAGES_DIR, MASKS_DIR, save_image_png, save_mask_png
from jodiffusion.errors import JoDiffusionError
from jodiffusion.pipelines.batching import generate_batches
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline
from jodiffusion.report.viz import pairs_grid, save_png
from jodiffusion.utils.io import write_text_atomic
from jodiffusion.utils.lock import folder_lock
from jodiffusion.utils.ownership import check_replaceable, clear_folder, has_content, write_owner
from jodiffusion.utils.safe_load import check_seed

COMMAND = "sample"
OUTPUT_ENTRIES = (IMAGES_DIR, MASKS_DIR, "prompts.jsonl", "grid.png")  # all that --overwrite may delete
GRID_ROWS = 16


def sample_to_folder(model_dir, prompts: list[str], out, num_per_prompt: int = 1, seed: int = 0,
                     steps: int | None = None, guidance: float | None = None, batch_size: int = 8,
                     min_confidence: float = 0.0, tau: int = 20, device: str | None = None,
                     overwrite: bool = False, progress: bool = True) -> dict:
    if not prompts:
        raise JoDiffusionError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    for i, prompt in enumerate(prompts, start=1):
        check_caption_length(prompt, f"prompt {i}", "prompt")
    if num_per_prompt < 1 or batch_size < 1:
        raise JoDiffusionError("--num and --batch-size must be >= 1")
    check_seed(seed, "--seed", error=JoDiffusionError)
    if not 0.0 <= min_confidence < 1.0 or tau < 0:
        raise JoDiffusionError(f"--min-confidence {min_confidence} must be in [0, 1) and --tau {tau} >= 0")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise JoDiffusionError(f"{out} exists and is not a folder; choose another --out")
    _check_out(out, overwrite)  # before the model loads; again under the lock
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = JoDiffusionPipeline.from_pretrained(model_dir, device=device)  # before anything is changed
    try:
        sampler = pipe.sampler.override(steps, guidance)
    except ValueError as exc:  # SamplerConfig's checks: --steps 0, a negative or nan --guidance
        raise JoDiffusionError(str(exc).replace("sampler.steps", "--steps").replace("sampler.guidance_scale",
                                                                                    "--guidance")) from None
    with folder_lock(out, COMMAND):  # one writer: a second run into this folder is refused, naming the first
        return _write_samples(pipe, sampler, prompts, out, num_per_prompt, seed, batch_size, min_confidence, tau,
                              overwrite, progress)


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding anything finished unless ``overwrite`` may replace it (only a folder this
    command wrote, nothing else in it). A folder holding only temporary files (a kill during the first
    write) counts as empty."""
    if has_content(out):
        if not overwrite:
            raise JoDiffusionError(f"{out} is not empty; pass --overwrite to replace it or choose another --out")
        check_replaceable(out, COMMAND, OUTPUT_ENTRIES)


def _write_samples(pipe, sampler, prompts, out: Path, num_per_prompt, seed, batch_size, min_confidence, tau,
                   overwrite, progress) -> dict:
    _check_out(out, overwrite)  # another run may have written there since the first check
    clear_folder(out)  # all but the lock (and temporary files of a killed first write)
    write_owner(out, COMMAND)
    jobs = [p for p in prompts for _ in range(num_per_prompt)]
    records, shown = [], []

    def write(first: int, batch: list[str], pairs) -> None:
        for i, (prompt, (image, mask, stats)) in enumerate(zip(batch, pairs.pairs(), strict=True)):
            index = first + i
            stem = f"{index:06d}"
            save_image_png(image, out / IMAGES_DIR / f"{stem}.png")
            save_mask_png(mask, out / MASKS_DIR / f"{stem}.png", pipe.classes)
            records.append({"index": index, "stem": stem, "prompt": prompt, "seed": seed,
                            "refine": stats.to_dict() if stats else None})
            if len(shown) < GRID_ROWS:
                shown.append((image, mask))

    start = time.perf_counter()
    generate_batches(pipe, jobs, batch_size, seed=seed, sampler=sampler, min_confidence=min_confidence,
                     refine_tau=tau, precision="auto", progress=progress, desc="sample", on_batch=write)
    seconds = time.perf_counter() - start
    write_text_atomic(out / "prompts.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    save_png(pairs_grid([i for i, _ in shown], [m for _, m in shown], pipe.classes,
                        [r["prompt"][:40] for r in records[:GRID_ROWS]]), out / "grid.png")
    return {"pairs": len(records), "seconds": seconds, "pairs_per_second": len(records) / max(seconds, 1e-9)}
