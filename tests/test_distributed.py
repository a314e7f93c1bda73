"""Multi-process training through accelerate, on CPU (gloo): the same code path as several GPUs."""

import json
import os
import subprocess
import sys
import time

import pytest

from jodiffusion.models.annotation_vae import AnnotationVAE


# `accelerate launch --cpu --num_processes 2` starts ONE process; torchrun with ACCELERATE_USE_CPU starts two
@pytest.mark.slow
def test_train_vae_with_two_processes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "jodiffusion.cli.main",
           "train-vae", "--preset", "tiny", "train.steps=4", "train.save_every=2", f"output_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accelerate: 2 process(es)" in proc.stderr + proc.stdout
    report = json.loads((out / "eval.json").read_text())
    assert report["steps"] == 4
    # every val mask counted exactly once across the two ranks: 8 masks of 32x32 pixels, no ignore
    assert report["pixels"] == 8 * 32 * 32
    vae = AnnotationVAE.from_pretrained(out / "annotation_vae")
    assert vae.config.scale_factor > 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]


@pytest.mark.slow
def test_a_refusal_on_the_main_process_stops_every_process_at_once(tmp_path):
    """The main process takes the output folder's lock; when it is refused, the other process
    used to wait at the next barrier until the group's 30-minute timeout. Now both stop with the line."""
    from jodiffusion.utils import lock

    out = tmp_path / "run"
    held = lock.acquire(out, "train-vae")  # this test process holds the folder
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "jodiffusion.cli.main",
               "train-vae", "--preset", "tiny", "train.steps=2", f"output_dir={out}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        elapsed = time.monotonic() - start
    finally:
        lock.release(held)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and elapsed < 200
    assert text.count(f"is being written by another run: `jodiffusion train-vae`, process {os.getpid()}") >= 2, \
        text[-3000:]
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written
