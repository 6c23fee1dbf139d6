"""Causal queries and their text syntax (shared by the API and the CLI).

Interventional queries::

    P(Y | do(X), Z)          P(Y, W | do(X, Z))        P(Y=1 | do(X=0))
    P(Y)   P(Y | Z)          P(Y | do(X), do(W), Z=1)  Y | do(X)        (the P(...) is optional)

Counterfactual queries (values inside subscripts are required)::

    P(Y_{X=1} | X=0, Y=0)    P(Y_{X=1}=1, Y_{X=0}=0)   P(Y_{X=1, Z=0} | W)

A counterfactual variable ``Y_{X=1}`` is named as in :func:`hgraph.scm.cf_name` (intervened
variables sorted, no spaces), which is also the name of its axis in evaluated tables.
Variable names follow :class:`~hgraph.admg.ADMG` (letters, digits, ``_``, ``.`` and ``'``); ``_{``
starts a subscript.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import QueryError

__all__ = ["Query", "CfVar", "parse_query", "make_query"]


def _cf_name(var: str, do) -> str:
    if not do:
        return var
    return f"{var}_{{" + ",".join(f"{k}={int(v)}" for k, v in sorted(do)) + "}"


@dataclass(frozen=True)
class CfVar:
    """A counterfactual variable ``var_{do}`` with an optional observed/queried value."""

    var: str
    do: tuple[tuple[str, int], ...] = ()
    value: int | None = None

    @property
    def name(self) -> str:
        """``Y_{X=1}`` (``Y`` when ``do`` is empty), as :func:`hgraph.scm.cf_name`."""
        return _cf_name(self.var, self.do)

    @property
    def do_dict(self) -> dict[str, int]:
        return dict(self.do)

    def __str__(self) -> str:
        return self.name + (f"={self.value}" if self.value is not None else "")


def _fmt_vars(names, values) -> str:
    return ", ".join(f"{v}={values[v]}" if v in values else v for v in names)


@dataclass(frozen=True)
class Query:
    """``P(outcome | do(treatment), given)`` or a counterfactual ``P(cf_outcome | cf_given)``.

    ``values`` maps variables (or counterfactual names) to fixed values; variables without a value
    are free and become axes of evaluated tables.
    """

    outcome: tuple[str, ...]
    treatment: tuple[str, ...] = ()
    given: tuple[str, ...] = ()
    values: tuple[tuple[str, int], ...] = ()
    cf_outcome: tuple[CfVar, ...] = ()
    cf_given: tuple[CfVar, ...] = ()
    text: str = field(default="", compare=False)

    @property
    def is_counterfactual(self) -> bool:
        return bool(self.cf_outcome)

    @property
    def value_map(self) -> dict[str, int]:
        return dict(self.values)

    @property
    def variables(self) -> tuple[str, ...]:
        """The axes of the query's table: outcome, treatment, given (counterfactual names for
        counterfactual queries), whether or not they have values."""
        if self.is_counterfactual:
            return tuple(dict.fromkeys([c.name for c in self.cf_outcome] + [c.name for c in self.cf_given]))
        return self.outcome + self.treatment + self.given

    def graph_variables(self) -> set[str]:
        """Every graph variable the query mentions."""
        if self.is_counterfactual:
            out = set()
            for c in self.cf_outcome + self.cf_given:
                out.add(c.var)
                out |= {k for k, _ in c.do}
            return out
        return set(self.outcome) | set(self.treatment) | set(self.given)

    def __str__(self) -> str:
        vals = self.value_map
        if self.is_counterfactual:
            s = "P(" + ", ".join(str(c) for c in self.cf_outcome)
            if self.cf_given:
                s += " | " + ", ".join(str(c) for c in self.cf_given)
            return s + ")"
        s = "P(" + _fmt_vars(self.outcome, vals)
        conds = []
        if self.treatment:
            conds.append("do(" + _fmt_vars(self.treatment, vals) + ")")
        if self.given:
            conds.append(_fmt_vars(self.given, vals))
        if conds:
            s += " | " + ", ".join(conds)
        return s + ")"

    def latex(self) -> str:
        def tex(v):
            core = v.rstrip("'")
            base = core if len(core) == 1 or "_" in core else r"\mathrm{" + core + "}"
            return base + v[len(core):]

        vals = self.value_map

        def item(v):
            return f"{tex(v)} = {vals[v]}" if v in vals else tex(v)

        if self.is_counterfactual:
            def cf(c):
                base = tex(c.var)
                if c.do:
                    base += "_{" + ", ".join(f"{tex(k)} = {v}" for k, v in c.do) + "}"
                return base + (f" = {c.value}" if c.value is not None else "")

            s = "P(" + ", ".join(cf(c) for c in self.cf_outcome)
            if self.cf_given:
                s += r" \mid " + ", ".join(cf(c) for c in self.cf_given)
            return s + ")"
        s = "P(" + ", ".join(item(v) for v in self.outcome)
        conds = []
        if self.treatment:
            conds.append(r"\mathrm{do}(" + ", ".join(item(v) for v in self.treatment) + ")")
        conds += [item(v) for v in self.given]
        if conds:
            s += r" \mid " + ", ".join(conds)
        return s + ")"


# ----------------------------------------------------------------------------------- tokenizer
_NAME_RE = r"[A-Za-z_](?:[A-Za-z0-9.']|_(?!\{))*"
_TOKEN = re.compile(r"\s*(?:(?P<do>do\s*\()|(?P<sub>_\{)|(?P<name>" + _NAME_RE + r")|(?P<int>-?\d+)|(?P<op>[(),|=}]))")


def _tokens(text: str):
    pos = 0
    out = []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f"cannot parse query {text!r} at position {pos}: {text[pos:pos + 12]!r}")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind).replace(" ", "") if kind == "do" else m.group(kind)))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else (None, None)

    def take(self, kind=None, value=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            want = value or kind or "token"
            got = tok[1] if tok[0] else "end of query"
            raise QueryError(f"cannot parse query {self.text!r}: expected {want!r}, got {got!r}")
        self.i += 1
        return tok[1]

    def at(self, kind=None, value=None) -> bool:
        tok = self.peek()
        return tok[0] is not None and (kind is None or tok[0] == kind) and (value is None or tok[1] == value)

    def value(self) -> int:
        v = self.take("int")
        n = int(v)
        if n < 0:
            raise QueryError(f"negative value {n} in query {self.text!r}; values are 0, 1, ...")
        return n

    def assignment(self, need_value: bool):
        name = self.take("name")
        val = None
        if self.at("op", "="):
            self.take("op", "=")
            val = self.value()
        elif need_value:
            raise QueryError(f"subscript variable {name!r} needs a value in query {self.text!r}, "
                             f"e.g. {name}=1")
        return name, val

    def event(self) -> CfVar:
        name = self.take("name")
        do = []
        if self.at("sub"):
            self.take("sub")
            while True:
                k, v = self.assignment(need_value=True)
                do.append((k, v))
                if self.at("op", ","):
                    self.take("op", ",")
                    continue
                self.take("op", "}")
                break
            keys = [k for k, _ in do]
            if len(set(keys)) != len(keys):
                raise QueryError(f"variable intervened twice in {name}_{{...}} in query {self.text!r}")
        val = None
        if self.at("op", "="):
            self.take("op", "=")
            val = self.value()
        return CfVar(name, tuple(sorted(do)), val)

    def parse(self) -> Query:
        wrapped = False
        if self.at("name", "P") and self.peek(1) == ("op", "("):
            self.take("name")
            self.take("op", "(")
            wrapped = True
        outcome = [self.event()]
        while self.at("op", ","):
            self.take("op", ",")
            outcome.append(self.event())
        treatment: list[tuple[str, int | None]] = []
        given: list[CfVar] = []
        if self.at("op", "|"):
            self.take("op", "|")
            while True:
                if self.at("do"):
                    self.take("do")
                    while True:
                        treatment.append(self.assignment(need_value=False))
                        if self.at("op", ","):
                            self.take("op", ",")
                            continue
                        self.take("op", ")")
                        break
                else:
                    given.append(self.event())
                if self.at("op", ","):
                    self.take("op", ",")
                    continue
                break
        if wrapped:
            self.take("op", ")")
        if self.i != len(self.toks):
            raise QueryError(f"cannot parse query {self.text!r}: unexpected {self.peek()[1]!r}")
        return _build(outcome, treatment, given, self.text)


def _build(outcome: list[CfVar], treatment, given: list[CfVar], text: str) -> Query:
    cf = any(c.do for c in outcome + given)
    if cf:
        if treatment:
            missing = [k for k, v in treatment if v is None]
            if missing:
                raise QueryError(f"do({', '.join(missing)}) in a counterfactual query needs values, "
                                 f"e.g. do({missing[0]}=1)")
            extra = tuple(treatment)

            def add(c: CfVar) -> CfVar:
                d = dict(extra)
                d.update(dict(c.do))
                return CfVar(c.var, tuple(sorted(d.items())), c.value)

            outcome = [add(c) for c in outcome]
            given = [add(c) for c in given]
        names = [c.name for c in outcome]
        if len(set(names)) != len(names):
            raise QueryError(f"a counterfactual variable appears twice among the outcomes of {text!r}")
        return Query(outcome=tuple(c.var for c in outcome), cf_outcome=tuple(outcome),
                     cf_given=tuple(given), text=text,
                     values=tuple((c.name, c.value) for c in outcome + given if c.value is not None))
    vals = {}
    for c in outcome + given:
        if c.value is not None:
            vals[c.var] = c.value
    for k, v in treatment:
        if v is not None:
            vals[k] = v
    return make_query([c.var for c in outcome], [k for k, _ in treatment], [c.var for c in given], vals, text)


def make_query(outcome, treatment=(), given=(), values: Mapping[str, int] | None = None, text: str = "") -> Query:
    """Build an interventional query from name lists, checking that the sets are disjoint."""

    def names(x, what) -> tuple[str, ...]:
        if x is None:
            return ()
        if isinstance(x, str):
            x = [x]
        out = []
        for v in x:
            if not isinstance(v, str):
                raise QueryError(f"{what}: variable names must be strings, got {v!r}")
            if v in out:
                raise QueryError(f"variable {v!r} appears twice in the {what}")
            out.append(v)
        return tuple(out)

    y, x, z = names(outcome, "outcome"), names(treatment, "treatment"), names(given, "conditioning set")
    if not y:
        raise QueryError("the query needs at least one outcome variable")
    for a, b, an, bn in ((y, x, "outcome", "treatment"), (y, z, "outcome", "conditioning set"),
                         (x, z, "treatment", "conditioning set")):
        both = sorted(set(a) & set(b))
        if both:
            raise QueryError(f"variable(s) {both} appear both in the {an} and in the {bn}")
    vals = {}
    for k, v in dict(values or {}).items():
        if k not in set(y) | set(x) | set(z):
            raise QueryError(f"value given for {k!r}, which is not in the query")
        if isinstance(v, bool) or int(v) != v or int(v) < 0:
            raise QueryError(f"value of {k!r} must be a non-negative integer, got {v!r}")
        vals[k] = int(v)
    return Query(outcome=y, treatment=x, given=z, values=tuple(sorted(vals.items())), text=text)


def parse_query(text: str) -> Query:
    """Parse a query string (see the module docstring for the syntax)."""
    if not isinstance(text, str):
        raise QueryError(f"a query must be a string, got {type(text).__name__}")
    if not text.strip():
        raise QueryError("empty query")
    return _Parser(text.strip()).parse()


def is_query_text(s: str) -> bool:
    """True when ``s`` looks like a query rather than a bare variable name or list of names."""
    return any(c in s for c in "(|=") or "_{" in s


def as_names(x) -> tuple[str, ...]:
    if x is None:
        return ()
    if isinstance(x, str):
        parts = [p.strip() for p in x.split(",")]
        return tuple(p for p in parts if p)
    if isinstance(x, Iterable):
        return tuple(x)
    raise QueryError(f"expected variable names, got {x!r}")
