"""The DCM core: training to exact ground truth (tiny), frozen ancestors, resume, bad data, sampling."""

import math

import numpy as np
import pytest
import torch

from hgraph import ADMG, DiscreteSCM
from hgraph.identify import NotIdentifiable, identify
from whatifgan.data.tabular import DataError, Dataset
from whatifgan.dcm import DCM
from whatifgan.metrics import compare, tvd
from whatifgan.sampling import Sampler, gumbel_posterior
from whatifgan.training import TrainConfig, joint_plan, train
from whatifgan.variables import Categorical, VariableSet


def _setup(graph, seed=3, cards=2, n=5000, hidden=(32, 32)):
    g = ADMG.load(graph)
    scm = DiscreteSCM.random(g, cards=cards, seed=seed)
    ds = Dataset.from_scm(scm, n, seed=1)
    vs = VariableSet([Categorical(v, scm.cards[v]) for v in g.nodes])
    torch.manual_seed(0)
    dcm = DCM(g, vs, noise_dim=8, conf_dim=8, generator_kwargs={"hidden": hidden})
    return g, scm, ds, dcm


TINY = dict(batch_size=128, critic_hidden=(64, 64), progress=False, lr=1e-3, n_critic=5)


def test_dcm_forward_do_and_noise_replay():
    g, scm, ds, dcm = _setup("frontdoor")
    dcm.eval()
    out, noise = dcm(64, return_noise=True, hard=True)
    assert set(noise["conf"]) == {"U_D_A"} and set(noise["exo"]) == {"D", "I", "A"}
    again = dcm(noise=noise, hard=True)
    for v in out:
        assert torch.equal(out[v], again[v])
    # per-sample interventions from a batch, and fixed values
    codes = torch.tensor([0, 1] * 32)
    o = dcm(64, do={"I": codes}, hard=True)
    assert torch.equal(o["I"].argmax(1), codes)
    s = dcm.sample(100, do={"D": 1})
    assert (s["D"] == 1).all() and s["A"].shape == (100,)
    with pytest.raises(ValueError, match="unknown variable 'Q'"):
        dcm(4, do={"Q": 1})


def test_frontdoor_modular_training_matches_exact_distributions():
    g, scm, ds, dcm = _setup("frontdoor")
    res = train(dcm, [ds], TrainConfig(steps=300, **TINY))
    assert [s["hnode"] for s in res.steps] == [["I"], ["D", "A"]]
    samples = dcm.sample(20000)
    joint_tvd = compare(samples, scm.joint(), {v: 2 for v in g.nodes})["tvd"]
    sampler = Sampler(dcm, available=[()])
    est = sampler.query("P(A | do(D))", n=20000)
    true = identify(g, "P(A | do(D))").evaluate(scm)
    do_tvd = tvd(est.transpose(true.vars), true, given=["D"])
    # an untrained model is at TVD ~0.3-0.5; sampling noise alone is ~0.01
    assert joint_tvd < 0.06 and do_tvd < 0.06, (joint_tvd, do_tvd)


def test_frozen_ancestors_are_bitwise_unchanged():
    g, scm, ds, dcm = _setup("frontdoor")
    snaps = {}

    def snap(step):
        snaps[step.index] = {k: v.clone() for k, v in dcm.state_dict().items()}

    # an evaluator that samples (switching the model to eval and back) must not unfreeze anything
    train(dcm, [ds], TrainConfig(steps=40, eval_every=10, **TINY), on_step_done=snap,
          evaluator=lambda m: {"n": float(m.sample(50)["A"].sum())})
    i_keys = [k for k in snaps[0] if k.startswith("mechanisms.I.")]
    assert i_keys
    for k in i_keys:  # I is frozen while [D, A] trains (BatchNorm statistics included)
        assert torch.equal(snaps[0][k], snaps[1][k]), k
    da = [k for k in snaps[0] if k.startswith("mechanisms.A.") and "weight" in k]
    assert any(not torch.equal(snaps[0][k], snaps[1][k]) for k in da)


def test_resume_equals_uninterrupted_run(tmp_path):
    cfg = TrainConfig(steps=60, checkpoint_every=20, **TINY)
    g, scm, ds, ref = _setup("frontdoor")
    train(ref, [ds], cfg, run_dir=tmp_path / "a")

    class Boom(Exception):
        pass

    # interrupted after the first h-node ...
    _, _, _, m = _setup("frontdoor")

    def stop(step):
        raise Boom

    with pytest.raises(Boom):
        train(m, [ds], cfg, run_dir=tmp_path / "b", on_step_done=stop)
    assert (tmp_path / "b" / "hnode0.pt").exists()
    # ... and in the middle of the second (a hook stops it at step 50; last checkpoint at 40)
    _, _, _, m = _setup("frontdoor")
    calls = {"n": 0}

    def evaluator(model):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Boom
        return {}

    with pytest.raises(Boom):
        train(m, [ds], TrainConfig(steps=60, checkpoint_every=20, eval_every=10, **TINY),
              run_dir=tmp_path / "b", resume=True, evaluator=evaluator)
    assert (tmp_path / "b" / "hnode1.partial.pt").exists()
    _, _, _, m = _setup("frontdoor")
    res = train(m, [ds], cfg, run_dir=tmp_path / "b", resume=True)
    assert res.steps[0]["skipped"] == "checkpoint"
    a, b = ref.state_dict(), m.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_data_is_refused_with_clear_errors():
    g, scm, ds, dcm = _setup("frontdoor")
    bad = Dataset("obs", {**ds.columns, "A": np.where(ds.columns["A"] == 1, 5, 0)})
    with pytest.raises(DataError, match="'A'.*outside 0..1"):
        train(dcm, [bad], TrainConfig(steps=1, **TINY))
    extra = Dataset("obs", {**ds.columns, "Q": ds.columns["A"]})
    with pytest.raises(DataError, match="'Q' is not a variable"):
        train(dcm, [extra], TrainConfig(steps=1, **TINY))
    with pytest.raises(DataError, match="different lengths"):
        Dataset("obs", {"D": np.zeros(3), "A": np.zeros(4)})
    with pytest.raises(DataError, match="intervention target"):
        Dataset("do", {"A": np.zeros(3)}, targets=("D",))


def test_joint_plan_is_one_step_over_all_variables():
    plan = joint_plan("whatifgan_f7", ["D1=[-W0, -Y0]", "D2=[-Y1]"])
    (step,) = plan.steps
    assert set(step.hnode) == set(ADMG.load("whatifgan_f7").nodes)
    assert [set(u.compared) for u in step.uses] == [
        set(ADMG.load("whatifgan_f7").nodes) - {"W0", "Y0"}, set(ADMG.load("whatifgan_f7").nodes) - {"Y1"}]


def test_non_identifiable_queries_are_refused_unless_forced():
    g, scm, ds, dcm = _setup("X -> Y; X <-> Y")  # the bow graph
    s = Sampler(dcm, available=[()])
    with pytest.raises(NotIdentifiable, match="not identifiable"):
        s.sample(10, do={"X": 1})
    with pytest.raises(NotIdentifiable):
        s.query("P(Y | do(X))")
    assert s.sample(10, do={"X": 1}, force=True)["X"].eq(1).all()
    # with the interventional distribution available the query is fine
    s2 = Sampler(dcm, available=[(), ("X",)])
    s2.query("P(Y | do(X))", n=100)


def test_gumbel_posterior_is_exact():
    torch.manual_seed(0)
    logits = torch.tensor([[0.3, -1.0, 2.0]]).repeat(200000, 1)
    k = torch.distributions.Categorical(logits=logits).sample()
    g = gumbel_posterior(logits, k)
    assert torch.equal((logits + g).argmax(1), k)
    # mixing the posteriors over k ~ softmax recovers the prior: i.i.d. standard Gumbel
    euler = 0.5772156649
    assert torch.allclose(g.mean(0), torch.full((3,), euler), atol=0.01)
    assert torch.allclose(g.var(0), torch.full((3,), math.pi ** 2 / 6), atol=0.03)


def test_counterfactual_importance_matches_rejection_and_handles_rare_evidence():
    g, scm, ds, dcm = _setup("frontdoor")
    train(dcm, [ds], TrainConfig(steps=60, **TINY))
    s = Sampler(dcm, available=[()])
    q = "P(A_{D=1} | D=0)"
    imp = s.counterfactual(q, n=40000, method="importance")
    rej = s.counterfactual(q, n=40000, method="rejection")
    assert imp.table.max_abs_diff(rej.table) < 0.02
    # rare evidence: make D=1 a 1e-3 event in the model; importance sampling still gives a
    # well-spread sample, rejection sampling runs out of its budget with a clear message
    from whatifgan.sampling import EvidenceTooRare

    with torch.no_grad():
        dcm.mechanisms["D"].head.bias[1] -= 12.0
    p_d1 = dcm.sample(200000)["D"].float().mean().item()
    assert p_d1 < 5e-3
    rare = s.counterfactual("P(A_{D=0} | D=1)", n=20000, method="importance")
    assert rare.ess > 2000 and abs(rare.table.values.sum() - 1) < 1e-9
    with pytest.raises(EvidenceTooRare, match="rate"):
        s.counterfactual("P(A_{D=0} | D=1)", n=20000, method="rejection", max_draws=200000)


def test_parallel_hnodes_equal_sequential(tmp_path):
    g, scm, ds, seq = _setup("asia_hidden", n=3000)
    cfg = dict(steps=20, **TINY)
    train(seq, [ds], TrainConfig(**cfg), run_dir=tmp_path / "seq")
    _, _, _, par = _setup("asia_hidden", n=3000)
    res = train(par, [ds], TrainConfig(parallel_hnodes=2, **cfg), run_dir=tmp_path / "par")
    assert sum(1 for s in res.steps if s["skipped"] == "parallel worker") >= 2
    a, b = seq.state_dict(), par.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _tiny(name, steps, n=None):
    from whatifgan.pipelines.dcm_experiment import load_config

    cfg = load_config(name)
    cfg["train"].update(steps=steps, progress=False)
    cfg["eval"]["every"] = 0
    cfg["eval"]["samples"] = 20000
    if n:
        for d in cfg["datasets"]:
            d["n"] = min(d.get("n", n), n)
    return cfg


def test_napkin_tiny_benchmark(tmp_path):
    from whatifgan.pipelines.dcm_experiment import run

    rep = run(_tiny("napkin_discrete", 300, 10000), tmp_path, quiet=True, progress=False)
    # untrained: ~0.3; the exact napkin estimand is matched by sampling the trained DCM
    assert rep["tvd"]["P(Y | do(X))"] < 0.06 and rep["tvd"]["P(W1, W2, X, Y)"] < 0.08, rep["tvd"]
    assert (tmp_path / "report.json").exists() and (tmp_path / "model.pt").exists()


def test_cmnist2_lowdim_tiny_benchmark(tmp_path):
    from whatifgan.pipelines.dcm_experiment import load_run, run

    rep = run(_tiny("cmnist2_lowdim", 250, 10000), tmp_path, quiet=True, progress=False)
    assert rep["not_identifiable"] == []  # observational, interventional and the L3 query
    tv = rep["tvd"]
    # the 7-variable joint has 648 cells: 20k samples alone put its TVD near 0.1
    assert tv["P(X1, X2, W, Color, Y1, Y2, Thick)"] < 0.3, tv
    assert tv["P(Y1, Y2, Thick | do(X1))"] < 0.1 and tv["P(Color_{X1=1, X2=2} | X1=0, X2=1)"] < 0.12, tv
    dcm, cfg, sampler = load_run(tmp_path)  # the saved run reloads and answers queries
    assert sampler.query("P(Color | do(X1=1, X2=2))", n=2000).vars == ("Color",)


def test_tiny_image_dcm_trains_and_samples_interventional_images():
    from whatifgan.variables import Image

    rng = np.random.default_rng(0)
    n = 256
    d = rng.integers(0, 2, n)
    img = np.zeros((n, 1, 28, 28), np.uint8)
    img[d == 0, :, 4:24, 10:14] = 255  # vertical bar for D=0, horizontal for D=1
    img[d == 1, :, 10:14, 4:24] = 255
    a = np.where(rng.random(n) < 0.9, d, 1 - d)
    vs = VariableSet([Categorical("D", 2), Image("I", (1, 28, 28)), Categorical("A", 2)])
    dcm = DCM("D -> I; I -> A; D <-> A", vs, noise_dim=8, conf_dim=8, generator_kwargs={"hidden": (16, 16)},
              image_kwargs={"base_channels": 8, "embed_dim": 8, "encoder_channels": (8, 8, 8)},
              image_child_kwargs={"channels": (8, 8, 8), "embed_dim": 8, "hidden": (16,)})
    res = train(dcm, [Dataset("obs", {"D": d, "I": img, "A": a})],
                TrainConfig(steps=2, batch_size=16, progress=False, critic_hidden=(16, 16),
                            image_critic_channels=(8, 8, 8), n_critic=1))
    assert [s["hnode"] for s in res.steps] == [["I"], ["D", "A"]]
    s = dcm.sample(6, do={"D": 1})
    assert s["I"].shape == (6, 1, 28, 28) and (s["D"] == 1).all() and s["A"].shape == (6,)
    with pytest.raises(DataError, match="'I'"):
        train(dcm, [Dataset("obs", {"D": d, "I": img[:, :, :20, :20], "A": a})], TrainConfig(steps=1, progress=False))


def test_per_hnode_overrides_set_steps_and_batch_of_one_hnode_only(monkeypatch):
    import whatifgan.training as training_mod

    g, scm, ds, dcm = _setup("frontdoor", n=600)
    cfg = TrainConfig.from_dict({**TINY, "steps": 6, "hnodes": {"I": {"steps": 11, "batch_size": 64}}})
    seen = []
    real_trainer = training_mod._hnode_trainer

    def spy(dcm_, step, by_name, cfg_, *a, **k):
        seen.append((step.hnode, cfg_.steps, cfg_.batch_size))
        return real_trainer(dcm_, step, by_name, cfg_, *a, **k)

    monkeypatch.setattr(training_mod, "_hnode_trainer", spy)
    res = train(dcm, [ds], cfg)
    assert seen == [(["I"], 11, 64), (["D", "A"], 6, 128)]
    assert [s["steps"] for s in res.steps] == [11, 6]
    # joint training ignores them: one step over everything with the global options
    assert cfg.for_hnode(["I"]).steps == 11 and TrainConfig.from_dict(
        {"mode": "joint", "steps": 6, "hnodes": {"I": {"steps": 11}}}).for_hnode(["I"]).steps == 6
    with pytest.raises(ValueError, match=r"option\(s\) \['mode'\] cannot be set per h-node"):
        TrainConfig.from_dict({"hnodes": {"I": {"mode": "joint"}}})
    with pytest.raises(ValueError, match="set 'steps' to different values"):
        TrainConfig.from_dict({"hnodes": {"D": {"steps": 5}, "A": {"steps": 7}}}).for_hnode(["D", "A"])


def test_mechanisms_train_in_training_mode_after_evaluations():
    """Evaluators put the DCM in eval mode; every training step must still run the h-node's
    mechanisms in training mode (BatchNorm with batch statistics), in every h-node."""
    g, scm, ds, dcm = _setup("frontdoor", n=600)
    modes = []

    def record(module, args):
        if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
            modes.append(module.training)

    for v in dcm.mechanisms:
        dcm.mechanisms[v].register_forward_pre_hook(record)

    def evaluator(m):
        m.eval()
        return {"x": 0.0}

    train(dcm, [ds], TrainConfig(**{**TINY, "steps": 6, "eval_every": 2}), evaluator=evaluator)
    assert modes and all(modes), f"{modes.count(False)} of {len(modes)} training forwards in eval mode"
