"""The joint training stage against its bare model step, in one run: where a CPU's samples/s go.

    python benchmarks/bench_joint_stage.py --threads 2 --steps 60 [--out stage.json]
    python benchmarks/bench_joint_stage.py --threads 2 --steps 60 --channels-last on    # force a memory format

*stage*: ``jodiffusion.training.joint.train_joint`` with the joint preset (default ``demo``) on a
shapes dataset written to a temporary folder (512 train pairs, the demo's size and difficulty) and a
randomly initialised annotation VAE of the demo's shape, probes and sample grids off; samples/s from the
run's own ``metrics.jsonl`` between the first log step and the last, so start-up (cache, imports) and
export are not counted.

*bare*: the same denoiser and trainable caption encoder, built by the same ``build_components``, in the
same memory format and precision: ``joint_loss`` on latents already in memory, backward, gradient
clipping and the library's optimizer, timed after warm-up steps, once before and once after the stage.
What the stage costs beyond it (loading batches, drawing latents, mask latents, EMA, logging, the LR
schedule) is the overhead the ratio shows; the target is a stage at >= 80% of the bare rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from jodiffusion.config.loader import load_config
from jodiffusion.data.shapes_folder import write_shapes_dataset
from jodiffusion.diffusion.objective import joint_loss
from jodiffusion.diffusion.schedule import training_scheduler
from jodiffusion.engine.runtime import make_optimizer
from jodiffusion.models.annotation_vae import AnnotationVAE, AnnotationVAEConfig
from jodiffusion.models.denoisers import DenoiserWithText
from jodiffusion.training.config import JointRunConfig
from jodiffusion.training.joint import build_components, memory_format_for, train_joint
from jodiffusion.utils.precision import resolve_mixed_precision

TARGET_RATIO = 0.8


def _dataset(root: Path, num_train: int, resolution: int, downsample: int) -> tuple[Path, Path]:
    data = write_shapes_dataset(root / "data", num_train=num_train, num_val=8, resolution=resolution,
                                progress=False, difficulty="easy")
    classes = json.loads((data / "classes.json").read_text())
    # the demo's VAE shape (vae/shapes preset) on the codec's grid; its weights do not change the speed
    vae = AnnotationVAE(AnnotationVAEConfig(num_classes=len(classes["names"]), downsample=downsample,
                                            base_channels=16, max_channels=64, blocks_per_stage=1))
    vae.save_pretrained(root / "vae")
    return data, root / "vae"


def _config(args, data: Path, vae: Path, out: Path) -> JointRunConfig:
    overrides = ["data.name=folder", f"data.root={data}", f"data.resolution={args.resolution}", f"vae={vae}",
                 "probe_every=0", "sample_count=0", "sample_every=0", f"train.steps={args.steps}",
                 "train.save_every=0", f"train.log_every={args.log_every}", "train.warmup_steps=1",
                 f"output_dir={out}"]
    if args.batch:
        overrides.append(f"train.batch_size={args.batch}")
    if args.channels_last != "auto":
        overrides.append(f"channels_last={'true' if args.channels_last == 'on' else 'false'}")
    return load_config(JointRunConfig, group="joint", preset=args.preset, overrides=overrides + list(args.override))


def stage_rate(cfg: JointRunConfig) -> dict:
    start = time.perf_counter()
    train_joint(cfg, progress=False)
    rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "loss" in r and "time_s" in r]
    first, last = timed[0], timed[-1]
    steps = last["step"] - first["step"]
    seconds = last["time_s"] - first["time_s"]
    return {"steps_timed": steps, "seconds": seconds, "samples_per_s": steps * cfg.train.batch_size / seconds,
            "wall_s_with_setup": time.perf_counter() - start}


def bare_rate(cfg: JointRunConfig, steps: int, warmup: int, memory_format, bf16: bool) -> dict:
    captions = {f"s{i}": f"a red circle and a blue star {i}" for i in range(cfg.train.batch_size)}
    vae, codec, text, net = build_components(cfg, captions)
    b = cfg.train.batch_size
    h, w = cfg.data.size
    grid = (h // codec.downsample, w // codec.downsample)
    img = torch.randn(b, codec.latent_channels, *grid)
    mask = torch.randn(b, vae.config.latent_channels, *grid)
    if memory_format is not None:
        net.to(memory_format=memory_format)
        img, mask = img.contiguous(memory_format=memory_format), mask.contiguous(memory_format=memory_format)
    trainable_text = text if text.trainable else None
    model = DenoiserWithText(net, trainable_text).train()
    optimizer = make_optimizer(model.parameters(), cfg.train)
    scheduler = training_scheduler(cfg.schedule)
    texts = list(captions.values())
    frozen = None if trainable_text is not None else (text.encode(texts), text.encode([""]))

    def one_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb, null = (model.text_encoder.encode(texts), model.text_encoder.encode([""])) if frozen is None \
                else frozen
            loss, _ = joint_loss(model, scheduler, img, mask, emb, null, cfg.objective)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        one_step()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    seconds = time.perf_counter() - start
    return {"steps_timed": steps, "seconds": seconds, "samples_per_s": steps * b / seconds, "bf16": bf16}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo", help="joint preset (default: demo)")
    p.add_argument("--steps", type=int, default=60, help="stage steps (the first log step is not timed)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--bare-steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=0, help="batch size (default: the preset's)")
    p.add_argument("--num-train", type=int, default=512)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="memory format of the conv UNet (auto: the library's choice for this precision)")
    p.add_argument("--override", action="append", default=[], help="another key=value for the joint config")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.steps <= args.log_every:
        p.error("--steps must exceed --log-every: the first log step starts the clock")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        factor = load_config(JointRunConfig, group="joint", preset=args.preset).codec.factor
        data, vae = _dataset(tmp, args.num_train, args.resolution, factor)
        cfg = _config(args, data, vae, tmp / "run")
        bf16 = resolve_mixed_precision(cfg.train.mixed_precision, "cpu") == "bf16"
        memory_format = memory_format_for(cfg, bf16)  # the stage's own decision
        # the bare step before and after the stage, so that a load that changes while it runs (a shared
        # machine) weighs on both sides alike
        before = bare_rate(cfg, args.bare_steps, args.warmup_steps, memory_format, bf16)
        stage = stage_rate(cfg)
        after = bare_rate(cfg, args.bare_steps, args.warmup_steps, memory_format, bf16)
        seconds = before["seconds"] + after["seconds"]
        bare = {"steps_timed": before["steps_timed"] + after["steps_timed"], "seconds": seconds, "bf16": bf16,
                "samples_per_s": (before["steps_timed"] + after["steps_timed"]) * cfg.train.batch_size / seconds,
                "samples_per_s_before_after": [before["samples_per_s"], after["samples_per_s"]]}
    result = {"preset": args.preset, "batch": cfg.train.batch_size, "threads": torch.get_num_threads(),
              "channels_last": memory_format is not None, "stage": stage, "bare": bare,
              "ratio": stage["samples_per_s"] / bare["samples_per_s"], "target_ratio": TARGET_RATIO,
              "command": " ".join(["python", *sys.argv])}
    print(f"stage {stage['samples_per_s']:.1f} samples/s, bare model {bare['samples_per_s']:.1f} samples/s: "
          f"{100 * result['ratio']:.0f}% (target {100 * TARGET_RATIO:.0f}%); batch {result['batch']}, "
          f"{result['threads']} threads, channels_last {result['channels_last']}, bf16 {bare['bf16']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
