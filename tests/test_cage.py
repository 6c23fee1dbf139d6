"""CAGE: latent probes, GATE against an analytic value, the permutation null, the MoG direction,
and the model adapters (VAE, MAF, decoder/GAN inversion, the image of a DCM)."""

import numpy as np
import pytest
import torch

from whatifgan.cage import (
    CAGE,
    CAGEConfig,
    DCMImageModel,
    DecoderModel,
    FlowModel,
    GANModel,
    InversionConfig,
    LinearClassifier,
    LinearLatentModel,
    MAF,
    VAE,
    VAEModel,
    counterfactual_latents,
    decide,
    delta_tau,
    fit_flow,
    fit_vae,
    gate,
    p_value,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------
# a hand-built linear latent model: z ~ N(0, I_4), x = A z, cause m_c ~ Bern(sigma(k_c z1)),
# effect m_e ~ Bern(sigma(k_e (beta z1 + z2))): the effect's latent score is a known linear function
# of the cause's latent coordinate plus its own noise coordinate
# ---------------------------------------------------------------------------------------------
K_C, K_E, BETA = 3.0, 3.0, 1.0


def _linear_setup(n=20000, seed=0, beta=BETA, dim=4):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(dim + 2, dim))
    model = LinearLatentModel(A, b=rng.normal(size=dim + 2))
    z = rng.normal(size=(n, dim))
    x = model.decode(torch.as_tensor(z)).numpy()
    m_c = (rng.random(n) < _sigmoid(K_C * z[:, 0])).astype(int)
    m_e = (rng.random(n) < _sigmoid(K_E * (beta * z[:, 0] + z[:, 1]))).astype(int)
    return model, x, m_c, m_e


def _analytic_gate(h, treat_logit, out_logit, alpha):
    """E_z[GITE] for z ~ N(0, I_2) by a fine 2-D grid integral: factual t = 1[treat_logit(z) > 0],
    t = 0 moves z + alpha h (do 1), t = 1 moves z - alpha h (do 0); outcome sigma(out_logit)."""
    g = np.linspace(-8, 8, 1601)
    w = np.exp(-0.5 * g ** 2)
    w /= w.sum()
    z1, z2 = np.meshgrid(g, g, indexing="ij")
    t = treat_logit(z1, z2) > 0
    s = np.where(t, -1.0, 1.0)
    moved = _sigmoid(out_logit(z1 + s * alpha * h[0], z2 + s * alpha * h[1]))
    base = _sigmoid(out_logit(z1, z2))
    gite = s * (moved - base)
    return float((gite * w[:, None] * w[None, :]).sum())


def test_gate_matches_analytic_value_on_linear_latent_model():
    model, x, m_c, m_e = _linear_setup()
    cage = CAGE(model, CAGEConfig(k=40000, alphas=(0.5, 1.0, 2.0), alpha=1.0, n_permutations=4, seed=1))
    cage.fit(x, {"c": m_c, "e": m_e})
    # Step 1 recovers the true hyperplanes (normals e1 and (beta, 1)/sqrt(1 + beta^2))
    hc, he = cage.classifiers["c"].normal, cage.classifiers["e"].normal
    assert hc @ np.array([1, 0, 0, 0]) > 0.995
    assert he @ (np.array([BETA, 1, 0, 0]) / np.hypot(BETA, 1)) > 0.995
    h_e2 = np.array([BETA, 1.0]) / np.hypot(BETA, 1)
    for j, a in enumerate(cage.config.alphas):
        want_ce = _analytic_gate(np.array([1.0, 0.0]), lambda a1, a2: a1,
                                 lambda a1, a2: K_E * (BETA * a1 + a2), a)
        want_ec = _analytic_gate(h_e2, lambda a1, a2: BETA * a1 + a2, lambda a1, a2: K_C * a1, a)
        got_ce, got_ec = cage.gate("c", "e")[j], cage.gate("e", "c")[j]
        assert abs(got_ce - want_ce) < 0.012, (a, got_ce, want_ce)
        assert abs(got_ec - want_ec) < 0.012, (a, got_ec, want_ec)
    res = cage.probe("c", "e")
    assert res.delta_tau.shape == (3,)
    np.testing.assert_allclose(res.delta_tau, np.abs(res.gate_12) - np.abs(res.gate_21))


def test_shuffled_labels_give_non_significant_p_value():
    # 8-d latent, effect mostly along the cause's direction (cos(h_c, h_e) = 0.95)
    model, x, m_c, m_e = _linear_setup(n=3000, seed=2, beta=3.0, dim=8)
    shuffled = np.random.default_rng(5).permutation(m_c)
    cage = CAGE(model, CAGEConfig(k=2000, alphas=(1.0,), alpha=1.0, n_permutations=40, seed=0))
    res = cage.fit(x, {"c": shuffled, "e": m_e}).probe("c", "e")
    assert res.p_value("12") > 0.05 and res.p_value("21") > 0.05
    assert res.direction() == "independent"
    # with the real labels and the same settings the GATE is far out in the null's tail
    cage.fit(x, {"c": m_c, "e": m_e})
    obs = cage.gate("c", "e")[0]
    assert p_value(obs, cage.null("c", "e")[:, 0]) < 0.05


def test_calibrated_classifier_is_linear_logistic_and_counterfactual_moves():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 3))
    y = (rng.random(3000) < _sigmoid(2 * z[:, 0] - z[:, 2] + 0.3)).astype(int)
    clf = LinearClassifier.fit(z, y, seed=0)
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    ref = CalibratedClassifierCV(LogisticRegression(max_iter=1000), method="sigmoid", cv=folds,
                                 ensemble=False).fit(z, y)
    np.testing.assert_allclose(clf.prob(z), ref.predict_proba(z)[:, 1], atol=1e-10)
    assert abs(np.linalg.norm(clf.normal) - 1) < 1e-12 and 0.6 < clf.cv_accuracy < 1.0
    t, z0, z1 = counterfactual_latents(z, clf, 0.7)
    h = clf.normal
    np.testing.assert_allclose(z1[t == 0], z[t == 0] + 0.7 * h)
    np.testing.assert_allclose(z0[t == 1], z[t == 1] - 0.7 * h)
    np.testing.assert_allclose(z0[t == 0], z[t == 0])
    np.testing.assert_allclose(z1[t == 1], z[t == 1])
    # GATE of a treatment on itself is positive; on an orthogonal outcome it is zero
    assert gate(z, clf, clf.prob, 1.0) > 0.1
    ortho = LinearClassifier(np.array([0.0, 1.0, 0.0]), 0.0)
    assert abs(gate(z, clf, ortho.prob, 1.0)) < 0.03 or abs(h[1]) > 0.1
    assert p_value(0.5, [0.1, -0.2, 0.6]) == pytest.approx(2 / 4)
    assert delta_tau(0.3, -0.1) == pytest.approx(0.2)
    assert decide(0.1, 0.001, 0.5) == "m1 -> m2" and decide(-0.1, 0.001, 0.5) == "m2 -> m1"
    assert decide(0.1, 0.2, 0.3) == "independent"
    with pytest.raises(ValueError, match="binary"):
        LinearClassifier.fit(z, np.full(3000, 2))


def test_mixture_of_gaussians_direction_small():
    """Section 4.1, small and seeded: a small MAF, the inferred direction is cause -> effect."""
    from whatifgan.cage.experiments import run_mog

    cfg = {"data": {"n_train": 2000, "n_annotated": 1500, "seed": 0},
           "flow": {"transforms": 2, "hidden_features": [32, 32], "steps": 200, "batch_size": 256, "lr": 3e-3},
           "cage": {"k": 1500, "n_permutations": 40, "alphas": [0.5, 1.0, 2.0], "alpha": 1.0}}
    rep = run_mog(cfg, None, plots=False)
    s = rep["summary"]
    assert s["direction"] == "mixture -> mean_below", s
    assert rep["direction_correct"] == 1
    assert s["delta_tau"] > 0 and min(s["p_12"], s["p_21"]) < 0.025


# ---------------------------------------------------------------------------------------------
# adapters
# ---------------------------------------------------------------------------------------------
def test_flow_adapter_roundtrip_and_projection(tmp_path):
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(512, 2)).astype(np.float32) * [1.0, 3.0] + [2.0, -1.0]
    flow = MAF(2, transforms=2, hidden_features=(16,))
    fit_flow(flow, x, steps=20, batch_size=128)
    m = FlowModel(flow)
    z = m.encode(x)
    assert z.shape == (512, 2)
    np.testing.assert_allclose(m.decode(z).detach().numpy(), x, atol=1e-3)
    flow.save(tmp_path / "maf.pt")
    again = FlowModel(MAF.load(tmp_path / "maf.pt"))
    np.testing.assert_allclose(again.encode(x).numpy(), z.numpy(), atol=1e-5)
    # a flow on the principal subspace of images
    imgs = (np.random.default_rng(1).random((200, 1, 8, 8)) * 255).astype(np.uint8)
    pflow = MAF(5, transforms=2, hidden_features=(16,), data_shape=(1, 8, 8))
    fit_flow(pflow, imgs, steps=5, batch_size=64)
    pm = FlowModel(pflow)
    zi = pm.encode(imgs)
    assert zi.shape == (200, 5) and pm.decode(zi).shape == (200, 1, 8, 8)
    # decode(encode(x)) is the projection of x onto the subspace: idempotent
    xr = pm.decode(zi).detach()
    np.testing.assert_allclose(pm.decode(pm.encode(xr)).detach().numpy(), xr.numpy(), atol=1e-3)
    assert pm.sample_prior(7).shape == (7, 5)


def test_vae_adapter(tmp_path):
    imgs = (np.random.default_rng(0).random((256, 1, 28, 28)) > 0.7).astype(np.uint8) * 255
    for arch in ("mlp", "conv"):
        torch.manual_seed(0)
        vae = VAE((1, 28, 28), latent_dim=4, hidden=32, channels=(8, 16, 16), arch=arch)
        hist = fit_vae(vae, imgs, steps=4, batch_size=64)
        assert np.isfinite(hist[-1][1])
        m = VAEModel(vae)
        z = m.encode(imgs[:10])
        assert z.shape == (10, 4)
        x = m.decode(m.sample_prior(3)).detach()
        assert x.shape == (3, 1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    vae.save(tmp_path / "vae.pt")
    np.testing.assert_allclose(VAEModel(VAE.load(tmp_path / "vae.pt")).encode(imgs[:10]).numpy(), z.numpy(),
                               atol=1e-6)
    vec = VAE(5, latent_dim=2, hidden=16)
    fit_vae(vec, np.random.default_rng(0).normal(size=(100, 5)), steps=3, batch_size=50)
    assert VAEModel(vec).decode(torch.zeros(2, 2)).shape == (2, 5)


def test_gan_inversion_recovers_latents():
    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 12))
    m = GANModel(gen, 3, inversion=InversionConfig(steps=300, lr=0.05, restarts=2, prior_weight=1e-4))
    z_true = m.sample_prior(64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = m.decode(z_true)
    z = m.encode(x)
    assert z.shape == (64, 3)
    with torch.no_grad():
        rec = ((m.decode(z) - x) ** 2).mean(1)
    assert float(rec.median()) < 1e-3
    assert all(p.requires_grad for p in gen.parameters())  # restored after inversion
    # a plain callable decoder works too
    lin = DecoderModel(lambda z: z @ torch.eye(3) * 2.0, 3, inversion={"steps": 200, "lr": 0.1})
    zz = lin.encode(torch.ones(4, 3) * 2.0)
    np.testing.assert_allclose(zz.numpy(), np.ones((4, 3)), atol=0.05)


def test_dcm_image_adapter_on_stand_in_decoder():
    """The adapter on a small DCM whose image mechanism is a stand-in decoder (no trained image
    DCM is needed): latent layout, decoding equals the DCM's forward pass with that noise, prior,
    inversion."""
    from whatifgan.dcm import DCM
    from whatifgan.variables import Categorical, Image, VariableSet

    torch.manual_seed(0)
    vs = VariableSet([Categorical("T", 2), Categorical("I", 2), Image("Img", (1, 28, 28), value_range=(0, 1))])
    proto = torch.rand(2, 1, 28, 28)

    def render(parents, noise):  # stand-in image decoder: intensity-scaled thickness template + noise
        t, i = parents["T"], parents["I"]
        base = t[:, :1, None, None] * proto[0] + t[:, 1:, None, None] * proto[1]
        return torch.sigmoid(4 * base * (0.5 + i[:, 1:, None, None]) + 0.1 * noise[:, :1, None, None] - 2)

    dcm = DCM("T -> I; T -> Img; I -> Img", vs, plugins={"Img": render}, noise_dim=4, conf_dim=4,
              generator_kwargs={"hidden": (16,)})
    m = DCMImageModel(dcm, "Img", hard=True, inversion={"steps": 60, "lr": 0.05})
    kinds = [(k, v) for k, v, _, _ in m.blocks]
    assert ("exo", "T") in kinds and ("exo", "Img") in kinds and ("gumbel", "T") in kinds
    assert m.latent_dim == 3 * 4 + 2 + 2
    z = m.sample_prior(16, torch.Generator().manual_seed(0))
    x = m.decode_batched(z)
    assert x.shape == (16, 1, 28, 28)
    with torch.no_grad():
        ref = dcm(16, noise=m.split(z), only=["Img"], hard=True)["Img"]
    torch.testing.assert_close(x, ref)
    vals = m.decode_all(z)
    assert set(vals) == {"T", "I", "Img"} and vals["T"].shape == (16,)
    assert torch.isfinite(m.prior_nll(z)).all()
    zi = m.encode(x)
    assert zi.shape == z.shape and torch.isfinite(zi).all()
    assert m.last_inversion_loss is not None and torch.isfinite(m.last_inversion_loss).all()


def test_cli_registers_probe_subcommand():
    import argparse

    from whatifgan import cage_cli

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    cage_cli.register(sub)
    args = p.parse_args(["probe", "cage_mog", "--permutations", "10", "-k", "100", "--no-plots"])
    assert args.func is cage_cli.run and args.permutations == 10 and args.k == 100


@pytest.mark.slow
def test_cli_probe_mog_end_to_end(tmp_path, capsys):
    import yaml

    from whatifgan import cage_cli

    cfg = {"name": "mog_small", "experiment": "mog", "attributes": {"cause": "mixture", "effect": "mean_below"},
           "data": {"n_train": 2000, "n_annotated": 1500, "seed": 0},
           "flow": {"transforms": 2, "hidden_features": [32, 32], "steps": 200, "lr": 3e-3},
           "cage": {"k": 1500, "alphas": [0.5, 1.0, 2.0], "alpha": 1.0}}
    path = tmp_path / "mog_small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert cage_cli.main([str(path), "--out", str(out), "--permutations", "40"]) == 0
    text = capsys.readouterr().out
    assert "| mixture -> mean_below | mixture -> mean_below |" in text
    assert (out / "cage_mog.png").is_file() and (out / "report.json").is_file()
