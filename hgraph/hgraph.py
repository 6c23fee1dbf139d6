"""H-graphs: the partial training order of c-components (WhatIfGAN, Algorithms 1 and 6).

Definition 4.3 of the WhatIfGAN paper: the nodes of an H-graph are groups of c-components
(h-nodes) and ``H_s -> H_t`` iff ``P(H_t | do(pa(H_t) ∩ H_s)) != P(H_t | pa(H_t) ∩ H_s)``, decided
by the graphical rule-2 test ``(H_t ⟂ pa(H_t) ∩ H_s)`` in ``G_{underline{pa(H_t) ∩ H_s}}``.
Cycles are resolved by merging *every strongly connected component* (networkx condensation), so
the result is always a DAG; its layers (longest-path levels) are antichains that can be trained
in parallel ("stages").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .admg import ADMG, as_set

__all__ = ["HGraph", "build_hgraph", "build_hgraphs", "hgraph_edges", "marginally_connected", "rule2_holds"]


def _ancestors_cut(g: ADMG, start, cut: frozenset, removed_in: frozenset = frozenset()) -> set:
    """Ancestors of ``start`` (inclusive) in the graph with edges out of ``cut`` and edges into
    ``removed_in`` deleted."""
    seen = set(start)
    stack = [v for v in start if v not in removed_in]
    while stack:
        v = stack.pop()
        for p in g.pa(v):
            # intervened nodes keep no incoming edges; they are conditioned on in the rules,
            # so a trek through them is blocked and they are not followed
            if p not in cut and p not in seen and p not in removed_in:
                seen.add(p)
                stack.append(p)
    return seen


def marginally_connected(g: ADMG, x, y, cut_out=(), do=()) -> bool:
    """True iff X and Y are d-connected given ``do`` in ``G_{bar do, underline cut_out}``.

    With an empty conditioning set a connecting path has no collider, so it is a trek: X and Y
    have a common ancestor, or ancestors that share a confounder. Linear time.
    """
    x, y = as_set(x), as_set(y)
    if x & y:
        return True
    cut, dset = as_set(cut_out), as_set(do)
    ax = _ancestors_cut(g, x, cut, dset)
    ay = _ancestors_cut(g, y, cut, dset)
    if ax & ay:
        return True
    for v in ax:
        if v in dset:
            continue
        for s in g.sib(v):
            if s in ay and s not in dset:
                return True
    return False


def rule2_holds(g: ADMG, y, x, do=()) -> bool:
    """Fast ``rule2(g, Y, X, Z=∅, do=I)``: P(Y | do(I), do(X)) = P(Y | do(I), X)."""
    x = as_set(x)
    if not x:
        return True
    return not marginally_connected(g, y, x, cut_out=x, do=do)


@dataclass
class HGraph:
    """A DAG of h-nodes (frozensets of observed variables)."""

    graph: ADMG
    hnodes: list[frozenset]
    edges: list[tuple[int, int]]
    components: list[list[frozenset]] = field(default_factory=list)
    intervention: frozenset = frozenset()

    @property
    def dag(self) -> nx.DiGraph:
        d = nx.DiGraph()
        d.add_nodes_from(range(len(self.hnodes)))
        d.add_edges_from(self.edges)
        return d

    def index_of(self, v: str) -> int:
        for i, h in enumerate(self.hnodes):
            if v in h:
                return i
        raise KeyError(v)

    def order(self) -> list[int]:
        """Topological order of h-node indices (ties: first variable's topological position)."""
        return list(nx.lexicographical_topological_sort(self.dag, key=lambda i: self._key(i)))

    def _key(self, i: int):
        return min(self.graph.position(v) for v in self.hnodes[i])

    def stages(self) -> list[list[int]]:
        """Longest-path layers: every stage is an antichain; stage k depends only on stages < k."""
        d = self.dag
        level: dict[int, int] = {}
        for i in self.order():
            level[i] = 1 + max((level[p] for p in d.predecessors(i)), default=-1)
        out: list[list[int]] = [[] for _ in range(1 + max(level.values(), default=-1))]
        for i in self.order():
            out[level[i]].append(i)
        return out

    def name(self, i: int) -> str:
        return "[" + ", ".join(self.graph.sorted(self.hnodes[i])) + "]"

    def __str__(self) -> str:
        lines = [f"H-graph{' for do(' + ', '.join(sorted(self.intervention)) + ')' if self.intervention else ''}:"]
        for i in self.order():
            lines.append(f"  H{i} = {self.name(i)}")
        for s, t in sorted(self.edges):
            lines.append(f"  H{s} -> H{t}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "intervention": sorted(self.intervention),
            "hnodes": [self.graph.sorted(h) for h in self.hnodes],
            "edges": [list(e) for e in sorted(self.edges)],
            "order": self.order(),
            "stages": self.stages(),
        }

    def to_dot(self) -> str:
        lines = ["digraph H {", "  node [shape=box];"]
        for i, h in enumerate(self.hnodes):
            lines.append(f'  H{i} [label="H{i}: {", ".join(self.graph.sorted(h))}"];')
        for s, t in sorted(self.edges):
            lines.append(f"  H{s} -> H{t};")
        lines.append("}")
        return "\n".join(lines)


def hgraph_edges(g: ADMG, parts) -> set[tuple[int, int]]:
    """Edges of Definition 4.3 between the node groups ``parts`` (a partition of g's nodes):
    ``s -> t`` iff rule 2 fails for ``parts[t]`` and ``pa(parts[t]) ∩ parts[s]``."""
    where = {v: i for i, c in enumerate(parts) for v in c}
    edges = set()
    for t, ct in enumerate(parts):
        by_src: dict[int, set] = {}
        for p in g.parents(ct):
            by_src.setdefault(where[p], set()).add(p)
        for s_, xs in by_src.items():
            if not rule2_holds(g, ct, xs):
                edges.add((s_, t))
    return edges


def build_hgraph(g, intervention=()) -> HGraph:
    """Algorithm 1 (and, with ``intervention``, one graph of Algorithm 6) with full SCC merging.

    The c-components of ``G_{bar I}`` become nodes; ``C_s -> C_t`` iff rule 2 fails for
    ``C_t`` and ``pa(C_t) ∩ C_s`` in ``G_{bar I}``; every strongly connected component of that
    digraph is merged into one h-node (networkx condensation), which removes all cycles, not
    only short ones.
    """
    g = ADMG.load(g)
    inter = g.check_nodes(intervention, "intervention")
    gi = g.do(inter) if inter else g
    comps = gi.c_components()
    raw = nx.DiGraph()
    raw.add_nodes_from(range(len(comps)))
    raw.add_edges_from(hgraph_edges(gi, comps))
    cond = nx.condensation(raw)
    members = cond.graph["mapping"]  # comp index -> scc index
    groups: dict[int, list[int]] = {}
    for ci, si in members.items():
        groups.setdefault(si, []).append(ci)
    pos = gi.position
    # renumber h-nodes deterministically by their first variable in topological order
    sccs = sorted(groups, key=lambda si: min(pos(v) for ci in groups[si] for v in comps[ci]))
    renum = {si: k for k, si in enumerate(sccs)}
    hnodes = [frozenset().union(*(comps[ci] for ci in groups[si])) for si in sccs]
    components = [[comps[ci] for ci in sorted(groups[si])] for si in sccs]
    edges = sorted({(renum[a], renum[b]) for a, b in cond.edges})
    return HGraph(gi, hnodes, edges, components, inter)


def build_hgraphs(g, interventions) -> dict[frozenset, dict]:
    """Algorithm 6: the H^I graph of every intervention set and its projection on H^∅.

    Returns ``{I: {"hgraph": HGraph, "projection": {j: [k, ...]}}}`` where ``projection`` maps
    each h-node ``j`` of H^∅ to the h-nodes ``k`` of H^I whose variables lie inside it (line 12).
    H^I nodes that straddle several H^∅ nodes (possible only when merging differs) map to the
    H^∅ node containing their first variable and are reported under ``"straddling"``.
    """
    g = ADMG.load(g)
    h0 = build_hgraph(g)
    out = {}
    for inter in [frozenset()] + [as_set(i) for i in interventions]:
        hi = build_hgraph(g, inter)
        proj: dict[int, list[int]] = {j: [] for j in range(len(h0.hnodes))}
        straddling = []
        for k, hk in enumerate(hi.hnodes):
            owners = {h0.index_of(v) for v in hk}
            if len(owners) > 1:
                straddling.append(k)
            proj[min(owners, key=lambda j: h0.order().index(j))].append(k)
        out[inter] = {"hgraph": hi, "projection": proj, "straddling": straddling}
    return out
