"""Sampling speed of the joint U-ViT: the authors' sampling pattern against ours, same network, same run.

    python benchmarks/bench_denoiser.py --preset unidiffuser-v1 --device cuda [--steps 50] [--batch 8] \
        [--compile] [--out results.json] [--markdown snippet.md]
    python benchmarks/bench_denoiser.py --preset small --device cpu --text-tokens 24 --threads 1  # CPU demo

One process builds one randomly initialised ``JointUViT`` and times, on the same weights:

  authors         the authors' sampling pattern re-created with our network: a copy of the weights in
                  fp16 under fp16 autocast (GPU; fp32 on CPU), batch 1, and per step TWO network calls,
                  conditional then unconditional (pure-noise text at t_text=1000 when the network has
                  UniDiffuser's tokens), guidance 8.0, DPM-Solver++ multistep order 3 from diffusers,
                  ``--steps`` steps. The loop is ``authors_pattern_sample`` below (written here, not
                  the library's sampler, because the library never makes two calls per step).
  ours_equal      ``jodiffusion.diffusion.sampling.sample_latents`` (guided_eps: conditional and
                  unconditional in ONE batched forward of 2B), batch ``--batch``, bf16 autocast over the
                  fp32 weights (what a ``JoDiffusionPipeline`` call does on a GPU), ``--steps`` steps.
  ours_default    the same at the library's default sampler settings (``SamplerConfig()``: its steps,
                  guidance and solver order), or ``--default-steps``.
  ours_default_compiled   (``--compile``) the same after ``torch.compile`` of the transformer blocks.

Denoiser only: no text encoder, no VAE decode. A "pair" is one (image, mask) sample, whose cost is
2 x steps network forwards at batch 1 in every mode. Warm-up runs (a few solver steps at the timed
batch size; compilation for the compiled mode) are excluded; the device is synchronised around every
timed run.

FLOP/s: the forward FLOPs per sample are counted analytically from the config (2 x multiply-adds of
every matmul and convolution, attention's two L x L products included; normalisations and
element-wise work not counted) and cross-checked against ``torch.utils.flop_counter.FlopCounterMode``
on one forward. The peak is measured in the same process: a loop of large bf16 matmuls on the GPU
(8192^3), fp32 on a CPU. Achieved TFLOP/s = 2 x steps x forward FLOPs / seconds per pair.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch

from jodiffusion.diffusion.sampling import SamplerConfig, sample_latents, sample_seed
from jodiffusion.diffusion.schedule import NoiseScheduleConfig, sampling_scheduler
from jodiffusion.models.uvit import JointUViT, UViTConfig, uvit_config

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: The authors' sampler (reference-official.md, "Sampling"): DPM-Solver++ order 3, guidance 8.
AUTHORS_SOLVER_ORDER = 3
AUTHORS_GUIDANCE = 8.0
#: The issue's targets: pairs/s relative to the authors' pattern.
TARGET_EQUAL_STEPS = 2.0
TARGET_DEFAULT = 5.0


# -- shared with bench_training.py ---------------------------------------------------------------
def forward_flops(cfg: UViTConfig) -> int:
    """FLOPs (2 x multiply-adds) of one forward at batch 1: matmuls and convolutions only."""
    seq, d = cfg.layout.length, cfg.width
    hidden = int(d * cfg.mlp_ratio)
    p, n = cfg.patch_size, cfg.grid[0] * cfg.grid[1]
    channels = cfg.img_channels + cfg.mask_channels
    block = 2 * seq * d * 3 * d + 2 * seq * d * d     # qkv and output projections
    block += 2 * 2 * seq * seq * d                    # q k^T and attn v over all heads
    block += 2 * 2 * seq * d * hidden                 # MLP
    skip = 2 * seq * 2 * d * d                         # long-skip merge of each out-block
    embed = 2 * n * channels * p * p * d              # patch embeddings of both latents
    if cfg.text_bottleneck:
        embed += 2 * cfg.num_text_tokens * (cfg.text_dim * cfg.text_bottleneck + cfg.text_bottleneck * d)
    else:
        embed += 2 * cfg.num_text_tokens * cfg.text_dim * d
    if cfg.unidiffuser_tokens:
        embed += 2 * cfg.clip_img_dim * d
    if cfg.pooled_text:
        embed += 2 * cfg.text_dim * d                  # the pooled caption's projection
    heads = 2 * n * d * p * p * channels
    if cfg.final_conv:
        heads += 2 * cfg.latent_height * cfg.latent_width * 9 * (cfg.img_channels ** 2 + cfg.mask_channels ** 2)
    return cfg.depth * block + (cfg.depth // 2) * skip + embed + heads


def random_inputs(cfg: UViTConfig, batch: int, device, generator: torch.Generator | None = None) -> dict:
    """Random latents, timesteps and text of the network's shapes."""
    def randn(*shape):
        return torch.randn(*shape, device=device, generator=generator)

    return {"img": randn(batch, cfg.img_channels, cfg.latent_height, cfg.latent_width),
            "mask": randn(batch, cfg.mask_channels, cfg.latent_height, cfg.latent_width),
            "t_img": torch.randint(0, 1000, (batch,), device=device, generator=generator),
            "t_mask": torch.randint(0, 1000, (batch,), device=device, generator=generator),
            "text": randn(batch, cfg.num_text_tokens, cfg.text_dim)}


def counted_forward_flops(model: JointUViT) -> int:
    """FLOPs of one batch-1 forward as FlopCounterMode counts them. Attention runs the math backend
    here, whose matmuls the counter sees on every device (the CPU's fused kernel is not registered)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    inputs = random_inputs(model.config, 1, device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(**inputs)
    return int(counter.get_total_flops())


def flops_report(model: JointUViT) -> dict:
    analytic = forward_flops(model.config)
    counted = counted_forward_flops(model)
    return {"forward_per_sample": analytic, "forward_per_sample_counted": counted,
            "counted_vs_analytic": counted / analytic - 1.0}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak(device: torch.device, size: int, iters: int, rounds: int = 3) -> dict:
    """Best FLOP/s of ``rounds`` loops of ``iters`` square matmuls: bf16 on a GPU, fp32 on a CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(max(2, iters // 5)):  # warm-up: clocks, cuBLAS heuristics
        torch.mm(a, b, out=out)
    best = 0.0
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(iters):
            torch.mm(a, b, out=out)
        synchronize(device)
        best = max(best, 2 * size ** 3 * iters / (time.perf_counter() - start))
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "iters": iters, "tflops": best / 1e12}


def flops_and_peak(model, args, device, gpu: bool, result: dict) -> tuple[float, float]:
    """Count the model's forward FLOPs and measure the device's matmul peak into ``result``; returns
    (forward FLOPs per sample, peak TFLOP/s)."""
    result["flops"] = flops_report(model)
    result["peak"] = measure_peak(device, args.peak_size or (8192 if gpu else 1024),
                                  args.peak_iters or (100 if gpu else 8))
    return result["flops"]["forward_per_sample"], result["peak"]["tflops"]


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """The options every model benchmark shares: the peak measurement, threads, seed and outputs."""
    ap.add_argument("--peak-size", type=int, default=0,
                    help="matmul size of the peak measurement (0: 8192 on GPU, 1024 on CPU)")
    ap.add_argument("--peak-iters", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the results here as JSON")
    ap.add_argument("--markdown", help="write a markdown snippet (command, device, table) here")


def command_line(script: str, argv: list[str]) -> str:
    """How to re-run: the script's path relative to the working directory and its arguments."""
    with contextlib.suppress(ValueError):
        script = os.path.relpath(script)
    return " ".join(["python", script, *argv])


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        info["device_name"] = name
        info["cpu_threads"] = torch.get_num_threads()
        info["cpu_count"] = os.cpu_count()
    with contextlib.suppress(OSError, AttributeError):
        info["load_average_start"] = round(os.getloadavg()[0], 2)
    return info


def build_model(args, device: torch.device) -> JointUViT:
    """The preset's network with random weights, built directly on ``device`` (fast init on a GPU)."""
    overrides = {"gradient_checkpointing": bool(getattr(args, "grad_checkpointing", False))}
    if args.text_tokens:
        overrides["num_text_tokens"] = args.text_tokens
    cfg = uvit_config(args.preset, **overrides)
    torch.manual_seed(args.seed)
    with device:
        return JointUViT(cfg)


def compile_blocks(model: JointUViT, scope: str, mode: str | None) -> JointUViT:
    """``blocks``: compile each transformer block in place (all in-blocks share one compiled graph, all
    out-blocks another, so compiling is quick); ``model``: the whole forward."""
    if scope == "model":
        return torch.compile(model, mode=mode)
    for blk in [*model.in_blocks, model.mid_block, *model.out_blocks]:
        blk.compile(mode=mode)
    return model


def sdpa_context(backend: str):
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                        "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[backend])


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def max_memory_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# -- the two sampling patterns ------------------------------------------------------------------
@torch.no_grad()
def authors_pattern_sample(model: JointUViT, steps: int, dtype: torch.dtype, seed: int,
                           guidance: float = AUTHORS_GUIDANCE) -> torch.Tensor:
    """One pair the authors' way: batch 1, conditional and unconditional as two calls per step.

    Their unconditional branch is the same network given pure-noise text at t_text = 1000 (no caption
    dropout); with UniDiffuser's tokens we pass exactly that, without them just noise as the text. The
    CLIP-image token gets a fixed random vector. Timesteps stay on the device (no host sync)."""
    cfg = model.config
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    img_shape = (1, cfg.img_channels, cfg.latent_height, cfg.latent_width)
    mask_shape = (1, cfg.mask_channels, cfg.latent_height, cfg.latent_width)
    n_img = math.prod(img_shape)
    text = torch.randn(1, cfg.num_text_tokens, cfg.text_dim, device=device, generator=gen, dtype=dtype)
    cond, uncond = {}, {}
    if cfg.unidiffuser_tokens:
        clip_img = torch.randn(1, cfg.clip_img_dim, device=device, generator=gen, dtype=dtype)
        cond = {"t_text": torch.zeros(1, device=device, dtype=torch.long), "clip_img": clip_img}
        uncond = {"t_text": torch.full((1,), 1000, device=device, dtype=torch.long), "clip_img": clip_img}
    scheduler = sampling_scheduler(NoiseScheduleConfig(), AUTHORS_SOLVER_ORDER)
    scheduler.set_timesteps(steps, device=device)
    x = torch.randn(1, n_img + math.prod(mask_shape), device=device, generator=gen) * scheduler.init_noise_sigma
    with autocast(device, dtype):
        for t in scheduler.timesteps:
            tt = t.reshape(1)
            img, mask = x[:, :n_img].view(img_shape).to(dtype), x[:, n_img:].view(mask_shape).to(dtype)
            c_img, c_mask = model(img, mask, tt, tt, text, **cond)
            noise_text = torch.randn(text.shape, device=device, generator=gen, dtype=dtype)
            u_img, u_mask = model(img, mask, tt, tt, noise_text, **uncond)
            eps = torch.cat([(u_img + guidance * (c_img - u_img)).float().flatten(1),
                             (u_mask + guidance * (c_mask - u_mask)).float().flatten(1)], 1)
            x = scheduler.step(eps, t, x).prev_sample
    return x


@torch.no_grad()
def ours_sample(model: JointUViT, batch: int, sampler: SamplerConfig, dtype: torch.dtype, seed: int,
                sdpa: str = "auto") -> dict:
    """A batch through the library's sampler (both guidance branches in one forward of 2B)."""
    cfg = model.config
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    text = torch.randn(batch, cfg.num_text_tokens, cfg.text_dim, device=device, generator=gen)
    null_text = torch.randn(1, cfg.num_text_tokens, cfg.text_dim, device=device, generator=gen)
    seeds = [sample_seed(seed, i) for i in range(batch)]
    img_shape = (cfg.img_channels, cfg.latent_height, cfg.latent_width)
    mask_shape = (cfg.mask_channels, cfg.latent_height, cfg.latent_width)
    with autocast(device, dtype), sdpa_context(sdpa):
        return sample_latents(model, text, null_text, img_shape, mask_shape, seeds, sampler, NoiseScheduleConfig())


def time_runs(fn, device: torch.device, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls, the device synchronised around each."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def mode_result(description: str, dtype: torch.dtype, batch: int, steps: int, calls_per_step: int,
                times: list[float], pairs_per_run: int, flops: int, peak_tflops: float, device) -> dict:
    per_pair = statistics.mean(times) / pairs_per_run
    tflops = 2 * steps * flops / per_pair / 1e12
    return {"description": description, "dtype": str(dtype).removeprefix("torch."), "batch": batch,
            "steps": steps, "network_calls_per_step": calls_per_step, "timed_runs": len(times),
            "pairs_timed": len(times) * pairs_per_run, "run_seconds": [round(t, 4) for t in times],
            "seconds_per_pair": per_pair, "seconds_per_pair_best": min(times) / pairs_per_run,
            "pairs_per_s": 1.0 / per_pair, "tflops": tflops, "share_of_peak": tflops / peak_tflops,
            "max_memory_gib": max_memory_gib(device)}


# -- the benchmark ------------------------------------------------------------------------------
def resolve_dtype(setting: str, device: torch.device, gpu_default: str) -> torch.dtype:
    if setting == "auto":
        setting = gpu_default if device.type == "cuda" else "fp32"
    return DTYPES[setting]


def run(args, result: dict) -> dict:
    """Fill ``result`` mode by mode (saved to ``args.out`` after each, so a run cut short keeps what it
    measured) and return it."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    authors_pairs = args.authors_pairs or (2 if gpu else 1)
    repeats = args.repeats or (2 if gpu else 1)
    authors_dtype = resolve_dtype(args.authors_dtype, device, "fp16")
    ours_dtype = resolve_dtype(args.ours_dtype, device, "bf16")
    default_sampler = SamplerConfig(**({"steps": args.default_steps} if args.default_steps else {}))
    equal_sampler = SamplerConfig(steps=args.steps, guidance_scale=default_sampler.guidance_scale,
                                  solver_order=default_sampler.solver_order)
    warm_sampler = SamplerConfig(steps=args.warmup_steps, guidance_scale=default_sampler.guidance_scale,
                                 solver_order=default_sampler.solver_order)

    result.update(device_info(device))
    model = build_model(args, device).eval()
    cfg = model.config
    result.update({"config": asdict(cfg), "parameters": model.num_parameters(), "tokens": cfg.layout.length})
    print(f"{args.preset}: {model.num_parameters() / 1e6:.1f}M parameters, {cfg.layout.length} tokens, "
          f"{result['device_name']}", flush=True)
    flops, peak = flops_and_peak(model, args, device, gpu, result)
    print(f"forward: {fmt_flops(flops)} per sample (FlopCounterMode: "
          f"{fmt_flops(result['flops']['forward_per_sample_counted'])}); measured {result['peak']['dtype']} "
          f"matmul peak {peak:.4g} TFLOP/s", flush=True)
    modes = result["modes"] = {}

    def done(name: str) -> None:
        print(_line(name, modes[name]), flush=True)
        summarize(result)
        save_json(result, args.out)

    # (a) the authors' pattern, on a copy of the same weights in their precision
    reset_memory(device)
    authors_model = model if authors_dtype == torch.float32 else copy.deepcopy(model).to(authors_dtype)
    authors_pattern_sample(authors_model, args.warmup_steps, authors_dtype, args.seed)
    times = time_runs(lambda: authors_pattern_sample(authors_model, args.steps, authors_dtype, args.seed), device,
                      authors_pairs)
    modes["authors"] = mode_result(
        f"authors' pattern: {str(authors_dtype).removeprefix('torch.')}, batch 1, conditional and unconditional "
        f"as two calls per step, guidance {AUTHORS_GUIDANCE:g}, DPM-Solver++ order {AUTHORS_SOLVER_ORDER}",
        authors_dtype, 1, args.steps, 2, times, 1, flops, peak, device)
    authors_model = None  # free the fp16 copy
    done("authors")

    # (b), (c): the library's sampler, batched guidance
    def ours(name: str, sampler: SamplerConfig, description: str) -> None:
        reset_memory(device)
        ours_sample(model, args.batch, warm_sampler, ours_dtype, args.seed, args.sdpa)
        times = time_runs(lambda: ours_sample(model, args.batch, sampler, ours_dtype, args.seed, args.sdpa), device,
                          repeats)
        modes[name] = mode_result(description, ours_dtype, args.batch, sampler.steps, 1, times, args.batch, flops,
                                  peak, device)
        modes[name].update(sdpa=args.sdpa, guidance_scale=sampler.guidance_scale, solver_order=sampler.solver_order)
        done(name)

    batched = f"batch {args.batch}, both guidance branches in one forward of {2 * args.batch}"
    dname = str(ours_dtype).removeprefix("torch.")
    ours("ours_equal", equal_sampler, f"ours at equal steps: {dname} autocast, {batched}")
    ours("ours_default", default_sampler, f"ours at default settings: {dname} autocast, {batched}, "
         f"{default_sampler.steps} steps")
    if args.compile:
        model = compile_blocks(model, args.compile_scope, args.compile_mode)
        start = time.perf_counter()
        ours_sample(model, args.batch, warm_sampler, ours_dtype, args.seed, args.sdpa)  # compiles
        synchronize(device)
        result["compile_seconds"] = round(time.perf_counter() - start, 1)
        ours("ours_default_compiled", default_sampler, f"ours at default settings, torch.compile "
             f"({args.compile_scope}, mode {args.compile_mode or 'default'}): {dname} autocast, {batched}, "
             f"{default_sampler.steps} steps")
    with contextlib.suppress(OSError, AttributeError):
        result["load_average_end"] = round(os.getloadavg()[0], 2)
    result["complete"] = True
    save_json(result, args.out)
    return result


def summarize(result: dict) -> None:
    """Speed-ups over the authors' pattern and the targets, from the modes measured so far."""
    modes = result["modes"]
    base, steps = modes["authors"]["pairs_per_s"], modes["authors"]["steps"]
    result["speedups"] = {name: m["pairs_per_s"] / base for name, m in modes.items() if name != "authors"}
    # Speed-up per solver step of the best mode, and the most steps that would still give the 5x target.
    per_step = max(m["pairs_per_s"] * m["steps"] / steps for m in modes.values()) / base
    result["per_step_speedup_best"] = per_step
    result["max_steps_for_default_target"] = math.floor(steps * per_step / TARGET_DEFAULT)
    result["targets"] = {"ours_equal_vs_authors": TARGET_EQUAL_STEPS, "ours_default_vs_authors": TARGET_DEFAULT,
                         "note": "the issue's targets, for unidiffuser-v1 at 512 px on one H100"}
    met = {}
    if "ours_equal" in result["speedups"]:
        met["ours_equal_vs_authors"] = result["speedups"]["ours_equal"] >= TARGET_EQUAL_STEPS
    default = [v for k, v in result["speedups"].items() if k.startswith("ours_default")]
    if default:
        met["ours_default_vs_authors"] = max(default) >= TARGET_DEFAULT
    result["meets_targets"] = met


def save_json(result: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")


def save_markdown(render, result: dict, path: str | None) -> None:
    """Write ``render(result)`` to ``path`` (rendered only when there is a path)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(render(result))


def fmt_flops(flops: float) -> str:
    return f"{flops / 1e12:.3f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.3f} GFLOP"


def _line(name: str, m: dict) -> str:
    return (f"{name:>22}: {m['seconds_per_pair']:.4g} s/pair, {m['pairs_per_s']:.4g} pairs/s, "
            f"{m['tflops']:.4g} TFLOP/s ({100 * m['share_of_peak']:.1f}% of peak)")


def table(result: dict) -> str:
    """The result as a markdown table."""
    rows = ["| mode | precision | batch | steps | calls/step | s/pair | pairs/s | speedup | TFLOP/s | % of peak |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in result["modes"].items():
        speedup = result.get("speedups", {}).get(name, 1.0)
        rows.append(f"| {name} | {m['dtype']} | {m['batch']} | {m['steps']} | {m['network_calls_per_step']} | "
                    f"{m['seconds_per_pair']:.4g} | {m['pairs_per_s']:.4g} | {speedup:.2f}x | {m['tflops']:.4g} | "
                    f"{100 * m['share_of_peak']:.1f} |")
    return "\n".join(rows)


def markdown(result: dict) -> str:
    """Command, device, FLOPs, peak and the table; a run cut short says so."""
    lines = [f"### Sampling, `{result['preset']}`", "", "```", result["command"], "```", ""]
    if "device_name" in result:
        lines.append(f"- Device: {result['device_name']} ({result['device']}), torch {result['torch']}, "
                     f"{result['date_utc']}")
    if "peak" in result:
        f = result["flops"]
        lines.append(f"- {result['parameters'] / 1e6:.1f}M parameters, {result['tokens']} tokens; forward FLOPs per "
                     f"sample {fmt_flops(f['forward_per_sample'])} (FlopCounterMode: "
                     f"{fmt_flops(f['forward_per_sample_counted'])}); measured {result['peak']['dtype']} matmul peak "
                     f"{result['peak']['tflops']:.4g} TFLOP/s ({result['peak']['size']}^3)")
    if "per_step_speedup_best" in result:
        lines.append(f"- Speed-up per solver step of the best mode: {result['per_step_speedup_best']:.2f}x; most "
                     f"steps that still give {TARGET_DEFAULT:g}x: {result['max_steps_for_default_target']}")
    if "error" in result or not result.get("complete"):
        lines.append(f"- INCOMPLETE RUN: {result.get('error', 'stopped before the end (timeout?)')}")
    if result.get("modes"):
        lines += ["", table(result)]
    return "\n".join([*lines, ""])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="unidiffuser-v1", help="U-ViT preset (tiny, small, base, unidiffuser-v1)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=50, help="solver steps of the authors' pattern and of ours_equal")
    ap.add_argument("--default-steps", type=int, default=0, help="steps of ours_default (0: SamplerConfig default)")
    ap.add_argument("--batch", type=int, default=8, help="pairs per batch in our modes")
    ap.add_argument("--text-tokens", type=int, default=0, help="override the preset's num_text_tokens (0: keep)")
    ap.add_argument("--authors-dtype", choices=["auto", *DTYPES], default="auto", help="auto: fp16 on GPU, fp32 CPU")
    ap.add_argument("--ours-dtype", choices=["auto", *DTYPES], default="auto", help="auto: bf16 on GPU, fp32 CPU")
    ap.add_argument("--authors-pairs", type=int, default=0, help="timed pairs of the authors' pattern (0: 2 GPU/1 CPU)")
    ap.add_argument("--repeats", type=int, default=0, help="timed batches per mode of ours (0: 2 GPU/1 CPU)")
    ap.add_argument("--warmup-steps", type=int, default=3, help="solver steps of each untimed warm-up run")
    ap.add_argument("--compile", action="store_true", help="also time ours_default after torch.compile")
    ap.add_argument("--compile-scope", choices=["blocks", "model"], default="blocks")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--sdpa", choices=["auto", "flash", "efficient", "cudnn", "math"], default="auto",
                    help="attention backend of our modes (auto: PyTorch's choice)")
    add_run_args(ap)
    args = ap.parse_args(argv)
    args.command = command_line(__file__, sys.argv[1:] if argv is None else argv)
    for name in ("steps", "batch", "warmup_steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = {"benchmark": "denoiser_sampling", "preset": args.preset, "command": args.command, "complete": False}
    try:
        run(args, result)
    except torch.OutOfMemoryError as exc:  # record it: the GPU script goes on with its other runs
        result["error"] = f"out of memory: {str(exc).splitlines()[0]}"
        print(result["error"], file=sys.stderr)
        save_json(result, args.out)
    if result.get("modes"):
        print()
        print(table(result))
        print("speed-ups over the authors' pattern: "
              + ", ".join(f"{k} {v:.2f}x" for k, v in result["speedups"].items()))
    save_markdown(markdown, result, args.markdown)
    return result


if __name__ == "__main__":
    sys.exit(1 if "error" in main() else 0)
