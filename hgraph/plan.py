"""Training plans for modular DCM training (WhatIfGAN Algorithms 2 and 7).

For every h-node ``H`` and every dataset ``D^I ~ P_I(V_D)`` (intervention targets ``I``, observed
variables ``V_D``) the plan gives the *ancestor set* ``A``: the smallest
``A ⊆ An_{G_{bar I}}(H) \\ H`` such that, with ``S = (H \\ I) ∪ A`` and ``X = Pa(S) \\ S``,

    P(S | do(X), do(I)) = P(S | X, do(I))            (modularity condition, Def. 4.4 / D.1)

holds by rule 2 in ``G_{bar I}`` and every conditioning parent in ``X`` is observed in ``D``
(it is fed from the data batch into the DCM as an intervention). The DCM is then trained so that
``Q(S ∩ V_D | do(X), do(I)) = P(S ∩ V_D | X, do(I))``: H trains, A is frozen (pre-trained).

Exact polynomial search (replaces Algorithm 7's enumeration of all subsets of An(H))
-----------------------------------------------------------------------------------
With an empty conditioning set, rule 2 fails iff a *trek* joins S and X in ``G_{underline X}``.
Since every parent of S lies in ``S ∪ X`` and edges out of X are cut, the ancestors of S in
``G_{underline X}`` are S itself, so the condition is equivalent to

  (a) S is *convex*: no directed path leaves S and re-enters it (``An(S) ∩ De(S) = S``), and
  (b) no node of ``An(S) \\ S`` shares a confounder with a node of S.

Both properties are preserved under intersection of sets that contain H, and so is (c) "every
parent outside S is observed in D". Hence the valid sets form a family closed under intersection
(``An(H)`` itself is valid: it has no outside parents), so there is a *unique* smallest valid set,
contained in every valid set: minimum cardinality and inclusion-minimality coincide and no
tie-breaking is ever needed. It is the least fixed point of

  S ← An(S) ∩ De(S);  S ← S ∪ (Sib(S) ∩ An(S));  S ← S ∪ {p ∈ Pa(S) \\ S unobserved in D}

starting from ``S = H \\ I``: each rule adds only nodes that every valid superset must contain
(a node on a directed path S → … → S; an ancestor confounded with S; a parent the data cannot
supply), and the loop stops at a valid set. Each round is O(|V| + |E|) and adds at least one node,
so the search is O(|V| (|V| + |E|)) instead of O(2^|An(H)|).

Training order: step ``H`` needs the modules of ``A`` trained, so the plan orders h-nodes by the
H-graph edges *plus* the edges "h-node owning a ∈ A -> H". The H-graph of Definition 4.3 alone
does not always suffice: ancestor sets of two h-nodes can need each other's modules (e.g.
``V1 -> V4 -> V0 -> V7 -> V2, V1 <-> V2`` with ``V4, V0`` in a second c-component whose own set
needs ``V1, V2``). Such h-nodes are merged (strongly connected components of the dependency
graph) and planned again; the plan reports every merge.

Dataset selection: the observational c-factors of H are needed once; a dataset ``do(I)`` is
*needed* only when ``I ∩ H ≠ ∅`` (otherwise its c-factors of H equal the observational ones,
Appendix D.2.2) and used as a proxy only when no observational dataset can train H (D.2.3).
Among datasets with the same targets, one that contains all of H's variables is preferred (the
one with the smallest joint; ties: the first declared); if none does, every usable one is used
and each compares only the variables it contains.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field

import networkx as nx

from .admg import ADMG, as_set
from .hgraph import HGraph, build_hgraph, hgraph_edges, rule2_holds

__all__ = [
    "DatasetSpec",
    "DatasetUse",
    "DatasetSkip",
    "PlanStep",
    "TrainingPlan",
    "PlanError",
    "ancestor_set",
    "ancestor_set_bruteforce",
    "is_modular",
    "training_plan",
]


class PlanError(ValueError):
    """A training plan cannot be built (e.g. an h-node no dataset can train)."""


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """A dataset ``D ~ P_I(V_D)``: intervention targets ``I`` and observed variables ``V_D``.

    ``variables=None`` means every variable of the graph is observed.
    """

    name: str
    targets: frozenset = frozenset()
    variables: frozenset | None = None
    exclude: frozenset = frozenset()  # "all but these" (resolved into ``variables``)

    def observed(self, g: ADMG) -> frozenset:
        return frozenset(g.nodes) if self.variables is None else self.variables

    @property
    def observational(self) -> bool:
        return not self.targets

    def describe(self, g: ADMG) -> str:
        dist = f"P_{{{','.join(g.sorted(self.targets))}}}" if self.targets else "P"
        v = self.observed(g)
        if v == frozenset(g.nodes):
            return f"{self.name} ~ {dist}(V)"
        missing = frozenset(g.nodes) - v
        if len(missing) <= len(v):
            return f"{self.name} ~ {dist}(V \\ {{{', '.join(g.sorted(missing))}}})"
        return f"{self.name} ~ {dist}({', '.join(g.sorted(v))})"

    @classmethod
    def parse(cls, text: str, index: int = 0) -> "DatasetSpec":
        """Parse ``[NAME=][do(T1, T2)][[V1, V2] | [-V1, -V2]]``.

        Examples: ``obs``, ``do(X1)``, ``D2=do(PKA)[PKA, Mek]``, ``D1=[-W0, -Y0]`` (all but W0, Y0).
        """
        s = text.strip()
        m = re.fullmatch(
            r"(?:(?P<name>[A-Za-z_][\w.-]*)\s*=\s*)?(?P<do>do\((?P<t>[^)]*)\))?\s*(?:\[(?P<v>[^\]]*)\])?",
            s,
        )
        if not m:
            if re.fullmatch(r"[A-Za-z_][\w.-]*", s):
                return cls(name=s)
            raise PlanError(f"cannot parse dataset {text!r}; expected e.g. 'obs', 'do(X)', 'D2=do(X)[X, Y]'")
        targets = frozenset(t.strip() for t in (m.group("t") or "").split(",") if t.strip())
        name = m.group("name") or (f"do({', '.join(sorted(targets))})" if targets else ("obs" if not index else f"D{index}"))
        variables = None
        if m.group("v") is not None:
            items = [x.strip() for x in m.group("v").split(",") if x.strip()]
            neg = [x[1:].strip() for x in items if x.startswith("-")]
            pos = [x for x in items if not x.startswith("-")]
            if neg and pos:
                raise PlanError(f"dataset {text!r}: list either variables or exclusions (-V), not both")
            if neg:
                return cls(name=name, targets=targets, exclude=frozenset(neg))
            variables = frozenset(pos)
        return cls(name=name, targets=targets, variables=variables)

    def resolve(self, g: ADMG) -> "DatasetSpec":
        """Check the names against the graph (and expand ``-V`` exclusion lists)."""
        g.check_nodes(self.targets, f"dataset {self.name} targets")
        v = self.variables
        if self.exclude:
            g.check_nodes(self.exclude, f"dataset {self.name} exclusions")
            v = (frozenset(g.nodes) if v is None else v) - self.exclude
        elif v is not None:
            g.check_nodes(v, f"dataset {self.name} variables")
            v = frozenset(v)
        if v is not None and not v:
            raise PlanError(f"dataset {self.name} contains no variable")
        return DatasetSpec(self.name, frozenset(self.targets), v)

    @classmethod
    def coerce(cls, obj, index: int = 0) -> "DatasetSpec":
        if isinstance(obj, DatasetSpec):
            return obj
        if isinstance(obj, str):
            return cls.parse(obj, index)
        if isinstance(obj, dict):
            targets = as_set(obj.get("do", obj.get("targets", ())))
            name = obj.get("name") or (f"do({', '.join(sorted(targets))})" if targets else f"D{index}")
            if "variables" in obj and "exclude" in obj:
                raise PlanError(f"dataset {name}: give 'variables' or 'exclude', not both")
            if "exclude" in obj:
                return cls(name, targets, exclude=as_set(obj["exclude"]))
            v = obj.get("variables")
            return cls(name, targets, None if v is None else as_set(v))
        if isinstance(obj, (set, frozenset, list, tuple)):
            targets = as_set(obj)
            return cls(f"do({', '.join(sorted(targets))})" if targets else ("obs" if not index else f"D{index}"), targets)
        raise PlanError(f"cannot read a dataset from {obj!r}")


# ---------------------------------------------------------------------------------------------
# ancestor sets
# ---------------------------------------------------------------------------------------------
def _reach(start, step) -> set:
    seen = set(start)
    stack = list(start)
    while stack:
        v = stack.pop()
        for w in step(v):
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return seen


def _views(g: ADMG, targets: frozenset):
    """Parent/child/sibling functions of G_{bar I} without building a new graph."""
    I = targets

    def pa(v):
        return () if v in I else g.pa(v)

    def ch(v):
        return (c for c in g.ch(v) if c not in I)

    def sib(v):
        return () if v in I else (s for s in g.sib(v) if s not in I)

    return pa, ch, sib


def is_modular(g: ADMG, s, targets=(), observed=None) -> bool:
    """True iff ``S`` satisfies the modularity condition: rule 2 holds for S and Pa(S) \\ S in
    ``G_{bar I}`` and every parent outside S is observed (or intervened) in the dataset."""
    g = ADMG.load(g)
    s = g.check_nodes(s, "is_modular")
    I = g.check_nodes(targets, "is_modular targets")
    if s & I:
        raise PlanError("the joint S must not contain intervened variables")
    pa, _, _ = _views(g, I)
    x = frozenset(p for v in s for p in pa(v)) - s
    if observed is not None:
        obs = as_set(observed) | I
        if not x <= obs:
            return False
    gi = g.do(I) if I else g
    return rule2_holds(gi, s, x)


def ancestor_set(g: ADMG, hnode, targets=(), observed=None) -> frozenset:
    """The unique smallest ancestor set A for h-node ``hnode`` and dataset ``(targets, observed)``.

    See the module docstring for the closure argument (exact, polynomial, no ties).
    """
    g = ADMG.load(g)
    H = g.check_nodes(hnode, "ancestor_set")
    I = g.check_nodes(targets, "ancestor_set targets")
    obs = frozenset(g.nodes) if observed is None else g.check_nodes(observed, "ancestor_set observed")
    supply = obs | I
    pa, ch, sib = _views(g, I)
    S = set(H - I)
    if not S:
        return frozenset()
    while True:
        anc = _reach(S, pa)
        des = _reach(S, ch)
        new = anc & des
        for v in list(new):
            for w in sib(v):
                if w in anc:
                    new.add(w)
        for v in list(new):
            for p in pa(v):
                if p not in new and p not in supply:
                    new.add(p)
        if new == S:
            break
        S = new
    return frozenset(S) - H


def ancestor_set_bruteforce(g: ADMG, hnode, targets=(), observed=None, max_candidates: int = 1 << 22,
                            exhaustive: bool = False):
    """Algorithm 7 transcribed: enumerate subsets of ``An_{G_{bar I}}(H) \\ H``.

    With ``exhaustive=True`` every subset is tested and the first strictly smallest valid one is
    kept, exactly as lines 5-8 of Algorithm 7 are written; otherwise subsets are enumerated by
    increasing size and the first valid one is returned. Exponential either way; kept as the
    reference for tests and the benchmark. Raises ``PlanError`` when the number of candidates
    exceeds ``max_candidates``.
    """
    g = ADMG.load(g)
    H = g.check_nodes(hnode, "ancestor_set")
    I = g.check_nodes(targets, "ancestor_set targets")
    Y = H - I
    if not Y:
        return frozenset()
    pa, _, _ = _views(g, I)
    pool = g.sorted(_reach(Y, pa) - H - I)
    if 2 ** len(pool) > max_candidates:
        raise PlanError(f"brute force over {len(pool)} ancestors exceeds {max_candidates} candidates")
    if exhaustive:
        best = None
        for mask in range(2 ** len(pool)):
            cand = frozenset(v for i, v in enumerate(pool) if mask >> i & 1)
            if (best is None or len(cand) < len(best)) and is_modular(g, Y | cand, I, observed):
                best = cand
        if best is None:
            raise PlanError("no valid ancestor set (should not happen: An(H) is always valid)")
        return best
    for k in range(len(pool) + 1):
        for cand in itertools.combinations(pool, k):
            if is_modular(g, Y | frozenset(cand), I, observed):
                return frozenset(cand)
    raise PlanError("no valid ancestor set (should not happen: An(H) is always valid)")


# ---------------------------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------------------------
@dataclass
class DatasetUse:
    """How one dataset trains one h-node: match Q(compared | do(conditioning)) to the data."""

    dataset: str
    targets: list
    role: str  # "observational", "interventional" (needed) or "proxy"
    trained: list  # mechanisms that receive gradient from this dataset (H minus targets/pretrained)
    ancestors: list  # A: frozen modules, generated
    joint: list  # S = (H \ I) ∪ A
    compared: list  # S ∩ V_D, compared by this dataset's critic
    conditioning: list  # Pa(S) \ S, taken from the real batch and fed in as interventions
    hidden: list  # S \ V_D: generated but not compared

    @property
    def critic_inputs(self) -> list:
        return self.compared + self.conditioning


@dataclass
class DatasetSkip:
    dataset: str
    reason: str


@dataclass
class PlanStep:
    index: int
    hnode: list
    components: list
    stage: int
    depends_on: list
    uses: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    pretrained: list = field(default_factory=list)

    @property
    def frozen(self) -> list:
        out = []
        for u in self.uses:
            out += [a for a in u.ancestors if a not in out]
        return out

    @property
    def is_pretrained(self) -> bool:
        return set(self.pretrained) >= set(self.hnode)


@dataclass
class TrainingPlan:
    graph: ADMG
    hgraph: HGraph
    datasets: list
    steps: list
    edges: list  # dependency edges between steps (H-graph edges plus ancestor-set needs)
    merges: list = field(default_factory=list)  # h-nodes merged because their ancestor sets need each other

    @property
    def stages(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for s in self.steps:
            out.setdefault(s.stage, []).append(s.index)
        return [out[k] for k in sorted(out)]

    def step_of(self, v: str) -> PlanStep:
        for s in self.steps:
            if v in s.hnode:
                return s
        raise KeyError(v)

    # -------------------------------------------------------------- rendering
    def __str__(self) -> str:
        g = self.graph
        lines = [f"Training plan for {g.to_string()}", "Datasets:"]
        for d in self.datasets:
            lines.append(f"  {d.describe(g)}")
        lines.append("h-nodes: " + "  ".join(
            f"H{s.index}=[{', '.join(s.hnode)}]" for s in self.steps) + (
            "   order: " + ", ".join(f"H{a}->H{b}" for a, b in self.edges) if self.edges else "   (no order constraints)"))
        for m in self.merges:
            lines.append(f"  merged {m}: their ancestor sets need each other's modules")
        rows = [("stage", "h-node", "dataset", "match", "frozen A", "from data", "role")]
        for s in self.steps:
            head = (str(s.stage), f"H{s.index}=[{', '.join(s.hnode)}]")
            if s.is_pretrained:
                rows.append(head + ("-", "pretrained plug-in: not trained", "", "", ""))
                continue
            first = True
            for u in s.uses:
                dist = _fmt_match(u, [c for c in u.conditioning if c not in u.targets])
                rows.append((head if first else ("", "")) + (
                    u.dataset, dist, ", ".join(u.ancestors) or "-", ", ".join(u.conditioning) or "-", u.role))
                first = False
            for k in s.skipped:
                rows.append((head if first else ("", "")) + (k.dataset, "skipped: " + k.reason, "", "", ""))
                first = False
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for j, r in enumerate(rows):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if j == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "graph": self.graph.to_dict(),
            "datasets": [
                {"name": d.name, "targets": self.graph.sorted(d.targets),
                 "variables": None if d.variables is None else self.graph.sorted(d.variables)}
                for d in self.datasets
            ],
            "hgraph": self.hgraph.to_dict(),
            "edges": [list(e) for e in self.edges],
            "merges": self.merges,
            "stages": self.stages,
            "steps": [
                {
                    "index": s.index, "hnode": s.hnode, "components": s.components, "stage": s.stage,
                    "depends_on": s.depends_on, "pretrained": s.pretrained,
                    "uses": [asdict(u) | {"critic_inputs": u.critic_inputs} for u in s.uses],
                    "skipped": [asdict(k) for k in s.skipped],
                }
                for s in self.steps
            ],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **({"indent": 2} | kw))

    def to_dot(self) -> str:
        """The causal graph with its h-nodes drawn as clusters, plus the h-node dependencies."""
        g = self.graph
        lines = ["digraph plan {", "  compound=true; rankdir=TB;", "  node [shape=ellipse];"]
        for s in self.steps:
            lines.append(f"  subgraph cluster_H{s.index} {{")
            lines.append(f'    label="H{s.index} (stage {s.stage})"; style=rounded; color=blue;')
            for v in s.hnode:
                lines.append(f'    "{v}";')
            lines.append("  }")
        for u, v in g.directed_edges:
            lines.append(f'  "{u}" -> "{v}";')
        for a, b in g.bidirected_edges:
            lines.append(f'  "{a}" -> "{b}" [dir=both, style=dashed, color=red, constraint=false];')
        for a, b in self.edges:
            sa, sb = self.steps[a].hnode[0], self.steps[b].hnode[0]
            lines.append(f'  "{sa}" -> "{sb}" [ltail=cluster_H{a}, lhead=cluster_H{b}, color=blue, penwidth=3, style=bold];')
        lines.append("}")
        return "\n".join(lines)

    def draw(self, path: str) -> str:
        """Draw the H-graph over the causal graph to a PNG (matplotlib; no graphviz needed)."""
        from .draw import draw_plan

        return draw_plan(self, path)


def _fmt_match(u: DatasetUse, intervened: list) -> str:
    tgt = ", ".join(u.targets)
    cond = ", ".join(intervened)
    inner = ", ".join(u.compared)
    if u.targets:
        return f"P({inner} | {cond + ', ' if cond else ''}do({tgt}))"
    return f"P({inner} | {cond})" if cond else f"P({inner})"


def training_plan(g, datasets=("obs",), pretrained=(), strict: bool = True) -> TrainingPlan:
    """Plan modular training (Algorithm 7) for graph ``g`` and the given datasets.

    ``datasets``: items accepted by :meth:`DatasetSpec.coerce` (``"obs"``, ``"do(X)"``,
    ``"D2=do(X)[X, Y]"``, dicts with ``name``/``do``/``variables``/``exclude``, or DatasetSpec).
    ``pretrained``: variables whose modules are frozen plug-ins (never trained).
    With ``strict`` a step that no dataset can train raises :class:`PlanError`.
    """
    g = ADMG.load(g)
    specs = [DatasetSpec.coerce(d, i).resolve(g) for i, d in enumerate(datasets)]
    names = [d.name for d in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise PlanError(f"duplicate dataset name(s) {sorted(dup)}")
    if not specs:
        raise PlanError("a training plan needs at least one dataset")
    pre = g.check_nodes(pretrained, "pretrained")
    hg = build_hgraph(g)
    comps_of = {v: c for c in g.c_components() for v in c}
    parts = [hg.hnodes[i] for i in hg.order()]
    merges: list[str] = []
    while True:
        results = [_plan_hnode(g, H, specs, pre) for H in parts]
        where = {v: i for i, H in enumerate(parts) for v in H}
        edges = set(hgraph_edges(g, parts))
        for i, (uses, _) in enumerate(results):
            for u in uses:
                for a in u.ancestors:
                    if where[a] != i:
                        edges.add((where[a], i))
        dag = nx.DiGraph()
        dag.add_nodes_from(range(len(parts)))
        dag.add_edges_from(edges)
        if nx.is_directed_acyclic_graph(dag):
            break
        # The ancestor sets of some h-nodes need modules of h-nodes that need theirs in turn
        # (possible although the H-graph of Definition 4.3 is acyclic): merge every strongly
        # connected component of the dependency graph and plan again.
        merged = []
        for scc in nx.strongly_connected_components(dag):
            if len(scc) > 1:
                merges.append(" + ".join("[" + ", ".join(g.sorted(parts[i])) + "]" for i in sorted(scc)))
            merged.append(frozenset().union(*(parts[i] for i in scc)))
        parts = merged
    order = list(nx.lexicographical_topological_sort(dag, key=lambda i: min(g.position(v) for v in parts[i])))
    renum = {old: new for new, old in enumerate(order)}
    steps: list[PlanStep] = []
    for new, old in enumerate(order):
        H = parts[old]
        uses, skipped = results[old]
        comps = {comps_of[v] for v in H}
        steps.append(PlanStep(
            index=new,
            hnode=g.sorted(H),
            components=sorted((g.sorted(c) for c in comps), key=lambda c: g.position(c[0])),
            stage=0,
            depends_on=[],
            uses=uses,
            skipped=skipped,
            pretrained=g.sorted(H & pre),
        ))
        if not uses and not steps[-1].is_pretrained and strict:
            reasons = "; ".join(f"{k.dataset}: {k.reason}" for k in skipped) or "no dataset given"
            raise PlanError(f"h-node [{', '.join(g.sorted(H))}] cannot be trained from the given datasets ({reasons})")
    edges = sorted((renum[a], renum[b]) for a, b in edges)
    for step in steps:
        step.depends_on = sorted(a for a, b in edges if b == step.index)
        step.stage = 1 + max((steps[p].stage for p in step.depends_on), default=-1)
    return TrainingPlan(g, hg, specs, steps, edges, merges)


def _plan_hnode(g: ADMG, H: frozenset, specs, pre: frozenset):
    """Dataset uses and skips for one h-node."""
    skipped: list[DatasetSkip] = []
    if H <= pre:
        return [], skipped
    trainable = H - pre
    candidates = []
    for d in specs:
        Y = H - d.targets
        obs = d.observed(g)
        if not (trainable - d.targets):
            skipped.append(DatasetSkip(d.name, "every trainable mechanism of this h-node is intervened on"))
            continue
        if not (Y & obs):
            skipped.append(DatasetSkip(d.name, "the dataset contains none of this h-node's variables"))
            continue
        A = ancestor_set(g, H, d.targets, obs)
        S = Y | A
        pa, _, _ = _views(g, d.targets)
        X = frozenset(p for v in S for p in pa(v)) - S
        role = "observational" if d.observational else ("interventional" if d.targets & H else "proxy")
        use = DatasetUse(
            dataset=d.name,
            targets=g.sorted(d.targets),
            role=role,
            trained=g.sorted(trainable - d.targets),
            ancestors=g.sorted(A),
            joint=g.sorted(S),
            compared=g.sorted(S & obs),
            conditioning=g.sorted(X),
            hidden=g.sorted(S - obs),
        )
        candidates.append((d, use, Y <= obs))
    return _select(candidates, H, skipped), skipped


def _select(candidates, H: frozenset, skipped: list) -> list[DatasetUse]:
    """Choose which datasets a step needs (see the module docstring).

    Datasets fall into families by ``targets ∩ H``: all datasets whose targets miss the h-node
    determine the same (observational) c-factors of H. Within a family, a dataset that contains
    every variable of H suffices: the one with the smallest joint is used (ties: observational
    first, then declaration order), the others are skipped; if none contains all of H, every
    usable dataset of the family is used and each compares what it contains.
    """
    chosen: list[DatasetUse] = []
    families: dict[frozenset, list] = {}
    for k, (d, use, full) in enumerate(candidates):
        families.setdefault(d.targets & H, []).append((k, d, use, full))
    for fam, items in families.items():
        full = [it for it in items if it[3]]
        if full:
            best = min(full, key=lambda it: (len(it[2].joint), bool(it[1].targets), it[0]))
            chosen.append(best[2])
            for _, d, use, _ in items:
                if use is best[2]:
                    continue
                if fam:
                    why = f"redundant: {best[1].name} already covers this h-node under the same intervention"
                else:
                    why = (f"not needed: {best[1].name} already gives this h-node's observational c-factors"
                           + (" with a smaller joint" if len(best[2].joint) < len(use.joint) else ""))
                skipped.append(DatasetSkip(d.name, why))
        else:
            chosen += [use for _, _, use, _ in items]
    order = {id(u): k for k, (_, u, _) in enumerate(candidates)}
    chosen.sort(key=lambda u: order[id(u)])
    return chosen
