"""`jodiffusion sample`: prompts -> a folder of (image, mask) pairs with a picture of them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from jodiffusion.data.layout import IMAGES_DIR, MASKS_DIR, save_image_png, save_mask_png
from jodiffusion.errors import ConfigError
from jodiffusion.generation.config import SampleConfig
from jodiffusion.pipelines.batching import generate_batches
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline
from jodiffusion.report.viz import pairs_grid, save_png
from jodiffusion.utils.io import write_text_atomic
from jodiffusion.utils.output_folder import OutputRules, check, output_folder

COMMAND = "sample"
OUTPUT_ENTRIES = (IMAGES_DIR, MASKS_DIR, "prompts.jsonl", "grid.png")  # all that --overwrite may delete
RULES = OutputRules(COMMAND, OUTPUT_ENTRIES,
                    not_empty="{folder} is not empty; pass --overwrite to replace it or choose another --out")
GRID_ROWS = 16


def sample_to_folder(model_dir, prompts: list[str], out, num_per_prompt: int = 1, seed: int = 0,
                     steps: int | None = None, guidance: float | None = None, batch_size: int = 8,
                     min_confidence: float = 0.0, tau: int = 20, device: str | None = None,
                     overwrite: bool = False, progress: bool = True) -> dict:
    # the values are SampleConfig's to check: the command line and Python callers get one set of messages
    SampleConfig(out=str(out), prompts=list(prompts), per_prompt=num_per_prompt, seed=seed, steps=steps,
                 guidance=guidance, batch_size=batch_size, min_confidence=min_confidence, tau=tau)
    out = Path(out)
    check(out, RULES, overwrite)  # before the model loads; again under the lock
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = JoDiffusionPipeline.from_pretrained(model_dir, device=device)  # before anything is changed
    try:
        sampler = pipe.sampler.override(steps, guidance)
    except ValueError as exc:  # SamplerConfig's checks, on values SampleConfig let through
        raise ConfigError(str(exc).replace("sampler.steps", "steps").replace("sampler.guidance_scale",
                                                                             "guidance")) from None
    # one writer (a second run into this folder is refused, naming the first), checked again, cleared, marked
    with output_folder(out, RULES, overwrite=overwrite):
        return _write_samples(pipe, sampler, prompts, out, num_per_prompt, seed, batch_size, min_confidence, tau,
                              progress)


def _write_samples(pipe, sampler, prompts, out: Path, num_per_prompt, seed, batch_size, min_confidence, tau,
                   progress) -> dict:
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
