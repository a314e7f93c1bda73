"""Dataset generation speed: bare sampling against ``generate_dataset`` end to end, same model, same batch.

    python benchmarks/bench_generate.py --model runs/joint/export --device cuda --num 256 --batch-size 16
    python benchmarks/bench_generate.py --device cpu --num 48 --batch-size 8 --threads 1   # tiny random model

Modes, one process, the same model and sampler settings:

  bare           ``pipe.generate_latents`` + ``pipe.decode`` on batches of ``--batch-size``: the arrays only,
                 no refinement, no encoding, no files (the upper bound of what generation can reach).
  end_to_end     ``generate_dataset`` into a fresh temporary folder with ``--workers`` writer threads:
                 refinement (tau), PNG encoding, atomic writes, records, the final merge and card.
  end_to_end_w0  the same with ``workers=0``: post-processing in the sampling thread, no overlap.

End-to-end times include loading the model (measured on its own and reported as ``load_s``);
``pairs_per_s_excl_load`` subtracts it. ``ratio`` = end-to-end / bare pairs/s (1.0: writing costs nothing).
Without ``--model`` a tiny model is trained for one step in a temporary folder (its weights are nearly
random, which does not matter for speed); ``--resolution`` sets its image size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def tiny_model(root: Path, resolution: int) -> Path:
    from jodiffusion.config.loader import load_config
    from jodiffusion.training.config import JointRunConfig, VAERunConfig
    from jodiffusion.training.joint import train_joint
    from jodiffusion.training.vae import train_vae

    vae = train_vae(load_config(VAERunConfig, group="vae", preset="tiny", overrides=[f"output_dir={root / 'vae'}"]),
                    progress=False).export
    return train_joint(load_config(JointRunConfig, group="joint", preset="tiny",
                                   overrides=[f"vae={vae}", f"output_dir={root / 'run'}", f"cache_dir={root / 'c'}",
                                              "train.steps=1", "sample_count=0", f"data.resolution={resolution}",
                                              "data.num_train=8", "data.num_val=4"]), progress=False).export


def bare_sampling(model: Path, num: int, batch: int, device: str, steps: int | None) -> dict:
    from jodiffusion.diffusion.sampling import sample_seed
    from jodiffusion.pipelines.pipeline import JoDiffusionPipeline

    t0 = time.perf_counter()
    pipe = JoDiffusionPipeline.from_pretrained(model, device=device)
    load_s = time.perf_counter() - t0
    sampler = pipe.sampler.override(steps)
    autocast = torch.bfloat16 if device.startswith("cuda") else None
    prompts = ["a photo of a circle and a star"] * batch

    def run(first: int, n: int) -> None:
        seeds = [sample_seed(0, first + i) for i in range(n)]
        lat = pipe.generate_latents(prompts[:n], seeds, sampler, autocast)
        pipe.decode(lat["img"], lat["mask"])  # ends with .cpu(): synchronises the device

    run(0, batch)  # warm-up
    t0 = time.perf_counter()
    for first in range(0, num, batch):
        run(first, min(batch, num - first))
    seconds = time.perf_counter() - t0
    return {"pairs": num, "seconds": seconds, "pairs_per_s": num / seconds, "load_s": load_s,
            "steps": sampler.steps, "resolution": list(pipe.resolution)}


def end_to_end(model: Path, num: int, batch: int, device: str, steps: int | None, workers: int,
               load_s: float, tau: int) -> dict:
    from jodiffusion.generation.generate import GenerateConfig, generate_dataset
    from jodiffusion.generation.prompts import PromptConfig

    with tempfile.TemporaryDirectory() as tmp:
        cfg = GenerateConfig(num=num, out=str(Path(tmp) / "out"), steps=steps, batch_size=batch, workers=workers,
                             tau=tau, prompts=PromptConfig(source="templates"))
        t0 = time.perf_counter()
        generate_dataset(model, cfg, device=device, progress=False)
        seconds = time.perf_counter() - t0
    return {"pairs": num, "workers": workers, "seconds": seconds, "pairs_per_s": num / seconds,
            "pairs_per_s_excl_load": num / max(seconds - load_s, 1e-9)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="exported model folder (default: a tiny model trained here)")
    parser.add_argument("--num", type=int, default=48, help="pairs per timed mode (default: 48)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument("--workers", type=int, default=4, help="writer threads of end_to_end (default: 4)")
    parser.add_argument("--tau", type=int, default=20, help="refinement threshold (default: 20)")
    parser.add_argument("--resolution", type=int, default=64, help="tiny model only: image size (default: 64)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else tiny_model(Path(tmp), args.resolution)
        bare = bare_sampling(model, args.num, args.batch_size, args.device, args.steps)
        e2e = end_to_end(model, args.num, args.batch_size, args.device, args.steps, args.workers, bare["load_s"],
                         args.tau)
        e2e0 = end_to_end(model, args.num, args.batch_size, args.device, args.steps, 0, bare["load_s"], args.tau)
    result = {"device": args.device, "batch_size": args.batch_size, "model": args.model or "tiny (random)",
              "threads": torch.get_num_threads(), "bare": bare, "end_to_end": e2e, "end_to_end_w0": e2e0,
              "ratio": e2e["pairs_per_s_excl_load"] / bare["pairs_per_s"],
              "ratio_w0": e2e0["pairs_per_s_excl_load"] / bare["pairs_per_s"]}
    print(f"device {args.device}, batch {args.batch_size}, {bare['steps']} steps, {bare['resolution']} px, "
          f"{args.num} pairs, {result['threads']} torch threads")
    print(f"  bare sampling (latents + decode):      {bare['pairs_per_s']:8.2f} pairs/s")
    print(f"  generate_dataset, {args.workers} writer threads:  {e2e['pairs_per_s_excl_load']:8.2f} pairs/s "
          f"(excl. {bare['load_s']:.2f} s load; {e2e['pairs_per_s']:.2f} incl.)  ratio {result['ratio']:.2f}")
    print(f"  generate_dataset, no writer threads:   {e2e0['pairs_per_s_excl_load']:8.2f} pairs/s "
          f"(excl. load; {e2e0['pairs_per_s']:.2f} incl.)  ratio {result['ratio_w0']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
