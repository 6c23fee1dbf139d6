"""Tests of the diffusion building blocks (whatifgan.diffusion, whatifgan.nn.unet,
trainers.DiffusionTrainer): fast, CPU, tiny models.

Ground truth for the samplers: if the data are Gaussian, x_0 ~ N(mu, s^2 I), the optimal noise
predictor is known in closed form,

    eps*(x_t, t) = E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a),   a = abar_t,

so DDIM/DDPM driven by it must reproduce N(mu, s^2) (DDIM: the deterministic map x_T -> x_0 is
x_0 = mu + s x_T), and classifier guidance with the exact noisy likelihood of a Gaussian
observation must produce the Gaussian posterior.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainers import (
    CheckpointError,
    DiffusionTrainer,
    NonFiniteLossError,
    TensorDictLoader,
    drop_conditions,
    seed_everything,
)
from whatifgan.diffusion import (
    EMA,
    DDIMSampler,
    DDPMSampler,
    NoiseSchedule,
    apply_classifier_guidance,
    classifier_free_guidance,
    classifier_guidance,
    classifier_log_prob_grad,
    epsilon_loss,
    make_eps_fn,
    model_eps_fn,
    q_sample,
    respaced_indices,
)
from whatifgan.nn import TimeConditionedClassifier, UNet, build, timestep_embedding


SCHED = NoiseSchedule.linear()
TINY = {"base_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "groups": 4}


def _abar(schedule: NoiseSchedule, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return schedule.alphas_cumprod_at(t, like=x)


class GaussianEps(nn.Module):
    """The exact eps-predictor for data N(mu, s2) (per dimension)."""

    def __init__(self, schedule: NoiseSchedule, mu: torch.Tensor, s2: torch.Tensor):
        super().__init__()
        self.schedule, self.mu, self.s2 = schedule, mu, s2

    def forward(self, x, t, cond=None):
        a = _abar(self.schedule, t, x)
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s2 + 1 - a)


def _gaussian(d: int = 8):
    mu = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    s2 = torch.full((d,), 0.25, dtype=torch.float64)
    return mu, s2, GaussianEps(SCHED, mu, s2)


# ---------------------------------------------------------------------------- schedules
def test_linear_schedule_values():
    s = NoiseSchedule.linear()
    assert len(s) == 1000 and s.num_train_timesteps == 1000 and not s.is_respaced
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    abar = s.alphas_cumprod
    assert bool((abar[1:] < abar[:-1]).all()), "alphas_cumprod must be strictly decreasing"
    assert bool(((abar > 0) & (abar < 1)).all())
    assert abar[0].item() == pytest.approx(1 - 1e-4)
    assert abar[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)  # Ho et al.: ~ N(0, I) at T
    assert torch.allclose(s.alphas_cumprod_prev[1:], abar[:-1]) and s.alphas_cumprod_prev[0] == 1


def test_cosine_schedule_values():
    s = NoiseSchedule.cosine(1000)
    abar = s.alphas_cumprod
    assert bool((abar[1:] < abar[:-1]).all()) and bool((s.betas <= 0.999).all())
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):  # Nichol & Dhariwal Eq. 17 where betas are not clipped
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert NoiseSchedule.from_name("cosine", 50).name == "cosine"
    with pytest.raises(ValueError, match="unknown noise schedule"):
        NoiseSchedule.from_name("quadratic")


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_respaced_schedule_consistent_with_full(spacing, k):
    r = SCHED.respace(k, spacing)
    assert len(r) == k and r.num_train_timesteps == 1000
    assert bool((r.timesteps[1:] > r.timesteps[:-1]).all())
    assert 0 <= int(r.timesteps[0]) and int(r.timesteps[-1]) <= 999
    # the kept abar are exactly the full ones ...
    assert torch.equal(r.alphas_cumprod, SCHED.alphas_cumprod[r.timesteps])
    # ... and the respaced betas multiply back to them
    assert torch.allclose(torch.cumprod(1 - r.betas, 0), r.alphas_cumprod, rtol=1e-12)
    assert torch.equal(r.alphas_cumprod_at(r.timesteps), r.alphas_cumprod)
    if spacing == "linspace" and k > 1:
        assert int(r.timesteps[0]) == 0 and int(r.timesteps[-1]) == 999
    if spacing == "trailing":
        assert int(r.timesteps[-1]) == 999


def test_respace_errors_and_nesting():
    r = SCHED.respace(100).respace(10)
    assert torch.equal(r.alphas_cumprod, SCHED.alphas_cumprod[r.timesteps])
    assert torch.equal(SCHED.respace([0, 500, 999]).timesteps, torch.tensor([0, 500, 999]))
    with pytest.raises(ValueError, match="cannot respace"):
        respaced_indices(1000, 1001)
    with pytest.raises(ValueError, match="not all steps"):
        SCHED.respace(10).alphas_cumprod_at(torch.tensor([1]))
    with pytest.raises(ValueError, match="betas must lie"):
        NoiseSchedule([0.1, 1.5])
    d = SCHED.respace(7).to_dict()
    assert torch.equal(NoiseSchedule.from_dict(d).alphas_cumprod, SCHED.respace(7).alphas_cumprod)


# ---------------------------------------------------------------------------- DDPM pieces
def test_q_sample_statistics():
    g = torch.Generator().manual_seed(0)
    n, c = 200_000, 0.7
    for t in (0, 250, 999):
        x0 = torch.full((n,), c)
        noise = torch.randn(n, generator=g)
        xt = q_sample(SCHED, x0, torch.full((n,), t), noise)
        a = SCHED.alphas_cumprod[t].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(a) * c, abs=0.01)
        assert xt.var().item() == pytest.approx(1 - a, rel=0.02, abs=1e-4)
    # per-sample timesteps broadcast over image dimensions
    x0 = torch.ones(3, 1, 4, 4)
    xt = q_sample(SCHED, x0, torch.tensor([0, 10, 999]), torch.zeros_like(x0))
    assert torch.allclose(xt[:, 0, 0, 0], SCHED.alphas_cumprod[[0, 10, 999]].sqrt().float())


def test_epsilon_loss_matches_definition():
    torch.manual_seed(0)
    model = UNet(**TINY)
    x0, t, noise = torch.randn(4, 1, 8, 8), torch.tensor([0, 5, 500, 999]), torch.randn(4, 1, 8, 8)
    xt = q_sample(SCHED, x0, t, noise)
    want = (model(xt, t) - noise).pow(2).mean()
    assert torch.allclose(epsilon_loss(model, SCHED, x0, t=t, noise=noise), want)
    per = epsilon_loss(model, SCHED, x0, t=t, noise=noise, weighting="1-abar", reduction="none")
    full = (model(xt, t) - noise).pow(2).flatten(1).mean(1)
    assert torch.allclose(per, full * (1 - SCHED.alphas_cumprod[t].float()))


# ---------------------------------------------------------------------------- DDIM/DDPM
def test_ddim_eta0_is_deterministic_and_eta_positive_is_not():
    torch.manual_seed(0)
    model = UNet(**TINY, num_classes=3).eval()
    with torch.no_grad():  # non-trivial output
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    dd = DDIMSampler(SCHED, 10)
    xT = torch.randn(2, 1, 8, 8)
    cond = {"y": torch.tensor([0, 2])}
    a, b = dd.sample(model, xT, cond=cond), dd.sample(model, xT.clone(), cond=cond)
    assert torch.equal(a, b)
    s1 = dd.sample(model, xT, cond=cond, eta=1.0, generator=torch.Generator().manual_seed(1))
    s2 = dd.sample(model, xT, cond=cond, eta=1.0, generator=torch.Generator().manual_seed(2))
    s3 = dd.sample(model, xT, cond=cond, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(s1, s2) and torch.equal(s1, s3)
    x, traj = dd.sample(model, xT, cond=cond, return_trajectory=True)
    assert len(traj) == 11 and torch.equal(traj[-1], x) and torch.equal(traj[0], xT)


def test_ddim_exact_gaussian_map():
    """Ground truth: DDIM with the optimal eps maps x_T to mu + s x_T (data N(mu, s^2))."""
    mu, s2, model = _gaussian()
    dd = DDIMSampler(SCHED)  # all 1000 steps
    zero = dd.sample(model, torch.zeros(1, 8, dtype=torch.float64))
    one = dd.sample(model, torch.ones(1, 8, dtype=torch.float64))
    assert torch.allclose(zero[0], mu, atol=0.005)  # offset ~ sqrt(abar_T) mu
    assert torch.allclose(one[0] - zero[0], s2.sqrt(), rtol=0.01)


def test_ddim_sampling_statistics_gaussian():
    mu, s2, model = _gaussian()
    g = torch.Generator().manual_seed(0)
    x = DDIMSampler(SCHED, 100).sample(model, shape=(4000, 8), dtype=torch.float64, generator=g)
    assert (x.mean(0) - mu).abs().max().item() < 0.04
    assert x.var(0).mean().item() == pytest.approx(0.25, rel=0.08)
    x = DDIMSampler(SCHED, 100, eta=1.0).sample(model, shape=(4000, 8), dtype=torch.float64,
                                                generator=g)
    assert (x.mean(0) - mu).abs().max().item() < 0.04
    assert x.var(0).mean().item() == pytest.approx(0.25, rel=0.15)


def test_ddpm_ancestral_sampling_gaussian():
    mu, s2, model = _gaussian()
    g = torch.Generator().manual_seed(0)
    x = DDPMSampler(SCHED).sample(model, shape=(4000, 8), dtype=torch.float64, generator=g)
    assert (x.mean(0) - mu).abs().max().item() < 0.04
    assert x.var(0).mean().item() == pytest.approx(0.25, rel=0.06)
    x = DDPMSampler(SCHED, 50).sample(model, shape=(16, 8), dtype=torch.float64)
    assert x.shape == (16, 8) and torch.isfinite(x).all()


def test_ddim_inversion_then_sampling_reconstructs():
    mu, s2, model = _gaussian()
    g = torch.Generator().manual_seed(0)
    data = mu + s2.sqrt() * torch.randn(256, 8, dtype=torch.float64, generator=g)
    dd = DDIMSampler(SCHED)  # Diff-SCM: 1000 steps for counterfactuals
    u = dd.invert(model, data)
    assert abs(u.mean().item()) < 0.08 and u.var().item() == pytest.approx(1.0, rel=0.1)
    assert (dd.sample(model, u) - data).abs().max().item() < 0.02
    # 100 steps with fixed-point refinement: exact up to solver tolerance
    d100 = DDIMSampler(SCHED, 100)
    u, traj = d100.invert(model, data, fixed_point_iters=3, return_trajectory=True)
    assert len(traj) == 101
    assert (d100.sample(model, u) - data).abs().max().item() < 1e-4
    assert (d100.sample(model, d100.invert(model, data)) - data).abs().max().item() > 1e-3


def test_ddim_inversion_with_unet_shapes_and_step_inverse():
    torch.manual_seed(0)
    model = UNet(**TINY, num_classes=2).eval()
    dd = DDIMSampler(SCHED, 20)
    x0 = torch.randn(2, 1, 8, 8)
    cond = {"y": torch.tensor([0, 1])}
    u = dd.invert(model, x0, cond=cond, guidance_weight=1.0)
    assert u.shape == x0.shape
    eps = torch.randn_like(x0)
    for i in (0, 7, 19):  # inverse_step undoes step exactly for the same eps
        assert torch.allclose(dd.inverse_step(eps, i, dd.step(eps, i, x0)), x0, atol=1e-4)


# ---------------------------------------------------------------------------- guidance
def test_classifier_guidance_gives_gaussian_posterior():
    """Ground truth: prior N(mu, s2), observation y ~ N(x_0, v).  The exact noisy likelihood
    p(y | x_t) is Gaussian; DDIM guided by its gradient (s = 1) samples the posterior."""
    mu, s2, model = _gaussian(4)
    y, v = torch.tensor([1.0, 1.0, -1.0, 0.5], dtype=torch.float64), 0.25

    def grad_log_p(x, t):
        a = _abar(SCHED, t, x)
        g = a * s2 + 1 - a
        m = mu + s2 * a.sqrt() / g * (x - a.sqrt() * mu)  # E[x_0 | x_t]
        c = s2 - a * s2 ** 2 / g                         # Var[x_0 | x_t]
        return (y - m) / (c + v) * s2 * a.sqrt() / g

    dd = DDIMSampler(SCHED)
    fn = classifier_guidance(model_eps_fn(model), grad_log_p, 1.0, dd.schedule)
    post_mean, post_sd = (mu * v + y * s2) / (s2 + v), (s2 * v / (s2 + v)).sqrt()
    zero = dd.sample(None, torch.zeros(1, 4, dtype=torch.float64), eps_fn=fn)
    one = dd.sample(None, torch.ones(1, 4, dtype=torch.float64), eps_fn=fn)
    assert torch.allclose(zero[0], post_mean, atol=0.005)
    assert torch.allclose(one[0] - zero[0], post_sd, rtol=0.01)
    # the same through the sampler's own arguments
    again = dd.sample(model, torch.zeros(1, 4, dtype=torch.float64), classifier_grad=grad_log_p,
                      classifier_scale=1.0)
    assert torch.equal(again, zero)
    # and s = 0 is the unguided prior
    prior = dd.sample(model, torch.zeros(1, 4, dtype=torch.float64), classifier_grad=grad_log_p,
                      classifier_scale=0.0)
    assert torch.allclose(prior[0], mu, atol=0.005)


def test_classifier_log_prob_grad_and_formula():
    torch.manual_seed(0)
    w = torch.randn(3, 5)

    def clf(x, t):
        return x @ w.T

    x = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():  # gradients are computed even under no_grad
        g = classifier_log_prob_grad(clf, y)(x, torch.zeros(4, dtype=torch.long))
    p = torch.softmax(x @ w.T, dim=1)
    assert torch.allclose(g, w[y] - p @ w, atol=1e-6)
    eps, abar = torch.randn(4, 5), torch.full((4, 1), 0.36)
    assert torch.allclose(apply_classifier_guidance(eps, g, 2.0, abar), eps - 2.0 * 0.8 * g)

    net = TimeConditionedClassifier(4, **TINY)
    g = classifier_log_prob_grad(net, 2)(torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]))
    assert g.shape == (3, 1, 8, 8) and g.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


class _TwoBranch(nn.Module):
    """eps = cval (conditional rows) or uval (null rows); counts calls per branch."""

    supports_null_mask = True

    def __init__(self, cval=1.0, uval=-3.0):
        super().__init__()
        self.cval, self.uval, self.calls = cval, uval, []

    def forward(self, x, t, cond=None, null_mask=None):
        null = torch.zeros(x.shape[0], dtype=torch.bool) if null_mask is None else null_mask
        if cond is not None and "y" in cond:
            null = null | (cond["y"] == 5)
        self.calls.append(int(null.sum()))
        v = torch.where(null, torch.tensor(self.uval), torch.tensor(self.cval))
        return v.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype).expand_as(x) * (1 + 0 * x)


def test_cfg_weight_zero_is_the_conditional_branch():
    model = _TwoBranch()
    x, t = torch.randn(3, 1, 4, 4), torch.zeros(3, dtype=torch.long)
    cond = {"y": torch.tensor([0, 1, 2])}
    fn = make_eps_fn(model, SCHED, cond=cond, guidance_weight=0.0)
    assert torch.equal(fn(x, t), torch.ones_like(x)) and model.calls == [0]
    # with a real UNet: DDIM with w = 0 equals DDIM with the conditional model
    torch.manual_seed(0)
    net = UNet(**TINY, num_classes=3).eval()
    dd, xT = DDIMSampler(SCHED, 8), torch.randn(3, 1, 8, 8)
    assert torch.equal(dd.sample(net, xT, cond=cond, guidance_weight=0.0),
                       dd.sample(None, xT, eps_fn=lambda x, t: net(x, t, cond)))


@pytest.mark.parametrize("route", ["mask-batched", "mask-unbatched", "null_cond"])
def test_cfg_uses_the_unconditional_branch(route):
    w = 2.0
    model = _TwoBranch(cval=1.0, uval=-3.0)
    cond = {"y": torch.tensor([0, 1])}
    kw = {"null_cond": {"y": torch.tensor([5, 5])}} if route == "null_cond" else {}
    fn = classifier_free_guidance(model, cond, w, batched=route == "mask-batched", **kw)
    x, t = torch.randn(2, 1, 4, 4), torch.tensor([10, 10])
    assert torch.allclose(fn(x, t), torch.full_like(x, (1 + w) * 1.0 - w * -3.0))
    assert any(c > 0 for c in model.calls), "the null branch was never evaluated"
    dd = DDIMSampler(SCHED, 5)
    xT = torch.randn(2, 1, 4, 4)
    guided = dd.sample(model, xT, cond=cond, guidance_weight=w, **kw)
    const = dd.sample(None, xT, eps_fn=lambda x, t: torch.full_like(x, 9.0))
    plain = dd.sample(model, xT, cond=cond)
    assert torch.allclose(guided, const) and not torch.allclose(guided, plain)


def test_cfg_with_unet_matches_two_forward_passes_and_needs_a_null_branch():
    torch.manual_seed(0)
    net = UNet(**TINY, num_classes=4).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([3, 400, 999])
    cond = {"y": torch.tensor([0, 1, 3])}
    with torch.no_grad():
        want = 3.0 * net(x, t, cond) - 2.0 * net(x, t, cond, null_mask=torch.ones(3, dtype=bool))
        got = classifier_free_guidance(net, cond, 2.0)(x, t)
        null_tok = classifier_free_guidance(net, cond, 2.0, null_cond={"y": torch.full((3,), 4)})
        assert torch.allclose(got, want, atol=1e-5)
        assert torch.allclose(null_tok(x, t), want, atol=1e-5)

    class Plain(nn.Module):
        def forward(self, x, t, cond=None):
            return x

    with pytest.raises(TypeError, match="null_cond"):
        classifier_free_guidance(Plain(), cond, 1.0)


# ---------------------------------------------------------------------------- null token
def test_null_token_is_distinct_from_class_zero():
    torch.manual_seed(0)
    net = UNet(**TINY, num_classes=10).eval()
    assert net.null_token("y") == 10
    table = net.cond_embed.labels["y"].weight
    assert table.shape[0] == 11 and not torch.allclose(table[0], table[10])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 5])
        e0 = net(x, t, {"y": torch.tensor([0, 0])})
        enull = net(x, t, {"y": torch.tensor([10, 10])})
        assert not torch.allclose(e0, enull)
        # the null token, the null mask and cond=None are the same unconditional branch
        assert torch.allclose(enull, net(x, t, {"y": torch.tensor([0, 3])},
                                         null_mask=torch.ones(2, dtype=bool)))
        assert torch.allclose(enull, net(x, t, None))
        assert torch.allclose(enull, net(x, t, net.null_condition(2)))
        # one-hot rows are accepted as labels
        assert torch.allclose(e0, net(x, t, {"y": torch.eye(10)[[0, 0]]}))
    with pytest.raises(ValueError, match="null token"):
        net(x, t, {"y": torch.tensor([11, 0])})
    with pytest.raises(KeyError, match="missing"):
        net(x, t, {})
    with pytest.raises(KeyError, match="unknown"):
        net(x, t, {"y": torch.tensor([1, 1]), "z": torch.tensor([1, 1])})


def test_condition_dropout_puts_null_tokens_only_in_dropped_rows():
    g = torch.Generator().manual_seed(0)
    b = 256
    y = torch.randint(0, 10, (b,), generator=g)
    img = torch.randn(b, 1, 4, 4, generator=g)
    onehot = torch.eye(6)[torch.randint(0, 6, (b,), generator=g)]
    cond, drop = drop_conditions({"y": y, "c": onehot, "img": img}, 0.3, {"y": 10, "c": 6}, b,
                                 generator=g)
    assert 0.2 < drop.float().mean().item() < 0.4
    assert bool((cond["y"][drop] == 10).all()) and bool((cond["y"][~drop] == y[~drop]).all())
    assert bool((cond["c"][drop] == 6).all())
    assert bool((cond["c"][~drop] == onehot.argmax(1)[~drop]).all())
    assert cond["img"] is img  # no rescaling, no change: the model nulls it via the mask
    _, none = drop_conditions({"y": y}, 0.0, {"y": 10}, b)
    _, every = drop_conditions({"y": y}, 1.0, {"y": 10}, b)
    assert not none.any() and every.all()
    with pytest.raises(ValueError, match="null token"):
        drop_conditions({"y": y}, 0.5, {"y": 0}, b)  # class 0 can never be the null token


# ---------------------------------------------------------------------------- trainer
def _trainer_setup(init_seed=0, *, n=32, batch=8, image_cond=False, **cfg):
    """Fixed random 28x28 data (labels, optional image condition); ``init_seed`` only changes
    the network's initialisation."""
    g = torch.Generator().manual_seed(0)
    data = {"x": torch.rand(n, 1, 28, 28, generator=g) * 2 - 1,
            "y": torch.randint(0, 10, (n,), generator=g)}
    keys, extra = ["y"], {}
    if image_cond:
        data["w"] = torch.rand(n, 1, 28, 28, generator=g)
        keys.append("w")
        extra["images"] = {"w": 1}
    seed_everything(init_seed)
    model = UNet(**TINY, num_classes=10, **extra)
    seed_everything(0)
    loader = TensorDictLoader(data, batch, seed=0)
    ema = EMA(model, decay=0.9)
    opts = {"lr": 2e-3, "cond_dropout": 0.2, "progress": False, **cfg}
    tr = DiffusionTrainer(model, SCHED, loader, image_key="x", condition_keys=keys,
                          null_tokens={"y": 10}, ema=ema, **opts)
    return tr, model, ema


def test_diffusion_trainer_loss_decreases():
    tr, model, ema = _trainer_setup()
    out = tr.train(20)
    losses = out["losses"]
    assert out["step"] == 20 and len(losses) == 20 and out["stopped_by"] == "max_steps"
    assert sum(losses[:4]) / 4 > 1.5 * sum(losses[-4:]) / 4
    assert ema.num_updates == 20
    assert 0.0 <= out["metrics"]["train/dropped"] <= 1.0


def test_diffusion_trainer_resume_gives_identical_parameters(tmp_path):
    ref, ref_model, ref_ema = _trainer_setup(image_cond=True)
    ref.train(6)
    a, _, _ = _trainer_setup(image_cond=True, checkpoint_path=tmp_path / "ck.pt")
    a.train(3)
    b, b_model, b_ema = _trainer_setup(init_seed=123, image_cond=True,
                                       checkpoint_path=tmp_path / "ck.pt")
    assert b.load_checkpoint() == 3
    b.train(6)
    for p, q in zip(ref_model.parameters(), b_model.parameters()):
        assert torch.equal(p, q)
    for k in ref_ema.shadow:
        assert torch.equal(ref_ema.shadow[k], b_ema.shadow[k])
    assert b_ema.num_updates == 6
    # a checkpoint of another configuration is refused before anything changes
    c = DiffusionTrainer(UNet(**TINY, num_classes=10), SCHED, [{"x": torch.zeros(2, 1, 28, 28),
                         "y": torch.zeros(2, dtype=torch.long)}], condition_keys=["y"],
                         null_tokens={"y": 10}, progress=False)
    with pytest.raises(CheckpointError, match="condition_keys"):
        c.load_checkpoint(tmp_path / "ck.pt")


def test_diffusion_trainer_options_and_errors():
    seed_everything(0)
    x = torch.randn(8, 1, 8, 8)
    model = UNet(**TINY)
    calls = []

    def qs(x0, t, noise):
        calls.append(int(t.max()))
        return x0 + noise

    tr = DiffusionTrainer(model, None, [{"img": x}], image_key="img", q_sample=qs,
                          num_timesteps=50, progress=False, grad_clip=1.0)
    m = tr.train_step()
    assert calls and max(calls) < 50 and "train/grad_norm" in m
    with pytest.raises(ValueError, match="q_sample"):
        DiffusionTrainer(model, None, [{"x": x}])
    with pytest.raises(ValueError, match="1-abar"):
        DiffusionTrainer(model, None, [{"x": x}], q_sample=qs, num_timesteps=5,
                         loss_weighting="1-abar")
    with pytest.raises(ValueError, match="null"):
        DiffusionTrainer(model, SCHED, [{"x": x}], condition_keys=["v"], null_mask_kwarg=None)
    with pytest.raises(TypeError, match="unknown options"):
        DiffusionTrainer(model, SCHED, [{"x": x}], learning_rate=1.0)
    tr = DiffusionTrainer(model, SCHED.alphas_cumprod, [{"x": x}], loss_weighting="1-abar",
                          progress=False)
    assert math.isfinite(tr.train_step()["train/loss"])

    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x, t):
            return x * self.w * float("nan")

    with pytest.raises(NonFiniteLossError):
        DiffusionTrainer(Bad(), SCHED, [{"x": x}], progress=False).train_step()


# ---------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("kind", ["none", "labels", "image-embed", "image-concat", "vector",
                                  "all"])
def test_unet_shapes(size, kind):
    torch.manual_seed(0)
    b, kw, cond = 2, {}, None
    labels = {"digit": 10, "color": 6}
    if kind in ("labels", "all"):
        kw["labels"] = labels
    if kind in ("image-embed", "image-concat", "all"):
        kw["images"] = {"w1": 3}
        kw["image_mode"] = "concat" if kind == "image-concat" else "embed"
    if kind in ("vector", "all"):
        kw["vectors"] = {"v": 5}
    net = UNet(3, **TINY, attention=True, image_size=size, **kw)
    if kind != "none":
        cond = {"digit": torch.tensor([0, 10]), "color": torch.tensor([5, 0]),
                "w1": torch.randn(b, 3, 28, 28), "v": torch.randn(b, 5)}
        cond = {k: v for k, v in cond.items() if k in net.condition_names}
    x = torch.randn(b, 3, size, size)
    out = net(x, torch.tensor([0, 999]), cond)
    assert out.shape == x.shape
    out = net(x, 17, cond, null_mask=torch.tensor([True, False]))
    assert out.shape == x.shape
    if kind in ("image-embed", "image-concat", "vector"):  # None = null for that condition
        assert net(x, 3, {k: None for k in net.condition_names}).shape == x.shape


def test_unet_paper_preset_and_registry():
    net = build("unet", preset="paper", num_classes=10)
    assert isinstance(net, UNet) and net.base_channels == 64
    assert net(torch.randn(1, 1, 28, 28), torch.tensor([1]), {"y": torch.tensor([3])}).shape == (
        1, 1, 28, 28)
    three = UNet(**{**TINY, "channel_mult": (1, 2, 2)})
    assert three(torch.randn(1, 1, 28, 28), 5).shape == (1, 1, 28, 28)
    with pytest.raises(ValueError, match="unknown UNet preset"):
        build("unet", preset="huge")
    with pytest.raises(ValueError, match="built for"):
        UNet(**TINY, image_size=28)(torch.randn(1, 1, 32, 32), 0)
    e = timestep_embedding(torch.tensor([0, 10]), 9)
    assert e.shape == (2, 9) and torch.allclose(e[0, :4], torch.ones(4))


@pytest.mark.parametrize("size", [28, 32])
def test_time_classifier_shapes(size):
    net = build("time_classifier", num_classes=7, preset="paper")
    assert isinstance(net, TimeConditionedClassifier)
    assert net(torch.randn(2, 1, size, size), torch.tensor([0, 999])).shape == (2, 7)
    small = TimeConditionedClassifier.from_preset("tiny", 3, in_channels=3)
    assert small(torch.randn(2, 3, size, size), 5).shape == (2, 3)


# ---------------------------------------------------------------------------- EMA
def test_ema_update_copy_and_state(tmp_path):
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(0.0)
        lin.bias.fill_(0.0)
    ema = EMA(lin, decay=0.9, warmup=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin)
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.1))
    with ema.average_parameters(lin):
        assert torch.allclose(lin.weight, torch.full((1, 2), 0.1))
    assert torch.allclose(lin.weight, torch.ones(1, 2))
    avg = ema.averaged_model(lin)
    assert torch.allclose(avg.weight, torch.full((1, 2), 0.1)) and not avg.weight.requires_grad
    warm = EMA(lin, decay=0.9999)
    assert warm.current_decay() == pytest.approx(0.1)
    path = tmp_path / "ema.pt"
    torch.save(ema.state_dict(), path)
    other = EMA(nn.Linear(2, 1), decay=0.5)
    other.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"]) and other.decay == 0.9
    with pytest.raises(ValueError, match="shape"):
        EMA(nn.Linear(3, 1)).load_state_dict(ema.state_dict())
