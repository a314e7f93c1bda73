"""The model pipeline (pipelines/): the one call (pairs, refinement, the trajectory with its timesteps), the
batching helper every sampler shares, and the model folder's manifest."""

import json

import numpy as np
import pytest
import torch
from tiny_pipeline import build_tiny_pipeline

from jodiffusion.data.classes import ClassInfo
from jodiffusion.errors import CheckpointError
from jodiffusion.masks.refine import refine_mask
from jodiffusion.pipelines.batching import generate_batches
from jodiffusion.pipelines.model_folder import MANIFEST
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline

CLASSES = ClassInfo(("background", "circle", "square"))
PROMPTS = ["a red circle", "a blue square", "a red square", "a blue circle", "a circle"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(CLASSES)


def test_the_call_returns_the_trajectory_at_the_timesteps_the_sampler_used(pipe, monkeypatch):
    seen = []  # the timestep of each network call, one call per solver step
    forward = pipe.denoiser.forward

    def spy(img, mask, t_img, t_mask, text, **kwargs):
        seen.append(int(t_img[0]))
        return forward(img, mask, t_img, t_mask, text, **kwargs)

    monkeypatch.setattr(pipe.denoiser, "forward", spy)
    out = pipe(PROMPTS[:2], seed=4, trajectory_every=2)
    traj = out.trajectory
    assert len(seen) == traj.num_steps == pipe.sampler.steps == 5
    assert traj.steps == [0, 2, 4]  # every second step, the last included
    assert traj.timesteps == [seen[i] for i in traj.steps]
    assert all(img.shape == (2, *pipe.img_shape) and mask.shape == (2, *pipe.mask_shape)
               for img, mask in traj.latents)
    seen.clear()
    every = pipe(PROMPTS[:2], seed=4, trajectory_every=1).trajectory
    assert every.steps == [0, 1, 2, 3, 4] and every.timesteps == seen
    # asking for the trajectory changes no pair
    plain = pipe(PROMPTS[:2], seed=4)
    assert plain.trajectory is None
    assert np.array_equal(plain.images, out.images) and np.array_equal(plain.masks, out.masks)


def test_the_call_refines_the_masks_it_returns_and_keeps_the_stats(pipe):
    raw = pipe(PROMPTS[:2], seed=1)
    refined = pipe(PROMPTS[:2], seed=1, refine_tau=6)
    assert raw.refine == [None, None] and all(s is not None for s in refined.refine)
    assert np.array_equal(raw.images, refined.images)
    for mask, out_mask, stats in zip(raw.masks, refined.masks, refined.refine, strict=True):
        expected, expected_stats = refine_mask(mask, tau=6, ignore_index=CLASSES.ignore_index,
                                               background_id=CLASSES.background)
        assert np.array_equal(out_mask, expected) and stats == expected_stats
    assert [m.shape for _, m, _ in refined.pairs()] == [(32, 32)] * 2 and len(refined) == 2


def test_batching_gives_the_same_pairs_for_batch_sizes_1_and_3(pipe):
    one = generate_batches(pipe, PROMPTS, 1, seed=2, refine_tau=4)
    three = generate_batches(pipe, PROMPTS, 3, seed=2, refine_tau=4)
    whole = pipe(PROMPTS, seed=2, refine_tau=4)
    for out in (one, three):
        assert np.array_equal(out.images, whole.images) and np.array_equal(out.masks, whole.masks)
        assert out.refine == whole.refine
    # pair i is seeded by its index: a run that starts further on draws the same pairs
    tail = generate_batches(pipe, PROMPTS[3:], 3, seed=2, start_index=3, refine_tau=4)
    assert np.array_equal(tail.images, whole.images[3:]) and np.array_equal(tail.masks, whole.masks[3:])
    assert not np.array_equal(generate_batches(pipe, PROMPTS, 3, seed=3).images, whole.images)


def test_batching_streams_batches_to_a_callback_and_joins_trajectories(pipe):
    seen = []
    result = generate_batches(pipe, PROMPTS, 2, seed=2, start_index=10,
                              on_batch=lambda first, batch, out: seen.append((first, batch, out.images.copy())))
    assert result is None
    assert [(first, batch) for first, batch, _ in seen] == [(10, PROMPTS[:2]), (12, PROMPTS[2:4]), (14, PROMPTS[4:])]
    direct = pipe(PROMPTS, seed=2, start_index=10)
    assert np.array_equal(np.concatenate([images for _, _, images in seen]), direct.images)
    joined = generate_batches(pipe, PROMPTS[:3], 2, seed=0, trajectory_every=2).trajectory
    whole = pipe(PROMPTS[:3], seed=0, trajectory_every=2).trajectory
    assert joined.steps == whole.steps and joined.timesteps == whole.timesteps
    for (ji, jm), (wi, wm) in zip(joined.latents, whole.latents, strict=True):
        assert torch.equal(ji, wi) and torch.equal(jm, wm)
    empty = generate_batches(pipe, [], 4)
    assert empty.images.shape == (0, 32, 32, 3) and empty.masks.shape == (0, 32, 32) and empty.refine == []
    with pytest.raises(ValueError, match="batch_size"):
        generate_batches(pipe, PROMPTS, 0)


def test_the_model_folder_round_trips_and_refuses_a_bad_manifest(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "model", captions={"a": "a red circle"})
    meta = json.loads((folder / MANIFEST).read_text())
    assert meta["text_encoder"] == {"kind": "caption", "path": "text_encoder"} and meta["padding"] is None
    again = JoDiffusionPipeline.from_pretrained(folder)
    a, b = pipe(PROMPTS[:2], seed=5), again(PROMPTS[:2], seed=5)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    with pytest.raises(CheckpointError, match="not a JoDiffusion model folder"):
        JoDiffusionPipeline.from_pretrained(tmp_path)
    (folder / MANIFEST).write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(CheckpointError, match="format 99 is not supported"):
        JoDiffusionPipeline.from_pretrained(folder)
    del meta["resolution"]
    (folder / MANIFEST).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a valid model manifest"):
        JoDiffusionPipeline.from_pretrained(folder)
