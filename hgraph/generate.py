"""Random ADMGs for property tests and benchmarks (seeded, deterministic)."""

from __future__ import annotations

import numpy as np

from .admg import ADMG

__all__ = ["random_admg"]


def random_admg(n: int, seed: int = 0, avg_parents: float = 1.5, bidirected: float = 0.5,
                latent_groups: int = 0, max_parents: int | None = None, prefix: str = "V") -> ADMG:
    """A random ADMG on ``n`` nodes.

    Nodes ``V0..V{n-1}`` in a random causal order; each node draws its parents among earlier nodes
    (Poisson with mean ``avg_parents``, capped by ``max_parents``); ``bidirected * n`` confounded
    pairs are added at random (without duplicates) and ``latent_groups`` confounders over three
    nodes. The same arguments always give the same graph.
    """
    rng = np.random.default_rng(seed)
    names = [f"{prefix}{i}" for i in range(n)]
    order = rng.permutation(n)
    directed = []
    for pos in range(1, n):
        v = names[order[pos]]
        k = int(rng.poisson(avg_parents))
        if max_parents is not None:
            k = min(k, max_parents)
        k = min(k, pos)
        for p in rng.choice(pos, size=k, replace=False):
            directed.append((names[order[int(p)]], v))
    pairs = set()
    target = int(round(bidirected * n))
    tries = 0
    while len(pairs) < target and tries < 20 * target + 20 and n >= 2:
        tries += 1
        a, b = rng.choice(n, size=2, replace=False)
        pairs.add(tuple(sorted((names[int(a)], names[int(b)]))))
    groups = {}
    for k in range(latent_groups):
        if n >= 3:
            ms = rng.choice(n, size=3, replace=False)
            groups[f"L{k}"] = [names[int(m)] for m in ms]
    groups = {k: v for k, v in groups.items() if not (len(v) == 2 and tuple(sorted(v)) in pairs)}
    return ADMG(names, directed, sorted(pairs), groups)
