import torch

from jodiffusion.engine.ema import EMA


def test_ema_tracks_the_average_with_warmup():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 1/10) = 0.1 -> 0.9 of the new value
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.9))
    for _ in range(20):
        ema.update(model)
    assert torch.allclose(ema.module.weight, torch.ones(1, 2), atol=1e-5)
    assert not ema.module.weight.requires_grad
