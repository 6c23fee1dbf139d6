"""Pearl's do-calculus rules as graphical predicates (Pearl 1995, Theorem 3).

Every rule reads: given the interventions ``do`` already in place and conditioning set ``Z``,

* rule 1 (insert/delete observations):  P(Y | do(D), X, Z) = P(Y | do(D), Z)
  if (Y ⟂ X | D, Z) in G_{bar D};
* rule 2 (action/observation exchange): P(Y | do(D), do(X), Z) = P(Y | do(D), X, Z)
  if (Y ⟂ X | D, Z) in G_{bar D, underline X};
* rule 3 (insert/delete actions):       P(Y | do(D), do(X), Z) = P(Y | do(D), Z)
  if (Y ⟂ X | D, Z) in G_{bar D, bar X(Z)}, X(Z) = X \\ An(Z) in G_{bar D}.
"""

from __future__ import annotations

from .admg import ADMG

__all__ = ["rule1", "rule2", "rule3"]


def _prep(g: ADMG, y, x, z, do):
    y = g.check_nodes(y, "rule: Y")
    x = g.check_nodes(x, "rule: X")
    z = g.check_nodes(z, "rule: Z")
    d = g.check_nodes(do, "rule: do")
    return y, x, z, d


def rule1(g: ADMG, y, x, z=(), do=()) -> bool:
    """True iff P(Y | do(D), X, Z) = P(Y | do(D), Z) follows from rule 1."""
    y, x, z, d = _prep(g, y, x, z, do)
    return g.do(d).is_d_separated(y, x, z | d)


def rule2(g: ADMG, y, x, z=(), do=()) -> bool:
    """True iff P(Y | do(D), do(X), Z) = P(Y | do(D), X, Z) follows from rule 2."""
    y, x, z, d = _prep(g, y, x, z, do)
    return g.do(d).cut_outgoing(x).is_d_separated(y, x, z | d)


def rule3(g: ADMG, y, x, z=(), do=()) -> bool:
    """True iff P(Y | do(D), do(X), Z) = P(Y | do(D), Z) follows from rule 3."""
    y, x, z, d = _prep(g, y, x, z, do)
    gd = g.do(d)
    xz = x - gd.ancestors(z) if z else x
    return gd.do(xz).is_d_separated(y, x, z | d)
