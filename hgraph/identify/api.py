"""``identify``: one entry point for ID, IDC, gID, ID* and IDC*."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..admg import ADMG
from .counterfactual import CounterfactualEngine, Event, run_counterfactual
from .engine import Engine, Fail
from .errors import NotIdentifiable, QueryError
from .estimand import Estimand
from .expr import substitute
from .lite import LiteGraph
from .query import Query, is_query_text, make_query, parse_query

__all__ = ["identify", "parse_available"]


def _exp_text(z: frozenset) -> str:
    return "P(V)" if not z else f"P(V | do({', '.join(sorted(z))}))"


def parse_available(spec) -> frozenset:
    """One available distribution: ``"P(V)"``, ``"obs"``, ``""``, ``()`` or ``None`` for the
    observational distribution; ``"do(X, Z)"``, ``"P(V | do(X))"``, ``"X,Z"``, ``("X", "Z")`` for
    the experiment ``P(V | do(X, Z))``."""
    if spec is None:
        return frozenset()
    if isinstance(spec, str):
        s = spec.strip()
        if s in ("", "P(V)", "P", "obs", "observational", "V", "P()"):
            return frozenset()
        m = re.fullmatch(r"(?:P\s*\(\s*V\s*\|\s*)?do\s*\((.*?)\)\s*\)?", s)
        if m:
            s = m.group(1)
        elif "(" in s or "|" in s:
            raise QueryError(f"cannot read the available distribution {spec!r}; write e.g. 'do(X)' or 'P(V)'")
        return frozenset(x.strip() for x in s.split(",") if x.strip())
    if isinstance(spec, (set, frozenset, tuple, list)):
        return frozenset(spec)
    raise QueryError(f"cannot read the available distribution {spec!r}")


def _check(g: ADMG, names: Iterable[str], what):
    """``what`` is a text or a zero-argument callable giving it (formatted only on error)."""
    unknown = [v for v in dict.fromkeys(names) if v not in g]
    if unknown:
        what = what() if callable(what) else what
        raise QueryError(f"unknown variable(s) {unknown} in {what}; the graph has {list(g.nodes)}")


def _names(x) -> tuple[str, ...]:
    if x is None:
        return ()
    if isinstance(x, str):
        return tuple(p.strip() for p in x.split(",") if p.strip())
    return tuple(x)


def identify(g, outcome, treatment=(), given=(), available=None, values: Mapping[str, int] | None = None,
             *, observational: bool = True, trace: bool = True) -> Estimand:
    """Identify a causal query; return its :class:`~hgraph.identify.estimand.Estimand`.

    Parameters
    ----------
    g:
        An :class:`~hgraph.ADMG` or anything :meth:`ADMG.load` accepts (file, shipped graph name,
        edge string such as ``"X -> M; M -> Y; X <-> Y"``).
    outcome:
        The outcome variable(s) -- or a whole query string, parsed by
        :func:`~hgraph.identify.query.parse_query`: ``"P(Y | do(X), Z)"``,
        ``"P(Y=1 | do(X=0))"``, ``"P(Y_{X=1} | X=0, Y=0)"`` (then ``treatment``/``given`` must
        be empty).  A :class:`~hgraph.identify.query.Query` is accepted too.
    treatment, given:
        Intervened and conditioning variables (names, a comma-separated string or iterables).
    available:
        Experiments available *besides* the observational distribution, e.g. ``["do(PKA)"]`` for
        ``P(V | do(PKA))`` (surrogate experiments, gID).  ``observational=False`` removes P(V)
        from the available distributions (then ``available`` must not be empty).
    values:
        Fixed values of query variables (``{"Y": 1, "X": 0}``); they are plugged into the
        estimand and the evaluated table is reduced at them.
    trace:
        Record the recursion trace (``estimand.trace``); ``False`` is slightly faster.

    Algorithms: ID (Shpitser & Pearl 2006) for ``P(y | do(x))``; IDC (Shpitser & Pearl 2006b) for
    ``P(y | do(x), z)``; gID/gIDC (Lee, Correa & Bareinboim 2019) when experiments are available;
    ID* and IDC* (Shpitser & Pearl 2007/2008) for counterfactual queries.  See
    :mod:`hgraph.identify.engine` for the costs.

    Raises
    ------
    NotIdentifiable
        with the hedge (``.hedge``: the c-forests F and F') or, for counterfactuals, the conflict.
    GraphError
        (a :class:`~hgraph.identify.errors.QueryError`) for malformed queries and unknown
        variables; plain GraphError for bad graphs.
    """
    if not isinstance(g, ADMG):
        g = ADMG.load(g)
    q = _as_query(outcome, treatment, given, values)
    _check(g, sorted(q.graph_variables(), key=str), lambda: f"query {q}")
    exps = []
    if observational:
        exps.append(frozenset())
    for a in available or ():
        z = parse_available(a)
        _check(g, sorted(z), f"available distribution {a!r}")
        if z not in exps:
            exps.append(z)
    if not exps:
        raise QueryError("no distribution is available: give `available` experiments or keep observational=True")
    available_text = ", ".join(_exp_text(z) for z in exps)
    lite = LiteGraph(g)
    # gID with P(V) only is ID; trace nodes use ID's line numbers and record the experiment read
    engine = Engine(lite, [lite.mask(z) for z in exps], trace=trace)
    if q.is_counterfactual:
        return _identify_cf(g, lite, engine, q, exps, available_text)
    y, x, z = lite.mask(q.outcome), lite.mask(q.treatment), lite.mask(q.given)
    try:
        if q.given:
            expr, node = engine.idc(y, x, z)
        else:
            expr, node = engine.id(y, x, lite.full)
    except Fail as f:
        hedges = f.hedges
        h = hedges[0] if hedges else None
        msg = f"{q} is not identifiable from {available_text}"
        if h is not None:
            what = "hedge" if len(hedges) == 1 else f"thicket of {len(hedges)} hedges, first"
            msg += f": {what} F = {{{', '.join(h.f)}}}, F' = {{{', '.join(h.f_prime)}}}"
            if len(exps) > 1:
                msg += " (" + "; ".join(str(x) for x in hedges) + ")"
        raise NotIdentifiable(msg, query=str(q), hedges=hedges, trace=engine.materialize(f.trace)) from None
    vals = q.value_map
    fixed = substitute(expr, vals) if vals else expr
    trace_fn = (lambda: engine.materialize(node)) if node is not None else None
    return Estimand(q, fixed, trace_fn, g, exps, symbolic=expr)


def _as_query(outcome, treatment, given, values) -> Query:
    if isinstance(outcome, Query):
        q = outcome
        if treatment or given:
            raise QueryError("give treatment/given inside the Query, not as arguments")
        if values:
            q = make_query(q.outcome, q.treatment, q.given, {**q.value_map, **dict(values)}, q.text) \
                if not q.is_counterfactual else q
        return q
    if isinstance(outcome, str) and is_query_text(outcome):
        if _names(treatment) or _names(given):
            raise QueryError(f"the query {outcome!r} is complete; do not pass treatment/given as well")
        q = parse_query(outcome)
        if values:
            if q.is_counterfactual:
                raise QueryError("give counterfactual values inside the query string, e.g. Y_{X=1}=1")
            q = make_query(q.outcome, q.treatment, q.given, {**q.value_map, **dict(values)}, q.text)
        return q
    return make_query(_names(outcome), _names(treatment), _names(given), values)


def _identify_cf(g: ADMG, lite: LiteGraph, engine: Engine, q: Query, exps, available_text) -> Estimand:
    def events(cvs):
        out = []
        for c in cvs:
            val = c.value if c.value is not None else c.name
            out.append(Event(c.var, frozenset(c.do), val))
        return out

    reserved = [c.name for c in q.cf_outcome + q.cf_given]
    cfe = CounterfactualEngine(g, lite, engine, reserved=reserved)
    gamma, delta = events(q.cf_outcome), events(q.cf_given)
    expr, node = run_counterfactual(cfe, gamma, delta, str(q), available_text)
    return Estimand(q, expr, (lambda: engine.materialize(node)) if node is not None else None, g, exps)
