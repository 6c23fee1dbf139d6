"""Acyclic directed mixed graphs (ADMGs) for semi-Markovian and non-Markovian causal models.

An :class:`ADMG` holds observed nodes, directed edges ``X -> Y`` and unobserved confounders.
A confounder is a *latent group*: a named set of two or more observed nodes that share one
unobserved parent. A bidirected edge ``X <-> Y`` is a latent group of size two; groups over more
than two variables represent confounders that touch several variables at once (non-Markovian).

Conventions follow the papers (Tian & Pearl 2002; Shpitser & Pearl 2006):

* ``ancestors(S)`` and ``descendants(S)`` include ``S`` itself;
* ``parents(S)`` and ``children(S)`` are the parents/children of members of ``S`` outside ``S``;
* c-components (districts) are maximal sets connected by bidirected paths.

Graphs are immutable values: operations such as :meth:`ADMG.do` return new graphs.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import networkx as nx

__all__ = ["ADMG", "GraphError", "as_set"]


class GraphError(ValueError):
    """A malformed causal graph; the message names the offending node or edge."""


def as_set(x) -> frozenset:
    """Normalise a node name or an iterable of node names to a frozenset."""
    if x is None:
        return frozenset()
    if isinstance(x, str):
        return frozenset([x])
    return frozenset(x)


_NAME = r"[A-Za-z_][A-Za-z0-9_.']*"
_ARROWS = ("<->", "->", "<-")


def _check_name(name: str, where: str) -> str:
    name = name.strip()
    if not re.fullmatch(_NAME, name):
        raise GraphError(f"invalid node name {name!r} in {where!r}")
    return name


class ADMG:
    """An acyclic directed mixed graph.

    Parameters
    ----------
    nodes:
        Observed nodes (order is kept and used to break ties deterministically).
    directed:
        Pairs ``(u, v)`` for edges ``u -> v``.
    bidirected:
        Pairs ``(u, v)`` for confounders ``u <-> v``.
    latent_groups:
        Mapping ``name -> iterable of nodes`` for confounders over more than two nodes.
    strict:
        If true (default), duplicate edges raise :class:`GraphError`.
    """

    __slots__ = ("_nodes", "_index", "_pa", "_ch", "_groups", "_sib", "_topo", "_topo_index", "_hash")

    def __init__(
        self,
        nodes: Iterable[str] = (),
        directed: Iterable[tuple[str, str]] = (),
        bidirected: Iterable[tuple[str, str]] = (),
        latent_groups: Mapping[str, Iterable[str]] | None = None,
        *,
        strict: bool = True,
    ):
        order: list[str] = []
        seen: set[str] = set()
        for n in nodes:
            if not isinstance(n, str):
                raise GraphError(f"node names must be strings, got {n!r}")
            _check_name(n, "nodes")
            if n in seen:
                raise GraphError(f"duplicate node {n!r}")
            seen.add(n)
            order.append(n)
        explicit = bool(order)

        def need(n: str, what: str) -> str:
            if n not in seen:
                if explicit:
                    raise GraphError(f"unknown node {n!r} in {what}")
                _check_name(n, what)
                seen.add(n)
                order.append(n)
            return n

        pa: dict[str, set[str]] = {}
        directed = list(directed)
        bidirected = list(bidirected)
        groups_in = dict(latent_groups or {})
        for u, v in directed:
            need(u, f"edge {u} -> {v}")
            need(v, f"edge {u} -> {v}")
        for u, v in bidirected:
            need(u, f"edge {u} <-> {v}")
            need(v, f"edge {u} <-> {v}")
        for name, members in groups_in.items():
            for m in members:
                need(m, f"latent group {name}")
        self._nodes = tuple(order)
        self._index = {n: i for i, n in enumerate(order)}
        pa = {n: set() for n in order}
        ch: dict[str, set[str]] = {n: set() for n in order}
        for u, v in directed:
            if u == v:
                raise GraphError(f"self loop {u} -> {v}")
            if u in pa[v]:
                if strict:
                    raise GraphError(f"duplicate edge {u} -> {v}")
                continue
            pa[v].add(u)
            ch[u].add(v)
        groups: dict[str, frozenset] = {}
        pair_seen: set[frozenset] = set()
        for u, v in bidirected:
            if u == v:
                raise GraphError(f"self loop {u} <-> {v}")
            key = frozenset((u, v))
            if key in pair_seen:
                if strict:
                    raise GraphError(f"duplicate edge {u} <-> {v}")
                continue
            pair_seen.add(key)
            a, b = sorted(key, key=self._index.__getitem__)
            groups[f"U_{a}_{b}"] = key
        for name, members in groups_in.items():
            _check_name(str(name), "latent_groups")
            ms = frozenset(members)
            if len(ms) < 2:
                raise GraphError(f"latent group {name!r} must touch at least two nodes, got {sorted(ms)}")
            if len(ms) != len(list(members)):
                raise GraphError(f"latent group {name!r} lists a node twice")
            if name in groups or name in self._index:
                raise GraphError(f"duplicate latent name {name!r}")
            if len(ms) == 2 and ms in pair_seen:
                if strict:
                    a, b = sorted(ms)
                    raise GraphError(f"duplicate edge {a} <-> {b} (also latent group {name!r})")
                continue
            groups[str(name)] = ms
        self._pa = {n: frozenset(s) for n, s in pa.items()}
        self._ch = {n: frozenset(s) for n, s in ch.items()}
        self._groups = groups
        sib: dict[str, set[str]] = {n: set() for n in order}
        for ms in groups.values():
            for m in ms:
                sib[m] |= ms - {m}
        self._sib = {n: frozenset(s) for n, s in sib.items()}
        self._topo = self._compute_topological_order()
        self._hash = None

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_string(cls, text: str, nodes: Iterable[str] = ()) -> "ADMG":
        """Parse edge strings such as ``"D -> I; I -> A; D <-> A"``.

        Statements are separated by ``;`` or newlines. Supported forms: chains (``A -> B -> C``),
        lists (``A, B -> C``), ``<-``, bidirected ``<->``, lone nodes (``W``) and latent groups over
        several nodes (``U: A, B, C`` or ``latent U: A, B, C``).
        """
        directed, bidirected, groups, lone = [], [], {}, []
        for raw in re.split(r"[;\n]", text):
            stmt = raw.strip()
            if not stmt or stmt.startswith("#"):
                continue
            m = re.fullmatch(r"(?:latent\s+)?(" + _NAME + r")\s*:\s*(.+)", stmt)
            if m and not any(a in stmt for a in _ARROWS):
                name = m.group(1)
                members = [_check_name(x, stmt) for x in m.group(2).split(",") if x.strip()]
                if name in groups:
                    raise GraphError(f"duplicate latent name {name!r}")
                groups[name] = members
                continue
            parts = re.split(r"\s*(<->|->|<-)\s*", stmt)
            if len(parts) == 1:
                for x in stmt.split(","):
                    if x.strip():
                        lone.append(_check_name(x, stmt))
                continue
            sides = parts[0::2]
            arrows = parts[1::2]
            lists = []
            for s in sides:
                names = [x for x in s.split(",")]
                if not any(x.strip() for x in names):
                    raise GraphError(f"missing node in statement {stmt!r}")
                lists.append([_check_name(x, stmt) for x in names])
            for arrow, left, right in zip(arrows, lists[:-1], lists[1:]):
                for a, b in itertools.product(left, right):
                    if arrow == "->":
                        directed.append((a, b))
                    elif arrow == "<-":
                        directed.append((b, a))
                    else:
                        bidirected.append((a, b))
        order = list(nodes)
        if order:
            return cls(order, directed, bidirected, groups)
        # keep first-appearance order
        appear: list[str] = []
        text_names = re.findall(_NAME, text)
        skip = set(groups)
        for n in text_names:
            if n not in appear and n not in skip and n != "latent":
                appear.append(n)
        return cls(appear, directed, bidirected, groups)

    @classmethod
    def from_dict(cls, data: Mapping) -> "ADMG":
        """Build from a mapping.

        Accepted keys: ``nodes`` (list), ``edges`` (list of edge strings or one string),
        ``directed`` (list of pairs), ``bidirected`` (list of pairs), ``latent`` /
        ``latent_groups`` (mapping name -> nodes), ``parents`` (mapping node -> parents) and
        ``confounders`` (list of node lists; pairs become bidirected edges, larger ones groups).
        """
        if not isinstance(data, Mapping):
            raise GraphError(f"a graph description must be a mapping, got {type(data).__name__}")
        known = {"nodes", "edges", "directed", "bidirected", "latent", "latent_groups", "parents",
                 "confounders", "name", "description", "variables"}
        unknown = set(data) - known
        if unknown:
            raise GraphError(f"unknown key(s) in graph description: {sorted(unknown)}")
        nodes = list(data.get("nodes") or [])
        directed = [tuple(e) for e in data.get("directed") or []]
        bidirected = [tuple(e) for e in data.get("bidirected") or []]
        groups = dict(data.get("latent") or data.get("latent_groups") or {})
        for e in directed + bidirected:
            if len(e) != 2:
                raise GraphError(f"an edge needs exactly two nodes, got {list(e)}")
        parents = data.get("parents") or {}
        for child, ps in parents.items():
            if child not in nodes:
                nodes.append(child)
            for p in ([ps] if isinstance(ps, str) else ps):
                directed.append((p, child))
        for i, conf in enumerate(data.get("confounders") or []):
            conf = list(conf)
            if len(conf) == 2:
                bidirected.append(tuple(conf))
            else:
                groups[f"U{i}"] = conf
        edges = data.get("edges") or []
        if isinstance(edges, str):
            edges = [edges]
        if edges:
            sub = cls.from_string("; ".join(edges))
            directed += list(sub.directed_edges)
            bidirected += [tuple(sorted(g)) for n, g in sub._groups.items() if n.startswith("U_") and len(g) == 2]
            groups.update({n: g for n, g in sub._groups.items() if not (n.startswith("U_") and len(g) == 2)})
            for n in sub.nodes:
                if n not in nodes and not data.get("nodes"):
                    nodes.append(n)
        # every node mentioned in parents/edges is added when nodes were not listed explicitly
        if not data.get("nodes"):
            for u, v in directed + bidirected:
                for n in (u, v):
                    if n not in nodes:
                        nodes.append(n)
            for ms in groups.values():
                for n in ms:
                    if n not in nodes:
                        nodes.append(n)
        return cls(nodes, directed, bidirected, groups)

    @classmethod
    def from_networkx(cls, g: nx.Graph) -> "ADMG":
        """Build from a networkx graph.

        Directed edges are directed edges unless the edge has ``bidirected=True``. Nodes with the
        attribute ``latent=True`` are unobserved confounders; each must be a root, and its children
        form a latent group. Undirected graphs are rejected.
        """
        if not g.is_directed():
            raise GraphError("an undirected networkx graph cannot be read as a causal graph")
        latent = [n for n, d in g.nodes(data=True) if d.get("latent")]
        nodes = [str(n) for n in g.nodes if n not in latent]
        directed, bidirected, groups = [], [], {}
        for u, v, d in g.edges(data=True):
            if u in latent or v in latent:
                continue
            if d.get("bidirected"):
                bidirected.append((str(u), str(v)))
            else:
                directed.append((str(u), str(v)))
        pairs = {frozenset(e) for e in bidirected}
        bidirected = [tuple(sorted(p)) for p in pairs]
        for lat in latent:
            if any(True for _ in g.predecessors(lat)):
                raise GraphError(f"latent node {lat!r} has parents; only root confounders are supported")
            kids = [str(c) for c in g.successors(lat)]
            if len(kids) >= 2:
                groups[str(lat)] = kids
        return cls(nodes, directed, bidirected, groups)

    @classmethod
    def from_file(cls, path: str | Path) -> "ADMG":
        """Read a YAML or JSON graph file (see :meth:`from_dict` for the keys)."""
        path = Path(path)
        if not path.exists():
            raise GraphError(f"graph file not found: {path}")
        text = path.read_text()
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise GraphError(f"{path}: invalid JSON: {e}") from None
        else:
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise GraphError(f"{path}: invalid YAML: {e}") from None
        if isinstance(data, Mapping) and "graph" in data:
            data = data["graph"]
        if isinstance(data, str):
            return cls.from_string(data)
        try:
            return cls.from_dict(data)
        except GraphError as e:
            raise GraphError(f"{path}: {e}") from None

    @classmethod
    def load(cls, spec) -> "ADMG":
        """Build from anything: an ADMG, a path to a graph file, a name of a graph shipped in
        ``configs/graphs``, an edge string, a mapping or a networkx graph."""
        if isinstance(spec, ADMG):
            return spec
        if isinstance(spec, nx.Graph):
            return cls.from_networkx(spec)
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        if isinstance(spec, Path):
            return cls.from_file(spec)
        if isinstance(spec, str):
            s = spec.strip()
            if s.endswith((".yaml", ".yml", ".json")) or Path(s).is_file():
                return cls.from_file(s)
            if any(a in s for a in _ARROWS) or ":" in s or ";" in s:
                return cls.from_string(s)
            from .library import graph_path

            p = graph_path(s)
            if p is not None:
                return cls.from_file(p)
            return cls.from_string(s)
        raise GraphError(f"cannot build a graph from {type(spec).__name__}")

    # ------------------------------------------------------------------ basic accessors
    @property
    def nodes(self) -> tuple[str, ...]:
        return self._nodes

    def __contains__(self, n) -> bool:
        return n in self._index

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self):
        return iter(self._nodes)

    @property
    def directed_edges(self) -> list[tuple[str, str]]:
        return [(u, v) for v in self._nodes for u in self.sorted(self._pa[v])]

    @property
    def bidirected_edges(self) -> list[tuple[str, str]]:
        """All pairs of nodes that share a confounder (pairs from larger latent groups included)."""
        out = set()
        for ms in self._groups.values():
            for a, b in itertools.combinations(sorted(ms, key=self._index.__getitem__), 2):
                out.add((a, b))
        return sorted(out, key=lambda e: (self._index[e[0]], self._index[e[1]]))

    @property
    def latent_groups(self) -> dict[str, frozenset]:
        """All confounders as ``name -> nodes`` (bidirected edges are groups of size two)."""
        return dict(self._groups)

    def check_nodes(self, nodes, what: str = "query") -> frozenset:
        """Return ``nodes`` as a frozenset, raising :class:`GraphError` on an unknown name."""
        s = as_set(nodes)
        for n in s:
            if n not in self._index:
                raise GraphError(f"unknown variable {n!r} in {what}; the graph has {list(self._nodes)}")
        return s

    def sorted(self, nodes: Iterable[str]) -> list[str]:
        """Nodes in the graph's topological order (deterministic)."""
        return sorted(nodes, key=self._topo_pos)

    def _topo_pos(self, n: str) -> int:
        return self._topo_index[n]

    def position(self, n: str) -> int:
        """Position of ``n`` in :meth:`topological_order`."""
        return self._topo_index[n]

    # ------------------------------------------------------------------ family relations
    def pa(self, v: str) -> frozenset:
        return self._pa[v]

    def ch(self, v: str) -> frozenset:
        return self._ch[v]

    def sib(self, v: str) -> frozenset:
        """Nodes sharing a confounder with ``v``."""
        return self._sib[v]

    def parents(self, s) -> frozenset:
        s = self.check_nodes(s, "parents")
        out = set()
        for v in s:
            out |= self._pa[v]
        return frozenset(out - s)

    def children(self, s) -> frozenset:
        s = self.check_nodes(s, "children")
        out = set()
        for v in s:
            out |= self._ch[v]
        return frozenset(out - s)

    def siblings(self, s) -> frozenset:
        s = self.check_nodes(s, "siblings")
        out = set()
        for v in s:
            out |= self._sib[v]
        return frozenset(out - s)

    def _reach(self, start: frozenset, step) -> frozenset:
        seen = set(start)
        stack = list(start)
        while stack:
            v = stack.pop()
            for w in step[v]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        return frozenset(seen)

    def ancestors(self, s) -> frozenset:
        """An(S), including S."""
        return self._reach(self.check_nodes(s, "ancestors"), self._pa)

    def descendants(self, s) -> frozenset:
        """De(S), including S."""
        return self._reach(self.check_nodes(s, "descendants"), self._ch)

    def district(self, v: str) -> frozenset:
        """The c-component containing ``v``."""
        return self._reach(self.check_nodes(v, "district"), self._sib)

    def c_components(self) -> list[frozenset]:
        """Maximal bidirected-connected sets, ordered by their first node in topological order."""
        seen: set[str] = set()
        out = []
        for v in self._topo:
            if v not in seen:
                d = self._reach(frozenset([v]), self._sib)
                seen |= d
                out.append(d)
        return out

    # ------------------------------------------------------------------ order
    def _compute_topological_order(self) -> tuple[str, ...]:
        indeg = {n: len(self._pa[n]) for n in self._nodes}
        import heapq

        heap = [self._index[n] for n in self._nodes if indeg[n] == 0]
        heapq.heapify(heap)
        out = []
        while heap:
            n = self._nodes[heapq.heappop(heap)]
            out.append(n)
            for c in self._ch[n]:
                indeg[c] -= 1
                if indeg[c] == 0:
                    heapq.heappush(heap, self._index[c])
        if len(out) != len(self._nodes):
            rest = [n for n in self._nodes if indeg[n] > 0]
            cyc = nx.find_cycle(nx.DiGraph([(u, v) for v in rest for u in self._pa[v] if u in rest]))
            path = " -> ".join([cyc[0][0]] + [e[1] for e in cyc])
            raise GraphError(f"directed cycle {path}")
        self._topo_index = {n: i for i, n in enumerate(out)}
        return tuple(out)

    def topological_order(self) -> list[str]:
        """A topological order; ties broken by the order the nodes were declared."""
        return list(self._topo)

    # ------------------------------------------------------------------ graph surgery
    def _rebuild(self, nodes, directed, groups) -> "ADMG":
        g = ADMG.__new__(ADMG)
        ADMG.__init__(g, nodes, directed, (), groups)
        return g

    def _groups_restricted(self, keep: frozenset) -> dict[str, list[str]]:
        out = {}
        for name, ms in self._groups.items():
            r = ms & keep
            if len(r) >= 2:
                out[name] = self.sorted(r)
        return out

    def subgraph(self, s) -> "ADMG":
        """The induced subgraph G[S] (confounders restricted to S)."""
        s = self.check_nodes(s, "subgraph")
        nodes = [n for n in self._nodes if n in s]
        directed = [(u, v) for (u, v) in self.directed_edges if u in s and v in s]
        return self._rebuild(nodes, directed, self._groups_restricted(s))

    def do(self, x) -> "ADMG":
        """The mutilated graph G_{bar X}: edges into X cut (directed and bidirected)."""
        x = self.check_nodes(x, "do")
        if not x:
            return self
        directed = [(u, v) for (u, v) in self.directed_edges if v not in x]
        keep = frozenset(self._nodes) - x
        return self._rebuild(self._nodes, directed, self._groups_restricted(keep))

    def cut_outgoing(self, x) -> "ADMG":
        """The graph G_{underline X}: directed edges out of X cut."""
        x = self.check_nodes(x, "cut_outgoing")
        if not x:
            return self
        directed = [(u, v) for (u, v) in self.directed_edges if u not in x]
        return self._rebuild(self._nodes, directed, dict(self._groups))

    def without_nodes(self, s) -> "ADMG":
        s = self.check_nodes(s, "without_nodes")
        return self.subgraph(frozenset(self._nodes) - s)

    # ------------------------------------------------------------------ separation
    def to_networkx(self, latent: bool = True) -> nx.DiGraph:
        """A DiGraph; with ``latent=True`` every confounder becomes an explicit root node
        (attribute ``latent=True``); otherwise bidirected edges carry ``bidirected=True``."""
        g = nx.DiGraph()
        for n in self._nodes:
            g.add_node(n, latent=False)
        g.add_edges_from(self.directed_edges)
        if latent:
            for name, ms in self._groups.items():
                lname = name
                while lname in self._index:
                    lname = "_" + lname
                g.add_node(lname, latent=True)
                for m in ms:
                    g.add_edge(lname, m)
        else:
            for a, b in self.bidirected_edges:
                g.add_edge(a, b, bidirected=True)
                g.add_edge(b, a, bidirected=True)
        return g

    def is_d_separated(self, x, y, z=()) -> bool:
        """(X ⟂ Y | Z) in the ADMG, confounders read as latent parents (m-separation)."""
        x = self.check_nodes(x, "d-separation")
        y = self.check_nodes(y, "d-separation")
        z = self.check_nodes(z, "d-separation")
        if x & y:
            return False
        x, y = x - z, y - z
        if not x or not y:
            return True
        return nx.is_d_separator(self.to_networkx(latent=True), set(x), set(y), set(z))

    # ------------------------------------------------------------------ output
    def to_string(self) -> str:
        parts = [f"{u} -> {v}" for u, v in self.directed_edges]
        for name, ms in self._groups.items():
            if len(ms) == 2 and name.startswith("U_"):
                a, b = self.sorted(ms)
                parts.append(f"{a} <-> {b}")
            else:
                parts.append(f"{name}: {', '.join(self.sorted(ms))}")
        linked = {n for e in self.directed_edges for n in e} | {n for ms in self._groups.values() for n in ms}
        parts += [n for n in self._nodes if n not in linked]
        return "; ".join(parts)

    def to_dict(self) -> dict:
        out = {
            "nodes": list(self._nodes),
            "directed": [list(e) for e in self.directed_edges],
            "bidirected": [],
            "latent": {},
        }
        for name, ms in self._groups.items():
            if len(ms) == 2 and name.startswith("U_"):
                out["bidirected"].append(self.sorted(ms))
            else:
                out["latent"][name] = self.sorted(ms)
        return out

    def to_dot(self, name: str = "G") -> str:
        lines = [f"digraph {name} {{", "  rankdir=TB;", "  node [shape=ellipse];"]
        for n in self._nodes:
            lines.append(f'  "{n}";')
        for u, v in self.directed_edges:
            lines.append(f'  "{u}" -> "{v}";')
        for gname, ms in self._groups.items():
            if len(ms) == 2:
                a, b = self.sorted(ms)
                lines.append(f'  "{a}" -> "{b}" [dir=both, style=dashed, color=red];')
            else:
                lines.append(f'  "{gname}" [shape=point, color=red];')
                for m in self.sorted(ms):
                    lines.append(f'  "{gname}" -> "{m}" [style=dashed, color=red];')
        lines.append("}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ADMG({self.to_string()!r})"

    def _key(self):
        return (
            frozenset(self._nodes),
            frozenset(self.directed_edges),
            frozenset(frozenset(ms) for ms in self._groups.values()),
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, ADMG) and self._key() == other._key()

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._key())
        return self._hash
