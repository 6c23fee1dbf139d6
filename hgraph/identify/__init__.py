"""Identification of causal queries: ID, IDC, gID (surrogate experiments), ID* and IDC*.

>>> from hgraph.identify import identify
>>> e = identify("X -> M; M -> Y; X <-> Y", "P(Y | do(X))")
>>> print(e)
Σ_{M} P(M | X) Σ_{X'} P(X') P(Y | X', M)

The estimand prints as text (``str``) and LaTeX (``e.latex()``), evaluates on discrete tables
(``e.evaluate(scm)`` with a :class:`hgraph.DiscreteSCM`, a joint Factor or a mapping of
experiment tables) and carries the recursion trace (``e.trace``) that ID-GEN replays.
Non-identifiable queries raise :class:`NotIdentifiable` naming the hedge (or, for
counterfactuals, the conflict).  See :mod:`hgraph.identify.engine` for the algorithms and costs.
"""

from .api import identify, parse_available
from .errors import NotIdentifiable, QueryError
from .estimand import Estimand
from .expr import (
    Expr,
    Fraction,
    Indicator,
    One,
    Product,
    PTerm,
    Sum,
    Tables,
    Zero,
    make_fraction,
    make_product,
    make_sum,
)
from .query import CfVar, Query, make_query, parse_query
from .trace import Hedge, TraceFactor, TraceNode

# ``hgraph.identify`` is both this subpackage and the function: the module is callable, so
# ``from hgraph import identify; identify(g, "P(Y | do(X))")`` and ``import
# hgraph.identify.engine`` both work.
import inspect as _inspect
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return identify(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
__signature__ = _inspect.signature(identify)

__all__ = [
    "identify", "parse_query", "parse_available", "make_query", "Query", "CfVar",
    "NotIdentifiable", "QueryError", "Estimand",
    "Expr", "PTerm", "Sum", "Product", "Fraction", "Indicator", "One", "Zero", "Tables",
    "make_sum", "make_product", "make_fraction",
    "TraceNode", "TraceFactor", "Hedge",
]
