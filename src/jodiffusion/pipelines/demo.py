"""The demo on the embedded shapes dataset: every stage that exists, end to end, on a CPU.

Stages: make the dataset -> train the annotation VAE -> evaluate it -> mask optimisation on noisy
masks (VAE latents perturbed the way an imperfect diffusion sample is) -> report folder with
figures and ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jodiffusion.config.loader import load_config
from jodiffusion.data import layout
from jodiffusion.errors import JoDiffusionError
from jodiffusion.metrics import ConfusionMatrix
from jodiffusion.utils.io import write_json_atomic

log = logging.getLogger("jodiffusion")


@dataclass
class DemoSize:
    num_train: int
    num_val: int
    resolution: int
    vae_overrides: tuple[str, ...]
    noise: float = 1.0   # latent noise (in latent std units) that makes the "raw" masks noisy
    tau: int = 20


FULL = DemoSize(num_train=512, num_val=128, resolution=64, vae_overrides=())
QUICK = DemoSize(num_train=32, num_val=8, resolution=32, noise=1.0, tau=8,
                 vae_overrides=("train.steps=20", "train.save_every=0", "model.base_channels=8",
                                "model.max_channels=16", "model.blocks_per_stage=0", "scale_samples=16"))


class StageTimer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable, *args, **kwargs):
        log.info("== %s", name)
        start = time.time()
        result = fn(*args, **kwargs)
        self.seconds[name] = round(time.time() - start, 2)
        return result


def run_demo(out: str | Path, overwrite: bool = False, quick: bool = False, progress: bool = True) -> dict:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise JoDiffusionError(f"{out} is not empty; pass --overwrite to replace it or choose another --out")
        import shutil

        shutil.rmtree(out)
    size = QUICK if quick else FULL
    timer = StageTimer()
    report_dir = out / "report"

    from jodiffusion.data.shapes import write_shapes_dataset

    data_dir = timer.run("make-data", write_shapes_dataset, out / "data", num_train=size.num_train,
                         num_val=size.num_val, resolution=size.resolution, seed=0, progress=progress)

    from jodiffusion.training.vae import VAERunConfig, train_vae

    vae_cfg = load_config(VAERunConfig, group="vae", preset="shapes", overrides=[
        "data.name=folder", f"data.root={data_dir}", f"output_dir={out / 'vae'}", *size.vae_overrides])
    model_dir = timer.run("train-vae", train_vae, vae_cfg, progress=progress)

    refine_metrics = timer.run("refine", _refine_stage, model_dir, data_dir, out, report_dir, size, progress)

    import json

    vae_eval = json.loads((out / "vae" / "eval.json").read_text())
    metrics = {
        "vae_reconstruction_miou": vae_eval["miou"],
        "vae_parameters": vae_eval["parameters"],
        **refine_metrics,
        "stage_seconds": timer.seconds,
        "total_seconds": round(sum(timer.seconds.values()), 2),
    }
    write_json_atomic(report_dir / "metrics.json", metrics)
    _print_summary(metrics, out)
    return metrics


def _refine_stage(model_dir: Path, data_dir: Path, out: Path, report_dir: Path, size: DemoSize,
                  progress: bool) -> dict:
    """Make noisy masks by perturbing VAE latents, refine them, and measure both against the truth."""
    from jodiffusion.data.config import DataConfig
    from jodiffusion.data.registry import build_dataset
    from jodiffusion.generation.refine import refine_folder
    from jodiffusion.models.annotation_vae import AnnotationVAE
    from jodiffusion.viz import colorize, grid, save_png

    vae = AnnotationVAE.from_pretrained(model_dir).eval()
    val = build_dataset(DataConfig(name="folder", root=str(data_dir)), "val")
    classes = val.classes
    noisy_dir, refined_dir = out / "masks_raw", out / "masks_refined"
    gen = torch.Generator().manual_seed(0)
    truths = []
    for i in range(len(val)):
        truth = val.load_mask(i)
        truths.append(truth)
        with torch.no_grad():
            z = vae.encode(torch.from_numpy(truth).long()[None])
            z = z + size.noise * z.std() * torch.randn(z.shape, generator=gen)
            noisy = vae.decode_to_mask(z)[0].numpy().astype(np.uint8)
        layout.save_mask_png(noisy, noisy_dir / f"{val.stem(i)}.png", classes)
    summary = refine_folder(noisy_dir, refined_dir, tau=size.tau, workers=1 if len(val) < 64 else None,
                            ignore_index=classes.ignore_index, progress=progress)

    from jodiffusion.data.base import read_mask

    raw_cm, refined_cm = ConfusionMatrix(classes.num_classes), ConfusionMatrix(classes.num_classes)
    rows = []
    for i, truth in enumerate(truths):
        noisy = read_mask(noisy_dir / f"{val.stem(i)}.png")
        refined = read_mask(refined_dir / f"{val.stem(i)}.png")
        raw_cm.update(noisy, truth)
        refined_cm.update(refined, truth)
        if i < 6:
            rows.append([val.load_image(i), colorize(truth, classes), colorize(noisy, classes),
                         colorize(refined, classes)])
    save_png(grid(rows, ["image", "truth", "raw (noisy)", "refined"], scale=3),
             report_dir / "mask_refinement.png")
    return {"raw_mask_miou": raw_cm.miou(), "refined_mask_miou": refined_cm.miou(),
            "refine_tau": size.tau, "refine_summary": summary}


def _print_summary(metrics: dict, out: Path) -> None:
    lines = [
        "",
        "jodiffusion demo: summary",
        f"  annotation VAE reconstruction mIoU   {metrics['vae_reconstruction_miou']:6.2f}"
        f"  ({metrics['vae_parameters'] / 1e6:.2f}M parameters)",
        f"  noisy masks mIoU before refinement   {metrics['raw_mask_miou']:6.2f}",
        f"  after mask optimisation (tau={metrics['refine_tau']})     {metrics['refined_mask_miou']:6.2f}",
        "  stage wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in metrics["stage_seconds"].items()),
        f"  report: {out / 'report'} (metrics.json, mask_refinement.png)",
    ]
    print("\n".join(lines))
