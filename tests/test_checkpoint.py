import torch

from jodiffusion.engine.checkpoint import CheckpointManager


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
    assert not list(mgr.root.glob(".step_*"))  # no temporary folders left behind
