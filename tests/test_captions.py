"""Captions files, template captions, the BLIP-2 captioner (tiny random model) and the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jodiffusion.cli.main import main
from jodiffusion.data.captions import (
    caption_dataset,
    read_captions,
    template_caption,
    write_captions,
)
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.metadata import CAMVID_CLASSES
from jodiffusion.data.shapes import ShapesDataset
from jodiffusion.data.shapes_folder import write_shapes_dataset
from jodiffusion.errors import CheckpointError, DatasetError
from jodiffusion.models.captioner import Blip2Captioner

# --- captions files ---------------------------------------------------------------------------


def test_round_trip_mapping(tmp_path):
    path = tmp_path / "sub" / "captions.jsonl"
    caps = {"a": "a photo of a cat", "b": "ünïcödé and \"quotes\"", "c": ""}
    assert write_captions(path, caps) == path
    assert read_captions(path) == caps
    assert [p.name for p in path.parent.iterdir()] == ["captions.jsonl"]  # no temp file left
    for line in path.read_text(encoding="utf-8").splitlines():
        assert list(json.loads(line)) == ["stem", "caption"]


def test_round_trip_records_and_split_filter(tmp_path):
    path = tmp_path / "captions.jsonl"
    write_captions(path, [{"caption": "x", "stem": "t1", "split": "train"},
                          {"stem": "v1", "caption": "y", "split": "val"},
                          ("any", "z")])
    assert read_captions(path) == {"t1": "x", "v1": "y", "any": "z"}
    assert read_captions(path, split="train") == {"t1": "x", "any": "z"}
    assert read_captions(path, split="val") == {"v1": "y", "any": "z"}
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["stem", "caption", "split"]


def test_write_rejects_bad_items(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        write_captions(tmp_path / "c.jsonl", [("a", "x"), ("a", "y")])
    with pytest.raises(ValueError):
        write_captions(tmp_path / "c.jsonl", [{"stem": "a"}])
    with pytest.raises(ValueError):
        write_captions(tmp_path / "c.jsonl", {"a": 3})
    assert not (tmp_path / "c.jsonl").exists()
    # the same stem in two splits is fine in a file...
    write_captions(tmp_path / "c.jsonl", [{"stem": "a", "caption": "x", "split": "train"},
                                          {"stem": "a", "caption": "y", "split": "val"}])
    assert read_captions(tmp_path / "c.jsonl", split="val") == {"a": "y"}
    # ...but ambiguous when read without a split
    with pytest.raises(DatasetError, match="duplicate stem 'a'"):
        read_captions(tmp_path / "c.jsonl")


@pytest.mark.parametrize(("bad_line", "message"), [
    ('{"stem": "b", "caption": ', "line 3: not valid JSON"),
    ('["b", "c"]', "line 3: expected a JSON object"),
    ('{"stem": "b"}', "line 3: missing key 'caption'"),
    ('{"caption": "c"}', "line 3: missing key 'stem'"),
    ('{"stem": 7, "caption": "c"}', "line 3: 'stem' must be a string"),
    ('{"stem": "b", "caption": null}', "line 3: 'caption' must be a string"),
    ('{"stem": "", "caption": "c"}', "line 3: empty stem"),
    ('{"stem": "a", "caption": "again"}', "line 3: duplicate stem 'a' \\(first on line 1\\)"),
])
def test_bad_lines_name_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"stem": "a", "caption": "x"}\n\n' + bad_line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as info:
        read_captions(path)
    assert str(path) in str(info.value)


def test_missing_captions_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_captions(tmp_path / "nope.jsonl")


# --- template captions ------------------------------------------------------------------------

CLASSES = ClassInfo(names=("background", "road", "car", "sky", "traffic_light"), background=0)


def test_template_orders_by_area_and_omits_background():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:5] = 3  # sky 50
    mask[5:8] = 1  # road 30
    mask[8:, :6] = 2  # car 12
    # background 8
    assert template_caption(mask, CLASSES) == "a photo of sky, road and car"
    assert template_caption(mask, CLASSES, max_classes=2) == "a photo of sky and road"
    assert template_caption(mask, CLASSES, prefix="an image of") == "an image of sky, road and car"
    # the same names without a background class: "background" is a class like the others
    no_background = ClassInfo(names=CLASSES.names)
    assert template_caption(mask, no_background) == "a photo of sky, road, car and background"


def test_template_leaves_out_the_datasets_background_at_any_id_or_none():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:4] = 0  # 40
    mask[4:7] = 1  # 30
    mask[7:9] = 2  # 20
    mask[9:] = 3  # 10
    street = ClassInfo(names=("sky", "road", "clutter", "car"), background=2)
    assert template_caption(mask, street) == "a photo of sky, road and car"
    # fractions are still of all labelled pixels, the background's included (car is 10%)
    assert template_caption(mask, street, min_fraction=0.15) == "a photo of sky and road"
    # CamVid has no background: its id 0 (Sky) is named like every other class
    assert template_caption(mask, CAMVID_CLASSES) == "a photo of Sky, Building, Pole and Road"
    assert template_caption(np.zeros((4, 4), np.uint8), CAMVID_CLASSES) == "a photo of Sky"
    assert template_caption(np.full((4, 4), 2, np.uint8), street) == "a photo of an empty scene"


def test_template_min_fraction_and_ignore():
    mask = np.full((20, 20), 255, dtype=np.uint8)  # mostly ignore
    mask[0, :10] = 2  # car: 10 labelled pixels
    mask[1, :1] = 4  # traffic light: 1 pixel
    # fractions are of the labelled pixels (11), not of the whole image (400)
    assert template_caption(mask, CLASSES, min_fraction=0.05) == "a photo of car and traffic light"
    assert template_caption(mask, CLASSES, min_fraction=0.2) == "a photo of car"
    mask[2, :5] = 200  # ids outside the label space are not counted either
    assert template_caption(mask, CLASSES, min_fraction=0.05) == "a photo of car and traffic light"


def test_template_only_background_or_nothing():
    assert template_caption(np.zeros((4, 4), np.uint8), CLASSES) == "a photo of an empty scene"
    assert template_caption(np.full((4, 4), 255, np.uint8), CLASSES) == "a photo of an empty scene"
    with pytest.raises(ValueError):
        template_caption(np.zeros((2, 2, 3), np.uint8), CLASSES)


class _Masks:
    """The least a dataset needs for template captions: classes, masks and stems."""

    def __init__(self, masks, classes):
        self.masks, self.classes = masks, classes

    def __len__(self):
        return len(self.masks)

    def load_mask(self, i):
        return self.masks[i]

    def stem(self, i):
        return f"m{i}"


def test_caption_dataset_template_reads_the_background_from_the_dataset(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 2:] = 1
    road_is_background = ClassInfo(names=("sky", "road"), background=1)
    out = caption_dataset(_Masks([mask], road_is_background), tmp_path / "a.jsonl", progress=False)
    assert read_captions(out) == {"m0": "a photo of sky"}
    out = caption_dataset(_Masks([mask], ClassInfo(names=("sky", "road"))), tmp_path / "b.jsonl",
                          progress=False)
    assert read_captions(out) == {"m0": "a photo of sky and road"}


def test_caption_dataset_template_and_dataset(tmp_path):
    ds = ShapesDataset("val", num_images=12, resolution=32, seed=4)
    out = caption_dataset(ds, tmp_path / "caps.jsonl", progress=False, split="val")
    caps = read_captions(out, split="val")
    assert list(caps) == [ds.stem(i) for i in range(len(ds))]
    for i in range(len(ds)):
        names = {ds.classes.names[c] for c in np.unique(ds.load_mask(i)) if c != 0}
        caption = caps[ds.stem(i)]
        assert caption.startswith("a photo of ")
        assert all(name in caption for name in names)
        assert "background" not in caption  # shapes: id 0 is the background
    with pytest.raises(DatasetError, match="already exists"):
        caption_dataset(ds, out, method="dataset", progress=False)
    caption_dataset(ds, out, method="dataset", progress=False, overwrite=True)
    assert read_captions(out) == ds.captions()
    with pytest.raises(ValueError, match="unknown caption method"):
        caption_dataset(ds, tmp_path / "x.jsonl", method="magic")


# --- BLIP-2 (a tiny randomly initialised model, built offline) --------------------------------

@pytest.fixture(scope="module")
def tiny_blip2(tmp_path_factory) -> Path:
    pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    corpus = ["a photo of a red circle and a blue star on a dark background",
              "a small green striped square", "an image of a cat on a road"]
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "</s>"]))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    num_query_tokens = 4
    processor = transformers.Blip2Processor(
        image_processor=transformers.BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    tokenizer = processor.tokenizer  # now holds the "<image>" token
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = transformers.Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            vocab_size=64, max_position_embeddings=64),
        text_config=transformers.OPTConfig(
            vocab_size=len(tokenizer), hidden_size=32, word_embed_proj_dim=32, ffn_dim=64,
            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id),
        num_query_tokens=num_query_tokens, image_token_index=image_token_id)
    import torch

    torch.manual_seed(0)
    model = transformers.Blip2ForConditionalGeneration(config)
    folder = tmp_path_factory.mktemp("tiny-blip2")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(24 + 8 * i, 40, 3), dtype=np.uint8) for i in range(n)]


def test_blip2_captioner_plumbing(tiny_blip2):
    captioner = Blip2Captioner.from_pretrained(tiny_blip2, device="cpu", max_new_tokens=6,
                                               generate_kwargs={"min_new_tokens": 3})
    assert captioner.dtype.is_floating_point
    images = _images(5)
    one_by_one = [captioner.caption([im])[0] for im in images]
    batched = captioner.caption(images, batch_size=2)
    assert len(batched) == 5 and all(isinstance(c, str) for c in batched)
    assert batched == one_by_one
    assert all(c for c in batched)  # min_new_tokens: real (gibberish) words, not empty strings
    assert all("<image>" not in c for c in batched)
    assert captioner.caption([]) == []
    grey = captioner.caption([np.zeros((16, 16), np.uint8), np.ones((16, 16, 3), np.float32)])
    assert len(grey) == 2


def test_blip2_captioner_with_prompt(tiny_blip2):
    captioner = Blip2Captioner.from_pretrained(str(tiny_blip2), device="cpu", dtype="float32",
                                               prompt="a photo of", max_new_tokens=4, batch_size=3,
                                               generate_kwargs={"min_new_tokens": 4})
    captions = captioner.caption(_images(4))
    assert len(captions) == 4
    # the prompt is not repeated: only the 4 generated tokens come back
    assert all(len(c.split()) <= 4 for c in captions)


def test_blip2_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Blip2Captioner.from_pretrained(tmp_path / "missing", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="cannot load a BLIP-2"):
        Blip2Captioner.from_pretrained(empty, device="cpu")


def test_caption_dataset_blip2(tiny_blip2, tmp_path):
    ds = ShapesDataset("train", num_images=5, resolution=32)
    out = caption_dataset(ds, tmp_path / "c.jsonl", method="blip2", model=tiny_blip2, batch_size=2,
                          progress=False, device="cpu", max_new_tokens=3)
    assert list(read_captions(out)) == [ds.stem(i) for i in range(5)]
    captioner = Blip2Captioner.from_pretrained(tiny_blip2, device="cpu", max_new_tokens=3)
    out2 = caption_dataset(ds, tmp_path / "d.jsonl", method="blip2", model=captioner, batch_size=4,
                           progress=False)
    assert read_captions(out2) == read_captions(out)


# --- CLI --------------------------------------------------------------------------------------

def test_cli_make_data(tmp_path, capsys):
    out = tmp_path / "shapes"
    args = ["make-data", str(out), "--num-train", "3", "--num-val", "2", "--resolution", "16", "--seed", "5",
            "--no-progress"]
    assert main(args) == 0
    assert len(list((out / "images" / "train").iterdir())) == 3
    assert len(read_captions(out / "captions.jsonl", split="val")) == 2
    val_captions = read_captions(out / "captions.jsonl", split="val")
    assert val_captions == ShapesDataset("val", 2, 16, seed=5).captions()
    capsys.readouterr()
    assert main(args) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["make-data", str(tmp_path / "x"), "--resolution", "20"]) == 1
    assert "multiple of 8" in capsys.readouterr().err


def test_cli_help(capsys):
    for command in ("make-data", "caption"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--num-train" in text and "--method" in text and "blip2" in text


def test_cli_caption_folder(tmp_path, capsys):
    root = write_shapes_dataset(tmp_path / "shapes", num_train=4, num_val=3, resolution=16, progress=False)
    out = tmp_path / "val_captions.jsonl"
    args = ["caption", "--dataset", "folder", "--root", str(root), "--split", "val", "--output-file", str(out),
            "--no-progress"]
    assert main(args) == 0
    caps = read_captions(out, split="val")
    assert sorted(caps) == sorted(ShapesDataset("val", 3, 16).captions())
    assert all(c.startswith("a photo of") for c in caps.values())
    capsys.readouterr()
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--method", "template", "--min-fraction", "0.5"]) == 0
    assert main(["caption", "--dataset", "voc", "--split", "val", "--output-file", str(tmp_path / "v.jsonl")]) == 1
    assert "--root" in capsys.readouterr().err


def test_cli_caption_shapes_own_captions(tmp_path):
    out = tmp_path / "caps.jsonl"
    assert main(["caption", "--dataset", "shapes", "--split", "val", "--method", "dataset", "--output-file", str(out),
                 "--no-progress"]) == 0
    assert read_captions(out, split="val") == ShapesDataset("val", 128).captions()
