"""A small reader for discrete Bayesian networks in BIF format (bnlearn's repository format).

``load_bayesnet("asia")`` reads a network shipped in ``whatifgan/data/bn/`` (or any ``.bif`` path)
and returns ``(cpts, cards, states)`` in the layout :meth:`hgraph.DiscreteSCM.from_bayesnet`
takes; :func:`bayesnet_scm` builds the SCM with some variables hidden.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["load_bayesnet", "bayesnet_scm", "BIFError"]

BN_DIR = Path(__file__).resolve().parent / "bn"


class BIFError(ValueError):
    pass


def _path(name: str | Path) -> Path:
    p = Path(name)
    if p.suffix == ".bif" and p.exists():
        return p
    q = BN_DIR / f"{name}.bif"
    if q.exists():
        return q
    shipped = sorted(x.stem for x in BN_DIR.glob("*.bif"))
    raise FileNotFoundError(f"Bayesian network {str(name)!r} not found (shipped: {shipped}, or give a .bif path)")


def load_bayesnet(name: str | Path):
    """Parse a BIF file: returns ``cpts`` (``{V: (parents, table[card parents..., card V])}``),
    ``cards`` and ``states`` (value names per variable)."""
    text = _path(name).read_text()
    states: dict[str, list[str]] = {}
    for m in re.finditer(r"variable\s+([\w.\-]+)\s*\{[^}]*?\[\s*(\d+)\s*\]\s*\{([^}]*)\}", text):
        vals = [s.strip() for s in m.group(3).split(",")]
        if len(vals) != int(m.group(2)):
            raise BIFError(f"variable {m.group(1)} declares {m.group(2)} states but lists {len(vals)}")
        states[m.group(1)] = vals
    cards = {v: len(s) for v, s in states.items()}
    cpts = {}
    for m in re.finditer(r"probability\s*\(\s*([\w.\-]+)\s*(?:\|\s*([^)]*))?\)\s*\{([^}]*)\}", text):
        var = m.group(1)
        parents = [p.strip() for p in (m.group(2) or "").split(",") if p.strip()]
        body = m.group(3)
        for p in [var] + parents:
            if p not in states:
                raise BIFError(f"probability block for {var} names unknown variable {p}")
        shape = [cards[p] for p in parents] + [cards[var]]
        table = np.zeros(shape)
        if not parents:
            t = re.search(r"table\s+([^;]*);", body)
            if not t:
                raise BIFError(f"root {var} has no 'table' line")
            table[:] = [float(x) for x in t.group(1).split(",")]
        else:
            rows = re.findall(r"\(([^)]*)\)\s*([^;]*);", body)
            if len(rows) != int(np.prod(shape[:-1])):
                raise BIFError(f"{var}: {len(rows)} rows, expected {int(np.prod(shape[:-1]))}")
            for key, probs in rows:
                idx = tuple(states[p].index(k.strip()) for p, k in zip(parents, key.split(",")))
                table[idx] = [float(x) for x in probs.split(",")]
        table = table / table.sum(axis=-1, keepdims=True)  # BIF files round to a few digits
        cpts[var] = (parents, table)
    missing = [v for v in states if v not in cpts]
    if missing:
        raise BIFError(f"no probability block for {missing}")
    return cpts, cards, states


def bayesnet_scm(name: str | Path, hidden=()):
    """The :class:`hgraph.DiscreteSCM` of a shipped or given network with ``hidden`` variables."""
    from hgraph import DiscreteSCM

    cpts, cards, _ = load_bayesnet(name)
    return DiscreteSCM.from_bayesnet(cpts, cards, hidden=tuple(hidden))
