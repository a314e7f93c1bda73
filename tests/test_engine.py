"""The shared training engine (engine/loop.py, engine/run.py), exercised through all three stages:
a run killed mid-way or stopped by SIGTERM and then resumed ends with the weights of an uninterrupted
run; changed settings are refused on resume (or, for the run-length ones, recorded); a run killed before
its first checkpoint starts again with the obvious command."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from jodiffusion.cli.main import main
from jodiffusion.config.loader import config_changes, load_config
from jodiffusion.engine import loop
from jodiffusion.engine.checkpoint import CheckpointManager
from jodiffusion.engine.run import interrupted_start, prepare_run_dir
from jodiffusion.errors import ConfigError, JoDiffusionError
from jodiffusion.training.config import JointRunConfig, SegRunConfig, VAERunConfig
from jodiffusion.training.joint import train_joint
from jodiffusion.training.segmenter import train_segmenter
from jodiffusion.training.vae import train_vae
from jodiffusion.utils.ownership import write_owner


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    return train_vae(load_config(VAERunConfig, group="vae", preset="tiny", overrides=[f"output_dir={out}"]),
                     progress=False).export


def _stage(name, tmp_path, tiny_vae, *overrides, run="run"):
    """(config, train function) of a tiny run of stage ``name`` in ``tmp_path / run``."""
    out = [f"output_dir={tmp_path / run}", "train.steps=6", "train.save_every=2", *overrides]
    if name == "train-vae":  # augmentation noise and flips on: resume must reproduce them too
        return load_config(VAERunConfig, group="vae", preset="tiny",
                           overrides=["latent_noise=0.1", "hflip=true", *out]), train_vae
    if name == "train":
        return load_config(JointRunConfig, group="joint", preset="tiny",
                           overrides=[f"vae={tiny_vae}", f"cache_dir={tmp_path / 'cache'}", *out]), train_joint
    return load_config(SegRunConfig, group="seg", preset="tiny", overrides=out), train_segmenter


def _weights(run_dir):
    """The model weights of the newest checkpoint (the final one after a finished run)."""
    return load_file(str(CheckpointManager(run_dir).latest() / "model.safetensors"))


def _assert_same(a, b):
    """Bit-equal: on one CPU process the same seeds give the same float operations in the same order
    (a wrong RNG state on resume showed as differences of 1e-2; once measured at 0.024)."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), (key, (a[key] - b[key]).abs().max())


STAGES = ["train-vae", "train", "train-seg"]


# Run in a child process whose optimizer step 5 (after the checkpoint at step 4) SIGKILLs the process:
# no handler, no finally block, no flush runs, as with `kill -9` or the out-of-memory killer.
_KILLED_CHILD = """
import os, signal, sys
from jodiffusion.engine import loop
real, calls = loop.optimizer_step, [0]
def step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
loop.optimizer_step = step
from jodiffusion.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_args(name, tmp_path, tiny_vae, run):
    common = [f"output_dir={tmp_path / run}", "train.steps=6", "train.save_every=2"]
    if name == "train-vae":
        return ["train-vae", "--preset", "tiny", "latent_noise=0.1", "hflip=true", *common]
    if name == "train":
        return ["train", "--preset", "tiny", f"vae={tiny_vae}", f"cache_dir={tmp_path / 'cache'}", *common]
    return ["train-seg", "--preset", "tiny", *common]


@pytest.mark.slow
@pytest.mark.parametrize("name", STAGES)
def test_killed_then_resumed_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, tiny_vae, name):
    import subprocess
    import sys

    cfg, train = _stage(name, tmp_path, tiny_vae, run="straight")
    train(cfg, progress=False)
    straight = _weights(tmp_path / "straight")

    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same float sums as this process
    args = _cli_args(name, tmp_path, tiny_vae, "killed")
    proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD, *args], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [s for s, _ in CheckpointManager(tmp_path / "killed").list()] == [2, 4]
    assert main([*args, "--resume", "latest"]) == 0  # the command a user types next
    _assert_same(straight, _weights(tmp_path / "killed"))


@pytest.mark.parametrize("name", STAGES)
def test_sigterm_saves_a_checkpoint_and_resume_finishes_exactly(tmp_path, tiny_vae, monkeypatch, name):
    cfg, train = _stage(name, tmp_path, tiny_vae, "train.save_every=0", run="straight")
    train(cfg, progress=False)
    straight = _weights(tmp_path / "straight")

    calls = {"n": 0}
    real_step = loop.optimizer_step

    def signalled_in_step_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what `kill` or a cluster's pre-emption sends
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "optimizer_step", signalled_in_step_three)
    cfg, train = _stage(name, tmp_path, tiny_vae, "train.save_every=0", run="stopped")
    with pytest.raises(JoDiffusionError, match="stopped at step 3.*--resume latest"):
        train(cfg, progress=False)
    assert [s for s, _ in CheckpointManager(tmp_path / "stopped").list()] == [3]
    monkeypatch.setattr(loop, "optimizer_step", real_step)
    train(cfg, resume="latest", progress=False)
    _assert_same(straight, _weights(tmp_path / "stopped"))


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_with_changed_settings_is_refused_naming_them_and_changes_nothing(tmp_path, tiny_vae):
    cfg, train = _stage("train-vae", tmp_path, tiny_vae, "train.steps=2")
    train(cfg, progress=False)
    before = _tree(tmp_path / "run")
    cfg, _ = _stage("train-vae", tmp_path, tiny_vae, "train.steps=2", "train.lr=0.5", "train.batch_size=2")
    with pytest.raises(ConfigError, match=r"train\.batch_size: 4 -> 2; train\.lr: 0\.0002 -> 0\.5"):
        train(cfg, resume="latest", progress=False)
    assert _tree(tmp_path / "run") == before


def test_resume_may_lengthen_a_run_and_records_the_change(tmp_path, tiny_vae):
    cfg, train = _stage("train-vae", tmp_path, tiny_vae, "train.steps=2")
    train(cfg, progress=False)
    cfg, _ = _stage("train-vae", tmp_path, tiny_vae, "train.steps=4")
    train(cfg, resume="latest", progress=False)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("config_changed") == {"train.steps": [2, 4]} and r["step"] == 2 for r in rows)
    assert [s for s, _ in CheckpointManager(tmp_path / "run").list()][-1] == 4


def test_config_changes_names_each_dotted_key():
    old = {"jodiffusion_version": "0.1", "train": {"lr": 1e-3, "steps": 2}, "data": {"name": "shapes"}}
    new = {"jodiffusion_version": "0.2", "train": {"lr": 0.5, "steps": 2}, "data": {"name": "shapes"}}
    assert config_changes(old, new) == {"train.lr": (1e-3, 0.5)}


def _interrupted_start(run_dir, command):
    """What a run killed before its first checkpoint leaves: the marker, config.yaml, a log line."""
    run_dir.mkdir(parents=True)
    write_owner(run_dir, command)
    (run_dir / "config.yaml").write_text("jodiffusion_version: x\ntrain: {}\n")
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')


@pytest.mark.parametrize("resume", [None, "latest"])
def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, resume):
    run = tmp_path / "run"
    _interrupted_start(run, "train")
    (run / "cache").mkdir()  # kept: rebuilt only when its fingerprint differs (train's latent cache)
    assert interrupted_start(run, "train")
    prepare_run_dir(run, resume, False, command="train")
    assert sorted(p.name for p in run.iterdir()) == [".jodiffusion-owner.json", "cache"]


def test_an_interrupted_start_with_user_files_or_another_owner_is_not_restarted(tmp_path):
    run = tmp_path / "run"
    _interrupted_start(run, "train-vae")
    (run / "notes.txt").write_text("mine")
    assert not interrupted_start(run, "train-vae")
    with pytest.raises(JoDiffusionError, match="already holds a run"):
        prepare_run_dir(run, None, False, command="train-vae")
    other = tmp_path / "other"
    _interrupted_start(other, "train-seg")
    assert not interrupted_start(other, "train-vae")
    with pytest.raises(JoDiffusionError, match="no checkpoint"):
        prepare_run_dir(other, "latest", False, command="train-vae")


def test_the_obvious_command_continues_an_interrupted_start(tmp_path, capsys):
    run = tmp_path / "run"
    _interrupted_start(run, "train-vae")
    args = ["train-vae", "--preset", "tiny", f"output_dir={run}", "train.steps=2"]
    assert main([*args, "--resume", "latest"]) == 0
    assert (run / "annotation_vae" / "model.safetensors").is_file()
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 1} not in rows  # the killed start's log line was not kept
