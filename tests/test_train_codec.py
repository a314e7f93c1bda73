"""The learned image codec stage (`train-codec`): it trains on the train images, exports a diffusers
AutoencoderKL folder that `codec.kind=sd-vae` loads with its measured scale, reconstructs better than at
initialisation, resumes like every stage, and the joint stage trains on it (tiny models, CPU, seconds)."""

import json

import numpy as np
import pytest
import torch

from jodiffusion.cli.main import main
from jodiffusion.config.loader import load_config
from jodiffusion.data.registry import build_split
from jodiffusion.data.transforms import ImageSet
from jodiffusion.errors import ConfigError
from jodiffusion.evaluation.scoring import reconstruction_error
from jodiffusion.models.image_codec import StableDiffusionVAECodec, build_image_codec
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline
from jodiffusion.training.codec import build_autoencoder, train_codec
from jodiffusion.training.config import CodecRunConfig, JointRunConfig, VAERunConfig
from jodiffusion.training.joint import train_joint
from jodiffusion.training.vae import train_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


def _cfg(tmp_path, *overrides):
    return load_config(CodecRunConfig, group="codec", preset="tiny",
                       overrides=[f"output_dir={tmp_path / 'run'}", *overrides])


@pytest.fixture(scope="module")
def tiny_codec(tmp_path_factory):
    out = tmp_path_factory.mktemp("codec")
    cfg = _cfg(out, "train.steps=40", "train.save_every=20")
    return cfg, train_codec(cfg, progress=False)


def test_export_loads_as_sd_vae_with_the_measured_scale(tiny_codec):
    cfg, result = tiny_codec
    model_dir = result.export
    run = model_dir.parent
    report = json.loads((run / "eval.json").read_text())
    assert (result.mae, result.psnr, result.parameters) == (report["mae"], report["psnr"], report["parameters"])
    assert {"mae", "psnr", "parameters", "latent_mean", "latent_std"} <= set(report)
    assert report["parameters"] > 0 and report["downsample"] == 8 and report["images"] == 8
    # what `train codec.kind=sd-vae codec.path=<folder>` builds, from the local folder (tests run offline)
    codec = build_image_codec({"kind": "sd-vae", "path": str(model_dir)})
    assert isinstance(codec, StableDiffusionVAECodec)
    assert (codec.downsample, codec.latent_channels) == (8, 4)
    assert codec.scaling_factor == pytest.approx(1 / report["latent_std"]) and codec.scaling_factor != 1.0
    assert codec.shift_factor == pytest.approx(report["latent_mean"]) and codec.shift_factor != 0.0
    # the factors normalise the train images' latents: mean 0, std 1 (measured on the same images)
    images = ImageSet(build_split(cfg.data, cfg.data.train_split), cfg.data.size, cfg.data.resize)
    picks = np.unique(np.linspace(0, len(images) - 1, cfg.scale_samples).round().astype(int))
    z = codec.encode(torch.stack([images[int(i)] for i in picks]), sample=False)
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(z.std(unbiased=False)) == pytest.approx(1.0, rel=1e-3)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000020", "step_00000040"]


def test_reconstructs_better_than_at_initialisation(tiny_codec):
    cfg, result = tiny_codec
    model_dir = result.export
    trained = json.loads((model_dir.parent / "eval.json").read_text())
    torch.manual_seed(cfg.train.seed)  # the weights the run started from (TrainingRun.start seeds, then builds)
    initial = build_autoencoder(cfg.model, max(cfg.data.size)).eval()
    val = ImageSet(build_split(cfg.data, cfg.data.val_split), cfg.data.size, cfg.data.resize)
    with torch.no_grad():
        before = reconstruction_error(lambda x: initial.decode(initial.encode(x).latent_dist.mean).sample, val, 8,
                                      "cpu")
    # 40 steps of a 67k-parameter model: from 51 to 38 grey levels (seed 0), well past noise
    assert trained["mae"] < 0.85 * before["mae"], (trained, before)
    assert trained["psnr"] > before["psnr"] + 1


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = train_codec(_cfg(tmp_path / "a", "train.steps=6"), progress=False).export
    train_codec(_cfg(tmp_path / "b", "train.steps=3"), progress=False)  # "interrupted" after 3 steps
    resumed = train_codec(_cfg(tmp_path / "b", "train.steps=6"), resume="latest", progress=False).export
    a, b = StableDiffusionVAECodec.from_pretrained(straight), StableDiffusionVAECodec.from_pretrained(resumed)
    for (name, p), q in zip(a.vae.state_dict().items(), b.vae.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name
    assert a.scaling_factor == pytest.approx(b.scaling_factor, rel=1e-4)


def test_cli_train_refuse_overwrite_and_eval(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train-codec", "--preset", "tiny", f"output_dir={out}"]) == 0
    assert "codec.kind=sd-vae" in capsys.readouterr().out
    assert main(["train-codec", "--preset", "tiny", f"output_dir={out}"]) == 1
    assert "--resume latest" in capsys.readouterr().err
    assert main(["train-codec", "--preset", "tiny", f"output_dir={out}", "--overwrite"]) == 0
    assert main(["eval-codec", str(out / "image_codec"), "--resolution", "32", "--num-images", "8",
                 "--json", str(tmp_path / "e.json")]) == 0
    assert "reconstruction error (val)" in capsys.readouterr().out
    saved = json.loads((tmp_path / "e.json").read_text())  # the run's own val images: the same error
    assert saved["split"] == "val" and saved["mae"] == pytest.approx(
        json.loads((out / "eval.json").read_text())["mae"], rel=1e-4)


def test_config_refuses_a_size_the_codec_cannot_downsample(tmp_path):
    with pytest.raises(ConfigError, match="not divisible by the codec's downsampling factor 16"):
        _cfg(tmp_path, "model.block_out_channels=[8,8,16,16,16]", "data.resolution=40")
    with pytest.raises(ConfigError, match="norm_num_groups"):
        _cfg(tmp_path, "model.norm_num_groups=3")


def test_the_joint_stage_trains_and_samples_with_the_learned_codec(tmp_path, tiny_codec):
    model_dir = tiny_codec[1].export
    vae = train_vae(load_config(VAERunConfig, group="vae", preset="tiny", overrides=[f"output_dir={tmp_path / 'vae'}"]),
                    progress=False).export
    jcfg = load_config(JointRunConfig, group="joint", preset="tiny",
                       overrides=[f"vae={vae}", f"output_dir={tmp_path / 'joint'}", "train.steps=2",
                                  "codec.kind=sd-vae", f"codec.path={model_dir}"])
    export = train_joint(jcfg, progress=False).export
    meta = json.loads((export / "jodiffusion.json").read_text())
    assert meta["codec"]["kind"] == "sd-vae" and meta["codec"]["path"] == str(model_dir.absolute())
    pipe = JoDiffusionPipeline.from_pretrained(export)
    image, mask, _ = pipe(["a red circle"], seed=0).pairs()[0]
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32)
