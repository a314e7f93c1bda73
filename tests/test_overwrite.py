"""`--overwrite` replaces only what the same command wrote (its own marker), and user values that become
path components are validated: nothing the user had is ever deleted."""

import json

import pytest

from jodiffusion.cli.main import main
from jodiffusion.engine.run import prepare_run_dir
from jodiffusion.errors import ConfigError, JoDiffusionError
from jodiffusion.utils.ownership import OWNER_FILE, check_path_component, read_owner


def _tree(root):
    """Every file under ``root`` with its bytes: what the user had."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fake_run(run_dir, command):
    """What a (killed or finished) training run of ``command`` leaves: marker, config, a checkpoint."""
    prepare_run_dir(run_dir, None, False, command=command)
    (run_dir / "config.yaml").write_text("train: {}\n")
    (run_dir / "checkpoints" / "step_00000002").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_00000002" / "state.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text("")


# --- training run folders -----------------------------------------------------------------------------

def test_a_new_run_folder_is_marked_with_its_command(tmp_path):
    run = prepare_run_dir(tmp_path / "run", None, False, command="train-vae")
    assert read_owner(run) == "train-vae"
    assert json.loads((run / OWNER_FILE).read_text()) == {"command": "train-vae"}


def test_overwrite_replaces_a_run_of_the_same_command(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, "train-seg")
    prepare_run_dir(run, None, True, command="train-seg")
    assert sorted(p.name for p in run.iterdir()) == [OWNER_FILE]


@pytest.mark.parametrize("command", ["train", "train-vae", "train-codec", "train-seg"])
def test_overwrite_refuses_a_folder_of_user_files(tmp_path, command):
    run = tmp_path / "mine"
    (run / "photos").mkdir(parents=True)
    (run / "photos" / "a.png").write_bytes(b"\x89PNG")
    (run / "notes.txt").write_text("keep me")
    (run / "manifest.jsonl").write_text("{}\n")  # a common name proves nothing
    before = _tree(run)
    with pytest.raises(JoDiffusionError, match=r"--overwrite refused.*manifest\.jsonl, notes\.txt, photos/"):
        prepare_run_dir(run, None, True, command=command)
    assert _tree(run) == before


def test_overwrite_refuses_a_run_of_another_command(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, "train-vae")
    before = _tree(run)
    with pytest.raises(JoDiffusionError, match="written by `jodiffusion train-vae`"):
        prepare_run_dir(run, None, True, command="train-seg")
    assert _tree(run) == before


def test_overwrite_refuses_a_run_holding_files_the_command_did_not_write(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, "train")
    (run / "paper_figures").mkdir()
    (run / "paper_figures" / "fig1.pdf").write_bytes(b"%PDF")
    before = _tree(run)
    with pytest.raises(JoDiffusionError, match=r"did not write: paper_figures/"):
        prepare_run_dir(run, None, True, command="train")
    assert _tree(run) == before


def test_overwrite_refuses_a_file_in_place_of_the_folder(tmp_path):
    path = tmp_path / "run"
    path.write_text("not a folder")
    with pytest.raises(JoDiffusionError, match="is a file"):
        prepare_run_dir(path, None, True, command="train-vae")
    assert path.read_text() == "not a folder"


def test_resume_does_not_mark_or_change_the_folder(tmp_path):
    import torch

    from jodiffusion.engine.checkpoint import CheckpointManager

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("old\n")
    with pytest.raises(JoDiffusionError, match="no checkpoint"):
        prepare_run_dir(run, "latest", False, command="train-vae")
    assert _tree(run) == {"config.yaml": b"old\n"}
    CheckpointManager(run).save(1, {"model": torch.nn.Linear(2, 2)})
    before = _tree(run)
    prepare_run_dir(run, "latest", False, command="train-vae")
    assert _tree(run) == before


def test_train_vae_overwrite_keeps_user_files_and_replaces_its_own_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "thesis.tex").write_text("three years of work")
    args = ["train-vae", "--preset", "tiny", f"output_dir={run}", "train.steps=1", "--overwrite"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "thesis.tex" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _tree(run) == {"thesis.tex": b"three years of work"}
    (run / "thesis.tex").unlink()
    assert main(args) == 0  # an empty folder: a new run
    assert read_owner(run) == "train-vae" and (run / "annotation_vae").is_dir()
    assert main(args) == 0  # its own run: replaced


# --- make-data -----------------------------------------------------------------------------------------

def _make_data(out, *extra):
    return main(["make-data", str(out), "--num-train", "2", "--num-val", "1", "--resolution", "16",
                 "--no-progress", *extra])


def test_make_data_overwrite_refuses_a_real_dataset_with_a_classes_file(tmp_path, capsys):
    data = tmp_path / "my_dataset"
    (data / "images" / "train").mkdir(parents=True)
    (data / "images" / "train" / "0001.png").write_bytes(b"\x89PNG")
    (data / "classes.json").write_text(json.dumps({"names": ["bg", "cat"]}))
    (data / "labels.csv").write_text("a,b\n")
    before = _tree(data)
    assert _make_data(data, "--overwrite") == 1
    err = capsys.readouterr().err
    assert "--overwrite refused" in err and "labels.csv" in err and "images/" in err
    assert _tree(data) == before


def test_make_data_overwrite_replaces_its_own_dataset_only(tmp_path, capsys):
    data = tmp_path / "shapes"
    assert _make_data(data) == 0
    assert _make_data(data, "--num-train", "3", "--overwrite") == 0
    assert len(list((data / "images" / "train").iterdir())) == 3
    (data / "my_notes.md").write_text("mine")
    before = _tree(data)
    assert _make_data(data, "--overwrite") == 1
    assert "did not write: my_notes.md" in capsys.readouterr().err
    assert _tree(data) == before


# --- values that become path components ----------------------------------------------------------------

@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "../up", "a\\b", " train", "x\0y", None, 3])
def test_path_components_are_validated(value):
    with pytest.raises(ConfigError, match=r"split name .* is not usable as a folder name"):
        check_path_component(value, "split name")


def test_plain_names_pass():
    assert check_path_component("train", "split") == "train"
    assert check_path_component("synthetic_x4.v2", "split") == "synthetic_x4.v2"


def test_a_dataset_split_that_is_not_a_plain_name_is_refused_by_every_reader(tmp_path):
    from jodiffusion.data.config import DataConfig
    from jodiffusion.data.registry import build_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["a", "b"]}))
    for split in ("..", "../images", "a/b"):
        with pytest.raises(ConfigError, match=f"dataset split {split!r}"):
            build_dataset(DataConfig(name="folder", root=str(tmp_path)), split)


def test_a_preset_is_a_name_not_a_path(tmp_path):
    from jodiffusion.config.loader import load_config
    from jodiffusion.training.config import VAERunConfig

    with pytest.raises(ConfigError, match="unknown vae preset '../joint/tiny'"):
        load_config(VAERunConfig, group="vae", preset="../joint/tiny")


def test_overwrite_refuses_a_run_folder_without_its_marker(tmp_path):
    run = tmp_path / "other_run"
    _fake_run(run, "train-vae")
    (run / OWNER_FILE).unlink()
    (run / "config.yaml").write_text("lr: 0.1\n")
    before = _tree(run)
    with pytest.raises(JoDiffusionError, match="holds no .* marker"):
        prepare_run_dir(run, None, True, command="train-vae")
    assert _tree(run) == before


def test_mmseg_export_splits_are_plain_names(tmp_path):
    from jodiffusion.segmentation.mmseg_export import write_mmseg_config

    for kw in ({"split": ".."}, {"val_split": "../val"}):
        with pytest.raises(ConfigError, match="split '..(/val)?' is not usable as a folder name"):
            write_mmseg_config(tmp_path, tmp_path / "cfg.py", ["a", "b"], **kw)
    assert not (tmp_path / "cfg.py").exists()
