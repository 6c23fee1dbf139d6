"""The recursion trace of the identification algorithms, as plain data.

Every call of ID (and of IDC, gID, ID*, IDC*) becomes one :class:`TraceNode`; recursive calls are
its ``children``.  The fields name the objects of Shpitser & Pearl's ID (Algorithm 6 in the ID-GEN
paper, Rahman et al. 2024), so ID-GEN can replay the recursion:

* lines 1 and 6 list the conditional models to train (``factors``: one :class:`TraceFactor` per
  variable, with the inputs ``v_π^{(i-1)}`` taken in the topological order ``order`` of
  ``\\hat G``, which includes the interventions ``hat_x`` applied by earlier line-7 updates);
* line 4 lists the c-components ``S_1 .. S_k`` of ``G \\ X`` (one child per component);
* line 7 gives ``S``, ``S'`` (``super_component``), ``X_Z = X \\ S'`` (``x_z``, the interventions
  that ID-GEN's Update applies to the training data) and the factors of
  ``P' = Π_{V_i ∈ S'} P(V_i | V_π^{(i-1)} ∩ S', v_π^{(i-1)} \\ S')``; its child is the call on
  ``G[S']`` whose ``hat_x`` includes ``x_z``;
* line 5 (failure) carries the :class:`Hedge`.

``to_dict()`` gives JSON-ready data; ``str()`` a readable indented rendering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TraceFactor", "Hedge", "TraceNode"]


def _fmt(names) -> str:
    return "{" + ", ".join(names) + "}"


@dataclass
class TraceFactor:
    """One conditional ``P(variable | given)`` of a product (ID lines 1, 6 and 7).

    ``given`` is the conditioning set that appears in the estimand (``v_π^{(i-1)}`` reduced to the
    variable's c-component and its parents, Tian & Pearl 2002, Lemma 4); ``inputs`` is the full
    ``v_π^{(i-1)}`` of ID-GEN's ConditionalGMs: every earlier variable of ``order`` (``hat_x``
    included).  Both sets give the same conditional distribution.
    """

    variable: str
    given: tuple[str, ...]
    inputs: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"variable": self.variable, "given": list(self.given), "inputs": list(self.inputs)}

    def __str__(self) -> str:
        return f"P({self.variable}" + (f" | {', '.join(self.given)}" if self.given else "") + ")"


@dataclass
class Hedge:
    """A hedge (Shpitser & Pearl 2006, Definition 5): two R-rooted c-forests ``F' ⊂ F`` with
    ``F ∩ X ≠ ∅ = F' ∩ X``, given by their node sets; spanning forests rooted at ``roots`` exist in
    the graphs induced on them.  It comes from ID's line 5 in the call ``ID(y', x', G[F])``:
    ``roots`` are the sinks of ``G[F']`` (a subset of ``y'``) and ``x`` is ``x' ∩ F`` (the query's
    treatment meets ``F`` too).  ``experiment`` is the do-set of the distribution the failed attempt used
    (``()`` for P(V)); ``graph`` the edge string of ``G[F]``."""

    f: tuple[str, ...]
    f_prime: tuple[str, ...]
    roots: tuple[str, ...]
    x: tuple[str, ...] = ()
    experiment: tuple[str, ...] = ()
    graph: str = ""

    def to_dict(self) -> dict:
        return {"F": list(self.f), "F_prime": list(self.f_prime), "roots": list(self.roots),
                "x": list(self.x), "experiment": list(self.experiment), "graph": self.graph}

    def __str__(self) -> str:
        s = f"F = {_fmt(self.f)}, F' = {_fmt(self.f_prime)}"
        if self.experiment:
            s += f" (using P(V | do({', '.join(self.experiment)})))"
        return s


@dataclass
class TraceNode:
    """One call of an identification algorithm.

    Fields (``()`` when a field does not apply to the line that fired):

    ``algorithm``  "ID", "IDC", "ID*" or "IDC*"; ``line`` the line that fired (ID: 1..7).
    ``y``, ``x``   the outcome and intervention sets of the call.
    ``nodes``      the node set of the call's graph (topological order).
    ``order``      the topological order π used for ``v_π^{(i-1)}``: the nodes of ``\\hat G``
                   (``nodes`` plus ``hat_x``) in the original graph's topological order.
    ``hat_x``      interventions applied by earlier line-7 steps (ID-GEN's ``\\hat X``): the
                   distribution of this call is ``P(V | do(hat_x))`` of the experiment.
    ``experiment`` the do-set of the available distribution the call reads (``()`` = P(V)).
    ``dropped``    line 2: ``V \\ An(Y)``, marginalised.
    ``added``      line 3: ``W``, added to the interventions; IDC: conditioning variables moved
                   into ``do()`` by rule 2.
    ``components`` line 4: ``C(G \\ X) = S_1..S_k``; lines 6, 7: ``(S,)``.
    ``super_component`` line 7: ``S'``.   ``x_z``  line 7: ``X \\ S'``.
    ``factors``    lines 1, 6: the product ``Π P(v_i | v_π^{(i-1)})``; line 7: the factors of
                   ``P'``.  ``summed`` lines 1, 4, 6: the summed variables.
    ``hedge``      line 5: the hedge.   ``given``  IDC/IDC*: the remaining conditioning set.
    ``event``      ID*/IDC*: the counterfactual event (text).   ``note``  free text.
    ``estimand``   the expression this call returns (an :class:`~hgraph.identify.expr.Expr`).
    ``children``   the recursive calls, in order.
    """

    algorithm: str
    line: int
    y: tuple[str, ...] = ()
    x: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    order: tuple[str, ...] = ()
    hat_x: tuple[str, ...] = ()
    experiment: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    components: tuple[tuple[str, ...], ...] = ()
    super_component: tuple[str, ...] = ()
    x_z: tuple[str, ...] = ()
    factors: tuple[TraceFactor, ...] = ()
    summed: tuple[str, ...] = ()
    hedge: Hedge | None = None
    given: tuple[str, ...] = ()
    event: str = ""
    note: str = ""
    estimand: Any = field(default=None, repr=False, compare=False)
    children: list["TraceNode"] = field(default_factory=list)

    # ------------------------------------------------------------------ traversal
    def walk(self):
        """This node and all descendants, depth first."""
        yield self
        for c in self.children:
            yield from c.walk()

    def lines(self) -> list[int]:
        """The lines fired, depth first."""
        return [n.line for n in self.walk()]

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict:
        d: dict[str, Any] = {"algorithm": self.algorithm, "line": self.line, "y": list(self.y), "x": list(self.x),
                             "nodes": list(self.nodes), "order": list(self.order), "hat_x": list(self.hat_x),
                             "experiment": list(self.experiment)}
        for name in ("dropped", "added", "super_component", "x_z", "summed", "given"):
            d[name] = list(getattr(self, name))
        d["components"] = [list(c) for c in self.components]
        d["factors"] = [f.to_dict() for f in self.factors]
        d["hedge"] = self.hedge.to_dict() if self.hedge is not None else None
        d["event"] = self.event
        d["note"] = self.note
        d["estimand"] = str(self.estimand) if self.estimand is not None else None
        d["children"] = [c.to_dict() for c in self.children]
        return d

    def summary(self) -> str:
        """One line describing this call."""
        head = f"{self.algorithm} line {self.line}: "
        if self.algorithm in ("ID*", "IDC*"):
            q = self.event or "?"
        else:
            q = f"P({', '.join(self.y)}" + (f" | do({', '.join(self.x)})" if self.x else "") + \
                (f", {', '.join(self.given)}" if self.given else "") + ")"
        parts = [q]
        if self.nodes and self.algorithm in ("ID",):
            parts.append(f"in G[{', '.join(self.nodes)}]")
        if self.hat_x:
            parts.append(f"hat_x={_fmt(self.hat_x)}")
        if self.experiment:
            parts.append(f"data P(V | do({', '.join(self.experiment)}))")
        detail = []
        if self.dropped:
            detail.append(f"drop non-ancestors {_fmt(self.dropped)}")
        if self.added:
            detail.append(("rule 2 moves " if self.algorithm == "IDC" else "add interventions ") + _fmt(self.added))
        if self.line == 4 and self.algorithm == "ID":
            detail.append("c-components " + ", ".join(_fmt(c) for c in self.components))
        if self.super_component:
            detail.append(f"S={_fmt(self.components[0]) if self.components else '{}'} ⊂ S'={_fmt(self.super_component)}, "
                          f"X_Z={_fmt(self.x_z)}")
        if self.factors:
            # the factors are conditionals of P(V | do(hat_x)) (ID-GEN's dataset D')
            sub = f"_{{{', '.join(self.hat_x)}}}" if self.hat_x else ""
            detail.append("factors " + " ".join(f"P{sub}" + str(f)[1:] for f in self.factors))
        if self.summed:
            detail.append(f"sum over {_fmt(self.summed)}")
        if self.hedge is not None:
            detail.append(f"FAIL, hedge {self.hedge}")
        if self.note:
            detail.append(self.note)
        s = head + " ".join(parts)
        if detail:
            s += " -- " + "; ".join(detail)
        return s

    def render(self, indent: str = "  ") -> str:
        out = []

        def rec(n, depth):
            out.append(indent * depth + n.summary())
            for c in n.children:
                rec(c, depth + 1)

        rec(self, 0)
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()
