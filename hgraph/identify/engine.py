"""ID, IDC and gID on the bitset graph of :mod:`hgraph.identify.lite`.

Algorithms (line numbers as in the papers; the docstrings of the methods cite them):

* **ID** (Shpitser & Pearl 2006, Fig. 3; Algorithm 6 of the ID-GEN paper) for ``P_x(y)``;
* **IDC** (Shpitser & Pearl 2006b, Fig. 4; Algorithm 7 of the ID-GEN paper) for ``P_x(y | z)``:
  conditioning variables are moved into the intervention by rule 2 of do-calculus, then
  ``P_x(y | z) = P'/Σ_y P'`` with ``P' = ID(y ∪ z, x)``;
* **gID** (Lee, Correa & Bareinboim 2019, Alg. 1) when experiments ``P(V | do(Z_j))`` are available
  besides (or instead of) ``P(V)``.  With only ``P(V)`` gID *is* ID: its line 1 is ID's line 1,
  lines 2-4 are ID's, and its line 5 runs ``subID`` = ID's lines 1, 2, 5, 6, 7 on the observational
  distribution; the trace therefore uses ID's line numbers throughout.

Representation (why this is fast)
---------------------------------
A recursion step carries three bitmasks (Y, X and its node set V) and a *distribution object*;
induced subgraphs are never built.  Distributions:

* :class:`_TableDist` -- an available table ``P_z(V)`` (``z = ∅`` for P(V)); its conditionals are
  single terms ``P_z(v_i | ·)``;
* :class:`_ProductDist` -- the ``P'`` built by line 7, a product of factors over ``S'``.

A conditional ``P(v_i | v_π^{(i-1)})`` (lines 6, 7) is written with Tian & Pearl's (2002, Lemma 4)
reduced conditioning set: the c-component ``T_i`` of ``v_i`` in ``G[V ∩ π_{≤ i}]`` and its parents.
For a line-7 distribution it is ``Q[A]/Q[A \\ {v_i}]`` with ``A`` the ancestral closure of ``T_i``;
``Q[A]`` is the product of the factors after dropping (telescoping) every factor whose variable no
remaining factor mentions, scanned in reverse topological order with bitmasks.

Every step is polynomial: ancestors, c-components and m-separation are linear-time bitmask
searches; ID visits O(|V|) calls per line-4 split and O(|V|^2) overall (Shpitser & Pearl 2006,
Thm 6).  IDC's rule-2 loop runs at most |Z| rounds of |Z| m-separation tests (the maximal movable
set is unique, Shpitser & Pearl 2006b, Thm 4, so the greedy loop never backtracks).  gID tries each
available experiment at line 5: O(#experiments) subID runs per call.  Nothing is exponential in
the graph size; the estimand itself is at most quadratic in |V|.
"""

from __future__ import annotations

from .expr import (
    Expr,
    PTerm,
    make_fraction,
    make_product,
    make_sum,
)
from .lite import LiteGraph, bits
from .trace import Hedge, TraceFactor, TraceNode

__all__ = ["Engine", "Fail", "RawNode", "materialize"]


class RawNode:
    """A recursion step recorded with bitmasks (cheap); :func:`materialize` names it."""

    __slots__ = ("algorithm", "line", "y", "x", "v", "hat_x", "z", "fields", "factors", "estimand", "children")

    def __init__(self, algorithm, line, y, x, v, hat_x, z, fields, factors, estimand, children):
        self.algorithm = algorithm
        self.line = line
        self.y, self.x, self.v, self.hat_x, self.z = y, x, v, hat_x, z
        self.fields = fields
        self.factors = factors
        self.estimand = estimand
        self.children = children


_MASK_FIELDS = ("dropped", "added", "super_component", "x_z", "summed", "given")


def materialize(raw, g: LiteGraph):
    """Convert a tree of :class:`RawNode` (possibly under finished :class:`TraceNode`) into
    :class:`TraceNode` objects with node names."""
    if raw is None:
        return None
    if isinstance(raw, TraceNode):
        raw.children = [materialize(c, g) for c in raw.children]
        return raw
    nm = g.names_of
    kw = {}
    for k, val in raw.fields.items():
        if k in _MASK_FIELDS:
            kw[k] = nm(val)
        elif k == "components":
            kw[k] = tuple(nm(c) for c in val)
        else:
            kw[k] = val
    factors = tuple(TraceFactor(g.names[i], nm(given), nm(scope & ((1 << i) - 1)))
                    for i, given, scope in raw.factors)
    return TraceNode(raw.algorithm, raw.line, nm(raw.y), nm(raw.x), nm(raw.v), nm(raw.v | raw.hat_x),
                     nm(raw.hat_x), experiment=nm(raw.z), factors=factors, estimand=raw.estimand,
                     children=[materialize(c, g) for c in raw.children], **kw)


class Fail(Exception):
    """Internal: the recursion met ID's line 5 (or gID's thicket)."""

    def __init__(self, hedges, trace=None):
        super().__init__("not identifiable")
        self.hedges = hedges
        self.trace = trace


# ------------------------------------------------------------------------------- distributions
class _TableDist:
    """An available distribution ``P(V \\ Z | do(Z))`` restricted to the nodes outside ``Z``.

    ``do_slots`` fixes the symbol of every intervened variable: treatment variables keep their
    own symbol, experiment variables outside the query's scope get the arbitrary value 0
    (Lee et al. 2019, the ``assign`` of line 5)."""

    __slots__ = ("g", "z", "do_slots", "names")

    def __init__(self, g: LiteGraph, z: int, scope: int):
        self.g = g
        self.z = z
        nm = g.names
        self.do_slots = tuple((nm[i], nm[i] if (scope >> i) & 1 else 0) for i in bits(z))
        self.names = g.names_of(z)

    def cond(self, i: int, a: int) -> tuple[Expr, int]:
        g = self.g
        ai = a & ((2 << i) - 1)
        t = g.district(i, ai)
        given = (t | g.parents_of(t, ai)) & ~(1 << i)
        nm = g.names
        term = PTerm(((nm[i], nm[i]),), tuple((nm[j], nm[j]) for j in bits(given)), self.do_slots)
        return term, given

    def marginal(self, y: int, a: int) -> Expr:
        nm = self.g.names
        return PTerm(tuple((nm[j], nm[j]) for j in bits(y)), (), self.do_slots)


class _ProductDist:
    """``P' = Π_{V_i ∈ S'} P(V_i | V_π^{(i-1)} ∩ S', v_π^{(i-1)} \\ S')`` of ID's line 7."""

    __slots__ = ("g", "s", "factors", "deps", "base", "_q")

    def __init__(self, g: LiteGraph, s: int, factors: dict[int, Expr], base):
        self.g = g
        self.s = s
        self.factors = factors
        self.base = base  # the table distribution underneath (for the experiment label)
        idx = g.index
        self.deps = {}
        for k, f in factors.items():
            m = 0
            for sym in f.free:
                j = idx.get(sym)
                if j is not None:
                    m |= 1 << j
            self.deps[k] = m & s & ~(1 << k)
        self._q: dict[int, Expr] = {}

    @property
    def z(self) -> int:
        return self.base.z

    def q(self, b: int) -> Expr:
        """``Σ_{S' \\ B} Π_k F_k`` (``Q[B]`` when ``B`` is ancestral in ``G[S']``)."""
        got = self._q.get(b)
        if got is not None:
            return got
        keep = b
        ref = 0
        for k in _desc_bits(self.s):
            if (b >> k) & 1 or (ref >> k) & 1:
                keep |= 1 << k
                ref |= self.deps[k]
        summed = keep & ~b
        fs = [self.factors[k] for k in bits(keep)]
        nm = self.g.names
        expr = make_sum([nm[k] for k in bits(summed)], make_product(fs))
        self._q[b] = expr
        return expr

    def cond(self, i: int, a: int) -> tuple[Expr, int]:
        g = self.g
        ai = a & ((2 << i) - 1)
        t = g.district(i, ai)
        given = (t | g.parents_of(t, ai)) & ~(1 << i)
        anc = g.ancestors(t, ai)
        expr = make_fraction(self.q(anc), self.q(anc & ~(1 << i)))
        return expr, given

    def marginal(self, y: int, a: int) -> Expr:
        return self.q(y)


def _desc_bits(mask: int):
    """Set bits of ``mask`` in decreasing order."""
    while mask:
        k = mask.bit_length() - 1
        yield k
        mask ^= 1 << k


def _edge_text(g: LiteGraph, f: int) -> str:
    """Edge string of the induced subgraph G[f] (directed edges, then confounders)."""
    nm = g.names
    parts = [f"{nm[j]} -> {nm[i]}" for i in bits(f) for j in bits(g.pa[i] & f)]
    if g.admg is not None:
        inside = set(g.names_of(f))
        for name, members in g.admg.latent_groups.items():
            r = [v for v in g.names_of(f) if v in members and v in inside]
            if len(r) == 2:
                parts.append(f"{r[0]} <-> {r[1]}")
            elif len(r) > 2:
                parts.append(f"{name}: {', '.join(r)}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------- engine
class Engine:
    """One identification problem: a graph and the available distributions.

    ``experiments`` is a list of do-sets (bitmasks); ``0`` stands for the observational P(V).
    """

    def __init__(self, g: LiteGraph, experiments: list[int], trace: bool = True):
        self.g = g
        self.experiments = list(dict.fromkeys(experiments))
        self.trace_on = trace
        self.algorithm = "ID"

    # ------------------------------------------------------------------ helpers
    def _node(self, line, y, x, v, hat_x=0, z=0, factors=(), estimand=None, children=(), **fields):
        return RawNode(self.algorithm, line, y, x, v, hat_x, z, fields, factors, estimand, list(children))

    def _factors(self, dist, members: int, a: int, hat_x: int) -> tuple[list[Expr], list]:
        exprs, tf = [], []
        scope = a | hat_x
        for i in bits(members):
            e, given = dist.cond(i, a)
            exprs.append(e)
            tf.append((i, given, scope))
        return exprs, tf

    def materialize(self, raw) -> TraceNode | None:
        """Turn the bitmask records of a recursion into :class:`TraceNode` objects."""
        return materialize(raw, self.g)

    # ------------------------------------------------------------------ gID / ID
    def id(self, y: int, x: int, v: int) -> tuple[Expr, TraceNode]:
        """gID(y, x, Z, G[v]) (Lee, Correa & Bareinboim 2019, Alg. 1); ID when Z = {∅}.

        ``v`` is ancestral in the graph; ``y``, ``x`` ⊆ ``v`` are disjoint."""
        g = self.g
        # line 1: X = Z ∩ V for an available experiment Z (ID line 1: x = ∅ and P(V) available)
        for z in self.experiments:
            if z & v == x:
                dist = _TableDist(g, z, v)
                expr = dist.marginal(y, v)
                node = None
                if self.trace_on:
                    rest = v & ~z
                    _, tf = self._factors(dist, rest, rest, z & v)
                    node = self._node(1, y, x, v, hat_x=z & v, z=z, factors=tf, summed=rest & ~y, estimand=expr)
                return expr, node
        # line 2: restrict to the ancestors of Y
        an = g.ancestors(y, v)
        if an != v:
            expr, child = self.id(y, x & an, an)
            node = self._node(2, y, x, v, dropped=v & ~an, estimand=expr,
                              children=[child]) if self.trace_on else None
            return expr, node
        # line 3: W = (V \ X) \ An(Y)_{G_{bar X}}: add W to the interventions
        w = (v & ~x) & ~g.ancestors(y, v, cut=x)
        if w:
            # P_x(y) = P_{x,w}(y) for every value w (rule 3): W stays a free symbol of the
            # estimand, whose value is arbitrary (Estimand.arbitrary; evaluation uses 0)
            expr, child = self.id(y, x | w, v)
            node = self._node(3, y, x, v, added=w, estimand=expr, children=[child]) if self.trace_on else None
            return expr, node
        # line 4: C(G \ X) = {S_1, ..., S_k}, k > 1
        comps = g.c_components(v & ~x)
        if len(comps) > 1:
            subs, children = [], []
            for s in comps:
                e, c = self.id(s, v & ~s, v)
                subs.append(e)
                children.append(c)
            summed = v & ~(y | x)
            expr = make_sum(g.names_of(summed), make_product(subs))
            node = self._node(4, y, x, v, components=comps, summed=summed, estimand=expr,
                              children=children) if self.trace_on else None
            return expr, node
        # line 5 (gID): one c-component S = V \ X; try every experiment with Z ∩ V ⊆ X
        hedges = []
        traces = []
        for z in self.experiments:
            if z & v & ~x:
                continue
            dist = _TableDist(g, z, v)
            try:
                expr, node = self.sub_id(y, x & ~z, v & ~z, dist, z & v)
            except Fail as f:
                hedges.extend(f.hedges)
                traces.append(f.trace)
                continue
            if node is not None and hedges:
                node.fields["note"] = "after failing with " + "; ".join(str(h) for h in hedges)
            return expr, node
        if not hedges:  # no experiment is compatible with X at all
            s = v & ~x
            hedges.append(self._hedge(v, s, x, 0))
        raise Fail(hedges, traces[0] if traces else None)

    def sub_id(self, y: int, x: int, v: int, dist, hat_x: int) -> tuple[Expr, TraceNode]:
        """subID of gID = ID's lines 1, 2, 5, 6, 7 on one distribution (``G[v]`` has the single
        c-component ``S = V \\ X`` after removing X)."""
        g = self.g
        z = dist.z
        # line 1: x = ∅ -> Σ_{v \ y} P(v)
        if not x:
            expr = dist.marginal(y, v)
            node = None
            if self.trace_on:
                _, tf = self._factors(dist, v, v, hat_x)
                node = self._node(1, y, x, v, hat_x, z, factors=tf, summed=v & ~y, estimand=expr)
            return expr, node
        # line 2: V \ An(Y) ≠ ∅ -> ID(y, x ∩ An(Y), Σ_{V \ An(Y)} P, G[An(Y)])
        an = g.ancestors(y, v)
        if an != v:
            expr, child = self.sub_id(y, x & an, an, dist, hat_x)
            node = self._node(2, y, x, v, hat_x, z, dropped=v & ~an, estimand=expr,
                              children=[child]) if self.trace_on else None
            return expr, node
        s = v & ~x
        # line 5: C(G) = {G} -> FAIL(G, G ∩ S)
        if g.is_single_district(v):
            hedge = self._hedge(v, s, x, dist.z)
            node = self._node(5, y, x, v, hat_x, z, components=[s], hedge=hedge) if self.trace_on else None
            raise Fail([hedge], node)
        low = s & -s
        s_prime = g.district(low.bit_length() - 1, v)
        # line 6: S ∈ C(G) -> Σ_{s \ y} Π_{V_i ∈ S} P(v_i | v_π^{(i-1)})
        if s_prime == s:
            exprs, tf = self._factors(dist, s, v, hat_x)
            expr = make_sum(g.names_of(s & ~y), make_product(exprs))
            node = self._node(6, y, x, v, hat_x, z, components=[s], factors=tf, summed=s & ~y,
                              estimand=expr) if self.trace_on else None
            return expr, node
        # line 7: S ⊂ S' ∈ C(G) -> ID(y, x ∩ S', Π_{V_i ∈ S'} P(V_i | V_π^{(i-1)} ∩ S', v_π^{(i-1)} \ S'), G[S'])
        exprs, tf = self._factors(dist, s_prime, v, hat_x)
        factors = dict(zip(bits(s_prime), exprs))
        base = dist.base if isinstance(dist, _ProductDist) else dist
        new = _ProductDist(g, s_prime, factors, base)
        x_z = x & ~s_prime
        expr, child = self.sub_id(y, x & s_prime, s_prime, new, hat_x | x_z)
        node = self._node(7, y, x, v, hat_x, z, components=[s], super_component=s_prime, x_z=x_z,
                          factors=tf, estimand=expr, children=[child]) if self.trace_on else None
        return expr, node

    def _hedge(self, f: int, f_prime: int, x: int, z: int) -> Hedge:
        """The hedge of a failing call ``ID(y', x', G[F])`` (ID line 5): ``F`` = the call's nodes,
        ``F'`` = ``S``, the call's nodes outside ``x'``.  The roots ``R`` are the sinks of
        ``G[F']``; they lie in ``y'`` and every node of ``F'`` (``F``) reaches them inside ``G[F']``
        (``G[F]``), so spanning R-rooted c-forests exist in both."""
        g = self.g
        roots = 0
        for i in bits(f_prime):
            if not (g.ch[i] & f_prime):
                roots |= 1 << i
        names = g.names_of(f)
        return Hedge(names, g.names_of(f_prime), g.names_of(roots), g.names_of(x & f), g.names_of(z),
                     _edge_text(g, f))

    # ------------------------------------------------------------------ IDC
    def idc(self, y: int, x: int, z: int) -> tuple[Expr, TraceNode]:
        """IDC(y, x, z, P, G) (Shpitser & Pearl 2006b, Fig. 4; ID-GEN paper Algorithm 7).

        Lines 3-4: while some ``α ∈ Z`` has ``(Y ⟂ α | X, Z \\ {α})`` in ``G_{bar X, underline α}``,
        move it into the intervention (rule 2).  Lines 6-7: ``P' = ID(y ∪ z, x)``,
        return ``P' / Σ_y P'``.  The loop performs at most |Z|^2 m-separation tests."""
        g = self.g
        moved = 0
        x0 = x
        scope = g.ancestors(y | x | z, g.full)
        changed = True
        while changed and z:
            changed = False
            for i in bits(z):
                a = 1 << i
                if g.d_separated(y, a, x | (z & ~a), scope, cut_in=x, cut_out=a):
                    x |= a
                    z &= ~a
                    moved |= a
                    changed = True
                    break
        if not z:
            expr, child = self.id(y, x, g.full)
        else:
            joint, child = self.id(y | z, x, g.full)
            expr = make_fraction(joint, make_sum(g.names_of(y), joint))
        node = None
        if self.trace_on:
            node = RawNode("IDC", 7, y, x0, g.full, 0, 0, {"added": moved, "given": z}, (), expr, [child])
        return expr, node
