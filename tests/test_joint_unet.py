"""The conv UNet backbone: the U-ViT's contract (two latents, two timesteps, text) on diffusers' UNet."""

import pytest
import torch

from jodiffusion.models.denoisers import load_denoiser
from jodiffusion.models.joint_unet import JointUNet, JointUNetConfig, unet_config


def tiny(**kw):
    torch.manual_seed(0)
    return JointUNet(unet_config("tiny", img_channels=6, mask_channels=2, latent_height=8, latent_width=8, **kw)).eval()


def inputs(b=3):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, 6, 8, 8, generator=g), torch.randn(b, 2, 8, 8, generator=g),
            torch.randint(0, 1000, (b,), generator=g), torch.randn(b, 8, 32, generator=g))


def test_shapes_and_both_timesteps_and_text_matter():
    net = tiny()
    img, mask, t, text = inputs()
    with torch.no_grad():
        out_img, out_mask = net(img, mask, t, t, text)
        assert out_img.shape == img.shape and out_mask.shape == mask.shape
        other_t_mask = net(img, mask, t, torch.zeros_like(t), text)
        other_text = net(img, mask, t, t, torch.zeros_like(text))
        scalar = net(img, mask, torch.tensor(500), torch.tensor(500), text)
        assert scalar[0].shape == img.shape
    assert not torch.allclose(out_img, other_t_mask[0])  # the mask timestep reaches the network
    assert not torch.allclose(out_img, other_text[0])    # so does the caption


def test_save_and_load_by_class_name(tmp_path):
    net = tiny()
    net.save_pretrained(tmp_path / "denoiser")
    loaded = load_denoiser(tmp_path / "denoiser").eval()
    assert isinstance(loaded, JointUNet)
    img, mask, t, text = inputs(2)
    with torch.no_grad():
        assert torch.equal(net(img, mask, t, t, text)[0], loaded(img, mask, t, t, text)[0])


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="divisible"):
        JointUNetConfig(latent_height=6, latent_width=6, block_channels=[32, 64, 128])
    with pytest.raises(ValueError, match="same length"):
        JointUNetConfig(block_channels=[32, 64], attention_levels=[True])
    with pytest.raises(ValueError, match="norm_num_groups"):
        JointUNetConfig(block_channels=[24, 64], attention_levels=[False, True], attention_head_dim=8)
    with pytest.raises(KeyError, match="preset"):
        unet_config("huge")
    net = tiny()
    with pytest.raises(ValueError, match="expects"):
        net(torch.zeros(1, 5, 8, 8), torch.zeros(1, 2, 8, 8), torch.zeros(1), torch.zeros(1), torch.zeros(1, 8, 32))


def test_the_pooled_caption_reaches_the_finest_level_directly():
    """With pooled_text the caption modulates every ResNet block through the time embedding; without it the
    top level sees the caption only through the coarse cross-attention levels."""
    with_path, without = tiny(), tiny(pooled_text=False)
    assert with_path.config.pooled_text and with_path.unet.add_embedding is not None
    assert getattr(without.unet, "add_embedding", None) is None
    img, mask, t, text = inputs(2)
    with_path.train()
    out_img, out_mask = with_path(img, mask, t, t, text)
    (out_img.square().mean() + out_mask.square().mean()).backward()
    grads = [p.grad for p in with_path.unet.add_embedding.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_a_folder_written_before_the_pooled_caption_loads_without_it(tmp_path):
    import json

    old = tiny(pooled_text=False)
    old.save_pretrained(tmp_path / "denoiser")
    config = json.loads((tmp_path / "denoiser" / "config.json").read_text())
    config.pop("pooled_text", None) if "pooled_text" in config else config.get("config", {}).pop("pooled_text", None)
    (tmp_path / "denoiser" / "config.json").write_text(json.dumps(config))
    loaded = load_denoiser(tmp_path / "denoiser").eval()
    assert not loaded.config.pooled_text
    img, mask, t, text = inputs(2)
    with torch.no_grad():
        assert torch.equal(old(img, mask, t, t, text)[0], loaded(img, mask, t, t, text)[0])
