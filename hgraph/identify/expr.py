"""Estimand expressions: probability terms, sums, products and fractions.

An expression is an immutable tree whose leaves are probability terms ``P(H | G)`` of one of the
*available* distributions (the observational ``P(V)`` or an experiment ``P(V | do(Z))``).  Every
argument of a term is a pair ``(variable, value)`` where the value is either a *symbol* (a string:
the name of a free or summed variable of the expression; usually the variable's own name) or a
constant (an ``int``, e.g. from ``P(Y=1 | do(X=0))``).  :class:`Sum` binds symbols; everything
else is free.  Scoping is lexical, so the front-door estimand

    Σ_{M} P(M | X) Σ_{X'} P(X') P(Y | X', M)

is stored with the inner sum binding the symbol ``X`` while the outer ``X`` is free; the primes are
added only when the expression is printed.

The constructors :func:`make_sum`, :func:`make_product` and :func:`make_fraction` simplify as they
build (Tikka & Karvanen 2017 list the same rules):

* a sum over a symbol that occurs only as an outcome of one term marginalises that term
  (``Σ_y P(y, z | x) = P(z | x)``; ``Σ_y P(y | x) = 1``), which telescopes chain-rule products;
* factors that do not depend on the summed symbols move out of the sum and the remaining sum is
  nested by variable elimination (the smallest group of factors first), which gives textbook
  forms such as the front-door formula and keeps numerical evaluation cheap;
* sums over symbols the summand does not mention are dropped: in estimands produced by ID such a
  sum can only come from a normalised factor that has already been summed away;
* products cancel a fraction's denominator against equal factors, fractions cancel common
  factors, and ``P(A, B | C) / P(B | C)`` becomes ``P(A | B, C)``.

Expressions print as text (``str``) and LaTeX (:meth:`Expr.latex`) and evaluate to
:class:`~hgraph.factor.Factor` tables (:func:`evaluate`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from ..factor import Factor

__all__ = [
    "Expr", "PTerm", "Sum", "Product", "Fraction", "Indicator", "ONE", "ZERO", "One", "Zero",
    "make_sum", "make_product", "make_fraction", "ptable", "evaluate", "substitute",
]

Value = "str | int"


# ---------------------------------------------------------------------------------------- base
class Expr:
    """Base class: immutable, hashable by structure (``key``)."""

    __slots__ = ("free", "key", "_hash")

    def _init(self, free: frozenset, key: tuple):
        self.free = free
        self.key = key
        self._hash = hash(key)

    def __eq__(self, other) -> bool:
        return isinstance(other, Expr) and self._hash == other._hash and self.key == other.key

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return render(self, latex=False)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {render(self, latex=False)}>"

    def latex(self) -> str:
        """The expression in LaTeX (math mode, without delimiters)."""
        return render(self, latex=True)

    def evaluate(self, tables, cards: Mapping[str, int] | None = None) -> Factor:
        """Numerical value as a :class:`Factor` over the free symbols (see :func:`evaluate`)."""
        return evaluate(self, tables, cards)

    @property
    def experiments(self) -> frozenset:
        """The do-sets of the distributions the expression reads (``frozenset()`` = P(V))."""
        out = set()
        for t in self.terms():
            out.add(t.experiment)
        return frozenset(out)

    def terms(self):
        """All probability terms, depth first."""
        stack = [self]
        while stack:
            e = stack.pop()
            if isinstance(e, PTerm):
                yield e
            elif isinstance(e, Sum):
                stack.append(e.body)
            elif isinstance(e, Product):
                stack.extend(reversed(e.factors))
            elif isinstance(e, Fraction):
                stack.extend((e.den, e.num))

    def size(self) -> int:
        """Number of nodes of the tree."""
        if isinstance(self, Sum):
            return 1 + self.body.size()
        if isinstance(self, Product):
            return 1 + sum(f.size() for f in self.factors)
        if isinstance(self, Fraction):
            return 1 + self.num.size() + self.den.size()
        return 1


class One(Expr):
    """The constant 1."""

    __slots__ = ()

    def __init__(self):
        self._init(frozenset(), ("one",))


class Zero(Expr):
    """The constant 0 (an inconsistent counterfactual event)."""

    __slots__ = ()

    def __init__(self):
        self._init(frozenset(), ("zero",))


ONE = One()
ZERO = Zero()


def _slots_free(*groups) -> frozenset:
    return frozenset(v for g in groups for _, v in g if isinstance(v, str))


class PTerm(Expr):
    """``P_{do}(head | given)``: a marginal or conditional of an available distribution.

    ``head``, ``given`` and ``do`` are tuples of ``(variable, value)``; ``value`` is a symbol
    (``str``) or a constant (``int``).  ``do`` lists the intervened variables of the experiment
    the term reads (empty for the observational distribution).
    """

    __slots__ = ("head", "given", "do")

    def __init__(self, head, given=(), do=()):
        self.head = tuple(head)
        self.given = tuple(given)
        self.do = tuple(do)
        key = ("P", frozenset(self.head), frozenset(self.given), frozenset(self.do))
        self._init(_slots_free(self.head, self.given, self.do), key)

    # the frozensets of the key: head, given, do
    @property
    def head_set(self) -> frozenset:
        return self.key[1]

    @property
    def given_set(self) -> frozenset:
        return self.key[2]

    @property
    def do_set(self) -> frozenset:
        return self.key[3]

    @property
    def experiment(self) -> frozenset:
        return frozenset(v for v, _ in self.do)

    @property
    def head_vars(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.head)

    @property
    def given_vars(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.given)

    def marginalise(self, sym: str) -> Expr | None:
        """``Σ_sym`` of the term, when ``sym`` occurs exactly once, as an outcome."""
        hits = [i for i, (_, v) in enumerate(self.head) if v == sym]
        if len(hits) != 1:
            return None
        if any(v == sym for _, v in self.given) or any(v == sym for _, v in self.do):
            return None
        head = self.head[:hits[0]] + self.head[hits[0] + 1:]
        if not head:
            return ONE
        return PTerm(head, self.given, self.do)


def ptable(head: Iterable[str], given: Iterable[str] = (), do: Iterable[str] = (),
           fixed: Mapping[str, int] | None = None) -> PTerm:
    """A term whose symbols are the variables' own names (``fixed`` variables get constants)."""
    fixed = fixed or {}

    def slots(vs):
        return tuple((v, fixed.get(v, v)) for v in vs)

    return PTerm(slots(head), slots(given), slots(do))


class Indicator(Expr):
    """``[a = b]`` for two symbols or a symbol and a constant (counterfactual consistency)."""

    __slots__ = ("a", "b", "var")

    def __init__(self, var: str, a, b):
        self.var = var
        self.a, self.b = a, b
        free = frozenset(s for s in (a, b) if isinstance(s, str))
        self._init(free, ("ind", var, frozenset((a, b))))


class Sum(Expr):
    """``Σ_{syms} body`` (use :func:`make_sum`, which simplifies)."""

    __slots__ = ("syms", "body")

    def __init__(self, syms, body: Expr):
        self.syms = tuple(sorted(syms))
        self.body = body
        self._init(body.free - frozenset(self.syms), ("sum", frozenset(self.syms), body))


class Product(Expr):
    """A product of factors (use :func:`make_product`, which simplifies)."""

    __slots__ = ("factors",)

    def __init__(self, factors):
        self.factors = tuple(factors)
        free = frozenset().union(*(f.free for f in self.factors)) if self.factors else frozenset()
        self._init(free, ("prod", frozenset(Counter(self.factors).items())))


class Fraction(Expr):
    """``num / den`` with the convention 0/0 = 0 (use :func:`make_fraction`)."""

    __slots__ = ("num", "den")

    def __init__(self, num: Expr, den: Expr):
        self.num, self.den = num, den
        self._init(num.free | den.free, ("frac", num, den))


# ---------------------------------------------------------------------------------- simplifier
def _flat_factors(e: Expr) -> list[Expr]:
    if isinstance(e, Product):
        return list(e.factors)
    if isinstance(e, One):
        return []
    return [e]


def make_product(factors: Iterable[Expr]) -> Expr:
    """Product with ones dropped, nested products flattened and denominators cancelled
    against equal factors (``D * N / D = N``)."""
    flat: list[Expr] = []
    for f in factors:
        if isinstance(f, Zero):
            return ZERO
        flat.extend(_flat_factors(f))
    if len(flat) <= 1:
        return flat[0] if flat else ONE
    if any(isinstance(f, Zero) for f in flat):
        return ZERO
    changed = True
    while changed and len(flat) > 1:
        changed = False
        for i, f in enumerate(flat):
            if not isinstance(f, Fraction):
                continue
            den = _flat_factors(f.den)
            others = flat[:i] + flat[i + 1:]
            pool = Counter(others)
            need = Counter(den)
            common = need & pool
            if not common:
                continue
            # remove the cancelled factors from the others and from the denominator
            rest_others, rm = [], Counter(common)
            for o in others:
                if rm[o] > 0:
                    rm[o] -= 1
                else:
                    rest_others.append(o)
            rest_den, rm = [], Counter(common)
            for d in den:
                if rm[d] > 0:
                    rm[d] -= 1
                else:
                    rest_den.append(d)
            new = make_fraction(f.num, make_product(rest_den)) if rest_den else f.num
            flat = rest_others + _flat_factors(new)
            changed = True
            break
    flat = _merge_chain(flat)
    if not flat:
        return ONE
    if len(flat) == 1:
        return flat[0]
    # sums last (they extend to the right when printed), otherwise keep the given order
    flat.sort(key=lambda f: isinstance(f, Sum))
    return Product(flat)


def _merge_chain(flat: list[Expr]) -> list[Expr]:
    """Chain rule backwards: ``P(A | C) P(B | A, C) = P(A, B | C)`` (same distribution)."""
    terms = [f for f in flat if isinstance(f, PTerm)]
    if len(terms) < 2:
        return flat
    # cheap pre-check: a merge needs |given(b)| = |given(a)| + |head(a)|
    glen = {len(f.given) for f in terms}
    if not any(len(a.given) + len(a.head) in glen for a in terms):
        return flat
    while True:
        by_given: dict = {}
        for j, b in enumerate(flat):
            if isinstance(b, PTerm):
                by_given.setdefault((b.given_set, b.do_set), []).append(j)
        hit = None
        for i, a in enumerate(flat):
            if not isinstance(a, PTerm):
                continue
            cands = by_given.get((a.given_set | a.head_set, a.do_set))
            if not cands:
                continue
            avars = {v for v, _ in a.head} | {v for v, _ in a.given}
            for j in cands:
                if j != i and not ({v for v, _ in flat[j].head} & avars):
                    hit = (i, j)
                    break
            if hit:
                break
        if hit is None:
            return flat
        i, j = hit
        a, b = flat[i], flat[j]
        new = PTerm(a.head + b.head, a.given, a.do)
        flat = [new if k == i else f for k, f in enumerate(flat) if k != j]


def make_fraction(num: Expr, den: Expr) -> Expr:
    """``num / den`` with common factors cancelled and ``P(A,B|C) / P(B|C) = P(A|B,C)``."""
    if isinstance(den, One):
        return num
    if isinstance(num, Zero):
        return ZERO
    if num == den:
        return ONE
    nf, df = _flat_factors(num), _flat_factors(den)
    common = Counter(nf) & Counter(df)
    if common:
        def strip(fs):
            rm = Counter(common)
            out = []
            for f in fs:
                if rm[f] > 0:
                    rm[f] -= 1
                else:
                    out.append(f)
            return out

        nf, df = strip(nf), strip(df)
        num, den = make_product(nf), make_product(df)
        if isinstance(den, One):
            return num
    if isinstance(num, PTerm) and isinstance(den, PTerm):
        c = _conditional(num, den)
        if c is not None:
            return c
    if isinstance(num, Fraction) and not isinstance(den, Fraction):
        return make_fraction(num.num, make_product([num.den, den]))
    return Fraction(num, den)


def _conditional(num: PTerm, den: PTerm) -> PTerm | None:
    if set(num.given) != set(den.given) or set(num.do) != set(den.do):
        return None
    dh = set(den.head)
    if not dh <= set(num.head) or dh == set(num.head):
        return None
    head = tuple(s for s in num.head if s not in dh)
    given = tuple(s for s in num.head if s in dh) + num.given
    return PTerm(head, given, num.do)


def _eliminate_one(sym: str, f: Expr) -> Expr | None:
    """``Σ_sym f`` when ``f`` is the only factor mentioning ``sym``; None if it does not simplify
    to something local."""
    if isinstance(f, PTerm):
        return f.marginalise(sym)
    if isinstance(f, Fraction) and sym not in f.den.free:
        inner = make_sum([sym], f.num)
        return make_fraction(inner, f.den)
    if isinstance(f, Sum):
        return make_sum((sym,) + f.syms, f.body)
    return None


def make_sum(syms: Iterable[str], body: Expr) -> Expr:
    """``Σ_{syms} body``, simplified (see the module docstring)."""
    syms = set(syms) & body.free
    if not syms:
        return body
    if isinstance(body, Zero):
        return ZERO
    if isinstance(body, Sum):
        # Σ_a Σ_b f = Σ_{a,b} f (a is free in Σ_b f, hence a != b)
        return make_sum(syms | set(body.syms), body.body)
    if isinstance(body, Fraction) and not (syms & body.den.free):
        return make_fraction(make_sum(syms, body.num), body.den)
    factors = _flat_factors(body)
    # open nested sums whose bound symbols do not clash, so that telescoping sees all factors
    opened: list[Expr] = []
    for f in factors:
        if isinstance(f, Sum) and (f.free & syms):
            others_free = set(syms)
            for g in factors:
                if g is not f:
                    others_free |= g.free
            if not (set(f.syms) & others_free):
                syms |= set(f.syms)
                opened.extend(_flat_factors(f.body))
                continue
        opened.append(f)
    factors = opened
    outside = [f for f in factors if not (f.free & syms)]
    inside: list = [f for f in factors if f.free & syms]
    # telescoping / marginalisation of terms that are the only ones mentioning a symbol
    occ: dict[str, set] = {s: set() for s in syms}
    for i, f in enumerate(inside):
        for t in f.free & syms:
            occ[t].add(i)
    work = sorted((s for s in syms if len(occ[s]) <= 1), reverse=True)
    while work:
        s = work.pop()
        if s not in syms:
            continue
        ids = occ[s]
        if not ids:
            syms.discard(s)
            continue
        if len(ids) > 1:
            continue
        i = next(iter(ids))
        old = inside[i]
        g = _eliminate_one(s, old)
        if g is None:
            continue
        syms.discard(s)
        del occ[s]
        inside[i] = None
        touched = set()
        for t in old.free & syms:
            occ[t].discard(i)
            touched.add(t)
        for h in _flat_factors(g):
            hs = h.free & syms
            if not hs:
                outside.append(h)
                continue
            j = len(inside)
            inside.append(h)
            for t in hs:
                occ[t].add(j)
                touched.add(t)
        work.extend(sorted((t for t in touched if len(occ[t]) <= 1), reverse=True))
    inside = [f for f in inside if f is not None]
    if not syms:
        return make_product(outside + inside)
    return make_product(outside + _nest(syms, inside))


def _nest(syms: set, factors: list[Expr]) -> list[Expr]:
    """Variable elimination: repeatedly sum out the symbol that occurs in the fewest factors
    (with every other symbol confined to those factors); the first eliminated is the innermost
    sum.  Independent groups of factors become separate sums."""
    items: list = list(factors)
    fs = [f.free & syms for f in items]
    occ: dict[str, set] = {s: set() for s in syms}
    for i, ss in enumerate(fs):
        for t in ss:
            occ[t].add(i)
    remaining = set(syms)
    while remaining:
        s = min(remaining, key=lambda t: (len(occ[t]), t))
        group = occ[s]
        touched = set().union(*(fs[i] for i in group))
        inner = {t for t in touched if t in remaining and occ[t] <= group}
        new = Sum(inner, make_product([items[i] for i in sorted(group)]))
        new_fs = touched - inner
        for i in group:
            items[i] = None
        j = len(items)
        items.append(new)
        fs.append(new_fs)
        for t in new_fs:
            occ[t] -= group
            occ[t].add(j)
        remaining -= inner
        for t in inner:
            del occ[t]
    return [f for f in items if f is not None]


# ------------------------------------------------------------------------------ substitution
def substitute(e: Expr, mapping: Mapping[str, object]) -> Expr:
    """Replace free symbols: ``mapping[sym]`` is a new symbol (``str``) or a constant (``int``).
    Bound symbols are renamed when they would capture a new symbol."""
    mapping = {k: v for k, v in mapping.items() if k in e.free and v != k}
    if not mapping:
        return e
    if isinstance(e, PTerm):
        def sub(slots):
            return tuple((var, mapping.get(val, val) if isinstance(val, str) else val) for var, val in slots)

        return PTerm(sub(e.head), sub(e.given), sub(e.do))
    if isinstance(e, Indicator):
        a = mapping.get(e.a, e.a) if isinstance(e.a, str) else e.a
        b = mapping.get(e.b, e.b) if isinstance(e.b, str) else e.b
        if not isinstance(a, str) and not isinstance(b, str):
            return ONE if a == b else ZERO
        return Indicator(e.var, a, b)
    if isinstance(e, Product):
        return make_product([substitute(f, mapping) for f in e.factors])
    if isinstance(e, Fraction):
        return make_fraction(substitute(e.num, mapping), substitute(e.den, mapping))
    if isinstance(e, Sum):
        incoming = {v for v in mapping.values() if isinstance(v, str)}
        body = e.body
        syms = list(e.syms)
        clash = [s for s in syms if s in incoming]
        if clash:
            taken = set(body.free) | incoming | set(mapping) | set(syms)
            ren = {}
            for s in clash:
                ren[s] = _fresh(s, taken)
                taken.add(ren[s])
            body = substitute(body, ren)
            syms = [ren.get(s, s) for s in syms]
        inner = {k: v for k, v in mapping.items() if k not in syms}
        return make_sum(syms, substitute(body, inner))
    return e


def _fresh(s: str, taken) -> str:
    t = s + "'"
    while t in taken:
        t += "'"
    return t


# ---------------------------------------------------------------------------------- rendering
_GREEK_SUM = "Σ"


def _tex_base(b: str) -> str:
    return b if len(b) == 1 else r"\mathrm{" + b + "}"


def _tex_name(name: str) -> str:
    core = name.rstrip("'")
    primes = name[len(core):]
    if "{" in core:
        return name
    if "_" in core:
        base, rest = core.split("_", 1)
        return _tex_base(base) + "_{" + rest.replace("_", r"\_") + "}" + primes
    return _tex_base(core) + primes


def _slot_text(var, val, scope, latex):
    if isinstance(val, str):
        shown = scope.get(val, val)
        if shown == var or (shown.startswith(var) and set(shown[len(var):]) <= {"'"}):
            return _tex_name(shown) if latex else shown
        return (f"{_tex_name(var)} = {_tex_name(shown)}" if latex else f"{var}={shown}")
    return f"{_tex_name(var)} = {val}" if latex else f"{var}={val}"


def _render_p(t: PTerm, scope, latex) -> str:
    head = ", ".join(_slot_text(v, s, scope, latex) for v, s in t.head)
    given = [_slot_text(v, s, scope, latex) for v, s in t.given]
    if latex:
        sub = ""
        if t.do:
            sub = "_{" + ", ".join(_slot_text(v, s, scope, latex) for v, s in t.do) + "}"
        body = head + (r" \mid " + ", ".join(given) if given else "")
        return f"P{sub}({body})"
    parts = []
    if t.do:
        parts.append("do(" + ", ".join(_slot_text(v, s, scope, latex) for v, s in t.do) + ")")
    parts += given
    return f"P({head}" + (" | " + ", ".join(parts) if parts else "") + ")"


def render(e: Expr, latex: bool = False, scope: dict | None = None, used: set | None = None,
           reserved=()) -> str:
    """Text or LaTeX.  Summed symbols that clash with a free symbol, an enclosing summed symbol or
    a ``reserved`` name (e.g. the query's variables) are printed with primes."""
    if scope is None:
        scope = {s: s for s in e.free}
        used = set(e.free) | set(reserved)
    if isinstance(e, One):
        return "1"
    if isinstance(e, Zero):
        return "0"
    if isinstance(e, PTerm):
        return _render_p(e, scope, latex)
    if isinstance(e, Indicator):
        a = scope.get(e.a, e.a) if isinstance(e.a, str) else e.a
        b = scope.get(e.b, e.b) if isinstance(e.b, str) else e.b
        return (rf"\mathbb{{1}}[{a} = {b}]" if latex else f"[{a} = {b}]")
    if isinstance(e, Sum):
        scope = dict(scope)
        used = set(used)
        names = []
        for s in e.syms:
            name = s
            while name in used:
                name += "'"
            scope[s] = name
            used.add(name)
            names.append(name)
        body = render(e.body, latex, scope, used)
        if latex:
            return r"\sum_{" + ", ".join(_tex_name(n) for n in names) + "} " + body
        return f"{_GREEK_SUM}_{{{', '.join(names)}}} " + body
    if isinstance(e, Product):
        parts = []
        n = len(e.factors)
        for i, f in enumerate(e.factors):
            s = render(f, latex, scope, used)
            if isinstance(f, Sum) and i < n - 1:
                s = (r"\left[" + s + r"\right]") if latex else f"[{s}]"
            elif isinstance(f, Fraction) and not latex:
                s = f"({s})"
            parts.append(s)
        return (r" \, " if latex else " ").join(parts)
    if isinstance(e, Fraction):
        num = render(e.num, latex, scope, used)
        den = render(e.den, latex, scope, used)
        if latex:
            return r"\frac{" + num + "}{" + den + "}"
        if not isinstance(e.num, (PTerm, One)):
            num = f"[{num}]"
        if not isinstance(e.den, PTerm):
            den = f"[{den}]"
        return f"{num} / {den}"
    raise TypeError(f"cannot render {type(e).__name__}")


# --------------------------------------------------------------------------------- evaluation
def _key_of_experiment(k) -> frozenset:
    """Normalise a table key: (), None, '', 'P(V)', 'obs' -> frozenset(); 'do(X, Z)', 'X,Z',
    ('X', 'Z'), {'X'} -> frozenset({'X', 'Z'})."""
    if k is None:
        return frozenset()
    if isinstance(k, str):
        s = k.strip()
        if s in ("", "P(V)", "obs", "observational", "P", "V"):
            return frozenset()
        m = re.fullmatch(r"(?:P\(\s*V\s*\|\s*)?do\((.*)\)\)?", s)
        if m:
            s = m.group(1)
        return frozenset(x.strip() for x in s.split(",") if x.strip())
    return frozenset(k)


class Tables:
    """The numbers an estimand is evaluated on: the observational joint and, for surrogate
    experiments, ``P(V \\ Z | do(Z))`` tables.

    Accepted inputs (``tables`` argument of :meth:`Estimand.evaluate`):

    * a :class:`Factor`: the observational joint ``P(V)``;
    * a mapping ``experiment -> Factor``: the key ``()``/``'P(V)'``/``None`` is the observational
      joint; a key ``'do(Z1, Z2)'``, ``('Z1', 'Z2')`` or ``frozenset`` names an experiment whose
      Factor is over all observed variables and holds ``P(v \\ z | do(z))`` at every ``(z, v)``
      (the layout of :meth:`hgraph.DiscreteSCM.do_table`);
    * any object with ``joint()`` and ``do_table(z)`` methods (e.g. a ``DiscreteSCM``); tables
      are then computed on demand, only for the experiments the estimand reads.
    """

    def __init__(self, source):
        self._source = source
        self._tables: dict[frozenset, Factor] = {}
        if isinstance(source, Tables):
            self._source = source._source
            self._tables = source._tables
        elif isinstance(source, Factor):
            self._tables[frozenset()] = source
        elif isinstance(source, Mapping):
            for k, v in source.items():
                if not isinstance(v, Factor):
                    raise TypeError(f"table for {k!r} must be a Factor, got {type(v).__name__}")
                self._tables[_key_of_experiment(k)] = v
        elif not (hasattr(source, "joint") and hasattr(source, "do_table")):
            raise TypeError("tables must be a Factor, a mapping experiment -> Factor or an object "
                            "with joint() and do_table(z) (e.g. a DiscreteSCM)")
        self._cache: dict = {}

    def table(self, experiment: frozenset) -> Factor:
        t = self._tables.get(experiment)
        if t is None:
            src = self._source
            if hasattr(src, "joint") and hasattr(src, "do_table"):
                t = src.joint() if not experiment else src.do_table(sorted(experiment))
                self._tables[experiment] = t
            else:
                what = "the observational distribution P(V)" if not experiment else \
                    f"the experiment P(V | do({', '.join(sorted(experiment))}))"
                raise KeyError(f"the estimand needs {what}, which the tables do not provide")
        return t

    def cards(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self._tables.values():
            out.update(t.card_map())
        if not out:
            src = self._source
            if hasattr(src, "cards"):
                out.update({k: int(v) for k, v in dict(src.cards).items()})
            else:
                out.update(self.table(frozenset()).card_map())
        return out

    def conditional(self, experiment: frozenset, head: tuple, given: tuple) -> Factor:
        """``P_do(head | given)`` over head + given + experiment variables."""
        key = (experiment, head, given)
        f = self._cache.get(key)
        if f is None:
            t = self.table(experiment)
            cond = tuple(given) + tuple(v for v in t.vars if v in experiment and v not in given)
            j = t.marginal(tuple(head) + cond)
            f = j / j.marginal(cond) if cond else j
            self._cache[key] = f
        return f


def _rename(f: Factor, slots: list[tuple[str, object]]) -> Factor:
    """Fix constant slots and rename variables to symbols (equal symbols take the diagonal)."""
    ev = {var: val for var, val in slots if not isinstance(val, str)}
    if ev:
        f = f.reduce(ev)
    sym_of = {var: val for var, val in slots if isinstance(val, str)}
    out_syms: list[str] = []
    ids = []
    for v in f.vars:
        s = sym_of[v]
        if s not in out_syms:
            out_syms.append(s)
        ids.append(out_syms.index(s))
    if len(out_syms) == len(f.vars):
        return Factor(out_syms, f.values)
    vals = np.einsum(f.values, ids, list(range(len(out_syms))))
    return Factor(out_syms, vals)


def evaluate(e: Expr, tables, cards: Mapping[str, int] | None = None, _memo=None) -> Factor:
    """Evaluate ``e`` on ``tables`` (anything :class:`Tables` accepts): a Factor over the free
    symbols of ``e``.  Cardinalities of symbols bound to a variable are read from the tables."""
    if not isinstance(tables, Tables):
        tables = Tables(tables)
    if _memo is None:
        _memo = {}
    if cards is None:
        cards = tables.cards()
    got = _memo.get(e)
    if got is not None:
        return got
    if isinstance(e, One):
        out = Factor.scalar(1.0)
    elif isinstance(e, Zero):
        out = Factor.scalar(0.0)
    elif isinstance(e, PTerm):
        head = tuple(v for v, _ in e.head)
        given = tuple(v for v, _ in e.given)
        f = tables.conditional(e.experiment, head, given)
        slots = list(e.head) + list(e.given) + [s for s in e.do if s[0] not in given]
        out = _rename(f, slots)
    elif isinstance(e, Indicator):
        a, b = e.a, e.b
        k = cards[e.var]
        if isinstance(a, str) and isinstance(b, str):
            out = Factor((a, b), np.eye(k))
        else:
            s, c = (a, b) if isinstance(a, str) else (b, a)
            vals = np.zeros(k)
            vals[int(c)] = 1.0
            out = Factor((s,), vals)
    elif isinstance(e, Sum):
        out = evaluate(e.body, tables, cards, _memo).sum_out(e.syms)
    elif isinstance(e, Product):
        out = Factor.scalar(1.0)
        for f in e.factors:
            out = out * evaluate(f, tables, cards, _memo)
    elif isinstance(e, Fraction):
        out = evaluate(e.num, tables, cards, _memo) / evaluate(e.den, tables, cards, _memo)
    else:
        raise TypeError(f"cannot evaluate {type(e).__name__}")
    _memo[e] = out
    return out
