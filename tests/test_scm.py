"""Tests of hgraph.scm.DiscreteSCM, the exact ground truth of the project.

Every exact computation is checked against an independent brute-force enumeration over the
exogenous space written here (it only reads the mechanisms: ``parents``, ``functions``,
``noise``), against hand-computed values, or against large samples.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hgraph import ADMG, DiscreteSCM, Factor, cf_name
from hgraph.scm import response_function

FRONT_DOOR = "D -> I; I -> A; D <-> A"


# ---------------------------------------------------------------------------- brute force
def _topo(scm):
    names = list(scm.cards)
    done, order = set(), []
    while len(order) < len(names):
        for v in names:
            if v not in done and all(p in done for p in scm.parents[v]):
                done.add(v)
                order.append(v)
    return order


def brute_force(scm, worlds, evidence=()):
    """P(world variables) by a plain Python loop over every exogenous configuration.

    ``worlds``: list of (do, [vars]); returns an ndarray indexed by the world variables in order
    (conditioned on ``evidence`` = list of (var, do, value) if given).
    """
    names = list(scm.cards)
    order = _topo(scm)
    targets = [(v, dict(do or {})) for do, vs in worlds for v in vs]
    ev = [(v, dict(do or {}), val) for v, do, val in evidence]
    shape = tuple(scm.cards[v] for v, _ in targets)
    out = np.zeros(shape)
    z = 0.0
    for e in itertools.product(*[range(len(scm.noise[v])) for v in names]):
        ex = dict(zip(names, e))
        w = 1.0
        for v in names:
            w *= scm.noise[v][ex[v]]
        if w == 0:
            continue
        cache = {}

        def value(v, do):
            key = (v, tuple(sorted(do.items())))
            if key not in cache:
                vals = {}
                for u in order:
                    if u in do:
                        vals[u] = do[u]
                    else:
                        vals[u] = int(scm.functions[u][tuple(vals[p] for p in scm.parents[u]) + (ex[u],)])
                for u in order:
                    cache[(u, key[1])] = vals[u]
            return cache[key]

        if not all(value(v, do) == val for v, do, val in ev):
            continue
        z += w
        out[tuple(value(v, do) for v, do in targets)] += w
    return out / z if ev else out


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fd():
    """Front-door model with mixed cardinalities and a small exogenous space."""
    return DiscreteSCM.random(FRONT_DOOR, cards={"D": 2, "I": 3, "A": 2}, latent_card=2, seed=3)


@pytest.fixture(scope="module")
def big():
    nodes = [f"V{i}" for i in range(8)]
    g = ADMG.from_string("V0 -> V1 -> V2 -> V3; V0 -> V4 -> V5; V3 -> V6; V5 -> V6 -> V7; V1 -> V7;"
                         "V0 <-> V3; V2 <-> V5; U: V1, V4, V7", nodes=nodes)
    return DiscreteSCM.random(g, cards={v: 2 + (i % 2) for i, v in enumerate(nodes)}, seed=11)


# ---------------------------------------------------------------------------- basics
@pytest.mark.parametrize("kind", ["dirichlet", "noisy_function"])
@pytest.mark.parametrize("graph", [FRONT_DOOR, "X -> Y", "X -> Z -> Y; X <-> Y; U: X, Z, W",
                                   "A -> B; B -> C; A <-> C; B <-> C"])
def test_joint_is_a_distribution(graph, kind):
    scm = DiscreteSCM.random(graph, cards=3, seed=0, kind=kind)
    j = scm.joint()
    assert j.vars == scm.graph.nodes
    assert j.cards == tuple(scm.cards[v] for v in scm.graph.nodes)
    assert np.all(j.values >= 0)
    assert j.total() == pytest.approx(1.0, abs=1e-12)
    assert scm.graph == ADMG.load(graph)


def test_hidden_roots_named_after_latent_groups():
    scm = DiscreteSCM.random("X -> Y; X <-> Y; Conf: X, Y, Z", seed=0, latent_card=4)
    assert set(scm.hidden) == {"U_X_Y", "Conf"}
    assert scm.cards["Conf"] == 4
    assert "Conf" in scm.parents["Z"] and "Conf" in scm.parents["X"] and "U_X_Y" in scm.parents["Y"]
    assert set(scm.graph.latent_groups.values()) == {frozenset("XY"), frozenset("XYZ")}


def test_cpt_recovers_dirichlet_rows_exactly():
    rng = np.random.default_rng(0)
    table = rng.dirichlet(np.full(4, 0.3), size=(3, 2))
    table[0, 0] = [0.0, 1.0, 0.0, 0.0]  # deterministic rows and zeros are fine
    f, q = response_function(table)
    assert f.shape[:2] == (3, 2) and f.shape[2] == q.size
    assert q.size <= 6 * 3 + 1
    rec = np.zeros_like(table)
    for idx in np.ndindex(3, 2):
        for e in range(q.size):
            rec[idx + (f[idx + (e,)],)] += q[e]
    np.testing.assert_allclose(rec, table, atol=1e-14)


# ---------------------------------------------------------------------------- against brute force
def test_joint_and_prob_match_brute_force(fd):
    assert fd.exogenous_size() < 2000
    nodes = list(fd.graph.nodes)
    np.testing.assert_allclose(fd.joint().values, brute_force(fd, [({}, nodes)]), atol=1e-12)
    for d in range(2):
        bf = brute_force(fd, [({"D": d}, nodes)])
        np.testing.assert_allclose(fd.joint(do={"D": d}).values, bf, atol=1e-12)
        # P(A | do(D=d)) and P(A | I, do(D=d))
        np.testing.assert_allclose(fd.prob("A", do={"D": d}).values, bf.sum(axis=(0, 1)), atol=1e-12)
        p_ia = bf.sum(axis=0)  # (I, A)
        p_i = p_ia.sum(axis=1, keepdims=True)
        expect = np.divide(p_ia, p_i, out=np.zeros_like(p_ia), where=p_i > 0).T  # (A, I)
        got = fd.prob(["A"], given=["I"], do={"D": d})
        assert got.vars == ("A", "I")
        np.testing.assert_allclose(got.values, expect, atol=1e-12)
    for i in range(3):
        bf = brute_force(fd, [({"I": i}, nodes)])
        np.testing.assert_allclose(fd.joint(do={"I": i}).values, bf, atol=1e-12)
    # conditioning
    bf = brute_force(fd, [({}, nodes)])
    p_da = bf.sum(axis=1)
    np.testing.assert_allclose(fd.prob("A", given="D").values, (p_da / p_da.sum(axis=1, keepdims=True)).T,
                               atol=1e-12)


def test_non_markovian_group_matches_brute_force():
    scm = DiscreteSCM.random("X -> Y; Z -> Y; U: X, Y, Z", cards={"X": 2, "Y": 2, "Z": 3}, latent_card=2,
                             seed=5)
    assert set(scm.graph.latent_groups) == {"U"}
    nodes = list(scm.graph.nodes)
    np.testing.assert_allclose(scm.joint().values, brute_force(scm, [({}, nodes)]), atol=1e-12)
    np.testing.assert_allclose(scm.joint(do={"X": 1, "Z": 2}).values,
                               brute_force(scm, [({"X": 1, "Z": 2}, nodes)]), atol=1e-12)


def test_counterfactual_matches_brute_force(fd):
    worlds = [({"D": 0}, ["A"]), ({"D": 1}, ["I", "A"])]
    cf = fd.counterfactual(worlds)
    assert cf.vars == ("A_{D=0}", "I_{D=1}", "A_{D=1}")
    np.testing.assert_allclose(cf.values, brute_force(fd, worlds), atol=1e-12)
    ev = [("D", {}, 1), ("A", {}, 0)]
    cf = fd.counterfactual([({"D": 0}, ["A"])], evidence=ev)
    assert cf.vars == ("A_{D=0}",)
    np.testing.assert_allclose(cf.values, brute_force(fd, [({"D": 0}, ["A"])], ev), atol=1e-12)
    # intervening on I in one world, observing it in another
    worlds = [({"I": 2}, ["A"]), ({}, ["I"])]
    ev = [("A", {"I": 0}, 1)]
    np.testing.assert_allclose(fd.counterfactual(worlds, evidence=ev).values,
                               brute_force(fd, worlds, ev), atol=1e-12)


def test_direct_constructor_layout_matches_brute_force():
    # U hidden root (3 states); X = f(U, E_X); Y = g(X, U, E_Y)
    fx = np.array([[0, 1], [1, 1], [0, 0]])  # (U, E_X)
    fy = np.array([[[0, 1, 1], [1, 0, 1], [0, 0, 1]], [[1, 1, 0], [0, 1, 1], [1, 0, 0]]])  # (X, U, E_Y)
    scm = DiscreteSCM(cards={"X": 2, "Y": 2, "U": 3}, parents={"X": ["U"], "Y": ["X", "U"]},
                      functions={"X": fx, "Y": fy},
                      noise={"U": [0.2, 0.3, 0.5], "X": [0.6, 0.4], "Y": [0.1, 0.7, 0.2]}, hidden=["U"])
    assert scm.graph == ADMG.from_string("X -> Y; X <-> Y")
    assert scm.exogenous_size() == 18
    np.testing.assert_allclose(scm.joint().values, brute_force(scm, [({}, ["X", "Y"])]), atol=1e-14)
    # P(Y=1 | do(X=1)) by hand: sum_u P(u) sum_e P(e) fy[1, u, e]
    by_hand = sum(pu * sum(pe * fy[1, u, e] for e, pe in enumerate([0.1, 0.7, 0.2]))
                  for u, pu in enumerate([0.2, 0.3, 0.5]))
    assert scm.prob("Y", do={"X": 1}).values[1] == pytest.approx(by_hand, abs=1e-14)
    np.testing.assert_allclose(scm.cpt("Y").values[1, 0], [0.2, 0.8])  # fy[1, 0] = [1, 1, 0]
    assert scm.cpt("Y").vars == ("X", "U", "Y")


# ---------------------------------------------------------------------------- do_table / interventions
def test_do_table_agrees_with_joint(big):
    for xs in (["V1"], ["V3", "V5"], ["V0", "V4", "V6"]):
        t = big.do_table(xs)
        assert t.vars == big.graph.nodes
        np.testing.assert_allclose(t.sum_out([v for v in big.nodes if v not in xs]).values, 1.0, atol=1e-12)
        for x in itertools.product(*[range(big.cards[v]) for v in xs]):
            do = dict(zip(xs, x))
            assert t.reduce(do).allclose(big.joint(do=do).reduce(do), atol=1e-12)


def test_prob_is_marginal_of_joint(big):
    do = {"V2": 1}
    j = big.joint(do=do)
    assert big.prob(["V7", "V3"], do=do).allclose(j.marginal(["V7", "V3"]), atol=1e-12)
    c = big.prob(["V6"], given=["V0", "V5"])
    assert c.vars == ("V6", "V0", "V5")
    assert c.allclose(big.joint().marginal(["V6", "V0", "V5"]).conditional(["V0", "V5"]), atol=1e-12)


def test_prob_given_impossible_value_is_zero():
    fx = np.array([0])  # X is always 0
    scm = DiscreteSCM(cards={"X": 2, "Y": 2}, parents={"Y": ["X"]},
                      functions={"X": fx, "Y": np.array([[0, 1], [1, 0]])},
                      noise={"X": [1.0], "Y": [0.3, 0.7]})
    p = scm.prob("Y", given="X")
    np.testing.assert_allclose(p.values, [[0.3, 0.0], [0.7, 0.0]])


def test_front_door_intervention_differs_from_conditioning(fd):
    do = np.stack([fd.prob("A", do={"D": d}).values for d in range(2)])  # (D, A)
    cond = fd.prob("A", given="D").transpose(("D", "A")).values
    assert np.abs(do - cond).max() > 1e-3
    # ... and equals the front-door formula sum_i P(i|d) sum_d' P(a|i,d') P(d')
    p = fd.joint()
    p_i_d = p.marginal(["I", "D"]).conditional(["D"]).transpose(("D", "I")).values
    p_a_id = p.conditional(["I", "D"]).transpose(("D", "I", "A")).values
    p_d = p.marginal(["D"]).values
    formula = np.einsum("di,eia,e->da", p_i_d, p_a_id, p_d)
    np.testing.assert_allclose(do, formula, atol=1e-12)


def test_backdoor_adjustment_without_hidden_confounding():
    scm = DiscreteSCM.random("Z -> X; Z -> Y; X -> Y", cards={"Z": 3, "X": 2, "Y": 2}, seed=2)
    p = scm.joint()
    p_y_xz = p.conditional(["X", "Z"]).transpose(("Z", "X", "Y")).values
    adj = np.einsum("zxy,z->xy", p_y_xz, p.marginal(["Z"]).values)
    do = np.stack([scm.prob("Y", do={"X": x}).values for x in range(2)])
    np.testing.assert_allclose(do, adj, atol=1e-12)


# ---------------------------------------------------------------------------- sampling
def test_sample_frequencies_match_joint(big):
    n = 200_000
    s = big.sample(n, seed=1)
    assert set(s) == set(big.nodes) and all(a.dtype == np.int64 and a.shape == (n,) for a in s.values())
    j = big.joint()
    for pair in (["V0", "V3"], ["V1", "V4", "V7"], ["V6", "V2"]):
        emp = Factor.from_samples(s, pair, big.cards)
        assert emp.max_abs_diff(j.marginal(pair)) < 0.01
    do = {"V3": 1, "V4": 0}
    s = big.sample(n, do=do, seed=2)
    assert np.all(s["V3"] == 1) and np.all(s["V4"] == 0)
    emp = Factor.from_samples(s, ["V6", "V7"], big.cards)
    assert emp.max_abs_diff(big.prob(["V6", "V7"], do=do)) < 0.01


def test_sample_with_per_unit_interventions(fd):
    n = 100_000
    d = np.arange(n) % 2
    s = fd.sample(n, do={"D": d}, seed=3)
    np.testing.assert_array_equal(s["D"], d)
    for val in range(2):
        a = s["A"][d == val]
        assert np.mean(a == 1) == pytest.approx(fd.prob("A", do={"D": val}).values[1], abs=0.01)


def test_sample_shares_units_across_interventions(fd):
    """Same seed, different do: the same exogenous draws, so pairs follow the counterfactual joint."""
    n = 100_000
    a0 = fd.sample(n, do={"D": 0}, seed=4)["A"]
    a1 = fd.sample(n, do={"D": 1}, seed=4)["A"]
    emp = Factor.from_samples({"a0": a0, "a1": a1}, ["a0", "a1"], {"a0": 2, "a1": 2}).values
    cf = fd.counterfactual([({"D": 0}, ["A"]), ({"D": 1}, ["A"])]).values
    assert np.abs(emp - cf).max() < 0.01


def test_sample_hidden_and_determinism(fd):
    a = fd.sample(1000, seed=7, hidden=True)
    b = fd.sample(1000, seed=7, hidden=True)
    assert set(a) == set(fd.nodes) | set(fd.hidden)
    for v in a:
        np.testing.assert_array_equal(a[v], b[v])
    c = fd.sample(1000, seed=8)
    assert any(not np.array_equal(a[v], c[v]) for v in fd.nodes)


def test_random_is_deterministic_under_seed():
    g = "X -> Y -> Z; X <-> Z; U: X, Y, Z"
    for kind in ("dirichlet", "noisy_function"):
        m1 = DiscreteSCM.random(g, cards=3, seed=42, kind=kind)
        m2 = DiscreteSCM.random(g, cards=3, seed=42, kind=kind)
        m3 = DiscreteSCM.random(g, cards=3, seed=43, kind=kind)
        for v in m1.variables:
            np.testing.assert_array_equal(m1.functions[v], m2.functions[v])
            np.testing.assert_array_equal(m1.noise[v], m2.noise[v])
        assert m1.joint().allclose(m2.joint(), atol=0)
        assert not m1.joint().allclose(m3.joint(), atol=1e-6)


def test_noisy_function_kind():
    scm = DiscreteSCM.random("X -> Y; X <-> Y", cards=3, seed=0, kind="noisy_function", noise=0.0)
    for v in scm.nodes:  # noise 0: deterministic given parents and latents
        assert np.all(np.isin(scm.cpt(v).values, [0.0, 1.0]))
    scm = DiscreteSCM.random("X -> Y", cards=4, seed=0, kind="noisy_function", noise=0.2)
    row = scm.cpt("Y").values[0]
    assert sorted(np.round(row, 12)) == [0.05, 0.05, 0.05, 0.85]


# ---------------------------------------------------------------------------- counterfactuals
def test_counterfactual_with_empty_do_is_observational(fd):
    scm = DiscreteSCM.random("W -> X -> Y -> Z; X <-> Z; W <-> Y", seed=9, latent_card=2)
    for m in (fd, scm):
        nodes = list(m.nodes)
        cf = m.counterfactual([({}, nodes[:2]), (None, nodes[2:])])
        assert cf.vars == tuple(nodes)
        assert cf.allclose(m.joint(), atol=1e-12)


def test_counterfactual_single_world_is_interventional(fd):
    for d in range(2):
        cf = fd.counterfactual([({"D": d}, ["A", "I"])])
        assert cf.vars == (cf_name("A", {"D": d}), cf_name("I", {"D": d}))
        np.testing.assert_allclose(cf.values, fd.prob(["A", "I"], do={"D": d}).values, atol=1e-12)


def test_cf_name():
    assert cf_name("Y") == "Y" and cf_name("Y", {}) == "Y"
    assert cf_name("Y", {"X": 1}) == "Y_{X=1}"
    assert cf_name("Y", {"Z": 0, "X": 1}) == "Y_{X=1,Z=0}"


@pytest.fixture(scope="module")
def xor():
    """X = E_X ~ Bern(0.3); Y = X xor E_Y, E_Y ~ Bern(0.2)."""
    return DiscreteSCM(cards={"X": 2, "Y": 2}, parents={"Y": ["X"]},
                       functions={"X": np.array([0, 1]), "Y": np.array([[0, 1], [1, 0]])},
                       noise={"X": [0.7, 0.3], "Y": [0.8, 0.2]})


def test_xor_counterfactuals_are_analytic(xor):
    # Y_{X=0} = E_Y and Y_{X=1} = 1 - E_Y: perfectly anti-correlated potential outcomes
    cf = xor.counterfactual([({"X": 0}, "Y"), ({"X": 1}, "Y")])
    np.testing.assert_allclose(cf.values, [[0.0, 0.8], [0.2, 0.0]], atol=1e-15)
    # observing X=0, Y=0 reveals E_Y = 0, hence Y_{X=1} = 1
    cf = xor.counterfactual([({"X": 1}, "Y")], evidence=[("X", {}, 0), ("Y", {}, 0)])
    np.testing.assert_allclose(cf.values, [0.0, 1.0], atol=1e-15)
    # P(Y_{X=1} = 1 | Y = 1) = P(E_Y=0, X=1) / P(Y=1) = 0.24 / 0.38
    cf = xor.counterfactual([({"X": 1}, "Y")], evidence=[("Y", {}, 1)])
    assert cf.values[1] == pytest.approx(0.24 / 0.38, abs=1e-14)
    # probability of necessity and sufficiency P(Y_{X=1}=1, Y_{X=0}=0) = P(E_Y = 0) = 0.8
    cf = xor.counterfactual([({"X": 1}, "Y"), ({"X": 0}, "Y")])
    assert cf.reduce({"Y_{X=1}": 1, "Y_{X=0}": 0}).total() == pytest.approx(0.8)
    # consistency: X=1 observed, then Y_{X=1} = Y
    cf = xor.counterfactual([({"X": 1}, "Y"), ({}, "Y")], evidence=[("X", {}, 1)])
    assert np.trace(cf.values) == pytest.approx(1.0)


def test_counterfactual_errors(xor, fd):
    with pytest.raises(ValueError, match="probability zero"):
        xor.counterfactual([({"X": 1}, "Y")], evidence=[("X", {}, 0), ("Y", {}, 0), ("Y", {"X": 0}, 1)])
    with pytest.raises(ValueError, match="exogenous configurations"):
        fd.counterfactual([({"D": 0}, "A")], max_exogenous=10)
    with pytest.raises(ValueError, match="'Q'"):
        xor.counterfactual([({"X": 1}, "Q")])
    with pytest.raises(ValueError, match="'X'"):
        xor.counterfactual([({"X": 2}, "Y")])


# ---------------------------------------------------------------------------- from_bayesnet
def _chain_cpts():
    pa = np.array([0.3, 0.7])
    pb_a = np.array([[0.9, 0.1], [0.2, 0.8]])
    pc_b = np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    return pa, pb_a, pc_b


def test_from_bayesnet_hidden_mediator_gives_directed_edge():
    pa, pb_a, pc_b = _chain_cpts()
    bn = {"A": ([], pa), "B": (["A"], pb_a), "C": (["B"], pc_b)}
    full = DiscreteSCM.from_bayesnet(bn, cards={"A": 2, "B": 2, "C": 3})
    expect = np.einsum("a,ab,bc->abc", pa, pb_a, pc_b)
    np.testing.assert_allclose(full.joint().values, expect, atol=1e-14)
    for v, (_, t) in bn.items():
        np.testing.assert_allclose(full.cpt(v).values, t, atol=1e-14)
    hid = DiscreteSCM.from_bayesnet(bn, hidden=["B"])
    assert hid.graph == ADMG.from_string("A -> C")
    np.testing.assert_allclose(hid.joint().values, expect.sum(axis=1), atol=1e-14)


def test_from_bayesnet_hidden_common_cause_gives_bidirected_edge():
    pa, pb_a, pc_b = _chain_cpts()
    # B <- A -> C with A hidden, plus B -> C
    pc_ab = np.array([[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], [[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]])
    bn = {"A": ([], pa), "B": (["A"], pb_a), "C": (["A", "B"], pc_ab)}
    scm = DiscreteSCM.from_bayesnet(bn, hidden=["A"])
    assert scm.graph == ADMG.from_string("B -> C; B <-> C")
    np.testing.assert_allclose(scm.joint().values, np.einsum("a,ab,abc->bc", pa, pb_a, pc_ab), atol=1e-14)
    # P(C | do(B=b)) = sum_a P(a) P(C | a, b)
    for b in range(2):
        np.testing.assert_allclose(scm.prob("C", do={"B": b}).values, np.einsum("a,ac->c", pa, pc_ab[:, b]),
                                   atol=1e-14)


def test_from_bayesnet_asia_projection():
    t = lambda *rows: np.array(rows, dtype=float)  # noqa: E731
    yes_no = lambda p: [1 - p, p]  # noqa: E731  (state 1 = yes)
    either = np.zeros((2, 2, 2))
    for tb, lc in itertools.product(range(2), repeat=2):
        either[tb, lc, int(tb or lc)] = 1.0
    bn = {
        "asia": ([], t(*[yes_no(0.01)])[0]),
        "smoke": ([], t(*[yes_no(0.5)])[0]),
        "tub": (["asia"], t(yes_no(0.01), yes_no(0.05))),
        "lung": (["smoke"], t(yes_no(0.01), yes_no(0.1))),
        "bronc": (["smoke"], t(yes_no(0.3), yes_no(0.6))),
        "either": (["tub", "lung"], either),
        "xray": (["either"], t(yes_no(0.05), yes_no(0.98))),
        "dysp": (["bronc", "either"], np.array([[yes_no(0.1), yes_no(0.7)], [yes_no(0.8), yes_no(0.9)]])),
    }
    full = DiscreteSCM.from_bayesnet(bn)
    scm = DiscreteSCM.from_bayesnet(bn, hidden=["smoke", "bronc"])
    assert scm.graph.bidirected_edges == [("lung", "dysp")]
    assert set(scm.graph.directed_edges) == {("asia", "tub"), ("tub", "either"), ("lung", "either"),
                                             ("either", "xray"), ("either", "dysp")}
    assert scm.joint().allclose(full.joint().marginal(scm.nodes), atol=1e-14)
    # P(lung=yes) = 0.5*0.1 + 0.5*0.01
    assert scm.prob("lung").values[1] == pytest.approx(0.055)


def test_from_bayesnet_validation():
    pa, pb_a, pc_b = _chain_cpts()
    with pytest.raises(ValueError, match="'B'.*sum to 1"):
        DiscreteSCM.from_bayesnet({"A": ([], pa), "B": (["A"], pb_a * 1.1)})
    with pytest.raises(ValueError, match="'B'.*shape"):
        DiscreteSCM.from_bayesnet({"A": ([], pa), "B": (["A"], pb_a[:, :1])}, cards={"A": 2, "B": 2})
    with pytest.raises(ValueError, match="'Q'"):
        DiscreteSCM.from_bayesnet({"A": ([], pa), "B": (["Q"], pb_a)})
    with pytest.raises(ValueError, match="'H'"):
        DiscreteSCM.from_bayesnet({"A": ([], pa), "B": (["A"], pb_a)}, hidden=["H"])
    with pytest.raises(ValueError, match="C"):
        DiscreteSCM.from_bayesnet({"A": ([], pa), "B": (["A"], pb_a)}, cards={"A": 2, "B": 2, "C": 2})


# ---------------------------------------------------------------------------- errors
def test_errors_name_the_variable(fd):
    with pytest.raises(ValueError, match="'Q'"):
        fd.joint(do={"Q": 0})
    with pytest.raises(ValueError, match="'D'"):
        fd.joint(do={"D": 2})
    with pytest.raises(ValueError, match="'I'"):
        fd.prob("A", do={"I": -1})
    with pytest.raises(ValueError, match="'Q'"):
        fd.prob(["Q"])
    with pytest.raises(ValueError, match="'Q'"):
        fd.prob(["A"], given=["Q"])
    with pytest.raises(ValueError, match="hidden"):
        fd.prob([fd.hidden[0]])
    with pytest.raises(ValueError, match="'Q'"):
        fd.do_table("Q")
    with pytest.raises(ValueError, match="'D'"):
        fd.sample(10, do={"D": np.zeros(5, dtype=int)})
    with pytest.raises(ValueError, match="'D'"):
        fd.sample(10, do={"D": 5})
    with pytest.raises(ValueError, match="'I'"):
        DiscreteSCM.random(FRONT_DOOR, cards={"D": 2, "A": 2})
    with pytest.raises(ValueError, match="'A'"):
        DiscreteSCM.random(FRONT_DOOR, cards={"D": 2, "I": 2, "A": 0})
    with pytest.raises(ValueError, match="'Q'"):
        DiscreteSCM.random(FRONT_DOOR, cards={"D": 2, "I": 2, "A": 2, "Q": 2})


def test_direct_constructor_errors():
    ok = dict(cards={"X": 2, "Y": 2}, parents={"Y": ["X"]},
              functions={"X": np.array([0, 1]), "Y": np.array([[0, 1], [1, 0]])},
              noise={"X": [0.5, 0.5], "Y": [0.5, 0.5]})
    DiscreteSCM(**ok)
    with pytest.raises(ValueError, match="'Y'.*shape"):
        DiscreteSCM(**{**ok, "functions": {"X": np.array([0, 1]), "Y": np.array([0, 1])}})
    with pytest.raises(ValueError, match="'Y'.*outside"):
        DiscreteSCM(**{**ok, "functions": {"X": np.array([0, 1]), "Y": np.array([[0, 2], [1, 0]])}})
    with pytest.raises(ValueError, match="'X'"):
        DiscreteSCM(**{**ok, "noise": {"X": [0.5, 0.6], "Y": [0.5, 0.5]}})
    with pytest.raises(ValueError, match="cycle"):
        DiscreteSCM(**{**ok, "parents": {"Y": ["X"], "X": ["Y"]},
                       "functions": {"X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, 1], [1, 0]])}})
    with pytest.raises(ValueError, match="'Z'"):
        DiscreteSCM(**{**ok, "parents": {"Y": ["Z"]}})
    with pytest.raises(ValueError, match="projection"):
        DiscreteSCM(**ok, graph="X -> Y; X <-> Y")


# ---------------------------------------------------------------------------- twin-network elimination
@pytest.mark.parametrize("worlds,evidence", [
    ([({"D": 0}, ["A"]), ({"D": 1}, ["I", "A"])], []),
    ([({"D": 0}, ["A"]), ({}, ["D", "I", "A"])], [("A", {"D": 1}, 1)]),
    ([({"I": 2}, ["A", "D"]), ({"D": 1}, ["I"])], [("A", {}, 0), ("D", {}, 1)]),
])
def test_eliminate_matches_enumerate(fd, worlds, evidence):
    a = fd.counterfactual(worlds, evidence=evidence)
    b = fd.counterfactual(worlds, evidence=evidence, method="eliminate")
    assert a.vars == b.vars
    assert a.allclose(b, atol=1e-12)


def test_eliminate_merges_non_descendants():
    """W is not a descendant of X, so W_{X=1} = W: the two axes are perfectly coupled."""
    scm = DiscreteSCM.random("V -> W -> X -> M -> Y; W -> Y; X <-> Y; W <-> M", cards=3, seed=0)
    worlds = [({}, ["W", "Y"]), ({"X": 1}, ["W", "Y"])]
    b = scm.counterfactual(worlds, method="eliminate")
    assert b.allclose(scm.counterfactual(worlds), atol=1e-12)
    w = b.marginal(["W", "W_{X=1}"]).values
    np.testing.assert_allclose(w, np.diag(np.diag(w)), atol=1e-15)


def test_eliminate_on_a_model_too_big_to_enumerate(big):
    assert big.exogenous_size() > 1e9
    with pytest.raises(ValueError, match="exogenous configurations"):
        big.counterfactual([({"V1": 0}, ["V7"]), ({"V1": 1}, ["V7"])])
    nodes = list(big.nodes)
    cf = big.counterfactual([({}, nodes)], method="eliminate")
    assert cf.allclose(big.joint(), atol=1e-12)
    cf = big.counterfactual([({"V1": 1, "V5": 0}, ["V7", "V6"])], method="eliminate")
    np.testing.assert_allclose(cf.values, big.prob(["V7", "V6"], do={"V1": 1, "V5": 0}).values, atol=1e-12)
    # two worlds against coupled samples (same seed = same units)
    n = 200_000
    s0 = big.sample(n, do={"V1": 0}, seed=5)
    s1 = big.sample(n, do={"V1": 1}, seed=5)
    cf = big.counterfactual([({"V1": 0}, ["V7"]), ({"V1": 1}, ["V7"])], method="eliminate")
    emp = Factor.from_samples({"a": s0["V7"], "b": s1["V7"]}, ["a", "b"], {"a": 3, "b": 3}).values
    assert np.abs(emp - cf.values).max() < 0.01
    # conditioning on factual evidence, checked on the same coupled samples
    cf = big.counterfactual([({"V1": 1}, ["V7"])], evidence=[("V1", {}, 0), ("V6", {}, 1)], method="eliminate")
    s = big.sample(n, seed=6)
    s1 = big.sample(n, do={"V1": 1}, seed=6)
    sel = (s["V1"] == 0) & (s["V6"] == 1)
    emp = np.bincount(s1["V7"][sel], minlength=3) / sel.sum()
    assert np.abs(emp - cf.values).max() < 0.02
