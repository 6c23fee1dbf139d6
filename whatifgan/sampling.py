"""Sampling a trained DCM: observational, interventional (L2) and counterfactual (L3) queries.

Queries are checked with :func:`hgraph.identify` against the distributions the model was trained on
(observational and/or the interventional datasets, i.e. surrogate experiments): a query that is not
identifiable from them raises :class:`hgraph.NotIdentifiable` unless ``force=True`` (Theorem 4.2 /
D.3: only identifiable queries are guaranteed to be right).

Counterfactuals follow abduction - action - prediction (Appendix C.2, Algorithms 9-10), but instead
of the paper's rejection sampling, evidence on categorical variables is handled *exactly in
expectation* by sequential importance sampling with the Gumbel-max posterior: walking the evidence
world in topological order, each observed categorical variable ``V = argmax(l_V + g_V)`` gets its
Gumbel noise drawn from the posterior given ``argmax = v`` (top-down sampling: the maximum
``M = logsumexp(l) + Gumbel``, ``g_v = M - l_v``, the others truncated Gumbels below ``M``;
Maddison et al. 2014, Oberst & Sontag 2019) and the sample is weighted by ``softmax(l_V)[v]``.
Every sample satisfies the evidence, so rare evidence (probability 1e-3 and below) still works;
the effective sample size is reported. Mechanisms without logits (plug-ins, continuous outputs)
fall back to vectorised rejection sampling with an acceptance-rate report.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hgraph import Factor
from hgraph.identify import Query, identify, parse_query

from .dcm import DCM
from .nn.gumbel import sample_gumbel
from .nn.registry import PretrainedModule
from .variables import Categorical

__all__ = ["Sampler", "EvidenceTooRare", "gumbel_posterior"]


class EvidenceTooRare(RuntimeError):
    """Rejection sampling could not collect enough samples matching the evidence."""


def gumbel_posterior(logits: Tensor, k: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Gumbel noise ``g`` ~ p(g | argmax(logits + g) = k), row-wise (top-down Gumbel-max)."""
    top = torch.logsumexp(logits, dim=1) + sample_gumbel(logits.shape[:1], device=logits.device,
                                                          dtype=logits.dtype, generator=generator)
    z = logits + sample_gumbel(logits.shape, device=logits.device, dtype=logits.dtype, generator=generator)
    # truncate every other coordinate below the maximum: -log(exp(-M) + exp(-z))
    trunc = -torch.logaddexp(-top[:, None], -z)
    vals = trunc.scatter(1, k[:, None], top[:, None])
    return vals - logits


@dataclass
class CfResult:
    table: Factor
    ess: float
    n: int
    method: str


def _states(dcm: DCM, vars: Sequence[str]) -> list[dict[str, int]]:
    cards = []
    for v in vars:
        spec = dcm.variables[v]
        if not isinstance(spec, Categorical):
            raise ValueError(f"variable {v!r} is {spec.kind}: give its value explicitly (e.g. {v}=...)")
        cards.append(range(spec.k))
    return [dict(zip(vars, c)) for c in itertools.product(*cards)]


class Sampler:
    """Answers queries with a trained DCM.

    ``available``: the distributions the model was trained on, as intervention target sets
    (``[()]`` observational only; ``[(), ("X1",)]`` plus ``P(V | do(X1))``). ``None`` skips the
    identifiability check.
    """

    def __init__(self, dcm: DCM, available: Sequence[Sequence[str]] | None = (()), seed: int = 0,
                 batch_size: int = 65536):
        self.dcm = dcm
        self.available = None if available is None else [tuple(a) for a in available]
        self.generator = torch.Generator(device=dcm.device).manual_seed(seed)
        self.batch_size = batch_size

    # ---------------------------------------------------------------- identification
    def check(self, query: Query | str, force: bool = False):
        """Raise NotIdentifiable unless the query is identifiable from the training data."""
        if self.available is None or force:
            return None
        obs = any(len(a) == 0 for a in self.available)
        avail = [f"do({', '.join(a)})" for a in self.available if a]
        return identify(self.dcm.graph, query, available=avail, observational=obs, trace=False)

    # ---------------------------------------------------------------- L1 / L2
    @torch.no_grad()
    def sample(self, n: int, do: Mapping | None = None, force: bool = False) -> dict[str, Tensor]:
        """``n`` samples of every variable, under ``do`` if given (checked for identifiability:
        the joint of the non-intervened variables under ``do`` must be identifiable)."""
        if do:
            rest = [v for v in self.dcm.graph.nodes if v not in do]
            if rest:
                self.check(Query(tuple(rest), tuple(do)), force)
        self.dcm.eval()
        return self.dcm.sample(n, do=do, generator=self.generator, batch_size=self.batch_size)

    def query(self, query: str | Query, n: int = 20000, force: bool = False) -> Factor:
        """Estimate a query as a table over its variables (like ``Estimand.evaluate``).

        Interventional ``P(Y | do(X), Z)``: one batch of ``n`` samples per value of ``X`` (all
        values of categorical treatments unless fixed), conditioned on ``Z`` by importance
        weighting. Counterfactual ``P(Y_{x} | e)``: see :meth:`counterfactual`.
        """
        q = parse_query(query) if isinstance(query, str) else query
        self.check(q, force)
        if q.is_counterfactual:
            return self.counterfactual(q, n=n, force=True).table
        fixed = q.value_map
        treat = list(q.treatment)
        free_t = [t for t in treat if t not in fixed]
        tables = []
        for xs in _states(self.dcm, free_t) if free_t else [{}]:
            do = {t: fixed[t] for t in treat if t in fixed} | xs
            evidence = {z: fixed[z] for z in q.given if z in fixed}
            free_z = [z for z in q.given if z not in fixed]
            res = self._evidence_pass(do, evidence, n, keep=list(q.outcome) + free_z)
            f = _weighted_factor(self.dcm, res["values"], list(q.outcome) + free_z, res["weights"])
            if free_z:
                f = f.conditional(free_z)
            for t, val in xs.items():
                f = f * _indicator(t, val, self.dcm.variables[t].k)
            tables.append(f)
        out = tables[0]
        for t in tables[1:]:
            out = out + t
        keep = {v: fixed[v] for v in out.vars if v in fixed}
        return out.reduce(keep) if keep else out

    # ---------------------------------------------------------------- L3
    def counterfactual(self, query: str | Query, n: int = 20000, force: bool = False,
                       method: str = "auto", max_draws: int = 10_000_000) -> CfResult:
        """``P(Y_{x} ... | evidence)``: abduction of exogenous, confounder and Gumbel noise from the
        evidence, action, prediction in every queried world (shared noise = twin network).

        ``method``: ``"importance"`` (Gumbel-max posterior; needs all evidence in one world and
        categorical mechanisms with logits), ``"rejection"`` or ``"auto"``.
        """
        q = parse_query(query) if isinstance(query, str) else query
        if not q.is_counterfactual:
            raise ValueError(f"{q} is not a counterfactual query")
        self.check(q, force)
        res = self.abduct(q, n, method=method, max_draws=max_draws)
        outs = list(q.cf_outcome)
        noise, weights, method = res["noise"], res["weights"], res["method"]
        values = {}
        for c in outs:
            world = self.dcm(noise=noise, do={k: v for k, v in c.do}, hard=True, only=[c.var])
            values[c.name] = world[c.var]
        names = list(dict.fromkeys(c.name for c in outs))
        cards = {c.name: self.dcm.variables[c.var].k for c in outs}
        table = _weighted_factor(self.dcm, values, names, weights, cards=cards)
        fixed = {c.name: c.value for c in outs if c.value is not None}
        if fixed:
            table = table.reduce(fixed)
        ess = float(weights.sum() ** 2 / (weights ** 2).sum()) if weights.sum() > 0 else 0.0
        return CfResult(table, ess, int(weights.numel()), method)

    @torch.no_grad()
    def abduct(self, query: str | Query, n: int = 20000, method: str = "auto", max_draws: int = 10_000_000) -> dict:
        """Abduction for a counterfactual query: ``n`` draws of the noise (exogenous, confounder,
        Gumbel) given the query's evidence, with importance weights; ``{"noise", "weights",
        "method"}``. Replaying the noise in a world ``do(x)`` (``dcm(noise=..., do=x)``) gives
        samples of any variable there, images included. No identifiability check."""
        q = parse_query(query) if isinstance(query, str) else query
        if not q.is_counterfactual:
            raise ValueError(f"{q} is not a counterfactual query")
        worlds_e = {c.do for c in q.cf_given}
        evidence = [(c.var, c.do_dict, c.value) for c in q.cf_given]
        if any(v is None for _, _, v in evidence):
            raise ValueError("counterfactual evidence needs values, e.g. P(Y_{X=1} | X=0, Y=1)")
        if method == "auto":
            method = "importance" if len(worlds_e) <= 1 and self._has_logits([v for v, _, _ in evidence]) else "rejection"
        if method == "importance":
            if len(worlds_e) > 1:
                raise ValueError("importance sampling needs all evidence in one world; use method='rejection'")
            do_e = dict(next(iter(worlds_e))) if worlds_e else {}
            res = self._evidence_pass(do_e, {v: val for v, _, val in evidence}, n, keep=None)
        elif method == "rejection":
            res = self._rejection(evidence, n, max_draws)
        else:
            raise ValueError(f"unknown method {method!r}")
        return {"noise": res["noise"], "weights": res["weights"], "method": method}

    # ---------------------------------------------------------------- internals
    def _has_logits(self, vars) -> bool:
        for v in vars:
            m = self.dcm.mechanisms[v]
            if isinstance(m, PretrainedModule) or not hasattr(m, "logits") \
                    or not isinstance(self.dcm.variables[v], Categorical):
                return False
        return True

    @torch.no_grad()
    def _evidence_pass(self, do: Mapping, evidence: Mapping[str, int], n: int, keep=None) -> dict:
        """Forward pass in world ``do`` with categorical evidence imposed by the Gumbel-max
        posterior; returns values, the noise used, and importance weights.

        Only the variables needed are computed: the ancestors of ``keep`` and of the evidence, and
        with ``keep=None`` (abduction) every categorical variable too (their Gumbel noise is
        replayed in the counterfactual worlds); e.g. image leaves nobody asked for are skipped."""
        dcm = self.dcm
        want = list(evidence) + (list(keep) if keep is not None else
                                 [v for v in dcm.order if isinstance(dcm.variables[v], Categorical)])
        compute = set(dcm.needed(want, do))
        dcm.eval()
        for v in evidence:
            if v in do:
                continue
            if not self._has_logits([v]):
                res = self._rejection([(v2, dict(do), val) for v2, val in evidence.items()], n, 10_000_000)
                return res
        gen = self.generator
        do_t, _ = dcm.encode_do(do, n)
        dev = dcm.device
        noise = dcm.sample_noise(n, generator=gen)
        logw = torch.zeros(n, device=dev)
        values: dict[str, Tensor] = {}
        for v in dcm.order:
            if v not in compute:
                continue
            if v in do_t:
                values[v] = do_t[v]
                if v in evidence:  # evidence on an intervened variable: consistent or impossible
                    ok = values[v].argmax(1) == int(evidence[v])
                    logw = torch.where(ok, logw, torch.full_like(logw, -math.inf))
                continue
            mech = dcm.mechanisms[v]
            spec = dcm.variables[v]
            parents = {p: values[p] for p in dcm.parents_of[v]}
            conf = [noise["conf"][g] for g in dcm.groups_of[v]]
            conf_t = torch.cat(conf, dim=1) if conf else None
            if isinstance(spec, Categorical) and hasattr(mech, "logits") and not isinstance(mech, PretrainedModule):
                logits = mech.logits(parents, noise["exo"][v], conf_t)
                if v in evidence:
                    k = torch.full((n,), int(evidence[v]), dtype=torch.long, device=dev)
                    g = gumbel_posterior(logits, k, gen)
                    logw = logw + torch.log_softmax(logits, dim=1)[:, int(evidence[v])]
                else:
                    g = sample_gumbel(logits.shape, device=dev, dtype=logits.dtype, generator=gen)
                noise["gumbel"][v] = g
                values[v] = torch.nn.functional.one_hot((logits + g).argmax(1), spec.k).to(logits.dtype)
            else:
                out = mech(parents, noise["exo"][v], conf_t, None)
                values[v] = out.value.reshape((n,) + tuple(spec.shape))
        w = torch.exp(logw - logw.max()) if torch.isfinite(logw).any() else torch.zeros_like(logw)
        if w.sum() <= 0:
            raise EvidenceTooRare(f"the evidence {dict(evidence)} has probability 0 under do({dict(do)}) in the model")
        return {"values": values, "noise": noise, "weights": w}

    @torch.no_grad()
    def _rejection(self, evidence, n: int, max_draws: int) -> dict:
        """Vectorised rejection sampling over batches; keeps the noise of accepted rows."""
        dcm = self.dcm
        dcm.eval()
        worlds: dict[tuple, list] = {}
        for var, do, val in evidence:
            worlds.setdefault(tuple(sorted(do.items())), []).append((var, val))
        kept: list[dict] = []
        got, drawn = 0, 0
        bs = self.batch_size
        while got < n:
            if drawn >= max_draws:
                rate = got / max(drawn, 1)
                raise EvidenceTooRare(
                    f"rejection sampling accepted {got} of {drawn} draws (rate {rate:.2e}) for evidence "
                    f"{evidence}; raise max_draws or use categorical mechanisms (importance sampling)")
            noise = dcm.sample_noise(bs, generator=self.generator)
            ok = torch.ones(bs, dtype=torch.bool, device=dcm.device)
            base = None
            for w, items in worlds.items():
                vals, used = dcm(noise=noise if base is None else base, do=dict(w), hard=True, return_noise=True,
                                 generator=self.generator)
                if base is None:
                    base = used
                for var, val in items:
                    ok &= _matches(dcm, var, vals[var], val)
            if base is None:
                base = noise
            idx = ok.nonzero().flatten()
            drawn += bs
            if idx.numel():
                kept.append(_take(base, idx))
                got += int(idx.numel())
        noise = _cat_noise(kept, n)
        self.last_acceptance = got / drawn
        return {"values": None, "noise": noise, "weights": torch.ones(n, device=dcm.device), "acceptance": got / drawn}


def _matches(dcm: DCM, var: str, value: Tensor, target) -> Tensor:
    spec = dcm.variables[var]
    if isinstance(spec, Categorical):
        return value.argmax(1) == int(target)
    return torch.isclose(value.reshape(value.shape[0], -1), torch.as_tensor(target, dtype=value.dtype,
                                                                             device=value.device).reshape(1, -1)).all(1)


def _take(noise, idx):
    return {part: {k: t[idx] for k, t in noise[part].items()} for part in noise}


def _cat_noise(chunks, n):
    out = {}
    for part in chunks[0]:
        out[part] = {k: torch.cat([c[part][k] for c in chunks])[:n] for k in chunks[0][part]}
    return out


def _indicator(var: str, val: int, k: int) -> Factor:
    a = np.zeros(k)
    a[val] = 1.0
    return Factor([var], a)


def _weighted_factor(dcm: DCM, values: Mapping[str, Tensor], names: Sequence[str], weights: Tensor,
                     cards: Mapping[str, int] | None = None) -> Factor:
    cards = dict(cards or {})
    cols, shape = [], []
    for name in names:
        t = values[name]
        k = cards.get(name) or dcm.variables[name].k
        cols.append(t.argmax(1).cpu().numpy() if t.dim() == 2 else t.long().cpu().numpy())
        shape.append(k)
    w = weights.detach().cpu().double().numpy()
    flat = np.ravel_multi_index(cols, shape)
    table = np.bincount(flat, weights=w, minlength=int(np.prod(shape))).reshape(shape)
    return Factor(list(names), table / table.sum())
