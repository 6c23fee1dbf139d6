"""ID-GEN and IDC-GEN (whatifgan.idgen) against exact answers of discrete SCMs.

Sizes: 20 000 training rows per SCM (binary variables, hidden confounders with 3 states); the
network's answer is computed exactly from its models' probabilities (``tvd_report``, method
"exact"), so the TVDs measure the learned models, not Monte-Carlo noise.  Conditional queries are
compared per ``(x, z)`` and averaged over ``z`` with the true ``P(z | do(x))``; the bound applies
to the worst ``x``.  The default run takes well under two minutes on two busy cores;
``pytest -m slow`` runs a larger random sweep.
"""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch

from hgraph import DiscreteSCM
from hgraph.identify import NotIdentifiable, identify
from whatifgan.idgen import (
    ClassifierBackend,
    DiffusionBackend,
    ModelCache,
    PretrainedBackend,
    SamplingNetwork,
    WGANBackend,
    idgen,
    idgen_plan,
    passes_step7,
    plugin_report,
    random_step7_queries,
    tvd_report,
)
from whatifgan.variables import Categorical, Image, VariableSet

N = 20_000


class Counting(ClassifierBackend):
    """A classifier back end that counts its trainings."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.fits: list[tuple[str, tuple[str, ...]]] = []

    def fit(self, variable, inputs, data, **kw):
        self.fits.append((variable.name, tuple(inputs)))
        return super().fit(variable, inputs, data, **kw)


def _scm_data(graph, cards=2, seed=0, n=N):
    scm = DiscreteSCM.random(graph, cards=cards, seed=seed)
    return scm, scm.sample(n, seed=seed + 1), {v: scm.cards[v] for v in scm.nodes}


def _structure(net: SamplingNetwork) -> dict:
    """name -> (role, model-input node names) of every node."""
    return {nd.name: (nd.role, tuple(net._by_id[s].name for s in nd.wiring.values()))
            for nd in net.nodes}


# ------------------------------------------------------------------------------------ structure
def test_figure3_network_matches_the_paper():
    """ID-GEN paper, Figure 3 (right): for P_{w1}(y), H = {M_W2(W1), M_W1'(), M_X(W1', W2),
    M_Y(W2, X)}: M_Y is trained on D' ~ P_{w2}(v) (step 7 -> 2 -> 6), the others on D."""
    net = idgen_plan("idgen_fig3", "P(Y | do(W1))")
    assert _structure(net) == {
        "W1": ("input", ()), "W2": ("model", ("W1",)), "W1'": ("model", ()),
        "X": ("model", ("W1'", "W2")), "Y": ("model", ("W2", "X"))}
    y = net.node("Y")
    assert y.data.name == "D'1" and "ID line 6" in y.origin
    assert net.node("X").data.name == "D" and "Update" in net.node("X").origin
    d1 = [d for d in net.datasets if d.name == "D'1"][0]
    assert "do(W2 ~ uniform)" in d1.description
    assert [g["variable"] for g in d1.generator] == ["W1", "X", "Y"]
    assert [g["inputs"] for g in d1.generator] == [[], ["W1", "W2"], ["W1", "W2", "X"]]
    # Algorithm 1 taken literally trains M_X(W2) on its own D' (step 7 -> 2 -> 1)
    lit = idgen_plan("idgen_fig3", "P(Y | do(W1))", reuse_update=False)
    assert _structure(lit) == {"W1": ("input", ()), "W2": ("model", ("W1",)), "X": ("model", ("W2",)),
                               "Y": ("model", ("W2", "X"))}
    assert lit.node("X").data.name.startswith("D'") and "ID line 1" in lit.node("X").origin
    text = net.describe()
    assert "M_X(W1', W2)" in text and "M_Y(W2, X)" in text and "D'1" in text
    d = json.loads(net.to_json())
    assert [n["name"] for n in d["nodes"]] == [n.name for n in net.order()]
    assert d["nodes"][-1] == {"name": "Y", "variable": "Y", "context": "", "role": "model",
                              "origin": "ID line 6 (ConditionalGMs)", "model": "classifier (not trained)",
                              "inputs": {"W2": "W2", "X": "X"}, "info": {}, "cached": False, "data": "D'1"}


def test_figure2_and_frontdoor_networks():
    """Figure 2 / Example C.1: M_W1(X), M_Y(X, W1, W2), M_X'(), M_W2(X', W1); front door:
    sum_i P(i | d) sum_d' P(d') P(a | d', i)."""
    net = idgen_plan("idgen_fig2", "P(Y | do(X))")
    assert _structure(net) == {"X": ("input", ()), "W1": ("model", ("X",)), "X'": ("model", ()),
                               "W2": ("model", ("X'", "W1")), "Y": ("model", ("X", "W1", "W2"))}
    net = idgen_plan("frontdoor", "P(A | do(D))")
    assert _structure(net) == {"D": ("input", ()), "I": ("model", ("D",)), "D'": ("model", ()),
                               "A": ("model", ("D'", "I"))}
    # napkin: Z1 is added by line 3 (arbitrary value), M_Y(Z1, X) is trained on D'
    net = idgen_plan("napkin", "P(Y | do(X))")
    assert _structure(net) == {"Z1": ("arbitrary", ()), "X": ("input", ()), "Y": ("model", ("Z1", "X"))}
    assert "line 3" in net.node("Z1").origin


def test_non_identifiable_raises_before_training():
    be = Counting()
    scm, data, cards = _scm_data("bow", n=500)
    with pytest.raises(NotIdentifiable):
        idgen("bow", "P(Y | do(X))", data, variables=cards, backends=be)
    scm, data, cards = _scm_data("napkin", n=500)
    with pytest.raises(NotIdentifiable):
        idgen("napkin", "P(Y | do(X), Z1)", data, variables=cards, backends=be)
    assert be.fits == []


def test_bad_data_fails_before_training():
    be = Counting()
    scm, data, cards = _scm_data("napkin", n=500)
    data.pop("Z2")
    with pytest.raises(ValueError, match="lack column"):
        idgen("napkin", "P(Y | do(X))", data, variables=cards, backends=be)
    with pytest.raises(TypeError, match="cannot model"):
        idgen("napkin", "P(Y | do(X))", scm.sample(100, seed=0), variables=cards,
              backends={"Y": DiffusionBackend()})
    assert be.fits == []


# ------------------------------------------------------------------------------------ accuracy
def test_napkin_discrete_within_003():
    """P(Y | do(X)) on the napkin graph (ID lines 3, 7, 2, 6): binary variables from 20 000 rows,
    ternary ones from 100 000 (with 20 000 ternary rows even the exact plug-in estimator -- the
    estimand evaluated on the empirical joint -- is off by up to 0.03)."""
    for cards, seed, n in ((2, 0, N), (2, 1, N), (3, 1, 100_000)):
        scm, data, vs = _scm_data("napkin", cards=cards, seed=seed, n=n)
        net = idgen("napkin", "P(Y | do(X))", data, variables=vs)
        rep = tvd_report(net, scm)
        assert rep["tvd_max"] <= 0.03, (cards, rep)
    # Monte-Carlo sampling agrees with the exact table of the same network
    mc = tvd_report(net, scm, method="sample", n=40_000)
    assert abs(mc["tvd_mean"] - rep["tvd_mean"]) <= 0.02
    s = net.sample(1000, do={"X": 1}, seed=3)
    assert set(s) == {"Y"} and s["Y"].shape == (1000,) and s["Y"].dtype == torch.long


def test_frontdoor_backdoor_and_conditional():
    scm, data, vs = _scm_data("frontdoor", seed=2)
    net = idgen("frontdoor", "P(A | do(D))", data, variables=vs)
    assert tvd_report(net, scm)["tvd_max"] <= 0.05
    # IDC: rule 2 moves I into the intervention; H1 itself answers P(A | do(D), I)
    net = idgen("frontdoor", "P(A | do(D), I)", data, variables=vs)
    assert net.given_vars == ("I",) and set(net.inputs) == {"D", "I"}
    assert tvd_report(net, scm)["tvd_max"] <= 0.05
    assert net.sample(7, do={"D": 1}, given={"I": 0})["A"].shape == (7,)
    with pytest.raises(KeyError, match="given"):
        net.sample(7, do={"D": 1}, given={"A": 0})
    with pytest.raises(ValueError, match="give values"):
        net.sample(7, do={"D": 1})
    scm, data, vs = _scm_data("backdoor", seed=3)
    net = idgen("backdoor", "P(Y | do(X))", data, variables=vs)
    assert tvd_report(net, scm)["tvd_max"] <= 0.05
    s = net.sample(10, do={"X": torch.tensor([0, 1] * 5)}, nodes="all")
    assert set(s) == {"X", "Z", "Y"} and torch.equal(s["X"], torch.tensor([0, 1] * 5))


def test_random_queries_through_step7_within_005():
    """Random identifiable queries on random SCMs (4-8 variables with confounders) whose ID trace
    fires line 7: P_x(y) and P_x(y | z) within TVD 0.05 (worst x) of the exact answer."""
    cases = random_step7_queries(11, 3) + random_step7_queries(12, 2, conditional=True)
    assert sum(1 for _, e in cases if e.trace.algorithm == "IDC") == 2
    for g, est in cases:
        assert passes_step7(est.trace) and 4 <= len(g) <= 8 and g.bidirected_edges
        scm = DiscreteSCM.random(g, cards=2, seed=0)
        data = _enough_data(scm, est)
        net = idgen(g, est, data, variables={v: 2 for v in g.nodes})
        rep = tvd_report(net, scm)
        assert rep["tvd_max"] <= 0.05, (g.to_string(), str(est.query), rep)
        if est.trace.algorithm == "IDC" and est.trace.given:
            assert "H1" in net.auxiliary and any(d.name == "D''" for d in net.datasets)


def _enough_data(scm, est, n=N, limit=0.02):
    """``n`` rows, or 10 x more when even the plug-in estimator (the estimand on the empirical
    joint) is off by more than ``limit``: random Dirichlet SCMs sometimes nearly violate
    positivity, and then no method can meet the bound from ``n`` rows."""
    data = scm.sample(n, seed=1)
    if plugin_report(est, scm, data)["tvd_max"] > limit:
        data = scm.sample(10 * n, seed=1)
    return data


def test_literal_algorithm_and_reduced_inputs_are_accurate():
    scm, data, vs = _scm_data("idgen_fig3", seed=4)
    for kw in ({"reuse_update": False}, {"inputs": "reduced"}):
        net = idgen("idgen_fig3", "P(Y | do(W1))", data, variables=vs, **kw)
        assert tvd_report(net, scm)["tvd_max"] <= 0.05, kw


# ------------------------------------------------------------------------------------ caching
def test_cache_hits_skip_training():
    scm, data, vs = _scm_data("idgen_fig3", seed=5, n=4000)
    be = Counting()
    cache = ModelCache()
    net = idgen("idgen_fig3", "P(Y | do(W1))", data, variables=vs, backends=be, cache=cache)
    # the Update steps of the X- and Y-factors share P(w1) and P(x | w1, w2): trained once
    assert sorted(be.fits) == sorted([("W2", ("W1",)), ("W1", ()), ("X", ("W1", "W2")),
                                      ("Y", ("W1", "W2", "X")), ("Y", ("W2", "X"))])
    assert net.stats["trained"] == 5 and net.stats["cache_hits"] == 2
    first = net.query_table().values
    # exact evaluation (sum over every path of the models' probabilities) = ancestral sampling
    mc = net.query_table(method="sample", n=100_000, seed=1).transpose(["Y", "W1"]).values
    np.testing.assert_allclose(mc, net.query_table().transpose(["Y", "W1"]).values, atol=0.01)
    again = idgen("idgen_fig3", "P(Y | do(W1))", data, variables=vs, backends=be, cache=cache)
    assert len(be.fits) == 5 and again.stats["trained"] == 0 and again.stats["cache_hits"] == 7
    np.testing.assert_allclose(again.query_table().values, first)
    other = idgen("idgen_fig3", "P(W2 | do(W1))", data, variables=vs, backends=be, cache=cache)
    assert len(be.fits) == 5 and other.stats["trained"] == 0
    # a different seed is a different model
    idgen("idgen_fig3", "P(W2 | do(W1))", data, variables=vs, backends=be, cache=cache, seed=1)
    assert len(be.fits) == 6
    assert cache.stats["trained"] == 6


def test_cache_directory_round_trip(tmp_path):
    scm, data, vs = _scm_data("backdoor", seed=6, n=2000)
    a = idgen("backdoor", "P(Y | do(X))", data, variables=vs, cache=ModelCache(tmp_path))
    be = Counting()
    b = idgen("backdoor", "P(Y | do(X))", data, variables=vs, backends=be, cache=ModelCache(tmp_path))
    assert a.stats["trained"] == 2 and b.stats["trained"] == 0 and be.fits == []
    np.testing.assert_allclose(a.query_table().values, b.query_table().values)


# ------------------------------------------------------------------------------------ back ends
def test_pretrained_plugin_is_not_trained():
    scm, data, vs = _scm_data("backdoor", seed=7, n=5000)
    cpt = scm.prob(["Y"], given=["Z", "X"]).transpose(["Z", "X", "Y"]).values
    table = torch.as_tensor(cpt)

    def probs(parents):
        return table[parents["Z"].long(), parents["X"].long()]

    def sampler(parents, noise):
        return torch.multinomial(probs(parents).float(), 1).reshape(-1)

    be = Counting()
    net = idgen("backdoor", "P(Y | do(X))", data, variables=vs,
                backends={"Z": be, "Y": PretrainedBackend(sampler, ["Z", "X"], probs_fn=probs,
                                                          name="true-cpt")})
    assert be.fits == [("Z", ())] and net.stats["trained"] == 1
    assert "pretrained plug-in 'true-cpt'" in net.describe()
    assert tvd_report(net, scm)["tvd_max"] <= 0.03
    with pytest.raises(ValueError, match="reads"):
        idgen("backdoor", "P(Y | do(X))", data, variables=vs,
              backends={"Y": PretrainedBackend(sampler, ["W"])})


def test_wgan_backend_runs_and_roughly_matches():
    scm, data, vs = _scm_data("backdoor", seed=8, n=5000)
    be = WGANBackend(steps=200, batch_size=128, hidden=(32, 32), critic_hidden=(32, 32), lr=2e-3, n_critic=3)
    net = idgen("backdoor", "P(Y | do(X))", data, variables=vs, backends={"Y": be})
    assert "WGAN-GP" in net.describe()
    s = net.sample(64, do={"X": 1})
    assert s["Y"].shape == (64,) and int(s["Y"].max()) <= 1
    assert tvd_report(net, scm)["tvd_max"] <= 0.2  # 200 steps: a smoke test, not a benchmark


def _image_data(n, seed=0):
    """Front door D -> I -> A, D <-> A, with A rendered as an 8x8 image (a bright row per code)."""
    scm = DiscreteSCM.random("frontdoor", cards=3, seed=seed)
    cols = scm.sample(n, seed=seed + 1)
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 0.1, size=(n, 1, 8, 8)).astype(np.float32)
    img[np.arange(n), 0, 2 * cols["A"] + 1, :] = 0.9
    data = dict(cols)
    data["A"] = img
    vs = VariableSet([Categorical("D", 3), Categorical("I", 3), Image("A", (1, 8, 8))])
    return data, vs


def test_diffusion_backend_trains_and_samples_shapes():
    data, vs = _image_data(256)
    be = DiffusionBackend(steps=5, batch_size=32, sample_steps=4)
    t = {k: torch.as_tensor(np.asarray(v)) for k, v in data.items()}
    spec = {"I": vs["I"], "V": Image("V", (1, 8, 8))}
    t["V"] = torch.rand(256, 1, 8, 8)
    m = be.fit(vs["A"], spec, t, seed=0)
    assert m.info["steps"] == 5
    out = m.sample({"I": torch.tensor([0, 1, 2, 0, 1, 2]), "V": torch.rand(6, 1, 8, 8)}, 6)
    assert out.shape == (6, 1, 8, 8) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # end to end: M_A(D', I) is a diffusion model inside the sampling network
    net = idgen("frontdoor", "P(A | do(D))", data, variables=vs,
                backends={"A": DiffusionBackend(steps=5, batch_size=32, sample_steps=4)})
    assert "conditional diffusion" in net.node("A").model.describe()
    s = net.sample(5, do={"D": 2})
    assert s["A"].shape == (5, 1, 8, 8)


def test_diffusion_through_update_generates_images():
    """Napkin with an image Y: Update samples D' images with the diffusion model M_Y', then
    M_Y(Z1, X) is trained on them."""
    scm = DiscreteSCM.random("napkin", cards=2, seed=0)
    cols = scm.sample(128, seed=1)
    img = np.zeros((128, 1, 8, 8), np.float32)
    img[np.arange(128), 0, 3 * cols["Y"] + 2, :] = 1.0
    data = dict(cols)
    data["Y"] = img
    vs = VariableSet([Categorical("Z2", 2), Categorical("Z1", 2), Categorical("X", 2),
                      Image("Y", (1, 8, 8))])
    net = idgen("napkin", "P(Y | do(X))", data, variables=vs, n_update=32,
                backends={"Y": DiffusionBackend(steps=3, batch_size=16, sample_steps=3)})
    d1 = [d for d in net.datasets if d.name == "D'1"][0]
    assert d1.rows == 32 and "Y" in d1.columns
    assert net.node("Y").data.name == "D'1"
    assert net.sample(4, do={"X": 0})["Y"].shape == (4, 1, 8, 8)


def test_classifier_free_guidance_class0_is_not_the_null_condition():
    """The official ID-GEN code maps class 0 to the null token and ignores the unconditional
    embedding in DDIM; here the null token is k, class 0 has its own embedding, and guidance
    uses the unconditional branch."""
    data, vs = _image_data(256, seed=1)
    t = {k: torch.as_tensor(np.asarray(v)) for k, v in data.items()}
    m = DiffusionBackend(steps=20, batch_size=32, sample_steps=5, cond_dropout=0.2).fit(
        vs["A"], {"I": vs["I"]}, t, seed=0)
    unet = m.unet
    assert unet.null_token("I") == 3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, generator=g)
    tt = torch.full((4,), 500, dtype=torch.long)
    zero = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        e0 = unet(x, tt, {"I": zero})
        e_mask = unet(x, tt, {"I": zero}, null_mask=torch.ones(4, dtype=torch.bool))
        e_tok = unet(x, tt, {"I": torch.full((4,), 3)})
    assert torch.allclose(e_mask, e_tok, atol=1e-6)
    assert not torch.allclose(e0, e_tok, atol=1e-4)
    vals = {"I": zero}
    s0 = m.sample(vals, 4, torch.Generator().manual_seed(1), guidance_weight=0.0)
    s3 = m.sample(vals, 4, torch.Generator().manual_seed(1), guidance_weight=3.0)
    assert not torch.allclose(s0, s3, atol=1e-4)
    s0b = m.sample(vals, 4, torch.Generator().manual_seed(1), guidance_weight=0.0)
    assert torch.equal(s0, s0b)


# ------------------------------------------------------------------------------------ CLI
def test_cli_plan_and_run():
    from whatifgan import idgen_cli

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    idgen_cli.register(sub)
    out = io.StringIO()
    with redirect_stdout(out):
        assert idgen_cli.run(parser.parse_args(["idgen", "plan", "idgen_fig3", "P(Y | do(W1))"])) == 0
    assert "M_X(W1', W2)" in out.getvalue()
    out = io.StringIO()
    args = parser.parse_args(["idgen", "run", "backdoor", "P(Y | do(X))", "--n", "4000", "--scm-seed", "1"])
    with redirect_stdout(out):
        assert args.func(args) == 0
    text = out.getvalue()
    assert "TVD to the exact P(Y | do(X))" in text and "M_Y(Z, X)" in text


def test_identify_trace_fields_used_by_idgen():
    """The trace fields the replay relies on (guards against silent changes in hgraph)."""
    t = identify("napkin", "P(Y | do(X))").trace
    assert t.lines() == [3, 7, 2, 6]
    seven = t.children[0]
    assert seven.x_z == ("Z1",) and seven.super_component == ("Z2", "X", "Y")
    assert seven.children[0].hat_x == ("Z1",)
    assert [f.inputs for f in seven.children[0].children[0].factors] == [("Z1", "X")]


def test_gid_reads_experimental_data():
    """gID: P(Y | do(X)) in the bow graph is not identifiable from P(V), but is from a randomised
    experiment P(V | do(X)); the trace says which dataset each model is trained on."""
    scm, obs, vs = _scm_data("bow", seed=9, n=5000)
    xs = np.random.default_rng(0).integers(0, 2, 5000)
    exp = scm.sample(5000, do={"X": xs}, seed=10)
    net = idgen("bow", "P(Y | do(X))", obs, variables=vs, experiments={"do(X)": exp})
    assert net.node("Y").data.name == "D[do(X)]"
    assert tvd_report(net, scm)["tvd_max"] <= 0.05


@pytest.mark.slow
def test_random_sweep_slow():
    """A larger sweep: 16 interventional and 10 conditional queries, binary and ternary; 20 000
    rows, or 200 000 when the plug-in estimator shows that 20 000 cannot pin the answer down."""
    cases = [(c, g, e) for c in (2, 3) for g, e in random_step7_queries(21 + c, 8)]
    cases += [(2, g, e) for g, e in random_step7_queries(31, 10, conditional=True)]
    worst, enlarged = 0.0, 0
    for cards, g, est in cases:
        scm = DiscreteSCM.random(g, cards=cards, seed=0)
        data = _enough_data(scm, est)
        enlarged += len(data[g.nodes[0]]) > N
        net = idgen(g, est, data, variables={v: cards for v in g.nodes})
        rep = tvd_report(net, scm)
        worst = max(worst, rep["tvd_max"])
        assert rep["tvd_max"] <= 0.05, (g.to_string(), str(est.query), cards, rep)
    assert worst > 0.0 and enlarged < len(cases) // 2
