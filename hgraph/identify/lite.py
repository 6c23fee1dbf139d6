"""A light, immutable bitset view of an :class:`~hgraph.admg.ADMG` used inside the recursions.

Node ``i`` is the ``i``-th node of the graph's topological order, and every node set is a Python
``int`` whose bit ``i`` is set when node ``i`` belongs to it.  Induced subgraphs are never built:
a recursion step only carries the *mask* of its node set, so ``G[S]`` costs nothing and the
parents of ``v`` inside ``G[S]`` are ``pa[v] & S``.  Iterating the bits of a mask in increasing
order visits the nodes in topological order, which is the order pi used by ID's lines 6 and 7.

All operations are linear in the size of the part of the graph they touch (ancestors,
c-components, m-separation by a Bayes-ball reachability search).
"""

from __future__ import annotations

from ..admg import ADMG

__all__ = ["LiteGraph", "bits", "popcount"]


def bits(mask: int):
    """Indices of the set bits of ``mask``, increasing (= topological order)."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def popcount(mask: int) -> int:
    return mask.bit_count()


class LiteGraph:
    """Parents, children and confounded siblings of every node as bitmasks."""

    __slots__ = ("names", "index", "pa", "ch", "sib", "n", "full", "admg", "_names_cache")

    def __init__(self, g: ADMG):
        order = g.topological_order()
        index = {v: i for i, v in enumerate(order)}
        n = len(order)
        pa = [0] * n
        ch = [0] * n
        sib = [0] * n
        for v in order:
            i = index[v]
            m = 0
            for p in g.pa(v):
                j = index[p]
                m |= 1 << j
                ch[j] |= 1 << i
            pa[i] = m
        for members in g.latent_groups.values():
            gm = 0
            for v in members:
                gm |= 1 << index[v]
            for v in members:
                i = index[v]
                sib[i] |= gm & ~(1 << i)
        self.names = tuple(order)
        self.index = index
        self.pa = pa
        self.ch = ch
        self.sib = sib
        self.n = n
        self.full = (1 << n) - 1
        self.admg = g
        self._names_cache: dict[int, tuple[str, ...]] = {}

    @classmethod
    def from_parts(cls, names, parents, siblings) -> "LiteGraph":
        """A graph over ``names`` (already in a topological order) from index lists:
        ``parents[i]`` and ``siblings[i]`` are iterables of node indices."""
        self = cls.__new__(cls)
        n = len(names)
        self.names = tuple(names)
        self.index = {v: i for i, v in enumerate(self.names)}
        self.pa = [0] * n
        self.ch = [0] * n
        self.sib = [0] * n
        for i in range(n):
            for j in parents[i]:
                if j >= i:
                    raise ValueError("from_parts needs the nodes in a topological order")
                self.pa[i] |= 1 << j
                self.ch[j] |= 1 << i
            for j in siblings[i]:
                if j != i:
                    self.sib[i] |= 1 << j
                    self.sib[j] |= 1 << i
        self.n = n
        self.full = (1 << n) - 1
        self.admg = None
        self._names_cache = {}
        return self

    # ------------------------------------------------------------------ conversions
    def mask(self, names) -> int:
        m = 0
        idx = self.index
        for v in names:
            m |= 1 << idx[v]
        return m

    def names_of(self, mask: int) -> tuple[str, ...]:
        """Node names of ``mask`` in topological order (cached)."""
        got = self._names_cache.get(mask)
        if got is None:
            nm = self.names
            got = tuple(nm[i] for i in bits(mask))
            self._names_cache[mask] = got
        return got

    # ------------------------------------------------------------------ reachability
    # (the loops below iterate over set bits inline: they are the hot path of the recursion)
    def parents_of(self, s: int, within: int) -> int:
        """Parents (inside ``within``) of the nodes of ``s``, excluding ``s``."""
        out = 0
        pa = self.pa
        m = s
        while m:
            low = m & -m
            out |= pa[low.bit_length() - 1]
            m ^= low
        return out & within & ~s

    def ancestors(self, s: int, within: int, cut: int = 0) -> int:
        """An(S) in G[within] (S included); edges into the nodes of ``cut`` are ignored,
        i.e. the ancestors in ``G[within]_{bar cut}``."""
        pa = self.pa
        result = s
        frontier = s & ~cut
        while frontier:
            new = 0
            m = frontier
            while m:
                low = m & -m
                new |= pa[low.bit_length() - 1]
                m ^= low
            new &= within & ~result
            result |= new
            frontier = new & ~cut
        return result

    def district(self, i: int, within: int) -> int:
        """The c-component of node ``i`` in G[within]."""
        sib = self.sib
        result = 1 << i
        frontier = result
        while frontier:
            new = 0
            m = frontier
            while m:
                low = m & -m
                new |= sib[low.bit_length() - 1]
                m ^= low
            new &= within & ~result
            result |= new
            frontier = new
        return result

    def c_components(self, within: int) -> list[int]:
        """C-components of G[within], ordered by their first node in topological order."""
        out = []
        rest = within
        while rest:
            low = rest & -rest
            d = self.district(low.bit_length() - 1, within)
            out.append(d)
            rest &= ~d
        return out

    def is_single_district(self, within: int) -> bool:
        if not within:
            return False
        low = within & -within
        return self.district(low.bit_length() - 1, within) == within

    # ------------------------------------------------------------------ separation
    def d_separated(self, x: int, y: int, z: int, within: int, cut_in: int = 0, cut_out: int = 0) -> bool:
        """(X ⟂ Y | Z) in ``G[within]`` with edges into ``cut_in`` removed (directed and
        bidirected: G_{bar cut_in}) and directed edges out of ``cut_out`` removed
        (G_{underline cut_out}); confounders are latent parents (m-separation).

        Bayes-ball reachability (Shachter 1998; Koller & Friedman 2009, Alg. 3.1) over
        (node, direction) states, one bitmask per direction: linear in the graph size.
        """
        if x & y:
            return False
        x &= ~z
        y &= ~z
        if not x or not y:
            return True
        pa, ch, sib = self.pa, self.ch, self.sib
        keep_pa = within & ~cut_out  # a parent edge u -> v survives iff u is not in cut_out

        def pa_of(s):
            out = 0
            for i in bits(s & ~cut_in):
                out |= pa[i]
            return out & keep_pa

        def ch_of(s):
            out = 0
            for i in bits(s & ~cut_out):
                out |= ch[i]
            return out & within & ~cut_in

        def sib_of(s):
            out = 0
            for i in bits(s & ~cut_in):
                out |= sib[i]
            return out & within & ~cut_in

        # ancestors of Z in the mutilated graph: colliders there are open
        an_z = z
        frontier = z
        while frontier:
            new = pa_of(frontier) & ~an_z
            an_z |= new
            frontier = new
        # up: reached through a tail at the node (coming from a child) -> any move if not in Z
        # down: reached through an arrowhead (from a parent or a spouse)
        seen_up, seen_down = 0, 0
        up, down = x, 0
        while up or down:
            up &= ~seen_up
            down &= ~seen_down
            if (up | down) & y:
                return False
            seen_up |= up
            seen_down |= down
            u_open = up & ~z
            d_pass = down & ~z  # non-collider through an arrowhead: continue to children
            d_coll = down & an_z  # open collider
            new_up = pa_of(u_open) | pa_of(d_coll)
            new_down = ch_of(u_open) | sib_of(u_open) | ch_of(d_pass) | sib_of(d_coll)
            up, down = new_up, new_down
        return True
