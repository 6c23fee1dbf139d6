"""The result of identification: an expression, the query it answers and the recursion trace."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from ..factor import Factor
from .expr import Expr, Tables, evaluate, render, substitute
from .query import Query
from .trace import TraceNode

__all__ = ["Estimand"]


def _exp_text(z: frozenset) -> str:
    return "P(V)" if not z else f"P(V | do({', '.join(sorted(z))}))"


class Estimand:
    """An identified query.

    Attributes
    ----------
    query:      the :class:`~hgraph.identify.query.Query`.
    expr:       the estimand (an :class:`~hgraph.identify.expr.Expr`), with the query's fixed values
                plugged in; ``symbolic`` is the same before plugging in values.
    trace:      the recursion trace (:class:`~hgraph.identify.trace.TraceNode`), or ``None``.
    graph:      the :class:`~hgraph.admg.ADMG`.
    available:  the distributions identification could use (do-sets; ``frozenset()`` = P(V)).

    ``str(e)`` is the estimand as text, :meth:`latex` as LaTeX and :meth:`equation` the text
    ``query = estimand``.  :meth:`evaluate` computes it on discrete tables.
    """

    def __init__(self, query: Query, expr: Expr, trace: TraceNode | None, graph, available, symbolic=None):
        self.query = query
        self.expr = expr
        self.symbolic = symbolic if symbolic is not None else expr
        self._trace = trace
        self.graph = graph
        self.available = tuple(available)

    @property
    def trace(self) -> TraceNode | None:
        """The recursion trace (built on first access from the engine's bitmask records)."""
        if callable(self._trace):
            self._trace = self._trace()
        return self._trace

    @property
    def arbitrary(self) -> tuple[str, ...]:
        """Free variables of the estimand that are not in the query: variables added to the
        intervention by ID's line 3 (``P_x(y) = P_{x,w}(y)`` for every ``w``).  The estimand
        has the same value for any of their values; :meth:`evaluate` uses 0."""
        qv = set(self.query.variables)
        return tuple(sorted(s for s in self.expr.free if s not in qv))

    # ------------------------------------------------------------------ text
    def _reserved(self) -> set:
        q = self.query
        names = set(q.variables) | q.graph_variables() if not q.is_counterfactual else set(q.variables)
        return names

    def __str__(self) -> str:
        return render(self.expr, latex=False, reserved=self._reserved())

    def __repr__(self) -> str:
        return f"Estimand({self.equation()!r})"

    def latex(self, equation: bool = False) -> str:
        """LaTeX (math mode, no delimiters); with ``equation=True`` prefixed by ``query =``."""
        body = render(self.expr, latex=True, reserved=self._reserved())
        return f"{self.query.latex()} = {body}" if equation else body

    def equation(self) -> str:
        """``query = estimand`` as text (noting variables whose value is arbitrary)."""
        s = f"{self.query} = {self}"
        if self.arbitrary:
            s += f"   (for any value of {', '.join(self.arbitrary)})"
        return s

    @property
    def experiments(self) -> tuple[frozenset, ...]:
        """The available distributions the estimand actually reads."""
        return tuple(sorted(self.expr.experiments, key=lambda z: (len(z), sorted(z))))

    def to_dict(self) -> dict:
        return {
            "query": str(self.query),
            "estimand": str(self),
            "latex": self.latex(),
            "arbitrary": list(self.arbitrary),
            "available": [_exp_text(z) for z in self.available],
            "uses": [_exp_text(z) for z in self.experiments],
            "trace": self.trace.to_dict() if self.trace is not None else None,
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    # ------------------------------------------------------------------ numbers
    def evaluate(self, tables, values: Mapping[str, int] | None = None) -> Factor:
        """The query's table computed from ``tables``.

        ``tables`` is the observational joint (a :class:`~hgraph.factor.Factor` over the graph's
        nodes), a mapping ``experiment -> Factor`` (keys ``()``/``"P(V)"`` for the joint and
        ``"do(Z)"``/``("Z",)`` for experiments, whose Factors hold ``P(v \\ z | do(z))`` over all
        observed variables, as :meth:`hgraph.DiscreteSCM.do_table`), or an object with
        ``joint()`` and ``do_table(z)`` such as a :class:`~hgraph.DiscreteSCM` (tables are then
        computed only for the distributions the estimand reads).

        Returns a Factor over the query's variables (outcome, treatment, given; counterfactual
        names such as ``Y_{X=1}`` for counterfactual queries) except those with fixed values
        (from the query or ``values``); a fully specified query gives a scalar Factor.
        Conditionals on zero-probability values are 0.
        """
        t = tables if isinstance(tables, Tables) else Tables(tables)
        fixed = self.query.value_map
        expr = self.expr
        if values:
            unknown = [k for k in values if k not in self.query.variables]
            if unknown:
                raise KeyError(f"values given for {unknown}, which are not variables of {self.query}")
            if self.query.is_counterfactual:
                again = [k for k in values if k in fixed]
                if again:
                    raise KeyError(f"{self.query} already fixes {again}; identify a new query for other "
                                   "counterfactual values (ID* depends on them)")
            fixed = dict(fixed)
            fixed.update({k: int(v) for k, v in values.items()})
            base = self.expr if self.query.is_counterfactual else self.symbolic
            expr = substitute(base, fixed)
        cards = self._cards(t)
        f = evaluate(expr, t, cards)
        arb = [v for v in f.vars if v in self.arbitrary]
        if arb:
            f = f.reduce({v: 0 for v in arb})
        target = [v for v in self.query.variables if v not in fixed]
        extra = [v for v in f.vars if v not in target]
        if extra:
            raise RuntimeError(f"internal error: the estimand has unexpected free variables {extra}")
        for v in target:
            if v not in f.vars:
                f = f * Factor((v,), np.ones(cards[v]))
        return f.transpose(target) if target else f

    def _cards(self, t: Tables) -> dict[str, int]:
        cards = dict(t.cards())
        q = self.query
        if q.is_counterfactual:
            for c in q.cf_outcome + q.cf_given:
                if c.var in cards:
                    cards.setdefault(c.name, cards[c.var])
        return _CardMap(cards, self.graph)

    def probability(self, tables, values: Mapping[str, int] | None = None) -> float:
        """The value of a fully specified query (every variable has a value)."""
        f = self.evaluate(tables, values)
        if f.vars:
            raise ValueError(f"the query leaves {list(f.vars)} free; give their values")
        return float(f.values)


class _CardMap(dict):
    """Cardinalities of variables; symbols such as ``Y_{X=1}`` or ``W'`` fall back to their
    variable's cardinality."""

    def __init__(self, cards, graph):
        super().__init__(cards)
        self._graph = graph

    def __missing__(self, key):
        base = key.split("_{")[0].rstrip("'")
        if base in self and base != key:
            return self[base]
        raise KeyError(key)
