"""The config-driven commands that are not training runs (generate, sample, eval-*, validate): a flag is a
shorthand for one KEY=VALUE override and builds the same config; flags whose meaning moved refuse their old
spelling, naming the new one."""

from __future__ import annotations

import pytest

from jodiffusion.cli.generate import generate_config
from jodiffusion.cli.main import build_parser, main, parse_intermixed
from jodiffusion.cli.validate import validate_config
from jodiffusion.config.loader import config_to_dict
from jodiffusion.errors import ConfigError
from jodiffusion.evaluation.config import EvalConfig, JointEvalConfig
from jodiffusion.generation.config import SampleConfig


def parse(argv):
    return parse_intermixed(build_parser(), argv)


def built(argv, schema=None):
    from jodiffusion.cli.common import config_from_args
    args = parse(argv)
    if argv[0] == "generate":
        return generate_config(args)
    if argv[0] == "validate":
        return validate_config(args)
    return config_from_args(args, schema, "group-without-presets")


# flag(s) on the left, the override(s) they stand for on the right
SAME = [
    ("generate", ["-n", "7"], ["num=7"]),
    ("generate", ["--prompts", "templates"], ["prompts.source=templates"]),
    ("generate", ["--prompts-file", "p.txt"], ["prompts.source=file", "prompts.file=p.txt"]),
    ("generate", ["--class-weights", "circle=2,star=1"], ["prompts.class_weights={circle: 2, star: 1}"]),
    ("generate", ["--jpeg-quality", "97", "--image-format", "jpeg"], ["jpeg_quality=97", "image_format=jpeg"]),
    ("generate", ["--min-foreground", "0.2"], ["filters.enabled=true", "filters.min_foreground=0.2"]),
    ("generate", ["--drop-empty"], ["filters.enabled=true", "filters.require_prompted_classes=false",
                                    "filters.max_ignore=1.0"]),
    ("generate", ["--filter", "--drop-empty"], ["filters.enabled=true"]),
    ("generate", ["--workers", "0", "--seed", "3", "--guidance", "2.5"], ["workers=0", "seed=3", "guidance=2.5"]),
]


@pytest.mark.parametrize("command, flags, overrides", SAME, ids=[" ".join(f) for _, f, _ in SAME])
def test_a_shorthand_flag_builds_the_config_its_override_does(command, flags, overrides):
    base = [command, "model", "--out", "o", *(["-n", "1"] if "-n" not in flags else [])]
    by_flag = built([*base, *flags])
    by_key = built([*base, *overrides])
    assert config_to_dict(by_flag) == config_to_dict(by_key)
    if "-n" not in flags:
        assert config_to_dict(by_flag) != config_to_dict(built(base))  # the flag changed something


@pytest.mark.parametrize("command, schema, flags, overrides", [
    ("sample", SampleConfig, ["--prompt", "a b", "--prompt", "c", "--num", "5", "--tau", "3"],
     ["prompts=[a b, c]", "num=5", "tau=3"]),
    ("sample", SampleConfig, ["--prompt", "x", "--per-prompt", "2", "--prompts-file", "f.txt"],
     ["prompts=[x]", "per_prompt=2", "prompts_file=f.txt"]),
    ("eval-joint", JointEvalConfig, ["--dataset", "folder", "--root", "d", "--split", "train", "--captions", "c",
                                     "-n", "9", "--segmenter", "s", "--json", "r.json"],
     ["data.name=folder", "data.root=d", "data.val_split=train", "data.captions=c", "num=9", "segmenter=s",
      "json=r.json"]),
    ("eval-seg", EvalConfig, ["--resolution", "32", "--num-images", "8", "--batch-size", "2"],
     ["data.resolution=32", "data.num_train=8", "data.num_val=8", "batch_size=2"]),
    ("eval-vae", EvalConfig, ["--dataset", "camvid", "--root", "r"], ["data.name=camvid", "data.root=r"]),
])
def test_the_other_commands_shorthands(command, schema, flags, overrides):
    base = [command, "model", *(["--out", "o"] if command == "sample" else [])]
    assert config_to_dict(built([*base, *flags], schema)) == config_to_dict(built([*base, *overrides], schema))


def test_validate_flags_and_overrides_and_a_run_config(tmp_path):
    by_flag = built(["validate", "--dataset", "folder", "--root", "d", "--split", "val", "--no-trainaug"])
    by_key = built(["validate", "data.name=folder", "data.root=d", "splits=[val]", "data.voc_trainaug=false"])
    assert config_to_dict(by_flag) == config_to_dict(by_key)
    assert by_flag.checked_splits() == ["val"]
    run = tmp_path / "config.yaml"  # a run's whole config: only its data section is read
    run.write_text("jodiffusion_version: 0.0.0\ndata:\n  name: folder\n  root: d\ntrain:\n  steps: 3\n")
    cfg = built(["validate", "--config", str(run)])
    assert (cfg.data.name, cfg.data.root, cfg.checked_splits()) == ("folder", "d", ["train", "val"])
    with pytest.raises(ConfigError, match="say which dataset"):
        built(["validate", "--root", "d"])


def test_an_explicit_override_wins_over_its_flag():
    assert built(["generate", "m", "--out", "o", "-n", "3", "num=4"]).num == 4
    assert built(["generate", "m", "--out", "o", "-n", "3", "--max-ignore", "0.2", "--drop-empty"]).filters.max_ignore \
        == 0.2  # a threshold flag wins over --drop-empty's, whatever the order on the command line


def test_sample_num_is_the_total_and_per_prompt_repeats():
    cfg = SampleConfig(out="o", prompts=["a", "b", "c"], num=4)
    assert cfg.jobs() == ["a", "b", "c", "a"]
    assert SampleConfig(out="o", prompts=["a", "b"], per_prompt=2).jobs() == ["a", "a", "b", "b"]
    assert SampleConfig(out="o", prompts=["a", "b"]).jobs() == ["a", "b"]


def test_sample_prompts_file_lines_follow_the_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("b\n\n  c  \n")
    assert SampleConfig(out="o", prompts=["a"], prompts_file=str(tmp_path / "p.txt")).jobs() == ["a", "b", "c"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="empty.txt holds no prompts"):
        SampleConfig(out="o", prompts_file=str(tmp_path / "empty.txt")).jobs()


@pytest.mark.parametrize("argv, message", [
    (["generate", "m", "-n", "1", "--out", "o", "--prompts", "mine.txt"], "--prompts-file mine.txt"),
    (["caption", "--out", "caps.jsonl"], "--output-file caps.jsonl"),
    (["export-mmseg", "data", "--out", "cfg.py"], "--output-file cfg.py"),
    (["caption", "--out", "folder"], "--output-file folder"),
    (["caption"], "--output-file FILE"),
])
def test_old_spellings_are_refused_naming_the_new(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


@pytest.mark.parametrize("argv, key", [
    (["generate", "m", "--out", "o", "-n", "0"], "num=0"),
    (["generate", "m", "--out", "o", "-n", "1", "prompts.max_classes=0"], "in 'prompts'"),
    (["generate", "m", "--out", "o", "-n", "1", "--precision", "fp32", "precision=fp16"], "precision='fp16'"),
    (["sample", "m", "--out", "o", "--prompt", "a", "--batch-size", "0"], "batch_size=0"),
    (["sample", "m", "--out", "o"], "no prompts"),
    (["eval-joint", "m", "guidance=-1"], "guidance=-1"),
    (["eval-vae", "m", "--dataset", "camvid"], "data.root"),
])
def test_a_bad_value_is_a_config_error_naming_the_key(argv, key, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and key in err and err.count("\n") == 1


def test_help_names_the_key_each_flag_sets(capsys):
    for command in ("generate", "sample", "eval-joint", "eval-vae", "validate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
    text = capsys.readouterr().out
    for sets in ("[sets num]", "[sets prompts.source]", "[sets per_prompt]", "[sets data.val_split]",
                 "[sets data.captions]", "[sets splits]"):
        assert sets in " ".join(text.split()), sets


def test_sample_num_with_several_prompts_says_what_it_means(tmp_path, caplog):
    # --num once meant the pairs of each prompt in sample; today's meaning cannot be told apart, so it is said
    main(["sample", str(tmp_path / "no-model"), "--prompt", "a", "--prompt", "b", "-n", "4",
          "--out", str(tmp_path / "out")])
    assert "--per-prompt 4" in caplog.text and "pairs in all" in caplog.text
    caplog.clear()
    main(["sample", str(tmp_path / "no-model"), "--prompt", "a", "-n", "4", "--out", str(tmp_path / "out")])
    assert "--per-prompt" not in caplog.text  # one prompt: both meanings give the same pairs
