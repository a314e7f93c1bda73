import ast
from pathlib import Path

import pytest
import yaml

from jodiffusion.config.loader import config_from_dict, config_to_dict, list_presets, load_config, save_run_config
from jodiffusion.data.config import DataConfig
from jodiffusion.diffusion.sampling import SamplerConfig
from jodiffusion.engine.config import TrainConfig
from jodiffusion.errors import ConfigError
from jodiffusion.experiments.config import PipelineConfig
from jodiffusion.training.config import VAERunConfig


def test_preset_file_and_overrides_merge_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {steps: 7, lr: 0.5}\ncrop_size: 16\n")
    cfg = load_config(VAERunConfig, group="vae", preset="tiny", files=[f], overrides=["train.steps=9"])
    assert cfg.train.steps == 9          # override beats file
    assert cfg.train.lr == 0.5           # file beats preset
    assert cfg.data.resolution == 32     # preset beats defaults
    assert cfg.crop_size == 16


@pytest.mark.parametrize("override,message", [
    ("train.stepz=3", "unknown config key 'train.stepz'"),
    ("train.steps=abc", "train.steps"),
    ("train.steps=0", "train.steps=0 must be >= 1"),
    ("data.name=pascal", "data.name='pascal' is not a known dataset"),
    ("model.downsample=3", "power of two"),
    ("train.mixed_precision=fp8", "mixed_precision"),
    ("train.lr_schedule=linear", "lr_schedule"),
    ("noequals", "key.sub=value"),
])
def test_bad_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(VAERunConfig, group="vae", preset="tiny", overrides=[override])


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="available presets: .*tiny"):
        load_config(VAERunConfig, group="vae", preset="nope")
    assert {"tiny", "shapes", "camvid"} <= set(list_presets("vae"))


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(VAERunConfig, files=[f])
    with pytest.raises(ConfigError, match="not found"):
        load_config(VAERunConfig, files=[tmp_path / "missing.yaml"])


def test_resolved_config_is_saved_with_version_and_reloads(tmp_path):
    cfg = load_config(VAERunConfig, group="vae", preset="tiny")
    path = save_run_config(cfg, tmp_path)
    data = yaml.safe_load(path.read_text())
    assert "jodiffusion_version" in data and data["train"]["steps"] == cfg.train.steps
    data.pop("jodiffusion_version")
    assert config_from_dict(VAERunConfig, data) == cfg
    assert config_to_dict(cfg)["model"]["base_channels"] == 8


@pytest.mark.parametrize("override,key", [
    ("train.lr=inf", "train.lr"), ("train.lr=nan", "train.lr"), ("train.weight_decay=inf", "train.weight_decay"),
    ("train.weight_decay=nan", "train.weight_decay"), ("train.grad_clip=inf", "train.grad_clip"),
    ("latent_noise=inf", "latent_noise"), ("latent_noise=nan", "latent_noise"),
])
def test_non_finite_numbers_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}=(inf|nan).*not a finite number"):
        load_config(VAERunConfig, group="vae", preset="tiny", overrides=[override])


def test_non_finite_numbers_are_refused_for_every_stage_and_in_python():
    from jodiffusion.engine.config import TrainConfig
    from jodiffusion.training.config import SegRunConfig

    with pytest.raises(ConfigError, match="max_scale=inf"):
        load_config(SegRunConfig, group="seg", preset="tiny", overrides=["max_scale=inf"])
    for field in ("lr", "weight_decay", "grad_clip"):
        with pytest.raises(ValueError, match=f"train.{field}=inf is not a finite number"):
            TrainConfig(**{field: float("inf")})


def test_a_registered_dataset_is_reachable_from_a_config(tmp_path):
    """data.name accepts whatever the registry holds (no second list of names)."""
    from jodiffusion.data.config import DataConfig
    from jodiffusion.data.registry import DATASETS, build_dataset, dataset_names
    from jodiffusion.data.shapes import ShapesDataset
    from jodiffusion.training.config import VAERunConfig

    with pytest.raises(ConfigError, match=r"not a known dataset.*DATASETS\.register"):
        load_config(VAERunConfig, overrides=["data.name=my-shapes"])
    DATASETS.register("my-shapes", lambda cfg, split: ShapesDataset(split, 4, cfg.resolution), needs_root=False)
    try:
        assert "my-shapes" in dataset_names()
        cfg = load_config(VAERunConfig, overrides=["data.name=my-shapes", "data.resolution=32"])
        assert len(build_dataset(cfg.data, "train")) == 4
        DATASETS.register("needs-a-folder", lambda cfg, split: None)
        with pytest.raises(ValueError, match="data.root is required"):
            DataConfig(name="needs-a-folder")
    finally:
        DATASETS.unregister("my-shapes")
        DATASETS.unregister("needs-a-folder")


def test_presets_lists_every_stage_preset_with_what_it_changes(capsys):
    """Every preset of a stage in one listing, with the settings it changes."""
    from jodiffusion.cli.main import main

    assert main(["presets", "--models"]) == 0
    out = capsys.readouterr().out
    for group in ("vae", "codec", "joint", "seg", "generate", "pipeline"):
        for name in list_presets(group):
            assert f"\n  {name}\n" in out.split(f"== {group} ")[1].split("\n== ")[0], (group, name)
    joint = out.split("== joint ")[1].split("\n== ")[0]
    camvid = joint.split("\n  camvid\n")[1].split("\n  camvid-cpu\n")[0]
    assert "model.arch.width = 512" in camvid and "data.name = camvid" in camvid
    assert "train.lr = 0.0004" in camvid and "train.seed" not in camvid  # only what differs from the defaults
    assert "unet/small: block_channels=[32, 64, 128]" in out
    generate = out.split("== generate ")[1].split("\n== ")[0]
    assert "batch_size = 32" in generate and "out = " not in generate  # the placeholders it needs are not listed


def _config_classes_raising_value_error() -> list[str]:
    found = []
    for path in sorted((Path(__file__).resolve().parents[1] / "src" / "jodiffusion").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and node.name != "ConfigError":
                for inner in ast.walk(node):
                    if (isinstance(inner, ast.Raise) and isinstance(inner.exc, ast.Call)
                            and getattr(inner.exc.func, "id", None) == "ValueError"):
                        found.append(f"{path.name}:{inner.lineno} {node.name}")
    return found


def test_config_classes_raise_one_error_type():
    # a bad value in any config class is a ConfigError (printed in one line by the CLI), never a bare ValueError
    assert _config_classes_raising_value_error() == []


@pytest.mark.parametrize("build", [
    lambda: SamplerConfig(steps=0),
    lambda: DataConfig(num_train=0),
    lambda: PipelineConfig(eval_pairs=0),
    lambda: TrainConfig(batch_size=0),
])
def test_a_bad_value_is_a_config_error_and_still_a_value_error(build):
    with pytest.raises(ConfigError):
        build()
    with pytest.raises(ValueError):  # callers that caught ValueError before keep working
        build()
