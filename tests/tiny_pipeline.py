"""A random, untrained pipeline (32 px, 4 x 4 latents, 3 classes): enough for shapes and plumbing."""

from __future__ import annotations


def build_tiny_pipeline(classes, steps: int = 5):
    import torch

    from jodiffusion.diffusion.sampling import SamplerConfig
    from jodiffusion.diffusion.schedule import NoiseScheduleConfig
    from jodiffusion.models.annotation_vae import AnnotationVAE, AnnotationVAEConfig
    from jodiffusion.models.image_codec import PixelUnshuffleCodec
    from jodiffusion.models.text_encoder import CaptionTextEncoder
    from jodiffusion.models.uvit import JointUViT, uvit_config
    from jodiffusion.pipelines.pipeline import JoDiffusionPipeline

    torch.manual_seed(0)
    vae = AnnotationVAE(AnnotationVAEConfig(num_classes=classes.num_classes, latent_channels=4, downsample=8,
                                            base_channels=8, max_channels=8, blocks_per_stage=0))
    codec = PixelUnshuffleCodec(8)
    text = CaptionTextEncoder.from_captions(["a red circle", "a blue square"], dim=32, num_layers=1, num_heads=2,
                                            max_tokens=8)
    uvit = JointUViT(uvit_config("tiny", img_channels=codec.latent_channels, mask_channels=4, latent_height=4,
                                 latent_width=4, text_dim=32, num_text_tokens=8))
    for m in (vae, text, uvit):
        m.eval()
    return JoDiffusionPipeline(uvit, vae, codec, text, classes, (32, 32), NoiseScheduleConfig(),
                               SamplerConfig(steps=steps, guidance_scale=2.0))
