"""The pipeline's optional learned image codec stage (`codec.preset=...`): trained after the annotation
VAE, handed to the joint stage as codec.kind=sd-vae, its reconstruction in metrics.json, the summary and
the report; a codec whose grid is not the VAE's is refused before it trains (toy sizes, CPU)."""

import json

import pytest

from jodiffusion.errors import ConfigError
from jodiffusion.experiments.demo import run_demo
from jodiffusion.experiments.stages import MARKER

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def demo_with_codec(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-codec")
    metrics = run_demo(out, quick=True, progress=False, overrides=("codec.preset=tiny",))
    return out, metrics


def test_codec_stage_runs_after_the_vae_and_the_joint_model_uses_it(demo_with_codec, capsys):
    out, metrics = demo_with_codec
    assert list(metrics["stage_seconds"])[:4] == ["data", "vae", "codec", "seg-real"]
    assert (out / "codec" / MARKER).is_file() and (out / "codec" / "image_codec" / "config.json").is_file()
    evaluation = json.loads((out / "codec" / "eval.json").read_text())
    assert metrics["codec_reconstruction_mae"] == evaluation["mae"] > 0
    assert metrics["codec_reconstruction_psnr"] == evaluation["psnr"]
    assert metrics["codec_parameters"] == evaluation["parameters"] > 0
    joint = (out / "joint" / "config.yaml").read_text()
    assert "kind: sd-vae" in joint and f"path: {out / 'codec' / 'image_codec'}" in joint
    meta = json.loads((out / "joint" / "export" / "jodiffusion.json").read_text())
    assert meta["codec"]["kind"] == "sd-vae"
    assert json.loads((out / "report" / "metrics.json").read_text())["codec_reconstruction_mae"] == evaluation["mae"]
    # a rerun skips the codec stage like any other
    again = run_demo(out, quick=True, progress=False, overrides=("codec.preset=tiny",))
    assert "codec" in again["skipped_stages"] and again["codec_reconstruction_mae"] == evaluation["mae"]
    assert "image codec reconstruction error" in capsys.readouterr().out


def test_report_shows_the_reconstructions_and_the_error(demo_with_codec):
    out, metrics = demo_with_codec
    figure = out / "report" / "codec_reconstruction.png"
    assert figure.stat().st_size > 0
    page = (out / "report" / "index.html").read_text()
    assert 'src="codec_reconstruction.png"' in page
    assert "Image codec: reconstruction error" in page and f"{metrics['codec_reconstruction_mae']:.4g}" in page


def test_without_a_codec_stage_the_joint_preset_keeps_its_codec(tmp_path):
    from jodiffusion.config.loader import load_config
    from jodiffusion.experiments.config import PipelineConfig

    for preset in ("demo", "shapes-cpu", "camvid-cpu", "demo-quick"):
        assert load_config(PipelineConfig, group="pipeline", preset=preset, overrides=["data.root=/x"]).codec is None
    cfg = load_config(PipelineConfig, group="pipeline", preset="demo",
                      overrides=["data.root=/x", "codec.preset=shapes"])
    assert cfg.codec.preset == "shapes" and cfg.codec.overrides == []


def test_a_codec_on_another_grid_than_the_vae_is_refused_before_training(tmp_path):
    out = tmp_path / "demo"
    with pytest.raises(ConfigError, match="share one grid"):
        run_demo(out, quick=True, progress=False,
                 overrides=("codec.preset=tiny", "codec.overrides=['model.block_out_channels=[8,16,16]']"))
    assert not (out / "codec" / "image_codec").exists() and not (out / "codec" / "checkpoints").exists()
