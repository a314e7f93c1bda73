"""Every output read back by the tools its users use: a run's config.yaml by `--config`, the WebDataset
shards by the `webdataset` package, the `export-mmseg` config by `mmengine.Config`."""

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_generate import generate, model_dir, reference  # noqa: F401 - the tiny model and its folder output

from jodiffusion.cli.common import config_from_args
from jodiffusion.cli.main import build_parser, main
from jodiffusion.config.loader import config_to_dict, load_config, save_run_config
from jodiffusion.data.readers.folder import read_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- a run's config.yaml, passed back with --config --------------------------------------------------

def _saved(run: Path) -> dict:
    data = yaml.safe_load((run / "config.yaml").read_text())
    assert "jodiffusion_version" in data
    return {k: v for k, v in data.items() if k != "jodiffusion_version"}


def _reloaded(command: str, schema, group: str, run: Path, *overrides: str):
    """The config the command builds from ``--config run/config.yaml`` (its default preset included)."""
    args = build_parser().parse_args([command, "--config", str(run / "config.yaml"), *overrides])
    return config_from_args(args, schema, group)


def _repeat(command: str, run: Path, again: Path) -> None:
    """Run ``command`` again from the run's own config.yaml; the new run writes the same config."""
    assert main([command, "--config", str(run / "config.yaml"), f"output_dir={again}"]) == 0
    assert {**_saved(again), "output_dir": str(run)} == _saved(run)


def test_train_vae_train_and_train_seg_runs_repeat_from_their_config_yaml(tmp_path):
    from jodiffusion.training.config import JointRunConfig, SegRunConfig, VAERunConfig

    vae = tmp_path / "vae"
    assert main(["train-vae", "--preset", "tiny", f"output_dir={vae}", "train.steps=2"]) == 0
    cfg = _reloaded("train-vae", VAERunConfig, "vae", vae)  # over the command's default preset (shapes)
    assert config_to_dict(cfg) == _saved(vae) and cfg.train.steps == 2 and cfg.data.resolution == 32
    _repeat("train-vae", vae, tmp_path / "vae-again")

    joint = tmp_path / "joint"
    assert main(["train", "--preset", "tiny", f"vae={vae / 'annotation_vae'}", f"output_dir={joint}",
                 "train.steps=2", "sample_count=0"]) == 0
    cfg = _reloaded("train", JointRunConfig, "joint", joint)  # over the default preset "small"
    assert config_to_dict(cfg) == _saved(joint) and cfg.model.preset == "tiny"
    _repeat("train", joint, tmp_path / "joint-again")

    seg = tmp_path / "seg"
    assert main(["train-seg", "--preset", "tiny", f"output_dir={seg}", "train.steps=2"]) == 0
    cfg = _reloaded("train-seg", SegRunConfig, "seg", seg)
    assert config_to_dict(cfg) == _saved(seg)
    _repeat("train-seg", seg, tmp_path / "seg-again")
    # overrides still apply on top of the run's config
    assert _reloaded("train-seg", SegRunConfig, "seg", seg, "train.steps=7").train.steps == 7


def test_a_config_of_another_version_loads_with_a_warning(tmp_path, caplog):
    from jodiffusion.training.config import VAERunConfig

    cfg = load_config(VAERunConfig, group="vae", preset="tiny")
    path = save_run_config(cfg, tmp_path)
    data = yaml.safe_load(path.read_text())
    assert load_config(VAERunConfig, files=[path]) == cfg
    path.write_text(yaml.safe_dump({**data, "jodiffusion_version": "0.0.1"}, sort_keys=False))
    with caplog.at_level(logging.WARNING):
        assert load_config(VAERunConfig, files=[path]) == cfg
    assert "written by jodiffusion 0.0.1" in caplog.text


# --- WebDataset shards, read by the webdataset package ------------------------------------------------

def test_webdataset_reads_the_shards_as_the_same_pairs_as_the_folder_output(model_dir, reference, tmp_path):  # noqa: F811
    import webdataset as wds

    out = tmp_path / "wds"
    generate(model_dir, out, 10, format="webdataset", shard_size=4)
    urls = [str(out / name) for name in (out / "shards.txt").read_text().split()]
    folder_out = reference[0]
    folder = read_folder(folder_out, "train")

    raw = list(wds.WebDataset(urls, shardshuffle=False))
    stems = [folder.stem(i) for i in range(len(folder))]
    assert [s["__key__"] for s in raw] == stems == [f"{i:08d}" for i in range(10)]
    for sample in raw:
        stem = sample["__key__"]
        assert set(sample) >= {"png", "mask.png", "json"}
        assert sample["png"] == (folder_out / "images" / "train" / f"{stem}.png").read_bytes()
        assert sample["mask.png"] == (folder_out / "masks" / "train" / f"{stem}.png").read_bytes()

    captions = {json.loads(line)["stem"]: json.loads(line)["caption"]
                for line in (folder_out / "captions.jsonl").read_text().splitlines()}
    # the mask is a palette PNG of class ids: decoded as it is (webdataset's "pil" decoder converts every
    # PNG to RGB, which gives the mask's colours, not its ids)
    def class_ids(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            assert im.mode == "P"
            return np.asarray(im)

    pipeline = (wds.WebDataset(urls, shardshuffle=False)
                .decode(wds.handle_extension("mask.png", class_ids), "rgb8")
                .to_tuple("__key__", "png", "mask.png", "json"))
    pairs = list(pipeline)
    assert len(pairs) == len(folder) == 10
    for i, (stem, image, mask, meta) in enumerate(pairs):
        expected = folder[i]
        assert stem == expected["stem"] and meta["stem"] == stem and meta["prompt"] == captions[stem]
        assert np.array_equal(image, expected["image"]) and np.array_equal(mask, expected["mask"])
    colours = next(iter(wds.WebDataset(urls, shardshuffle=False).decode("pil")))["mask.png"]
    assert colours.mode == "RGB"  # the rendering: palette colours, ignore drawn white


# --- the export-mmseg config, read by mmengine.Config ---------------------------------------------------

# Stand-ins for the three MMSegmentation base configs the export inherits (mmseg itself needs mmcv, a
# compiled package): the keys the export sets or merges into, with values of the same kind.
MMSEG_BASES = {
    "_base_/models/deeplabv3_r50-d8.py": """\
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                         bgr_to_rgb=True, pad_val=0, seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://resnet50_v1c',
    backbone=dict(type='ResNetV1c', depth=50, num_stages=4, norm_cfg=norm_cfg),
    decode_head=dict(type='ASPPHead', in_channels=2048, channels=512, num_classes=19, norm_cfg=norm_cfg),
    auxiliary_head=dict(type='FCNHead', in_channels=1024, channels=256, num_classes=19, norm_cfg=norm_cfg),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
""",
    "_base_/default_runtime.py": """\
default_scope = 'mmseg'
env_cfg = dict(cudnn_benchmark=True, dist_cfg=dict(backend='nccl'))
log_level = 'INFO'
load_from = None
resume = False
""",
    "_base_/schedules/schedule_40k.py": """\
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000))
""",
}


@pytest.fixture
def mmseg_base_dir(tmp_path):
    root = tmp_path / "mmseg_configs"
    for rel, text in MMSEG_BASES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def imported_dataset(tmp_path):
    """A JPEG dataset brought in by `jodiffusion import` (images copied as .jpg), train and val splits."""
    from jodiffusion.data.importer.folder import import_folder
    from jodiffusion.data.importer.options import ImportOptions

    src = tmp_path / "download"
    for i in range(6):
        rng = np.random.default_rng(i)
        (src / "images").mkdir(parents=True, exist_ok=True)
        (src / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(src / "images" / f"{i}.jpg")
        mask = np.zeros((16, 20), np.uint8)
        mask[3:10, 4 + i:12 + i] = 255
        Image.fromarray(mask).save(src / "masks" / f"{i}.png")
    out = tmp_path / "imported"
    import_folder(src, out, ImportOptions(names=("background", "object"), val_fraction=0.34), progress=False)
    return out


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _check_dataset_paths(dataset) -> int:
    root = Path(dataset.data_root)
    img_dir, mask_dir = root / dataset.data_prefix.img_path, root / dataset.data_prefix.seg_map_path
    assert root.is_absolute() and img_dir.is_dir() and mask_dir.is_dir()
    images = sorted(p for p in img_dir.iterdir() if p.is_file())
    assert images and all(p.name.endswith(dataset.img_suffix) for p in images)  # what BaseSegDataset lists
    for image in images:
        mask = mask_dir / (image.name[: -len(dataset.img_suffix)] + dataset.seg_map_suffix)
        assert mask.is_file(), mask
    return len(images)


def test_mmengine_loads_the_export_mmseg_config_and_every_path_exists(imported_dataset, mmseg_base_dir, tmp_path):
    Config = pytest.importorskip("mmengine.config", reason="mmengine: scripts/setup.sh installs it").Config

    out = tmp_path / "train_deeplab.py"
    assert main(["export-mmseg", str(imported_dataset), "--output-file", str(out), "--val-root", str(imported_dataset),
                 "--base-dir", str(mmseg_base_dir), "--crop", "16", "16", "--iters", "100"]) == 0
    cfg = Config.fromfile(str(out))
    classes = json.loads((imported_dataset / "classes.json").read_text())
    assert cfg.num_classes == 2 and cfg.model.decode_head.num_classes == 2 and cfg.model.auxiliary_head.num_classes == 2
    assert cfg.model.type == "EncoderDecoder" and cfg.model.backbone.type == "ResNetV1c"  # merged with the base
    assert cfg.model.backbone.norm_cfg.type == "BN" and cfg.model.decode_head.in_channels == 2048
    assert list(cfg.metainfo.classes) == classes["names"]
    assert [list(c) for c in cfg.metainfo.palette] == classes["palette"]
    assert cfg.train_cfg.max_iters == 100 and cfg.train_cfg.type == "IterBasedTrainLoop"
    assert cfg.default_hooks.checkpoint.interval == 10 and cfg.default_hooks.timer.type == "IterTimerHook"
    assert cfg.train_dataloader.dataset.img_suffix == ".jpg"  # import copied the JPEGs as they were
    counts = {name: _check_dataset_paths(getattr(cfg, name).dataset) for name in ("train_dataloader", "val_dataloader")}
    report = json.loads((imported_dataset / "import.json").read_text())
    assert counts == {"train_dataloader": report["splits"]["train"], "val_dataloader": report["splits"]["val"]}
    # every absolute path named anywhere in the config exists
    paths = [s for s in _strings(cfg.to_dict()) if s.startswith("/")]
    assert paths and all(Path(p).exists() for p in paths)
    assert cfg.test_dataloader.dataset.data_root == str(imported_dataset.resolve())


def test_mmengine_resolves_the_mmseg_scope_when_mmsegmentation_is_installed(imported_dataset, tmp_path):
    Config = pytest.importorskip("mmengine.config", reason="mmengine: scripts/setup.sh installs it").Config
    pytest.importorskip("mmseg", reason="mmsegmentation (needs the compiled mmcv) is not installed")
    out = tmp_path / "cfg.py"
    assert main(["export-mmseg", str(imported_dataset), "--output-file", str(out)]) == 0
    cfg = Config.fromfile(str(out))
    assert cfg.model.decode_head.num_classes == 2
