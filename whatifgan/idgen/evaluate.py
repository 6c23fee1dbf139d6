"""Compare a sampling network's answer with the exact one of a discrete SCM.

For ``P(y | do(x))`` the total variation distance is computed for every value ``x`` of the
intervention; for ``P(y | do(x), z)`` for every ``(x, z)`` and averaged over ``z`` with the true
weights ``P(z | do(x))`` (a conditional on a value that is almost never seen cannot be learned from
samples, and matters as little).  Reported: the mean and the maximum over ``x``, plus the maximum
over ``(x, z)`` pairs with ``P(z | do(x)) >= min_weight``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from hgraph import Factor

from .network import SamplingNetwork

__all__ = ["passes_step7", "plugin_report", "random_step7_queries", "tvd_report", "truth_table"]


def truth_table(scm, estimand) -> Factor:
    """The exact ``P(y | do(x), z)`` (Factor over outcome, treatment and given variables)."""
    return estimand.evaluate(scm)


def _weights(scm, x: Sequence[str], z: Sequence[str]) -> Factor | None:
    if not z:
        return None
    x, z = list(x), list(z)
    t = scm.do_table(x) if x else scm.joint()
    j = t.marginal(z + x)
    return j / j.marginal(x) if x else j


def _per_x(got: Factor, truth: Factor, scm, ys, xs, zs, min_weight: float) -> dict[str, Any]:
    tv = truth.transpose(ys + xs + zs).values
    gv = got.transpose(ys + xs + zs).values
    w = _weights(scm, xs, zs)
    wv = w.transpose(zs + xs).values if w is not None else None
    per_x: dict[str, float] = {}
    cells = []
    for xv in itertools.product(*[range(scm.cards[v]) for v in xs]):
        acc, tot = 0.0, 0.0
        for zv in itertools.product(*[range(scm.cards[v]) for v in zs]):
            idx = (Ellipsis, *xv, *zv)
            d = 0.5 * float(np.abs(gv[idx] - tv[idx]).sum())
            wt = float(wv[(*zv, *xv)]) if wv is not None else 1.0
            acc += wt * d
            tot += wt
            if wt >= min_weight:
                cells.append(d)
        per_x[",".join(f"{k}={v}" for k, v in zip(xs, xv)) or "-"] = acc / tot if tot > 0 else 0.0
    vals = list(per_x.values())
    return {"tvd_mean": float(np.mean(vals)), "tvd_max": float(np.max(vals)),
            "tvd_max_cell": float(max(cells)) if cells else 0.0, "per_x": per_x}


def plugin_report(estimand, scm, data, *, min_weight: float = 0.02, truth: Factor | None = None
                  ) -> dict[str, Any]:
    """The same TVDs for the *plug-in* estimator: the estimand evaluated on the empirical joint of
    ``data`` (the exact-table answer that ID-GEN's models approximate).  A large value means the
    sample cannot determine the answer (e.g. near-violations of positivity), whatever the method."""
    from whatifgan.metrics.discrete import empirical

    if truth is None:
        truth = estimand.evaluate(scm)
    cards = {v: scm.cards[v] for v in scm.nodes}
    emp = empirical(data, list(scm.nodes), cards)
    q = estimand.query
    got = estimand.evaluate(emp)
    return _per_x(got, truth, scm, list(q.outcome), list(q.treatment), list(q.given), min_weight)


def tvd_report(net: SamplingNetwork, scm, *, method: str = "exact", n: int = 20000, seed: int = 0,
               min_weight: float = 0.02, truth: Factor | None = None) -> dict[str, Any]:
    """TVD between the network's ``P(y | do(x), z)`` and the SCM's exact one.

    ``method="exact"`` evaluates the distribution the network samples from exactly
    (:meth:`SamplingNetwork.distribution`); ``"sample"`` uses ``n`` samples per value.
    Returns ``{"tvd_mean", "tvd_max", "tvd_max_cell", "per_x"}``.
    """
    if truth is None:
        truth = truth_table(scm, net.estimand)
    got = net.query_table(method=method, n=n, seed=seed)
    return _per_x(got, truth, scm, list(net.outputs), list(net.do_vars), list(net.given_vars), min_weight)


def passes_step7(trace) -> bool:
    """Whether an identification trace fires ID's line 7 (IDC's own node is not counted)."""
    return any(t.algorithm == "ID" and t.line == 7 for t in trace.walk())


def random_step7_queries(seed: int, count: int, *, conditional: bool = False, n_min: int = 4,
                         n_max: int = 8, max_x: int = 2, max_tries: int = 100_000) -> list[tuple]:
    """Random identifiable queries whose ID trace passes through line 7, on random ADMGs with
    ``n_min..n_max`` nodes and at least one bidirected edge (:func:`hgraph.generate.random_admg`).

    Returns ``[(graph, estimand), ...]``: one outcome, 1..``max_x`` interventions and, with
    ``conditional=True``, one conditioning variable that rule 2 does *not* move (so IDC-GEN
    trains its final conditional model).  Seeded: the same arguments give the same queries."""
    from hgraph.generate import random_admg
    from hgraph.identify import NotIdentifiable, identify

    rng = np.random.default_rng(seed)
    out: list[tuple] = []
    for k in range(max_tries):
        if len(out) >= count:
            break
        n = int(rng.integers(n_min, n_max + 1))
        g = random_admg(n, seed=int(seed) * 100_003 + k, avg_parents=float(rng.uniform(0.8, 1.8)),
                        bidirected=float(rng.uniform(0.3, 1.0)))
        if not g.bidirected_edges:
            continue
        perm = [str(v) for v in rng.permutation(list(g.nodes))]
        nx = int(rng.integers(1, max_x + 1))
        y, x = perm[:1], perm[1:1 + nx]
        z = perm[1 + nx:2 + nx] if conditional else []
        if conditional and not z:
            continue
        try:
            e = identify(g, y, x, z)
        except NotIdentifiable:
            continue
        if not passes_step7(e.trace):
            continue
        if conditional and not e.trace.given:
            continue
        out.append((g, e))
    return out
