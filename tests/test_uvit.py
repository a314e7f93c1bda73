"""Joint U-ViT: token layout, presets, shapes, gradients, checkpointing, precision, persistence."""

import math

import pytest
import torch

from jodiffusion.errors import CheckpointError
from jodiffusion.models.token_layout import UNIDIFFUSER_EXTRA, TokenLayout
from jodiffusion.models.uvit import UVIT_PRESETS, JointUViT, UViTConfig, sincos_2d, timestep_embedding, uvit_config

COMPAT = dict(post_norm=True, unidiffuser_tokens=True, text_bottleneck=16, clip_img_dim=24)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


def inputs(cfg: UViTConfig, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(batch, cfg.img_channels, cfg.latent_height, cfg.latent_width, generator=g)
    mask = torch.randn(batch, cfg.mask_channels, cfg.latent_height, cfg.latent_width, generator=g)
    t_img = torch.randint(0, 1000, (batch,), generator=g)
    t_mask = torch.randint(0, 1000, (batch,), generator=g)
    text = torch.randn(batch, cfg.num_text_tokens, cfg.text_dim, generator=g)
    return img, mask, t_img, t_mask, text


def tiny(seed: int = 0, **overrides) -> JointUViT:
    torch.manual_seed(seed)
    return JointUViT(uvit_config("tiny", **overrides))


# -- token layout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [(), UNIDIFFUSER_EXTRA])
def test_layout_slices_are_contiguous_disjoint_and_cover_the_sequence(extra):
    layout = TokenLayout(num_text=5, img_tokens=16, mask_tokens=9, extra=extra)
    assert layout.names == ("t_img", "t_mask", *extra, "text", "img", "mask")
    assert layout.length == 2 + len(extra) + 5 + 16 + 9
    covered, start = [], 0
    for name, n in layout.segments:
        s = layout.slice(name)
        assert (s.start, s.stop) == (start, start + n)  # contiguous, in order
        covered += range(s.start, s.stop)
        start = s.stop
    assert covered == list(range(layout.length))  # disjoint and complete
    assert (layout.t_img, layout.t_mask) == (slice(0, 1), slice(1, 2))
    assert layout.text == slice(2 + len(extra), 7 + len(extra))
    assert layout.img.stop - layout.img.start == 16 and layout.mask.stop == layout.length
    assert sum(layout.sizes) == layout.length
    for i, name in enumerate(extra):
        assert layout.index(name) == 2 + i


def test_layout_rejects_bad_definitions():
    with pytest.raises(ValueError, match="twice"):
        TokenLayout(4, 4, 4, extra=("a", "a"))
    with pytest.raises(ValueError, match="extra"):
        TokenLayout(4, 4, 4, extra=("img",))
    with pytest.raises(ValueError, match="img_tokens"):
        TokenLayout(4, 0, 4)
    with pytest.raises(KeyError, match="t_img, t_mask, text, img, mask"):
        TokenLayout(4, 4, 4).slice("clip_img")
    with pytest.raises(ValueError, match="not one"):
        TokenLayout(4, 4, 4).index("text")


def test_preset_layouts():
    v1 = uvit_config("unidiffuser-v1").layout
    # [t_img, t_mask, t_text, data_type, clip_img, 77 text, 1024 image, 1024 mask]
    assert v1.length == 2 + 3 + 77 + 32 * 32 * 2
    assert v1.img == slice(82, 1106) and v1.mask == slice(1106, 2130)
    assert uvit_config("small").layout.length == 2 + 16 + 64 + 64


# -- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, field", [
    (dict(depth=4), "depth"), (dict(width=30, num_heads=4), "width"), (dict(latent_height=7), "latent_height"),
    (dict(text_bottleneck=-1), "text_bottleneck"), (dict(num_heads=0), "num_heads"), (dict(data_type=2), "data_type"),
])
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        uvit_config("tiny", **overrides)


def test_unknown_preset_and_field():
    with pytest.raises(KeyError, match="tiny, small, base, unidiffuser-v1"):
        uvit_config("huge")
    with pytest.raises(ValueError, match="widht"):
        uvit_config("tiny", widht=64)
    assert uvit_config("small", depth=9).depth == 9


# -- shapes and parameter counts ---------------------------------------------------------------------------
@pytest.mark.parametrize("preset, overrides", [("tiny", {}), ("tiny", COMPAT), ("small", {})])
def test_output_shapes(preset, overrides):
    torch.manual_seed(0)
    model = JointUViT(uvit_config(preset, **overrides))
    cfg = model.config
    eps_img, eps_mask = model(*inputs(cfg, batch=1 if preset == "small" else 2))
    assert eps_img.shape[1:] == (cfg.img_channels, cfg.latent_height, cfg.latent_width)
    assert eps_mask.shape[1:] == (cfg.mask_channels, cfg.latent_height, cfg.latent_width)
    assert torch.isfinite(eps_img).all() and torch.isfinite(eps_mask).all()


@pytest.mark.parametrize("preset, low, high", [
    ("tiny", 1e4, 1e5), ("small", 3e6, 10e6), ("base", 100e6, 300e6), ("unidiffuser-v1", 950e6, 956e6),
])
def test_parameter_counts_on_meta(preset, low, high):
    cfg = uvit_config(preset)
    with torch.device("meta"):
        model = JointUViT(cfg)
        eps_img, eps_mask = model(*[x.to("meta") for x in inputs(cfg, batch=1)])
    n = model.num_parameters()
    print(f"{preset}: {n:,} parameters, {cfg.layout.length} tokens")
    assert low <= n <= high
    assert eps_img.shape == (1, cfg.img_channels, cfg.latent_height, cfg.latent_width)
    assert eps_mask.shape == (1, cfg.mask_channels, cfg.latent_height, cfg.latent_width)


def test_unidiffuser_v1_parameter_count():
    # UniDiffuser-v1's U-ViT (952.5M) without its text/CLIP-image output layers, plus the mask tokens
    with torch.device("meta"):
        model = JointUViT(uvit_config("unidiffuser-v1"))
    assert model.num_parameters() == 953_298_528
    assert len(model.in_blocks) == len(model.out_blocks) == 15


# -- timesteps --------------------------------------------------------------------------------------------
def test_timestep_embedding_by_hand():
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 4)
    # freqs = 10000 ** (-[0, 1] / 2) = [1, 0.01]; halves are [cos | sin]
    expected = torch.tensor([[1, 1, 0, 0], [math.cos(1), math.cos(0.01), math.sin(1), math.sin(0.01)]])
    torch.testing.assert_close(emb, expected.float())
    assert timestep_embedding(torch.tensor([3]), 5).shape == (1, 5)


def test_timestep_types_and_broadcast():
    model = tiny().eval()
    img, mask, _, _, text = inputs(model.config)
    with torch.no_grad():
        a = model(img, mask, torch.tensor([250, 250]), torch.tensor([0, 0]), text)
        b = model(img, mask, torch.tensor(250.0), 0, text)
    torch.testing.assert_close(a, b)


def test_bad_inputs_say_what_to_fix():
    model = tiny()
    img, mask, t_img, t_mask, text = inputs(model.config)
    with pytest.raises(ValueError, match="num_text_tokens"):
        model(img, mask, t_img, t_mask, text[:, :3])
    with pytest.raises(ValueError, match="mask_channels"):
        model(img, mask[:, :2], t_img, t_mask, text)
    with pytest.raises(ValueError, match="unidiffuser_tokens"):
        model(img, mask, t_img, t_mask, text, t_text=t_img)


# -- gradients ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, COMPAT])
def test_every_parameter_gets_a_gradient(overrides):
    model = tiny(**overrides)
    eps_img, eps_mask = model(*inputs(model.config))
    (eps_img.square().mean() + eps_mask.square().mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad  # DDP without find_unused_parameters needs every parameter used
    for name in ("img_out.linear.weight", "mask_out.linear.weight", "img_in.proj.weight", "mask_in.proj.weight",
                 "pos_embed", "text_in.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_modalities_see_each_other():
    model = tiny()
    img, mask, t_img, t_mask, text = inputs(model.config)
    img.requires_grad_(True)
    _, eps_mask = model(img, mask, t_img, t_mask, text)
    (grad,) = torch.autograd.grad(eps_mask.sum(), img)
    assert grad.abs().sum() > 0


def test_gradient_checkpointing_gives_identical_outputs_and_grads():
    model = tiny(**COMPAT)
    batch = inputs(model.config)
    results = []
    for flag in (False, True):
        model.zero_grad()
        model.config.gradient_checkpointing = flag
        eps_img, eps_mask = model(*batch)
        (eps_img.square().mean() + eps_mask.abs().mean()).backward()
        results.append((eps_img.detach(), eps_mask.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][:2], results[1][:2], rtol=0, atol=0)
    torch.testing.assert_close(results[0][2], results[1][2])


# -- precision and compilation ----------------------------------------------------------------------------------
def test_bf16_autocast_on_cpu():
    model = tiny(**COMPAT)
    batch = inputs(model.config)
    with torch.no_grad():
        ref = model(*batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(*batch)
    for r, x in zip(ref, low, strict=True):
        assert x.shape == r.shape and torch.isfinite(x).all()
        torch.testing.assert_close(x.float(), r, rtol=0.1, atol=0.1)


def test_bf16_weights():
    model = tiny(**COMPAT).to(torch.bfloat16)
    img, mask, t_img, t_mask, text = inputs(model.config)
    eps_img, eps_mask = model(img.bfloat16(), mask.bfloat16(), t_img, t_mask, text.bfloat16())
    assert eps_img.dtype == eps_mask.dtype == torch.bfloat16


def test_compiles_without_graph_breaks():
    model = tiny(**COMPAT).eval()
    batch = inputs(model.config)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a graph break is an error
    with torch.no_grad():
        torch.testing.assert_close(compiled(*batch), model(*batch))


# -- determinism and persistence ----------------------------------------------------------------------------------
def test_deterministic_and_batch_independent():
    a, b = tiny(seed=3), tiny(seed=3)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), n
    batch = inputs(a.config, batch=3)
    with torch.no_grad():
        out = a(*batch)
        torch.testing.assert_close(out, a(*batch), rtol=0, atol=0)
        first = a(*[x[:1] for x in batch])
    torch.testing.assert_close(first, tuple(x[:1] for x in out), rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = tiny(**COMPAT).eval()
    model.save_pretrained(tmp_path / "uvit")
    loaded = JointUViT.from_pretrained(tmp_path / "uvit").eval()
    assert loaded.config == model.config
    batch = inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*batch), model(*batch), rtol=0, atol=0)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        JointUViT.from_pretrained(tmp_path / "nothing")
    tiny().save_pretrained(tmp_path / "uvit")
    cfg = (tmp_path / "uvit" / "config.json").read_text().replace('"width": 32', '"width": 64')
    (tmp_path / "uvit" / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="does not match"):
        JointUViT.from_pretrained(tmp_path / "uvit")


def test_presets_are_constructors():
    assert set(UVIT_PRESETS) == {"tiny", "small", "base", "unidiffuser-v1"}
    assert uvit_config("tiny") == uvit_config("tiny") and uvit_config("tiny") is not uvit_config("tiny")


def test_sincos_init_gives_image_and_mask_patches_the_same_grid_positions():
    net = JointUViT(uvit_config("tiny", latent_height=8, latent_width=8, patch_size=2))
    lay, pos = net.layout, net.pos_embed[0]
    assert torch.equal(pos[lay.img], pos[lay.mask])
    assert torch.equal(pos[lay.img], sincos_2d((4, 4), net.config.width))
    assert len({tuple(row.tolist()) for row in pos[lay.img]}) == 16  # every cell has its own code
    rand = JointUViT(uvit_config("tiny", latent_height=8, latent_width=8, patch_size=2, pos_embed_init="random"))
    assert not torch.equal(rand.pos_embed[0, lay.img], rand.pos_embed[0, lay.mask])
    with pytest.raises(ValueError, match="pos_embed_init"):
        uvit_config("tiny", pos_embed_init="learned")


def test_the_pooled_caption_starts_as_no_change_and_then_learns():
    """pooled_text adds a zero-initialised projection of the mean caption token to the timestep, image and
    mask tokens: at initialisation the network is the same as without it (pretrained weights stay intact)."""
    with_path = tiny(pooled_text=True)
    without = tiny(pooled_text=False)
    state = {k: v for k, v in with_path.state_dict().items() if not k.startswith("pooled_text_in")}
    without.load_state_dict(state)
    args = inputs(with_path.config)
    with torch.no_grad():
        assert torch.equal(with_path(*args)[0], without(*args)[0])
    eps_img, eps_mask = with_path(*args)
    (eps_img.square().mean() + eps_mask.square().mean()).backward()
    assert with_path.pooled_text_in.weight.grad.abs().sum() > 0
