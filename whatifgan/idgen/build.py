"""ID-GEN (Algorithm 1) and IDC-GEN (Algorithm 5): train a sampling network for any identifiable
``P(y | do(x))`` or ``P(y | do(x), z)`` by replaying the identification trace.

:func:`idgen` identifies the query with :func:`hgraph.identify` (so a non-identifiable query
raises :class:`~hgraph.identify.NotIdentifiable` before anything is trained) and walks the
recursion trace (:class:`hgraph.identify.TraceNode`), one ID-GEN step per trace node:

* **lines 1 and 6** -- ConditionalGMs (Algorithm 2): one conditional model per variable of the
  call, on its predecessors ``v_π^{(i-1)}`` in the topological order of ``\\hat G`` (the trace
  factor's ``inputs``: interventions ``X`` and earlier Update interventions ``\\hat X`` are fed as
  inputs), trained on the current dataset ``D``;
* **lines 2 and 3** -- the graph changes only (drop non-ancestors; add ``W`` to the interventions);
* **line 4** -- MergeNetwork (Algorithm 3): the networks of the c-factors are joined, each
  variable's model node feeding the other networks' empty input nodes of that variable;
* **line 7** -- Update (Algorithm 4): ConditionalGMs on ``S'`` (inputs ``X_Z = X \\ S'`` and
  ``\\hat X``), a new dataset ``D' ~ P_{x_z}(S')`` sampled from them with ``X_Z`` drawn uniformly
  (or from ``P(X_Z)``) and recorded, and the recursion continues on ``D'`` with
  ``\\hat X = \\hat X ∪ X_Z``;
* **IDC** -- IDC-GEN (Algorithm 5): the conditioning variables that rule 2 moves into the
  intervention are the IDC trace's ``added``; ID-GEN builds ``H1`` for ``P_{x ∪ α}(y, z \\ α)``,
  a dataset is sampled from it with ``X ∪ α`` drawn at random, and a final conditional model
  ``M_Y(X ∪ α, Z \\ α)`` is trained on it (one model per outcome variable, chained).

Contexts.  A call returns model nodes for its outcome ``y`` in the query's namespace; models of the
variables it sums out (``S \\ y``, the non-outcome variables of Update's ``S'``) become nodes of
their own context, so ``X`` and ``X'`` are different nodes (Appendix C.2).

Update networks.  When the recursion under a line 7 reaches line 1 (through line-2 marginalisations
only), the Update's own models already sample ``P_{x_z}(S')``, whose marginal is what line 1 would
train on ``D'``; with ``reuse_update=True`` (default) they are used directly, as the paper's
figures draw it (Figure 3: ``M_X(W1', W2)`` with ``M_{W1'}``; Figure 2: ``M_W2(X', W1)`` with
``M_{X'}``).  ``reuse_update=False`` follows Algorithm 1 literally (train ``M_X(W2)`` on ``D'``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hgraph import ADMG
from hgraph.identify import Estimand, NotIdentifiable, TraceNode, identify, parse_available

from ..variables import Categorical, Continuous, Image, Variable, VariableSet
from .backends import Backend, ConditionalModel, MarginalSource, default_backend, make_backend
from .cache import DataTable, ModelCache
from .network import DataInfo, Node, NodeId, SamplingNetwork

__all__ = ["idgen", "idgen_plan", "infer_variables", "IDGenOptions"]


# ----------------------------------------------------------------------------------------------
# options, data
# ----------------------------------------------------------------------------------------------
@dataclass
class IDGenOptions:
    """Settings of :func:`idgen` (see its docstring)."""

    inputs: str = "predecessors"      #: "predecessors" (Algorithm 2) or "reduced" (Tian-Pearl set)
    x_z: str = "auto"                 #: how Update/IDC-GEN draw interventions: uniform/empirical/auto
    arbitrary: str = "empirical"      #: sources of line-3 variables: "empirical" (P(w)) or "uniform"
    n_update: int | None = None       #: rows of each D' (default: rows of the dataset it replaces)
    n_final: int | None = None        #: rows sampled from H1 for IDC-GEN's final model
    #: (default: max(rows of D, 100000) -- sampling H1 is cheap and conditionals amplify noise)
    reuse_update: bool = True
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        if self.inputs not in ("predecessors", "reduced"):
            raise ValueError(f"inputs must be 'predecessors' or 'reduced', got {self.inputs!r}")
        if self.x_z not in ("auto", "uniform", "empirical"):
            raise ValueError(f"x_z must be 'auto', 'uniform' or 'empirical', got {self.x_z!r}")
        if self.arbitrary not in ("uniform", "empirical"):
            raise ValueError(f"arbitrary must be 'uniform' or 'empirical', got {self.arbitrary!r}")


def _seed(*parts: Any) -> int:
    return int(hashlib.sha1(repr(parts).encode()).hexdigest()[:8], 16)


def infer_variables(data: Mapping[str, Any]) -> VariableSet:
    """Variable specs guessed from data: integer columns are categorical with ``k = max + 1``
    (at least 2), 1-D/2-D floats continuous, 3-D/4-D arrays images.  Pass explicit specs when the
    data may miss states."""
    out = []
    for name, col in data.items():
        a = col.detach().cpu().numpy() if isinstance(col, Tensor) else np.asarray(col)
        if a.dtype.kind in "iub" and a.ndim == 1:
            out.append(Categorical(name, max(2, int(a.max()) + 1 if a.size else 2)))
        elif a.ndim in (1, 2):
            out.append(Continuous(name, 1 if a.ndim == 1 else a.shape[1]))
        elif a.ndim == 3:
            out.append(Image(name, (1, *a.shape[1:])))
        elif a.ndim == 4:
            out.append(Image(name, a.shape[1:], (0.0, 1.0)))
        else:
            raise ValueError(f"cannot infer a variable spec for column {name!r} of shape {a.shape}")
    return VariableSet(out)


def _columns(data: Any) -> Mapping[str, Any]:
    if data is None:
        raise ValueError("no training data given")
    cols = getattr(data, "columns", None)
    if isinstance(cols, Mapping):
        return cols
    if isinstance(data, Mapping):
        return data
    raise TypeError(f"training data must be a whatifgan Dataset or a mapping of columns, got "
                    f"{type(data).__name__}")


def _to_table(data: Any, variables: VariableSet, device, name: str, description: str) -> DataTable:
    cols = {}
    for k, col in _columns(data).items():
        if k not in variables:
            continue
        v = variables[k]
        if v.kind == "categorical":
            t = col if isinstance(col, Tensor) else torch.as_tensor(np.asarray(col))
            v.validate(t)
            cols[k] = t.reshape(-1).long().to(device)
        else:
            cols[k] = v.encode(col, device)
    if not cols:
        raise ValueError(f"dataset {name!r} has no column of a known variable ({list(variables)})")
    table = DataTable(cols)
    table.info = DataInfo(name, table.n, table.fingerprint(), description, tuple(cols))
    return table


# ----------------------------------------------------------------------------------------------
# replay
# ----------------------------------------------------------------------------------------------
class _Placeholder(ConditionalModel):
    """Stands for a model in a dry run (:func:`idgen_plan`)."""

    kind = "untrained"

    def __init__(self, variable, inputs, backend: str):
        super().__init__(variable, inputs)
        self.backend = backend

    def describe(self) -> str:
        return f"{self.backend} (not trained)"


@dataclass
class _Update:
    """One line-7 Update: its models (ConditionalGMs on S') and the lazily generated D'."""

    trace: TraceNode
    models: dict[str, Node]                 #: S' variable -> model node (query namespace ids)
    order: list[str]                        #: S' in topological order
    x_z: tuple[str, ...]
    old_hat_x: tuple[str, ...]
    source: Any                             #: the _Ctx whose data trained the models
    path: str
    dataset: DataTable | None = None


@dataclass
class _Ctx:
    data: Any                               #: DataTable or _Update (lazy D')
    hat_x: tuple[str, ...] = ()
    experiment: frozenset = frozenset()
    generated: bool = False
    update: _Update | None = None           #: a line-7 Update reached through line-2 steps only


class _Builder:
    def __init__(self, g: ADMG, variables: VariableSet, backends: Mapping[str, Backend],
                 cache: ModelCache, opts: IDGenOptions, base: Mapping[frozenset, DataTable],
                 dry: bool = False):
        self.g = g
        self.variables = variables
        self.backends = backends
        self.cache = cache
        self.opts = opts
        self.base = base
        self.dry = dry
        self.device = torch.device(opts.device) if opts.device else None
        self.datasets: list[DataInfo] = [t.info for t in base.values()]
        self.n_generated = 0
        self.trained_here = 0
        self.hits_here = 0
        self.line3: set[str] = set()

    # ------------------------------------------------------------------ data
    def table(self, ctx: _Ctx) -> DataTable:
        d = ctx.data
        if isinstance(d, _Update):
            if d.dataset is None:
                d.dataset = self.generate(d)
            return d.dataset
        return d

    def draw_mode(self, var: Variable) -> str:
        m = self.opts.x_z
        if m == "auto":
            return "uniform" if var.kind == "categorical" else "empirical"
        if m == "uniform" and var.kind != "categorical":
            return "empirical"
        return m

    def draw(self, var: Variable, n: int, source: DataTable | None, gen: torch.Generator, dev) -> Tensor:
        mode = self.draw_mode(var)
        if mode == "uniform":
            return torch.randint(0, var.k, (n,), generator=gen).to(dev)
        if source is None or var.name not in source:
            raise ValueError(f"cannot draw {var.name!r} from P({var.name}): the data have no such "
                             f"column; use x_z='uniform'")
        col = source[var.name]
        idx = torch.randint(0, col.shape[0], (n,), generator=gen).to(col.device)
        return col[idx]

    def generate(self, upd: _Update) -> DataTable:
        """Algorithm 4, line 3: ``D' ~ H(X_Z, \\hat X)`` -- ``X_Z`` drawn (uniform or ``P(X_Z)``),
        the earlier ``\\hat X`` resampled jointly from the rows of ``D``, then ``S'`` ancestrally
        from the Update's models."""
        src = self.table(upd.source)
        n = self.opts.n_update or src.n
        self.n_generated += 1
        name = f"D'{self.n_generated}"
        modes = {v: self.draw_mode(self.variables[v]) for v in upd.x_z}
        desc = (f"do({', '.join(f'{v} ~ {modes[v]}' for v in upd.x_z)})"
                + (f" with \\hat X = {{{', '.join(upd.old_hat_x)}}} resampled from {src.info.name}"
                   if upd.old_hat_x else "")
                + f", S' = {{{', '.join(upd.order)}}} sampled by the Update models trained on "
                  f"{src.info.name} (ID line 7 at trace node {upd.path})")
        gen_info = [{"variable": v, "inputs": list(upd.models[v].wiring),
                     "model": upd.models[v].model.describe()} for v in upd.order]
        if self.dry:
            table = DataTable({})
            table.info = DataInfo(name, n, "dry-run", desc,
                                  tuple(upd.old_hat_x + upd.x_z + tuple(upd.order)), gen_info)
            self.datasets.append(table.info)
            return table
        keys = [src.fingerprint([c for c in upd.old_hat_x])] + [
            f"{v}:{getattr(upd.models[v].model, 'cache_key', '')}" for v in upd.order]
        seed = _seed(self.opts.seed, "D'", keys, upd.x_z, modes, n)
        gen = torch.Generator().manual_seed(seed)
        dev = src[next(iter(src.columns))].device
        cols: dict[str, Tensor] = {}
        if upd.old_hat_x:
            idx = torch.randint(0, src.n, (n,), generator=gen).to(dev)
            for h in upd.old_hat_x:
                cols[h] = src[h][idx]
        for v in upd.x_z:
            cols[v] = self.draw(self.variables[v], n, src, gen, dev)
        mgen = torch.Generator(device=dev).manual_seed(seed + 1)
        for v in upd.order:
            nd = upd.models[v]
            cols[v] = nd.model.sample({u: cols[u] for u in nd.wiring}, n, mgen)
        table = DataTable(cols)
        table.info = DataInfo(name, n, table.fingerprint(), desc, tuple(cols), gen_info)
        self.datasets.append(table.info)
        return table

    # ------------------------------------------------------------------ models
    def backend(self, var: str) -> Backend:
        return self.backends[var]

    def model_inputs(self, t: TraceNode, f) -> tuple[str, ...]:
        if self.opts.inputs == "predecessors":
            return tuple(f.inputs)
        keep = set(f.given) | (set(t.hat_x) & set(f.inputs))
        return tuple(u for u in f.inputs if u in keep)

    def train(self, var: str, inputs: Sequence[str], ctx: _Ctx) -> tuple[ConditionalModel, bool, DataInfo]:
        spec = self.variables[var]
        in_specs = {u: self.variables[u] for u in inputs}
        be = self.backend(var)
        table = self.table(ctx)
        if self.dry:
            return _Placeholder(spec, in_specs, be.name), False, table.info
        cols = [var, *inputs]
        if not be.trains:  # a frozen plug-in: no training data needed (its column may be absent)
            model = be.fit(spec, in_specs, {c: table[c] for c in cols if c in table}, seed=self.opts.seed,
                           device=self.device)
            model.cache_key = f"pretrained:{be.fingerprint()}"
            return model, False, table.info
        for c in cols:
            table[c]  # raises a KeyError naming the dataset
        fp = table.fingerprint(cols)
        key = ModelCache.key(var, list(inputs), fp, be.fingerprint(), self.opts.seed)
        seed = _seed(self.opts.seed, key)

        def fit():
            return be.fit(spec, in_specs, {c: table[c] for c in cols}, seed=seed, device=self.device)

        model, hit = self.cache.get_or_train(key, fit)
        if self.device is not None:
            model.to(self.device)
        model.cache_key = key
        if hit:
            self.hits_here += 1
        else:
            self.trained_here += 1
        return model, hit, table.info

    def conditional_gms(self, t: TraceNode, ctx: _Ctx, origin: str) -> dict[NodeId, Node]:
        """Algorithm 2: one model per factor ``P(v_i | v_π^{(i-1)})`` of the trace node."""
        out: dict[NodeId, Node] = {}
        for f in t.factors:
            inputs = self.model_inputs(t, f)
            model, hit, info = self.train(f.variable, inputs, ctx)
            out[(f.variable, "")] = Node((f.variable, ""), "model", model,
                                         {u: (u, "") for u in inputs}, origin, info, hit)
        return out

    # ------------------------------------------------------------------ recursion
    @staticmethod
    def export(nodes: dict[NodeId, Node], y: Sequence[str], path: str) -> dict[NodeId, Node]:
        """Keep the models of ``y`` in the query namespace; move the others (summed out by this
        call) to the context ``path``, rewiring their readers."""
        ys = set(y)
        moved = {i: (i[0], path) for i, nd in nodes.items() if i[1] == "" and i[0] not in ys}
        if not moved:
            return nodes
        out = {}
        for i, nd in nodes.items():
            nid = moved.get(i, i)
            wiring = {u: moved.get(src, src) for u, src in nd.wiring.items()}
            out[nid] = replace(nd, id=nid, wiring=wiring)
        return out

    def visit(self, t: TraceNode, ctx: _Ctx, path: str) -> dict[NodeId, Node]:
        if t.algorithm != "ID":
            raise ValueError(f"ID-GEN replays ID traces; got a {t.algorithm} node inside the recursion")
        if not ctx.generated and frozenset(t.experiment) != ctx.experiment:
            z = frozenset(t.experiment)
            if z not in self.base:
                raise ValueError(f"the identification reads P(V | do({', '.join(sorted(z))})) but no "
                                 f"such dataset was given")
            ctx = _Ctx(self.base[z], ctx.hat_x, z)
        line = t.line
        if line == 1:
            nodes = self.line1(t, ctx, path)
        elif line == 2:
            nodes = self.visit(t.children[0], ctx, path + ".1")
        elif line == 3:
            self.line3 |= set(t.added)
            nodes = self.visit(t.children[0], replace(ctx, update=None), path + ".1")
        elif line == 4:
            nodes = {}
            for i, c in enumerate(t.children):
                sub = self.visit(c, replace(ctx, update=None), f"{path}.{i + 1}")
                for k, nd in sub.items():  # MergeNetwork (Algorithm 3): union, matched by variable
                    if k in nodes and nodes[k] is not nd:
                        raise RuntimeError(f"two c-factors generate {k[0]!r}; report this")
                    nodes[k] = nd
        elif line == 6:
            nodes = self.conditional_gms(t, ctx, "ID line 6 (ConditionalGMs)")
        elif line == 7:
            nodes = self.line7(t, ctx, path)
        else:
            raise NotIdentifiable(f"ID line {line} in the trace: the query is not identifiable")
        return self.export(nodes, t.y, path)

    def line1(self, t: TraceNode, ctx: _Ctx, path: str) -> dict[NodeId, Node]:
        upd = ctx.update
        if self.opts.reuse_update and upd is not None:
            # the Update's models sample P_{x_z}(S'); keep the ancestors of y among them
            need, stack = set(), [v for v in t.y]
            while stack:
                v = stack.pop()
                if v in need or v not in upd.models:
                    continue
                need.add(v)
                stack.extend(upd.models[v].wiring)
            return {(v, ""): upd.models[v] for v in upd.order if v in need}
        return self.conditional_gms(t, ctx, "ID line 1 (ConditionalGMs)")

    def line7(self, t: TraceNode, ctx: _Ctx, path: str) -> dict[NodeId, Node]:
        s_prime = ", ".join(t.super_component)
        origin = (f"Update (ID line 7: S' = {{{s_prime}}}, X_Z = {{{', '.join(t.x_z)}}})")
        models = {k[0]: nd for k, nd in self.conditional_gms(t, ctx, origin).items()}
        order = [f.variable for f in t.factors]
        upd = _Update(t, models, order, tuple(t.x_z), tuple(ctx.hat_x), ctx, path)
        child = t.children[0]
        sub = _Ctx(upd, tuple(child.hat_x), ctx.experiment, True, upd)
        return self.visit(child, sub, path + ".1")

    # ------------------------------------------------------------------ top level
    def finish(self, nodes: dict[NodeId, Node], outputs: Sequence[str], inputs: Sequence[str],
               source: DataTable | None) -> list[Node]:
        """Add input nodes (query interventions / conditions) and arbitrary sources (line 3)."""
        out = dict(nodes)
        missing: dict[NodeId, None] = {}
        for nd in nodes.values():
            for src in nd.wiring.values():
                if src not in out:
                    missing[src] = None
        for v in inputs:
            if (v, "") not in out:
                missing.setdefault((v, ""), None)
        for i in missing:
            var = i[0]
            if i[1] != "":
                raise RuntimeError(f"internal node {i} has no model; report this")
            if var in inputs:
                out[i] = Node(i, "input", None, {}, "query input")
                continue
            spec = self.variables[var]
            mode = self.opts.arbitrary if spec.kind == "categorical" else "empirical"
            if self.dry:
                model: ConditionalModel = _Placeholder(spec, {}, f"{mode} source")
            elif mode == "uniform":
                model = MarginalSource(spec, "uniform")
            else:
                if source is None or var not in source:
                    raise ValueError(f"cannot draw the arbitrary value of {var!r} from the data")
                model = MarginalSource(spec, "empirical", source[var])
            if self.device is not None:
                model.to(self.device)
            if var not in self.line3:
                raise RuntimeError(f"{var!r} feeds the network but is neither generated, nor a query "
                                   f"input, nor added by ID line 3; report this")
            why = "ID line 3: P_x(y) = P_{x,w}(y) for every w"
            out[i] = Node(i, "arbitrary", model, {}, why)
        order = {nd.id: k for k, nd in enumerate(nodes.values())}
        inputs_first = [nd for nd in out.values() if nd.id not in order]
        return inputs_first + [nd for nd in out.values() if nd.id in order]


def _resolve_variables(variables, g: ADMG, data_cols: Mapping[str, Any]) -> VariableSet:
    if variables is None:
        vs = infer_variables({k: v for k, v in data_cols.items() if k in g})
    elif isinstance(variables, VariableSet):
        vs = variables
    elif isinstance(variables, Mapping) and all(isinstance(v, (int, np.integer)) for v in variables.values()):
        vs = VariableSet([Categorical(k, int(v)) for k, v in variables.items()])
    else:
        vs = VariableSet.from_config(variables)
    return vs


def _resolve_backends(backends, variables: VariableSet) -> dict[str, Backend]:
    out: dict[str, Backend] = {}
    spec = backends or {}
    if isinstance(spec, (str, Backend)):
        spec = {v: spec for v in variables}
    for v in variables:
        b = make_backend(spec[v]) if v in spec else default_backend(variables[v])
        if not b.supports(variables[v]):
            raise TypeError(f"back end {b.name!r} cannot model {v!r} ({variables[v].describe()}); "
                            f"choose another back end for it")
        out[v] = b
    unknown = [k for k in spec if k not in variables]
    if unknown:
        raise KeyError(f"back ends given for unknown variable(s) {unknown}")
    return out


def idgen(graph: Any, query: Any, data: Any = None, *, variables: Any = None,
          backends: Any = None, cache: ModelCache | None = None, experiments: Mapping[Any, Any] | None = None,
          options: IDGenOptions | None = None, dry_run: bool = False, **overrides: Any) -> SamplingNetwork:
    """Train a sampling network for ``query`` (ID-GEN, Algorithm 1; IDC-GEN, Algorithm 5).

    Parameters
    ----------
    graph:
        An :class:`hgraph.ADMG` or anything :meth:`ADMG.load` accepts (shipped name, YAML file,
        edge string).
    query:
        ``"P(Y | do(X))"``, ``"P(Y | do(X), Z)"`` (or an :class:`~hgraph.identify.Estimand`).
    data:
        The observational training data ``D ~ P(V)``: a :class:`whatifgan.Dataset` or a mapping of
        columns (integer codes for categorical variables, arrays/tensors for images).
    variables:
        A :class:`~whatifgan.variables.VariableSet`, a config mapping, ``{name: k}`` for
        categorical variables, or None (inferred from the data; give it when some state may be
        missing from the data).
    backends:
        Per variable: a :class:`~whatifgan.idgen.backends.Backend`, a name (``"classifier"``,
        ``"wgan"``, ``"diffusion"``), a config dict or a frozen module (pretrained plug-in); one
        value for all variables; default by kind (classifier / diffusion / WGAN-GP).
    cache:
        A :class:`ModelCache` shared between calls: models with the same variable, inputs,
        training columns, back end and seed are trained once.
    experiments:
        Datasets of available experiments ``{"do(Z)": data}`` (gID: the trace says which one each
        step reads).
    options / overrides:
        :class:`IDGenOptions` fields: ``inputs`` ("predecessors" as Algorithm 2, or "reduced":
        the Tian-Pearl conditioning set plus ``\\hat X``), ``x_z`` (draws of ``X_Z`` in Update and
        of ``X ∪ α`` in IDC-GEN: "uniform", "empirical" = from the data, "auto" = uniform for
        categorical variables), ``n_update`` (rows of each ``D'``), ``n_final`` (rows for IDC-GEN's
        final model), ``reuse_update``, ``seed``, ``device``.
    dry_run:
        Build the structure only (models are placeholders): :func:`idgen_plan`.

    Returns a :class:`SamplingNetwork`; ``net.sample(n, do={...}, given={...})`` draws from
    ``P_x(y)`` / ``P_x(y | z)``; ``net.describe()`` lists the models, their inputs and data.

    Raises :class:`~hgraph.identify.NotIdentifiable` (before any training) for non-identifiable
    queries.
    """
    opts = options if options is not None else IDGenOptions()
    if overrides:
        opts = replace(opts, **overrides)
    t0 = time.perf_counter()
    g = graph if isinstance(graph, ADMG) else ADMG.load(graph)
    exps = {parse_available(k): v for k, v in (experiments or {}).items()}
    est = query if isinstance(query, Estimand) else identify(
        g, query, available=[z for z in exps if z] or None)   # NotIdentifiable before any training
    q = est.query
    if q.is_counterfactual:
        raise ValueError("ID-GEN samples interventional queries; counterfactual queries are not supported")
    if data is None and frozenset() not in exps:
        if not dry_run:
            raise ValueError("give the observational data (data=...)")
    base_cols = _columns(data) if data is not None else (_columns(next(iter(exps.values()))) if exps else {})
    vs = _resolve_variables(variables, g, base_cols)
    needed = set(q.outcome) | set(q.treatment) | set(q.given)
    for v in g.ancestors(needed) | needed:
        if v not in vs:
            raise ValueError(f"variable {v!r} has no spec (and no data column); give variables=")
    bes = _resolve_backends(backends, vs)
    dev = torch.device(opts.device) if opts.device else torch.device("cpu")
    base: dict[frozenset, DataTable] = {}
    if data is not None:
        base[frozenset()] = _to_table(data, vs, dev, "D", "observational data P(V)")
    elif dry_run:
        t = DataTable({})
        t.info = DataInfo("D", 0, "dry-run", "observational data P(V)")
        base[frozenset()] = t
    for z, d in exps.items():
        if z:
            base[z] = _to_table(d, vs, dev, f"D[do({', '.join(sorted(z))})]",
                                f"experimental data P(V | do({', '.join(sorted(z))}))")
    if not dry_run:
        obs_nodes = [t for t in est.trace.walk() if not t.experiment]
        used = {v for t in obs_nodes for f in t.factors
                for v in ((f.variable,) if bes[f.variable].trains else ()) + tuple(f.inputs)}
        for z, table in base.items():
            if z:
                continue
            missing = sorted(v for v in used if v not in table and v in g)
            if missing:
                raise ValueError(f"the training data lack column(s) {missing}, which the sampling network "
                                 f"for {q} needs (columns: {sorted(table.columns)})")
    cache = cache if cache is not None else ModelCache()
    b = _Builder(g, vs, bes, cache, opts, base, dry=dry_run)
    trace = est.trace
    y, x, z = tuple(q.outcome), tuple(q.treatment), tuple(q.given)
    src = base.get(frozenset())
    root_ctx = _Ctx(src if src is not None else next(iter(base.values())), (), frozenset())
    if trace.algorithm == "IDC":
        net = _idc(b, trace, root_ctx, y, x, z, src, str(q))
    else:
        nodes = b.visit(trace, root_ctx, "0")
        nodes = b.export(nodes, y, "0")
        net = SamplingNetwork(b.finish(nodes, y, x, src), vs, y, x, (), query=str(q))
    net.trace = trace.render()
    net.estimand = est
    net.datasets = list(b.datasets)
    net.stats = {"trained": b.trained_here, "cache_hits": b.hits_here,
                 "generated_datasets": b.n_generated, "seconds": time.perf_counter() - t0}
    return net


def _idc(b: _Builder, trace: TraceNode, ctx: _Ctx, y, x, z, src, qtext: str) -> SamplingNetwork:
    """IDC-GEN (Algorithm 5)."""
    moved = tuple(trace.added)        # α: moved from Z into do() by rule 2 (lines 3-4)
    rest = tuple(trace.given)         # Z \ α
    do_all = tuple(x) + moved
    child = trace.children[0]
    joint_y = tuple(y) + rest
    nodes = b.visit(child, ctx, "1")
    nodes = b.export(nodes, joint_y, "1")
    h1 = SamplingNetwork(b.finish(nodes, joint_y, do_all, src), b.variables, joint_y, do_all, (),
                         query=f"P({', '.join(joint_y)} | do({', '.join(do_all)}))")
    if not rest:
        # P_x(y | z) = P_{x, z}(y): H1 itself, with the moved variables as fixed inputs
        return SamplingNetwork(h1.nodes, b.variables, y, x, z, query=qtext)
    # line 7: D' ~ H1(X ∪ α) with X ∪ α drawn at random, then M_Y(X ∪ α, Z \ α)
    n = b.opts.n_final or max(src.n if src is not None else 0, 100_000)
    order = [v for v in b.g.topological_order() if v in set(y)]
    origin = "IDC-GEN final model (Algorithm 5, line 10)"
    if b.dry:
        t = DataTable({})
        t.info = DataInfo("D''", n, "dry-run", "sampled from H1", tuple(do_all + joint_y))
    else:
        seed = _seed(b.opts.seed, "IDC", [nd.model.cache_key for nd in h1.nodes
                                         if nd.model is not None and hasattr(nd.model, "cache_key")],
                     do_all, n)
        gen = torch.Generator().manual_seed(seed)
        dev = h1.device
        draws = {v: b.draw(b.variables[v], n, src, gen, dev) for v in do_all}
        s = h1.sample(n, do=draws, seed=seed + 1)
        cols = {**draws, **s}
        t = DataTable(cols)
        modes = ", ".join(f"{v} ~ {b.draw_mode(b.variables[v])}" for v in do_all)
        t.info = DataInfo("D''", n, t.fingerprint(), f"sampled from the joint network H1 under "
                          f"do({modes})", tuple(cols))
    b.datasets.append(t.info)
    fctx = _Ctx(t, (), frozenset(), True)
    final: dict[NodeId, Node] = {}
    conds = do_all + rest
    for i, v in enumerate(order):
        inputs = conds + tuple(order[:i])
        model, hit, info = b.train(v, inputs, fctx)
        final[(v, "")] = Node((v, ""), "model", model, {u: (u, "") for u in inputs}, origin, info, hit)
    nodes2 = [Node((u, ""), "input", None, {}, "query input") for u in conds] + list(final.values())
    return SamplingNetwork(nodes2, b.variables, y, x, z, query=qtext, auxiliary={"H1": h1})


def idgen_plan(graph: Any, query: Any, *, variables: Any = None, backends: Any = None,
               **overrides: Any) -> SamplingNetwork:
    """The sampling network ID-GEN would build, without data or training (placeholder models):
    which conditional models, with which inputs, on which (generated) datasets."""
    g = graph if isinstance(graph, ADMG) else ADMG.load(graph)
    if variables is None:
        variables = {v: 2 for v in g.nodes}
    return idgen(g, query, None, variables=variables, backends=backends, dry_run=True, **overrides)
