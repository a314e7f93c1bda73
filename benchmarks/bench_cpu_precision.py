"""The demo's joint UNet on a CPU: training and sampling throughput in fp32, bf16 autocast and channels_last.

    python benchmarks/bench_cpu_precision.py [--batch 64] [--steps 6] [--threads 2] [--out result.json]

One training step is what ``training/joint.py`` does per batch (``joint_loss`` forward, backward, gradient
clipping, the library's AdamW) on random latents of the demo's shapes (48 image + 4 mask channels on a
16 x 16 grid, 24 caption tokens of 128); one sampling step is a guided forward of a batch (both branches
of classifier-free guidance in one call, as ``diffusion/sampling.py``). ``mixed_precision: auto`` picks
bf16 where ``utils/precision.py`` finds bf16 instructions (AVX512-BF16 or AMX); the benchmark reports
what this CPU has, so a figure is read with it. Warm-up steps are excluded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch

from jodiffusion.diffusion.objective import JointObjectiveConfig, joint_loss
from jodiffusion.diffusion.schedule import NoiseScheduleConfig, training_scheduler
from jodiffusion.engine.config import TrainConfig
from jodiffusion.engine.runtime import make_optimizer
from jodiffusion.models.denoisers import build_denoiser
from jodiffusion.utils.precision import cpu_flags, cpu_supports_bf16

SHAPES = dict(img_channels=48, mask_channels=4, latent_height=16, latent_width=16, text_dim=128, num_text_tokens=24)


def _model(channels_last: bool):
    torch.manual_seed(0)
    net = build_denoiser("unet", "small", {}, **SHAPES)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def _inputs(batch: int):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, 48, 16, 16, generator=g), torch.randn(batch, 4, 16, 16, generator=g),
            torch.randn(batch, 24, 128, generator=g), torch.randn(1, 24, 128, generator=g))


def time_training(batch: int, steps: int, bf16: bool, channels_last: bool) -> float:
    net = _model(channels_last).train()
    opt = make_optimizer(net.parameters(), TrainConfig(lr=1e-3))
    scheduler = training_scheduler(NoiseScheduleConfig(prediction_type="sample"))
    img, mask, text, null = _inputs(batch)
    if channels_last:
        img, mask = (x.contiguous(memory_format=torch.channels_last) for x in (img, mask))
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        with amp:
            loss, _ = joint_loss(net, scheduler, img, mask, text, null, JointObjectiveConfig())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


@torch.no_grad()
def time_sampling(batch: int, steps: int, bf16: bool) -> float:
    net = _model(False).eval()
    img, mask, text, null = _inputs(batch)
    t = torch.full((2 * batch,), 500)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        with amp:
            net(torch.cat([img, img]), torch.cat([mask, mask]), t, t, torch.cat([text, null.expand_as(text)]))

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)  # pairs x solver steps per second


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = cpu_flags()
    result = {"benchmark": "cpu_precision", "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "batch": args.batch, "steps": args.steps,
              "bf16_instructions": sorted(flags & {"avx512_bf16", "amx_bf16"}), "auto_picks_bf16": cpu_supports_bf16(),
              "train_samples_per_s": {}, "sampling_pair_steps_per_s": {}}
    for name, bf16, cl in (("fp32", False, False), ("bf16", True, False), ("fp32_channels_last", False, True)):
        result["train_samples_per_s"][name] = round(time_training(args.batch, args.steps, bf16, cl), 1)
        print(f"train {name}: {result['train_samples_per_s'][name]} samples/s", flush=True)
    for name, bf16 in (("fp32", False), ("bf16", True)):
        result["sampling_pair_steps_per_s"][name] = round(time_sampling(args.batch, args.steps, bf16), 1)
        print(f"sample {name}: {result['sampling_pair_steps_per_s'][name]} pair-steps/s", flush=True)
    print(f"bf16 instructions: {result['bf16_instructions'] or 'none'}; mixed_precision auto picks "
          f"{'bf16' if result['auto_picks_bf16'] else 'fp32'}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
