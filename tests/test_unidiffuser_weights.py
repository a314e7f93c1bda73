"""Loading UniDiffuser-v1 weights, with random state dicts that have the real key names and shapes.

The release key table is ``unidiffuser_state_shapes`` (from thu-ml/unidiffuser libs/uvit_multi_post_ln_v1.py);
the diffusers names are checked by loading into diffusers' own UniDiffuserModel with strict=True, and the
network is checked against diffusers' forward pass through a small reference implementation.
"""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from jodiffusion.errors import CheckpointError
from jodiffusion.models.unidiffuser_keys import convert_unidiffuser_state_dict, unidiffuser_state_shapes
from jodiffusion.models.unidiffuser_weights import load_unidiffuser_weights
from jodiffusion.models.uvit import JointUViT, uvit_config

WIDTH, HEADS, LATENT = 64, 2, 8
SHAPES = dict(width=WIDTH, depth=2, patch_size=2, latent_size=LATENT)  # UniDiffuser depth 2: 1 + 1 + 1 blocks


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


def small_model(seed: int = 0, **overrides) -> JointUViT:
    torch.manual_seed(seed)
    cfg = dict(width=WIDTH, depth=3, num_heads=HEADS, latent_height=LATENT, latent_width=LATENT)
    return JointUViT(uvit_config("unidiffuser-v1", **{**cfg, **overrides}))


def random_state(seed: int = 1, **overrides) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = unidiffuser_state_shapes(**{**SHAPES, **overrides})
    return {k: 0.2 * torch.randn(s, generator=g) for k, s in shapes.items()}


def random_encode_prefix(seed: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"encode_prefix.weight": 0.05 * torch.randn(64, 768, generator=g),
            "encode_prefix.bias": 0.05 * torch.randn(64, generator=g)}


def to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Release names -> diffusers UniDiffuserModel names, as diffusers' convert_unidiffuser_to_diffusers.py does."""
    top = {"patch_embed.proj": "vae_img_in.proj", "clip_img_embed": "clip_img_in", "text_embed": "text_in",
           "norm": "transformer.norm_out", "decoder_pred": "vae_img_out", "clip_img_out": "clip_img_out",
           "text_out": "text_out", "token_embedding": "data_type_token_embedding"}
    block = {"attn.proj": "attn1.to_out.0", "norm2": "norm1", "norm3": "norm3", "mlp.fc1": "ff.net.0.proj",
             "mlp.fc2": "ff.net.2"}
    out = {"pos_embed": state["pos_embed"], "data_type_pos_embed_token": state["pos_embed_token"],
           "transformer.pos_embed.proj.weight": state["patch_embed.proj.weight"].clone(),
           "transformer.pos_embed.proj.bias": state["patch_embed.proj.bias"].clone()}
    for key, value in state.items():
        if key in ("pos_embed", "pos_embed_token"):
            continue
        m = re.fullmatch(r"(in_blocks\.\d+|mid_block|out_blocks\.\d+)\.(.+)\.(weight|bias)", key)
        if m is None:
            module, param = key.rsplit(".", 1)
            out[f"{top[module]}.{param}"] = value
            continue
        prefix, module, param = m.groups()
        base = f"transformer.transformer_{prefix}"
        if module in ("skip_linear", "norm1"):
            out[f"{base}.skip.{'norm' if module == 'norm1' else module}.{param}"] = value
            continue
        base += ".block" if prefix.startswith("out") else ""
        if module == "attn.qkv":
            for name, part in zip("qkv", value.chunk(3), strict=True):
                out[f"{base}.attn1.to_{name}.{param}"] = part
        else:
            out[f"{base}.{block[module]}.{param}"] = value
    return out


def diffusers_unet(state: dict[str, torch.Tensor]):
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UniDiffuserModel(
        text_dim=64, clip_img_dim=512, num_text_tokens=77, num_attention_heads=HEADS,
        attention_head_dim=WIDTH // HEADS, in_channels=4, out_channels=4, num_layers=2, sample_size=LATENT,
        patch_size=2, activation_fn="gelu", norm_type="layer_norm", block_type="unidiffuser", pre_layer_norm=False,
        use_timestep_embedding=False, ff_final_dropout=True, use_data_type_embedding=True)
    unet.load_state_dict(to_diffusers(state), strict=True)  # proves the diffusers key names and shapes
    return unet.eval()


def reference_forward(sd, img, clip_img, text, t_img, t_text, mask=None, t_mask=None, data_type=1):
    """UniDiffuser-v1's U-ViT written from its release keys; with ``mask``, the extension JoDiffusion makes:
    mask tokens embedded like the image, with the image's positions, and a t_mask token placed like t_img."""
    b, d, p = img.shape[0], WIDTH, 2

    def lin(x, name):
        return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    def ln(x, name):
        return F.layer_norm(x, (d,), sd[f"{name}.weight"], sd[f"{name}.bias"])

    def patches(x):
        return F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p).flatten(2).mT

    def temb(t):
        freqs = torch.exp(-math.log(10000) * torch.arange(d // 2) / (d // 2))
        args = t.float()[:, None] * freqs
        return torch.cat([args.cos(), args.sin()], -1)[:, None]

    def attn(x, prefix):
        q, k, v = lin(x, f"{prefix}.attn.qkv").unflatten(-1, (3, HEADS, d // HEADS)).permute(2, 0, 3, 1, 4)
        w = (q @ k.mT / math.sqrt(d // HEADS)).softmax(-1)
        return lin((w @ v).transpose(1, 2).flatten(2), f"{prefix}.attn.proj")

    def block(x, prefix, skip=None):
        if skip is not None:
            x = ln(lin(torch.cat([x, skip], -1), f"{prefix}.skip_linear"), f"{prefix}.norm1")
        x = ln(x + attn(x, prefix), f"{prefix}.norm2")
        return ln(x + lin(F.gelu(lin(x, f"{prefix}.mlp.fc1")), f"{prefix}.mlp.fc2"), f"{prefix}.norm3")

    def unpatchify(tokens):
        h = img.shape[-1] // p
        y = lin(tokens, "decoder_pred").reshape(b, h, h, p, p, -1)
        return torch.einsum("nhwpqc->nchpwq", y).reshape(b, -1, h * p, h * p)

    pos = sd["pos_embed"]
    pos = torch.cat([pos[:, :2], sd["pos_embed_token"], pos[:, 2:]], 1)
    x = torch.cat([temb(t_img), temb(t_text), sd["token_embedding.weight"][data_type].expand(b, 1, d),
                   lin(text, "text_embed"), lin(clip_img, "clip_img_embed"), patches(img)], 1) + pos
    n = patches(img).shape[1]
    if mask is not None:
        x = torch.cat([x, temb(t_mask) + pos[:, :1], patches(mask) + pos[:, -n:]], 1)
    skips = [x := block(x, "in_blocks.0")]
    x = block(x, "mid_block")
    x = ln(block(x, "out_blocks.0", skips.pop()), "norm")
    img_out = unpatchify(x[:, 81:81 + n])
    return img_out if mask is None else (img_out, unpatchify(x[:, -n:]))


# -- the key table --------------------------------------------------------------------------------------
def test_full_size_key_table_matches_the_unidiffuser_v1_preset():
    shapes = unidiffuser_state_shapes()  # UniDiffuser-v1: width 1536, depth 30, patch 2, 64x64 latents
    assert sum(math.prod(s) for s in shapes.values()) == 952_509_520  # the "952M" of the UniDiffuser paper
    assert shapes["pos_embed"] == (1, 1104, 1536) and shapes["in_blocks.14.attn.qkv.weight"] == (4608, 1536)
    assert shapes["out_blocks.14.skip_linear.weight"] == (1536, 3072) and "in_blocks.15.norm2.weight" not in shapes
    with torch.device("meta"):
        model = JointUViT(uvit_config("unidiffuser-v1"))
        state = {k: torch.empty(s) for k, s in shapes.items()}
        tensors, report = convert_unidiffuser_state_dict(state, model)  # checks every shape
    assert not report.unexpected and report.missing == ["text_proj.bias", "text_proj.weight"]
    assert sorted(report.ignored) == ["clip_img_out.bias", "clip_img_out.weight", "text_out.bias", "text_out.weight"]
    assert set(tensors) == set(model.state_dict()) - {"text_proj.weight", "text_proj.bias"}


# -- the two formats --------------------------------------------------------------------------------------
def check_loaded(model: JointUViT, state: dict[str, torch.Tensor]) -> None:
    """Image parts equal the source tensors, mask parts equal the image parts."""
    sd, layout = model.state_dict(), model.layout
    for src, ours in [("patch_embed.proj", "img_in.proj"), ("decoder_pred", "img_out.linear"),
                      ("text_embed", "text_in"), ("clip_img_embed", "clip_img_in"), ("norm", "final_norm")]:
        for p in ("weight", "bias"):
            assert torch.equal(sd[f"{ours}.{p}"], state[f"{src}.{p}"]), ours
    for img_key, mask_key in [("img_in.proj", "mask_in.proj"), ("img_out.linear", "mask_out.linear")]:
        for p in ("weight", "bias"):
            assert torch.equal(sd[f"{mask_key}.{p}"], sd[f"{img_key}.{p}"])
    renames = {"norm2": "norm1", "norm3": "norm2", "norm1": "skip_norm"}
    for key, value in state.items():
        m = re.fullmatch(r"((?:in|out)_blocks\.\d+|mid_block)\.(norm\d)?(.*)", key)
        if m:
            prefix, norm, rest = m.groups()
            assert torch.equal(sd[f"{prefix}.{renames[norm] if norm else ''}{rest}"], value), key
    assert torch.equal(sd["data_type_embed.weight"], state["token_embedding.weight"])
    pos, src = sd["pos_embed"], state["pos_embed"]
    assert torch.equal(pos[:, layout.t_img], src[:, :1]) and torch.equal(pos[:, layout.t_mask], src[:, :1])
    assert torch.equal(pos[:, layout.slice("t_text")], src[:, 1:2])
    assert torch.equal(pos[:, layout.slice("data_type")], state["pos_embed_token"])
    assert torch.equal(pos[:, layout.text], src[:, 2:79])
    assert torch.equal(pos[:, layout.slice("clip_img")], src[:, 79:80])
    assert torch.equal(pos[:, layout.img], src[:, 80:]) and torch.equal(pos[:, layout.mask], src[:, 80:])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_original_release_format(tmp_path, suffix):
    state = random_state()
    path = tmp_path / f"uvit_v1{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    torch.save({f"module.{k}": v for k, v in random_encode_prefix().items()}, tmp_path / "caption_decoder.pth")
    model = small_model()
    report = load_unidiffuser_weights(model, path, caption_decoder=tmp_path / "caption_decoder.pth")
    check_loaded(model, state)
    assert torch.equal(model.text_proj.weight, random_encode_prefix()["encode_prefix.weight"])
    assert report.format == "original" and not report.missing and not report.unexpected
    assert report.copied["mask_in.proj.weight"] == "img_in.proj.weight"
    assert "text_out.weight" in report.ignored and "copied" in str(report)


def test_load_diffusers_pipeline_folder(tmp_path):
    state = random_state()
    diffusers_unet(state).save_pretrained(tmp_path / "pipe" / "unet")
    (tmp_path / "pipe" / "text_decoder").mkdir()
    save_file({**random_encode_prefix(), "decode_prefix.weight": torch.zeros(768, 64)},
              str(tmp_path / "pipe" / "text_decoder" / "diffusion_pytorch_model.safetensors"))
    for path in (tmp_path / "pipe", tmp_path / "pipe" / "unet"):  # the pipeline or its unet/ folder
        model = small_model()
        report = load_unidiffuser_weights(model, path)
        check_loaded(model, state)
        assert torch.equal(model.text_proj.bias, random_encode_prefix()["encode_prefix.bias"])
        assert report.format == "diffusers" and not report.missing and not report.unexpected
        assert "transformer.pos_embed.proj.weight" in report.ignored


def test_loaded_model_computes_unidiffuser_plus_mask_tokens(tmp_path):
    """The reference agrees with diffusers' UniDiffuserModel, and our loaded model with the reference."""
    state, prefix = random_state(), random_encode_prefix()
    g = torch.Generator().manual_seed(5)
    img, mask = torch.randn(2, 4, LATENT, LATENT, generator=g), torch.randn(2, 4, LATENT, LATENT, generator=g)
    clip, text = torch.randn(2, 512, generator=g), torch.randn(2, 77, 768, generator=g)
    t_img, t_mask, t_text = torch.tensor([10, 900]), torch.tensor([0, 500]), torch.tensor([0, 250])
    text64 = F.linear(text, prefix["encode_prefix.weight"], prefix["encode_prefix.bias"])
    with torch.no_grad():
        ours_ref = reference_forward(state, img, clip[:, None], text64, t_img, t_text)
        theirs = diffusers_unet(state)(img, clip[:, None], text64, t_img, t_text, data_type=torch.tensor([1]))[0]
        torch.testing.assert_close(ours_ref, theirs, rtol=1e-4, atol=1e-4)

        save_file(state, str(tmp_path / "uvit_v1.safetensors"))
        save_file(prefix, str(tmp_path / "caption_decoder.safetensors"))
        model = small_model().eval()
        load_unidiffuser_weights(model, tmp_path / "uvit_v1.safetensors",
                                 caption_decoder=tmp_path / "caption_decoder.safetensors")
        expected = reference_forward(state, img, clip[:, None], text64, t_img, t_text, mask=mask, t_mask=t_mask)
        got = model(img, mask, t_img, t_mask, text, t_text=t_text, clip_img=clip)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)

        # a final 3x3 conv starts as the identity, so it changes nothing
        with_conv = small_model(final_conv=True).eval()
        load_unidiffuser_weights(with_conv, tmp_path / "uvit_v1.safetensors",
                                 caption_decoder=tmp_path / "caption_decoder.safetensors")
        torch.testing.assert_close(with_conv(img, mask, t_img, t_mask, text, t_text=t_text, clip_img=clip), got)


# -- adaptations and errors ----------------------------------------------------------------------------------
def test_position_embeddings_are_interpolated_for_another_grid(tmp_path):
    state = random_state()
    save_file(state, str(tmp_path / "uvit.safetensors"))
    model = small_model(latent_height=12, latent_width=16)  # 6x8 patch grid from UniDiffuser's 4x4
    report = load_unidiffuser_weights(model, tmp_path / "uvit.safetensors")
    assert any("interpolated (bicubic) from a 4x4 patch grid to 6x8" in n for n in report.notes)
    pos = model.pos_embed.detach()
    assert pos[:, model.layout.img].shape == (1, 48, WIDTH)
    assert torch.equal(pos[:, model.layout.mask], pos[:, model.layout.img])
    assert any("text_proj" in n for n in report.notes) and report.missing == ["text_proj.bias", "text_proj.weight"]


def test_wrong_shape_names_key_and_shapes(tmp_path):
    state = random_state()
    state["in_blocks.0.attn.qkv.weight"] = torch.zeros(10, WIDTH)
    torch.save(state, tmp_path / "uvit_v1.pth")
    with pytest.raises(CheckpointError, match=r"'in_blocks\.0\.attn\.qkv\.weight' has shape \(10, 64\).*\(192, 64\)"):
        load_unidiffuser_weights(small_model(), tmp_path / "uvit_v1.pth")


def test_wrong_shape_in_diffusers_format_names_the_diffusers_key(tmp_path):
    state = to_diffusers(random_state())
    state["transformer.transformer_mid_block.ff.net.2.weight"] = torch.zeros(3, 3)
    (tmp_path / "unet").mkdir()
    save_file(state, str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"transformer_mid_block\.ff\.net\.2\.weight' has shape \(3, 3\)"):
        load_unidiffuser_weights(small_model(), tmp_path)


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(CheckpointError, match="uvit_v1.pth"):
        load_unidiffuser_weights(small_model(), tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="caption_decoder.pth"):
        save_file(random_state(), str(tmp_path / "uvit.safetensors"))
        load_unidiffuser_weights(small_model(), tmp_path / "uvit.safetensors", caption_decoder=tmp_path / "x.pth")


def test_architecture_mismatches(tmp_path):
    save_file(random_state(), str(tmp_path / "uvit.safetensors"))
    with pytest.raises(CheckpointError, match="depth=3"):
        load_unidiffuser_weights(small_model(depth=5), tmp_path / "uvit.safetensors")
    with pytest.raises(CheckpointError, match="post_norm=True"):
        load_unidiffuser_weights(small_model(post_norm=False), tmp_path / "uvit.safetensors")
    with pytest.raises(CheckpointError, match="text_bottleneck=64"):
        load_unidiffuser_weights(small_model(text_bottleneck=0), tmp_path / "uvit.safetensors")


def test_unexpected_keys(tmp_path):
    state = random_state()
    state["extra_head.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "uvit.safetensors"))
    with pytest.raises(CheckpointError, match="extra_head.weight"):
        load_unidiffuser_weights(small_model(), tmp_path / "uvit.safetensors")
    report = load_unidiffuser_weights(small_model(), tmp_path / "uvit.safetensors", strict=False)
    assert report.unexpected == ["extra_head.weight"]


class NotATensor:
    pass


def test_pickled_code_is_refused(tmp_path):
    torch.save({"patch_embed.proj.weight": NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="pickled objects other than tensors") as info:
        load_unidiffuser_weights(small_model(), tmp_path / "evil.pth")
    assert "weights_only" not in str(info.value)  # never torch's advice to load it unsafely
