"""The one registry: datasets, segmenters, image codecs, text encoders and denoiser backbones all find
what builds them by name through ``utils.registry.Registry``."""

import pytest
import torch

from jodiffusion.data.config import DataConfig
from jodiffusion.data.registry import DATASETS, UnknownDatasetError, build_dataset, dataset_names, needs_root
from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.errors import ConfigError, DatasetError
from jodiffusion.models.denoisers import DENOISERS, backbone_presets, build_denoiser
from jodiffusion.models.image_codec import IMAGE_CODECS, build_image_codec
from jodiffusion.models.joint_unet import JointUNet
from jodiffusion.models.text_encoder import TEXT_ENCODERS, build_text_encoder
from jodiffusion.models.uvit import JointUViT
from jodiffusion.segmentation.models import SEGMENTERS, build_segmenter
from jodiffusion.utils.registry import Registry


def test_register_as_a_call_and_as_a_decorator():
    things = Registry("thing")
    assert things.register("a", 1) == 1

    @things.register("b", colour="red")
    def make_b():
        return "b"

    assert make_b() == "b"  # the decorator hands the function back unchanged
    assert things.get("a") == 1 and things.get("b") is make_b
    assert things.names() == ("a", "b") and list(things) == ["a", "b"] and len(things) == 2
    assert "a" in things and "c" not in things and ["unhashable"] not in things
    assert things.values() == (1, make_b)


def test_info_is_kept_per_entry_and_copied_out():
    things = Registry("thing")
    things.register("plain", object())
    things.register("rooted", object(), needs_root=False, presets={"small": {}})
    assert things.info("plain") == {}
    assert things.info("rooted") == {"needs_root": False, "presets": {"small": {}}}
    things.info("rooted")["needs_root"] = True  # a caller changing its copy changes nothing
    assert things.info("rooted")["needs_root"] is False


def test_a_second_entry_under_a_name_is_refused_unless_overwrite():
    things = Registry("thing")
    things.register("a", 1, tag="first")
    with pytest.raises(ValueError, match="thing 'a' is already registered.*overwrite=True"):
        things.register("a", 2)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.register("a")(lambda: None)
    assert things.get("a") == 1 and things.info("a") == {"tag": "first"}
    things.register("a", 2, overwrite=True)
    assert things.get("a") == 2 and things.info("a") == {}  # the new entry's info, not a merge
    things.unregister("a")
    things.unregister("never-there")
    assert "a" not in things
    with pytest.raises(ValueError, match="non-empty string"):
        things.register("", 3)


def test_an_unknown_name_is_refused_naming_the_subject_and_the_valid_names():
    things = Registry("thing")
    things.register("zebra", 1)
    things.register("ant", 2)
    with pytest.raises(KeyError, match="unknown thing 'bee'; valid names: ant, zebra"):
        things.get("bee")
    with pytest.raises(KeyError, match="unknown thing 'bee'"):
        things.info("bee")
    with pytest.raises(KeyError, match=r"unknown thing \['x'\]"):  # an unhashable name read from a file
        things.get(["x"])
    kinds = Registry("codec kind", error=ConfigError, valid="kinds")
    kinds.register("pca", 1)
    with pytest.raises(ConfigError, match="unknown codec kind None; valid kinds: pca"):
        kinds.get(None)


def test_the_package_registries_keep_their_errors():
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'imagenet'; valid names: ade20k, camvid"):
        DATASETS.get("imagenet")
    with pytest.raises(KeyError, match="unknown segmenter 'unet9000'; valid names: deeplabv3_resnet101"):
        SEGMENTERS.get("unet9000")
    with pytest.raises(ConfigError, match="unknown image codec kind 'vqgan'; valid kinds: pca, pixel-unshuffle"):
        build_image_codec({"kind": "vqgan"})
    with pytest.raises(ConfigError, match="unknown text encoder kind 't5'; valid kinds: caption, clip"):
        build_text_encoder({"kind": "t5"})
    with pytest.raises(ConfigError, match="unknown denoiser backbone 'dit'; valid names: unet, uvit"):
        build_denoiser("dit", "small", {})
    assert DENOISERS.names() == ("uvit", "unet") and DENOISERS.get("unet") is JointUNet
    assert set(IMAGE_CODECS) == {"pca", "pixel-unshuffle", "sd-vae"} and set(TEXT_ENCODERS) == {"caption", "clip"}
    assert needs_root("voc") and not needs_root("shapes")


def test_a_user_registered_dataset_works_through_build_dataset():
    made = []

    @DATASETS.register("tiny-shapes", needs_root=False)
    def tiny(cfg, split):
        made.append(split)
        return ShapesDataset(split, 3, cfg.resolution)

    try:
        assert dataset_names()[-1] == "tiny-shapes" and not needs_root("tiny-shapes")
        cfg = DataConfig(name="tiny-shapes", resolution=32)  # no root asked for
        ds = build_dataset(cfg, "val", transform=None)
        assert made == ["val"] and len(ds) == 3 and ds[0]["image"].shape == (32, 32, 3)
        with pytest.raises(ValueError, match="already registered"):
            DATASETS.register("tiny-shapes", tiny)
    finally:
        DATASETS.unregister("tiny-shapes")
    with pytest.raises(DatasetError, match="unknown dataset 'tiny-shapes'"):
        build_dataset(cfg, "val")


def test_a_user_registered_segmenter_is_built_by_name():
    class Dummy(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.head = torch.nn.Conv2d(3, k, 1)

    SEGMENTERS.register("dummy", lambda k, aux: Dummy(k), backbone=False)
    try:
        model, info = build_segmenter("dummy", 4)
        assert isinstance(model, Dummy) and model.head.out_channels == 4 and info == "random initialisation"
        with pytest.raises(ConfigError, match="the 'dummy' segmenter has no pretrained backbone"):
            build_segmenter("dummy", 4, aux_loss=True)
    finally:
        SEGMENTERS.unregister("dummy")


def test_denoisers_are_built_through_the_registry():
    shapes = dict(img_channels=4, mask_channels=4, latent_height=8, latent_width=8, text_dim=8, num_text_tokens=4)
    presets, fields = backbone_presets("unet")
    assert presets is DENOISERS.info("unet")["presets"] and "block_channels" in fields
    assert isinstance(build_denoiser("unet", "tiny", {}, **shapes), JointUNet)
    assert isinstance(build_denoiser("uvit", "tiny", {}, **shapes), JointUViT)
