"""End-to-end joint diffusion on the embedded shapes dataset with tiny models (CPU, seconds)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from jodiffusion.cli.main import main
from jodiffusion.config.loader import load_config
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline
from jodiffusion.training.config import JointRunConfig, VAERunConfig
from jodiffusion.training.joint import train_joint
from jodiffusion.training.vae import train_vae


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    return train_vae(load_config(VAERunConfig, group="vae", preset="tiny", overrides=[f"output_dir={out}"]),
                     progress=False).export


def _cfg(tmp_path, vae, *overrides):
    return load_config(JointRunConfig, group="joint", preset="tiny",
                       overrides=[f"vae={vae}", f"output_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}",
                                  *overrides])


def test_train_export_and_sample(tmp_path, tiny_vae):
    export = train_joint(_cfg(tmp_path, tiny_vae, "train.steps=3"), progress=False).export
    pipe = JoDiffusionPipeline.from_pretrained(export)
    pairs = pipe(["a red circle", "a blue star"], seed=1, refine_tau=4)
    assert pairs.images.shape == (2, 32, 32, 3) and pairs.masks.shape == (2, 32, 32)
    assert pairs.images.dtype == np.uint8 and pairs.masks.max() < 9
    assert all(stats is not None for stats in pairs.refine) and pairs.trajectory is None
    again = pipe(["a red circle", "a blue star"], seed=1, refine_tau=4)
    other = pipe(["a red circle", "a blue star"], seed=2, refine_tau=4)
    assert np.array_equal(pairs.images, again.images) and np.array_equal(pairs.masks, again.masks)
    assert not np.array_equal(pairs.images[0], other.images[0])
    # a pair does not depend on the batch it was drawn in
    second_alone = pipe(["a blue star"], seed=1, start_index=1, refine_tau=4)
    assert np.abs(second_alone.images[0].astype(int) - pairs.images[1].astype(int)).max() <= 1
    assert (tmp_path / "run" / "samples").is_dir() and (tmp_path / "run" / "config.yaml").is_file()
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "loss_img", "loss_mask"} <= set(rows[0])
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_export_round_trip_gives_identical_samples(tmp_path, tiny_vae):
    export = train_joint(_cfg(tmp_path, tiny_vae, "train.steps=2"), progress=False).export
    pipe = JoDiffusionPipeline.from_pretrained(export)
    pipe.save_pretrained(tmp_path / "copy")
    copy = JoDiffusionPipeline.from_pretrained(tmp_path / "copy")
    a, b = pipe(["a green ring"], seed=3), copy(["a green ring"], seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    meta = json.loads((export / "jodiffusion.json").read_text())
    assert meta["codec"]["kind"] == "pixel-unshuffle" and meta["codec"]["scaling_factor"] != 1.0  # measured
    assert meta["schedule"]["rescale_betas_zero_snr"] is False  # "auto" recorded as what it meant (epsilon: off)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, tiny_vae):
    common = ("sample_count=0", "train.save_every=2", "train.batch_size=8")  # 2 batches/epoch: crosses epochs
    straight = train_joint(_cfg(tmp_path / "a", tiny_vae, "train.steps=4", *common), progress=False).export
    train_joint(_cfg(tmp_path / "b", tiny_vae, "train.steps=2", *common), progress=False)
    resumed = train_joint(_cfg(tmp_path / "b", tiny_vae, "train.steps=4", *common), resume="latest",
                          progress=False).export
    a = JoDiffusionPipeline.from_pretrained(straight).denoiser.state_dict()
    b = JoDiffusionPipeline.from_pretrained(resumed).denoiser.state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_codec_and_vae_grids_must_match(tmp_path, tiny_vae):
    from jodiffusion.errors import ConfigError

    with pytest.raises(ConfigError, match="same grid|share one grid"):
        train_joint(_cfg(tmp_path, tiny_vae, "codec.factor=4"), progress=False)


def test_cli_train_and_sample(tmp_path, tiny_vae, capsys):
    run = tmp_path / "cli"
    assert main(["train", "--preset", "tiny", f"vae={tiny_vae}", f"output_dir={run}", "train.steps=2",
                 "sample_count=0"]) == 0
    out = tmp_path / "samples"
    assert main(["sample", str(run / "export"), "--prompt", "a red circle", "--num", "3", "--out", str(out),
                 "--steps", "2", "--tau", "4"]) == 0
    assert len(list((out / "masks").glob("*.png"))) == 3 and (out / "grid.png").is_file()
    assert main(["sample", str(run / "export"), "--prompt", "x", "--out", str(out)]) == 1  # not empty
    assert "not empty" in capsys.readouterr().err


# `accelerate launch --cpu --num_processes 2` starts ONE process; torchrun with ACCELERATE_USE_CPU starts two
@pytest.mark.slow
def test_two_process_training(tmp_path, tiny_vae):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "jodiffusion.cli.main",
           "train", "--preset", "tiny", f"vae={tiny_vae}", f"output_dir={tmp_path / 'run'}", "train.steps=2",
           "sample_count=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accelerate: 2 process(es)" in proc.stderr + proc.stdout
    assert JoDiffusionPipeline.from_pretrained(tmp_path / "run" / "export").denoiser is not None


def test_image_to_mask_and_mask_to_image(tmp_path, tiny_vae):
    from jodiffusion.data.shapes import ShapesDataset

    export = train_joint(_cfg(tmp_path, tiny_vae, "train.steps=2", "objective.independent_timesteps=0.5",
                              "sample_count=0"), progress=False).export
    pipe = JoDiffusionPipeline.from_pretrained(export)
    ds = ShapesDataset("val", num_images=2, resolution=32)
    images = np.stack([ds.load_image(i) for i in range(2)])
    masks = pipe.image_to_mask(images, [ds.caption(0), ds.caption(1)], seed=0)
    assert masks.shape == (2, 32, 32) and masks.dtype == np.uint8
    drawn = pipe.mask_to_image(np.stack([ds.load_mask(i) for i in range(2)]), [ds.caption(0), ds.caption(1)])
    assert drawn.shape == (2, 32, 32, 3) and drawn.dtype == np.uint8
    with pytest.raises(ValueError, match="resize them first"):
        pipe.image_to_mask(np.zeros((1, 16, 16, 3), np.uint8), ["x"])


def test_eval_joint_reports_prompt_adherence(tmp_path, tiny_vae):
    run = tmp_path / "run"
    train_joint(_cfg(tmp_path, tiny_vae, "train.steps=1", "sample_count=0"), progress=False)
    report = tmp_path / "eval.json"
    assert main(["eval-joint", str(run / "export"), "--resolution", "32", "--num", "3", "--steps", "2",
                 "--json", str(report), "--grid", str(tmp_path / "grid.png")]) == 0
    data = json.loads(report.read_text())
    assert data["pairs"] == 3 and data["steps"] == 2
    assert 0 <= data["prompt_recall"] <= 100 and (tmp_path / "grid.png").is_file()


def test_unet_backbone_trains_exports_and_reloads(tmp_path, tiny_vae):
    from jodiffusion.models.joint_unet import JointUNet

    export = train_joint(_cfg(tmp_path, tiny_vae, "train.steps=2", "sample_count=0", "model.backbone=unet",
                              "model.preset=tiny", "schedule.prediction_type=sample"), progress=False).export
    assert json.loads((export / "denoiser" / "config.json").read_text())["class"] == "JointUNet"
    pipe = JoDiffusionPipeline.from_pretrained(export)
    assert isinstance(pipe.denoiser, JointUNet)
    a = pipe(["a red circle"], seed=3)
    pipe.save_pretrained(tmp_path / "copy")
    b = JoDiffusionPipeline.from_pretrained(tmp_path / "copy")(["a red circle"], seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)


def test_backbone_option_is_validated(tmp_path, tiny_vae):
    with pytest.raises(Exception, match="backbone"):
        _cfg(tmp_path, tiny_vae, "model.backbone=resnet")
    with pytest.raises(Exception, match="init_from"):
        _cfg(tmp_path, tiny_vae, "model.backbone=unet", "model.init_from=/x.pth")


def test_pca_codec_is_fitted_on_the_training_images_and_travels_in_the_export(tmp_path, tiny_vae):
    export = train_joint(_cfg(tmp_path, tiny_vae, "train.steps=1", "sample_count=0", "codec.kind=pca",
                              "codec.components=6", "codec.fit_images=8"), progress=False).export
    spec = json.loads((export / "jodiffusion.json").read_text())["codec"]
    assert spec["kind"] == "pca" and spec["components"] == 6 and len(spec["basis"]) == 6
    assert 0 < spec["explained"] <= 1
    pipe = JoDiffusionPipeline.from_pretrained(export)
    assert pipe.img_shape == (6, 4, 4)
    image, mask, _ = pipe(["a red circle"], seed=0).pairs()[0]
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32)


def test_the_export_describes_itself_and_generates_away_from_its_run(tmp_path, tiny_vae):
    """The model folder carries the training captions and names its dataset; generation
    with caption prompts needs nothing from the run folder around it."""
    import shutil

    from jodiffusion.data.captions import read_captions
    from jodiffusion.data.shapes import ShapesDataset
    from jodiffusion.generation.generate import GenerateConfig, generate_dataset

    export = train_joint(_cfg(tmp_path, tiny_vae, "train.steps=1", "sample_count=0"), progress=False).export
    manifest = json.loads((export / "jodiffusion.json").read_text())
    assert manifest["prompts"] == {"captions": "captions.jsonl"}
    data = manifest["dataset"]
    assert data["name"] == "shapes" and data["num_train"] == 16
    shapes = ShapesDataset("train", data["num_train"], data["resolution"], data["seed"])
    assert read_captions(export / "captions.jsonl") == shapes.captions()
    moved = shutil.move(str(export), str(tmp_path / "elsewhere" / "model"))
    shutil.rmtree(tmp_path / "run")  # no config.yaml, no dataset beside it
    summary = generate_dataset(moved, GenerateConfig(num=2, out=str(tmp_path / "gen"), steps=2, batch_size=2),
                               progress=False)
    assert summary["pairs"] == 2
    used = [json.loads(r)["caption"] for r in (tmp_path / "gen" / "captions.jsonl").read_text().splitlines()]
    assert set(used) <= set(shapes.captions().values())


@pytest.mark.parametrize("overrides, match", [
    (["model.width=64"], r"unknown config key 'model\.width'"),
    (["model.arch.widht=64"], r"model\.arch\.widht is not a uvit architecture field; valid fields: patch_size, width"),
    (["model.arch.latent_height=8"], r"model\.arch\.latent_height is set from the data"),
    (["model.backbone=unet", "model.preset=small", "model.arch.depth=3"], r"not a unet architecture field"),
    (["model.preset=huge"], r"not a uvit preset; choose one of tiny, small, base, unidiffuser-v1"),
])
def test_a_preset_is_an_architecture_and_arch_changes_only_architecture_fields(overrides, match):
    """One way to restyle a model (model.arch), the shapes always from the data."""
    from jodiffusion.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_config(JointRunConfig, group="joint", preset="tiny", overrides=overrides)


def test_arch_overrides_reach_the_network_and_shapes_come_from_the_data(tmp_path, tiny_vae):
    from jodiffusion.training.joint import build_components

    cfg = _cfg(tmp_path, tiny_vae, "model.arch.depth=5", "model.arch.width=48", "data.resolution=64")
    vae, codec, text, net = build_components(cfg, {"a": "a red circle"})
    assert (net.config.depth, net.config.width, net.config.num_heads) == (5, 48, 2)  # num_heads: the preset's
    assert (net.config.latent_height, net.config.latent_width) == (64 // codec.downsample,) * 2
    assert net.config.img_channels == codec.latent_channels and net.config.text_dim == text.dim


def test_learning_curves_are_logged_and_drawn(tmp_path, tiny_vae):
    """probe_every logs the probe's figures with the samples seen; report/curves.py draws them."""
    from jodiffusion.report.curves import learning_curves_figure, read_curves

    train_joint(_cfg(tmp_path, tiny_vae, "train.steps=4", "train.batch_size=4", "sample_count=0", "probe_every=2",
                     "probe_pairs=3", "probe_steps=2"), progress=False)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    probed = [r for r in rows if "probe/prompt_recall" in r]
    assert [r["step"] for r in probed] == [2, 4]
    assert [r["samples_seen"] for r in probed] == [8, 16]
    assert all("probe/background_accuracy" in r and "probe/count_accuracy" in r for r in probed)
    curves = read_curves(tmp_path / "run" / "metrics.jsonl")
    assert curves["prompt_recall"][0] == [8.0, 16.0]
    path = learning_curves_figure(curves, tmp_path / "curves.png", reference={"background_dark": 80.0})
    from PIL import Image

    with Image.open(path) as im:
        assert im.size[0] > 400 and im.size[1] > 200
    with pytest.raises(ValueError, match="probe_every"):
        learning_curves_figure({}, tmp_path / "none.png")


def test_probe_settings_are_checked(tmp_path, tiny_vae):
    from jodiffusion.errors import ConfigError

    with pytest.raises(ConfigError, match="probe_every"):
        _cfg(tmp_path, tiny_vae, "probe_every=-1")


def test_channels_last_trains_the_conv_unet_to_the_same_weights(tmp_path, tiny_vae):
    """channels_last changes the memory layout, not the maths: two steps give the same weights either way
    (up to AdamW's step size, lr 1e-3: Adam normalises each update, so a rounding difference in a tiny
    gradient can move a weight by up to one step; a different model would differ by about 0.1), and the
    export loads and samples."""
    common = ("model.backbone=unet", "train.steps=2", "sample_count=0")
    fast = train_joint(_cfg(tmp_path / "cl", tiny_vae, *common, "channels_last=true"), progress=False).export
    plain = train_joint(_cfg(tmp_path / "plain", tiny_vae, *common, "channels_last=false"), progress=False).export
    a = JoDiffusionPipeline.from_pretrained(fast)
    b = JoDiffusionPipeline.from_pretrained(plain).denoiser.state_dict()
    for key, value in a.denoiser.state_dict().items():
        assert torch.allclose(value, b[key], atol=2.5e-3), key
    image, mask, _ = a(["a red circle"], seed=0).pairs()[0]
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32)


def test_channels_last_auto_follows_the_number_format(tmp_path, tiny_vae):
    """auto: channels_last for the conv UNet in fp32 (faster there), not under bf16 (slower there); true and
    false force it; the U-ViT never; anything else is refused by name."""
    from jodiffusion.errors import ConfigError
    from jodiffusion.training.joint import memory_format_for

    unet = _cfg(tmp_path, tiny_vae, "model.backbone=unet")
    assert memory_format_for(unet, bf16=False) is torch.channels_last
    assert memory_format_for(unet, bf16=True) is None
    forced = _cfg(tmp_path, tiny_vae, "model.backbone=unet", "channels_last=true")
    assert memory_format_for(forced, bf16=True) is torch.channels_last
    assert memory_format_for(_cfg(tmp_path, tiny_vae, "model.backbone=unet", "channels_last=false"), False) is None
    assert memory_format_for(_cfg(tmp_path, tiny_vae, "model.backbone=uvit"), bf16=False) is None
    with pytest.raises(ConfigError, match="channels_last"):
        _cfg(tmp_path, tiny_vae, "channels_last=sometimes")


def test_mask_latents_encoded_once_match_the_per_step_encoding(tmp_path, tiny_vae):
    """The table of mask latents holds what the VAE gives each mask and its mirror image, and training
    from it gives the weights the per-step encoding gives (up to float rounding of batched convolutions)."""
    from jodiffusion.data.registry import build_split
    from jodiffusion.models.annotation_vae import AnnotationVAE
    from jodiffusion.models.image_codec import build_image_codec
    from jodiffusion.models.text_encoder import CaptionTextEncoder
    from jodiffusion.training.latent_cache_build import build_or_load_cache
    from jodiffusion.training.mask_latents import MaskLatentTable

    cfg = _cfg(tmp_path, tiny_vae)
    ds = build_split(cfg.data, "train", progress=False)
    captions = {ds.stem(i): f"caption {i}" for i in range(len(ds))}
    codec = build_image_codec({"kind": "pixel-unshuffle", "factor": 4})
    cache = build_or_load_cache(ds, captions, codec, CaptionTextEncoder.from_captions(list(captions.values())),
                                tmp_path / "c", resolution=cfg.data.size, progress=False)
    vae = AnnotationVAE.from_pretrained(tiny_vae).eval()
    table = MaskLatentTable.build(cache, vae, "cpu", batch_size=5, progress=False)
    assert len(table) == len(cache)
    with torch.no_grad():
        for i in (0, 3, len(cache) - 1):
            mask = cache.get(i)["mask"][None]
            assert torch.allclose(table.lookup(torch.tensor([i]), torch.tensor([False])), vae.encode(mask), atol=1e-5)
            assert torch.allclose(table.lookup(torch.tensor([i]), torch.tensor([True])), vae.encode(mask.flip(-1)),
                                  atol=1e-5)
    assert MaskLatentTable.build(cache, vae, "cpu", max_bytes=1, progress=False) is None  # too big: per step

    # the same run either way: the mask loss of every step agrees (a wrong latent would move it far more)
    common = ("train.steps=3", "train.log_every=1", "sample_count=0")
    losses = {}
    for name, extra in (("table", ()), ("step", ("cache_mask_latents=false",))):
        train_joint(_cfg(tmp_path / name, tiny_vae, *common, *extra), progress=False)
        rows = [json.loads(r) for r in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss_mask"] for r in rows if "loss_mask" in r]
    assert len(losses["table"]) == 3
    assert np.allclose(losses["table"], losses["step"], rtol=1e-4), losses


def test_self_conditioning_trains_exports_and_samples_with_its_own_estimate(tmp_path, tiny_vae):
    """A self-conditioning UNet gets twice the input channels; training feeds it its first pass's clean
    estimate for a share of batches (never with self_condition_prob=0), and the sampler feeds it the
    previous step's estimate: zeros at the first step, its own estimate after."""
    from jodiffusion.diffusion.objective import JointObjectiveConfig, joint_loss
    from jodiffusion.diffusion.schedule import NoiseScheduleConfig, training_scheduler

    common = ("model.backbone=unet", "model.arch.self_condition=true", "train.steps=2", "sample_count=0")
    export = train_joint(_cfg(tmp_path, tiny_vae, *common), progress=False).export
    pipe = JoDiffusionPipeline.from_pretrained(export)
    unet = pipe.denoiser
    assert unet.config.self_condition and unet.unet.config.in_channels == 2 * (unet.config.img_channels +
                                                                                 unet.config.mask_channels)
    calls = []
    original = unet.forward

    def spy(img, mask, t_img, t_mask, text, self_cond=None):
        calls.append(None if self_cond is None else float(self_cond[0].abs().sum() + self_cond[1].abs().sum()))
        return original(img, mask, t_img, t_mask, text, self_cond=self_cond)

    unet.forward = spy
    image, mask, _ = pipe(["a red circle"], seed=0).pairs()[0]
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32)
    assert calls[0] is None and all(c is not None and c > 0 for c in calls[1:]) and len(calls) > 2

    # training: a first pass without gradients, then the main pass with its estimate
    sched = training_scheduler(NoiseScheduleConfig(prediction_type="sample"))
    c = unet.config
    img, m = torch.randn(2, c.img_channels, c.latent_height, c.latent_width), torch.randn(
        2, c.mask_channels, c.latent_height, c.latent_width)
    text = torch.randn(2, c.num_text_tokens, c.text_dim)
    for prob, expected in ((1.0, [None, "estimate"]), (0.0, [None])):
        calls.clear()
        joint_loss(unet, sched, img, m, text, text[:1], JointObjectiveConfig(self_condition_prob=prob),
                   torch.Generator().manual_seed(0))
        assert [None if v is None else "estimate" for v in calls] == expected
    with pytest.raises(ValueError, match="self-conditioning"):
        other = train_joint(_cfg(tmp_path / "plain", tiny_vae, "model.backbone=unet", "train.steps=1",
                                 "sample_count=0"), progress=False).export
        plain = JoDiffusionPipeline.from_pretrained(other).denoiser
        plain(img, m, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), text,
              self_cond=(img, m))


def test_square_data_in_a_wide_frame_generates_its_padding_as_ignore(tmp_path, tiny_vae):
    """The shapes (square) letterboxed into 32x48: every training mask is ignore in the 8 columns at either
    side, so every generated mask is too (and the image black there, as the data has it); no class is
    drawn in the padding, however little the model learnt."""
    export = train_joint(_cfg(tmp_path, tiny_vae, "train.steps=2", "data.width=48", "data.resize=letterbox"),
                         progress=False).export
    meta = json.loads((export / "jodiffusion.json").read_text())
    assert meta["padding"] == {"top": 0, "bottom": 0, "left": 8, "right": 8}
    pipe = JoDiffusionPipeline.from_pretrained(export)
    ignore = pipe.classes.ignore_index
    pairs = pipe([f"a red circle {i}" for i in range(4)], seed=1, refine_tau=4)
    for image, mask, _ in pairs.pairs():
        assert mask.shape == (32, 48)
        assert (mask[:, :8] == ignore).all() and (mask[:, 40:] == ignore).all()
        assert (image[:, :8] == 0).all() and (image[:, 40:] == 0).all()
        assert (mask[:, 8:40] != ignore).mean() > 0.9  # the picture itself is labelled
    # without the record (a model folder of an earlier version) nothing is changed
    pipe.padding = None
    raw = pipe(["a red circle 0"], seed=1).masks[0]
    assert (raw[:, :8] != ignore).any()


def test_padding_bars_are_the_edges_ignore_in_every_mask_and_its_mirror():
    from jodiffusion.data.transforms import padding_bars

    always = np.zeros((6, 10), bool)
    always[:, :3] = always[:, 8:] = True   # 3 columns left, 2 right: a flip makes both 2
    always[0] = True                        # the top row
    always[4, 5] = True                     # one pixel inside: not a bar
    assert padding_bars(always) == (1, 0, 2, 2)
    assert padding_bars(np.ones((4, 4), bool)) == (0, 0, 0, 0)
    assert padding_bars(np.zeros((4, 4), bool)) == (0, 0, 0, 0)
