"""Training throughput of the joint U-ViT: samples/s of the full optimisation step, no data loading.

    python benchmarks/bench_training.py --preset unidiffuser-v1 --device cuda --batch 8 \
        [--grad-checkpointing] [--compile] [--out results.json] [--markdown snippet.md]
    python benchmarks/bench_training.py --preset small --device cpu --batch 16 --text-tokens 24 --threads 1

One step is what ``jodiffusion.training.joint`` does per batch, on random tensors of the right shapes:
``joint_loss`` (timesteps, noise, caption dropout, the network's forward, per-modality MSE) under bf16
autocast on a GPU (full precision on a CPU, as ``mixed_precision: auto`` trains), backward, gradient
clipping at ``TrainConfig().grad_clip``, and the library's optimizer (``make_optimizer``: AdamW, fused
on CUDA), then ``zero_grad``. Latents and text embeddings are random and already on the device (the
training loop reads precomputed latents; the frozen encoders are not timed). Warm-up steps are
excluded; the device is synchronised before and after the timed steps.

FLOP/s counts model FLOPs: 3 x the forward FLOPs per sample (forward + backward), also with gradient
checkpointing (which recomputes the forward: hardware FLOPs are then about 4 x). The peak is a large
bf16 matmul loop measured in the same run (fp32 on a CPU); see bench_denoiser.py for both.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_denoiser import (  # noqa: E402  (a sibling script, not a package)
    add_run_args,
    build_model,
    command_line,
    compile_blocks,
    device_info,
    flops_and_peak,
    fmt_flops,
    max_memory_gib,
    reset_memory,
    save_json,
    save_markdown,
    synchronize,
)

from jodiffusion.diffusion.objective import JointObjectiveConfig, joint_loss  # noqa: E402
from jodiffusion.diffusion.schedule import NoiseScheduleConfig, training_scheduler  # noqa: E402
from jodiffusion.engine.config import TrainConfig  # noqa: E402
from jodiffusion.engine.runtime import make_optimizer  # noqa: E402

#: The issue's target for unidiffuser-v1 at 512 px, batch >= 8, one H100; the authors' network does 24.
TARGET_SAMPLES_PER_S = 32.0
AUTHORS_SAMPLES_PER_S = 24.0


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    amp = gpu and not args.fp32
    result = {"benchmark": "training", "preset": args.preset, "command": args.command, **device_info(device)}
    model = build_model(args, device)
    cfg = model.config
    result.update({"config": asdict(cfg), "parameters": model.num_parameters(), "tokens": cfg.layout.length,
                   "batch": args.batch, "precision": "bf16 autocast" if amp else "fp32",
                   "gradient_checkpointing": cfg.gradient_checkpointing, "compile": args.compile})
    print(f"{args.preset}: {model.num_parameters() / 1e6:.1f}M parameters, {cfg.layout.length} tokens, batch "
          f"{args.batch}, {result['device_name']}", flush=True)
    flops, peak = flops_and_peak(model, args, device, gpu, result)
    print(f"forward: {fmt_flops(flops)} per sample; measured {result['peak']['dtype']} matmul peak "
          f"{peak:.4g} TFLOP/s", flush=True)

    model.train()
    if args.compile:
        model = compile_blocks(model, args.compile_scope, args.compile_mode)
    train_cfg = TrainConfig(batch_size=args.batch)
    optimizer = make_optimizer(model.parameters(), train_cfg)
    result["optimizer"] = {"class": type(optimizer).__name__, "fused": bool(optimizer.defaults.get("fused")),
                           "grad_clip": train_cfg.grad_clip}
    scheduler = training_scheduler(NoiseScheduleConfig())
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    objective = JointObjectiveConfig()
    gen = torch.Generator(device).manual_seed(args.seed)
    b = args.batch
    img = torch.randn(b, cfg.img_channels, cfg.latent_height, cfg.latent_width, device=device, generator=gen)
    mask = torch.randn(b, cfg.mask_channels, cfg.latent_height, cfg.latent_width, device=device, generator=gen)
    text = torch.randn(b, cfg.num_text_tokens, cfg.text_dim, device=device, generator=gen)
    null_text = torch.randn(1, cfg.num_text_tokens, cfg.text_dim, device=device, generator=gen)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = joint_loss(model, scheduler, img, mask, text, null_text, objective, gen)
        loss.backward()
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    reset_memory(device)
    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    synchronize(device)
    result["warmup_seconds"] = round(time.perf_counter() - start, 2)
    losses = []
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        losses.append(step())
    synchronize(device)
    seconds = time.perf_counter() - start
    per_step = seconds / args.steps
    tflops = 3 * flops * b / per_step / 1e12
    result.update({
        "warmup_steps": args.warmup, "steps_timed": args.steps, "seconds": seconds, "seconds_per_step": per_step,
        "steps_per_s": 1.0 / per_step, "samples_per_s": b / per_step, "tflops": tflops,
        "share_of_peak": tflops / peak, "max_memory_gib": max_memory_gib(device),
        "loss_finite": bool(torch.isfinite(torch.stack(losses)).all()),
    })
    if args.preset == "unidiffuser-v1" and gpu:
        result["target_samples_per_s"] = TARGET_SAMPLES_PER_S
        result["authors_samples_per_s"] = AUTHORS_SAMPLES_PER_S
        result["meets_target"] = result["samples_per_s"] >= TARGET_SAMPLES_PER_S and b >= 8
    with contextlib.suppress(OSError, AttributeError):
        result["load_average_end"] = round(os.getloadavg()[0], 2)
    return result


def table(result: dict) -> str:
    r = result
    extras = ", ".join(x for x in ("grad checkpointing" if r["gradient_checkpointing"] else "",
                                   "compiled" if r["compile"] else "") if x) or "-"
    return "\n".join([
        "| preset | batch | precision | options | steps/s | samples/s | TFLOP/s (model) | % of peak | max memory GiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {r['preset']} | {r['batch']} | {r['precision']} | {extras} | {r['steps_per_s']:.4g} | "
        f"{r['samples_per_s']:.4g} | {r['tflops']:.4g} | {100 * r['share_of_peak']:.1f} | "
        f"{r['max_memory_gib'] if r['max_memory_gib'] is not None else '-'} |"])


def markdown(result: dict) -> str:
    r = result
    if "error" in r:
        return "\n".join([f"### Training, `{r['preset']}`, batch {r['batch']}", "", "```", r["command"], "```", "",
                          f"FAILED: {r['error']}", ""])
    lines = [f"### Training, `{r['preset']}` ({r['parameters'] / 1e6:.1f}M parameters, {r['tokens']} tokens)", "",
             "```", r["command"], "```", "",
             f"- Device: {r['device_name']} ({r['device']}), torch {r['torch']}, {r['date_utc']}",
             f"- Forward FLOPs per sample: {fmt_flops(r['flops']['forward_per_sample'])}; measured "
             f"{r['peak']['dtype']} matmul peak {r['peak']['tflops']:.4g} TFLOP/s; {r['steps_timed']} timed steps "
             f"after {r['warmup_steps']} warm-up steps"]
    if "target_samples_per_s" in r:
        lines.append(f"- Target {r['target_samples_per_s']:g} samples/s (authors' network: "
                     f"{r['authors_samples_per_s']:g}): {'met' if r['meets_target'] else 'NOT met'}")
    return "\n".join([*lines, "", table(r), ""])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="unidiffuser-v1", help="U-ViT preset (tiny, small, base, unidiffuser-v1)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=0, help="timed optimisation steps (0: 10 on GPU, 4 on CPU)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps first (0: 3 on GPU, 1 on CPU)")
    ap.add_argument("--text-tokens", type=int, default=0, help="override the preset's num_text_tokens (0: keep)")
    ap.add_argument("--grad-checkpointing", action="store_true", help="recompute each block in the backward pass")
    ap.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    ap.add_argument("--compile-scope", choices=["blocks", "model"], default="blocks")
    ap.add_argument("--compile-mode", default=None)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast on a GPU")
    add_run_args(ap)
    args = ap.parse_args(argv)
    args.command = command_line(__file__, sys.argv[1:] if argv is None else argv)
    gpu = args.device.startswith("cuda")
    args.steps = args.steps or (10 if gpu else 4)
    args.warmup = args.warmup or (3 if gpu else 1)
    if args.batch < 1:
        ap.error("--batch must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        result = run(args)
    except torch.OutOfMemoryError as exc:  # record it: the GPU script goes on with its other runs
        result = {"benchmark": "training", "preset": args.preset, "command": args.command, "batch": args.batch,
                  "error": f"out of memory: {str(exc).splitlines()[0]}"}
        print(result["error"], file=sys.stderr)
    if "error" not in result:
        print()
        print(table(result))
        if not math.isfinite(result["samples_per_s"]) or not result["loss_finite"]:
            print("warning: non-finite loss", file=sys.stderr)
    save_json(result, args.out)
    save_markdown(markdown, result, args.markdown)
    return result


if __name__ == "__main__":
    sys.exit(1 if "error" in main() else 0)
