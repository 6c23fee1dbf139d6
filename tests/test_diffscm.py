"""Diff-SCM: DDIM abduction/reconstruction, guidance, graph validity, checkpoints, CLI, and the
CLD / IM1 / IM2 metrics on hand-made cases with known ordering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hgraph import GraphError

from whatifgan.diffscm import (
    Abduction,
    DiffSCMModel,
    DiffSCMPipeline,
    DiffSCMScheduler,
    InvalidInterventionError,
    NoisedInputClassifier,
    dynamic_normalise,
    from_model_range,
    to_model_range,
    train_anticausal_heads,
    train_diffusion,
)
from whatifgan.metrics.counterfactual import (
    CLD,
    CounterfactualMetrics,
    IMAutoencoders,
    cld_from_measures,
    gaussian_kl,
    im1_from_reconstructions,
    im2_from_reconstructions,
    relative_measures,
)

SIZE = 12
TINY = {"image_size": SIZE, "parents": {"class": 10},
        "unet": {"preset": "tiny", "base_channels": 8},
        "classifier": {"preset": "tiny", "base_channels": 8}}


def _digits(n: int = 512):
    from whatifgan.data.mnist import load_mnist

    xs, ys = load_mnist("embedded", "train")
    x = F.interpolate(to_model_range(xs[:n]), size=SIZE, mode="bilinear", antialias=True)
    return x.clamp(-1, 1), torch.as_tensor(ys[:n]).long()


@pytest.fixture(scope="module")
def trained():
    """A tiny eps_theta and anti-causal head briefly trained on 12x12 MNIST digits."""
    torch.manual_seed(0)
    x, y = _digits()
    model = DiffSCMModel.from_config(TINY)
    train_diffusion(model, x, steps=60, batch_size=32, lr=2e-3, ema_decay=0.9, progress=False)
    train_anticausal_heads(model, x, {"class": y}, steps=80, batch_size=32, lr=3e-3,
                           progress=False)
    return model.eval(), x, y


# ============================================================================= abduction
def test_inversion_then_unguided_ddim_reconstructs(trained):
    model, x, _ = trained
    xf = x[:8]
    sch = DiffSCMScheduler(model.schedule, 20)
    refined = DiffSCMPipeline(model, sch, abduction_fraction=0.75, inversion_fixed_point_iters=2)
    rec = refined.reconstruct(xf)
    rmse = float((rec - xf).pow(2).mean().sqrt())
    assert rmse < 0.05, rmse
    assert float((rec - xf).abs().max()) < 0.4
    plain = DiffSCMPipeline(model, sch, abduction_fraction=0.75).reconstruct(xf)
    assert float((plain - xf).pow(2).mean().sqrt()) < 0.2
    # the abducted latent is noisy: far from the image, close to unit variance per pixel
    ab = refined.abduct(xf)
    assert ab.index == 15 and ab.fraction == 0.75
    assert float((ab.u - xf).pow(2).mean()) > 0.3


def test_scale_zero_gives_the_reconstruction_and_guidance_moves_towards_target(trained):
    model, x, y = trained
    pipe = DiffSCMPipeline(model, DiffSCMScheduler(model.schedule, 20))
    xf = x[:10]
    target = (y[:10] + 3) % 10
    rec = pipe.reconstruct(xf)
    cf0 = pipe.counterfactual(xf, {"class": target}, scale=0.0)
    assert torch.allclose(cf0, rec, atol=1e-6)
    cf = pipe.counterfactual(xf, {"class": target}, scale=8.0)
    assert float((cf - rec).abs().mean()) > 1e-3
    p0 = model.predict_parent("class", rec).gather(1, target[:, None]).mean()
    p1 = model.predict_parent("class", cf).gather(1, target[:, None]).mean()
    assert p1 > p0
    # abduct once, generate twice from the same latent: deterministic
    ab = pipe.abduct(xf)
    a = pipe.generate(ab, {"class": target}, scale=2.0)
    b = pipe.generate(Abduction(ab.u.clone(), ab.index, ab.fraction), {"class": target},
                      scale=2.0)
    assert torch.equal(a, b)


def test_interventional_sampling_from_noise(trained):
    model, x, _ = trained
    pipe = DiffSCMPipeline(model, DiffSCMScheduler(model.schedule, 8))
    g = torch.Generator().manual_seed(0)
    s = pipe.interventional({"class": 3}, 4, scale=1.0, generator=g)
    assert s.shape == (4, 1, SIZE, SIZE) and torch.isfinite(s).all()
    # clamping the network's x_0 prediction keeps samples from pure noise in range, and the
    # abduction/generation pair still reconstructs
    clip = DiffSCMPipeline(model, DiffSCMScheduler(model.schedule, 8, clip_x0=True))
    s = clip.interventional({"class": 3}, 4, scale=1.0, generator=g)
    assert float(s.abs().max()) <= 1.0 + 1e-6
    rec = DiffSCMPipeline(model, DiffSCMScheduler(model.schedule, 20, clip_x0=True),
                          inversion_fixed_point_iters=2).reconstruct(x[:8])
    assert float((rec - x[:8]).pow(2).mean().sqrt()) < 0.05


def test_dynamic_normalisation():
    x = torch.linspace(-0.9, 0.9, 2 * 3 * 16).reshape(2, 3, 4, 4)
    assert torch.equal(dynamic_normalise(x), x)  # inside [-1, 1]: untouched
    big = torch.randn(4, 1, 10, 10) * 5
    out = dynamic_normalise(big, 0.99)
    assert float(out.abs().max()) <= 1.0 + 1e-6
    q = torch.quantile(big.abs().reshape(4, -1), 0.99, dim=1)
    # values below the quantile are divided by it
    i = torch.nonzero(big[0].abs().reshape(-1) < q[0])[0]
    assert torch.allclose(out[0].reshape(-1)[i], big[0].reshape(-1)[i] / q[0], atol=1e-5)
    # with dynamic normalisation the reconstruction of in-range images is unchanged in spirit
    model = DiffSCMModel.from_config(TINY)
    sch = DiffSCMScheduler(model.schedule, 6, dynamic_normalisation=True)
    assert sch.percentile == 0.99
    xf = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    rec = DiffSCMPipeline(model, sch).reconstruct(xf)  # untrained: eps = 0 exactly
    assert torch.allclose(rec, xf, atol=1e-5)


def test_guidance_is_added_after_dynamic_normalisation():
    model = DiffSCMModel.from_config(TINY)
    sch = DiffSCMScheduler(model.schedule, 10, dynamic_normalisation=0.99)
    torch.manual_seed(0)
    x = torch.randn(2, 1, SIZE, SIZE)
    eps = torch.randn_like(x) * 3  # x_0 predictions far outside [-1, 1]
    g = torch.randn_like(x)
    i = 6
    a = sch.alphas_cumprod(i, x)
    expect = sch.sampler.step(sch.normalise_eps(eps, i, x) - (1 - a).sqrt() * g, i, x, eta=0.0)
    assert torch.allclose(sch.step(eps, i, x, guidance=g), expect, atol=1e-6)
    # the guidance is not clamped away: it changes the step
    assert not torch.allclose(sch.step(eps, i, x, guidance=g), sch.step(eps, i, x), atol=1e-3)


def test_abduction_fraction_and_scheduler_validation():
    model = DiffSCMModel.from_config(TINY)
    sch = DiffSCMScheduler(model.schedule, 100)
    assert sch.abduction_steps(0.75) == 75 and sch.abduction_steps(1.0) == 100
    assert sch.abduction_steps(0.0) == 0
    with pytest.raises(ValueError):
        sch.abduction_steps(1.5)
    with pytest.raises(ValueError):
        DiffSCMScheduler(model.schedule, 10, dynamic_normalisation=1.5)
    xf = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    ab = DiffSCMPipeline(model, sch).abduct(xf, fraction=0.0)
    assert ab.index == 0 and torch.equal(ab.u, xf)


# ============================================================================= guidance
class _LinearHead(nn.Module):
    def __init__(self, k: int, d: int):
        super().__init__()
        self.num_classes = k
        self.lin = nn.Linear(d, k)

    def forward(self, x, t):
        return self.lin(x.flatten(1))


def test_guidance_gradient_is_the_anticausal_log_prob_gradient():
    torch.manual_seed(1)
    d = SIZE * SIZE
    heads = {"class": _LinearHead(4, d), "thick": _LinearHead(2, d)}
    unet = DiffSCMModel.from_config(TINY).unet
    model = DiffSCMModel(unet, heads)
    x = torch.randn(3, 1, SIZE, SIZE)
    t = torch.full((3,), 10)
    y = torch.tensor([0, 3, 2])
    g = model.log_prob_grad(x, t, {"class": y}, scale=2.0)
    W = heads["class"].lin.weight.detach()
    p = torch.softmax(heads["class"](x, t), 1).detach()
    expect = 2.0 * (W[y] - p @ W).reshape_as(x)
    assert torch.allclose(g, expect, atol=1e-5)
    # several intervened parents: the gradients of their heads add up (per-parent scales)
    g2 = model.log_prob_grad(x, t, {"class": y, "thick": 1}, scale={"class": 2.0, "thick": 0.5})
    W2 = heads["thick"].lin.weight.detach()
    p2 = torch.softmax(heads["thick"](x, t), 1).detach()
    expect2 = expect + 0.5 * (W2[1] - p2 @ W2).reshape_as(x)
    assert torch.allclose(g2, expect2, atol=1e-5)
    assert torch.equal(model.log_prob_grad(x, t, {"class": y}, scale=0.0), torch.zeros_like(x))


# ============================================================================= graphs
def test_refuses_interventions_confounded_with_the_image():
    cfg = dict(TINY, graph="class -> image; class <-> image")
    model = DiffSCMModel.from_config(cfg)
    with pytest.raises(InvalidInterventionError, match="confounder"):
        model.check_intervention(["class"])
    pipe = DiffSCMPipeline(model, DiffSCMScheduler(model.schedule, 4))
    with pytest.raises(InvalidInterventionError):
        pipe.counterfactual(torch.zeros(1, 1, SIZE, SIZE), {"class": 1})
    # back-door through an observed variable without a head
    m2 = DiffSCMModel.from_config(dict(TINY, graph="C -> class; C -> image; class -> image"))
    with pytest.raises(InvalidInterventionError, match="back-door"):
        m2.check_intervention({"class": 1})
    # an unknown parent
    with pytest.raises(InvalidInterventionError, match="no anti-causal head"):
        DiffSCMModel.from_config(TINY).check_intervention({"colour": 1})


def test_several_parents_heads_and_joint_interventions():
    cfg = dict(TINY, parents={"class": 10, "thick": 2},
               graph="class -> image; thick -> image; class <-> thick")
    model = DiffSCMModel.from_config(cfg)
    assert model.parents == {"class": 10, "thick": 2}
    assert set(model.heads) == {"class", "thick"}
    # do(class) alone leaves the back-door class <-> thick -> image open; jointly it is valid
    with pytest.raises(InvalidInterventionError, match=r"do\(class, thick\)"):
        model.check_intervention(["class"])
    model.check_intervention(["class", "thick"])
    # unconfounded parents: each alone is fine
    ok = DiffSCMModel.from_config(dict(cfg, graph="class -> image; thick -> image"))
    ok.check_intervention(["class"])
    ok.check_intervention(["thick"])
    pipe = DiffSCMPipeline(ok, DiffSCMScheduler(ok.schedule, 4))
    out = pipe.counterfactual(torch.zeros(2, 1, SIZE, SIZE), {"thick": 1}, scale=1.0)
    assert out.shape == (2, 1, SIZE, SIZE)
    # a head must be an ancestor of the image
    with pytest.raises(GraphError, match="ancestors"):
        DiffSCMModel.from_config(dict(cfg, graph="image -> class; thick -> image"))


# ============================================================================= model I/O
def test_checkpoint_roundtrip_and_class_conditional(tmp_path):
    torch.manual_seed(0)
    model = DiffSCMModel.from_config(dict(TINY, class_conditional=True))
    assert model.label_conditions == {"class": 10}
    with torch.no_grad():  # zero-initialised layers would hide the label embedding
        for p in model.unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = model.save(tmp_path / "m.pt")
    loaded = DiffSCMModel.load(path)
    x = torch.randn(2, 1, SIZE, SIZE)
    t = torch.tensor([5, 600])
    lab = {"class": torch.tensor([1, 2])}
    assert torch.allclose(model.eps(x, t, lab), loaded.eps(x, t, lab))
    assert torch.allclose(model.eps(x, t, lab, guidance_weight=1.5),
                          loaded.eps(x, t, lab, guidance_weight=1.5))
    # null labels differ from a real label
    assert not torch.allclose(model.eps(x, t, None), model.eps(x, t, lab))
    pipe = DiffSCMPipeline(loaded, DiffSCMScheduler(loaded.schedule, 4))
    cf = pipe.counterfactual(x.clamp(-1, 1), {"class": 3}, factual=lab, scale=0.5,
                             guidance_weight=1.0)
    assert cf.shape == x.shape and torch.isfinite(cf).all()


def test_noised_input_classifier_and_image_ranges():
    model = DiffSCMModel.from_config(TINY)
    seen = []

    class Spy(nn.Module):
        def forward(self, x, t):
            seen.append(t.clone())
            return torch.zeros(x.shape[0], 10)

    w = NoisedInputClassifier(Spy(), model.schedule)
    w.train()
    w(torch.zeros(64, 1, SIZE, SIZE))
    assert seen[-1].float().std() > 100  # uniform t over 0..999
    w.eval()
    w(torch.zeros(3, 1, SIZE, SIZE))
    assert torch.equal(seen[-1], torch.zeros(3, dtype=seen[-1].dtype))
    u8 = torch.tensor([[[0, 255], [128, 64]]], dtype=torch.uint8)
    x = to_model_range(u8)
    assert x.shape == (1, 1, 2, 2) and float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(from_model_range(x)[0, 0, 0], torch.tensor([0, 255], dtype=torch.uint8))


# ============================================================================= CLI
def test_cli_train_and_counterfactual(tmp_path):
    import yaml
    from PIL import Image

    from whatifgan.data.mnist import load_mnist
    from whatifgan.diffscm_cli import main

    cfg = {"name": "tiny", "seed": 0,
           "model": {"parents": {"class": 10}, "graph": "class -> image",
                     "unet": {"preset": "tiny", "base_channels": 8},
                     "classifier": {"preset": "tiny", "base_channels": 8}},
           "train": {"diffusion": {"steps": 3, "batch_size": 8},
                     "classifier": {"steps": 3, "batch_size": 8, "eval_timesteps": [0]}},
           "sampling": {"num_steps": 6, "abduction_fraction": 0.5, "scale": 1.0}}
    cpath = tmp_path / "tiny.yaml"
    cpath.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["diffscm", "train", str(cpath), "--run-dir", str(run), "--no-progress"]) == 0
    assert (run / "model.pt").exists() and (run / "config.yaml").exists()
    xs, _ = load_mnist("embedded", "test")
    img = tmp_path / "digit.png"
    Image.fromarray(xs[0]).save(img)
    out = tmp_path / "cf.png"
    assert main(["diffscm", "counterfactual", str(run), "--image", str(img), "--do", "class=5",
                 "--out", str(out)]) == 0
    a = np.asarray(Image.open(out))
    assert a.shape == (28, 28) and a.dtype == np.uint8
    # refused interventions and bad values are errors, not tracebacks
    assert main(["diffscm", "counterfactual", str(run), "--image", str(img), "--do",
                 "colour=1"]) == 2
    assert main(["diffscm", "counterfactual", str(run), "--image", str(img), "--do",
                 "class=12"]) == 2


# ============================================================================= metrics
def test_gaussian_kl_matches_torch():
    torch.manual_seed(0)
    mp, mq = torch.randn(5, 3), torch.randn(5, 3)
    lp, lq = torch.randn(5, 3) * 0.3, torch.randn(5, 3) * 0.3
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mp, (0.5 * lp).exp()),
        torch.distributions.Normal(mq, (0.5 * lq).exp())).sum(-1)
    assert torch.allclose(gaussian_kl(mp, lp, mq, lq), ref, atol=1e-5)
    assert torch.allclose(gaussian_kl(mp, lp, mp, lp), torch.zeros(5), atol=1e-6)


def test_relative_measures_and_cld_formula():
    s_cf = torch.tensor([1.0, 2.0, 3.0, 4.0])
    s_f = torch.tensor([0.5, 1.0, 1.5, 2.0])
    p_cf, p_f = relative_measures(torch.tensor([2.0]), s_cf, s_f)
    assert float(p_cf) == 0.5 and float(p_f) == 0.25
    assert math.isclose(float(cld_from_measures(0.5, 0.25)), math.log(math.exp(0.5)
                                                                       + math.exp(0.25)))
    assert math.isclose(float(cld_from_measures(0.0, 1.0)), math.log(1 + math.e))
    # masks select each row's set
    sets = torch.tensor([[1.0, 5.0, 2.0, 9.0]])
    p_cf, p_f = relative_measures(torch.tensor([3.0]), sets, sets,
                                  mask_cf=torch.tensor([[True, True, False, False]]),
                                  mask_f=torch.tensor([[False, False, True, True]]))
    assert float(p_cf) == 0.5 and float(p_f) == 0.5


class _CoordEncoder(nn.Module):
    """Hand-made 'VAE': the latent mean is the first two pixels, unit variance."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        mu = x.flatten(1)[:, :2]
        return mu, torch.zeros_like(mu)


def _points(centres, labels):
    x = torch.zeros(len(centres), 1, 2, 2)
    x.view(len(centres), -1)[:, :2] = torch.tensor(centres, dtype=torch.float32)
    return x, torch.tensor(labels)


def test_cld_prefers_a_moderate_change_over_an_identical_counterfactual():
    g = torch.Generator().manual_seed(0)
    c0 = torch.randn(200, 2, generator=g) * 0.5            # factual class 0 around (0, 0)
    c1 = torch.randn(200, 2, generator=g) * 0.5 + torch.tensor([3.0, 0.0])  # class 1 at (3, 0)
    ref, lab = _points(torch.cat([c0, c1]).tolist(), [0] * 200 + [1] * 200)
    cld = CLD(_CoordEncoder(), ref, lab)
    xf, _ = _points([[0.0, 0.0]] * 4, [0] * 4)
    cands, _ = _points([[0.0, 0.0], [1.6, 0.0], [3.0, 0.0], [6.0, 0.0]], [1] * 4)
    out = cld(cands, xf, torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long))
    # identical: div = 0, P(S_F >= 0) = 1, CLD = log(1 + e)
    assert float(out["div"][0]) == 0.0 and float(out["p_f"][0]) == 1.0
    assert math.isclose(float(out["cld"][0]), math.log(1 + math.e), rel_tol=1e-9)
    # moderate change (just out of the factual class) beats identical and beats overshooting
    assert out["cld"][1] < out["cld"][0]
    assert out["cld"][1] < out["cld"][2] < out["cld"][3]
    assert float(out["p_cf"][3]) == 1.0  # farther than every counterfactual-class image


def test_im1_im2_hand_made_ordering():
    torch.manual_seed(0)
    proto = {0: torch.full((1, 1, 28, 28), -0.8), 1: torch.full((1, 1, 28, 28), 0.8)}
    proto[1][..., 8:20, 8:20] = -0.2

    class Const(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            return self.p.expand_as(x)

    ims = IMAutoencoders(2, (1, 28, 28), value_range=(-1.0, 1.0))
    ims.class_aes = [Const(proto[0]), Const(proto[1])]
    ims.all_ae = nn.Identity()
    # a counterfactual that looks like the target class 1 vs one still looking like class 0
    good = proto[1].clone() + 0.05
    bad = proto[0].clone() + 0.05
    x = torch.cat([good, bad])
    yf, ycf = torch.tensor([0, 0]), torch.tensor([1, 1])
    res = ims(x, yf, ycf)
    assert res["im1"][0] < 0.1 < 1.0 < res["im1"][1]
    expect = im1_from_reconstructions(x, torch.cat([proto[1]] * 2), torch.cat([proto[0]] * 2))
    assert torch.allclose(res["im1"], expect)
    # IM2: target-class AE vs all-class AE (identity here): good CF changes little
    assert res["im2"][0] < res["im2"][1]
    expect2 = im2_from_reconstructions(x, torch.cat([proto[1]] * 2), x)
    assert torch.allclose(res["im2"], expect2)
    assert float(im1_from_reconstructions(good, good, bad)) == 0.0


def test_counterfactual_metrics_fit_save_load(tmp_path):
    x, y = _digits(120)
    x = F.interpolate(x, size=28)  # the conv autoencoders expect 28 px
    y = y % 3
    m = CounterfactualMetrics(3, (1, 28, 28), latent_dim=4, ae_code_dim=4,
                              vae_channels=(8, 8, 8), vae_base_channels=8,
                              ae_channels=(8, 8, 8), ae_base_channels=8)
    m.fit(x, y, vae_steps=3, ae_class_steps=2, ae_all_steps=2, batch_size=16)
    res = m.evaluate(x[:5], x[5:10], y[5:10], (y[5:10] + 1) % 3)
    assert set(res) >= {"cld", "im1", "im2", "div", "p_cf", "p_f"}
    assert all(v.shape == (5,) and np.isfinite(v).all() for v in res.values())
    assert (res["cld"] >= math.log(2) - 1e-9).all() and (res["cld"] <= 1 + math.log(2)).all()
    path = m.save(tmp_path / "metrics.pt")
    m2 = CounterfactualMetrics.load(path, x, y)
    res2 = m2.evaluate(x[:5], x[5:10], y[5:10], (y[5:10] + 1) % 3)
    for k in res:
        assert np.allclose(res[k], res2[k])
