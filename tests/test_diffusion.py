"""course_lib.diffusion: schedules, the forward process, parameterizations, losses, samplers, guidance
and the oracle denoiser."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import diffusion as D

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _steps(*values):
    return torch.tensor(values, dtype=torch.int64)


def test_linear_schedule_matches_its_definition_and_the_digest_numbers():
    s = D.make_schedule("linear", 1000)
    torch.testing.assert_close(s.betas[1:], torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    assert s.betas[0] == 0 and s.alpha_bars[0] == 1 and math.isinf(s.snr[0])
    torch.testing.assert_close(s.alpha_bars[1:], torch.cumprod(1 - s.betas[1:], 0))
    # the toy schedules of the course's digests: T = 100 and 200, beta linear from 1e-4 to 0.1
    assert abs(float(D.make_schedule("linear", 100, beta_end=0.1).alpha_bars[-1]) - 0.0056) < 5e-5
    assert abs(float(D.make_schedule("linear", 200, beta_end=0.1).alpha_bars[-1]) - 3.16e-5) < 5e-7


@pytest.mark.parametrize("name", D.SCHEDULES)
def test_alpha_bar_and_snr_decrease(name):
    s = D.make_schedule(name, 300)
    assert (s.alpha_bars[1:] < s.alpha_bars[:-1]).all()
    assert (s.snr[1:] < s.snr[:-1]).all()
    torch.testing.assert_close(s.snr[1:], s.alpha_bars[1:] / (1 - s.alpha_bars[1:]))
    assert s.T == 300 and len(s.betas) == len(s.alpha_bars) == 301


def test_cosine_schedule_follows_its_closed_form():
    T, off = 100, 0.008
    s = D.make_schedule("cosine", T, s=off)
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + off) / (1 + off) * math.pi / 2) ** 2
    # identical except where beta is clipped at 0.999 (only the last step)
    torch.testing.assert_close(s.alpha_bars[:-1], (f / f[0])[:-1])
    assert s.betas[-1] <= 0.999


def test_q_sample_closed_form_matches_iterating_single_steps():
    torch.manual_seed(0)
    s = D.make_schedule("linear", 50, beta_end=0.1)
    x0 = torch.tensor([1.5, -0.5, 0.0, 2.0])
    n = 20_000
    x = x0.expand(n, -1).clone()
    for t in range(1, 31):
        x = D.q_step(x, torch.full((n,), t), s)
    closed = D.q_sample(x0.expand(n, -1), torch.full((n,), 30), s)
    ab = float(s.alpha_bars[30])
    for samples in (x, closed):
        torch.testing.assert_close(samples.mean(0), math.sqrt(ab) * x0, atol=0.03, rtol=0)
        torch.testing.assert_close(samples.var(0), torch.full((4,), 1 - ab), atol=0.03, rtol=0)
    torch.testing.assert_close(D.q_sample(x0[None], _steps(0), s), x0[None])  # t = 0: no noise


def test_q_sample_with_given_noise_is_the_formula():
    s = D.make_schedule("cosine", 10)
    x0, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = _steps(1, 5, 10)
    ab = s.alpha_bars[t].float().view(3, 1, 1, 1)
    torch.testing.assert_close(D.q_sample(x0, t, s, eps), ab.sqrt() * x0 + (1 - ab).sqrt() * eps)


@pytest.mark.parametrize("source", D.PARAMETERIZATIONS)
@pytest.mark.parametrize("target", D.PARAMETERIZATIONS)
def test_conversions_agree_with_the_training_targets(source, target):
    torch.manual_seed(1)
    s = D.make_schedule("cosine", 100)
    x0, eps = torch.randn(5, 3, 2, dtype=torch.float64), torch.randn(5, 3, 2, dtype=torch.float64)
    t = _steps(1, 10, 50, 90, 99)
    x_t = D.q_sample(x0, t, s, eps)
    pred = D.training_target(x0, eps, t, s, source)
    torch.testing.assert_close(
        D.convert(pred, x_t, t, s, source, target), D.training_target(x0, eps, t, s, target)
    )


def test_v_target_by_hand():
    s = D.make_schedule("linear", 4, beta_start=0.1, beta_end=0.4)
    ab = 0.9 * 0.8 * 0.7  # alpha_bar_3
    x0, eps = torch.tensor([[2.0]]), torch.tensor([[-1.0]])
    v = D.training_target(x0, eps, _steps(3), s, "v")
    torch.testing.assert_close(v, torch.tensor([[math.sqrt(ab) * -1.0 - math.sqrt(1 - ab) * 2.0]]))


@pytest.mark.parametrize("parameterization", D.PARAMETERIZATIONS)
def test_loss_is_zero_for_the_exact_target_and_one_for_eps_zero(parameterization):
    s = D.make_schedule("linear", 20, beta_end=0.2)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 1, 4, 4, generator=g)
    t = torch.randint(1, 21, (64,), generator=g)
    eps = torch.randn(64, 1, 4, 4, generator=g)
    target = D.training_target(x0, eps, t, s, parameterization)
    loss = D.diffusion_loss(lambda x, tt: target, x0, s, parameterization=parameterization, t=t, noise=eps)
    assert float(loss) == 0.0
    per = D.diffusion_loss(lambda x, tt: torch.zeros_like(x), x0, s, t=t, noise=eps, reduction="none")
    assert per.shape == (64,)
    torch.testing.assert_close(per.mean(), eps.square().mean())


def test_loss_draws_t_and_noise_from_the_generator():
    s = D.make_schedule("linear", 20, beta_end=0.2)
    x0 = torch.randn(8, 3)
    seen = []

    def model(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    a = D.diffusion_loss(model, x0, s, generator=torch.Generator().manual_seed(3))
    b = D.diffusion_loss(model, x0, s, generator=torch.Generator().manual_seed(3))
    assert float(a) == float(b) and torch.equal(seen[0], seen[1])
    assert seen[0].dtype == torch.int64 and 1 <= int(seen[0].min()) and int(seen[0].max()) <= 20


def _nearest(samples, data):
    return torch.cdist(samples.flatten(1).double(), data.flatten(1).double()).min(1)


@pytest.mark.parametrize("schedule", D.SCHEDULES)
@pytest.mark.parametrize("parameterization", D.PARAMETERIZATIONS)
def test_samplers_with_the_oracle_reproduce_training_images(schedule, parameterization):
    s = D.make_schedule(schedule, 100, beta_end=0.1)
    data = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    oracle = D.OracleDenoiser(data, s, parameterization=parameterization)
    g = torch.Generator().manual_seed(1)
    for samples in (
        D.ddpm_sample(oracle, (32, 1, 4, 4), s, parameterization=parameterization, generator=g),
        D.ddim_sample(oracle, (32, 1, 4, 4), s, steps=10, parameterization=parameterization, generator=g),
        D.ddim_sample(
            oracle, (32, 1, 4, 4), s, steps=25, eta=1.0, parameterization=parameterization, generator=g
        ),
    ):
        dist, idx = _nearest(samples, data)
        assert samples.shape == (32, 1, 4, 4)
        assert float(dist.max()) < 1e-4, f"a sample is {float(dist.max()):.2e} away from every training image"
        assert len(idx.unique()) >= 6  # not one image over and over: the samples spread over the set


def test_class_conditional_oracle_returns_images_of_the_asked_label():
    s = D.make_schedule("linear", 50, beta_end=0.2)
    data = torch.rand(10, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(10) % 3
    oracle = D.OracleDenoiser(data, s, labels=labels)
    want = torch.tensor([0, 1, 2, 2, 1, 0])
    out = D.ddim_sample(
        lambda x, t: oracle(x, t, want), (6, 6), s, steps=20, generator=torch.Generator().manual_seed(0)
    )
    dist, idx = _nearest(out, data)
    assert float(dist.max()) < 1e-4 and torch.equal(labels[idx], want)
    with pytest.raises(ValueError, match="pass cond"):
        oracle(out, _steps(*[5] * 6))


def test_ddim_with_eta_one_on_every_step_is_ddpm_with_the_posterior_variance():
    s = D.make_schedule("linear", 30, beta_end=0.2)
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 0.3

    def model(x, t):  # any fixed function of x and t
        return torch.tanh(x @ w) * (t[:, None].float() / 30)

    x_T = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    a = D.ddpm_sample(
        model, None, s, x_T=x_T, variance="posterior", generator=torch.Generator().manual_seed(2)
    )
    b = D.ddim_sample(model, None, s, x_T=x_T, steps=30, eta=1.0, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)


def test_ddim_is_deterministic_and_trajectories_have_every_state():
    s = D.make_schedule("cosine", 40)
    model = lambda x, t: 0.5 * x  # noqa: E731
    x_T = torch.randn(3, 2, 2, 2)
    a, traj = D.ddim_sample(model, None, s, x_T=x_T, steps=8, return_trajectory=True)
    assert torch.equal(a, D.ddim_sample(model, None, s, x_T=x_T, steps=8))
    assert traj.shape == (9, 3, 2, 2, 2) and torch.equal(traj[0], x_T) and torch.equal(traj[-1], a)
    b, traj_b = D.ddpm_sample(model, None, s, x_T=x_T, return_trajectory=True, generator=torch.Generator())
    assert traj_b.shape == (41, 3, 2, 2, 2) and torch.equal(traj_b[-1], b)


def test_ddim_timesteps():
    assert D.ddim_timesteps(100, 100) == list(range(100, 0, -1))
    ts = D.ddim_timesteps(100, 10)
    assert (
        len(ts) == 10
        and ts[0] == 100
        and ts[-1] == 1
        and all(a > b for a, b in zip(ts, ts[1:], strict=False))
    )
    assert D.ddim_timesteps(7, 1) == [7]
    with pytest.raises(ValueError, match="steps"):
        D.ddim_timesteps(10, 11)


def test_classifier_free_guidance_combines_the_two_predictions():
    calls = []

    def model(x, t, y):
        calls.append(len(y))
        return x * 0 + y.float()[:, None]

    x, t, y = torch.zeros(3, 2), _steps(1, 1, 1), torch.tensor([4, 5, 6])
    torch.testing.assert_close(D.guided(model, y, 0, 1.0)(x, t), y.float()[:, None].expand(3, 2))
    torch.testing.assert_close(D.guided(model, y, 0, 0.0)(x, t), torch.zeros(3, 2))
    calls.clear()
    out = D.guided(model, y, torch.tensor([1, 1, 1]), 3.0)(x, t)
    torch.testing.assert_close(out, (1 + 3.0 * (y.float() - 1))[:, None].expand(3, 2))
    assert calls == [6]  # conditional and unconditional in one batched call


@pytest.mark.parametrize("device", DEVICES)
def test_devices_and_dtypes_follow_the_inputs(device):
    s = D.make_schedule("linear", 20, beta_end=0.2)
    data = torch.rand(5, 3, device=device, dtype=torch.float64)
    oracle = D.OracleDenoiser(data, s)
    g = torch.Generator(device=device).manual_seed(0)
    out = D.ddim_sample(oracle, (4, 3), s, steps=5, generator=g, device=device, dtype=torch.float64)
    assert out.device.type == device and out.dtype == torch.float64
    loss = D.diffusion_loss(lambda x, t: torch.zeros_like(x), data, s, generator=g)
    assert loss.device.type == device and loss.dtype == torch.float64
    assert D.q_sample(data, torch.ones(5, dtype=torch.int64, device=device), s).device.type == device


def test_bad_input_raises():
    s = D.make_schedule("linear", 10, beta_end=0.2)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="name must be"):
        D.make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="T must be"):
        D.make_schedule("linear", 0)
    with pytest.raises(ValueError, match="beta"):
        D.Schedule(torch.tensor([0.1, 1.2]))
    with pytest.raises(ValueError, match="t must lie in 0..10"):
        D.q_sample(x, _steps(0, 11), s)
    with pytest.raises(ValueError, match="t must lie in 1..10"):
        D.q_step(x, _steps(0, 1), s)
    with pytest.raises(TypeError, match="int64"):
        D.q_sample(x, torch.tensor([1.0, 2.0]), s)
    with pytest.raises(ValueError, match="t must be Tensor"):
        D.q_sample(x, _steps(1, 2, 3), s)
    with pytest.raises(ValueError, match="noise must have"):
        D.q_sample(x, _steps(1, 2), s, torch.randn(2, 4))
    with pytest.raises(ValueError, match="parameterization"):
        D.diffusion_loss(lambda a, b: a, x, s, parameterization="score")
    with pytest.raises(ValueError, match="model output"):
        D.diffusion_loss(lambda a, b: a[:, :2], x, s)
    with pytest.raises(ValueError, match="source"):
        D.convert(x, x, _steps(1, 2), s, "mu", "eps")
    with pytest.raises(ValueError, match="give shape or x_T"):
        D.ddim_sample(lambda a, b: a, None, s, steps=5)
    with pytest.raises(ValueError, match="scale"):
        D.guided(lambda a, b, c: a, torch.zeros(2), 0, -1.0)
    with pytest.raises(ValueError, match="x_t must be"):
        D.OracleDenoiser(torch.rand(4, 3), s)(torch.rand(2, 5), _steps(1, 1))
    with pytest.raises(ValueError, match="labels"):
        D.OracleDenoiser(torch.rand(4, 3), s, labels=torch.zeros(3, dtype=torch.int64))
