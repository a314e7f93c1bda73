"""A saved segmenter folder (``config.json`` + ``model.safetensors``), written and read through
``PretrainedMixin``: the format the earlier hand-written save wrote, byte for byte, and every folder it
wrote still loads."""

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file, save_file

from jodiffusion import __version__
from jodiffusion.errors import CheckpointError
from jodiffusion.models.annotation_vae import AnnotationVAE, AnnotationVAEConfig
from jodiffusion.segmentation.models import (
    DeepLabV3,
    Segmenter,
    SegmenterConfig,
    SmallContextNet,
    build_segmenter,
    load_segmenter,
    save_segmenter,
)

CONFIG = SegmenterConfig(model="small", num_classes=3, class_names=["background", "cat", "dog"], ignore_index=255,
                         input_height=32, input_width=48, aux_loss=False, backbone="random initialisation")


def _trained_small(seed: int = 0) -> SmallContextNet:
    torch.manual_seed(seed)
    model, _ = build_segmenter("small", 3)
    for p in model.parameters():  # not the initialisation, so loading is seen to copy every tensor
        p.data.add_(torch.randn_like(p))
    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            buf.uniform_(0.5, 2.0)
    return model


def _write_as_before(model: torch.nn.Module, config: SegmenterConfig, folder, with_class: bool = True):
    """A segmenter folder as the code before PretrainedMixin wrote it: the weights, then a config.json of
    the class, the package version and the config's fields, in that order."""
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    head = {"class": "Segmenter"} if with_class else {}
    (folder / "config.json").write_text(json.dumps({**head, "jodiffusion_version": "0.0.9", **asdict(config)},
                                                   indent=2))
    return folder


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)


@pytest.mark.parametrize("with_class", [True, False])
def test_a_folder_written_by_the_earlier_code_still_loads(tmp_path, with_class):
    model = _trained_small()
    folder = _write_as_before(model, CONFIG, tmp_path / "old", with_class)
    loaded, config = load_segmenter(folder)
    assert config == CONFIG and loaded.config == CONFIG and config.input_size == (32, 48)
    assert isinstance(loaded, SmallContextNet) and not loaded.training
    _assert_same_weights(loaded, model)
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_save_writes_the_same_files_and_keys_as_before(tmp_path):
    model = _trained_small(1)
    folder = save_segmenter(model, CONFIG, tmp_path / "new")
    assert folder == tmp_path / "new" and sorted(p.name for p in folder.iterdir()) == ["config.json",
                                                                                      "model.safetensors"]
    written = json.loads((folder / "config.json").read_text())
    assert list(written) == ["class", "jodiffusion_version", *asdict(CONFIG)]
    assert written == {"class": "Segmenter", "jodiffusion_version": __version__, **asdict(CONFIG)}
    weights = load_file(str(folder / "model.safetensors"))
    assert weights.keys() == model.state_dict().keys()  # the network's own keys: no wrapper prefix
    loaded, config = load_segmenter(folder)
    assert config == CONFIG
    _assert_same_weights(loaded, model)


def test_the_deeplab_family_member_is_rebuilt_from_the_config(tmp_path):
    model, _ = build_segmenter("deeplabv3_resnet50", 4, aux_loss=True)
    config = SegmenterConfig(model="deeplabv3_resnet50", num_classes=4, aux_loss=True)
    loaded, _ = load_segmenter(save_segmenter(model, config, tmp_path / "dl"))
    assert isinstance(loaded, DeepLabV3) and loaded.depth == 50 and loaded.net.aux_classifier is not None
    assert load_file(str(tmp_path / "dl" / "model.safetensors")).keys() == model.state_dict().keys()


def test_a_fresh_segmenter_describes_itself_and_saves_with_save_pretrained(tmp_path):
    model, info = build_segmenter("small", 5)
    assert isinstance(model, Segmenter) and model.config == SegmenterConfig(model="small", num_classes=5,
                                                                            backbone=info)
    model.save_pretrained(tmp_path / "s")
    loaded = Segmenter.from_pretrained(tmp_path / "s")
    assert loaded.config.num_classes == 5 and isinstance(loaded, SmallContextNet)


def test_broken_segmenter_folders_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"config.json not found: a Segmenter folder .*jodiffusion train-seg"):
        load_segmenter(tmp_path / "missing")
    AnnotationVAE(AnnotationVAEConfig(num_classes=3)).save_pretrained(tmp_path / "vae")
    with pytest.raises(CheckpointError, match="describes a AnnotationVAE, not a Segmenter"):
        load_segmenter(tmp_path / "vae")
    unknown = _write_as_before(_trained_small(), SegmenterConfig(model="unet9000", num_classes=3), tmp_path / "u")
    with pytest.raises(CheckpointError, match="invalid Segmenter config: .*unknown segmenter 'unet9000'"):
        load_segmenter(unknown)
    few = _write_as_before(_trained_small(), SegmenterConfig(model="small", num_classes=1), tmp_path / "k")
    with pytest.raises(CheckpointError, match="invalid Segmenter config: .*at least 2 classes"):
        load_segmenter(few)
    extra = _write_as_before(_trained_small(), CONFIG, tmp_path / "x")
    data = json.loads((extra / "config.json").read_text())
    (extra / "config.json").write_text(json.dumps({**data, "depth": 3}))
    with pytest.raises(CheckpointError, match="invalid Segmenter config"):
        load_segmenter(extra)
    other = _write_as_before(_trained_small(), SegmenterConfig(model="small", num_classes=4), tmp_path / "w")
    with pytest.raises(CheckpointError, match="model.safetensors does not match"):
        load_segmenter(other)  # weights of a 3-class head, a config of 4 classes
