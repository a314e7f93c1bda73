import json
import shutil

import pytest
import torch
from tiny_clip import save_tiny_clip

from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.models.text_encoder import (
    SPECIAL_TOKENS,
    UNK_ID,
    CaptionTextEncoder,
    CLIPTextEncoder,
    Vocabulary,
    build_text_encoder,
    build_vocabulary,
    tokenize,
)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def shapes_captions():
    return list(ShapesDataset("train", num_images=24, resolution=32).captions().values())


# --- CLIP ---------------------------------------------------------------------------------------------

def test_clip_pads_and_truncates_to_max_positions(tiny_clip_dir):
    enc = CLIPTextEncoder.from_pretrained(tiny_clip_dir)
    assert (enc.num_tokens, enc.dim, enc.trainable) == (16, 32, False)
    out = enc.encode(["a red circle", "a large blue striped square on a dark noisy background " * 3, ""])
    assert out.shape == (3, 16, 32) and out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(enc.encode(["a red circle"])[0], out[0])
    assert not torch.allclose(out[0], out[1])
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.train().training
    assert CLIPTextEncoder.from_pretrained(tiny_clip_dir, max_length=8).encode(["x"]).shape == (1, 8, 32)


def test_clip_from_pipeline_folder_and_from_spec(tiny_clip_dir, tmp_path):
    shutil.copytree(tiny_clip_dir, tmp_path / "text_encoder", ignore=shutil.ignore_patterns("tokenizer*", "_*"))
    shutil.copytree(tiny_clip_dir, tmp_path / "tokenizer", ignore=shutil.ignore_patterns("model*", "config.json"))
    enc = CLIPTextEncoder.from_pretrained(tmp_path)
    assert (enc.subfolder, enc.tokenizer_subfolder) == ("text_encoder", "tokenizer")
    reference = CLIPTextEncoder.from_pretrained(tiny_clip_dir)
    prompts = ["a green star", "a white ring on a light background"]
    torch.testing.assert_close(enc.encode(prompts), reference.encode(prompts))
    rebuilt = build_text_encoder(json.loads(json.dumps(enc.to_dict())))
    torch.testing.assert_close(rebuilt.encode(prompts), reference.encode(prompts))


def test_clip_missing_folder_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        CLIPTextEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="cannot load a CLIP text encoder"):
        CLIPTextEncoder.from_pretrained(tmp_path)


# --- vocabulary -----------------------------------------------------------------------------------------

def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("A large Red, striped star.") == ["a", "large", "red", ",", "striped", "star", "."]


def test_vocabulary_from_shapes_captions(shapes_captions):
    vocab = build_vocabulary(shapes_captions)
    assert tuple(vocab.tokens[:4]) == SPECIAL_TOKENS
    words = {w for c in shapes_captions for w in tokenize(c)}
    assert set(vocab.tokens[4:]) == words
    assert vocab.tokens[4] == "a"  # the most frequent word
    assert build_vocabulary(reversed(shapes_captions)) == vocab  # independent of caption order
    small = build_vocabulary(shapes_captions, max_size=10)
    assert len(small) == 10 and small.tokens == vocab.tokens[:10]
    rare = build_vocabulary(shapes_captions, min_count=1000)
    assert rare.tokens == list(SPECIAL_TOKENS)
    assert Vocabulary.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab


def test_vocabulary_padding_truncation_and_unknown_words():
    vocab = build_vocabulary(["a red circle", "a blue square"])
    ids = vocab.encode("A red zebra", 6)
    assert ids == [2, vocab.ids["a"], vocab.ids["red"], UNK_ID, 3, 0]
    assert vocab.encode("a red circle a blue square", 5) == [2, vocab.ids["a"], vocab.ids["red"],
                                                             vocab.ids["circle"], 3]
    assert vocab.encode("", 3) == [2, 3, 0]
    assert vocab.decode(ids) == "a red <unk>"


# --- caption encoder --------------------------------------------------------------------------------------

def test_caption_encoder_shapes_and_distinct_outputs(shapes_captions):
    torch.manual_seed(0)
    enc = CaptionTextEncoder.from_captions(shapes_captions, max_tokens=16)
    assert (enc.num_tokens, enc.dim, enc.trainable) == (16, 128, True)
    enc.eval()
    prompts = [shapes_captions[0], shapes_captions[1], "a never seen purple zebra " * 10, ""]
    with torch.no_grad():
        out = enc.encode(prompts)
        alone = enc.encode(prompts[:1])
    assert out.shape == (4, 16, 128)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[2], out[3])
    torch.testing.assert_close(alone[0], out[0], atol=1e-5, rtol=1e-5)  # padding never leaks between prompts


def test_caption_encoder_gradients_flow(shapes_captions):
    enc = CaptionTextEncoder.from_captions(shapes_captions, dim=32, num_heads=2, max_tokens=12)
    enc.encode(shapes_captions[:3]).square().mean().backward()
    assert enc.token_embedding.weight.grad.abs().sum() > 0
    assert enc.position_embedding.grad.abs().sum() > 0
    assert all(p.grad is not None for p in enc.transformer.parameters())


def test_caption_encoder_save_load_round_trip(shapes_captions, tmp_path):
    enc = CaptionTextEncoder.from_captions(shapes_captions, dim=32, num_heads=2, num_layers=1).eval()
    enc.save_pretrained(tmp_path / "te")
    assert sorted(p.name for p in (tmp_path / "te").iterdir()) == ["config.json", "model.safetensors",
                                                                    "vocab.json"]
    spec = enc.to_dict()
    assert spec["path"] == str(tmp_path / "te")
    loaded = build_text_encoder(spec).eval()
    assert loaded.vocab == enc.vocab and loaded.config == enc.config
    with torch.no_grad():
        assert torch.equal(loaded.encode(shapes_captions[:4]), enc.encode(shapes_captions[:4]))


def test_caption_encoder_errors(tmp_path):
    with pytest.raises(CheckpointError, match="config.json not found"):
        CaptionTextEncoder.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="from_captions"):
        build_text_encoder({"kind": "caption"})
    with pytest.raises(ConfigError, match="valid kinds: caption, clip"):
        build_text_encoder({"kind": "t5"})
    with pytest.raises(ValueError, match="multiple of num_heads"):
        CaptionTextEncoder.from_captions(["a"], dim=30, num_heads=4)
    with pytest.raises(TypeError, match="list of prompts"):
        CaptionTextEncoder.from_captions(["a"]).encode("a red circle")
