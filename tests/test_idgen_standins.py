"""Stand-ins of ID-GEN's real-data experiments: exact truth of the generated data, ID-GEN against
it, the real-data loader's errors, the translation audit with pluggable parts; the empirical back end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whatifgan.idgen import EmpiricalBackend, standins
from whatifgan.variables import Categorical, Image


def _eta(keep: bool, k: int, p: float) -> float:
    """P(eta_p(v) = w) for w == v (keep) or w != v."""
    return (1 - p) * keep + p / k


def test_covid_standin_truth_is_the_backdoor_formula_by_hand(tmp_path):
    p, p_c, u_prob, p_image = 0.1, 0.3, 0.5, 0.2
    d = standins.covid_standin(2000, p=p, p_c=p_c, u_prob=u_prob, p_image=p_image, cache_dir=tmp_path,
                               pool_per_class=8)
    pu = {0: 1 - u_prob, 1: u_prob}
    for c in (0, 1):
        # P(N=1 | do(C=c)) = sum_x P(x | c) sum_u P(u) P(N=1 | x, u)
        do = sum(_eta(x == c, 2, p_image) * pu[u] * _eta(1 == int(x or u), 2, p) for x in (0, 1) for u in (0, 1))
        assert d.truth[c][1] == pytest.approx(do, abs=1e-12)
        # P(N=1 | C=c) weighs u by P(u | c) instead
        pc = sum(pu[u] * _eta(c == u, 2, p_c) for u in (0, 1))
        obs = sum(_eta(x == c, 2, p_image) * pu[u] * _eta(c == u, 2, p_c) / pc * _eta(1 == int(x or u), 2, p)
                  for x in (0, 1) for u in (0, 1))
        assert d.observational[c][1] == pytest.approx(obs, abs=1e-12)
        # the generated rows follow the observational law
        emp = d.columns["N"][d.columns["C"] == c].mean()
        assert emp == pytest.approx(obs, abs=0.05)
    assert abs(d.truth[0][1] - d.observational[0][1]) > 0.2  # confounding is strong
    x = d.columns["X"]
    assert x.shape == (2000, 1, 28, 28) and x.dtype == np.uint8
    assert d.variables["X"].shape == (1, 28, 28)


def test_covid_no_diffusion_recovers_the_effect_and_no_latent_the_conditional(tmp_path):
    d = standins.covid_standin(3000, cache_dir=tmp_path, pool_per_class=8)
    res = standins.covid_experiment(d, classifier={"steps": 250, "batch_size": 128}, samples=1500,
                                    methods=("no-diffusion", "no-latent"))
    nd, nl = res["methods"]["no-diffusion"], res["methods"]["no-latent"]
    for c in (0, 1):
        assert nd["p"][c] == pytest.approx(d.truth[c][1], abs=0.06)
        assert nl["p"][c] == pytest.approx(d.observational[c][1], abs=0.04)
    assert nd["tvd"] < 0.05 and nl["tvd"] > 0.15
    with pytest.raises(ValueError, match="unknown method"):
        standins.covid_experiment(d, methods=("idgen", "dcm"))


def test_load_covid_folder_layouts_and_errors(tmp_path):
    missing = tmp_path / "cxr"
    with pytest.raises(FileNotFoundError, match="does not exist.*labels.csv"):
        standins.load_covid_folder(missing)
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match="neither a labels.csv"):
        standins.load_covid_folder(missing)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 40, 40)).astype(np.uint8)
    for i, a in enumerate(imgs):
        np.save(missing / f"im{i}.npy", a)
    (missing / "labels.csv").write_text("file,C,N\nim0.npy,0,1\nim1.npy,1,1\nim2.npy,1,0\n")
    d = standins.load_covid_folder(missing, size=20)
    assert d.columns["X"].shape == (3, 1, 20, 20) and d.columns["X"].dtype == np.uint8
    assert d.columns["C"].tolist() == [0, 1, 1] and d.columns["N"].tolist() == [1, 1, 0]
    # area resize of a 40 px image to 20 px averages 2x2 blocks
    want = imgs[0].reshape(20, 2, 20, 2).mean(axis=(1, 3))
    assert np.abs(d.columns["X"][0, 0].astype(float) - want).max() <= 0.5 + 1e-9
    assert d.truth is None and d.variables["X"].shape == (1, 20, 20)
    (missing / "labels.csv").write_text("file,C,N\nim0.npy,0,2\n")
    with pytest.raises(ValueError, match="0 or 1"):
        standins.load_covid_folder(missing)
    (missing / "labels.csv").write_text("file,C,N\nim9.npy,0,1\n")
    with pytest.raises(FileNotFoundError, match="missing, e.g.*im9.npy"):
        standins.load_covid_folder(missing)
    (missing / "labels.csv").write_text("path,C\nim0.npy,0\n")
    with pytest.raises(ValueError, match="needs the columns"):
        standins.load_covid_folder(missing)
    # ImageFolder style: one sub-folder per (C, N) pair, PNG images
    import matplotlib.image as mpimg

    root = tmp_path / "folders"
    for c, n in ((0, 0), (1, 1)):
        (root / f"c{c}_n{n}").mkdir(parents=True)
        mpimg.imsave(root / f"c{c}_n{n}" / "a.png", imgs[c], cmap="gray", vmin=0, vmax=255)
    d = standins.load_covid_folder(root, size=40)
    assert d.columns["C"].tolist() == [0, 1] and d.columns["N"].tolist() == [0, 1]
    assert np.abs(d.columns["X"][1, 0].astype(int) - imgs[1]).max() <= 1


def _oracle_classifier(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Reads the stand-in's attributes exactly: sex from the lit channel, age from the peak."""
    x = (torch.as_tensor(images).float() + 1.0) / 2.0
    red, green = x[:, 0].flatten(1).amax(1), x[:, 1].flatten(1).amax(1)
    peak = torch.maximum(red, green)
    return {"female": (green > red).long().numpy(), "young": (peak > 0.75).long().numpy()}


@pytest.mark.parametrize("bias", [0.0, 0.6])
def test_audit_of_rule_translators_matches_the_exact_added_attributes(tmp_path, bias):
    data = standins.celeba_standin(1500, seed=0, cache_dir=tmp_path, pool_per_class=8)
    truth = data.audit_truth(bias, empirical=True)
    res = standins.audit_translator(data, standins.rule_translator(bias), _oracle_classifier, n=3000, seed=1,
                                    young_backend={"type": "classifier", "steps": 30})
    se = 4 * np.sqrt(0.25 / 3000)
    assert res["added"]["female"] == pytest.approx(truth["female"], abs=se)
    assert res["added"]["young"] == pytest.approx(truth["young"], abs=se)
    assert "M_I2(I1, Male, Young)  pretrained plug-in 'rule_translator" in res["network"]
    # the population truth: P(male) = 0.5, P(old) = 0.5 * 0.65 + 0.5 * 0.25
    assert data.audit_truth(bias) == {"female": 0.5, "young": pytest.approx(bias * 0.45), "digit_changed": 0.0}


def test_rule_translator_changes_only_what_it_should():
    data = standins.celeba_standin(200, seed=3, pool_per_class=8, cache_dir=False)
    x = torch.as_tensor(data.columns["I1"]).float().div(127.5).sub(1.0)
    faithful = standins.rule_translator(0.0)({"I1": x, "Male": torch.zeros(200, dtype=torch.long)},
                                             torch.zeros(200, 1))
    a, b = _oracle_classifier(x), _oracle_classifier(faithful)
    assert (b["female"] == 1).all() and (b["young"] == a["young"]).all()
    assert torch.allclose(faithful[:, 1], x.amax(dim=1), atol=1e-6)   # same grey face, green channel
    always = standins.rule_translator(1.0)({"I1": x, "Male": torch.zeros(200, dtype=torch.long)},
                                           torch.zeros(200, 1))
    assert (_oracle_classifier(always)["young"] == 1).all()


def test_empirical_backend_resamples_within_input_codes():
    c = torch.tensor([0, 0, 1, 1, 1])
    x = torch.arange(5).float().reshape(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous()
    m = EmpiricalBackend().fit(Image("X", (1, 2, 2)), {"C": Categorical("C", 2)}, {"X": x, "C": c})
    s = m.sample({"C": torch.tensor([0] * 3000 + [1] * 3000)}, 6000, torch.Generator().manual_seed(0))
    f0 = np.bincount(s[:3000, 0, 0, 0].long().numpy(), minlength=5) / 3000
    f1 = np.bincount(s[3000:, 0, 0, 0].long().numpy(), minlength=5) / 3000
    assert f0[2:].sum() == 0 and f1[:2].sum() == 0
    assert np.abs(f0[:2] - 0.5).max() < 0.04 and np.abs(f1[2:] - 1 / 3).max() < 0.04
    n = Categorical("N", 3)
    m2 = EmpiricalBackend().fit(n, {"C": Categorical("C", 2)}, {"N": torch.tensor([0, 1, 2, 2, 2]), "C": c})
    assert m2.probs({"C": torch.tensor([0, 1])}, 2).tolist() == [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    m3 = EmpiricalBackend().fit(n, {"C": Categorical("C", 3)}, {"N": torch.tensor([0, 1]), "C": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="no training row with input code"):
        m3.sample({"C": torch.tensor([2])}, 1)
    with pytest.raises(TypeError, match="categorical inputs only"):
        EmpiricalBackend().fit(n, {"X": Image("X", (1, 2, 2))}, {"N": torch.tensor([0]), "X": x[:1]})
