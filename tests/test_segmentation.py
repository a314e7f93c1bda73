import ast
import json

import numpy as np
import pytest
import torch
import torchvision

from jodiffusion.cli.main import main
from jodiffusion.config.loader import load_config
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.layout import write_classes, write_pair
from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.data.shapes_folder import write_shapes_dataset
from jodiffusion.data.shapes_scene import SHAPES_CLASSES
from jodiffusion.errors import CheckpointError, ConfigError, DatasetError
from jodiffusion.segmentation.data import MixedBatchSampler, TrainPairs
from jodiffusion.segmentation.inference import predict, predict_proba
from jodiffusion.segmentation.mmseg_export import write_mmseg_config
from jodiffusion.segmentation.models import SEGMENTERS, build_segmenter, load_segmenter
from jodiffusion.training.config import SegRunConfig
from jodiffusion.training.segmenter import batch_split, train_segmenter


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    """A 'generated' set in the generic layout: shapes with another seed, 32 px."""
    root = tmp_path_factory.mktemp("synthetic") / "shapes"
    return write_shapes_dataset(root, num_train=12, num_val=4, resolution=32, seed=7, progress=False)


@pytest.fixture(scope="module")
def resnet50_state():
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).state_dict()


def _cfg(tmp_path, *overrides, name="run"):
    return load_config(SegRunConfig, group="seg", preset="tiny",
                       overrides=[f"output_dir={tmp_path / name}", *overrides])


def _report(tmp_path, name="run"):
    return json.loads((tmp_path / name / "eval.json").read_text())


# --- models -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SEGMENTERS))
def test_every_segmenter_gives_logits_at_the_input_resolution(name):
    model, info = build_segmenter(name, num_classes=5)
    assert info == "random initialisation"
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 5, 64, 64)
        if name == "small":  # any size: padded inside, cropped back
            assert model(torch.rand(2, 3, 40, 56)).shape == (2, 5, 40, 56)


def test_unknown_segmenter_lists_the_valid_names():
    with pytest.raises(KeyError, match="deeplabv3_resnet50"):
        build_segmenter("unet9000", 3)
    with pytest.raises(ConfigError, match="model='unet9000'"):
        load_config(SegRunConfig, overrides=["model=unet9000"])


def test_deeplab_aux_head_only_when_asked():
    model, _ = build_segmenter("deeplabv3_resnet50", 4, aux_loss=True)
    model.eval()
    with torch.no_grad():
        logits, aux = model(torch.rand(1, 3, 48, 48), with_aux=True)
    assert logits.shape == aux.shape == (1, 4, 48, 48)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_backbone_weights_come_from_a_local_file(tmp_path, resnet50_state, suffix):
    path = tmp_path / f"resnet50{suffix}"
    if suffix == ".pth":
        torch.save(resnet50_state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in resnet50_state.items()}, str(path))
    model, info = build_segmenter("deeplabv3_resnet50", 5, backbone_weights=path)
    assert info.startswith(f"backbone from {path}") and "fc.weight" in info  # the ImageNet head is ignored
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, resnet50_state["layer4.2.conv3.weight"])
    torch.testing.assert_close(model.backbone.bn1.running_var, resnet50_state["bn1.running_var"])


def test_backbone_file_that_does_not_match_is_refused(tmp_path):
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    with pytest.raises(CheckpointError, match="does not match the backbone"):
        build_segmenter("deeplabv3_resnet50", 5, backbone_weights=resnet18)
    with pytest.raises(CheckpointError, match="not found"):
        build_segmenter("deeplabv3_resnet50", 5, backbone_weights=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_segmenter("deeplabv3_resnet50", 5, backbone_weights=garbage)
    with pytest.raises(ConfigError, match="no pretrained backbone"):
        build_segmenter("small", 5, backbone_weights=resnet18)


# --- batches ----------------------------------------------------------------------------------------

def test_mixed_batches_hold_the_requested_share_of_each_source():
    sampler = MixedBatchSampler(sizes=[10, 7], per_batch=[3, 1], seed=0)
    assert len(sampler) == 7  # the synthetic source needs 7 batches for one pass
    batches = list(sampler)
    for batch in batches:
        assert sum(i < 10 for i, _ in batch) == 3 and sum(i >= 10 for i, _ in batch) == 1
    assert sorted(i for b in batches for i, _ in b if i >= 10) == list(range(10, 17))  # a full pass
    assert list(sampler) == batches  # same epoch, same batches (what resuming relies on)
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_two_phase_batches_are_all_synthetic_until_the_switch_then_all_real():
    sampler = MixedBatchSampler(sizes=[10, 7], per_batch=[0, 4], seed=3, switch_at=5, per_batch_after=[4, 0])
    batches = [sampler.batch(n) for n in range(12)]
    assert all(len(b) == 4 for b in batches)
    assert all(i >= 10 for b in batches[:5] for i, _ in b)  # synthetic source (offset by the 10 real ones)
    assert all(i < 10 for b in batches[5:] for i, _ in b)
    # each source's stream is read without gaps: the synthetic phase covers passes over all 7 pairs, the real
    # phase starts at the beginning of the real stream
    first_pass = [i for b in batches[:5] for i, _ in b][:7]
    assert sorted(first_pass) == list(range(10, 17))
    assert sorted([i for b in batches[5:8] for i, _ in b][:10]) == list(range(10))
    # resumable: a new sampler (as after a restart) gives the same batches, through set_epoch as the loop does
    again = MixedBatchSampler(sizes=[10, 7], per_batch=[0, 4], seed=3, switch_at=5, per_batch_after=[4, 0])
    again.set_epoch(1)
    assert list(again) == batches[len(again):2 * len(again)]
    with pytest.raises(ValueError, match="go together"):
        MixedBatchSampler(sizes=[10, 7], per_batch=[0, 4], switch_at=5)
    with pytest.raises(ValueError, match="same batch size"):
        MixedBatchSampler(sizes=[10, 7], per_batch=[0, 4], switch_at=5, per_batch_after=[3, 0])


def test_training_batches_draw_real_and_synthetic_in_the_configured_ratio(synthetic_dir):
    from jodiffusion.data.readers.folder import read_folder

    cfg = load_config(SegRunConfig, group="seg", preset="tiny", overrides=[
        f"synthetic={synthetic_dir}", "mix=real+synthetic", "synthetic_ratio=0.25", "train.batch_size=8"])
    n_real, n_syn = batch_split(cfg)
    assert (n_real, n_syn) == (6, 2)
    real, synthetic = ShapesDataset("train", 32, 32), read_folder(synthetic_dir, "train")
    pairs = TrainPairs([(real, False), (synthetic, True)], (32, 32), (24, 24), (0.75, 1.25), True)
    loader = torch.utils.data.DataLoader(pairs, batch_sampler=MixedBatchSampler([32, 12], [n_real, n_syn]))
    flags = torch.stack([batch["synthetic"] for _, batch in zip(range(5), loader, strict=False)])
    assert flags.shape == (5, 8) and flags.sum().item() == 5 * 2
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 24, 24) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (8, 24, 24)
    with pytest.raises(ConfigError, match="at least one of each"):
        batch_split(load_config(SegRunConfig, overrides=[f"synthetic={synthetic_dir}", "mix=real+synthetic",
                                                         "synthetic_ratio=0.1", "train.batch_size=4"]))
    with pytest.raises(ConfigError, match="needs synthetic"):
        load_config(SegRunConfig, overrides=["mix=synthetic"])


# --- training ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["tiny", "shapes", "camvid"])
def test_presets_load(preset):
    from jodiffusion.config.loader import list_presets

    assert preset in list_presets("seg")
    cfg = load_config(SegRunConfig, group="seg", preset=preset, overrides=["data.root=/data/somewhere"])
    assert cfg.model in SEGMENTERS and cfg.mix == "real"



def test_train_on_real_exports_a_segmenter_and_its_scores(tmp_path):
    result = train_segmenter(_cfg(tmp_path, "train.steps=4", "train.save_every=2"), progress=False)
    model_dir = result.export
    report = _report(tmp_path)
    assert (result.miou, result.per_class, result.synthetic_ratio) == (report["miou"], report["iou"], 0.0)
    assert report["mix"] == "real" and report["split"] == "val" and 0.0 <= report["miou"] <= 100.0
    assert report["num_real_train"] == 32 and report["num_synthetic_train"] == 0
    assert report["samples_seen"] == {"real": 16, "synthetic": 0}
    assert report["backbone"] == "random initialisation" and report["backbone_loaded"] is False
    assert set(report["iou"]) == set(SHAPES_CLASSES.names)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]

    model, config = load_segmenter(model_dir)
    assert config.class_names == list(SHAPES_CLASSES.names) and config.model == "small"
    assert (config.input_height, config.input_width) == (32, 32)
    images = np.stack([ShapesDataset("val", 2, 48).load_image(i) for i in range(2)])  # another size
    ids = predict(model_dir, images)
    assert ids.shape == (2, 48, 48) and ids.dtype == np.int64 and ids.max() < 9
    probs = predict_proba(model, torch.from_numpy(images), input_size=config.input_size)
    assert probs.shape == (2, 9, 48, 48)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 48, 48))
    assert np.array_equal(probs.argmax(1).numpy(), ids)


def test_train_on_synthetic_only_and_on_real_plus_synthetic(tmp_path, synthetic_dir):
    train_segmenter(_cfg(tmp_path, f"synthetic={synthetic_dir}", "mix=synthetic", name="syn"), progress=False)
    report = _report(tmp_path, "syn")
    assert report["mix"] == "synthetic" and report["num_real_train"] == 0 and report["num_synthetic_train"] == 12
    assert report["samples_seen"] == {"real": 0, "synthetic": 16}
    assert report["pixels"] == 8 * 32 * 32  # always scored on the REAL val split

    train_segmenter(_cfg(tmp_path, f"synthetic={synthetic_dir}", "mix=real+synthetic", "synthetic_ratio=0.25",
                         name="mix"), progress=False)
    report = _report(tmp_path, "mix")
    assert report["num_real_train"] == 32 and report["num_synthetic_train"] == 12
    assert report["per_batch"] == {"real": 3, "synthetic": 1}
    assert report["samples_seen"] == {"real": 12, "synthetic": 4} and report["synthetic_ratio"] == 0.25


def test_two_phase_schedule_trains_on_synthetic_first_then_real_with_one_lr_schedule(tmp_path, synthetic_dir):
    cfg = _cfg(tmp_path, f"synthetic={synthetic_dir}", "mix=synthetic-then-real", "synthetic_phase=0.25",
               "train.steps=8", "train.log_every=1", "train.lr_schedule=cosine", name="two")
    train_segmenter(cfg, progress=False)
    report = _report(tmp_path, "two")
    assert report["mix"] == "synthetic-then-real" and report["synthetic_phase_steps"] == 2
    assert report["samples_seen"] == {"real": 6 * 4, "synthetic": 2 * 4} and report["synthetic_ratio"] == 0.25
    log = [json.loads(r) for r in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in log if "synthetic_share" in r]
    assert [r["synthetic_share"] for r in steps] == [1.0, 1.0] + [0.0] * 6
    # continued, not restarted: the learning rate only falls across the switch
    lrs = [r["lr"] for r in steps]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[2] < lrs[0]
    with pytest.raises(ConfigError, match="synthetic_phase"):
        _cfg(tmp_path, f"synthetic={synthetic_dir}", "mix=synthetic-then-real", "synthetic_phase=1.0")
    with pytest.raises(ConfigError, match="needs synthetic"):
        _cfg(tmp_path, "mix=synthetic-then-real")


def test_synthetic_classes_must_match_the_real_dataset(tmp_path):
    root = tmp_path / "other"
    classes = ClassInfo(names=("background", "thing"))
    write_classes(root, classes)
    write_pair(root, "train", "a", np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8), classes)
    with pytest.raises(DatasetError, match="class names of the synthetic set"):
        train_segmenter(_cfg(tmp_path, f"synthetic={root}", "mix=synthetic"), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(tmp_path, synthetic_dir):
    common = [f"synthetic={synthetic_dir}", "mix=real+synthetic"]
    straight = train_segmenter(_cfg(tmp_path, *common, "train.steps=6", name="a"), progress=False).export
    train_segmenter(_cfg(tmp_path, *common, "train.steps=3", name="b"), progress=False)
    with pytest.raises(Exception, match="--resume latest"):
        train_segmenter(_cfg(tmp_path, *common, "train.steps=6", name="b"), progress=False)
    resumed = train_segmenter(_cfg(tmp_path, *common, "train.steps=6", name="b"), resume="latest",
                              progress=False).export
    a, _ = load_segmenter(straight)
    b, _ = load_segmenter(resumed)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name
    assert _report(tmp_path, "b")["samples_seen"] == _report(tmp_path, "a")["samples_seen"] == {"real": 12,
                                                                                               "synthetic": 12}


@pytest.mark.slow
def test_two_processes_share_the_mixed_batches(tmp_path, synthetic_dir):
    """Two CPU processes (gloo): each takes its own batches of the mixed stream, across an epoch end."""
    import os
    import subprocess
    import sys

    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "jodiffusion.cli.main",
           "train-seg", "--preset", "tiny", "train.steps=10", "train.save_every=0", f"synthetic={synthetic_dir}",
           "mix=real+synthetic", f"output_dir={out}"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    # 10 steps x 2 processes x (2 real + 2 synthetic); every val pixel counted exactly once
    assert report["samples_seen"] == {"real": 40, "synthetic": 40} and report["pixels"] == 8 * 32 * 32


def test_cli_train_and_eval(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train-seg", "--preset", "tiny", f"output_dir={out}"]) == 0
    assert main(["eval-seg", str(out / "segmenter"), "--resolution", "32", "--num-images", "8",
                 "--json", str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    assert "mIoU (shapes val)" in printed and "hexagon" in printed
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["split"] == "val" and saved["miou"] == pytest.approx(_report(tmp_path, "cli")["miou"])
    assert main(["train-seg", "--preset", "tiny", "mix=synthetic"]) == 1
    assert "needs synthetic" in capsys.readouterr().err


@pytest.mark.slow
def test_small_segmenter_learns_the_shapes(tmp_path):
    # the shapes preset shortened to 800 steps: about 35 s on 2 free CPU cores
    cfg = _cfg(tmp_path, "data.resolution=64", "data.num_train=512", "data.num_val=64", "train.steps=800",
               "train.batch_size=8", "train.lr=6e-3", "train.lr_schedule=cosine", "train.warmup_steps=50",
               "train.log_every=50", "min_scale=1", "max_scale=1")
    train_segmenter(cfg, progress=False)
    report = _report(tmp_path)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.3 * losses[0]
    # predicting background everywhere scores about 11; most shapes must be told apart too
    assert report["miou"] > 30, report
    assert sum(v > 10 for k, v in report["iou"].items() if k != "background") >= 6, report


# --- MMSegmentation ---------------------------------------------------------------------------------

def test_mmseg_config_points_at_the_dataset(tmp_path, synthetic_dir):
    real = write_shapes_dataset(tmp_path / "real", num_train=2, num_val=2, resolution=32, progress=False)
    out = write_mmseg_config(synthetic_dir, tmp_path / "cfg.py", val_root=real, crop=(256, 256))
    text = out.read_text()
    ast.parse(text)
    ns: dict = {}
    exec(compile(text, str(out), "exec"), ns)  # plain literals and dict() calls: no mmseg needed
    assert ns["_base_"][0] == "mmseg::_base_/models/deeplabv3_r50-d8.py"
    assert ns["num_classes"] == 9 and ns["model"]["decode_head"]["num_classes"] == 9
    assert ns["model"]["auxiliary_head"]["num_classes"] == 9
    assert ns["metainfo"]["classes"] == SHAPES_CLASSES.names and len(ns["metainfo"]["palette"]) == 9
    train = ns["train_dataloader"]["dataset"]
    assert train["type"] == "BaseSegDataset" and train["data_root"] == str(synthetic_dir.resolve())
    assert train["data_prefix"] == {"img_path": "images/train", "seg_map_path": "masks/train"}
    assert train["reduce_zero_label"] is False and train["ignore_index"] == 255 and train["img_suffix"] == ".png"
    assert ns["val_dataloader"]["dataset"]["data_root"] == str(real.resolve())
    assert ns["crop_size"] == (256, 256)

    bare = tmp_path / "bare"
    write_classes(bare, SHAPES_CLASSES)
    write_pair(bare, "train", "a", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), SHAPES_CLASSES)
    ns = {}
    exec(write_mmseg_config(bare, tmp_path / "bare.py", model="deeplabv3_r101").read_text(), ns)
    assert ns["val_dataloader"] is None and ns["model"]["backbone"]["depth"] == 101
    with pytest.raises(DatasetError, match="generic layout"):
        write_mmseg_config(tmp_path / "nowhere", tmp_path / "x.py")


def test_cli_export_mmseg(tmp_path, synthetic_dir, capsys):
    out = tmp_path / "train_deeplab.py"
    assert main(["export-mmseg", str(synthetic_dir), "--output-file", str(out), "--crop", "128", "96",
                 "--iters", "500"]) == 0
    assert "written to" in capsys.readouterr().out
    text = out.read_text()
    ast.parse(text)
    assert "crop_size = (128, 96)" in text and "max_iters = 500" in text and str(synthetic_dir.resolve()) in text


def test_dihedral_augmentation_keeps_image_and_mask_together_and_reaches_all_eight_views():
    """Every augmented pair is one of the eight symmetries of the square applied to image and mask alike;
    without ``dihedral`` only the identity and the horizontal flip occur; a non-square frame never turns."""
    from jodiffusion.segmentation.data import augment_pair

    rng = np.random.default_rng(0)
    mask = rng.integers(0, 5, (6, 6)).astype(np.uint8)
    image = np.stack([mask * 10, mask * 20, mask * 30], -1).astype(np.uint8)
    views = {}
    for k in range(4):
        for flip in (False, True):
            m = np.rot90(mask, k)
            views[(np.fliplr(m) if flip else m).tobytes()] = (k, flip)
    seen, seen_plain = set(), set()
    for seed in range(200):
        img, m = augment_pair(image, mask, (6, 6), (1.0, 1.0), True, 255, np.random.default_rng(seed), dihedral=True)
        assert m.tobytes() in views and np.array_equal(img[..., 0], m * 10)  # image and mask moved together
        seen.add(views[m.tobytes()])
        plain = augment_pair(image, mask, (6, 6), (1.0, 1.0), True, 255, np.random.default_rng(seed))[1]
        seen_plain.add(views[plain.tobytes()])
    assert len(seen) == 8 and seen_plain == {(0, False), (0, True)}
    wide = np.zeros((4, 6), np.uint8)
    wide[0, 0] = 1
    for seed in range(40):
        out = augment_pair(np.zeros((4, 6, 3), np.uint8), wide, (4, 6), (1.0, 1.0), True, 255,
                           np.random.default_rng(seed), dihedral=True)[1]
        assert out.shape == (4, 6) and out[[0, 0, 3, 3], [0, 5, 0, 5]].sum() == 1  # a corner stays a corner
