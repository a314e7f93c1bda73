import pytest
import torch

from jodiffusion.errors import CheckpointError
from jodiffusion.models.annotation_vae import AnnotationVAE, AnnotationVAEConfig


def tiny(num_classes=5, **kw):
    return AnnotationVAE(AnnotationVAEConfig(num_classes=num_classes, base_channels=8, max_channels=16, **kw))


def test_shapes_follow_the_latent_grid():
    torch.manual_seed(0)
    vae = tiny(7, downsample=4, latent_channels=3)
    mask = torch.randint(0, 7, (2, 32, 48))
    logits, z = vae(mask)
    assert z.shape == (2, 3, 8, 12)
    assert logits.shape == (2, 7, 32, 48)
    assert vae.decode_to_mask(z).shape == (2, 32, 48)


def test_bad_sizes_and_config_values_are_clear_errors():
    vae = tiny()
    with pytest.raises(ValueError, match="not divisible by 8"):
        vae.encode(torch.zeros(1, 30, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="power of two"):
        AnnotationVAEConfig(num_classes=4, downsample=6)


def test_low_confidence_pixels_become_ignore_not_background():
    vae = tiny(4)
    z = torch.zeros(1, 4, 2, 2)
    with torch.no_grad():
        vae.decoder.head[-1].weight.zero_()
        vae.decoder.head[-1].bias.zero_()  # uniform logits: top probability 0.25 everywhere
    assert vae.decode_to_mask(z, min_confidence=0.5).unique().tolist() == [255]
    assert vae.decode_to_mask(z, min_confidence=0.2).unique().tolist() == [0]


def test_latent_noise_changes_latents_only_in_training_call():
    torch.manual_seed(0)
    vae = tiny()
    mask = torch.randint(0, 5, (1, 16, 16))
    _, z_clean = vae(mask)
    _, z_noisy = vae(mask, latent_noise=0.5)
    assert not torch.allclose(z_clean, z_noisy)
    assert torch.allclose(z_clean, vae.encode(mask))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    vae = tiny(scale_factor=2.5, shift_factor=0.1)
    vae.save_pretrained(tmp_path / "vae")
    again = AnnotationVAE.from_pretrained(tmp_path / "vae")
    assert again.config == vae.config
    mask = torch.randint(0, 5, (1, 16, 16))
    assert torch.equal(vae.encode(mask), again.encode(mask))
    z = torch.randn(1, 4, 2, 2)
    assert torch.allclose(again.unscale(again.scale(z)), z, atol=1e-6)


def test_missing_or_mismatched_weights(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        AnnotationVAE.from_pretrained(tmp_path / "nothing")
    tiny(5).save_pretrained(tmp_path / "a")
    tiny(6).save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not match"):
        AnnotationVAE.from_pretrained(tmp_path / "a")
