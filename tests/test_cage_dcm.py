"""CAGE on the image of a DCM: a tiny image DCM trained a few steps, the adapter's latent layout and
its causal structure, inversion against a random-latent baseline, the probe end to end, saving and
loading the DCM, and the DCM's interventional effects against the exact twin."""

import numpy as np
import pytest
import torch

from whatifgan.cage import CAGE, CAGEConfig, DCMImageModel
from whatifgan.cage.experiments import build_image_dcm, dcm_effects, load_image_dcm, train_image_dcm

TINY = {"noise_dim": 4, "conf_dim": 4, "generator_kwargs": {"hidden": [16, 16]},
        "image_kwargs": {"base_channels": 8, "embed_dim": 8, "encoder_channels": [8, 8, 8]}}


def _bars(n: int, seed: int = 0):
    """Thickness ~ U{0,1}; Intensity = Thickness w.p. 0.875 (else flipped); the image a vertical bar
    2 px (thin) or 6 px (thick) wide of stroke intensity 100 or 250."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, n)
    i = np.where(rng.random(n) < 0.875, t, 1 - t)
    img = np.zeros((n, 1, 28, 28), np.uint8)
    level = np.where(i == 1, 250, 100).astype(np.uint8)
    for k in range(n):
        w = 6 if t[k] else 2
        img[k, 0, 4:24, 14 - w // 2:14 + (w + 1) // 2] = level[k]
    return t, i, img


@pytest.fixture(scope="module")
def tiny_dcm():
    from whatifgan.data.tabular import Dataset
    from whatifgan.variables import Categorical, Image, VariableSet

    torch.manual_seed(0)
    t, i, img = _bars(256)
    vs = VariableSet([Categorical("Thickness", 2), Categorical("Intensity", 2),
                      Image("Image", (1, 28, 28), value_range=(-1.0, 1.0))])
    graph = "Thickness -> Intensity; Thickness -> Image; Intensity -> Image"
    dcm = build_image_dcm(graph, vs, TINY)
    ds = Dataset("obs", {"Thickness": t, "Intensity": i, "Image": img})
    small = {"steps": 3, "batch_size": 32, "n_critic": 1, "critic_hidden": [16], "device": "cpu", "seed": 0}
    info = train_image_dcm(dcm, ds, small, {**small, "image_critic_channels": [8, 8, 8]})
    return dcm, info


def test_tiny_image_dcm_adapter_layout_and_causal_structure(tiny_dcm):
    dcm, info = tiny_dcm
    assert sorted(v for h in info["hnodes"] for v in h["hnode"]) == ["Image", "Intensity", "Thickness"]
    assert all(h["steps"] == 3 for h in info["hnodes"])
    m = DCMImageModel(dcm, "Image", hard=True)
    # z = exogenous noise of Thickness, Intensity, Image + Gumbel noise of the two categorical heads
    assert m.latent_dim == 3 * 4 + 2 + 2
    z = m.sample_prior(200, torch.Generator().manual_seed(1))
    x = m.decode_batched(z)
    assert x.shape == (200, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    with torch.no_grad():
        ref = dcm(200, noise=m.split(z), only=["Image"], hard=True)["Image"]
    torch.testing.assert_close(x, ref)
    base = m.decode_all(z)
    # the DCM's latent is causally ordered: redrawing the Intensity blocks never moves Thickness ...
    z2 = z.clone()
    fresh = m.sample_prior(200, torch.Generator().manual_seed(2))
    for kind, name, a, b in m.blocks:
        if name == "Intensity":
            z2[:, a:b] = fresh[:, a:b]
    moved = m.decode_all(z2)
    assert torch.equal(moved["Thickness"], base["Thickness"])
    # ... while a Gumbel block far beyond any logit sets Thickness, and Intensity is recomputed from it
    a, b = next((a, b) for kind, name, a, b in m.blocks if kind == "gumbel" and name == "Thickness")
    for code in (0, 1):
        z3 = z.clone()
        z3[:, a:b] = torch.tensor([50.0, -50.0] if code == 0 else [-50.0, 50.0])
        vals = m.decode_all(z3)
        assert (vals["Thickness"] == code).all()
        noise = m.split(z3)
        with torch.no_grad():
            direct = dcm(200, do={"Thickness": code}, noise=noise, only=["Intensity"], hard=True)["Intensity"]
        assert torch.equal(vals["Intensity"], dcm.variables["Intensity"].decode(direct))


THIN = torch.zeros(1, 28, 28)
THIN[:, 4:24, 13:15] = 1
THICK = torch.zeros(1, 28, 28)
THICK[:, 4:24, 11:17] = 1


def _render(parents, noise):
    """A differentiable stand-in image mechanism drawing the bars of :func:`_bars` from the one-hot
    Thickness and Intensity (and a faint noise-dependent background)."""
    t, i = parents["Thickness"], parents["Intensity"]
    mask = t[:, :1, None, None] * THIN + t[:, 1:, None, None] * THICK
    level = (100 / 255) * i[:, :1] + (250 / 255) * i[:, 1:]
    return -0.95 + 1.9 * mask * level[:, :, None, None] + 0.05 * torch.tanh(noise[:, :1, None, None])


@pytest.fixture(scope="module")
def rendering_dcm():
    """Trained categorical mechanisms (a few steps) and a stand-in image mechanism whose images do
    depend on the latent, so inversion has a known answer."""
    from whatifgan.data.tabular import Dataset
    from whatifgan.dcm import DCM
    from whatifgan.variables import Categorical, Image, VariableSet

    torch.manual_seed(0)
    t, i, img = _bars(256)
    vs = VariableSet([Categorical("Thickness", 2), Categorical("Intensity", 2),
                      Image("Image", (1, 28, 28), value_range=(-1.0, 1.0))])
    dcm = DCM("Thickness -> Intensity; Thickness -> Image; Intensity -> Image", vs, plugins={"Image": _render},
              noise_dim=4, conf_dim=4, generator_kwargs={"hidden": (16, 16)})
    info = train_image_dcm(dcm, Dataset("obs", {"Thickness": t, "Intensity": i, "Image": img}),
                           {"steps": 3, "batch_size": 64, "n_critic": 1, "critic_hidden": [16], "device": "cpu"}, {})
    assert [h["steps"] for h in info["hnodes"]] == [3, 3, 0]  # the plug-in image is not trained
    return dcm


def test_inversion_recovers_rendered_attributes_and_probe_runs_end_to_end(rendering_dcm):
    dcm = rendering_dcm
    var = dcm.variables["Image"]
    m = DCMImageModel(dcm, "Image", hard=True, temperature=1.0,
                      inversion={"steps": 100, "lr": 0.05, "restarts": 1, "batch_size": 128},
                      preprocess=lambda x: var.encode(torch.as_tensor(x)))
    t, i, img = _bars(96, seed=5)
    z = m.encode(img)  # real uint8 images, preprocessed to the DCM's range
    assert z.shape == (96, m.latent_dim) and torch.isfinite(z).all()
    # the DCM's own Thickness and Intensity of the inverted latents are the rendered ones
    # (straight-through Gumbel gradients reach the categorical heads' noise); chance is 1/2
    vals = m.decode_all(z)
    assert (vals["Thickness"].numpy() == t).mean() >= 0.9
    assert (vals["Intensity"].numpy() == i).mean() >= 0.9
    x = var.encode(torch.as_tensor(img))
    rec = float(((m.decode_batched(z) - x) ** 2).mean())
    rand = float(((m.decode_batched(m.sample_prior(96, torch.Generator().manual_seed(4))) - x) ** 2).mean())
    assert rec < 0.2 * rand, (rec, rand)
    torch.testing.assert_close(m.last_inversion_loss.mean(), torch.tensor(rec), rtol=1e-4, atol=1e-6)
    # the probe end to end on the inverted latents
    cfg = CAGEConfig(alphas=(0.5, 1.0), alpha=1.0, k=300, n_permutations=5, seed=0)
    cage = CAGE(m, cfg).fit(None, {"Thickness": t, "Intensity": i}, latents=z)
    res = cage.probe("Thickness", "Intensity")
    s = res.summary()
    assert np.isfinite([s["gate_12"], s["gate_21"], s["delta_tau"]]).all()
    assert res.null_12.shape == (5, 2) and 0 < s["p_12"] <= 1
    assert s["accuracy_1"] >= 0.9  # Thickness is linearly readable off the inverted latents
    assert s["direction"] in ("independent", "Thickness -> Intensity", "Intensity -> Thickness")


def test_load_image_dcm_roundtrip(tiny_dcm, tmp_path):
    import json

    from whatifgan.training import save_model

    dcm, _ = tiny_dcm
    save_model(dcm, tmp_path)
    (tmp_path / "cage_dcm.json").write_text(json.dumps({"model": TINY, "seconds": 1.5}))
    loaded, info = load_image_dcm(tmp_path)
    assert info["format"] == "save_model" and info["seconds"] == 1.5
    m0, m1 = DCMImageModel(dcm, "Image"), DCMImageModel(loaded, "Image")
    z = m0.sample_prior(16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(m0.decode_batched(z), m1.decode_batched(z))
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_image_dcm(tmp_path / "nowhere")
    (tmp_path / "cage_dcm.json").write_text(json.dumps({"model": {**TINY, "image_kwargs": {"base_channels": 16}}}))
    with pytest.raises(ValueError, match="does not fit"):
        load_image_dcm(tmp_path)


def test_dcm_effects_against_exact_twin(rendering_dcm):
    from whatifgan.data.image_scms import morpho_scm

    dcm = rendering_dcm
    scm = morpho_scm(p=0.25, n_thickness=2, n_intensity=2)
    fwd = dcm_effects(dcm, scm, "Thickness", "Intensity", n=2000)
    back = dcm_effects(dcm, scm, "Intensity", "Thickness", n=2000)
    assert fwd["scm"] == pytest.approx(0.75) and back["scm"] == pytest.approx(0.0)
    assert fwd["scm_p"] == pytest.approx([0.125, 0.875])
    # Thickness is upstream of Intensity in the DCM: intervening on Intensity leaves it at its prior
    # (the same noise stream, so the two arms differ only by Monte-Carlo error of independent draws)
    assert abs(back["dcm"]) < 0.08
    assert all(0.0 <= p <= 1.0 for p in fwd["dcm_p"] + back["dcm_p"])


@pytest.mark.slow
def test_run_dcm_end_to_end_small(tmp_path):
    from whatifgan.cage.experiments import load_config, run_dcm

    cfg = load_config("cage_dcm")
    cfg["data"].update(n_train=400, n_annotated=120, cache_dir=str(tmp_path / "cache"))
    cfg["n_encode"] = 120
    cfg["dcm"]["train"].update(steps=3)
    cfg["dcm"]["image_train"].update(steps=3)
    cfg["inversion"].update(steps=5)
    cfg["cage"].update(k=200, n_permutations=5)
    cfg["pixel_outcome"].update(steps=5, k=100, n_permutations=5)
    out = run_dcm(cfg, tmp_path / "run")["reports"]
    assert [r["method"] for r in out] == ["cage-dcm-latent", "cage-dcm-latent", "cage-dcm-pixel"]
    assert out[0]["truth"] == "Thickness -> Intensity" and out[1]["truth"] == "independent"
    assert out[0]["dcm_effects"]["Thickness -> Intensity"]["scm"] == pytest.approx(0.75)
    assert (tmp_path / "run" / "dcm" / "model.pt").is_file() and (tmp_path / "run" / "cage_dcm_grid.png").is_file()
    again = run_dcm(cfg, tmp_path / "run", plots=False)["reports"]
    assert again[0]["model_cached"] and again[0]["summary"] == out[0]["summary"]
