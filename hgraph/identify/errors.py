"""Exceptions of the identification engine."""

from __future__ import annotations

from ..admg import GraphError

__all__ = ["NotIdentifiable", "QueryError"]


class QueryError(GraphError):
    """A malformed query or a query naming variables the graph does not have.

    A subclass of :class:`~hgraph.GraphError`, so the CLI reports it with exit status 2.
    """


class NotIdentifiable(ValueError):
    """The query is not identifiable from the available distributions.

    Attributes
    ----------
    query:
        The query, as text.
    hedge:
        The first :class:`~hgraph.identify.trace.Hedge` found (``None`` for counterfactual
        conflicts); ``hedges`` lists one per available distribution that was tried (a thicket
        when there are several, Lee, Correa & Bareinboim 2019).
    f, f_prime:
        Node sets of the hedge's two c-forests ``F`` and ``F'`` (``hedge.f``, ``hedge.f_prime``).
    conflict:
        For counterfactual queries (ID*, line 7): the c-component of the counterfactual graph and
        the conflicting value assignments, as text; ``None`` otherwise.
    trace:
        The recursion trace up to the failure (a :class:`~hgraph.identify.trace.TraceNode`),
        when available.
    """

    def __init__(self, message: str, *, query: str = "", hedges=(), conflict: str | None = None,
                 conflicts=(), component=(), trace=None):
        super().__init__(message)
        self.query = query
        self.hedges = list(hedges)
        self.hedge = self.hedges[0] if self.hedges else None
        self.conflict = conflict
        self.conflicts = list(conflicts)
        self.component = tuple(component)
        self.trace = trace

    @property
    def f(self) -> tuple[str, ...]:
        return self.hedge.f if self.hedge is not None else ()

    @property
    def f_prime(self) -> tuple[str, ...]:
        return self.hedge.f_prime if self.hedge is not None else ()
