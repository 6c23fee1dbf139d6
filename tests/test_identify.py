"""Identification engine (hgraph.identify): textbook graphs, estimand text/LaTeX, evaluation,
traces, errors and the CLI hook.  Every identified estimand is checked numerically against the
ground truth of random discrete SCMs (hgraph.DiscreteSCM) to 1e-9."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import hgraph
from hgraph import ADMG, DiscreteSCM, Factor, GraphError
from hgraph.identify import (
    Estimand,
    NotIdentifiable,
    QueryError,
    TraceNode,
    identify,
    parse_query,
)

TOL = 1e-9


# ----------------------------------------------------------------------------------- helpers
def truth(scm, y, x=(), z=()):
    """P(y | do(x), z) by intervention in the SCM, as a Factor over y + z + x."""
    y, x, z = tuple(y), tuple(x), tuple(z)
    t = scm.do_table(list(x)) if x else scm.joint()
    j = t.marginal(y + z + x)
    if z or x:
        j = j / j.marginal(z + x)
    return j


def cf_truth(scm, q):
    """A counterfactual query's table from DiscreteSCM.counterfactual (conditioned, values fixed)."""
    worlds = [(c.do_dict, [c.var]) for c in q.cf_outcome + q.cf_given]
    j = scm.counterfactual(worlds)
    given = [c.name for c in q.cf_given]
    t = j / j.marginal(given) if given else j
    vals = {c.name: c.value for c in q.cf_outcome + q.cf_given if c.value is not None}
    return t.reduce(vals) if vals else t


def check_numbers(g, est, seeds=(0, 1, 2), cards=2):
    q = est.query
    for seed in seeds:
        scm = DiscreteSCM.random(g, cards=cards, seed=seed, latent_card=2)
        got = est.evaluate(scm)
        if q.is_counterfactual:
            want = cf_truth(scm, q)
        else:
            want = truth(scm, q.outcome, q.treatment, q.given)
            vals = q.value_map
            if vals:
                want = want.reduce(vals)
        assert got.max_abs_diff(want) <= TOL, (str(q), str(est), seed)


# ------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("text, outcome, treatment, given, values", [
    ("P(Y | do(X), Z)", ("Y",), ("X",), ("Z",), {}),
    ("P(Y, W | do(X, Z))", ("Y", "W"), ("X", "Z"), (), {}),
    ("P(Y=1 | do(X=0))", ("Y",), ("X",), (), {"Y": 1, "X": 0}),
    ("Y | do(X), do(W), Z=2", ("Y",), ("X", "W"), ("Z",), {"Z": 2}),
    ("P(Y)", ("Y",), (), (), {}),
    ("P(W_1 | do(U_X.b))", ("W_1",), ("U_X.b",), (), {}),
])
def test_parse_interventional(text, outcome, treatment, given, values):
    q = parse_query(text)
    assert (q.outcome, q.treatment, q.given, q.value_map) == (outcome, treatment, given, values)
    assert not q.is_counterfactual
    assert parse_query(str(q)) == q  # str round-trips


def test_parse_counterfactual():
    q = parse_query("P(Y_{X=1} | X=0, Y=0)")
    assert q.is_counterfactual
    assert [c.name for c in q.cf_outcome] == ["Y_{X=1}"]
    assert [(c.var, c.value) for c in q.cf_given] == [("X", 0), ("Y", 0)]
    q = parse_query("P(Y_{X=1}=1, Y_{X=0}=0)")
    assert [(c.name, c.value) for c in q.cf_outcome] == [("Y_{X=1}", 1), ("Y_{X=0}", 0)]
    q = parse_query("P(Y_{Z=0, X=1} | W)")
    assert q.cf_outcome[0].name == hgraph.cf_name("Y", {"X": 1, "Z": 0}) == "Y_{X=1,Z=0}"
    # do() inside a counterfactual query is added to every subscript
    q = parse_query("P(Y_{X=1} | W=0, do(Z=1))")
    assert [c.name for c in q.cf_outcome + q.cf_given] == ["Y_{X=1,Z=1}", "W_{Z=1}"]


@pytest.mark.parametrize("bad", ["P(Y | do(X)", "P(Y | X, Y)", "P(Y_{X} | X)", "P()", "P(Y | do(Y))",
                                 "P(Y=-1)", "", "P(Y | do(X=0)) junk", "P(Y_{X=1} | do(Z))"])
def test_parse_errors(bad):
    with pytest.raises(QueryError):
        parse_query(bad)
    assert issubclass(QueryError, GraphError)


def test_unknown_variables_are_graph_errors():
    with pytest.raises(GraphError, match=r"unknown variable\(s\) \['Q', 'R'\]"):
        identify("X -> Y", "P(Q | do(R))")
    with pytest.raises(GraphError, match="Q"):
        identify("X -> Y", "Y", "Q")
    with pytest.raises(GraphError, match="Q"):
        identify("X -> Y", "P(Y_{Q=1})")
    with pytest.raises(GraphError, match="Q"):
        identify("X -> Y", "P(Y | do(X))", available=["do(Q)"])
    with pytest.raises(GraphError):  # a bad graph
        identify("X -> Y; Y -> X", "P(Y)")


# --------------------------------------------------------------------------- textbook graphs
TEXTBOOK = [
    # (graph, query, expected estimand text; "" = identifiable, only checked numerically;
    #  None = not identifiable)
    ("backdoor", "P(Y | do(X))", "Σ_{Z} P(Z) P(Y | Z, X)"),
    ("frontdoor", "P(A | do(D))", "Σ_{I} P(I | D) Σ_{D'} P(D') P(A | D', I)"),
    ("idgen_fig1", "P(R | do(X))", "Σ_{S} P(S | X) Σ_{X'} P(X') P(R | X', S)"),
    ("napkin", "P(Y | do(X))", "[Σ_{Z2} P(Z2) P(X, Y | Z2, Z1)] / [Σ_{Z2} P(Z2) P(X | Z2, Z1)]"),
    ("idgen_fig2", "P(Y | do(X))", "Σ_{W1} P(W1 | X) Σ_{W2} P(Y | X, W1, W2) Σ_{X'} P(X') P(W2 | X', W1)"),
    ("idgen_fig3", "P(Y | do(W1))", "Σ_{W2} P(W2 | W1) Σ_{W1'} P(W1') P(Y | W1', W2)"),
    ("verma", "P(V4 | do(V3))", "Σ_{V2} P(V2 | V1) P(V4 | V1, V2, V3)"),
    ("verma", "P(V4 | do(V1))", "Σ_{V2} P(V2 | V1) Σ_{V3} P(V4 | V1, V2, V3) P(V3 | V2)"),
    ("iv", "P(Y | do(Z))", "P(Y | Z)"),
    ("shpitser_pearl_fig2b", "P(Y | do(X))", "P(Y | X)"),
    ("shpitser_pearl_fig2c", "P(Y | do(X))", "Σ_{Z} P(Z) P(Y | Z, X)"),
    ("shpitser_pearl_fig3a", "P(Y1, Y2 | do(X))", "P(Y2) Σ_{W1} P(W1) P(Y1 | W1, X)"),
    ("backdoor", "P(Y | do(X), Z)", "P(Y | Z, X)"),
    ("frontdoor", "P(A | do(D), I)", "Σ_{D'} P(D') P(A | D', I)"),
    ("napkin", "P(Y | do(X), Z1)", None),
    ("bow", "P(Y | do(X))", None),
    ("iv", "P(Y | do(X))", None),
    ("iv", "P(Y | do(X), Z)", None),
    ("napkin", "P(Y | do(Z1))", ""),
    ("verma", "P(V4 | do(V2))", ""),
    ("shpitser_pearl_fig9a", "P(Y | do(X), Z)", ""),
    ("shpitser_pearl_fig9a", "P(Y, W | do(X), D)", ""),
]


@pytest.mark.parametrize("graph, query, expected", TEXTBOOK)
def test_textbook(graph, query, expected):
    g = ADMG.load(graph)
    if expected is None:
        with pytest.raises(NotIdentifiable) as info:
            identify(g, query)
        e = info.value
        assert "not identifiable" in str(e)
        assert e.hedge is not None and set(e.f_prime) < set(e.f)
        assert f"F = {{{', '.join(e.f)}}}" in str(e)
        return
    est = identify(g, query)
    if expected:
        assert str(est) == expected
    check_numbers(g, est)


def test_frontdoor_conditional_agrees_with_manual_formula():
    """P(A | do(D), I) in the front-door graph: I blocks D, so rule 2 moves I into do()."""
    est = identify("frontdoor", "P(A | do(D), I)")
    assert est.trace.algorithm == "IDC" and est.trace.added == ("I",)


def test_hedge_contents():
    with pytest.raises(NotIdentifiable) as info:
        identify("bow", "P(Y | do(X))")
    e = info.value
    assert (e.f, e.f_prime, e.hedge.roots, e.hedge.x) == (("X", "Y"), ("Y",), ("Y",), ("X",))
    assert str(e) == "P(Y | do(X)) is not identifiable from P(V): hedge F = {X, Y}, F' = {Y}"
    assert e.trace is not None and e.trace.line == 5 and e.trace.hedge == e.hedge
    assert hgraph.NotIdentifiable is NotIdentifiable


def test_latex_and_equation():
    est = identify("frontdoor", "P(A | do(D))")
    assert est.latex() == r"\sum_{I} P(I \mid D) \, \sum_{D'} P(D') \, P(A \mid D', I)"
    assert est.latex(equation=True).startswith(r"P(A \mid \mathrm{do}(D)) = \sum_{I}")
    assert est.equation() == "P(A | do(D)) = Σ_{I} P(I | D) Σ_{D'} P(D') P(A | D', I)"
    est = identify("napkin", "P(Y | do(X))")
    assert est.arbitrary == ("Z1",) and est.equation().endswith("(for any value of Z1)")
    assert r"\frac{" in est.latex() and r"\mathrm{Z2}" in est.latex()
    assert isinstance(est, hgraph.Estimand) and Estimand is hgraph.Estimand


# -------------------------------------------------------------------------------- evaluation
def test_evaluate_protocols_and_values():
    g = ADMG.load("frontdoor")
    scm = DiscreteSCM.random(g, cards={"D": 2, "I": 3, "A": 2}, seed=3)
    est = identify(g, "P(A | do(D))")
    want = truth(scm, ["A"], ["D"])
    for tables in (scm, scm.joint(), {"P(V)": scm.joint()}, {(): scm.joint()}):
        got = est.evaluate(tables)
        assert got.vars == ("A", "D") and got.max_abs_diff(want) <= TOL
    # fixed values: in the query or at evaluation
    e1 = identify(g, "P(A=1 | do(D=0))")
    assert str(e1) == "Σ_{I} P(I | D=0) Σ_{D'} P(D') P(A=1 | D', I)"
    v = e1.evaluate(scm)
    assert v.vars == () and abs(float(v.values) - want.reduce({"A": 1, "D": 0}).values) <= TOL
    assert abs(e1.probability(scm) - float(v.values)) <= TOL
    assert est.evaluate(scm, values={"D": 1}).max_abs_diff(want.reduce({"D": 1})) <= TOL
    # the treatment keeps its axis even when the estimand does not depend on it
    e2 = identify("X -> Y; W -> Y", "P(W | do(X))")
    scm2 = DiscreteSCM.random(e2.graph, seed=1)
    assert e2.evaluate(scm2).vars == ("W", "X")
    with pytest.raises(KeyError):
        identify("bow", "P(Y)").evaluate({"do(X)": scm2.do_table(["X"])})


def test_surrogate_experiments_gid():
    """gID: P(Y | do(X)) is not identifiable from P(V) but is from P(V) and P(V | do(Z))."""
    g = ADMG.load("Z -> X; W -> X; X -> Y; Z -> W; Z <-> X; Z <-> Y; W <-> Y")
    with pytest.raises(NotIdentifiable):
        identify(g, "P(Y | do(X))")
    est = identify(g, "P(Y | do(X))", available=["do(Z)"])
    assert str(est) == "Σ_{W} P(W | do(Z)) P(Y | do(Z), W, X)"
    assert est.experiments == (frozenset({"Z"}),)
    lines = [(n.line, n.experiment) for n in est.trace.walk()]
    assert lines == [(3, ()), (7, ("Z",)), (2, ("Z",)), (1, ("Z",))]
    for seed in range(3):
        scm = DiscreteSCM.random(g, seed=seed, latent_card=2)
        want = truth(scm, ["Y"], ["X"])
        assert est.evaluate(scm).max_abs_diff(want) <= TOL
        tables = {"P(V)": scm.joint(), "do(Z)": scm.do_table(["Z"])}
        assert est.evaluate(tables).max_abs_diff(want) <= TOL
    # Sachs with PKC hidden: P(V | do(PKA)) answers the effects of PKA directly (gID line 1)
    sachs = ADMG.load("sachs_pkc_hidden")
    with pytest.raises(NotIdentifiable, match="hedge F = {PKA, Mek}"):
        identify(sachs, "P(Akt | do(PKA))")
    est = identify(sachs, "P(Mek, Erk, Akt | do(PKA))", available=["do(PKA)"])
    assert str(est) == "P(Mek, Erk, Akt | do(PKA))"
    check_numbers(sachs, est, seeds=(0,))
    # without the observational distribution
    est = identify(g, "P(Y | do(X))", available=["do(Z)", "do(X)"], observational=False)
    check_numbers(g, est, seeds=(0,))
    with pytest.raises(NotIdentifiable, match="from P\\(V \\| do\\(Y\\)\\): hedge"):
        identify("bow", "P(Y | do(X))", available=["do(Y)"], observational=False)


# ------------------------------------------------------------------------------------ traces
def test_trace_idgen_figure3():
    """ID-GEN paper, Figure 3: P_{w1}(y) runs lines 4, then 7 -> 2 -> 6 for the factor of Y."""
    est = identify("idgen_fig3", "P(Y | do(W1))")
    t = est.trace
    assert isinstance(t, TraceNode) and t.algorithm == "ID"
    assert t.lines() == [4, 2, 6, 2, 7, 2, 1, 7, 2, 6]
    assert t.line == 4 and t.components == (("W2",), ("X",), ("Y",)) and t.summed == ("W2", "X")
    y_call = t.children[2]
    assert (y_call.line, y_call.y, y_call.x) == (7, ("Y",), ("W1", "W2", "X"))
    assert y_call.components == (("Y",),) and y_call.super_component == ("W1", "X", "Y")
    assert y_call.x_z == ("W2",)
    assert [(f.variable, f.given, f.inputs) for f in y_call.factors] == [
        ("W1", (), ()), ("X", ("W1", "W2"), ("W1", "W2")), ("Y", ("W1", "W2", "X"), ("W1", "W2", "X"))]
    line2 = y_call.children[0]
    assert (line2.line, line2.nodes, line2.dropped, line2.hat_x) == (2, ("W1", "X", "Y"), ("W1",), ("W2",))
    base = line2.children[0]
    assert (base.line, base.y, base.x, base.nodes, base.order) == (6, ("Y",), ("X",), ("X", "Y"), ("W2", "X", "Y"))
    assert [(f.variable, f.given, f.inputs) for f in base.factors] == [("Y", ("X",), ("W2", "X"))]
    assert str(base.estimand) == "P(Y | W1, W2, X)" or base.estimand is not None
    d = t.to_dict()
    json.dumps(d)
    keys = {"algorithm", "line", "y", "x", "nodes", "order", "hat_x", "experiment", "dropped", "added",
            "components", "super_component", "x_z", "factors", "summed", "hedge", "given", "event",
            "note", "estimand", "children"}
    assert set(d) == keys
    assert d["children"][2]["factors"][1] == {"variable": "X", "given": ["W1", "W2"], "inputs": ["W1", "W2"]}
    assert "ID line 7" in t.render() and "X_Z={W2}" in str(t)
    assert json.loads(est.to_json())["trace"]["line"] == 4


def test_trace_base_cases_describe_models():
    """Line 1 and line 6 list every conditional model with its inputs (ID-GEN's ConditionalGMs)."""
    est = identify("backdoor", "P(Y | do(X))")
    six = [n for n in est.trace.walk() if n.line == 6]
    assert six and all(n.factors for n in six)
    est = identify("X -> Y; Z -> Y", "P(Y)")
    assert est.trace.line == 2 or est.trace.line == 1
    one = [n for n in est.trace.walk() if n.line == 1][0]
    assert [f.variable for f in one.factors] == list(one.nodes)
    assert one.summed == tuple(v for v in one.nodes if v not in one.y)


def test_idc_trace_and_rule2():
    est = identify("backdoor", "P(Y | do(X), Z)")
    assert est.trace.algorithm == "IDC" and est.trace.added == ("Z",) and est.trace.given == ()
    est = identify("X -> Z; X -> Y; Z <-> Y", "P(Y | do(X), Z)")
    assert est.trace.algorithm == "IDC" and est.trace.given == ("Z",) and est.trace.added == ()
    assert str(est) == "P(Y | Z, X)"
    check_numbers(est.graph, est)


# --------------------------------------------------------------------------- counterfactuals
CF = [
    ("X -> Y", "P(Y_{X=1} | X=0)", "P(Y=Y_{X=1} | X=1)"),
    ("frontdoor", "P(A_{D=1} | D=0)", "Σ_{I_{D=1}} P(A=A_{D=1} | D=0, I=I_{D=1}) P(I=I_{D=1} | D=1)"),
    ("shpitser_pearl_fig9a", "P(Y_{X=1} | X=0, Z_{D=0}=1, D=0)",
     "Σ_{W_{X=1}} P(Y=Y_{X=1} | X=0, W=W_{X=1}, Z=1) P(W=W_{X=1} | X=1)"),
    ("X -> Z; Z -> Y; X -> Y; X <-> Z", "P(Y_{X=1} | Z_{X=1}=1, X=0)", "P(Y=Y_{X=1} | X=1, Z=1)"),
    ("backdoor", "P(Y_{X=1}=1 | X=0)", None),
    ("X -> Y; Z -> Y; X <-> Y", "P(X=0, Y_{X=0,Z=1})", "P(X=0) P(Y=Y_{X=0,Z=1} | X=0, Z=1)"),
]


@pytest.mark.parametrize("graph, query, expected", CF)
def test_counterfactual_textbook(graph, query, expected):
    g = ADMG.load(graph)
    est = identify(g, query)
    if expected is not None:
        assert str(est) == expected
    assert est.trace.algorithm in ("ID*", "IDC*")
    check_numbers(g, est)


@pytest.mark.parametrize("graph, query, needle", [
    ("X -> Y", "P(Y_{X=1}=1, Y_{X=0}=0)", "conflict"),
    ("X -> Y", "P(Y_{X=1} | X=0, Y=0)", "conflict"),
    ("X -> M; M -> Y; X -> Y", "P(Y_{X=1}, M_{X=0})", "conflict"),
    ("bow", "P(Y_{X=1} | X=0)", "conflict"),
    ("bow", "P(Y_{X=1})", "hedge F = {X, Y}"),
])
def test_counterfactual_not_identifiable(graph, query, needle):
    with pytest.raises(NotIdentifiable, match=needle) as info:
        identify(graph, query)
    e = info.value
    assert "not identifiable" in str(e)
    assert e.conflict is not None or e.hedge is not None


def test_counterfactual_inconsistent_and_tautological():
    est = identify("X -> Y", "P(X_{X=1}=0)")
    assert str(est) == "0"
    est = identify("X -> Y", "P(Y_{X=1}, X_{X=1}=1)")
    assert str(est) == "P(Y=Y_{X=1} | X=1)"
    with pytest.raises(QueryError, match="inconsistent"):
        identify("X -> Y", "P(Y | X_{X=1}=0)")


# --------------------------------------------------------------------------------------- CLI
def _cli(argv):
    from hgraph.cli_identify import register, run

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    register(sub)
    args = parser.parse_args(argv)
    assert args.func is run
    return run(args)


def test_cli(capsys):
    assert _cli(["identify", "frontdoor", "P(A | do(D))"]) == 0
    assert capsys.readouterr().out.strip() == "P(A | do(D)) = Σ_{I} P(I | D) Σ_{D'} P(D') P(A | D', I)"
    assert _cli(["identify", "frontdoor", "P(A | do(D))", "--latex"]) == 0
    assert r"\sum_{I}" in capsys.readouterr().out
    assert _cli(["identify", "X -> M; M -> Y; X <-> Y", "P(Y | do(X))", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "ID line 4" in out and "ID line 6" in out
    assert _cli(["identify", "napkin", "P(Y | do(X))", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["identifiable"] and d["trace"]["line"] == 3 and d["arbitrary"] == ["Z1"]
    assert _cli(["identify", "bow", "P(Y | do(X))"]) == 1
    err = capsys.readouterr().err
    assert "not identifiable" in err and "F = {X, Y}, F' = {Y}" in err
    assert _cli(["identify", "bow", "P(Y | do(X))", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["hedge"]["F"] == ["X", "Y"]
    assert _cli(["identify", "X -> Y; Y -> X", "P(Y | do(X))"]) == 2
    assert "directed cycle" in capsys.readouterr().err
    assert _cli(["identify", "X -> Y", "P(Q | do(X))"]) == 2
    assert "unknown variable" in capsys.readouterr().err
    assert _cli(["identify", "sachs_pkc_hidden", "P(Akt | do(PKA))", "--available", "do(PKA)"]) == 0
    capsys.readouterr()


def test_cli_through_hgraph_main():
    from hgraph.cli import main

    assert main(["identify", "backdoor", "P(Y | do(X))"]) == 0
    assert main(["identify", "bow", "P(Y | do(X))"]) == 1


# ------------------------------------------------------------------------------------- speed
def test_fast_on_large_graphs():
    from hgraph.generate import random_admg

    times = []
    for seed in range(5):
        g = random_admg(800, seed=seed)
        y = max(g.nodes, key=lambda v: len(g.ancestors([v])))
        anc = g.sorted(g.ancestors([y]) - {y})
        for q in ([y], [anc[len(anc) // 2]], []), ([y], [anc[len(anc) // 2]], [anc[0]]):
            t = time.perf_counter()
            try:
                identify(g, *q)
            except NotIdentifiable:
                pass
            times.append(time.perf_counter() - t)
    assert float(np.median(times)) < 0.5


def test_import_hgraph_does_not_import_torch():
    code = "import sys, hgraph, hgraph.identify, hgraph.cli_identify; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_factor_over_outcome_given_treatment():
    est = identify("backdoor", "P(Y | do(X), Z)")
    scm = DiscreteSCM.random(est.graph, seed=0)
    f = est.evaluate(scm)
    assert isinstance(f, Factor) and f.vars == ("Y", "X", "Z")


def test_trace_off_and_callable_subpackage():
    import hgraph.identify.engine as engine_module  # the subpackage stays importable

    assert engine_module.Engine is not None
    for q in ("P(A | do(D))", "P(A_{D=1} | D=0)", "P(A | do(D), I)"):
        est = identify("frontdoor", q, trace=False)
        assert est.trace is None and str(est) == str(identify("frontdoor", q))
    # hgraph.identify is the subpackage and calls hgraph.identify.identify
    assert str(hgraph.identify("frontdoor", "P(A | do(D))")) == str(identify("frontdoor", "P(A | do(D))"))
