import pytest
import torch

from jodiffusion.engine.checkpoint import CheckpointManager
from jodiffusion.errors import CheckpointError
from jodiffusion.utils.tempnames import temp_name


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_restores_model_and_optimizer(tmp_path):
    model, opt = _model_and_opt()
    mgr = CheckpointManager(tmp_path, keep=2)
    path = mgr.save(5, {"model": model}, opt, extra={"epoch": 1})
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.5)
    state = mgr.load(mgr.resolve("latest"), {"model": fresh}, fresh_opt)
    assert state["step"] == 5 and state["extra"] == {"epoch": 1} and path.name == "step_00000005"
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_opt.param_groups[0]["lr"] == 0.1
    a, b = opt.state_dict()["state"][0], fresh_opt.state_dict()["state"][0]
    assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["step"], b["step"])


def test_rotation_keeps_the_newest_and_ignores_partial_folders(tmp_path):
    model, opt = _model_and_opt()
    mgr = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        mgr.save(step, {"model": model}, opt)
    (mgr.root / "step_00000009").mkdir()  # a folder without state.json is not a checkpoint
    assert [s for s, _ in mgr.list()] == [2, 3]
    assert mgr.latest().name == "step_00000003"
    assert not list(mgr.root.glob(".jodiffusion-*"))  # no temporary folders left behind


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_temporary_folders_of_interrupted_saves_are_removed_when_a_run_starts_or_resumes(tmp_path):
    from jodiffusion.engine.run import prepare_run_dir

    model, opt = _model_and_opt()
    mgr = CheckpointManager(tmp_path, keep=3)
    mgr.save(1, {"model": model}, opt)
    for name in (temp_name("step_00000002"), temp_name("step_00000003")):  # what a kill during save leaves
        (mgr.root / name).mkdir()
        (mgr.root / name / "model.safetensors").write_bytes(b"partial")
    (mgr.root / ".step_notes").mkdir()  # not a name save() writes: left alone
    (mgr.root / ".step_00000004.k3j4l5").mkdir()  # not the tool's temporary name either: left alone
    prepare_run_dir(tmp_path, "latest", False, command="train-vae")
    assert sorted(p.name for p in mgr.root.iterdir()) == [".step_00000004.k3j4l5", ".step_notes", "step_00000001"]
    assert mgr.remove_temporary() == []


def test_a_corrupt_latest_checkpoint_falls_back_to_the_newest_complete_one(tmp_path, caplog):
    model, opt = _model_and_opt()
    mgr = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2, 3):
        mgr.save(step, {"model": model}, opt)
    _truncate(mgr.root / "step_00000003" / "model.safetensors")
    (mgr.root / "step_00000002" / "optimizer.safetensors").write_bytes(b"\x80\x04pickle, not safetensors")
    with caplog.at_level("WARNING", logger="jodiffusion"):
        assert mgr.resolve("latest").name == "step_00000001"
    text = caplog.text
    assert "step_00000003/model.safetensors is corrupt or incomplete" in text
    assert "step_00000002/optimizer.safetensors is corrupt" in text and "resuming from" in text
    state = mgr.load(mgr.resolve("latest"), {"model": torch.nn.Linear(3, 2)})
    assert state["step"] == 1


def test_a_corrupt_checkpoint_named_explicitly_is_an_error_naming_the_file(tmp_path):
    model, opt = _model_and_opt()
    mgr = CheckpointManager(tmp_path, keep=3)
    path = mgr.save(1, {"model": model}, opt)
    _truncate(path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"step_00000001/model\.safetensors is corrupt or incomplete"):
        mgr.resolve(str(path))
    with pytest.raises(CheckpointError, match=r"no complete checkpoint .*model\.safetensors"):
        mgr.resolve("latest")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt"):  # load names it too
        mgr.load(path, {"model": torch.nn.Linear(3, 2)})
    (path / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"state\.json is unreadable"):
        mgr.resolve(str(path))


def test_train_vae_resumes_past_a_corrupt_latest_checkpoint_and_writes_nothing_on_a_corrupt_one(tmp_path, capsys):
    from jodiffusion.cli.main import main

    run = tmp_path / "run"
    base = ["train-vae", "--preset", "tiny", f"output_dir={run}", "train.save_every=2"]
    assert main([*base, "train.steps=4"]) == 0
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_00000002", "step_00000004"]
    _truncate(ckpts / "step_00000004" / "model.safetensors")
    killed = ckpts / temp_name("step_00000006")
    killed.mkdir()  # and a save a kill interrupted
    before = _tree(run)
    # the corrupt folder named explicitly: one line naming the file, nothing written (config.yaml included)
    assert main([*base, "train.steps=6", "train.lr=0.5", "--resume", str(ckpts / "step_00000004")]) == 1
    err = capsys.readouterr().err
    assert "step_00000004/model.safetensors is corrupt" in err and "Traceback" not in err
    assert _tree(run) == before
    # latest: falls back to step 2, finishes, and the temporary folder is gone
    assert main([*base, "train.steps=6", "--resume", "latest"]) == 0
    assert not killed.exists()
    assert CheckpointManager(run).verify(ckpts / "step_00000004") is None  # saved again, complete
    assert (run / "annotation_vae" / "model.safetensors").is_file()
