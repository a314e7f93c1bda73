"""A hostile user's corpus: broken datasets, configs, model folders, checkpoints, prompts files and
output folders, each given to the CLI in-process. Every case must exit non-zero with no traceback, print
one line (``error: ...``) naming the file or value, and leave everything the user had (inputs, earlier
outputs) byte-for-byte and mtime-for-mtime as it was, with no temporary or half-written file anywhere.

The tiny models and datasets are built once per module (about ten seconds); each case then takes a
fraction of a second. A case is a function that prepares its workspace and returns the command line and
the strings the message must contain.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_clip import save_tiny_clip

from jodiffusion.cli.main import main
from jodiffusion.utils.tempnames import standing_for, temp_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PICKLE_MAGIC = b"\x80"  # what torch.save's legacy format and every pickle of protocol >= 2 start with


# --- what the cases are given ------------------------------------------------------------------------

@dataclass
class Assets:
    root: Path
    vae_run: Path       # a train-vae run folder: checkpoints/, annotation_vae/
    vae: Path           # <vae_run>/annotation_vae
    model: Path         # an exported joint model (jodiffusion.json, denoiser/, annotation_vae/, text_encoder/)
    dataset: Path       # a make-data dataset, 32 px
    segmenter: Path     # a segmenter folder (untrained: only its files matter here)
    generated: Path     # a finished `generate` output of that model (1 pair)
    pickle: bytes       # a torch.save file's bytes


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    from jodiffusion.config.loader import load_config
    from jodiffusion.data.shapes_folder import write_shapes_dataset
    from jodiffusion.data.shapes_scene import SHAPES_CLASSES
    from jodiffusion.generation.generate import GenerateConfig, generate_dataset
    from jodiffusion.generation.prompts import PromptConfig
    from jodiffusion.segmentation.models import SegmenterConfig, build_segmenter, save_segmenter
    from jodiffusion.training.config import JointRunConfig, VAERunConfig
    from jodiffusion.training.joint import train_joint
    from jodiffusion.training.vae import train_vae

    root = tmp_path_factory.mktemp("assets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))  # the fingerprint cache stays out of ~/.cache
        vae = train_vae(load_config(VAERunConfig, group="vae", preset="tiny",
                                    overrides=[f"output_dir={root / 'vae'}", "train.save_every=2"]),
                        progress=False).export
        model = train_joint(load_config(JointRunConfig, group="joint", preset="tiny",
                                        overrides=[f"vae={vae}", f"output_dir={root / 'joint'}",
                                                   f"cache_dir={root / 'latents'}", "train.steps=2",
                                                   "sample_count=0"]), progress=False).export
        generate_dataset(model, GenerateConfig(num=1, out=str(root / "generated"), steps=1, batch_size=1,
                                               workers=0, prompts=PromptConfig(source="templates")), progress=False)
    dataset = write_shapes_dataset(root / "dataset", num_train=4, num_val=2, resolution=32, progress=False)
    net, _ = build_segmenter("small", SHAPES_CLASSES.num_classes)
    segmenter = save_segmenter(net, SegmenterConfig(model="small", num_classes=SHAPES_CLASSES.num_classes,
                                                    class_names=list(SHAPES_CLASSES.names)), root / "segmenter")
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2, 2)}, buf, _use_new_zipfile_serialization=False)
    return Assets(root, vae.parent, vae, model, dataset, segmenter, root / "generated", buf.getvalue())


# --- the corpus --------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    setup: Callable[[Path, Assets], tuple[list[str], list[str]]]
    report: bool = False          # the message is a multi-line report (every problem of a dataset listed)
    may_create: tuple[str, ...] = ()  # files (relative to the workspace) a refused run may leave


# A training command refused after it marked its new output folder leaves that marker alone, which is
# harmless: the same command starts there again without --overwrite (see the test at the end).
TRAINING_COMMANDS = ("train", "train-vae", "train-seg")
RUN_MARKER = "run/.jodiffusion-owner.json"


CASES: list[Case] = []


def case(name: str, **kw):
    def register(fn):
        CASES.append(Case(name, fn, **kw))
        return fn
    return register


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    return dst


def first(folder: Path) -> Path:
    return sorted(folder.iterdir())[0]


def vae_args(ws: Path, *extra: str) -> list[str]:
    return ["train-vae", "--preset", "tiny", f"output_dir={ws / 'run'}", "train.steps=1", *extra]


def seg_args(ws: Path, *extra: str) -> list[str]:
    return ["train-seg", "--preset", "tiny", f"output_dir={ws / 'run'}", "train.steps=1", *extra]


def joint_args(ws: Path, a: Assets, *extra: str) -> list[str]:
    return ["train", "--preset", "tiny", f"vae={a.vae}", f"output_dir={ws / 'run'}", f"cache_dir={ws / 'cache'}",
            "train.steps=1", "sample_count=0", *extra]


def gen_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", str(model), "-n", "1", "--out", str(out), "--steps", "1", "--workers", "0",
            "--no-progress", *(extra or ("--prompts", "templates"))]


def sample_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", str(model), "--out", str(out), "--steps", "1", *(extra or ("--prompt", "a circle"))]


def broken_dataset(ws: Path, a: Assets, edit: Callable[[Path], object]) -> Path:
    ds = copy(a.dataset, ws / "ds")
    edit(ds)
    return ds


def on_dataset(ws: Path, ds: Path, *extra: str) -> list[str]:
    return vae_args(ws, "data.name=folder", f"data.root={ds}", *extra)


def broken_model(ws: Path, a: Assets, rel: str, content: bytes | None) -> Path:
    model = copy(a.model, ws / "model")
    if content is None:
        (model / rel).unlink() if (model / rel).is_file() else shutil.rmtree(model / rel)
    else:
        (model / rel).write_bytes(content)
    return model


def png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path)


# datasets ---------------------------------------------------------------------------------------------

@case("dataset: data.root does not exist", report=True)
def _(ws, a):
    return on_dataset(ws, ws / "nowhere"), [str(ws / "nowhere")]


@case("dataset: data.name=folder without data.root")
def _(ws, a):
    return vae_args(ws, "data.name=folder"), ["data.root"]


@case("dataset: no masks/ folder", report=True)
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: shutil.rmtree(d / "masks"))
    return on_dataset(ws, ds), [str(ds / "masks" / "train")]


@case("dataset: no images/ folder", report=True)
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: shutil.rmtree(d / "images"))
    return seg_args(ws, "data.name=folder", f"data.root={ds}"), [str(ds / "images")]


@case("dataset: images/train is a file, not a folder", report=True)
def _(ws, a):
    def edit(d):
        shutil.rmtree(d / "images" / "train")
        (d / "images" / "train").write_text("not a folder")
    ds = broken_dataset(ws, a, edit)
    return on_dataset(ws, ds), [str(ds / "images" / "train")]


@case("dataset: no classes file")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").unlink())
    return on_dataset(ws, ds), [str(ds), "classes.json"]


@case("dataset: classes.json is not JSON")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text('{"names": ["a", '))
    return on_dataset(ws, ds), [str(ds / "classes.json")]


@case("dataset: classes.json is not UTF-8")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_bytes(b'{"names": ["caf\xe9", "b"]}'))
    return on_dataset(ws, ds), [str(ds / "classes.json")]


@case("dataset: classes.json is a JSON string")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text('"background, circle"'))
    return on_dataset(ws, ds), [str(ds / "classes.json")]


@case("dataset: classes.yaml is not YAML")
def _(ws, a):
    def edit(d):
        (d / "classes.json").unlink()
        (d / "classes.yaml").write_text("names: [background, circle\n  ignore_index: : 255\n")
    ds = broken_dataset(ws, a, edit)
    return on_dataset(ws, ds), [str(ds / "classes.yaml"), "line 2"]


@case("dataset: classes.yaml indented with a tab")
def _(ws, a):
    def edit(d):
        (d / "classes.json").unlink()
        (d / "classes.yaml").write_text("names:\n\t- background\n\t- circle\n")
    ds = broken_dataset(ws, a, edit)
    return on_dataset(ws, ds), [str(ds / "classes.yaml")]


@case("dataset: classes.json with no classes")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text('{"names": []}'))
    return on_dataset(ws, ds), [str(ds / "classes.json"), "at least 2"]


@case("dataset: classes.json with a duplicate name")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text('{"names": ["cat", "cat"]}'))
    return on_dataset(ws, ds), [str(ds / "classes.json"), "unique"]


@case("dataset: classes.json with 300 classes")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text(json.dumps({"names": [f"c{i}" for i in
                                                                                                range(300)]})))
    return on_dataset(ws, ds), [str(ds / "classes.json"), "300"]


@case("dataset: ignore_index collides with a class id")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text('{"names": ["a", "b"], "ignore_index": 1}'))
    return on_dataset(ws, ds), [str(ds / "classes.json"), "ignore_index 1"]


@case("dataset: classes.json ignore_index 300 (masks are 8-bit)")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text('{"names": ["a", "b"], "ignore_index": 300}'))
    return on_dataset(ws, ds), [str(ds / "classes.json"), "ignore_index 300", "0..255"]


@case("dataset: classes.json ignore_index 1.5")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text('{"names": ["a", "b"], "ignore_index": 1.5}'))
    return on_dataset(ws, ds), [str(ds / "classes.json"), "ignore_index"]


@case("dataset: classes.json palette colour out of range")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text('{"names": ["a", "b"], '
                                                                         '"palette": [[0, 0, 0], [300, 0, 0]]}'))
    return on_dataset(ws, ds), [str(ds / "classes.json"), "palette colour 1", "0..255"]


@case("dataset: an image that is a symlink to a text file", report=True)
def _(ws, a):
    (ws / "notes.txt").write_text("not an image")

    def edit(d):
        image = first(d / "images" / "train")
        image.unlink()
        image.symlink_to(ws / "notes.txt")
    ds = broken_dataset(ws, a, edit)
    return on_dataset(ws, ds), [str(first(ds / "images" / "train")), "a symlink to", str(ws / "notes.txt")]


@case("dataset: captions.jsonl with a 100 000-character caption (train)")
def _(ws, a):
    def edit(d):
        lines = (d / "captions.jsonl").read_text().splitlines()
        lines[1] = json.dumps({**json.loads(lines[1]), "caption": "a circle " * 11_112})
        (d / "captions.jsonl").write_text("\n".join(lines) + "\n")
    ds = broken_dataset(ws, a, edit)
    return joint_args(ws, a, "data.name=folder", f"data.root={ds}"), [str(ds / "captions.jsonl"), "line 2", "2000"]


@case("dataset: palette shorter than the class list")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "classes.json").write_text('{"names": ["a", "b"], '
                                                                         '"palette": [[1, 2, 3]]}'))
    return on_dataset(ws, ds), [str(ds / "classes.json"), "palette"]


@case("dataset: an image that is not an image", report=True)
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: first(d / "images" / "train").write_bytes(b"GIF89a but not really"))
    return on_dataset(ws, ds), [str(first(ds / "images" / "train"))]


@case("dataset: an RGB mask (wrong mask mode)", report=True)
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: png(np.full((32, 32, 3), 40, np.uint8), first(d / "masks" / "train")))
    return on_dataset(ws, ds), [str(first(ds / "masks" / "train"))]


@case("dataset: mask ids out of range", report=True)
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: png(np.full((32, 32), 77, np.uint8), first(d / "masks" / "train")))
    return on_dataset(ws, ds), [str(first(ds / "masks" / "train")), "77"]


@case("dataset: mask of another size than its image", report=True)
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: png(np.zeros((16, 24), np.uint8), first(d / "masks" / "train")))
    return on_dataset(ws, ds), [str(first(ds / "masks" / "train"))]


@case("dataset: an image without its mask", report=True)
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: first(d / "masks" / "train").unlink())
    return on_dataset(ws, ds), [str(first(ds / "images" / "train"))]


@case("dataset: split list is not UTF-8")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "splits" / "train.txt").write_bytes(b"train_000000\n\xff\xfe\n"))
    return on_dataset(ws, ds), [str(ds / "splits" / "train.txt")]


@case("dataset: split list names a stem that does not exist", report=True)
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "splits" / "train.txt").write_text("train_000000\nno_such_stem\n"))
    return on_dataset(ws, ds), ["no_such_stem"]


@case("dataset: captions.jsonl is not UTF-8")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "captions.jsonl").write_bytes(b'{"stem": "a", "caption": "\xff"}\n'))
    return joint_args(ws, a, "data.name=folder", f"data.root={ds}"), [str(ds / "captions.jsonl")]


@case("dataset: captions.jsonl line with a number for a stem")
def _(ws, a):
    ds = broken_dataset(ws, a, lambda d: (d / "captions.jsonl").write_text('{"stem": 1, "caption": "x"}\n'))
    return joint_args(ws, a, "data.name=folder", f"data.root={ds}"), [str(ds / "captions.jsonl"), "line 1"]


@case("dataset: validate --split ..")
def _(ws, a):
    return ["validate", "--dataset", "folder", "--root", str(a.dataset), "--split", ".."], ["'..'"]


@case("dataset: validate --json names a folder")
def _(ws, a):
    (ws / "reports").mkdir()
    return ["validate", "--dataset", "folder", "--root", str(a.dataset), "--json", str(ws / "reports")], \
        [str(ws / "reports")]


# configs ----------------------------------------------------------------------------------------------

@case("config: --config is not YAML")
def _(ws, a):
    (ws / "bad.yaml").write_text("train: {steps: 3\ndata: [\n")
    return vae_args(ws, "--config", str(ws / "bad.yaml")), [str(ws / "bad.yaml"), "line"]


@case("config: --config is not UTF-8")
def _(ws, a):
    (ws / "latin1.yaml").write_bytes(b"train:\n  steps: 3 # d\xe9j\xe0 vu\n")
    return vae_args(ws, "--config", str(ws / "latin1.yaml")), [str(ws / "latin1.yaml"), "UTF-8"]


@case("config: --config is a folder")
def _(ws, a):
    (ws / "configs").mkdir()
    return vae_args(ws, "--config", str(ws / "configs")), [str(ws / "configs")]


@case("config: --config does not exist")
def _(ws, a):
    return vae_args(ws, "--config", str(ws / "missing.yaml")), [str(ws / "missing.yaml")]


@case("config: --config holds a list")
def _(ws, a):
    (ws / "list.yaml").write_text("- train\n- data\n")
    return vae_args(ws, "--config", str(ws / "list.yaml")), [str(ws / "list.yaml"), "list"]


@case("config: --config with an unknown key")
def _(ws, a):
    (ws / "unknown.yaml").write_text("trian: {steps: 3}\n")
    return vae_args(ws, "--config", str(ws / "unknown.yaml")), [str(ws / "unknown.yaml"), "trian"]


@case("config: validate --config is not YAML")
def _(ws, a):
    (ws / "bad.yaml").write_text("data: {name: folder\nroot: [\n")
    return ["validate", "--config", str(ws / "bad.yaml")], [str(ws / "bad.yaml")]


@case("config: unknown override key")
def _(ws, a):
    return vae_args(ws, "train.bogus=1"), ["train.bogus"]


@case("config: wrong type")
def _(ws, a):
    return vae_args(ws, "train.steps=abc"), ["train.steps", "abc"]


@case("config: override without '='")
def _(ws, a):
    return vae_args(ws, "train.steps"), ["train.steps"]


@case("config: zero steps")
def _(ws, a):
    return vae_args(ws, "train.steps=0"), ["train.steps=0"]


@case("config: nan learning rate")
def _(ws, a):
    return vae_args(ws, "train.lr=nan"), ["train.lr=nan"]


@case("config: inf learning rate")
def _(ws, a):
    return seg_args(ws, "train.lr=inf"), ["train.lr=inf"]


@case("config: negative learning rate")
def _(ws, a):
    return vae_args(ws, "train.lr=-1"), ["train.lr=-1"]


@case("config: bad enum value")
def _(ws, a):
    return vae_args(ws, "train.mixed_precision=fp8"), ["fp8", "bf16"]


@case("config: resolution not a multiple of 8")
def _(ws, a):
    return vae_args(ws, "data.resolution=33"), ["data.resolution=33"]


@case("config: negative train.seed (train-vae)")
def _(ws, a):
    return vae_args(ws, "train.seed=-1"), ["train.seed=-1"]


@case("config: train.seed beyond 2**32 (train-seg)")
def _(ws, a):
    return seg_args(ws, f"train.seed={2 ** 40}"), [f"train.seed={2 ** 40}"]


@case("config: negative train.seed (train)")
def _(ws, a):
    return joint_args(ws, a, "train.seed=-7"), ["train.seed=-7"]


@case("config: negative data.seed")
def _(ws, a):
    return vae_args(ws, "data.seed=-1"), ["data.seed=-1"]


@case("config: a preset name that is a path")
def _(ws, a):
    return ["train-vae", "--preset", "../../../etc/passwd"], ["../../../etc/passwd"]


@case("config: unknown U-ViT preset")
def _(ws, a):
    return joint_args(ws, a, "model.preset=huge"), ["model.preset='huge'", "tiny"]


@case("config: nan guidance scale")
def _(ws, a):
    return joint_args(ws, a, "sampler.guidance_scale=nan"), ["sampler.guidance_scale"]


@case("config: unknown segmenter")
def _(ws, a):
    return seg_args(ws, "model=resnet9000"), ["resnet9000"]


# model folders -----------------------------------------------------------------------------------------

@case("model: garbage denoiser weights (generate)")
def _(ws, a):
    m = broken_model(ws, a, "denoiser/model.safetensors", b"\x00garbage" * 64)
    return gen_args(m, ws / "out"), [str(m / "denoiser" / "model.safetensors")]


@case("model: truncated denoiser weights (generate)")
def _(ws, a):
    data = (a.model / "denoiser" / "model.safetensors").read_bytes()
    m = broken_model(ws, a, "denoiser/model.safetensors", data[: len(data) // 2])
    return gen_args(m, ws / "out"), [str(m / "denoiser" / "model.safetensors"), "truncated"]


@case("model: a pickle renamed .safetensors (generate)")
def _(ws, a):
    m = broken_model(ws, a, "annotation_vae/model.safetensors", a.pickle)
    return gen_args(m, ws / "out"), [str(m / "annotation_vae" / "model.safetensors"), "pickle"]


@case("model: empty text encoder weights (sample)")
def _(ws, a):
    m = broken_model(ws, a, "text_encoder/model.safetensors", b"")
    return sample_args(m, ws / "out"), [str(m / "text_encoder" / "model.safetensors")]


@case("model: garbage denoiser weights (sample)")
def _(ws, a):
    m = broken_model(ws, a, "denoiser/model.safetensors", b"\xff" * 100)
    return sample_args(m, ws / "out"), [str(m / "denoiser" / "model.safetensors")]


@case("model: malformed annotation_vae/config.json (generate)")
def _(ws, a):
    m = broken_model(ws, a, "annotation_vae/config.json", b'{"class": "AnnotationVAE", ')
    return gen_args(m, ws / "out"), [str(m / "annotation_vae" / "config.json")]


@case("model: annotation_vae/config.json is a JSON list (sample)")
def _(ws, a):
    m = broken_model(ws, a, "annotation_vae/config.json", b"[1, 2, 3]")
    return sample_args(m, ws / "out"), [str(m / "annotation_vae" / "config.json")]


@case("model: malformed denoiser/config.json (sample)")
def _(ws, a):
    m = broken_model(ws, a, "denoiser/config.json", b"{")
    return sample_args(m, ws / "out"), [str(m / "denoiser" / "config.json")]


@case("model: malformed text_encoder/vocab.json (generate)")
def _(ws, a):
    m = broken_model(ws, a, "text_encoder/vocab.json", b"\xfe\xff\x00{")
    return gen_args(m, ws / "out"), [str(m / "text_encoder" / "vocab.json")]


@case("model: malformed jodiffusion.json (sample)")
def _(ws, a):
    m = broken_model(ws, a, "jodiffusion.json", b'{"format": 1,')
    return sample_args(m, ws / "out"), [str(m / "jodiffusion.json")]


@case("model: jodiffusion.json is a JSON list (generate)")
def _(ws, a):
    m = broken_model(ws, a, "jodiffusion.json", b"[]")
    return gen_args(m, ws / "out"), [str(m), "jodiffusion.json"]


@case("model: jodiffusion.json without its codec (sample)")
def _(ws, a):
    m = copy(a.model, ws / "model")
    meta = json.loads((m / "jodiffusion.json").read_text())
    del meta["codec"]
    (m / "jodiffusion.json").write_text(json.dumps(meta))
    return sample_args(m, ws / "out"), [str(m / "jodiffusion.json"), "codec"]


@case("model: jodiffusion.json with an invalid sampler (generate)")
def _(ws, a):
    m = copy(a.model, ws / "model")
    meta = json.loads((m / "jodiffusion.json").read_text())
    meta["sampler"] = {"steps": 0, "guidance_scale": 3.0, "solver": "euler"}
    (m / "jodiffusion.json").write_text(json.dumps(meta))
    return gen_args(m, ws / "out"), [str(m / "jodiffusion.json")]


@case("model: no annotation_vae/ folder (generate)")
def _(ws, a):
    m = broken_model(ws, a, "annotation_vae", None)
    return gen_args(m, ws / "out"), [str(m / "annotation_vae")]


@case("model: a file given as the model folder")
def _(ws, a):
    (ws / "model.ckpt").write_bytes(a.pickle)
    return gen_args(ws / "model.ckpt", ws / "out"), [str(ws / "model.ckpt")]


@case("model: wrong class count (annotation VAE config vs weights)")
def _(ws, a):
    m = copy(a.model, ws / "model")
    cfg = json.loads((m / "annotation_vae" / "config.json").read_text())
    cfg["num_classes"] = cfg["num_classes"] + 3
    (m / "annotation_vae" / "config.json").write_text(json.dumps(cfg))
    return gen_args(m, ws / "out"), [str(m / "annotation_vae" / "model.safetensors"), "does not match"]


@case("model: garbage annotation VAE weights (eval-vae)")
def _(ws, a):
    vae = copy(a.vae, ws / "vae")
    (vae / "model.safetensors").write_bytes(b"not a tensor file")
    return ["eval-vae", str(vae), "--resolution", "32"], [str(vae / "model.safetensors")]


@case("model: malformed segmenter config.json (eval-seg)")
def _(ws, a):
    seg = copy(a.segmenter, ws / "seg")
    (seg / "config.json").write_text('{"model": "small", num_classes: 9}')
    return ["eval-seg", str(seg), "--resolution", "32"], [str(seg / "config.json")]


@case("model: a VAE folder given as a segmenter (eval-seg)")
def _(ws, a):
    return ["eval-seg", str(a.vae), "--resolution", "32"], [str(a.vae / "config.json")]


@case("model: garbage --consistency-segmenter weights (generate)")
def _(ws, a):
    seg = copy(a.segmenter, ws / "seg")
    (seg / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    return gen_args(a.model, ws / "out", "--prompts", "templates", "--consistency-segmenter", str(seg)), \
        [str(seg / "model.safetensors")]


@case("model: eval-vae --dataset that does not exist")
def _(ws, a):
    return ["eval-vae", str(a.vae), "--dataset", "imagenet"], ["imagenet"]


# checkpoints -------------------------------------------------------------------------------------------

def broken_run(ws: Path, a: Assets, name: str, content: bytes) -> Path:
    run = copy(a.vae_run, ws / "run")
    for f in (run / "checkpoints").glob(f"step_*/{name}"):
        f.write_bytes(content)
    return run


@case("checkpoint: --resume latest, every checkpoint's weights garbage")
def _(ws, a):
    run = broken_run(ws, a, "model.safetensors", b"garbage" * 30)
    return ["train-vae", "--preset", "tiny", f"output_dir={run}", "--resume", "latest"], \
        [str(run / "checkpoints" / "step_00000004" / "model.safetensors")]


@case("checkpoint: --resume FOLDER whose weights are a pickle")
def _(ws, a):
    run = broken_run(ws, a, "model.safetensors", a.pickle)
    ckpt = run / "checkpoints" / "step_00000004"
    return ["train-vae", "--preset", "tiny", f"output_dir={run}", "--resume", str(ckpt)], \
        [str(ckpt / "model.safetensors")]


@case("checkpoint: --resume latest, state.json not UTF-8")
def _(ws, a):
    run = broken_run(ws, a, "state.json", b"\xff\xfe{")
    return ["train-vae", "--preset", "tiny", f"output_dir={run}", "--resume", "latest"], \
        [str(run / "checkpoints" / "step_00000004" / "state.json")]


@case("checkpoint: --resume latest, truncated optimizer state")
def _(ws, a):
    run = copy(a.vae_run, ws / "run")
    for f in (run / "checkpoints").glob("step_*/optimizer.safetensors"):
        f.write_bytes(f.read_bytes()[:100])
    return ["train-vae", "--preset", "tiny", f"output_dir={run}", "--resume", "latest"], \
        [str(run / "checkpoints" / "step_00000004" / "optimizer.safetensors")]


@case("checkpoint: --resume a folder that is no checkpoint")
def _(ws, a):
    run = copy(a.vae_run, ws / "run")
    return ["train-vae", "--preset", "tiny", f"output_dir={run}", "--resume", str(run / "annotation_vae")], \
        [str(run / "annotation_vae")]


@case("checkpoint: model.init_from garbage .safetensors")
def _(ws, a):
    (ws / "uvit.safetensors").write_bytes(b"\x10" * 64)
    return joint_args(ws, a, f"model.init_from={ws / 'uvit.safetensors'}"), [str(ws / "uvit.safetensors")]


@case("checkpoint: model.init_from pickle renamed .safetensors")
def _(ws, a):
    (ws / "uvit.safetensors").write_bytes(a.pickle)
    return joint_args(ws, a, f"model.init_from={ws / 'uvit.safetensors'}"), [str(ws / "uvit.safetensors"), "pickle"]


@case("checkpoint: model.init_from a .pth that is a broken zip")
def _(ws, a):
    (ws / "uvit_v1.pth").write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    return joint_args(ws, a, f"model.init_from={ws / 'uvit_v1.pth'}"), [str(ws / "uvit_v1.pth")]


@case("prompts: the model folder carries no captions (an older export) and --captions is not given")
def _(ws, a):
    # generate reads the captions the model folder carries, never the training run's config.yaml
    run = copy(a.model.parent, ws / "joint")
    (run / "export" / "captions.jsonl").unlink()
    argv = gen_args(run / "export", ws / "out", "--prompts", "captions")
    return argv, ["carries no training captions", "--captions"]


class Payload:
    """A pickle that would create a file when unpickled (it must never be)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


@case("checkpoint: train text.kind=clip, the CLIP folder holds a pickled model")
def _(ws, a):
    clip = save_tiny_clip(ws / "clip")
    (clip / "model.safetensors").unlink()
    torch.save({"weight": Payload(ws / "pwned")}, clip / "pytorch_model.bin")
    return joint_args(ws, a, "text.kind=clip", f"text.path={clip}"), [str(clip / "pytorch_model.bin"), "pickled"]


@case("checkpoint: backbone_weights garbage .safetensors")
def _(ws, a):
    (ws / "resnet50.safetensors").write_bytes(b"garbage" * 10)
    return seg_args(ws, "model=deeplabv3_resnet50", f"backbone_weights={ws / 'resnet50.safetensors'}"), \
        [str(ws / "resnet50.safetensors")]


# prompts -----------------------------------------------------------------------------------------------

@case("prompts: empty file (generate)")
def _(ws, a):
    (ws / "prompts.txt").write_bytes(b"")
    return gen_args(a.model, ws / "out", "--prompts-file", str(ws / "prompts.txt")), [str(ws / "prompts.txt")]


@case("prompts: only blank lines (generate)")
def _(ws, a):
    (ws / "prompts.txt").write_text("\n   \n\t\n")
    return gen_args(a.model, ws / "out", "--prompts-file", str(ws / "prompts.txt")), [str(ws / "prompts.txt")]


@case("prompts: not UTF-8 (generate)")
def _(ws, a):
    (ws / "prompts.txt").write_bytes("a photo of a caf\u00e9\n".encode("latin-1"))
    return gen_args(a.model, ws / "out", "--prompts-file", str(ws / "prompts.txt")), [str(ws / "prompts.txt"), "UTF-8"]


@case("prompts: binary file (generate)")
def _(ws, a):
    (ws / "prompts.bin").write_bytes(b"\x00\x01\x02 a circle \x00" * 20)
    return gen_args(a.model, ws / "out", "--prompts-file", str(ws / "prompts.bin")), [str(ws / "prompts.bin")]


@case("prompts: not UTF-8 (sample --prompts-file)")
def _(ws, a):
    (ws / "prompts.txt").write_bytes(b"a circle\n\xff\xfe a star\n")
    return sample_args(a.model, ws / "out", "--prompts-file", str(ws / "prompts.txt")), [str(ws / "prompts.txt")]


@case("prompts: --prompts-file is a folder (sample)")
def _(ws, a):
    (ws / "prompts").mkdir()
    return sample_args(a.model, ws / "out", "--prompts-file", str(ws / "prompts")), [str(ws / "prompts")]


@case("prompts: --prompts-file does not exist (sample)")
def _(ws, a):
    return sample_args(a.model, ws / "out", "--prompts-file", str(ws / "nope.txt")), [str(ws / "nope.txt")]


@case("prompts: a JSON line naming an unknown class")
def _(ws, a):
    (ws / "prompts.jsonl").write_text('{"prompt": "a zebra", "classes": ["zebra"]}\n')
    return gen_args(a.model, ws / "out", "--prompts-file", str(ws / "prompts.jsonl")), ["zebra", "line 1"]


@case("prompts: --captions not UTF-8 (generate)")
def _(ws, a):
    (ws / "captions.jsonl").write_bytes(b'{"stem": "x", "caption": "\xe9t\xe9"}\n')
    return gen_args(a.model, ws / "out", "--prompts", "captions", "--captions", str(ws / "captions.jsonl")), \
        [str(ws / "captions.jsonl")]


@case("prompts: --captions with a 100 000-character line (generate)")
def _(ws, a):
    (ws / "captions.jsonl").write_text('{"stem": "a", "caption": "a circle"}\n'
                                       + json.dumps({"stem": "b", "caption": "x" * 100_000}) + "\n")
    return gen_args(a.model, ws / "out", "--prompts", "captions", "--captions", str(ws / "captions.jsonl")), \
        [str(ws / "captions.jsonl"), "line 2", "100,000 characters"]


@case("prompts: generate --prompts-file with a 100 000-character line")
def _(ws, a):
    (ws / "prompts.txt").write_text("a circle\n" + "x" * 100_000 + "\n")
    return gen_args(a.model, ws / "out", "--prompts-file", str(ws / "prompts.txt")), \
        [str(ws / "prompts.txt"), "line 2", "100,000 characters"]


@case("prompts: sample --prompts-file with a 100 000-character line")
def _(ws, a):
    (ws / "prompts.txt").write_text("a circle\n\n" + "x" * 100_000 + "\n")
    return sample_args(a.model, ws / "out", "--prompts-file", str(ws / "prompts.txt")), \
        [str(ws / "prompts.txt"), "line 3", "100,000 characters"]


@case("prompts: sample --prompt of 100 000 characters")
def _(ws, a):
    return sample_args(a.model, ws / "out", "--prompt", "x" * 100_000), ["prompt 1", "100,000 characters"]


# seeds and sampling values ----------------------------------------------------------------------------

@case("seed: generate --seed -1")
def _(ws, a):
    return gen_args(a.model, ws / "out", "--prompts", "templates", "--seed", "-1"), ["seed=-1"]


@case("seed: sample --seed -1")
def _(ws, a):
    return sample_args(a.model, ws / "out", "--prompt", "a circle", "--seed", "-1"), ["seed=-1"]


@case("seed: make-data --seed -1")
def _(ws, a):
    return ["make-data", str(ws / "data"), "--seed", "-1", "--num-train", "1", "--num-val", "1"], ["--seed"]


@case("sampling: sample --steps 0")
def _(ws, a):
    return sample_args(a.model, ws / "out", "--prompt", "a circle", "--steps", "0"), ["steps=0"]


@case("sampling: sample --guidance nan")
def _(ws, a):
    return sample_args(a.model, ws / "out", "--prompt", "a circle", "--guidance", "nan"), ["guidance=nan"]


@case("sampling: sample --min-confidence 2")
def _(ws, a):
    return sample_args(a.model, ws / "out", "--prompt", "a circle", "--min-confidence", "2"), ["min_confidence=2"]


@case("sampling: generate --guidance inf")
def _(ws, a):
    return gen_args(a.model, ws / "out", "--prompts", "templates", "--guidance", "inf"), ["guidance=inf"]


# a config's bad value, given as a flag or as KEY=VALUE, is a ConfigError naming the key -------------------

@case("config: generate batch_size=0")
def _(ws, a):
    return gen_args(a.model, ws / "out", "--prompts", "templates", "batch_size=0"), ["batch_size=0"]


@case("config: generate --max-ignore 1 filters.max_ignore=2 (the override wins)")
def _(ws, a):
    return gen_args(a.model, ws / "out", "--prompts", "templates", "--max-ignore", "1", "filters.max_ignore=2"), \
        ["filters", "max_ignore=2"]


@case("config: generate without --num")
def _(ws, a):
    return ["generate", str(a.model), "--out", str(ws / "out")], ["'num'", "num=VALUE"]


@case("config: sample --num 2 --per-prompt 3")
def _(ws, a):
    return sample_args(a.model, ws / "out", "--prompt", "a circle", "--num", "2", "--per-prompt", "3"), \
        ["num=2", "per_prompt=3"]


@case("config: sample num=0")
def _(ws, a):
    return sample_args(a.model, ws / "out", "--prompt", "a circle", "num=0"), ["num=0"]


@case("config: eval-joint --num 0")
def _(ws, a):
    return ["eval-joint", str(a.model), "--resolution", "32", "--num", "0"], ["num=0"]


@case("config: eval-vae data.resolution=12")
def _(ws, a):
    return ["eval-vae", str(a.vae), "data.resolution=12"], ["data.resolution=12"]


@case("config: eval-seg --batch-size 0")
def _(ws, a):
    return ["eval-seg", str(a.segmenter), "--batch-size", "0"], ["batch_size=0"]


@case("config: eval-codec unknown key")
def _(ws, a):
    return ["eval-codec", str(a.vae), "data.bogus=1"], ["data.bogus"]


@case("config: validate --config without a data: section")
def _(ws, a):
    (ws / "run.yaml").write_text("train:\n  steps: 3\n")
    return ["validate", "--config", str(ws / "run.yaml")], [str(ws / "run.yaml"), "data:"]


# old spellings of flags whose meaning moved: refused, naming the new one -----------------------------------

@case("config: generate --prompts FILE (now --prompts-file)")
def _(ws, a):
    (ws / "prompts.txt").write_text("a circle\n")
    return gen_args(a.model, ws / "out", "--prompts", str(ws / "prompts.txt")), \
        [f"--prompts-file {ws / 'prompts.txt'}"]


@case("config: caption --out FILE (now --output-file)")
def _(ws, a):
    return ["caption", "--dataset", "folder", "--root", str(a.dataset), "--out", str(ws / "captions.jsonl")], \
        [f"--output-file {ws / 'captions.jsonl'}"]


@case("config: export-mmseg --out FILE (now --output-file)")
def _(ws, a):
    return ["export-mmseg", str(a.dataset), "--out", str(ws / "mmseg.py")], [f"--output-file {ws / 'mmseg.py'}"]


# output folders ---------------------------------------------------------------------------------------

def user_folder(ws: Path, name: str = "mine") -> Path:
    folder = ws / name
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "holiday.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("keep me")
    return folder


@case("output: generate --out is a file")
def _(ws, a):
    (ws / "out.txt").write_text("mine")
    return gen_args(a.model, ws / "out.txt"), [str(ws / "out.txt")]


@case("output: generate --out an unrelated non-empty folder")
def _(ws, a):
    mine = user_folder(ws)
    return gen_args(a.model, mine), [str(mine)]


@case("output: generate --overwrite an unrelated non-empty folder")
def _(ws, a):
    mine = user_folder(ws)
    return gen_args(a.model, mine, "--prompts", "templates", "--overwrite"), [str(mine), "notes.txt"]


@case("output: generate --overwrite its own output holding a user file")
def _(ws, a):
    out = copy(a.generated, ws / "gen")
    (out / "my_notes.txt").write_text("analysis")
    return gen_args(a.model, out, "--prompts", "templates", "--overwrite", "--seed", "5"), ["my_notes.txt"]


@case("output: generate --overwrite its own output with a broken model")
def _(ws, a):
    out = copy(a.generated, ws / "gen")
    m = broken_model(ws, a, "denoiser/model.safetensors", b"garbage")
    return gen_args(m, out, "--prompts", "templates", "--overwrite"), [str(m / "denoiser" / "model.safetensors")]


@case("output: generate --out through '..' into an unrelated folder")
def _(ws, a):
    user_folder(ws)
    (ws / "sub").mkdir()
    return gen_args(a.model, ws / "sub" / ".." / "mine", "--prompts", "templates", "--overwrite"), ["notes.txt"]


def locked_by_live_process(folder: Path, command: str) -> int:
    """``folder`` holding the lock of a live process (pytest's parent, which outlives the case)."""
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getppid()
    (folder / ".jodiffusion-lock.json").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                                 "command": command, "started": 0}))
    return pid


@case("output: generate into a folder another generate is writing")
def _(ws, a):
    pid = locked_by_live_process(ws / "gen", "generate")
    return gen_args(a.model, ws / "gen"), [str(ws / "gen"), "being written by another run", f"process {pid}"]


@case("output: train-vae --overwrite a run folder another run is writing")
def _(ws, a):
    pid = locked_by_live_process(ws / "run", "train-vae")
    return vae_args(ws, "--overwrite"), [str(ws / "run"), "`jodiffusion train-vae`", f"process {pid}"]


@case("output: generate --split ..")
def _(ws, a):
    return gen_args(a.model, ws / "out", "--prompts", "templates", "--split", ".."), ["'..'"]


@case("output: sample --overwrite an unrelated non-empty folder")
def _(ws, a):
    mine = user_folder(ws)
    return sample_args(a.model, mine, "--prompt", "a circle", "--overwrite"), [str(mine), "notes.txt"]


@case("output: sample --out is a file")
def _(ws, a):
    (ws / "out.txt").write_text("mine")
    return sample_args(a.model, ws / "out.txt"), [str(ws / "out.txt")]


@case("output: make-data into an unrelated non-empty folder")
def _(ws, a):
    mine = user_folder(ws)
    return ["make-data", str(mine), "--num-train", "1", "--num-val", "1", "--resolution", "16"], [str(mine)]


@case("output: make-data --overwrite an unrelated non-empty folder")
def _(ws, a):
    mine = user_folder(ws)
    return ["make-data", str(mine), "--overwrite", "--num-train", "1", "--num-val", "1", "--resolution", "16"], \
        [str(mine), "notes.txt"]


@case("output: make-data --overwrite a real dataset with a classes.json")
def _(ws, a):
    real = user_folder(ws, "voc")
    (real / "classes.json").write_text('{"names": ["background", "cat"]}')
    return ["make-data", str(real), "--overwrite", "--num-train", "1", "--num-val", "1", "--resolution", "16"], \
        [str(real)]


@case("output: make-data --overwrite its own dataset holding a user file")
def _(ws, a):
    ds = copy(a.dataset, ws / "ds")
    (ds / "README.md").write_text("my notes")
    return ["make-data", str(ds), "--overwrite", "--num-train", "1", "--num-val", "1", "--resolution", "16"], \
        ["README.md"]


@case("output: make-data under a file")
def _(ws, a):
    (ws / "file").write_text("mine")
    return ["make-data", str(ws / "file" / "data"), "--num-train", "1", "--num-val", "1", "--resolution", "16"], \
        [str(ws / "file")]


@case("output: train-vae --overwrite an unrelated non-empty folder")
def _(ws, a):
    mine = user_folder(ws)
    return ["train-vae", "--preset", "tiny", f"output_dir={mine}", "--overwrite"], [str(mine), "notes.txt"]


@case("output: train-vae output_dir under a file")
def _(ws, a):
    (ws / "file").write_text("mine")
    return ["train-vae", "--preset", "tiny", f"output_dir={ws / 'file' / 'run'}"], [str(ws / "file")]


@case("output: train-seg into another command's run")
def _(ws, a):
    run = copy(a.vae_run, ws / "run")
    return ["train-seg", "--preset", "tiny", f"output_dir={run}", "--overwrite"], [str(run), "train-vae"]


@case("output: eval-vae --json names a folder")
def _(ws, a):
    (ws / "reports").mkdir()
    return ["eval-vae", str(a.vae), "--resolution", "32", "--json", str(ws / "reports")], [str(ws / "reports")]


@case("output: export-mmseg --output-file names a folder")
def _(ws, a):
    (ws / "configs").mkdir()
    return ["export-mmseg", str(a.dataset), "--output-file", str(ws / "configs")], [str(ws / "configs")]


@case("output: caption --output-file names a folder")
def _(ws, a):
    (ws / "captions").mkdir()
    return ["caption", "--dataset", "folder", "--root", str(a.dataset), "--output-file", str(ws / "captions")], \
        [str(ws / "captions")]


# a user's files that look temporary, locks, --resume without a run ------------------------------------------

@case("output: generate into a folder holding only the user's .thesis-draft.tmp")
def _(ws, a):
    (ws / "out").mkdir()
    (ws / "out" / ".thesis-draft.tmp").write_text("my draft")  # was taken for the tool's own and deleted
    return gen_args(a.model, ws / "out"), [str(ws / "out")]


@case("output: train-vae into a folder holding only the user's .notes.tmp")
def _(ws, a):
    (ws / "run").mkdir()
    (ws / "run" / ".notes.tmp").write_text("my notes")
    return vae_args(ws), [str(ws / "run")]


@case("checkpoint: --resume latest into a folder that does not exist (a typo)")
def _(ws, a):
    return vae_args(ws / "no" / "such", "--resume", "latest"), [str(ws / "no" / "such" / "run"), "no earlier run"]


@case("checkpoint: --resume latest into a folder holding only a stale lock")
def _(ws, a):
    (ws / "run").mkdir()
    (ws / "run" / ".jodiffusion-lock.json").write_text(json.dumps(
        {"pid": dead_pid(), "host": socket.gethostname(), "command": "train-vae", "started": 0}))
    return vae_args(ws, "--resume", "latest"), [str(ws / "run"), "no earlier run"]


@case("output: the lock's name in the output folder is a folder (generate)")
def _(ws, a):
    where = ws / "out" / ".jodiffusion-lock.json"
    (where / "keep").mkdir(parents=True)
    os.utime(where, (0, 0))  # old: an unreadable lock this old used to be renamed away as stale
    return gen_args(a.model, ws / "out"), [str(where), "is a folder"]


@case("output: the lock's name beside make-data's folder is a folder")
def _(ws, a):
    where = ws / ".shapes.jodiffusion-lock.json"
    (where / "keep").mkdir(parents=True)
    os.utime(where, (0, 0))
    return ["make-data", str(ws / "shapes"), "--num-train", "2", "--num-val", "1"], [str(where), "is a folder"]


@case("output: the lock was taken on another host")
def _(ws, a):
    (ws / "out").mkdir()
    where = ws / "out" / ".jodiffusion-lock.json"
    where.write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "generate", "started": 0}))
    return gen_args(a.model, ws / "out"), [str(ws / "out"), "elsewhere", f"rm -- {where}"]


@case("config: refine --ignore-index 300")
def _(ws, a):
    return ["refine", str(a.dataset / "masks"), str(ws / "out"), "--ignore-index", "300", "--workers", "1",
            "--no-progress"], ["--ignore-index 300", "0..255"]


@case("checkpoint: train text.kind=clip, the CLIP folder's pytorch_model.bin is 0 bytes")
def _(ws, a):
    clip = save_tiny_clip(ws / "clip")
    (clip / "model.safetensors").unlink()
    (clip / "pytorch_model.bin").write_bytes(b"")
    return joint_args(ws, a, "text.kind=clip", f"text.path={clip}"), [str(clip / "pytorch_model.bin"), "empty"]


@case("checkpoint: train text.kind=clip, the CLIP folder's pytorch_model.bin is a truncated zip")
def _(ws, a):
    clip = save_tiny_clip(ws / "clip")
    (clip / "model.safetensors").unlink()
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(8, 8)}, buf)
    (clip / "pytorch_model.bin").write_bytes(buf.getvalue()[:300])
    return joint_args(ws, a, "text.kind=clip", f"text.path={clip}"), [str(clip / "pytorch_model.bin"), "truncated"]


@case("checkpoint: backbone_weights an empty .pth")
def _(ws, a):
    (ws / "resnet50.pth").write_bytes(b"")
    return seg_args(ws, "model=deeplabv3_resnet50", f"backbone_weights={ws / 'resnet50.pth'}"), \
        [str(ws / "resnet50.pth"), "empty"]


@case("checkpoint: backbone_weights a truncated .pth")
def _(ws, a):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(8, 8)}, buf)
    (ws / "resnet50.pth").write_bytes(buf.getvalue()[:300])
    return seg_args(ws, "model=deeplabv3_resnet50", f"backbone_weights={ws / 'resnet50.pth'}"), \
        [str(ws / "resnet50.pth"), "truncated"]


def dead_pid() -> int:
    """The id of a process that has exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


# --- running a case ----------------------------------------------------------------------------------

def snapshot(*roots: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``roots``: (size, mtime_ns, sha256): what the user had."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.is_symlink():
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def is_temporary(path: str) -> bool:
    return any(part.startswith(".") and (part.endswith((".tmp", ".old")) or part.startswith(".step_"))
               for part in Path(path).parts)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a usage error
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - any escape is the failure this corpus looks for
        pytest.fail(f"traceback escaped the CLI: {type(exc).__name__}: {exc}")
    out, err = capsys.readouterr()
    return code, out, err


def error_message(err: str) -> tuple[str, list[str]]:
    """The ``error: ...`` line the CLI printed and the lines after it (progress bars use \\r)."""
    lines = err.replace("\r", "\n").split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert starts, f"no 'error: ' line on stderr:\n{err}"
    assert len(starts) == 1, f"more than one error line:\n{err}"
    return lines[starts[0]], [line for line in lines[starts[0] + 1:] if line.strip()]


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(c: Case, assets, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    ws = tmp_path / "ws"
    ws.mkdir()
    argv, expected = c.setup(ws, assets)
    before = snapshot(ws, assets.root)
    entries_before = {p.name for p in ws.iterdir()}

    code, out, err = run_cli(argv, capsys)

    assert code != 0, f"exit status 0 for a bad input; stdout:\n{out}\nstderr:\n{err}"
    line, rest = error_message(err)
    if c.report:  # a dataset report: the first line says what and where, the next list every problem
        text = "\n".join([line, *rest])
    else:
        assert not rest, f"the message is not one line:\n{err}"
        text = line
    for want in expected:
        assert want in text, f"{want!r} not named in: {text}"
    assert "weights_only" not in text, f"torch's advice quoted (loading unsafely): {text}"
    after = snapshot(ws, assets.root)
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, f"files the user had were changed or deleted: {changed}"
    new = sorted(set(after) - set(before))
    assert not [p for p in new if is_temporary(p)], f"temporary files left: {new}"
    allowed = {*c.may_create, *((RUN_MARKER,) if argv[0] in TRAINING_COMMANDS else ())}
    stray = [p for p in new if p not in {str(ws / name) for name in allowed}]
    assert not stray, f"a refused run wrote files: {stray}"
    new_entries = {p.name for p in ws.iterdir()} - entries_before - {Path(name).parts[0] for name in allowed}
    assert not new_entries, f"a refused run created {sorted(new_entries)}"


def test_validate_reports_an_ignore_index_outside_0_255(assets, tmp_path, capsys):
    """``"ignore_index": 300`` passed validate with exit 0."""
    ds = copy(assets.dataset, tmp_path / "ds")
    (ds / "classes.json").write_text('{"names": ["a", "b"], "ignore_index": 300}')
    code, out, err = run_cli(["validate", "--dataset", "folder", "--root", str(ds)], capsys)
    assert code != 0 and str(ds / "classes.json") in out + err and "ignore_index 300" in out + err


def test_the_corpus_is_large_and_covers_every_area():
    areas = {c.name.split(":")[0] for c in CASES}
    assert len(CASES) >= 40
    assert {"dataset", "config", "model", "checkpoint", "prompts", "output"} <= areas


def test_a_refused_training_run_can_start_again_without_overwrite(tmp_path, capsys):
    """What a refused training command may leave (its marker in a new folder) never blocks the next run."""
    run = tmp_path / "run"
    code, _, err = run_cli(["train-vae", "--preset", "tiny", f"output_dir={run}", "data.name=folder",
                            f"data.root={tmp_path / 'nowhere'}"], capsys)
    assert code == 1 and "nowhere" in err
    code, _, err = run_cli(["train-vae", "--preset", "tiny", f"output_dir={run}", "train.steps=1",
                            "scale_samples=4"], capsys)
    assert code == 0, err
    assert (run / "annotation_vae" / "model.safetensors").is_file()


# --- a kill during the first writes; two runs into one folder -------------------------------------------

def first_writes(monkeypatch, out: Path, snaps: Path, limit: int = 3) -> list[Path]:
    """Copy ``out`` as it stands at each of its first ``limit`` writes: right after a temporary file is
    created (0 bytes) and right before one is renamed into place. Each copy is what a kill (SIGKILL, no
    clean-up) at that moment leaves."""
    import tempfile

    taken: list[Path] = []
    real_mkstemp, real_replace = tempfile.mkstemp, os.replace

    def snap(where) -> None:
        if len(taken) < limit and out.is_dir() and Path(where).parent == out:
            taken.append(shutil.copytree(out, snaps / str(len(taken)), symlinks=True))

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        snap(name)
        return fd, name

    def replace(src, dst, *args, **kwargs):
        snap(src)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "replace", replace)
    return taken


def folder_commands(ws: Path, a: Assets) -> dict[str, tuple[list[str], tuple[tuple[str, ...], ...]]]:
    """Every command that writes an output folder in place: (argv, the reruns to try: extra flags)."""
    run_reruns = ((), ("--resume", "latest"), ("--overwrite",))
    return {
        "generate": (gen_args(a.model, ws / "out"), ((), ("--overwrite",))),
        "sample": (sample_args(a.model, ws / "out"), ((), ("--overwrite",))),
        "refine": (["refine", str(a.dataset / "masks"), str(ws / "out"), "--workers", "1",
                    "--no-progress"], ((), ("--overwrite",))),
        "train-vae": (["train-vae", "--preset", "tiny", f"output_dir={ws / 'out'}", "train.steps=1",
                       "scale_samples=4"], run_reruns),
        "train-seg": (["train-seg", "--preset", "tiny", f"output_dir={ws / 'out'}", "train.steps=1"], run_reruns),
        "train": (["train", "--preset", "tiny", f"vae={a.vae}", f"output_dir={ws / 'out'}",
                   f"cache_dir={ws / 'cache'}", "train.steps=1", "sample_count=0"], run_reruns),
    }


@pytest.mark.parametrize("command", ["generate", "sample", "refine", "train-vae", "train-seg", "train"])
def test_a_kill_at_each_first_write_never_strands_the_folder(command, assets, tmp_path, capsys, monkeypatch):
    """A kill while only the marker's temporary file (or the lock's, or the next file's
    temporary file) existed left a folder that no rerun accepted. Now every rerun just works: the plain
    one, ``--overwrite`` and (training) ``--resume latest``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    ws = tmp_path / "ws"
    ws.mkdir()
    argv, reruns = folder_commands(ws, assets)[command]
    out = ws / "out"
    with monkeypatch.context() as mp:
        states = first_writes(mp, out, tmp_path / "snaps")
        code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert len(states) == 3
    assert any(standing_for(p.name) == ".jodiffusion-owner.json" for s in states for p in s.iterdir())
    for state in states:
        for extra in reruns:
            shutil.rmtree(out)
            shutil.copytree(state, out, symlinks=True)
            code, _, err = run_cli([*argv, *extra], capsys)
            assert code == 0, f"rerun {extra} after a kill leaving {sorted(p.name for p in state.iterdir())}: {err}"
            left = [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name == ".jodiffusion-lock.json"]
            assert not left, f"left behind: {left}"


LOCK_HOLDER = """
import sys
from jodiffusion.utils.lock import acquire
acquire(sys.argv[1], "generate")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_run_into_a_folder_being_written_is_refused_then_a_dead_holder_is_stale(assets, tmp_path, capsys,
                                                                                        monkeypatch):
    """Two ``generate`` runs into one folder both did all the work, and one failed with a message
    about a missing temporary file. Now the second is refused in one line naming the first (a real second
    process holding the lock); once that process is killed, its lock is stale and a rerun just works."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        code, _, err = run_cli(gen_args(assets.model, out), capsys)
        line, rest = error_message(err)
        assert code == 1 and not rest
        assert f"{out} is being written by another run: `jodiffusion generate`, process {holder.pid}" in line
        assert snapshot(out) == before and [p.name for p in out.iterdir()] == [".jodiffusion-lock.json"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, _, err = run_cli(gen_args(assets.model, out), capsys)  # the holder died without cleaning up
    assert code == 0, err
    assert (out / "generation.json").is_file() and not (out / ".jodiffusion-lock.json").exists()


def test_the_lock(tmp_path):
    import socket

    from jodiffusion.utils import lock

    folder = tmp_path / "run"
    path = lock.acquire(folder, "train")
    with pytest.raises(lock.FolderLockedError, match=f"process {os.getpid()}"):
        lock.acquire(folder, "train")  # held by this very process: still refused
    lock.release(path)
    assert list(folder.iterdir()) == []
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    record = {"pid": int(dead.stdout), "host": socket.gethostname(), "command": "train", "started": 0}
    path.write_text(json.dumps(record))
    lock.release(lock.acquire(folder, "train"))  # a dead process's lock is taken over
    path.write_text(json.dumps({**record, "host": "elsewhere"}))  # cannot be checked from here: refused
    with pytest.raises(lock.FolderLockedError, match="on elsewhere"):
        lock.acquire(folder, "train")
    with lock.folder_lock(tmp_path / "new", "refine"):
        assert (tmp_path / "new" / lock.LOCK_FILE).is_file()
    assert not (tmp_path / "new").exists()  # created for the lock and left empty: removed


def test_import_and_make_data_take_a_lock_beside_out_and_clear_killed_builds(tmp_path, capsys, caplog):
    """Import and make-data build OUT in a hidden folder beside it and rename it into
    place. A kill left that folder behind for good, and two runs at once both did all the work (the last
    rename won). Now a lock file beside OUT keeps out a second run, naming the first, and the build
    folders of killed runs are removed by the next run. Only the tool's own temporary names are
    removed (a user's ``.OUT.2024-backup.old/`` was deleted as a leftover), and the log names them."""
    from jodiffusion.utils import lock

    caplog.set_level("INFO", logger="jodiffusion")

    src = tmp_path / "src"
    for i in range(4):
        rgb = np.random.default_rng(i).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        ids = np.zeros((12, 16), np.uint8)
        ids[:6] = 1
        (src / "images").mkdir(parents=True, exist_ok=True)
        (src / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(src / "images" / f"{i}.png")
        Image.fromarray(ids).save(src / "masks" / f"{i}.png")
    for command, argv, out in (
            ("import", ["import", str(src), "--out", str(tmp_path / "imported"), "--names", "a,b", "--no-progress"],
             tmp_path / "imported"),
            ("make-data", ["make-data", str(tmp_path / "shapes"), "--num-train", "2", "--num-val", "1"],
             tmp_path / "shapes")):
        killed = tmp_path / temp_name(out.name)
        # siblings of the user's that look like build folders but are not the tool's names: never touched
        users = [tmp_path / f".{out.name}.2024-backup.old", tmp_path / f".{out.name}.my notes.tmp",
                 tmp_path / f".{out.name}.import-0a1b2c3d.tmp"]
        for folder in users:
            (folder / "keep").mkdir(parents=True)
        with lock.beside_lock(out, command):  # another run is building OUT (this process holds its lock)
            (killed / "images").mkdir(parents=True)  # what a kill during a build leaves beside OUT
            code, _, err = run_cli(argv, capsys)
            line, _ = error_message(err)
            assert code == 1 and f"{out} is being written by another run: `jodiffusion {command}`" in line
            assert not out.exists() and killed.is_dir()  # refused: nothing changed
        code, _, err = run_cli(argv, capsys)
        assert code == 0, err
        assert out.is_dir() and not killed.exists() and not lock.beside_lock_path(out).exists()
        assert all((folder / "keep").is_dir() for folder in users)
        assert killed.name in caplog.text  # the clean-up says what it removed


def test_generate_removes_only_its_own_leftovers_and_names_them(assets, tmp_path, capsys, caplog, monkeypatch):
    """A rerun of ``generate`` deleted any ``.*.tmp`` in its folder as its own (a user's
    ``.thesis-draft.tmp`` too) and said only how many. Now only the tool's temporary names go, named."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    caplog.set_level("INFO", logger="jodiffusion")
    out = copy(assets.generated, tmp_path / "out")
    mine = [out / ".thesis-draft.tmp", out / "images" / "train" / ".notes.old.tmp"]
    for path in mine:
        path.write_text("mine")
    leftover = out / "images" / "train" / temp_name("00000000.png")
    leftover.write_bytes(b"half")
    code, _, err = run_cli(gen_args(assets.model, out), capsys)
    assert code == 0, err
    assert all(path.read_text() == "mine" for path in mine) and not leftover.exists()
    assert leftover.name in caplog.text


# --- a full disk ----------------------------------------------------------------------------------------

def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def fail_temp_writes(monkeypatch, method: str = "write_text") -> None:
    """Every write to a temporary file of an atomic write (``.<name>.<random>.tmp``) hits a full disk."""
    real = getattr(pathlib.Path, method)

    def write(self, *args, **kwargs):
        if self.name.startswith(".") and self.name.endswith(".tmp"):
            enospc()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, method, write)


def no_temporary_files(root: Path) -> None:
    left = [str(p) for p in root.rglob("*") if is_temporary(str(p.relative_to(root)))]
    assert not left, f"temporary files left: {left}"


def test_full_disk_in_an_atomic_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    from jodiffusion.utils.io import write_json_atomic
    from jodiffusion.utils.safe_load import DiskFullError

    path = tmp_path / "report.json"
    write_json_atomic(path, {"version": 1})
    before = path.read_bytes()
    fail_temp_writes(monkeypatch)
    with pytest.raises(DiskFullError, match="no space left") as info:
        write_json_atomic(path, {"version": 2})
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_full_disk_reported_by_safetensors_is_recognised(tmp_path, monkeypatch):
    import jodiffusion.utils.io as io
    from jodiffusion.utils.io import save_safetensors_atomic
    from jodiffusion.utils.safe_load import DiskFullError

    def full(*_args, **_kwargs):  # what safetensors' Rust writer raises: its own type, the OS error in the text
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                           '"No space left on device" })')

    monkeypatch.setattr(io, "save_file", full)  # safetensors.torch.save_file, as utils/io.py calls it
    with pytest.raises(DiskFullError, match="weights.safetensors"):
        save_safetensors_atomic({"w": torch.zeros(2)}, tmp_path / "weights.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_in_a_checkpoint_save_keeps_the_earlier_checkpoints(tmp_path, monkeypatch):
    import jodiffusion.engine.checkpoint as checkpoint
    from jodiffusion.utils.safe_load import DiskFullError

    manager = checkpoint.CheckpointManager(tmp_path / "run")
    model = torch.nn.Linear(2, 2)
    first_ckpt = manager.save(1, {"model": model})
    before = snapshot(first_ckpt)
    monkeypatch.setattr(checkpoint, "save_file", enospc)
    with pytest.raises(DiskFullError, match="step_00000002") as info:
        manager.save(2, {"model": model})
    assert "\n" not in str(info.value)
    assert [p for _, p in manager.list()] == [first_ckpt]
    assert snapshot(first_ckpt) == before
    no_temporary_files(tmp_path)


def test_full_disk_during_validate_json_writes_no_report(assets, tmp_path, capsys, monkeypatch):
    fail_temp_writes(monkeypatch)
    report = tmp_path / "report.json"
    code, _, err = run_cli(["validate", "--dataset", "folder", "--root", str(assets.dataset), "--json",
                            str(report)], capsys)
    line, rest = error_message(err)
    assert code == 1 and not rest and str(report) in line and "no space left" in line
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_make_data_leaves_nothing(tmp_path, capsys, monkeypatch):
    fail_temp_writes(monkeypatch)
    code, _, err = run_cli(["make-data", str(tmp_path / "data"), "--num-train", "2", "--num-val", "1",
                            "--resolution", "16", "--no-progress"], capsys)
    line, rest = error_message(err)
    assert code == 1 and not rest and "no space left" in line
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary sibling


def test_full_disk_at_a_training_checkpoint_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, capsys,
                                                                                         monkeypatch):
    import jodiffusion.engine.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "save_file", enospc)
    run = tmp_path / "run"
    code, _, err = run_cli(["train-vae", "--preset", "tiny", f"output_dir={run}", "train.steps=1"], capsys)
    line, rest = error_message(err)
    assert code == 1 and not rest and "no space left" in line and "checkpoint" in line
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
    no_temporary_files(tmp_path)


def test_full_disk_during_generate_then_a_rerun_finishes(assets, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = gen_args(assets.model, out, "--prompts", "templates")
    argv[argv.index("-n") + 1] = "2"
    with monkeypatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        fail_temp_writes(mp, "write_bytes")
        code, _, err = run_cli(argv, capsys)
        line, rest = error_message(err)
        assert code == 1 and not rest and "no space left" in line
    no_temporary_files(out)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert len(list((out / "images" / "train").iterdir())) == 2


# --- make-data's library function protects a folder as the CLI does ----------------------------------------

def test_write_shapes_dataset_refuses_to_replace_what_it_did_not_write(tmp_path):
    from jodiffusion.data.shapes_folder import write_shapes_dataset
    from jodiffusion.errors import DatasetError

    mine = user_folder(tmp_path)
    (mine / "classes.json").write_text('{"names": ["background", "cat"]}')  # looks like a dataset: not enough
    before = snapshot(mine)
    with pytest.raises(DatasetError, match=r"overwrite refused: .*classes\.json, notes\.txt, photos/"):
        write_shapes_dataset(mine, 1, 1, 16, overwrite=True, progress=False)
    with pytest.raises(DatasetError, match="not empty"):
        write_shapes_dataset(mine, 1, 1, 16, progress=False)
    assert snapshot(mine) == before

    own = write_shapes_dataset(tmp_path / "own", 1, 1, 16, progress=False)
    (own / "README.md").write_text("my notes on this dataset")
    before = snapshot(own)
    with pytest.raises(DatasetError, match=r"did not write: README\.md"):
        write_shapes_dataset(own, 2, 1, 16, overwrite=True, progress=False)
    assert snapshot(own) == before

    (own / "README.md").unlink()
    write_shapes_dataset(own, 2, 1, 16, overwrite=True, progress=False)  # its own dataset, nothing else: replaced
    assert len(list((own / "images" / "train").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "own"]  # no temporary sibling left


def test_write_shapes_dataset_refuses_a_file_in_the_way(tmp_path):
    from jodiffusion.data.shapes_folder import write_shapes_dataset
    from jodiffusion.errors import DatasetError

    (tmp_path / "file").write_text("mine")
    with pytest.raises(DatasetError, match="is a file"):
        write_shapes_dataset(tmp_path / "file" / "data", 1, 1, 16, progress=False)
    with pytest.raises(DatasetError, match="overwrite refused: .* is a file"):
        write_shapes_dataset(tmp_path / "file", 1, 1, 16, overwrite=True, progress=False)
    assert (tmp_path / "file").read_text() == "mine"


# --- the helpers ---------------------------------------------------------------------------------------

def test_yaml_errors_become_one_line_with_the_position():
    from jodiffusion.errors import ConfigError
    from jodiffusion.utils.safe_load import parse_yaml

    with pytest.raises(ConfigError) as info:
        parse_yaml("a: [1, 2\nb: : 3\n", "my.yaml")
    assert "\n" not in str(info.value) and "my.yaml" in str(info.value) and "line 2" in str(info.value)


def test_check_seed():
    from jodiffusion.errors import ConfigError
    from jodiffusion.utils.safe_load import check_seed

    assert check_seed(0) == 0 and check_seed(2**40) == 2**40
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(ConfigError, match="a seed must be"):
            check_seed(bad)
    with pytest.raises(ConfigError, match="train.seed=9: a seed must be in 0 .. 8"):
        check_seed(9, "train.seed", limit=9)
