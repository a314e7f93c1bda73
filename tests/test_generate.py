"""`jodiffusion generate`: prompts, the dataset layout, determinism across batch sizes, processes and kills."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jodiffusion.cli.main import main
from jodiffusion.data.classes import ClassInfo
from jodiffusion.errors import ConfigError, JoDiffusionError
from jodiffusion.generation.generate import GenerateConfig, generate_dataset, read_model_classes
from jodiffusion.generation.prompts import (
    PromptConfig,
    UnknownClassError,
    build_prompt_source,
    parse_class_weights,
)
from jodiffusion.utils.tempnames import temp_name

STEPS = 2
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny exported model (shapes, 32 px, 2 training steps): seconds on a CPU."""
    from jodiffusion.config.loader import load_config
    from jodiffusion.training.config import JointRunConfig, VAERunConfig
    from jodiffusion.training.joint import train_joint
    from jodiffusion.training.vae import train_vae

    root = tmp_path_factory.mktemp("genmodel")
    vae = train_vae(load_config(VAERunConfig, group="vae", preset="tiny", overrides=[f"output_dir={root / 'vae'}"]),
                    progress=False).export
    return train_joint(load_config(JointRunConfig, group="joint", preset="tiny",
                                   overrides=[f"vae={vae}", f"output_dir={root / 'run'}", f"cache_dir={root / 'c'}",
                                              "train.steps=2", "sample_count=0"]), progress=False).export


@pytest.fixture(scope="session")
def classes(model_dir):
    return read_model_classes(model_dir)


def generate(model_dir, out, num, overwrite=False, **kw):
    kw.setdefault("steps", STEPS)
    kw.setdefault("batch_size", 3)
    return generate_dataset(model_dir, GenerateConfig(num=num, out=str(out), **kw), overwrite=overwrite,
                            progress=False)


def files(out: Path, skip=("summary.json",)) -> dict[str, bytes]:
    """Every file of an output folder by relative path (summary.json holds timings)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in skip}


@pytest.fixture(scope="session")
def reference(model_dir, tmp_path_factory):
    """An uninterrupted single-process run of 10 pairs, batch size 3."""
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = generate(model_dir, out, 10)
    return out, summary


@pytest.fixture(scope="session")
def reference40(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref40") / "out"
    generate(model_dir, out, 40, batch_size=4)
    return out


# --- prompts -------------------------------------------------------------------------------------

def test_template_prompts_are_deterministic_and_class_balanced(classes):
    src = build_prompt_source(PromptConfig(source="templates"), classes, seed=5)
    again = build_prompt_source(PromptConfig(source="templates"), classes, seed=5)
    assert [src(i) for i in (7, 3, 1000)] == [again(i) for i in (7, 3, 1000)]  # any order, any instance
    assert [src(i).text for i in range(20)] != [build_prompt_source(PromptConfig(source="templates"), classes,
                                                                    seed=6)(i).text for i in range(20)]
    p = src(0)
    assert p.text.startswith("a photo of a ") and 1 <= len(p.classes) <= 3 and p.source == "templates"
    assert all(classes.names[c] in p.text for c in p.classes)

    n = 6000
    counts = Counter(c for i in range(n) for c in src(i).classes)
    assert 0 not in counts  # background is not a target by default
    share = np.array([counts[c] for c in range(1, classes.num_classes)]) / sum(counts.values())
    assert np.abs(share - 1 / 8).max() < 0.015  # uniform over the 8 shapes

    weights = {"circle": 2, "square": 1, "triangle": 1, "star": 1, "ring": 1, "cross": 1, "hexagon": 1,
               "crescent": 1}
    src = build_prompt_source(PromptConfig(source="templates", class_weights=weights), classes, seed=0)
    counts = Counter(c for i in range(n) for c in src(i).classes)
    total = sum(counts.values())
    for name, w in weights.items():
        assert abs(counts[classes.names.index(name)] / total - w / 9) < 0.015, name

    rare = build_prompt_source(PromptConfig(source="templates", class_weights=parse_class_weights("star=1,ring=3"),
                                            template="{classes} on a table", max_classes=1), classes, seed=0)
    texts = [rare(i).text for i in range(2000)]
    assert set(texts) == {"a star on a table", "a ring on a table"}
    assert abs(texts.count("a ring on a table") / 2000 - 0.75) < 0.04


def test_caption_and_file_prompts_cycle_deterministically(classes, tmp_path, model_dir):
    caps = tmp_path / "captions.jsonl"
    caps.write_text("".join(json.dumps({"stem": f"s{i}", "caption": f"a circle number {i}", "split": split}) + "\n"
                            for i, split in enumerate(["train"] * 5 + ["val"])))
    src = build_prompt_source(PromptConfig(captions=str(tmp_path)), classes, seed=1)  # a dataset folder
    epoch = [src(i).text for i in range(5)]
    assert sorted(epoch) == [f"a circle number {i}" for i in range(5)]  # each train caption once per epoch
    assert sorted(src(i).text for i in range(5, 10)) == sorted(epoch)
    assert src(0).classes == (1,) and src(0).source == "captions"
    assert build_prompt_source(PromptConfig(captions=str(caps)), classes, seed=1)(3) == src(3)
    # default: the training captions of the run that exported the model (the shapes dataset here)
    assert build_prompt_source(PromptConfig(), classes, seed=0, model_dir=model_dir)(0).text

    prompts = tmp_path / "prompts.txt"
    prompts.write_text('a red star\n\n{"prompt": "something round", "classes": ["circle", "ring"]}\n')
    src = build_prompt_source(PromptConfig(source="file", file=str(prompts)), classes, seed=0)
    assert [src(i).text for i in range(4)] == ["a red star", "something round"] * 2
    assert src(1).classes == (1, 5) and src(0).classes == (4,) and src(0).source == "file"


def test_unknown_classes_are_refused_with_the_valid_names(classes, tmp_path, model_dir):
    with pytest.raises(UnknownClassError, match=r"'dog'.*valid classes: background, circle"):
        build_prompt_source(PromptConfig(source="templates", class_weights={"dog": 1, "circle": 1}), classes, 0)
    bad = tmp_path / "prompts.txt"
    bad.write_text('{"prompt": "a cat", "classes": ["cat"]}\n')
    with pytest.raises(UnknownClassError, match=r"prompts.txt, line 1.*'cat'"):
        build_prompt_source(PromptConfig(source="file", file=str(bad)), classes, 0)
    out = tmp_path / "never"
    assert main(["generate", str(model_dir), "--num", "2", "--out", str(out), "--prompts", "templates",
                 "--class-weights", "unicorn=1"]) == 1
    assert not out.exists()  # refused before anything was written
    with pytest.raises(ConfigError):
        parse_class_weights("circle")


@pytest.mark.parametrize("kw, match", [({"num": 0}, "positive"), ({"num": -3}, "positive"),
                                      ({"batch_size": 0}, "batch_size"), ({"image_format": "gif"}, "image_format="),
                                      ({"image_format": "jpeg", "jpeg_quality": 90}, "95"),
                                      ({"format": "zip"}, "format"), ({"guidance": float("inf")}, "finite"),
                                      ({"guidance": float("nan")}, "finite")])
def test_config_is_validated(kw, match):
    with pytest.raises(ConfigError, match=match):
        GenerateConfig(**{"num": 4, "out": "x", **kw})


# --- the output ----------------------------------------------------------------------------------

def test_output_loads_with_the_folder_reader_and_has_a_manifest_and_card(reference, classes, tmp_path):
    from jodiffusion.data.readers.folder import read_folder
    from jodiffusion.segmentation.mmseg_export import write_mmseg_config

    out, summary = reference
    ds = read_folder(out, "train")
    assert len(ds) == 10 and ds.classes == classes
    image, mask = ds.load_image(0), ds.load_mask(0)
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32) and mask.max() < classes.num_classes
    assert Image.open(out / "masks/train/00000000.png").mode == "P"
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(10)) and all(r["kept"] for r in rows)
    r = rows[4]
    assert r["stem"] == "00000004" and r["prompt"] and r["prompt_source"] == "captions" and r["seed"] == 0
    assert r["model"] == json.loads((out / "generation.json").read_text())["model_fingerprint"]
    assert set(r["refine"]) >= {"relabelled", "pixels_changed"} and "scores" in r
    assert r["files"] == {"image": "images/train/00000004.png", "mask": "masks/train/00000004.png"}
    captions = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert captions[4] == {"stem": "00000004", "caption": r["prompt"], "split": "train"}
    card = (out / "README.md").read_text()
    assert "licence" in card.lower() and "base weights" in card and "| circle |" in card
    assert summary["pairs"] == 10 and summary["dropped"] == 0 and summary["pairs_per_second"] > 0
    assert set(summary["class_histogram"]) == set(classes.names)
    assert json.loads((out / "summary.json").read_text())["pairs"] == 10
    assert not (out / "records").exists() and not list(out.rglob("*.tmp"))
    cfg = write_mmseg_config(out, tmp_path / "mmseg.py")
    assert "images/train" in cfg.read_text()


def test_batch_size_does_not_change_the_files(model_dir, reference, tmp_path):
    generate(model_dir, tmp_path / "b1", 10, batch_size=1, workers=0)
    assert files(tmp_path / "b1") == files(reference[0])


@pytest.mark.slow
def test_two_processes_write_the_same_files_as_one(model_dir, tmp_path):
    args = ["generate", str(model_dir), "-n", "10", "--out", "OUT", "--steps", str(STEPS), "--batch-size", "2",
            "--filter", "--no-progress"]
    assert main([a if a != "OUT" else str(tmp_path / "one") for a in args]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "jodiffusion.cli.main",
           *[a if a != "OUT" else str(tmp_path / "two") for a in args]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stdout
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert one == two
    manifest = [json.loads(line) for line in one["manifest.jsonl"].decode().splitlines()]
    assert sum(r["kept"] for r in manifest) == 10 and not all(r["kept"] for r in manifest)  # several rounds


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_uninterrupted_files(model_dir, reference40, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "jodiffusion.cli.main", "generate", str(model_dir), "-n", "40", "--out", str(out),
           "--steps", str(STEPS), "--batch-size", "4", "--no-progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            journals = list((out / "records").glob("*.jsonl")) if (out / "records").is_dir() else []
            if sum(p.read_bytes().count(b"\n") for p in journals) >= 8:  # two batches recorded
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = len(list((out / "masks" / "train").glob("*.png")))
    assert 0 < done < 40 and not (out / "manifest.jsonl").exists()
    # what a kill can also leave: a half-written file and a record line cut short
    (out / "images" / "train" / temp_name("00000039.png")).write_bytes(b"\x89PNG half")
    journal = next((out / "records").glob("*.jsonl"))
    with open(journal, "a") as f:
        f.write('{"index": 39, "stem": "0000')
    assert main(["generate", str(model_dir), "-n", "40", "--out", str(out), "--steps", str(STEPS),
                 "--batch-size", "4", "--no-progress"]) == 0
    assert files(out) == files(reference40)
    assert not list(out.rglob("*.tmp")) and len(list((out / "images" / "train").iterdir())) == 40


def test_other_model_or_config_is_refused_without_touching_the_output(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    generate(model_dir, out, 3)
    before = files(out, skip=())
    with pytest.raises(JoDiffusionError, match="another generation config.*seed: 0 -> 1"):
        generate(model_dir, out, 3, seed=1)
    shutil.copytree(model_dir.parent, tmp_path / "other_run", ignore=shutil.ignore_patterns("checkpoints"))
    other = tmp_path / "other_run" / "export"
    cfg = other / "denoiser" / "config.json"
    cfg.write_text(cfg.read_text() + "\n")  # same weights, different files: another fingerprint
    with pytest.raises(JoDiffusionError, match="another model"):
        generate(other, out, 3)
    with pytest.raises(JoDiffusionError, match="--num 3"):
        generate(model_dir, out, 2)
    assert files(out, skip=()) == before
    assert main(["generate", str(model_dir), "-n", "3", "--out", str(out), "--seed", "1", "--steps", str(STEPS),
                 "--no-progress"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["generate", str(model_dir), "-n", "3", "--out", str(out), "--seed", "1", "--steps", str(STEPS),
                 "--no-progress", "--overwrite"]) == 0
    assert json.loads((out / "generation.json").read_text())["config"]["seed"] == 1
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(JoDiffusionError, match="not a generated dataset"):
        generate(model_dir, stranger, 2)


def test_overwrite_never_deletes_what_generate_did_not_write(model_dir, tmp_path, capsys):
    # a folder of the user's that happens to hold a file named manifest.jsonl (or generation.json)
    stranger = tmp_path / "stranger"
    (stranger / "raw").mkdir(parents=True)
    (stranger / "raw" / "scan.tif").write_bytes(b"II*\0")
    (stranger / "manifest.jsonl").write_text('{"index": 0}\n')
    (stranger / "generation.json").write_text('{"mine": true}')
    before = files(stranger, skip=())
    with pytest.raises(JoDiffusionError, match=r"--overwrite refused.*generation\.json, manifest\.jsonl, raw/"):
        generate(model_dir, stranger, 2, overwrite=True)
    assert files(stranger, skip=()) == before
    # generate's own output, to which the user added a file: replaced only once that file is gone
    out = tmp_path / "out"
    generate(model_dir, out, 2)
    (out / "labels_by_hand").mkdir()
    (out / "labels_by_hand" / "fix.png").write_bytes(b"\x89PNG")
    before = files(out, skip=())
    assert main(["generate", str(model_dir), "-n", "2", "--out", str(out), "--seed", "1", "--steps", str(STEPS),
                 "--no-progress", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "did not write: labels_by_hand/" in err and "Traceback" not in err
    assert files(out, skip=()) == before
    shutil.rmtree(out / "labels_by_hand")
    generate(model_dir, out, 2, seed=1, overwrite=True)
    assert json.loads((out / "generation.json").read_text())["config"]["seed"] == 1


def test_a_start_killed_before_its_first_file_continues(model_dir, reference, tmp_path):
    out = tmp_path / "out"
    generate(model_dir, out, 10)
    for path in list(out.iterdir()):  # what a kill during the very first write leaves: marker + a temp file
        if path.name != ".jodiffusion-owner.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out / temp_name("generation.json")).write_text('{"format"')
    generate(model_dir, out, 10)
    assert files(out) == files(reference[0])


def test_sample_overwrite_replaces_only_its_own_folder(model_dir, tmp_path, capsys):
    out = tmp_path / "pictures"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    args = ["sample", str(model_dir), "--prompt", "a red circle", "--out", str(out), "--steps", str(STEPS),
            "--overwrite"]
    assert main(args) == 1
    assert "holiday.jpg" in capsys.readouterr().err and files(out, skip=()) == {"holiday.jpg": b"\xff\xd8"}
    (out / "holiday.jpg").unlink()
    assert main(args) == 0 and (out / "grid.png").is_file()
    assert main(args) == 0  # its own folder: replaced


@pytest.mark.parametrize("split", ["..", ".", "a/b", "../../etc", "x\\y", ""])
def test_a_split_that_is_not_a_plain_folder_name_is_refused(model_dir, tmp_path, capsys, split):
    out = tmp_path / "out"
    assert main(["generate", str(model_dir), "-n", "2", "--out", str(out), "--split", split, "--steps", str(STEPS),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(split) in err and "split" in err
    assert not out.exists()


def test_a_finished_output_can_be_extended(model_dir, reference, tmp_path):
    out = tmp_path / "grow"
    generate(model_dir, out, 6)
    again = generate(model_dir, out, 6)  # nothing to do
    assert again["pairs"] == 6
    generate(model_dir, out, 10)
    assert files(out) == files(reference[0])


def test_quality_filter_keeps_the_first_n_passing_indices(model_dir, reference40, tmp_path):
    from jodiffusion.generation.filters import FilterResult

    class OddSum:
        """Keeps pairs whose image sum is odd: deterministic, about half of them."""

        identity = {"rule": "odd image sum"}

        def __call__(self, image, mask, prompt_classes):
            keep = int(image.astype(np.int64).sum()) % 2 == 1
            return FilterResult(keep, mask, {"sum": int(image.sum())}, None if keep else "even")

    out = tmp_path / "filtered"
    summary = generate_dataset(model_dir, GenerateConfig(num=8, out=str(out), steps=STEPS, batch_size=3),
                               progress=False, pair_filter=OddSum())
    ref = [json.loads(line) for line in (reference40 / "manifest.jsonl").read_text().splitlines()]
    ref_images = {r["index"]: np.asarray(Image.open(reference40 / r["files"]["image"])) for r in ref}
    passing = [i for i in sorted(ref_images) if int(ref_images[i].astype(np.int64).sum()) % 2 == 1][:8]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows if r["kept"]] == passing
    assert [r["index"] for r in rows] == list(range(passing[-1] + 1))
    dropped = [r for r in rows if not r["kept"]]
    assert dropped and all(r["reason"] == "even" and "files" not in r for r in dropped)
    assert summary["pairs"] == 8 and summary["dropped_by_reason"] == {"even": len(dropped)}
    assert sorted(p.stem for p in (out / "images" / "train").iterdir()) == [f"{i:08d}" for i in passing]
    for i in passing:  # the same pair as without a filter
        name = f"images/train/{i:08d}.png"
        assert (out / name).read_bytes() == (reference40 / name).read_bytes()


def test_webdataset_shards_group_each_sample(model_dir, reference, tmp_path):
    out = tmp_path / "wds"
    generate(model_dir, out, 10, format="webdataset", shard_size=4)
    names = (out / "shards.txt").read_text().split()
    assert names == [f"shards/shard-{k:06d}.tar" for k in range(3)]
    stems, ref = [], reference[0]
    for name in names:
        with tarfile.open(out / name) as tar:
            members = tar.getnames()
            groups = [members[i:i + 3] for i in range(0, len(members), 3)]
            for group in groups:  # webdataset: the files of one sample are consecutive
                stem = group[0].split(".")[0]
                assert group == [f"{stem}.png", f"{stem}.mask.png", f"{stem}.json"]
                assert tar.extractfile(group[0]).read() == (ref / f"images/train/{stem}.png").read_bytes()
                assert tar.extractfile(group[1]).read() == (ref / f"masks/train/{stem}.png").read_bytes()
                assert json.loads(tar.extractfile(group[2]).read())["stem"] == stem
                stems.append(stem)
    assert stems == [f"{i:08d}" for i in range(10)]
    assert not (out / "images").exists()
    # an interrupted shard (only its temporary file exists) is generated again, identically
    before = files(out)
    (out / names[1]).unlink()
    (out / "shards" / temp_name("shard-000001.tar")).write_bytes(b"partial")
    meta = json.loads((out / "generation.json").read_text())
    (out / "generation.json").write_text(json.dumps({**meta, "complete": False}))
    generate(model_dir, out, 10, format="webdataset", shard_size=4)
    assert files(out) == before and not list(out.rglob("*.tmp"))


def test_jpeg_images(model_dir, classes, tmp_path):
    from jodiffusion.data.readers.folder import read_folder

    out = tmp_path / "jpeg"
    assert main(["generate", str(model_dir), "-n", "3", "--out", str(out), "--steps", str(STEPS), "--image-format",
                 "jpeg", "--jpeg-quality", "97", "--prompts", "templates", "--no-progress"]) == 0
    jpgs = sorted((out / "images" / "train").iterdir())
    assert [p.suffix for p in jpgs] == [".jpg"] * 3 and Image.open(jpgs[0]).format == "JPEG"
    assert read_folder(out, "train").load_image(2).shape == (32, 32, 3)
    row = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert row["prompt_source"] == "templates" and row["prompt"].startswith("a photo of")
    assert main(["generate", str(model_dir), "-n", "3", "--out", str(tmp_path / "q"), "--image-format", "jpeg",
                 "--jpeg-quality", "80"]) == 1


def test_drop_empty_only_checks_the_foreground():
    from jodiffusion.cli.generate import generate_config
    from jodiffusion.cli.main import build_parser

    parse = build_parser().parse_args
    cfg = generate_config(parse(["generate", "m", "-n", "1", "--out", "o", "--drop-empty"])).filters
    assert cfg.enabled and not cfg.require_prompted_classes and cfg.max_ignore == 1.0
    cfg = generate_config(parse(["generate", "m", "-n", "1", "--out", "o", "--max-ignore", "0.2"])).filters
    assert cfg.enabled and cfg.require_prompted_classes and cfg.max_ignore == 0.2
    cfg = generate_config(parse(["generate", "m", "-n", "1", "--out", "o", "--filter", "--drop-empty"])).filters
    assert cfg.enabled and cfg.require_prompted_classes and cfg.max_ignore == 0.5
    assert not generate_config(parse(["generate", "m", "-n", "1", "--out", "o"])).filters.enabled


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for option in ("--prompts", "--captions", "--class-weights", "--format", "--image-format", "--workers",
                   "--overwrite", "--consistency-segmenter", "--min-foreground", "--tau"):
        assert option in text


def test_class_info_round_trip_of_the_output(reference, classes):
    assert ClassInfo.from_dict(json.loads((reference[0] / "classes.json").read_text())) == classes


@pytest.mark.parametrize(("dataset", "speck_kept"), [("camvid", False), ("shapes", True)])
def test_refinement_reads_the_background_from_the_model_classes(tmp_path, dataset, speck_kept):
    """A 2x2 speck of id 0 inside class 3 is noise on CamVid (no background: id 0 is Sky) and is
    kept on shapes (id 0 is the background); no model is needed for the post-processing."""
    from jodiffusion.data.metadata import CAMVID_CLASSES
    from jodiffusion.data.shapes_scene import SHAPES_CLASSES
    from jodiffusion.generation.postprocess import Batch as _Batch
    from jodiffusion.generation.postprocess import PostProcessor as _PostProcessor
    from jodiffusion.generation.prompts import Prompt

    classes = {"camvid": CAMVID_CLASSES, "shapes": SHAPES_CLASSES}[dataset]
    mask = np.full((16, 16), 3, np.uint8)
    mask[7:9, 7:9] = 0
    batch = _Batch(unit=0, indices=[0], prompts=[Prompt("a photo", "file", (3,))],
                   images=np.zeros((1, 16, 16, 3), np.uint8), masks=mask[None], write=set())
    post = _PostProcessor(GenerateConfig(num=1, out=str(tmp_path), tau=20), classes, tmp_path,
                          {"model_fingerprint": "test"}, None)
    [(record, _, _)] = post(batch)
    expected = {classes.names[3]: 252, classes.names[0]: 4} if speck_kept else {classes.names[3]: 256}
    assert record["class_pixels"] == expected
    assert record["refine"]["relabelled"] == (0 if speck_kept else 1)


def test_template_prompts_skip_the_background_of_the_class_metadata():
    moved = ClassInfo(names=("sky", "road", "clutter", "car"), background=2)
    src = build_prompt_source(PromptConfig(source="templates"), moved, seed=0)
    assert {c for i in range(300) for c in src(i).classes} == {0, 1, 3}
    none = ClassInfo(names=moved.names)  # no background: every class is a target
    src = build_prompt_source(PromptConfig(source="templates"), none, seed=0)
    assert {c for i in range(300) for c in src(i).classes} == {0, 1, 2, 3}
