"""The patch-PCA image codec: a closed-form linear autoencoder fitted on the training images."""

import numpy as np
import pytest
import torch

from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.errors import ConfigError
from jodiffusion.models.image_codec import PatchPCACodec, build_image_codec


def images(n=32, res=32, difficulty="easy"):
    ds = ShapesDataset("train", n, res, difficulty=difficulty)
    return torch.as_tensor(np.stack([ds.load_image(i) for i in range(n)])).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_fit_reconstructs_better_with_more_components_and_all_components_is_exact():
    x = images()
    errors = []
    for k in (2, 6, 12):
        codec = PatchPCACodec(factor=4, components=k).fit(x)
        z = codec.encode(x)
        assert z.shape == (32, k, 8, 8)
        assert abs(float(z.std()) - 1.0) < 1e-3  # the scale normalises the latents
        errors.append(float(((codec.decode(z) - x) ** 2).mean()))
        assert 0 < codec.explained <= 1
    assert errors[0] > errors[1] > errors[2]
    full = PatchPCACodec(factor=4, components=48).fit(x)
    assert torch.allclose(full.decode(full.encode(x)), x, atol=1e-4)  # every axis: lossless


def test_spec_round_trip_gives_identical_latents():
    x = images(8)
    codec = PatchPCACodec(factor=4, components=6).fit(x)
    again = build_image_codec(codec.to_dict())
    assert isinstance(again, PatchPCACodec) and torch.equal(again.encode(x), codec.encode(x))
    assert torch.equal(again.decode(codec.encode(x)), codec.decode(codec.encode(x)))


def test_unfitted_or_malformed_codecs_are_refused():
    with pytest.raises(ConfigError, match="fitted"):
        PatchPCACodec(4, 6).to_dict()
    with pytest.raises(ValueError, match="components"):
        PatchPCACodec(factor=2, components=13)  # 3 x 2^2 = 12 at most
    with pytest.raises(ValueError, match="basis"):
        PatchPCACodec(factor=2, components=2, mean=[0.0] * 12, basis=[[0.0] * 11] * 2)
