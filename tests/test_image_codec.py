import json

import pytest
import torch
import torch.nn.functional as F

from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.models.image_codec import PixelUnshuffleCodec, StableDiffusionVAECodec, build_image_codec


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=16, scaling_factor=0.37, shift_factor=0.25)
    folder = tmp_path_factory.mktemp("tiny-vae")
    vae.save_pretrained(folder)
    return folder


def images(b=2, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def test_sd_vae_shapes_and_factors_come_from_its_config(tiny_vae_dir):
    codec = StableDiffusionVAECodec.from_pretrained(tiny_vae_dir)
    assert (codec.latent_channels, codec.downsample) == (4, 2)
    assert codec.scaling_factor == pytest.approx(0.37) and codec.shift_factor == pytest.approx(0.25)
    x = images()
    mean, std = codec.encode_moments(x)
    assert mean.shape == std.shape == (2, 4, 8, 12) and mean.dtype == torch.float32
    assert (std > 0).all()
    z = codec.encode(x, sample=False)
    torch.testing.assert_close(z, (mean - 0.25) * 0.37)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(codec.encode(x, generator=g1), codec.encode(x, generator=g2))
    assert not torch.equal(codec.encode(x), z)
    out = codec.decode(z)
    assert out.shape == x.shape and out.abs().max() <= 1
    assert not any(p.requires_grad for p in codec.parameters())
    assert not codec.train().training


def test_sd_vae_factor_override_and_rebuild_from_dict(tiny_vae_dir):
    codec = StableDiffusionVAECodec.from_pretrained(str(tiny_vae_dir), scaling_factor=2.0)
    assert codec.scaling_factor == 2.0
    spec = json.loads(json.dumps(codec.to_dict()))
    assert spec["kind"] == "sd-vae" and spec["path"] == str(tiny_vae_dir)
    again = build_image_codec(spec)
    x = images()
    torch.testing.assert_close(again.encode(x, sample=False), codec.encode(x, sample=False))


def test_sd_vae_from_a_pipeline_folder(tiny_vae_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_vae_dir, tmp_path / "vae")
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    codec = StableDiffusionVAECodec.from_pretrained(tmp_path)
    assert codec.subfolder == "vae" and codec.downsample == 2


def test_sd_vae_missing_or_empty_folder_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        StableDiffusionVAECodec.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="cannot load an AutoencoderKL"):
        StableDiffusionVAECodec.from_pretrained(tmp_path)


def test_pixel_unshuffle_is_an_exact_round_trip():
    codec = PixelUnshuffleCodec(factor=4)
    x = torch.randint(0, 256, (2, 3, 16, 32)).float() / 127.5 - 1
    mean, std = codec.encode_moments(x)
    assert mean.shape == (2, 48, 4, 8) and codec.latent_channels == 48
    assert torch.equal(std, torch.zeros_like(mean))
    assert torch.equal(codec.encode(x), mean)  # std 0: a sample is the mean
    assert torch.equal(codec.decode(codec.encode(x)), x)
    # channel c * f^2 + i * f + j of latent pixel (y, x) is image pixel (y f + i, x f + j) of channel c
    assert mean[1, 2 * 16 + 3 * 4 + 1, 2, 5] == x[1, 2, 2 * 4 + 3, 5 * 4 + 1]


def test_pixel_unshuffle_factors_sizes_and_spec():
    codec = PixelUnshuffleCodec(factor=2, scaling_factor=2.0, shift_factor=0.5)
    x = images(1, 8, 8)
    torch.testing.assert_close(codec.encode(x), (F.pixel_unshuffle(x, 2) - 0.5) * 2.0)
    torch.testing.assert_close(codec.decode(codec.encode(x)), x)
    assert codec.decode(torch.full((1, 12, 2, 2), 10.0)).max() == 1  # clamped to the image range
    with pytest.raises(ValueError, match="not divisible by the codec's downsampling factor 2"):
        codec.encode(images(1, 9, 8))
    rebuilt = build_image_codec(codec.to_dict())
    assert isinstance(rebuilt, PixelUnshuffleCodec) and rebuilt.to_dict() == codec.to_dict()
    with pytest.raises(ConfigError, match="valid kinds: pca, pixel-unshuffle, sd-vae"):
        build_image_codec({"kind": "vqgan"})


@pytest.mark.parametrize("content, why", [(b"", "is empty"), ("cut", "truncated zip")])
def test_an_empty_or_truncated_vae_weight_file_is_one_line_naming_it(tiny_vae_dir, tmp_path, content, why):
    """A 0-byte or cut ``diffusion_pytorch_model.bin`` ended in EOFError / a zip reader's RuntimeError."""
    import io
    import shutil

    folder = shutil.copytree(tiny_vae_dir, tmp_path / "vae")
    for p in folder.glob("*.safetensors"):
        p.unlink()
    if content == "cut":
        buf = io.BytesIO()
        torch.save({"w": torch.zeros(16, 16)}, buf)
        content = buf.getvalue()[:400]
    (folder / "diffusion_pytorch_model.bin").write_bytes(content)
    with pytest.raises(CheckpointError, match=why) as info:
        StableDiffusionVAECodec.from_pretrained(folder)
    assert str(folder / "diffusion_pytorch_model.bin") in str(info.value) and "\n" not in str(info.value)
