"""Deep causal generative models (WhatIfGAN Definition 4.1).

A :class:`DCM` holds one neural mechanism ``G_V`` per observed variable ``V`` of an ADMG. ``G_V``
receives its own exogenous noise ``N_V``, the noise of every confounder (latent group) that
touches ``V`` -- shared by all members of the group, so ``N_i = N_j`` iff ``V_i <-> V_j``
(Definition 4.1, item 3; latent groups extend this to confounders over several variables) -- and
the values of its parents (item 2). The forward pass follows the topological order; ``do=`` fixes
variables to constants or to per-sample tensors (e.g. parents taken from a real data batch during
modular training, Algorithm 4 line 9). All noise used (exogenous, confounder and the Gumbel noise
of categorical heads) can be returned and replayed, which is what abduction needs (Appendix C.2).

Any mechanism may be a pretrained, frozen plug-in: an ``nn.Module`` or callable with the
conditional-sampler signature ``f(parents: dict[str, Tensor], noise: Tensor) -> Tensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import contextlib

import torch
from torch import Tensor, nn

from hgraph import ADMG

from .nn.gumbel import GumbelSoftmax, sample_gumbel
from .nn.registry import PretrainedModule, build
from .variables import Categorical, VariableSet

__all__ = ["DCM"]

Noise = dict[str, dict[str, Tensor]]


class DCM(nn.Module):
    """A deep causal generative model for an ADMG.

    Parameters
    ----------
    graph: an ``hgraph.ADMG`` (or anything ``ADMG.load`` accepts).
    variables: a :class:`~whatifgan.variables.VariableSet` (or its config dict) with a spec for
        every node.
    modules: optional ``{variable: nn.Module}`` following the mechanism protocol of
        :mod:`whatifgan.nn.registry` (``module(parents, noise, confounders, gumbel_noise) ->
        GeneratorOutput``); they replace the default networks and are trained.
    plugins: optional ``{variable: nn.Module | callable}`` with the conditional-sampler signature
        ``f(parents: dict, noise) -> Tensor`` (or the full protocol); they are wrapped in a frozen
        :class:`~whatifgan.nn.registry.PretrainedModule` and never trained.
    noise_dim, conf_dim: sizes of the exogenous noise per variable and of the noise per
        confounder (paper defaults 128 and 128).
    generator: registry name of the default network for low-dimensional variables, built with
        ``noise_dim``, ``conf_dim`` (all confounders of the variable, concatenated),
        ``parent_dims`` and ``output`` plus ``generator_kwargs``.
    image_generator, image_child_generator, image_kwargs, image_child_kwargs: the networks of
        image variables (conditional conv generator) and of low-dimensional children of images
        (conv encoder + head), with their keyword arguments.
    """

    def __init__(self, graph, variables, modules: Mapping[str, Any] | None = None,
                 plugins: Mapping[str, Callable] | None = None, noise_dim: int = 128,
                 conf_dim: int = 128, generator: str = "mlp", generator_kwargs: Mapping | None = None,
                 image_generator: str = "conv", image_child_generator: str = "conv_classifier",
                 image_kwargs: Mapping | None = None, image_child_kwargs: Mapping | None = None):
        super().__init__()
        self.graph = ADMG.load(graph)
        self.variables = variables if isinstance(variables, VariableSet) else VariableSet.from_config(variables)
        missing = [v for v in self.graph.nodes if v not in self.variables]
        if missing:
            raise ValueError(f"no variable spec for {missing}")
        extra = [v for v in self.variables if v not in self.graph]
        if extra:
            raise ValueError(f"variable spec(s) {extra} are not nodes of the graph {list(self.graph.nodes)}")
        self.order = self.graph.topological_order()
        self.noise_dim, self.conf_dim = int(noise_dim), int(conf_dim)
        self.groups = {name: sorted(ms, key=self.graph.position) for name, ms in self.graph.latent_groups.items()}
        self.groups_of = {v: sorted(g for g, ms in self.groups.items() if v in ms) for v in self.graph.nodes}
        self.parents_of = {v: self.graph.sorted(self.graph.pa(v)) for v in self.graph.nodes}
        modules = dict(modules or {})
        plugins = dict(plugins or {})
        for v in list(modules) + list(plugins):
            if v not in self.graph:
                raise ValueError(f"module given for unknown variable {v!r}")
        gkw = dict(generator_kwargs or {})
        ikw = dict(image_kwargs or {})
        ckw = dict(image_child_kwargs or {})
        mechs = {}
        #: ``{variable: {"arch", "arch_kwargs"}}`` of the default networks built here (what
        #: ``build(arch, **arch_kwargs)`` needs to rebuild one, e.g. to load it as a plug-in)
        self.mechanism_specs: dict[str, dict] = {}
        for v in self.order:
            spec = self.variables[v]
            pa = self.parents_of[v]
            cdim = self.conf_dim * len(self.groups_of[v])
            if v in plugins:
                fn = plugins[v]
                mechs[v] = fn if isinstance(fn, PretrainedModule) else PretrainedModule(fn, noise_dim=self.noise_dim, name=v)
            elif v in modules:
                mechs[v] = modules[v]
            else:
                image_parents = [p for p in pa if self.variables[p].kind == "image"]
                pdims = {p: (tuple(self.variables[p].shape) if p in image_parents else self.variables[p].dim)
                         for p in pa}
                if spec.kind == "image":  # conditional DCGAN-style generator
                    arch, kw = image_generator, dict(shape=tuple(spec.shape), noise_dim=self.noise_dim,
                                                     conf_dim=cdim, parent_dims=pdims, **ikw)
                elif image_parents:  # a discrete/continuous child of images: conv encoder + head
                    arch, kw = image_child_generator, dict(out_dim=spec.dim, output=spec.kind,
                                                           noise_dim=self.noise_dim, conf_dim=cdim,
                                                           parent_dims=pdims, **ckw)
                else:
                    arch, kw = generator, dict(out_dim=spec.dim, output=spec.kind, noise_dim=self.noise_dim,
                                               conf_dim=cdim, parent_dims=pdims, **gkw)
                mechs[v] = build(arch, **kw)
                self.mechanism_specs[v] = {"arch": arch, "arch_kwargs": kw}
        self.mechanisms = nn.ModuleDict(mechs)
        self._frozen: set[str] = set()

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def plugins(self) -> list[str]:
        return [v for v, m in self.mechanisms.items() if isinstance(m, PretrainedModule)]

    def parameters_of(self, variables) -> list[Tensor]:
        """Trainable parameters of the mechanisms of ``variables`` (plug-ins have none)."""
        out = []
        for v in variables:
            m = self.mechanisms[v]
            if not isinstance(m, PretrainedModule):
                out += list(m.parameters())
        return out

    def sample_noise(self, n: int, variables=None, generator: torch.Generator | None = None) -> Noise:
        """Fresh exogenous and confounder noise ~ N(0, I) for ``n`` samples."""
        dev = self.device
        variables = list(self.order if variables is None else variables)
        exo = {v: torch.randn(n, self.noise_dim, device=dev, generator=generator) for v in variables}
        groups = sorted({g for v in variables for g in self.groups_of[v]})
        conf = {g: torch.randn(n, self.conf_dim, device=dev, generator=generator) for g in groups}
        return {"exo": exo, "conf": conf, "gumbel": {}}

    def encode_do(self, do: Mapping[str, Any] | None, n: int | None) -> tuple[dict[str, Tensor], int | None]:
        """Normalise intervention values to encoded ``(n, dim)`` tensors."""
        out = {}
        for v, val in (do or {}).items():
            if v not in self.graph:
                raise ValueError(f"cannot intervene on unknown variable {v!r}")
            spec = self.variables[v]
            t = val if isinstance(val, Tensor) else torch.as_tensor(val)
            t = t.to(self.device)
            if t.dim() == 0:  # one value for every sample
                if n is None:
                    raise ValueError(f"do({v}={val}) needs the number of samples n")
                t = t.reshape(1).expand(n)
                if not isinstance(spec, Categorical):
                    t = t.to(torch.get_default_dtype()).reshape(n, 1).expand(n, spec.dim)
            enc = spec.encode(t, device=self.device) if not (t.is_floating_point() and t.dim() >= 2) else t
            if n is None:
                n = enc.shape[0]
            elif enc.shape[0] != n:
                raise ValueError(f"do({v}=...) has {enc.shape[0]} values for {n} samples")
            out[v] = enc
        return out, n

    def needed(self, only=None, do=()) -> list[str]:
        """Variables to compute for ``only`` (their ancestors, stopping at intervened ones)."""
        if only is None:
            return list(self.order)
        need, stack = set(), [v for v in only]
        while stack:
            v = stack.pop()
            if v in need:
                continue
            need.add(v)
            if v not in do:
                stack.extend(self.parents_of[v])
        return [v for v in self.order if v in need]

    # ------------------------------------------------------------------ forward
    def forward(self, n: int | None = None, do: Mapping[str, Any] | None = None, *, noise: Noise | None = None,
                only=None, hard: bool | None = None, temperature: float | None = None,
                return_noise: bool = False, generator: torch.Generator | None = None):
        """Sample all (or ``only``'s ancestral closure of) variables in topological order.

        ``do``: ``{var: value}`` with scalars (codes for categorical) or per-sample tensors (codes
        ``(n,)`` or encoded ``(n, dim)``). ``noise``: replay (part of) the noise of an earlier call
        (``{"exo": {V: (n, noise_dim)}, "conf": {group: (n, conf_dim)}, "gumbel": {V: (n, k)}}``);
        missing entries are drawn fresh. Returns ``{var: encoded value}`` (and the noise).
        """
        if n is None and noise is not None:
            for part in ("exo", "conf"):
                for t in noise.get(part, {}).values():
                    n = t.shape[0]
                    break
                if n is not None:
                    break
        do_t, n = self.encode_do(do, n)
        if n is None:
            raise ValueError("DCM.forward needs n, a per-sample do, or noise to know the batch size")
        used: Noise = {"exo": {}, "conf": {}, "gumbel": {}}
        given = noise or {}
        values: dict[str, Tensor] = {}
        dev = self.device
        with self.gumbel_mode(hard=hard, temperature=temperature):
            for v in self.needed(only, do_t):
                if v in do_t:
                    values[v] = do_t[v]
                    continue
                mech = self.mechanisms[v]
                exo = given.get("exo", {}).get(v)
                if exo is None:
                    exo = torch.randn(n, self.noise_dim, device=dev, generator=generator)
                conf = []
                for g in self.groups_of[v]:
                    c = used["conf"].get(g)
                    if c is None:
                        c = given.get("conf", {}).get(g)
                    if c is None:
                        c = torch.randn(n, self.conf_dim, device=dev, generator=generator)
                    used["conf"][g] = c
                    conf.append(c)
                spec = self.variables[v]
                gum = given.get("gumbel", {}).get(v)
                if gum is None and generator is not None and isinstance(spec, Categorical) \
                        and not isinstance(mech, PretrainedModule):
                    gum = sample_gumbel((n, spec.k), device=dev, generator=generator)
                out = mech({p: values[p] for p in self.parents_of[v]}, exo,
                           torch.cat(conf, dim=1) if conf else None, gum)
                val = out.value
                if isinstance(spec, Categorical) and val.dim() == 1:  # a plug-in returning codes
                    val = nn.functional.one_hot(val.long(), spec.k).to(exo.dtype)
                values[v] = val.reshape((n,) + tuple(spec.shape))
                used["exo"][v] = exo
                if out.gumbel_noise is not None:
                    used["gumbel"][v] = out.gumbel_noise
        return (values, used) if return_noise else values

    @contextlib.contextmanager
    def gumbel_mode(self, hard: bool | None = None, temperature: float | None = None):
        """Temporarily set the straight-through flag and/or temperature of every Gumbel head."""
        heads = [m for m in self.modules() if isinstance(m, GumbelSoftmax)]
        saved = [(m.hard, m.temperature) for m in heads]
        try:
            for m in heads:
                if hard is not None:
                    m.hard = bool(hard)
                if temperature is not None:
                    m.temperature = float(temperature)
            yield
        finally:
            for m, (h, t) in zip(heads, saved):
                m.hard, m.temperature = h, t

    @torch.no_grad()
    def sample(self, n: int, do: Mapping[str, Any] | None = None, *, batch_size: int = 65536,
               generator: torch.Generator | None = None, decode: bool = True) -> dict[str, Tensor]:
        """``n`` hard samples (categorical as integer codes when ``decode``), in eval mode."""
        was = self.training
        self.eval()
        try:
            chunks: list[dict[str, Tensor]] = []
            for start in range(0, n, batch_size):
                m = min(batch_size, n - start)
                sub_do = {k: (v[start:start + m] if isinstance(v, Tensor) and v.dim() > 0 else v)
                          for k, v in (do or {}).items()}
                out = self.forward(m, sub_do, hard=True, generator=generator)
                if decode:
                    out = {k: self.variables[k].decode(t) for k, t in out.items()}
                chunks.append({k: t.detach() for k, t in out.items()})
            return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
        finally:
            self.train(was)

    def freeze(self, variables) -> None:
        """Freeze mechanisms: no gradient to their weights and BatchNorm statistics fixed, until
        :meth:`unfreeze` (``dcm.train()`` keeps frozen mechanisms in eval mode)."""
        for v in variables:
            m = self.mechanisms[v]
            m.eval()
            self._frozen.add(v)
            for p in m.parameters():
                p.requires_grad_(False)

    def unfreeze(self, variables) -> None:
        for v in variables:
            m = self.mechanisms[v]
            if isinstance(m, PretrainedModule):
                continue
            self._frozen.discard(v)
            m.train(self.training)
            for p in m.parameters():
                p.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        for v in getattr(self, "_frozen", ()):
            self.mechanisms[v].eval()
        return self
