import json

import numpy as np
import pytest
import torch

from jodiffusion.cli.main import main
from jodiffusion.config.loader import load_config
from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.errors import JoDiffusionError
from jodiffusion.models.annotation_vae import AnnotationVAE
from jodiffusion.training.vae import VAERunConfig, train_vae


def _cfg(tmp_path, *overrides):
    return load_config(VAERunConfig, group="vae", preset="tiny",
                       overrides=[f"output_dir={tmp_path / 'run'}", *overrides])


def test_train_exports_model_with_measured_scale_and_eval(tmp_path):
    model_dir = train_vae(_cfg(tmp_path, "train.steps=6", "train.save_every=3"), progress=False)
    vae = AnnotationVAE.from_pretrained(model_dir)
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    # the stored scale factor is 1/std of the latents measured on the data, not a constant
    assert vae.config.scale_factor == pytest.approx(1.0 / report["latent_std"], rel=1e-6)
    assert vae.config.scale_factor != 1.0
    assert vae.config.num_classes == ShapesDataset().classes.num_classes and 0.0 <= report["miou"] <= 100.0
    assert set(report["iou"]) >= {"background"}
    assert (tmp_path / "run" / "config.yaml").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000003", "step_00000006"]


def test_existing_run_is_not_overwritten_without_asking(tmp_path):
    train_vae(_cfg(tmp_path), progress=False)
    with pytest.raises(JoDiffusionError, match="--resume latest"):
        train_vae(_cfg(tmp_path), progress=False)


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = train_vae(_cfg(tmp_path / "a", "train.steps=6", "latent_noise=0", "hflip=false"), progress=False)
    # "interrupted" after 3 steps: a run configured for 3 steps leaves a checkpoint at step 3
    train_vae(_cfg(tmp_path / "b", "train.steps=3", "latent_noise=0", "hflip=false"), progress=False)
    resumed = train_vae(_cfg(tmp_path / "b", "train.steps=6", "latent_noise=0", "hflip=false"),
                        resume="latest", progress=False)
    a, b = AnnotationVAE.from_pretrained(straight), AnnotationVAE.from_pretrained(resumed)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name


def test_learns_on_the_shapes_masks(tmp_path):
    cfg = _cfg(tmp_path, "train.steps=150", "train.lr=3e-3", "train.batch_size=8", "model.base_channels=16",
               "model.max_channels=32", "model.downsample=4", "latent_noise=0")
    train_vae(cfg, progress=False)
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert report["miou"] > 45, report  # chance level is about 11 (9 classes)
    last = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "loss" in r]
    assert last[-1]["loss"] < 0.5 * first


def test_cli_train_and_eval(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train-vae", "--preset", "tiny", f"output_dir={out}"]) == 0
    assert main(["eval-vae", str(out / "annotation_vae"), "--resolution", "32", "--json",
                 str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    assert "reconstruction mIoU (val)" in printed and "background" in printed
    assert json.loads((tmp_path / "e.json").read_text())["split"] == "val"
    assert main(["train-vae", "--preset", "tiny", "train.steps=-1"]) == 1
    assert "train.steps=-1 must be >= 1" in capsys.readouterr().err


def test_training_refuses_a_dataset_that_fails_validation(tmp_path):
    from jodiffusion.data.classes import ClassInfo
    from jodiffusion.data.layout import write_classes, write_pair
    from jodiffusion.errors import DatasetError

    root = tmp_path / "data"
    classes = ClassInfo(names=("background", "thing"))
    write_classes(root, classes)
    image = np.zeros((32, 32, 3), np.uint8)
    for split in ("train", "val"):
        write_pair(root, split, "good", image, np.zeros((32, 32), np.uint8), classes)
    write_pair(root, "train", "bad", image, np.full((32, 32), 7, np.uint8), classes)
    cfg = _cfg(tmp_path, "data.name=folder", f"data.root={root}")
    with pytest.raises(DatasetError, match="bad.png"):
        train_vae(cfg, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
