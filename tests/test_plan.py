"""H-graphs and training plans: the papers' examples and numerical property tests.

Every rule-2 claim of a plan is checked against exact interventional distributions of random
discrete SCMs (tolerance 1e-9), minimality by showing that every strictly smaller candidate fails
numerically, and the plan's factors multiply back to P(V) (Tian's factorisation, Eq. 8).
"""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from hgraph import (
    ADMG,
    DiscreteSCM,
    PlanError,
    ancestor_set,
    ancestor_set_bruteforce,
    build_hgraph,
    build_hgraphs,
    is_modular,
    training_plan,
)
from hgraph.cli import main as hgraph_main
from hgraph.generate import random_admg


def _hnodes(plan):
    return [set(s.hnode) for s in plan.steps]


def _use(plan, var, dataset):
    step = plan.step_of(var)
    return next(u for u in step.uses if u.dataset == dataset)


# ------------------------------------------------------------------------------ paper examples
def test_figure2_plan():
    plan = training_plan("whatifgan_fig2")
    assert _hnodes(plan) == [{"Z1", "Z2", "Z3"}, {"X1", "X2"}]
    assert plan.edges == [(0, 1)]
    z = _use(plan, "Z1", "obs")
    assert set(z.joint) == {"Z1", "Z2", "Z3"} and z.conditioning == ["X1"] and z.ancestors == []
    x = _use(plan, "X1", "obs")
    assert set(x.joint) == {"X1", "X2", "Z1", "Z3"} and x.conditioning == [] and set(x.ancestors) == {"Z1", "Z3"}


def test_figure8_interventional_dataset_gives_smaller_joint():
    plan = training_plan("whatifgan_fig2", ["obs", "do(Z1)"])
    z = plan.step_of("Z2")
    assert {u.dataset for u in z.uses} == {"obs", "do(Z1)"}
    zi = _use(plan, "Z2", "do(Z1)")
    assert set(zi.joint) == {"Z2", "Z3"} and zi.role == "interventional"
    # Appendix D.2.1: [X1, X2] is trained from D^{z1} alone, with A = ∅
    x = plan.step_of("X1")
    assert [u.dataset for u in x.uses] == ["do(Z1)"] and x.uses[0].ancestors == []
    assert [k.dataset for k in x.skipped] == ["obs"]


def test_frontdoor_plan():
    plan = training_plan("frontdoor")
    assert _hnodes(plan) == [{"I"}, {"D", "A"}]
    u = _use(plan, "A", "obs")
    assert u.ancestors == ["I"] and set(u.joint) == {"D", "I", "A"} and u.conditioning == []
    assert _use(plan, "I", "obs").conditioning == ["D"]


def test_asia_plan():
    plan = training_plan("asia_hidden")
    assert plan.edges == [(plan.step_of("either").index, plan.step_of("lung").index)]
    u = _use(plan, "lung", "obs")
    assert set(u.joint) == {"lung", "dysp", "either"} and u.conditioning == ["tub"]
    assert plan.step_of("lung").stage == 1 and plan.step_of("asia").stage == 0


def test_sachs_interventional_dataset_needed_only_for_pka_mek():
    plan = training_plan("sachs_pkc_hidden", ["D1", "D2=do(PKA)[PKA, Mek]"])
    for s in plan.steps:
        used = {u.dataset for u in s.uses}
        if set(s.hnode) == {"PKA", "Mek"}:
            assert used == {"D1", "D2"}
            d2 = _use(plan, "Mek", "D2")
            assert d2.compared == ["Mek"] and d2.conditioning == ["PKA"] and d2.trained == ["Mek"]
        else:
            assert used == {"D1"}


def test_appendix_f7_partial_datasets_equation_60():
    plan = training_plan("whatifgan_f7", ["D1=[-W0, -Y0]", "D2=[-Y1]"])
    expect = {
        "W0": ("D2", {"W0"}, {"X0"}),
        "W1": ("D1", {"W1"}, {"X0", "X1", "X2"}),
        "X0": ("D2", {"X0", "W0", "Y0", "W1"}, {"X1", "X2"}),
        "X1": ("D1", {"X1", "X2", "W1", "Y1"}, {"X0"}),
    }
    for v, (ds, joint, cond) in expect.items():
        step = plan.step_of(v)
        assert [u.dataset for u in step.uses] == [ds], (v, step.uses)
        assert set(step.uses[0].joint) == joint and set(step.uses[0].conditioning) == cond


def test_appendix_e1():
    plan = training_plan("whatifgan_e1")
    assert _use(plan, "U", "obs").joint == ["U"]
    zv = _use(plan, "Z", "obs")
    assert set(zv.joint) == {"Z", "V"} and set(zv.conditioning) == {"X", "W"}
    xyw = _use(plan, "Y", "obs")
    assert set(xyw.joint) == {"X", "Y", "W", "Z"} and xyw.conditioning == ["U"] and xyw.ancestors == ["Z"]


def test_hgraph_merges_every_scc_not_only_short_cycles():
    """C1 -> C2 -> C3 -> C4 -> C1 with no shorter cycle: a_{k+1} -> x_k -> b_{k+1} makes rule 2
    fail for C_{k+1} given x_k, while the reverse directions hold. All four must merge."""
    edges = []
    for k in range(1, 5):
        j = k % 4 + 1
        edges += [f"a{j} -> x{k}", f"x{k} -> b{j}", f"a{k} <-> b{k}", f"b{k} <-> x{k}"]
    g = ADMG.from_string("; ".join(edges))
    from hgraph.hgraph import hgraph_edges
    import networkx as nx

    comps = g.c_components()
    raw = nx.DiGraph(hgraph_edges(g, comps))
    assert len(comps) == 4 and sorted(len(c) for c in nx.simple_cycles(raw)) == [4]
    hg = build_hgraph(g)
    assert hg.hnodes == [frozenset(g.nodes)] and hg.edges == []
    assert len(hg.components[0]) == 4
    plan = training_plan(g)
    assert len(plan.steps) == 1 and plan.steps[0].uses[0].conditioning == []


@pytest.mark.parametrize("seed", range(40))
def test_hgraph_is_a_dag_and_edges_follow_definition_4_3(seed):
    import networkx as nx

    from hgraph.docalc import rule2

    g = random_admg(9, seed=seed, avg_parents=1.6, bidirected=0.5, latent_groups=seed % 2)
    hg = build_hgraph(g)
    assert nx.is_directed_acyclic_graph(hg.dag)
    assert sorted(v for h in hg.hnodes for v in h) == sorted(g.nodes)
    for c in g.c_components():  # h-nodes are unions of c-components
        assert sum(1 for h in hg.hnodes if c <= h) == 1
    for t, ht in enumerate(hg.hnodes):
        for s, hs in enumerate(hg.hnodes):
            if s == t:
                continue
            x = g.parents(ht) & hs
            if not x:
                assert (s, t) not in hg.edges
            elif not rule2(g, ht, x):  # rule 2 fails: an edge, unless merged away
                assert (s, t) in hg.edges or nx.has_path(hg.dag, s, t)
    for st in hg.stages():  # stages are antichains
        for a, b in itertools.combinations(st, 2):
            assert not nx.has_path(hg.dag, a, b) and not nx.has_path(hg.dag, b, a)


def test_hi_graphs_and_projection():
    res = build_hgraphs("whatifgan_fig2", [{"Z1"}])
    h0 = res[frozenset()]["hgraph"]
    hi = res[frozenset({"Z1"})]["hgraph"]
    assert {frozenset(h) for h in hi.hnodes} >= {frozenset({"Z1"})}
    proj = res[frozenset({"Z1"})]["projection"]
    covered = sorted(k for ks in proj.values() for k in ks)
    assert covered == list(range(len(hi.hnodes)))
    for j, ks in proj.items():
        for k in ks:
            assert hi.hnodes[k] <= h0.hnodes[j]


# ------------------------------------------------------------------------------ numerical checks
def _p_do(scm, s, x, targets=()):
    """P(S | do(X ∪ targets)) as a factor over S ∪ X ∪ targets."""
    xs = sorted(set(x) | set(targets))
    if not xs:
        return scm.prob(sorted(s))
    return scm.do_table(xs).marginal(sorted(s) + xs)


def _p_cond(scm, s, x, targets=()):
    """P(S | X, do(targets)) as a factor over S ∪ X ∪ targets."""
    x = sorted(set(x) - set(targets))
    targets = sorted(targets)
    if not targets:
        return scm.prob(sorted(s), given=x) if x else scm.prob(sorted(s))
    table = scm.do_table(targets)
    j = table.marginal(sorted(s) + x + targets)
    return j / j.marginal(x + targets) if x else j


def _rule2_numeric_gap(scm, g, s, targets=()):
    pa = set()
    for v in s:
        pa |= set() if v in targets else set(g.pa(v))
    x = pa - set(s)
    a = _p_do(scm, s, x, targets)
    b = _p_cond(scm, s, x, targets)
    return a.max_abs_diff(b)


def _random_case(seed, n=None):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(4, 8))
    g = random_admg(n, seed=seed, avg_parents=1.5, bidirected=float(rng.uniform(0.2, 0.8)),
                    latent_groups=int(rng.integers(0, 2)))
    scm = DiscreteSCM.random(g, cards=2, seed=seed, latent_card=3)
    return g, scm, rng


@pytest.mark.parametrize("seed", range(120))
def test_plan_rule2_claims_hold_numerically_and_are_minimal(seed):
    g, scm, rng = _random_case(seed)
    nodes = list(g.nodes)
    targets = frozenset(rng.choice(nodes, size=1)) if seed % 3 == 0 else frozenset()
    datasets = ["obs"] + ([f"do({','.join(sorted(targets))})"] if targets else [])
    plan = training_plan(g, datasets)
    for step in plan.steps:
        for u in step.uses:
            t = frozenset(u.targets)
            s = frozenset(u.joint)
            # the claim: P(S | do(Pa(S)), do(I)) = P(S | Pa(S), do(I))
            assert _rule2_numeric_gap(scm, g, s, t) < 1e-9, (step.hnode, u)
            # agrees with the exponential search of Algorithm 7
            assert ancestor_set_bruteforce(g, step.hnode, t) == frozenset(u.ancestors)
            # minimality: every strictly smaller candidate fails numerically
            y = frozenset(step.hnode) - t
            pool = sorted(g.do(t).ancestors(y) - set(step.hnode) - t) if t else sorted(g.ancestors(y) - set(step.hnode))
            for k in range(len(u.ancestors)):
                for cand in itertools.combinations(pool, k):
                    assert _rule2_numeric_gap(scm, g, y | frozenset(cand), t) > 1e-6, (step.hnode, cand)
            # modules of A are trained earlier
            for a in u.ancestors:
                assert plan.step_of(a).index in step.depends_on or plan.step_of(a).stage < step.stage


def _c_factor(scm, g, s):
    """Q[S] = P(S | do(Pa(S) \\ S)) from the SCM by intervention."""
    x = sorted(g.parents(s))
    return scm.do_table(x).marginal(sorted(s) + x) if x else scm.prob(sorted(s))


@pytest.mark.parametrize("seed", range(60))
def test_plan_factors_multiply_back_to_joint(seed):
    """Eq. 8: the matched P(S | X) = Q[H] Q[A] for every step, and prod_H Q[H] = P(v) (Tian)."""
    g, scm, _ = _random_case(1000 + seed)
    plan = training_plan(g, ["obs"])
    joint = scm.joint()
    prod = None
    for step in plan.steps:
        (u,) = step.uses
        matched = joint.marginal(list(u.joint) + u.conditioning)
        if u.conditioning:
            matched = matched / matched.marginal(u.conditioning)
        q_h = _c_factor(scm, g, set(step.hnode))
        q = q_h * _c_factor(scm, g, set(u.ancestors)) if u.ancestors else q_h
        assert matched.max_abs_diff(q) < 1e-9
        prod = q_h if prod is None else prod * q_h
    assert prod.max_abs_diff(joint) < 1e-9


@pytest.mark.parametrize("seed", range(40))
def test_partial_datasets_feed_only_observed_parents(seed):
    g, scm, rng = _random_case(2000 + seed)
    nodes = list(g.nodes)
    hide = set(rng.choice(nodes, size=2, replace=False))
    plan = training_plan(g, [f"D1=[{', '.join('-' + h for h in sorted(hide))}]", "D2"], strict=False)
    for step in plan.steps:
        for u in step.uses:
            assert not (set(u.conditioning) & hide) if u.dataset == "D1" else True
            assert set(u.compared) == set(u.joint) - (hide if u.dataset == "D1" else set())
            assert _rule2_numeric_gap(scm, g, frozenset(u.joint)) < 1e-9


def test_dependency_cycle_between_hnodes_is_merged():
    # found by the property search: ancestor sets of two h-nodes need each other's modules
    g = ADMG.from_string("V1 -> V0; V4 -> V0; V7 -> V2; V4 -> V3; V2 -> V3; V1 -> V4; V2 -> V6; V0 -> V7;"
                         "V4 <-> V0; V0 <-> V5; V1 <-> V2; V5 <-> V3; V4 <-> V6")
    assert ancestor_set(g, {"V1", "V2"}) >= {"V0", "V4"}
    plan = training_plan(g)
    assert plan.merges and {"V1", "V2", "V0", "V4"} <= set(plan.step_of("V1").hnode)
    for step in plan.steps:
        for u in step.uses:
            assert is_modular(g, set(u.joint))


def test_plan_outputs_json_dot_png(tmp_path):
    plan = training_plan("sachs", ["obs", "do(PKA)"])
    d = json.loads(plan.to_json())
    assert d["steps"][0]["uses"][0]["critic_inputs"] is not None
    assert "cluster_H0" in plan.to_dot()
    out = plan.draw(str(tmp_path / "plan.png"))
    assert (tmp_path / "plan.png").stat().st_size > 1000 and out.endswith("plan.png")
    assert "stage" in str(plan)


def test_plan_errors():
    with pytest.raises(Exception, match="unknown variable 'Q'"):
        training_plan("frontdoor", ["do(Q)"])
    with pytest.raises(PlanError, match="duplicate dataset"):
        training_plan("frontdoor", ["obs", "obs"])
    with pytest.raises(PlanError, match=r"\[I\] cannot be trained"):
        training_plan("frontdoor", ["D1=[D, A]"])


def test_plan_200_nodes_polynomial():
    g = random_admg(200, seed=3)
    plan = training_plan(g, ["obs", "do(V1)", "do(V2)"])
    assert sum(len(s.hnode) for s in plan.steps) == 200


# ------------------------------------------------------------------------------ CLI
def test_cli_plan_json_and_png(tmp_path, capsys):
    assert hgraph_main(["plan", "D -> I; I -> A; D <-> A", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["hnode"] for s in out["steps"]] == [["I"], ["D", "A"]]
    png = tmp_path / "p.png"
    assert hgraph_main(["plan", "sachs_pkc_hidden", "--dataset", "D1", "D2=do(PKA)[PKA,Mek]", "--png", str(png)]) == 0
    assert png.exists()


def test_cli_bad_graph_exits_nonzero():
    r = subprocess.run([sys.executable, "-m", "hgraph.cli", "plan", "X -> Y; Y -> X"], capture_output=True, text=True)
    assert r.returncode == 2 and "directed cycle" in r.stderr
    r = subprocess.run([sys.executable, "-m", "hgraph.cli", "draw", "X -> X"], capture_output=True, text=True)
    assert r.returncode == 2 and "self loop" in r.stderr
