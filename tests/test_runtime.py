"""The shared training engine: a loss (or gradient) that stops being finite stops the run."""

import pytest
import torch
from accelerate import Accelerator

from jodiffusion.engine.config import TrainConfig
from jodiffusion.engine.runtime import NonFiniteLossError, make_lr_scheduler, make_optimizer, optimizer_step
from jodiffusion.errors import JoDiffusionError


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    train = TrainConfig(steps=4, lr=0.1, mixed_precision="no")
    optimizer = make_optimizer(model.parameters(), train)
    return Accelerator(cpu=True), model, optimizer, make_lr_scheduler(optimizer, train)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_loss_raises_before_anything_is_applied(bad):
    accelerator, model, optimizer, scheduler = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = model(torch.randn(4, 3)).sum() * bad
    with pytest.raises(NonFiniteLossError, match="training loss became .*not a finite number.*exported nothing"):
        optimizer_step(accelerator, model, loss, optimizer, scheduler, grad_clip=1.0)
    assert issubclass(NonFiniteLossError, JoDiffusionError)  # the CLI prints it as one line
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_non_finite_gradient_raises_before_the_step():
    accelerator, model, optimizer, scheduler = _setup()
    before = model.weight.detach().clone()
    loss = model(torch.randn(4, 3)).sum()  # finite; its gradient is made infinite on the way back
    model.weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteLossError, match="gradient norm"):
        optimizer_step(accelerator, model, loss, optimizer, scheduler, grad_clip=1.0)
    assert torch.equal(model.weight.detach(), before)


def test_finite_steps_still_train():
    accelerator, model, optimizer, scheduler = _setup()
    before = model.weight.detach().clone()
    optimizer_step(accelerator, model, model(torch.randn(4, 3)).pow(2).mean(), optimizer, scheduler, grad_clip=1.0)
    assert not torch.equal(model.weight.detach(), before)
