import pytest
import torch

from jodiffusion.diffusion.objective import JointObjectiveConfig, draw_timesteps, joint_loss
from jodiffusion.diffusion.sampling import SamplerConfig, guided_eps, sample_latents, sample_seed
from jodiffusion.diffusion.schedule import NoiseScheduleConfig, training_scheduler


class StubNet(torch.nn.Module):
    """Per-sample network whose output depends on both latents, both timesteps and the text."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(6, 6, 1)
        self.seen_text = []

    def forward(self, img, mask, t_img, t_mask, text):
        self.seen_text.append(text.detach().clone())
        x = self.a(torch.cat([img, mask], 1))
        x = x + text.mean((1, 2)).view(-1, 1, 1, 1) + 1e-3 * (t_img.float() - t_mask.float()).view(-1, 1, 1, 1)
        return 0.1 * x[:, :4], 0.1 * x[:, 4:]


SHAPES = dict(img_shape=(4, 4, 4), mask_shape=(2, 4, 4))


def test_batched_guidance_equals_two_separate_calls():
    net = StubNet()
    img, mask = torch.randn(3, 4, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([10, 500, 999])
    text, null = torch.randn(3, 5, 8), torch.randn(1, 5, 8)
    g_img, g_mask = guided_eps(net, img, mask, t, t, text, null, guidance_scale=4.0)
    c_img, c_mask = net(img, mask, t, t, text)
    u_img, u_mask = net(img, mask, t, t, null.expand_as(text))
    assert torch.allclose(g_img, u_img + 4.0 * (c_img - u_img), atol=1e-6)
    assert torch.allclose(g_mask, u_mask + 4.0 * (c_mask - u_mask), atol=1e-6)
    net.seen_text.clear()
    guided_eps(net, img, mask, t, t, text, null, guidance_scale=4.0)
    assert len(net.seen_text) == 1 and net.seen_text[0].shape[0] == 6  # ONE forward, both branches


def test_a_sample_depends_on_its_seed_not_on_the_batch():
    net = StubNet()
    sched, sampler = NoiseScheduleConfig(), SamplerConfig(steps=5, guidance_scale=2.0)
    text, null = torch.randn(3, 5, 8), torch.zeros(1, 5, 8)
    seeds = [sample_seed(7, i) for i in range(3)]
    full = sample_latents(net, text, null, seeds=seeds, sampler=sampler, schedule=sched, **SHAPES)
    alone = sample_latents(net, text[2:], null, seeds=seeds[2:], sampler=sampler, schedule=sched, **SHAPES)
    again = sample_latents(net, text, null, seeds=seeds, sampler=sampler, schedule=sched, **SHAPES)
    assert full["img"].shape == (3, 4, 4, 4) and full["mask"].shape == (3, 2, 4, 4)
    assert torch.allclose(full["img"][2], alone["img"][0], atol=1e-5)
    assert torch.allclose(full["mask"][2], alone["mask"][0], atol=1e-5)
    assert torch.equal(full["img"], again["img"])
    assert not torch.allclose(full["img"][0], full["img"][1])


def test_conditional_modes_keep_the_given_modality_clean():
    net = StubNet()
    text, null = torch.randn(2, 5, 8), torch.zeros(1, 5, 8)
    given = torch.randn(2, 4, 4, 4)
    out = sample_latents(net, text, null, seeds=[1, 2], sampler=SamplerConfig(steps=3), schedule=NoiseScheduleConfig(),
                         mode="img2mask", given=given, trajectory_every=1, **SHAPES)
    assert torch.equal(out["img"], given)
    assert len(out["trajectory"]) == 3
    with pytest.raises(ValueError, match="needs the conditioning latents"):
        sample_latents(net, text, null, seeds=[1, 2], sampler=SamplerConfig(steps=3), schedule=NoiseScheduleConfig(),
                       mode="mask2img", **SHAPES)


def test_sample_seeds_are_stable_and_distinct():
    assert sample_seed(0, 5) == sample_seed(0, 5)
    assert len({sample_seed(0, i) for i in range(1000)} | {sample_seed(1, 0)}) == 1001


def test_shared_and_independent_timesteps():
    t_img, t_mask = draw_timesteps(64, 1000, 0.0, "cpu")
    assert torch.equal(t_img, t_mask)
    t_img, t_mask = draw_timesteps(64, 1000, 1.0, "cpu", torch.Generator().manual_seed(0))
    assert (t_img != t_mask).float().mean() > 0.9


def test_loss_weights_and_caption_dropout():
    net = StubNet()
    sched = training_scheduler(NoiseScheduleConfig())
    img, mask = torch.randn(4, 4, 4, 4), torch.randn(4, 2, 4, 4)
    text, null = torch.randn(4, 5, 8), torch.full((1, 5, 8), 7.0)
    cfg = JointObjectiveConfig(img_weight=1.0, mask_weight=0.0, caption_dropout=1.0)
    loss, parts = joint_loss(net, sched, img, mask, text, null, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(loss, parts["loss_img"])           # mask weight 0: only the image term
    assert torch.all(net.seen_text[-1] == 7.0)               # every caption dropped to the null prompt
    loss.backward()
    assert net.a.weight.grad is not None
    with pytest.raises(ValueError, match="caption_dropout"):
        JointObjectiveConfig(caption_dropout=1.5)


def test_batched_guidance_equals_two_calls_with_the_real_network():
    from jodiffusion.models.uvit import JointUViT, uvit_config

    torch.manual_seed(0)
    net = JointUViT(uvit_config("tiny")).eval()
    img, mask = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([3, 700])
    text, null = torch.randn(2, 8, 32), torch.randn(1, 8, 32)
    with torch.no_grad():
        g_img, g_mask = guided_eps(net, img, mask, t, t, text, null, guidance_scale=3.0)
        c_img, c_mask = net(img, mask, t, t, text)
        u_img, u_mask = net(img, mask, t, t, null.expand_as(text))
    assert torch.allclose(g_img, u_img + 3.0 * (c_img - u_img), atol=1e-5)
    assert torch.allclose(g_mask, u_mask + 3.0 * (c_mask - u_mask), atol=1e-5)


class EchoNet(torch.nn.Module):
    """Returns a fixed prediction, so the loss equals the MSE to the target the objective builds."""

    def __init__(self, pred_img, pred_mask):
        super().__init__()
        self.pred_img, self.pred_mask = pred_img, pred_mask

    def forward(self, img, mask, t_img, t_mask, text):
        return self.pred_img, self.pred_mask


def _loss_with(prediction_type: str, snr_gamma: float = 0.0):
    sched = training_scheduler(NoiseScheduleConfig(prediction_type=prediction_type))
    img, mask = torch.randn(4, 4, 4, 4), torch.randn(4, 2, 4, 4)
    zero = EchoNet(torch.zeros_like(img), torch.zeros_like(mask))
    cfg = JointObjectiveConfig(caption_dropout=0.0, snr_gamma=snr_gamma)
    gen = torch.Generator().manual_seed(3)
    _, parts = joint_loss(zero, sched, img, mask, torch.zeros(4, 3, 8), torch.zeros(1, 3, 8), cfg, gen)
    # the same draws, by hand
    gen = torch.Generator().manual_seed(3)
    t, _ = draw_timesteps(4, 1000, 0.0, "cpu", gen)
    noise_img = torch.randn(img.shape, generator=gen)
    return sched, img, t, noise_img, parts


def test_v_prediction_trains_on_the_velocity_and_epsilon_on_the_noise():
    sched, img, t, noise, parts = _loss_with("epsilon")
    assert torch.allclose(parts["loss_img"], (noise ** 2).mean(), atol=1e-6)
    sched, img, t, noise, parts = _loss_with("v_prediction")
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    velocity = a.sqrt() * noise - (1 - a).sqrt() * img
    assert torch.allclose(parts["loss_img"], (velocity ** 2).mean(), atol=1e-5)


def test_min_snr_weighting_scales_each_sample_by_its_noise_level():
    sched, img, t, noise, parts = _loss_with("epsilon", snr_gamma=5.0)
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    weight = torch.clamp(snr, max=5.0) / snr
    per_sample = (noise ** 2).flatten(1).mean(1)
    assert torch.allclose(parts["loss_img"], (weight * per_sample).mean(), atol=1e-5)
    with pytest.raises(ValueError, match="snr_gamma"):
        JointObjectiveConfig(snr_gamma=-1)


def test_sample_prediction_trains_on_the_clean_latent():
    sched, img, t, noise, parts = _loss_with("sample")
    assert torch.allclose(parts["loss_img"], (img ** 2).mean(), atol=1e-6)
    # min-SNR weighting of the clean-sample error: min(SNR, gamma) per sample (it was silently ignored)
    sched, img2, t, _, weighted = _loss_with("sample", snr_gamma=5.0)
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    expected = (torch.clamp(snr, max=5.0) * (img2 ** 2).flatten(1).mean(1)).mean()
    assert torch.allclose(weighted["loss_img"], expected, atol=1e-5)
    assert not torch.allclose(weighted["loss_img"], (img2 ** 2).mean(), atol=1e-3)


def test_immiscible_noise_is_a_permutation_closer_to_the_batch():
    """Immiscible diffusion reorders the batch's noise draws (the same draws, each used once) so that the
    summed distance to the clean latents is the least of all orders."""
    from itertools import permutations

    from jodiffusion.diffusion.objective import immiscible_order

    gen = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(5, 12, generator=gen) + 3 * torch.eye(5, 12), torch.randn(5, 12, generator=gen)
    order = immiscible_order(clean, noise)
    assert sorted(order.tolist()) == list(range(5))
    cost = lambda o: float((clean - noise[list(o)]).norm(dim=1).sum())  # noqa: E731
    assert abs(cost(order.tolist()) - min(cost(p) for p in permutations(range(5)))) < 1e-4
    assert cost(order.tolist()) < cost(range(5))
    # in the loss: the network sees the clean latents noised with the reordered draws
    sched = training_scheduler(NoiseScheduleConfig(prediction_type="epsilon"))
    img, mask = torch.randn(6, 4, 4, 4) + torch.arange(6.0).view(6, 1, 1, 1), torch.randn(6, 2, 4, 4)
    seen = []

    class Recorder(EchoNet):
        def forward(self, img, mask, t_img, t_mask, text):
            seen.append(img)
            return super().forward(img, mask, t_img, t_mask, text)

    net = Recorder(torch.zeros_like(img), torch.zeros_like(mask))
    for flag in (False, True):
        joint_loss(net, sched, img, mask, torch.zeros(6, 3, 8), torch.zeros(1, 3, 8),
                   JointObjectiveConfig(caption_dropout=0.0, immiscible=flag), torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    t, _ = draw_timesteps(6, 1000, 0.0, "cpu", gen)
    noise_img, noise_mask = torch.randn(img.shape, generator=gen), torch.randn(mask.shape, generator=gen)
    order = immiscible_order(torch.cat([img.flatten(1), mask.flatten(1)], 1),
                             torch.cat([noise_img.flatten(1), noise_mask.flatten(1)], 1))
    assert order.tolist() != list(range(6))
    assert torch.allclose(seen[0], sched.add_noise(img, noise_img, t), atol=1e-6)
    assert torch.allclose(seen[1], sched.add_noise(img, noise_img[order], t), atol=1e-6)


def test_zero_terminal_snr_schedule():
    from jodiffusion.diffusion.schedule import sampling_scheduler

    with pytest.raises(ValueError, match="zero terminal SNR|rescale_betas_zero_snr"):
        NoiseScheduleConfig(rescale_betas_zero_snr=True)  # epsilon cannot be used at SNR 0
    cfg = NoiseScheduleConfig(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    train = training_scheduler(cfg)
    assert float(train.alphas_cumprod[-1]) < 1e-6  # the last training step is (almost) pure noise
    assert float(training_scheduler(NoiseScheduleConfig()).alphas_cumprod[-1]) > 1e-3
    sampler = sampling_scheduler(cfg)
    sampler.set_timesteps(10)
    assert int(sampler.timesteps[0]) == 999  # trailing spacing: sampling starts where training ends


def test_prediction_type_is_validated_and_reaches_the_schedulers():
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseScheduleConfig(prediction_type="x0")
    assert training_scheduler(NoiseScheduleConfig(prediction_type="v_prediction")).config.prediction_type == \
        "v_prediction"


def test_zero_terminal_snr_is_the_default_wherever_it_is_defined():
    """None means "on for v_prediction and sample": it must survive the preset merge (a resolved default
    once made every preset that switches to `sample` keep the noise leak) and be recorded when exported."""
    from jodiffusion.config.loader import load_config
    from jodiffusion.training.config import JointRunConfig

    assert not NoiseScheduleConfig().zero_snr  # epsilon: undefined at SNR 0
    assert NoiseScheduleConfig(prediction_type="sample").zero_snr
    assert not NoiseScheduleConfig(prediction_type="sample", rescale_betas_zero_snr=False).zero_snr
    demo = load_config(JointRunConfig, group="joint", preset="demo")
    assert demo.schedule.prediction_type == "sample" and demo.schedule.rescale_betas_zero_snr is None
    assert demo.schedule.zero_snr and float(training_scheduler(demo.schedule).alphas_cumprod[-1]) < 1e-6
    off = load_config(JointRunConfig, group="joint", preset="demo", overrides=["schedule.rescale_betas_zero_snr=false"])
    assert not off.schedule.zero_snr
    assert demo.schedule.resolved().rescale_betas_zero_snr is True
