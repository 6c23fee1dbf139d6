"""Distances between sample-based and exact discrete distributions.

Every distance is computed over the *full Cartesian product* of the variables' states, so states
that the model never generates still count (a model that misses a mode pays for it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hgraph import Factor

__all__ = ["empirical", "tvd", "kl", "compare"]


def _as_codes(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 2:  # one-hot / probabilities -> codes
        x = x.argmax(axis=1)
    return x.astype(np.int64)


def empirical(samples: Mapping[str, object], vars: Sequence[str], cards: Mapping[str, int],
              given: Sequence[str] = (), weights=None) -> Factor:
    """Empirical P(vars | given) over the full product of states, from (weighted) samples.

    ``samples`` maps names to integer codes, one-hot arrays or tensors; ``weights`` are optional
    importance weights (e.g. from counterfactual abduction).
    """
    vars, given = list(vars), list(given)
    allv = vars + given
    if not allv:
        raise ValueError("empirical() needs at least one variable")
    missing = [v for v in allv if v not in samples]
    if missing:
        raise KeyError(f"samples lack variable(s) {missing}")
    cols = [_as_codes(samples[v]) for v in allv]
    shape = tuple(int(cards[v]) for v in allv)
    for v, c, k in zip(allv, cols, shape):
        if c.size and (c.min() < 0 or c.max() >= k):
            raise ValueError(f"samples of {v!r} fall outside 0..{k - 1}")
    n = len(cols[0])
    w = np.ones(n) if weights is None else np.asarray(_np(weights), dtype=float).reshape(-1)
    if len(w) != n:
        raise ValueError(f"{len(w)} weights for {n} samples")
    flat = np.ravel_multi_index(cols, shape)
    table = np.bincount(flat, weights=w, minlength=int(np.prod(shape))).reshape(shape)
    total = table.sum()
    if total <= 0:
        raise ValueError("no samples (or zero total weight)")
    f = Factor(allv, table / total)
    return f.conditional(given) if given else f


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def tvd(p: Factor, q: Factor, given: Sequence[str] = (), weight_by: Factor | None = None) -> float:
    """Total variation distance.

    Without ``given``: 0.5 * sum |p - q| over the joint. With ``given`` (conditional or
    interventional tables, one distribution per value of ``given``): the average over the
    values of ``given`` of the per-value TVD, weighted by ``weight_by`` (a factor over ``given``)
    or uniformly.
    """
    if not given:
        return p.tvd(q)
    given = list(given)
    rest = [v for v in p.vars if v not in given]
    a = p.transpose(given + rest).values
    b = q.transpose(given + rest).values
    gshape = a.shape[: len(given)]
    per = 0.5 * np.abs(a - b).reshape(int(np.prod(gshape)), -1).sum(axis=1)
    if weight_by is None:
        return float(per.mean())
    w = weight_by.transpose(given).values.reshape(-1)
    return float((per * w).sum() / w.sum())


def kl(p: Factor, q: Factor, eps: float = 1e-12) -> float:
    """KL(p || q) in nats with q clipped at ``eps`` (so unseen states give a large, finite value)."""
    a, b = p.aligned(q)
    mask = a > 0
    return float((a[mask] * (np.log(a[mask]) - np.log(np.maximum(b[mask], eps)))).sum())


def compare(samples: Mapping[str, object], truth: Factor, cards: Mapping[str, int],
            given: Sequence[str] = (), weights=None) -> dict[str, float]:
    """TVD and KL of the samples' distribution of ``truth.vars`` against the exact ``truth``."""
    vars = [v for v in truth.vars if v not in given]
    emp = empirical(samples, vars, cards, given, weights).transpose(truth.vars)
    out = {"tvd": tvd(emp, truth, given)}
    if not given:
        out["kl"] = kl(truth, emp)
    return out
