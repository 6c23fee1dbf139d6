"""ID* and IDC*: identification of counterfactual queries (Shpitser & Pearl 2007; 2008, Figs. 8-10).

A counterfactual event is a conjunction of ``var_{world} = value`` where a *world* is a set of
interventions ``{X: x}``.  Values (and intervention values) are integers or *symbols*: the free
variables of the query (``P(Y_{X=1} | X=0)`` has the free symbol ``Y_{X=1}``) or the variables
summed at ID*'s line 5.  Symbols are compared syntactically, so a test such as line 7's
``x ≠ x'`` treats two different symbols as possibly different (a conservative FAIL) and an
event that forces two symbols equal becomes an indicator ``[a = b]``.

Steps (line numbers of ID*, Shpitser & Pearl 2008, Fig. 8):

1. ``γ = ∅``: 1.
2. ``x_{x'} ∈ γ`` (a variable intervened on itself with another value): 0.
3. ``x_x ∈ γ``: drop it (tautology).
4. ``make-cg``: the counterfactual graph (the parallel-worlds graph with every world's subscript
   restricted to the ancestors of the variable, nodes merged by Lemma 24 in topological order,
   restricted to the ancestors of ``γ``); contradictory values on merged nodes: 0.
5. several c-components ``S^i``: ``Σ_{v(G') \\ γ'} Π_i ID*(G, s^i_{pa(s^i) \\ s^i})``: every node
   of ``S^i`` gets its parents outside ``S^i`` (with their values) added to its subscript, which by
   the exclusion restriction is the paper's ``s^i_{v(G') \\ s^i}``.
6-7. one c-component with a variable that is both set (``sub(S)``) and set or observed (``ev(S)``)
   to different values: FAIL (not identifiable, even from all experiments).
8. otherwise ``P_x(var(S))`` with ``x = ∪ sub(S)`` (without the variables of ``S`` themselves,
   which carry their values by consistency); nodes of ``S`` outside ``γ`` are summed out.

Each line-8 term is an interventional distribution; it is identified from the *available*
distributions (``P(V)`` and experiments) with gID, so the final estimand reads only available
tables.  ID*/IDC* are complete with respect to ``P_*`` (all experiments); identification from
``P(V)`` alone is sound here but, when a line-8 term is not identifiable from the available data,
the query is reported as not identifiable even in the rare cases where a cleverer combination of
terms would be (a complete method is Correa, Lee & Bareinboim 2021, ctfID).

Cost: the counterfactual graph has at most (number of distinct subscripts) x |V| nodes and
make-cg compares the copies of each variable pairwise, so every step is polynomial in the size of
the graph and of the query; each line-8 term costs one gID run (cached per term).

IDC* (Fig. 10): evidence ``δ`` is moved into the subscripts of ``γ`` by the counterfactual rule 2
(``(γ' ⟂ y_x | δ' \\ {y_x})`` in ``G'`` with the edges out of ``y_x`` cut; the action ``Y = y`` then
enters the subscript of every event downstream of ``y_x``, in ``γ'`` and in the rest of ``δ'``),
then ``P(γ | δ) = P'/Σ_γ P'`` with ``P' = ID*(γ' ∧ δ')``.  The values of ``γ`` are kept symbolic
until the end so that ``Σ_γ P'`` is ``P(δ)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..admg import ADMG
from .engine import Engine, Fail
from .errors import NotIdentifiable, QueryError
from .expr import (
    ONE,
    ZERO,
    Expr,
    Indicator,
    make_fraction,
    make_product,
    make_sum,
    substitute,
)
from .lite import LiteGraph, bits
from .trace import TraceNode

__all__ = ["Event", "CounterfactualEngine"]


@dataclass(frozen=True)
class Event:
    """``var_{world} = value``; ``world`` is a frozenset of ``(variable, value)``."""

    var: str
    world: frozenset
    value: object  # int or symbol

    def text(self) -> str:
        return _node_text(self.var, self.world) + f"={self.value}"


def _val_text(v) -> str:
    return str(v)


def _node_text(var: str, world) -> str:
    if not world:
        return var
    return var + "_{" + ",".join(f"{k}={_val_text(v)}" for k, v in sorted(world, key=lambda kv: kv[0])) + "}"


def _events_text(events) -> str:
    return " ∧ ".join(e.text() for e in events) if events else "∅"


class _Inconsistent(Exception):
    pass


_MISSING = object()


class _CFGraph:
    """The counterfactual graph G' of an event (result of make-cg)."""

    def __init__(self):
        self.nodes: list[tuple] = []  # (var, world) in topological order
        self.parents: dict[tuple, list[tuple]] = {}
        self.value: dict[tuple, object] = {}  # event values of the nodes in γ'
        self.indicators: list[Expr] = []
        self.rep: dict[tuple, tuple] = {}


class CounterfactualEngine:
    """ID*/IDC* on an ADMG; line-8 terms are identified by gID from ``experiments``."""

    def __init__(self, g: ADMG, lite: LiteGraph, engine: Engine, reserved=()):
        self.g = g
        self.lite = lite
        self.engine = engine
        self.pos = {v: i for i, v in enumerate(g.topological_order())}
        self.anc = {v: g.ancestors([v]) for v in g.nodes}
        self.used: set[str] = set(g.nodes) | set(reserved)
        self._sym: dict[tuple, str] = {}
        self._terms: dict[tuple, tuple] = {}
        self._canon_cache: dict = {}
        self.trace_on = engine.trace_on

    # ------------------------------------------------------------------ symbols
    def symbol(self, node) -> str:
        """The summation symbol of a counterfactual node (unique in this computation)."""
        s = self._sym.get(node)
        if s is None:
            base = _node_text(*node)
            s = base
            while s in self.used:
                s += "'"
            self.used.add(s)
            self._sym[node] = s
        return s

    def fresh(self, base: str) -> str:
        s = base
        while s in self.used:
            s += "'"
        self.used.add(s)
        return s

    def canon(self, world, var) -> frozenset:
        """The interventions of ``world`` that can affect ``var``: those on its ancestors in
        ``G_{bar dom(world)}`` (the others are irrelevant by the exclusion restrictions)."""
        if not world:
            return frozenset()
        key = (frozenset(k for k, _ in world), var)
        an = self._canon_cache.get(key)
        if an is None:
            lite = self.lite
            cut = lite.mask(key[0])
            an = set(lite.names_of(lite.ancestors(lite.mask([var]), lite.full, cut=cut)))
            self._canon_cache[key] = an
        return frozenset((k, v) for k, v in world if k in an and k != var)

    # ------------------------------------------------------------------ make-cg
    def make_cg(self, events: list[Event]) -> _CFGraph:
        """make-cg (Shpitser & Pearl 2008, Fig. 9): parallel worlds, merge by Lemma 24,
        restrict to the ancestors of the event.  Raises _Inconsistent."""
        g = self.g
        cg = _CFGraph()
        # nodes of the parallel-worlds graph that are ancestors of the events
        nodes: set[tuple] = set()
        stack = []
        for e in events:
            stack.append((e.var, self.canon(e.world, e.var)))
        while stack:
            nd = stack.pop()
            if nd in nodes:
                continue
            nodes.add(nd)
            var, world = nd
            wd = dict(world)
            for p in g.pa(var):
                if p not in wd:
                    stack.append((p, self.canon(world, p)))
        parent: dict[tuple, tuple] = {n: n for n in nodes}

        def find(n):
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        value: dict[tuple, object] = {}
        indicators: list[Expr] = []

        def set_value(n, val, var):
            old = value.get(n, None)
            if n not in value:
                value[n] = val
                return
            if old == val:
                return
            if not isinstance(old, str) and not isinstance(val, str):
                raise _Inconsistent()
            indicators.append(Indicator(var, old, val))

        for e in events:
            set_value((e.var, self.canon(e.world, e.var)), e.value, e.var)

        def pdesc(p, world):
            wd = dict(world)
            if p in wd:
                return ("c", wd[p])
            return ("n", find((p, self.canon(world, p))))

        def same(d1, d2) -> bool:
            if d1 == d2:
                return True
            v1 = d1[1] if d1[0] == "c" else value.get(d1[1], None)
            v2 = d2[1] if d2[0] == "c" else value.get(d2[1], None)
            if v1 is None or v2 is None:
                return False
            if d1[0] == "n" and d1[1] not in value:
                return False
            if d2[0] == "n" and d2[1] not in value:
                return False
            return v1 == v2

        by_var: dict[str, list[tuple]] = {}
        for n in nodes:
            by_var.setdefault(n[0], []).append(n)
        for var in sorted(by_var, key=self.pos.__getitem__):
            copies = sorted(by_var[var], key=lambda n: (len(n[1]), sorted(map(str, n[1]))))
            pas = g.sorted(g.pa(var))
            for i in range(len(copies)):
                a = find(copies[i])
                for j in range(i + 1, len(copies)):
                    b = find(copies[j])
                    if a == b:
                        continue
                    if all(same(pdesc(p, a[1]), pdesc(p, b[1])) for p in pas):
                        # merge b into a (a has the smaller world)
                        parent[b] = a
                        if b in value:
                            vb = value.pop(b)
                            set_value(a, vb, var)
        # G': representatives that are ancestors of the event nodes
        reps: dict[tuple, list[tuple]] = {}
        for n in nodes:
            r = find(n)
            if r not in reps:
                wd = dict(r[1])
                reps[r] = [find((p, self.canon(r[1], p))) for p in g.sorted(g.pa(r[0])) if p not in wd]
        keep = set()
        stack = [find((e.var, self.canon(e.world, e.var))) for e in events]
        while stack:
            n = stack.pop()
            if n in keep:
                continue
            keep.add(n)
            stack.extend(reps[n])
        cg.nodes = sorted(keep, key=lambda n: (self.pos[n[0]], sorted(map(str, n[1]))))
        cg.parents = {n: reps[n] for n in cg.nodes}
        cg.value = {n: v for n, v in value.items() if n in keep}
        cg.indicators = indicators
        cg.rep = {n: find(n) for n in nodes}
        return cg

    def _lite(self, cg: _CFGraph) -> LiteGraph:
        idx = {n: i for i, n in enumerate(cg.nodes)}
        sib = self.g.sib
        siblings = []
        for i, n in enumerate(cg.nodes):
            s = []
            for j, m in enumerate(cg.nodes):
                if j != i and (m[0] == n[0] or m[0] in sib(n[0])):
                    s.append(j)
            siblings.append(s)
        names = [str(i) for i in range(len(cg.nodes))]
        return LiteGraph.from_parts(names, [[idx[p] for p in cg.parents[n]] for n in cg.nodes], siblings)

    # ------------------------------------------------------------------ ID*
    def id_star(self, events: list[Event]) -> tuple[Expr, TraceNode]:
        """ID*(G, γ) (Shpitser & Pearl 2008, Fig. 8)."""
        text = _events_text(events)
        # line 1
        if not events:
            return ONE, self._tnode(1, text, ONE)
        # lines 2-3: self-intervened events
        inds = []
        rest = []
        for e in events:
            wd = dict(e.world)
            if e.var in wd:
                a, b = wd[e.var], e.value
                if a == b:
                    continue
                if not isinstance(a, str) and not isinstance(b, str):
                    return ZERO, self._tnode(2, text, ZERO, note=f"{e.text()} contradicts its own intervention")
                inds.append(Indicator(e.var, a, b))
                continue
            rest.append(e)
        if len(rest) < len(events):
            expr, child = self.id_star(rest)
            expr = make_product(inds + [expr])
            return expr, self._tnode(3, text, expr, [child], note="tautological events removed")
        # line 4: counterfactual graph
        try:
            cg = self.make_cg(events)
        except _Inconsistent:
            return ZERO, self._tnode(4, text, ZERO, note="inconsistent event (make-cg)")
        lite = self._lite(cg)
        comps = lite.c_components(lite.full)
        vals = {n: (cg.value[n] if n in cg.value else self.symbol(n)) for n in cg.nodes}
        # line 5: several c-components
        if len(comps) > 1:
            subs, children = [], []
            for comp in comps:
                members = [cg.nodes[i] for i in bits(comp)]
                sub_events = []
                for i in bits(comp):
                    n = cg.nodes[i]
                    # s^i_{v(G') \ s^i}: every node of S^i is evaluated with the nodes of G'
                    # outside S^i set to their values; only those upstream of it matter (its
                    # ancestors in G'), and the subscript is then reduced per variable (canon)
                    world = dict(n[1])
                    for j in bits(lite.ancestors(1 << i, lite.full) & ~comp):
                        m = cg.nodes[j]
                        old = world.get(m[0], _MISSING)
                        if old is _MISSING:
                            world[m[0]] = vals[m]
                        elif old != vals[m]:
                            comp_text = "{" + ", ".join(_node_text(*k) for k in members) + "}"
                            detail = (f"{_node_text(*n)} depends on {m[0]} through worlds where it takes "
                                      f"the values {old} and {vals[m]}")
                            node = self._tnode(5, text, None, note="FAIL: " + detail)
                            raise _Conflict(comp_text, detail, [m[0]], node)
                    sub_events.append(Event(n[0], frozenset(world.items()), vals[n]))
                e, c = self.id_star(sub_events)
                subs.append(e)
                children.append(c)
            summed = [vals[n] for n in cg.nodes if n not in cg.value]
            expr = make_product(cg.indicators + [make_sum(summed, make_product(subs))])
            node = self._tnode(5, text, expr, children,
                               note="c-components " + ", ".join(
                                   "{" + ", ".join(_node_text(*cg.nodes[i]) for i in bits(c)) + "}" for c in comps))
            return expr, node
        # lines 6-8: one c-component
        members = cg.nodes
        sub: dict[str, set] = {}
        for n in members:
            for k, v in n[1]:
                sub.setdefault(k, set()).add(v)
        ev: dict[str, set] = {k: set(v) for k, v in sub.items()}
        seen_vars: dict[str, int] = {}
        for n in members:
            ev.setdefault(n[0], set()).add(vals[n])
            seen_vars[n[0]] = seen_vars.get(n[0], 0) + 1
        conflicts = [k for k in sub if len(ev[k]) > 1]
        dup = [k for k, c in seen_vars.items() if c > 1]
        if conflicts or dup:
            comp_text = "{" + ", ".join(_node_text(*n) for n in members) + "}"
            if conflicts:
                k = conflicts[0]
                detail = f"{k} takes the values {sorted(map(str, ev[k]))} (set in a subscript, set or observed elsewhere)"
            else:
                detail = f"variable(s) {dup} appear in several worlds of one c-component"
            node = self._tnode(7, text, None, note=f"FAIL: conflict in c-component {comp_text}: {detail}")
            raise _Conflict(comp_text, detail, conflicts or dup, node)
        # line 8: P_x(var(S)) with x = ∪ sub(S) \ var(S)
        out_vals = {n[0]: vals[n] for n in members}
        x_vals = {k: next(iter(v)) for k, v in sub.items() if k not in out_vals}
        expr, child = self.term(out_vals, x_vals)
        summed = [vals[n] for n in members if n not in cg.value]
        expr = make_product(cg.indicators + [make_sum(summed, expr)])
        node = self._tnode(8, text, expr, [child] if child is not None else [],
                           note=f"P_{{{', '.join(f'{k}={v}' for k, v in sorted(x_vals.items()))}}}"
                                f"({', '.join(sorted(out_vals))})")
        return expr, node

    def term(self, out_vals: dict, x_vals: dict) -> tuple[Expr, TraceNode | None]:
        """Identify ``P_x(vars)`` with gID, then plug in the values/symbols."""
        key = (frozenset(out_vals), frozenset(x_vals))
        got = self._terms.get(key)
        if got is None:
            lite = self.lite
            y = lite.mask(out_vals)
            x = lite.mask(x_vals)
            try:
                got = self.engine.id(y, x, lite.full)
            except Fail as f:
                raise _TermFail(sorted(out_vals), sorted(x_vals), f) from None
            self._terms[key] = got
        expr, child = got
        mapping = dict(out_vals)
        mapping.update(x_vals)
        return substitute(expr, mapping), child

    def _tnode(self, line, text, expr, children=(), note="", algorithm="ID*") -> TraceNode | None:
        if not self.trace_on:
            return None
        return TraceNode(algorithm, line, event=text, estimand=expr, children=list(children), note=note)

    # ------------------------------------------------------------------ IDC*
    def idc_star(self, gamma: list[Event], delta: list[Event]) -> tuple[Expr, TraceNode]:
        """IDC*(G, γ, δ) (Shpitser & Pearl 2008, Fig. 10).

        The values of ``γ`` are replaced by symbols before the counterfactual graph is built and
        plugged back into the numerator at the end: ``P(δ) = Σ_γ P(γ ∧ δ)`` must not rely on
        node merges that hold only for the observed value of ``γ`` (make-cg merges ``Y`` with
        ``Y_{X=x}`` when ``X = x`` is part of the event)."""
        if not delta:
            return self.id_star(gamma)
        consts = {}
        sym_gamma = []
        for e in gamma:
            if isinstance(e.value, str):
                sym_gamma.append(e)
            else:
                s = self.fresh(_node_text(e.var, self.canon(e.world, e.var)))
                consts[s] = e.value
                sym_gamma.append(Event(e.var, e.world, s))
        expr, node = self._idc_star(sym_gamma, delta)
        if consts:
            expr = substitute(expr, consts)
            if node is not None:
                node.estimand = expr
        return expr, node

    def _idc_star(self, gamma: list[Event], delta: list[Event]) -> tuple[Expr, TraceNode]:
        text = _events_text(gamma) + " | " + _events_text(delta)
        if not delta:
            return self.id_star(gamma)
        # line 1: P(δ) = 0 -> undefined
        try:
            pd, _ = self.id_star(delta)
            if pd == ZERO:
                raise QueryError(f"the evidence {_events_text(delta)} is inconsistent (probability 0): "
                                 "the conditional query is undefined")
        except (_Conflict, _TermFail):
            pass
        # line 2: counterfactual graph of γ ∧ δ
        try:
            cg = self.make_cg(gamma + delta)
        except _Inconsistent:
            return ZERO, self._tnode(3, text, ZERO, note="inconsistent event (make-cg)", algorithm="IDC*")
        dnodes_list = []
        for e in delta:
            n = self._rep(cg, e)
            if n not in dnodes_list:
                dnodes_list.append(n)
        # map γ events to representatives; γ events merged into δ nodes become indicators
        gamma_rep = []
        inds = list(cg.indicators)
        for e in gamma:
            n = self._rep(cg, e)
            if n in dnodes_list:
                continue
            if n not in gamma_rep:
                gamma_rep.append(n)
        # line 4: rule 2 in G' for some y_x in δ'
        lite = self._lite(cg)
        idx = {n: i for i, n in enumerate(cg.nodes)}
        gmask = 0
        for n in gamma_rep:
            gmask |= 1 << idx[n]
        for n in dnodes_list:
            a = 1 << idx[n]
            others = 0
            for m in dnodes_list:
                if m != n:
                    others |= 1 << idx[m]
            if gmask and lite.d_separated(gmask, a, others, lite.full, cut_out=a):
                y_var, y_val = n[0], cg.value[n]
                # do(y_x = y) in G': every descendant of the node y_x, in γ' and in the rest of
                # δ', gets Y = y in its subscript (rule 2 exchanges the observation for the action
                # for all the remaining events, not only for γ')
                desc = self._descendants(lite, a)

                def moved(m):
                    world = dict(m[1])
                    if (desc >> idx[m]) & 1 and y_var not in world:
                        world[y_var] = y_val
                    return Event(m[0], frozenset(world.items()), cg.value.get(m, self.symbol(m)))

                new_gamma = [moved(m) for m in gamma_rep]
                new_delta = [moved(m) for m in dnodes_list if m != n]
                expr, child = self._idc_star(new_gamma, new_delta)
                expr = make_product(inds + [expr])
                node = self._tnode(4, text, expr, [child], algorithm="IDC*",
                                   note=f"rule 2 moves {_node_text(*n)}={y_val} into the subscripts")
                return expr, node
        # lines 5-6: P' = ID*(γ' ∧ δ'); return P' / Σ_γ' P'
        gvals = {n: cg.value[n] for n in gamma_rep}  # symbols (see idc_star)
        events = [Event(n[0], n[1], gvals[n]) for n in gamma_rep] + \
                 [Event(n[0], n[1], cg.value[n]) for n in dnodes_list]
        joint, child = self.id_star(events)
        den = make_sum([v for v in gvals.values() if isinstance(v, str)], joint)
        expr = make_product(inds + [make_fraction(joint, den)])
        node = self._tnode(6, text, expr, [child], algorithm="IDC*")
        return expr, node

    def _node_of(self, e: Event):
        return (e.var, self.canon(e.world, e.var))

    def _rep(self, cg: _CFGraph, e: Event):
        """The node of G' that carries the event ``e`` (after merging)."""
        return cg.rep[self._node_of(e)]

    @staticmethod
    def _descendants(lite: LiteGraph, a: int) -> int:
        out = a
        frontier = a
        while frontier:
            new = 0
            for i in bits(frontier):
                new |= lite.ch[i]
            new &= ~out
            out |= new
            frontier = new
        return out


class _Conflict(Exception):
    def __init__(self, component: str, detail: str, variables, node):
        super().__init__(detail)
        self.component = component
        self.detail = detail
        self.variables = variables
        self.node = node


class _TermFail(Exception):
    def __init__(self, outcome, treatment, fail: Fail):
        super().__init__("term not identifiable")
        self.outcome = outcome
        self.treatment = treatment
        self.fail = fail


def run_counterfactual(cfe: CounterfactualEngine, gamma: list[Event], delta: list[Event], query_text: str,
                       available_text: str) -> tuple[Expr, TraceNode]:
    """Run IDC*/ID* and translate internal failures into :class:`NotIdentifiable`."""
    try:
        if delta:
            return cfe.idc_star(gamma, delta)
        return cfe.id_star(gamma)
    except _Conflict as c:
        raise NotIdentifiable(
            f"{query_text} is not identifiable (ID* line 7): conflict in the counterfactual graph's "
            f"c-component {c.component}: {c.detail}",
            query=query_text, conflict=f"{c.component}: {c.detail}", conflicts=c.variables,
            component=(c.component,), trace=cfe.engine.materialize(c.node)) from None
    except _TermFail as t:
        hedges = t.fail.hedges
        term = f"P({', '.join(t.outcome)}" + (f" | do({', '.join(t.treatment)})" if t.treatment else "") + ")"
        raise NotIdentifiable(
            f"{query_text} is not identifiable from {available_text}: ID* reduces it to {term}, "
            f"which is not identifiable: hedge {hedges[0] if hedges else '?'}",
            query=query_text, hedges=hedges, trace=cfe.engine.materialize(t.fail.trace)) from None
