"""Discrete factors: named-axis numpy arrays for exact probability computations.

A :class:`Factor` is a non-negative function of some discrete variables, stored as an ndarray
whose axes are the variables (in ``vars`` order) and whose sizes are the variables' cardinalities.
Products, ratios, marginals and evidence reduction align variables by name, so expressions such as
``P(y|x) = P(x, y) / P(x)`` read as they do on paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["Factor", "FactorError"]


class FactorError(ValueError):
    """Inconsistent variables or cardinalities in a factor operation."""


class Factor:
    __slots__ = ("vars", "cards", "values")

    def __init__(self, vars: Iterable[str], values, cards: Iterable[int] | None = None):
        self.vars = tuple(vars)
        if len(set(self.vars)) != len(self.vars):
            raise FactorError(f"duplicate variable in factor {self.vars}")
        values = np.asarray(values, dtype=float)
        if cards is not None:
            cards = tuple(int(c) for c in cards)
            values = values.reshape(cards)
        if values.ndim != len(self.vars):
            raise FactorError(f"factor over {self.vars} needs {len(self.vars)} axes, got shape {values.shape}")
        self.values = values
        self.cards = tuple(values.shape)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def scalar(cls, value: float = 1.0) -> "Factor":
        return cls((), np.asarray(value, dtype=float))

    @classmethod
    def from_samples(cls, data: Mapping[str, np.ndarray], vars: Iterable[str], cards: Mapping[str, int]) -> "Factor":
        """Empirical distribution of ``vars`` from integer-coded samples."""
        vars = tuple(vars)
        shape = tuple(int(cards[v]) for v in vars)
        if not vars:
            return cls.scalar(1.0)
        cols = [np.asarray(data[v], dtype=np.int64) for v in vars]
        n = len(cols[0])
        for v, c, k in zip(vars, cols, shape):
            if len(c) != n:
                raise FactorError("sample columns have different lengths")
            if n and (c.min() < 0 or c.max() >= k):
                raise FactorError(f"samples of {v!r} fall outside 0..{k - 1}")
        flat = np.ravel_multi_index(cols, shape) if n else np.zeros(0, dtype=np.int64)
        counts = np.bincount(flat, minlength=int(np.prod(shape))).astype(float)
        if n:
            counts /= n
        return cls(vars, counts.reshape(shape))

    # ------------------------------------------------------------------ helpers
    def card(self, v: str) -> int:
        return self.cards[self.vars.index(v)]

    def card_map(self) -> dict[str, int]:
        return dict(zip(self.vars, self.cards))

    def transpose(self, order: Iterable[str]) -> "Factor":
        order = tuple(order)
        if set(order) != set(self.vars) or len(order) != len(self.vars):
            raise FactorError(f"cannot reorder {self.vars} as {order}")
        return Factor(order, np.transpose(self.values, [self.vars.index(v) for v in order]))

    def _expand(self, order: tuple[str, ...], cards: dict[str, int]) -> np.ndarray:
        """View of values broadcastable to the axes ``order``."""
        vals = np.transpose(self.values, [self.vars.index(v) for v in order if v in self.vars])
        shape = [cards[v] if v in self.vars else 1 for v in order]
        return vals.reshape(shape)

    @staticmethod
    def _union(a: "Factor", b: "Factor") -> tuple[tuple[str, ...], dict[str, int]]:
        cards = a.card_map()
        for v, k in zip(b.vars, b.cards):
            if v in cards and cards[v] != k:
                raise FactorError(f"variable {v!r} has cardinality {cards[v]} in one factor and {k} in the other")
            cards[v] = k
        order = a.vars + tuple(v for v in b.vars if v not in a.vars)
        return order, cards

    # ------------------------------------------------------------------ algebra
    def __mul__(self, other) -> "Factor":
        if not isinstance(other, Factor):
            return Factor(self.vars, self.values * float(other))
        order, cards = self._union(self, other)
        return Factor(order, self._expand(order, cards) * other._expand(order, cards))

    __rmul__ = __mul__

    def __truediv__(self, other) -> "Factor":
        """Ratio with the convention 0/0 = 0 (conditionals on impossible events)."""
        if not isinstance(other, Factor):
            return Factor(self.vars, self.values / float(other))
        order, cards = self._union(self, other)
        num = self._expand(order, cards) * np.ones([cards[v] for v in order])
        den = np.broadcast_to(other._expand(order, cards), num.shape)
        out = np.zeros_like(num)
        np.divide(num, den, out=out, where=den != 0)
        return Factor(order, out)

    def __add__(self, other: "Factor") -> "Factor":
        order, cards = self._union(self, other)
        return Factor(order, self._expand(order, cards) + other._expand(order, cards))

    def sum_out(self, vars: Iterable[str]) -> "Factor":
        vars = [v for v in vars if v in self.vars]
        if not vars:
            return self
        axes = tuple(self.vars.index(v) for v in vars)
        keep = tuple(v for v in self.vars if v not in vars)
        return Factor(keep, self.values.sum(axis=axes))

    def marginal(self, keep: Iterable[str]) -> "Factor":
        keep = tuple(keep)
        missing = [v for v in keep if v not in self.vars]
        if missing:
            raise FactorError(f"cannot marginalise onto {missing}: factor is over {self.vars}")
        return self.sum_out([v for v in self.vars if v not in keep]).transpose(keep)

    def conditional(self, given: Iterable[str]) -> "Factor":
        """self(vars) / self(given): the conditional distribution of the rest given ``given``."""
        given = tuple(given)
        return self / self.marginal(given)

    def reduce(self, evidence: Mapping[str, int]) -> "Factor":
        """Fix variables to values (the result no longer has them as axes)."""
        idx = []
        keep = []
        for v, k in zip(self.vars, self.cards):
            if v in evidence:
                val = int(evidence[v])
                if not 0 <= val < k:
                    raise FactorError(f"value {val} of {v!r} is outside 0..{k - 1}")
                idx.append(val)
            else:
                idx.append(slice(None))
                keep.append(v)
        return Factor(keep, self.values[tuple(idx)])

    def normalize(self) -> "Factor":
        z = self.values.sum()
        if z <= 0:
            raise FactorError("cannot normalise a factor with zero mass")
        return Factor(self.vars, self.values / z)

    def total(self) -> float:
        return float(self.values.sum())

    # ------------------------------------------------------------------ comparison
    def aligned(self, other: "Factor") -> tuple[np.ndarray, np.ndarray]:
        if set(self.vars) != set(other.vars):
            raise FactorError(f"factors over different variables: {self.vars} vs {other.vars}")
        o = other.transpose(self.vars)
        if o.cards != self.cards:
            raise FactorError(f"cardinalities differ: {self.cards} vs {o.cards}")
        return self.values, o.values

    def max_abs_diff(self, other: "Factor") -> float:
        a, b = self.aligned(other)
        return float(np.max(np.abs(a - b))) if a.size else 0.0

    def allclose(self, other: "Factor", atol: float = 1e-9) -> bool:
        return self.max_abs_diff(other) <= atol

    def tvd(self, other: "Factor") -> float:
        a, b = self.aligned(other)
        return 0.5 * float(np.abs(a - b).sum())

    def __repr__(self) -> str:
        return f"Factor({self.vars}, cards={self.cards})"
