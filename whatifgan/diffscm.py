"""Diff-SCM: diffusion counterfactuals guided by anti-causal predictors (Sanchez & Tsaftaris 2022).

As in diffusers, three separate objects:

* :class:`DiffSCMModel` -- the *model*: the score network ``eps_theta(x_t, t)`` of the image node
  (a :class:`whatifgan.nn.UNet`; unconditional as in the paper, or class-conditional with an
  explicit null token) and one anti-causal predictor ``p_phi(pa_j | x_t, t)`` per discrete parent
  ``pa_j`` of the image (:class:`whatifgan.nn.TimeConditionedClassifier`; Sec. 3.3, Prop. 1 and
  Eq. 7; Appendix E), plus the causal graph that says which interventions the guidance can
  implement (:meth:`DiffSCMModel.check_intervention`).
* :class:`DiffSCMScheduler` -- the *scheduler*: the 1000-step linear training schedule respaced to
  ``num_inference_steps`` (e.g. 100, as the official MNIST configuration) and deterministic DDIM
  steps forwards (abduction, Algorithm 3) and backwards (Algorithm 2), with the optional *dynamic
  normalisation* of the official code (the network's predicted ``x_0`` clamped to its
  99th-percentile magnitude, :func:`dynamic_normalise`, before the guidance is added).  It
  assumes a network whose ``x_0`` predictions stay near ``[-1, 1]``: a small, briefly trained
  one that overshoots (``|x_0|`` ~ 1.3 at every step) is rescaled at every step, which damps the
  intervention almost completely, so the CPU configuration turns it off and only clamps the
  prediction to ``[-1, 1]`` (the official ``clip_denoised``).
* :class:`DiffSCMPipeline` -- the *pipeline*: Algorithm 1 (counterfactuals: abduction of the
  exogenous noise by DDIM inversion of the factual image up to a fraction of the chain -- 0.75 in
  the official code -- then guided DDIM back down with scale ``s``), interventional sampling
  (Appendix F: the same guided DDIM from Gaussian noise) and reconstruction (``s = 0``).

Guidance (Dhariwal & Nichol 2021, Alg. 2; Diff-SCM Alg. 1, "Generation under Intervention")::

    eps^ = eps_theta(x_t, t) - sqrt(1 - abar_t) sum_{j in do} s_j grad_{x_t} log p_phi(x_CF^(j) | x_t)

**When is this an intervention?**  By Bayes' rule (Appendix C, Eq. 18) the guided score is
``grad log p(x | pa_j = v)``: guidance samples the *conditional* of the image given the parent.
This equals the interventional ``p(x | do(pa_j = v))`` exactly when do-calculus rule 2 licenses
exchanging ``do(pa_j)`` for conditioning, ``(image _||_ pa_j)`` in the graph with the edges out
of ``pa_j`` cut -- i.e. no back-door path between the parent and the image.  The paper's
limitation section (Sec. 6) names the failure: a confounder shared by the image and the parent
(or a back-door path through another variable) leaks into the anti-causal classifier, whose
gradient then changes the confounder too.  :meth:`DiffSCMModel.check_intervention` tests rule 2
on the model's :class:`hgraph.ADMG` and raises :class:`InvalidInterventionError` otherwise (the
message names a confounder the image shares with the parent when there is one).

Several parents: each gets its own head; an intervention on a set ``J`` of parents sums the
gradients of the heads of ``J`` only (the other parents keep the values carried by the abducted
noise).  The sum equals ``grad log p(x | pa_J)`` when the intervened parents are conditionally
independent given ``x_t`` (otherwise it is the product-of-experts approximation of compositional
energy-based guidance, Du et al. 2020); the rule-2 check is applied to the whole set ``J``.

Images are tensors ``(B, C, H, W)`` in ``[-1, 1]`` (:func:`to_model_range` converts uint8).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hgraph import ADMG, GraphError, rule2

from .diffusion import DDIMSampler, EMA, NoiseSchedule, predict_eps, predict_x0, q_sample
from .nn.unet import CLASSIFIER_PRESETS, UNET_PRESETS, TimeConditionedClassifier, UNet

__all__ = [
    "Abduction",
    "DiffSCMModel",
    "DiffSCMPipeline",
    "DiffSCMScheduler",
    "InvalidInterventionError",
    "NoisedInputClassifier",
    "dynamic_normalise",
    "from_model_range",
    "load_run",
    "to_model_range",
    "train_anticausal_heads",
    "train_diffusion",
    "train_from_config",
]

CHECKPOINT_KIND = "DiffSCMModel"
DEFAULT_ABDUCTION_FRACTION = 0.75  # official code: config.sampling.sampling_progression_ratio


class InvalidInterventionError(ValueError):
    """The requested intervention cannot be implemented by anti-causal guidance on this graph."""


# ============================================================================= image ranges
def to_model_range(images: Tensor | np.ndarray, channels: int | None = None) -> Tensor:
    """uint8 images ``[N, H, W]`` / ``[N, C, H, W]`` -> float ``(N, C, H, W)`` in ``[-1, 1]``.
    Float input is assumed to be in ``[-1, 1]`` already and is only reshaped."""
    t = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
    if t.dim() == 3:
        t = t[:, None]
    if t.dim() != 4:
        raise ValueError(f"images must be [N, H, W] or [N, C, H, W], got shape {tuple(t.shape)}")
    if channels is not None and t.shape[1] != channels:
        raise ValueError(f"expected {channels}-channel images, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.to(torch.get_default_dtype()) / 127.5 - 1.0
    return t.to(torch.get_default_dtype())


def from_model_range(x: Tensor) -> Tensor:
    """``[-1, 1]`` floats -> uint8 ``(N, C, H, W)`` (clamped)."""
    return ((x.detach().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu()


# ============================================================================= scheduler
def dynamic_normalise(x0: Tensor, percentile: float = 0.99) -> Tensor:
    """Dynamic normalisation of the predicted ``x_0`` (the official Diff-SCM code's
    ``clamp_to_spatial_quantile``; the dynamic thresholding of Saharia et al. 2022).

    Per sample and channel ``q = max(quantile_p(|x_0|), 1)``; returns ``clamp(x_0, -q, q) / q``.
    A no-op for predictions already inside ``[-1, 1]``.
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must lie in (0, 1], got {percentile}")
    b, c = x0.shape[:2]
    flat = x0.reshape(b, c, -1)
    q = torch.quantile(flat.abs().float(), float(percentile), dim=-1, keepdim=True).to(x0.dtype)
    q = torch.clamp(q, min=1.0)
    return (torch.maximum(torch.minimum(flat, q), -q) / q).reshape_as(x0)


class DiffSCMScheduler:
    """Deterministic DDIM on a respaced schedule, forwards and backwards (Diff-SCM Alg. 1-3).

    Parameters
    ----------
    schedule:
        The training schedule (Diff-SCM Appendix E: linear, 1000 steps).
    num_inference_steps:
        DDIM steps over the whole chain (the official MNIST configuration: ``ddim100``).
    spacing:
        How the kept timesteps are chosen (:func:`whatifgan.diffusion.respaced_indices`).
    dynamic_normalisation:
        ``False``/``None`` (off), ``True`` (99th percentile) or a percentile in ``(0, 1]``:
        :func:`dynamic_normalise` applied to every predicted ``x_0``, in both directions (so
        reconstruction stays consistent).
    clip_x0:
        Clamp the network's ``x_0`` prediction to ``[-1, 1]`` (the official code's
        ``clip_denoised``; applied after dynamic normalisation, in both directions).  Keeps
        sampling from pure noise stable with an imperfect network.

    Index convention (of :class:`whatifgan.diffusion.DDIMSampler`): index ``i`` of the respaced
    schedule is the noisy state at training timestep ``timesteps[i]``; :meth:`step` goes from
    ``i`` to ``i - 1`` (to the clean image for ``i = 0``), :meth:`inverse_step` from ``i - 1``
    (the clean image for ``i = 0``) to ``i``.
    """

    def __init__(self, schedule: NoiseSchedule, num_inference_steps: int | None = 100, *,
                 spacing: str = "linspace", dynamic_normalisation: bool | float | None = False,
                 clip_x0: bool = False):
        self.sampler = DDIMSampler(schedule, num_inference_steps, eta=0.0, spacing=spacing)
        self.clip_x0 = bool(clip_x0)
        if dynamic_normalisation is True:
            dynamic_normalisation = 0.99
        if dynamic_normalisation in (False, None, 0):
            self.percentile: float | None = None
        else:
            p = float(dynamic_normalisation)
            if not 0.0 < p <= 1.0:
                raise ValueError(f"dynamic_normalisation must be a bool or a percentile in "
                                 f"(0, 1], got {dynamic_normalisation}")
            self.percentile = p

    @property
    def train_schedule(self) -> NoiseSchedule:
        return self.sampler.train_schedule

    @property
    def schedule(self) -> NoiseSchedule:
        """The respaced schedule."""
        return self.sampler.schedule

    @property
    def num_steps(self) -> int:
        return self.sampler.num_steps

    def __repr__(self) -> str:
        return (f"DiffSCMScheduler(steps={self.num_steps}, train_timesteps="
                f"{self.train_schedule.num_train_timesteps}, dynamic_normalisation="
                f"{self.percentile}, clip_x0={self.clip_x0})")

    def abduction_steps(self, fraction: float) -> int:
        """Number ``k`` of inversion steps for abducting up to ``fraction`` of the chain
        (``0 <= k <= num_steps``; ``fraction = 1`` inverts all the way to ``x_T``)."""
        f = float(fraction)
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"abduction fraction must lie in [0, 1], got {fraction}")
        return int(round(f * self.num_steps))

    def model_timesteps(self, i: int, batch: int, device=None) -> Tensor:
        """Training timestep of index ``i`` as a ``(batch,)`` tensor (what the networks see)."""
        return self.schedule.model_timesteps(i, batch, device=device)

    def alphas_cumprod(self, i: int, like: Tensor) -> Tensor:
        return self.schedule.gather("alphas_cumprod", i, like)

    @property
    def treats_x0(self) -> bool:
        return self.percentile is not None or self.clip_x0

    def treat_x0(self, x0: Tensor) -> Tensor:
        """Dynamic normalisation and/or clamping of a predicted ``x_0``."""
        if self.percentile is not None:
            x0 = dynamic_normalise(x0, self.percentile)
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        return x0

    def normalise_eps(self, eps: Tensor, i: int, x_t: Tensor) -> Tensor:
        """``eps`` made consistent with the treated (normalised / clamped) ``x_0`` prediction
        (identity when both are off)."""
        if not self.treats_x0:
            return eps
        x0 = self.treat_x0(predict_x0(self.schedule, x_t, i, eps))
        return predict_eps(self.schedule, x_t, i, x0)

    def step(self, eps: Tensor, i: int, x_t: Tensor, guidance: Tensor | None = None) -> Tensor:
        """Deterministic DDIM from index ``i`` to ``i - 1`` (Diff-SCM Alg. 2 and the second box
        of Alg. 1, with the direction term ``sqrt(1 - abar_{t-1}) eps`` of Song et al. 2021a).

        ``guidance`` is the scaled anti-causal gradient ``sum_j s_j grad log p_phi(v_j | x_t)``;
        it is applied *after* the dynamic normalisation of the network's ``x_0`` prediction,
        ``eps^ = eps_norm - sqrt(1 - abar_t) guidance`` (the order of the official code, which
        follows Dhariwal & Nichol's ``condition_score``: the clamp acts on the model's prediction,
        never on the intervention -- clamping after guidance would erase it at high noise)."""
        eps = self.normalise_eps(eps, i, x_t)
        if guidance is not None:
            eps = eps - (1.0 - self.alphas_cumprod(i, x_t)).sqrt() * guidance
        return self.sampler.step(eps, i, x_t, eta=0.0)

    def inverse_step(self, eps: Tensor, i: int, x_prev: Tensor) -> Tensor:
        """Deterministic DDIM from index ``i - 1`` to ``i`` (Diff-SCM Alg. 3 and the first box of
        Alg. 1): ``x_t = sqrt(abar_t) x0_hat(x_{t-1}, eps) + sqrt(1 - abar_t) eps``."""
        if not self.treats_x0:
            return self.sampler.inverse_step(eps, i, x_prev)
        a_p = self.schedule.gather("alphas_cumprod_prev", i, x_prev)
        a_t = self.alphas_cumprod(i, x_prev)
        x0 = self.treat_x0((x_prev - (1 - a_p).sqrt() * eps) / a_p.sqrt())
        if i > 0:  # eps consistent with the normalised x_0 (for i = 0, x_prev is the image)
            eps = (x_prev - a_p.sqrt() * x0) / (1 - a_p).sqrt()
        return a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps


# ============================================================================= model
def _graph(graph: ADMG | str | Mapping | None) -> ADMG | None:
    if graph is None or isinstance(graph, ADMG):
        return graph
    return ADMG.load(graph)


class DiffSCMModel(nn.Module):
    """Score network of the image node plus one anti-causal head per discrete parent.

    Parameters
    ----------
    unet:
        ``eps_theta``.  Unconditional (the paper), or with label conditions named after (some of)
        the parents, each with its explicit null token (classifier-free training; the official
        code's ``classifier_free_cond`` option).
    heads:
        ``{parent name: TimeConditionedClassifier}``: ``p_phi(pa_j | x_t, t)``.
    image:
        Name of the image node in ``graph``.
    graph:
        The causal graph (an :class:`hgraph.ADMG`, an edge string, ...).  Default: every head's
        variable is a parent of the image and nothing else -- the paper's two-variable
        ``class -> image`` model generalised to several unconfounded parents.
    schedule:
        The training noise schedule (default: linear, 1000 steps; Diff-SCM Appendix E).
    config:
        Plain-data description to rebuild the networks (:meth:`from_config` sets it).
    """

    def __init__(self, unet: UNet, heads: Mapping[str, TimeConditionedClassifier], *,
                 image: str = "image", graph: ADMG | str | Mapping | None = None,
                 schedule: NoiseSchedule | None = None, config: Mapping[str, Any] | None = None):
        super().__init__()
        if not isinstance(unet, nn.Module):
            raise TypeError(f"unet must be an nn.Module, got {type(unet).__name__}")
        self.unet = unet
        self.heads = nn.ModuleDict(dict(heads))
        self.image = str(image)
        self.schedule = schedule if schedule is not None else NoiseSchedule.linear(1000)
        self.config = copy.deepcopy(dict(config)) if config is not None else {}
        self.extra: dict[str, Any] = {}
        g = _graph(graph)
        if g is None:
            g = ADMG(nodes=[*self.heads, self.image],
                     directed=[(p, self.image) for p in self.heads])
        self.graph = g
        self._check_graph()
        labels = getattr(unet, "num_classes", {}) or {}
        for name, k in labels.items():
            if name not in self.parents:
                raise ValueError(f"the UNet has a label condition {name!r} that is no parent with "
                                 f"an anti-causal head (parents: {sorted(self.parents)})")
            if k != self.parents[name]:
                raise ValueError(f"label condition {name!r} has {k} classes in the UNet but "
                                 f"{self.parents[name]} in its head")

    # ------------------------------------------------------------------ graph
    @property
    def parents(self) -> dict[str, int]:
        """``{parent name: number of classes}`` of the anti-causal heads."""
        return {n: int(h.num_classes) for n, h in self.heads.items()}

    @property
    def label_conditions(self) -> dict[str, int]:
        """Label conditions of a class-conditional UNet (empty for the paper's unconditional)."""
        return dict(getattr(self.unet, "num_classes", {}) or {})

    def _check_graph(self) -> None:
        g = self.graph
        if self.image not in g.nodes:
            raise GraphError(f"image node {self.image!r} is not in the graph {g}")
        missing = [p for p in self.heads if p not in g.nodes]
        if missing:
            raise GraphError(f"anti-causal heads for {missing}, which are not nodes of {g}")
        anc = g.ancestors({self.image})
        bad = [p for p in self.heads if p not in anc or p == self.image]
        if bad:
            raise GraphError(f"heads for {bad}: an intervention can only change the image "
                             f"{self.image!r} through its ancestors (Diff-SCM Prop. 1 needs "
                             f"x^(j) in an^(k)); {bad} are not ancestors in {g}")

    def check_intervention(self, names: Sequence[str] | Mapping[str, Any]) -> None:
        """Raise :class:`InvalidInterventionError` unless ``do(names)`` can be implemented by
        anti-causal guidance: every name has a head, and do-calculus rule 2 gives
        ``P(image | do(X)) = P(image | X)`` on the model's graph (no confounding between the
        image and an intervened parent; Diff-SCM Sec. 6, "Limitations")."""
        xs = list(names)
        if not xs:
            return
        unknown = [x for x in xs if x not in self.heads]
        if unknown:
            raise InvalidInterventionError(
                f"do({', '.join(unknown)}): no anti-causal head for {unknown}; this model can "
                f"intervene on {sorted(self.heads)}")
        g = self.graph
        if rule2(g, {self.image}, set(xs)):
            return
        shared = [x for x in xs if x in g.sib(self.image)]
        if shared:
            x = shared[0]
            raise InvalidInterventionError(
                f"do({', '.join(xs)}) is not valid for Diff-SCM: the image {self.image!r} shares "
                f"a latent confounder with the intervened parent {x!r} ({x} <-> {self.image}). "
                f"The anti-causal classifier p({x} | {self.image}_t) then also encodes the "
                f"confounder, and its gradient changes more than the mechanism of {x} (Diff-SCM "
                f"Sec. 6, Limitations): guidance samples P({self.image} | {x}), which differs "
                f"from P({self.image} | do({x})) here.  Guidance is valid only when rule 2 gives "
                f"P({self.image} | do(X)) = P({self.image} | X), i.e. no back-door path between "
                f"the intervened parents and the image.")
        cut = g.cut_outgoing(set(xs))
        paths = [x for x in xs if not cut.is_d_separated({x}, {self.image})]
        hint = ""
        others = [h for h in self.heads if h not in xs]
        fixes = [[*xs, h] for h in others if rule2(g, {self.image}, {*xs, h})]
        if not fixes and others and rule2(g, {self.image}, {*xs, *others}):
            fixes = [[*xs, *others]]
        if fixes:
            hint = (f" Intervening jointly, e.g. do({', '.join(fixes[0])}), blocks the back-door "
                    f"path and is valid.")
        raise InvalidInterventionError(
            f"do({', '.join(xs)}) is not valid for Diff-SCM on {g}: there is a back-door path "
            f"between {paths or xs} and the image {self.image!r} (do-calculus rule 2 fails, so "
            f"P({self.image} | do(X)) != P({self.image} | X)); the anti-causal classifier's "
            f"gradient would also move the confounding variables (Diff-SCM Sec. 6, Limitations). "
            f"Guidance needs parents that share no confounder with the image.{hint}")

    # ------------------------------------------------------------------ networks
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def eps(self, x: Tensor, t: Tensor, labels: Mapping[str, Any] | None = None, *,
            guidance_weight: float = 0.0) -> Tensor:
        """``eps_theta(x_t, t)``; for a class-conditional UNet the given ``labels`` (missing or
        None = null token) with classifier-free guidance weight ``w``:
        ``(1 + w) eps(x, c) - w eps(x, null)`` (Ho & Salimans 2021)."""
        conds = self.label_conditions
        if not conds:
            return self.unet(x, t)
        b = x.shape[0]
        cond: dict[str, Tensor] = {}
        any_label = False
        for name, k in conds.items():
            v = None if labels is None else labels.get(name)
            if v is None:
                cond[name] = torch.full((b,), k, dtype=torch.long, device=x.device)
            else:
                any_label = True
                cond[name] = _as_codes(v, b, x.device)
        e_c = self.unet(x, t, cond)
        w = float(guidance_weight)
        if w == 0.0 or not any_label:
            return e_c
        null = {n: torch.full((b,), k, dtype=torch.long, device=x.device)
                for n, k in conds.items()}
        return (1.0 + w) * e_c - w * self.unet(x, t, null)

    def log_prob_grad(self, x: Tensor, t: Tensor, do: Mapping[str, Any],
                      scale: float | Mapping[str, float] = 1.0) -> Tensor:
        """``sum_j s_j grad_{x_t} log p_phi(v_j | x_t, t)`` over the intervened parents (Eq. 7)."""
        total = torch.zeros_like(x)
        b = x.shape[0]
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            obj = xi.new_zeros(())
            for name, v in do.items():
                s = float(scale.get(name, 0.0) if isinstance(scale, Mapping) else scale)
                if s == 0.0:
                    continue
                logp = F.log_softmax(self.heads[name](xi, t), dim=-1)
                y = _as_codes(v, b, x.device)
                obj = obj + s * logp.gather(1, y[:, None]).sum()
            if obj.requires_grad:
                (total,) = torch.autograd.grad(obj, xi)
        return total.detach()

    @torch.no_grad()
    def predict_parent(self, name: str, x: Tensor, t: int | Tensor = 0) -> Tensor:
        """Class probabilities ``p_phi(pa_j | x_t, t)`` (``t = 0``: the clean image)."""
        head = self.heads[name]
        tt = torch.as_tensor(t, device=x.device).reshape(-1)
        if tt.numel() == 1:
            tt = tt.expand(x.shape[0])
        return torch.softmax(head(x, tt), dim=-1)

    # ------------------------------------------------------------------ configs & checkpoints
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DiffSCMModel:
        """Build from plain data (the ``model:`` section of an experiment config)::

            image: image            # image node name
            channels: 1
            image_size: 28
            parents: {class: 10}    # discrete parents and their number of classes
            graph: "class -> image" # optional; default: parents -> image, nothing else
            class_conditional: false
            unet: {preset: tiny, ...}        # whatifgan.nn.UNet keyword arguments
            classifier: {preset: tiny, ...}  # whatifgan.nn.TimeConditionedClassifier kwargs
            schedule: {name: linear, num_timesteps: 1000}
        """
        cfg = copy.deepcopy(dict(cfg))
        image = str(cfg.get("image", "image"))
        channels = int(cfg.get("channels", 1))
        size = int(cfg.get("image_size", 28))
        parents = {str(k): int(v) for k, v in (cfg.get("parents") or {"class": 10}).items()}
        if not parents:
            raise ValueError("model.parents must name at least one discrete parent of the image")
        ucfg = dict(cfg.get("unet") or {})
        preset = ucfg.pop("preset", "tiny")
        if cfg.get("class_conditional", False):
            ucfg.setdefault("labels", dict(parents))
        unet_kw = {**UNET_PRESETS[preset], **ucfg} if preset else ucfg
        unet = UNet(in_channels=channels, image_size=size, **unet_kw)
        ccfg = dict(cfg.get("classifier") or {})
        cpreset = ccfg.pop("preset", "tiny")
        cls_kw = {**CLASSIFIER_PRESETS[cpreset], **ccfg} if cpreset else ccfg
        heads = {p: TimeConditionedClassifier(k, in_channels=channels, image_size=size, **cls_kw)
                 for p, k in parents.items()}
        scfg = dict(cfg.get("schedule") or {})
        schedule = NoiseSchedule.from_name(scfg.pop("name", "linear"),
                                           int(scfg.pop("num_timesteps", 1000)), **scfg)
        full = {"image": image, "channels": channels, "image_size": size, "parents": parents,
                "graph": cfg.get("graph"), "class_conditional": bool(cfg.get("class_conditional",
                                                                               False)),
                "unet": {"preset": preset, **ucfg}, "classifier": {"preset": cpreset, **ccfg},
                "schedule": dict(cfg.get("schedule") or {"name": "linear",
                                                          "num_timesteps": 1000})}
        graph = cfg.get("graph")
        return cls(unet, heads, image=image, graph=graph, schedule=schedule, config=full)

    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Atomic checkpoint (loadable with ``torch.load(weights_only=True)``)."""
        from trainers.core import save_checkpoint

        if not self.config:
            raise ValueError("save() needs the model built by DiffSCMModel.from_config (its "
                             "config rebuilds the networks)")
        cfg = _plain(self.config)
        cfg["graph"] = self.graph.to_string()
        payload = {"kind": CHECKPOINT_KIND, "config": cfg,
                   "unet": {k: v.detach().cpu() for k, v in self.unet.state_dict().items()},
                   "heads": {n: {k: v.detach().cpu() for k, v in h.state_dict().items()}
                             for n, h in self.heads.items()},
                   "extra": _plain(dict(extra or {}))}
        return save_checkpoint(path, payload)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = "cpu") -> DiffSCMModel:
        from trainers.core import load_checkpoint

        ckpt = load_checkpoint(path, map_location=map_location, kind=CHECKPOINT_KIND)
        model = cls.from_config(ckpt["config"])
        model.unet.load_state_dict(ckpt["unet"])
        for n, sd in ckpt["heads"].items():
            model.heads[n].load_state_dict(sd)
        model.extra = dict(ckpt.get("extra", {}))
        return model.eval()


def _plain(x: Any) -> Any:
    """Config values as weights_only-loadable plain data."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, Path):
        return str(x)
    return x


def _as_codes(v: Any, batch: int, device) -> Tensor:
    t = torch.as_tensor(v, device=device)
    if t.is_floating_point():
        t = t.argmax(dim=-1) if t.dim() == 2 else t.round()
    t = t.long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{t.numel()} values for a batch of {batch}")
    return t


# ============================================================================= pipeline
@dataclass
class Abduction:
    """Result of abducting the exogenous noise: the noisy latent ``u`` at index ``index - 1`` of
    the respaced chain (``index`` inversion steps were run; ``index = 0``: ``u`` is the image)."""

    u: Tensor
    index: int
    fraction: float


class DiffSCMPipeline:
    """Algorithm 1 (counterfactuals), Appendix F (interventional samples), reconstructions.

    Parameters
    ----------
    model:
        A trained :class:`DiffSCMModel` (put in eval mode here).
    scheduler:
        A :class:`DiffSCMScheduler` (default: the model's schedule respaced to 100 steps).
    abduction_fraction:
        Default fraction of the chain inverted during abduction (official code: 0.75).
    """

    def __init__(self, model: DiffSCMModel, scheduler: DiffSCMScheduler | None = None, *,
                 abduction_fraction: float = DEFAULT_ABDUCTION_FRACTION,
                 inversion_fixed_point_iters: int = 0):
        self.model = model.eval()
        self.scheduler = scheduler if scheduler is not None else DiffSCMScheduler(model.schedule)
        if self.scheduler.train_schedule.num_train_timesteps != \
                model.schedule.num_train_timesteps:
            raise ValueError("the scheduler's training schedule differs from the model's")
        self.abduction_fraction = float(abduction_fraction)
        self.scheduler.abduction_steps(self.abduction_fraction)  # validates
        self.inversion_fixed_point_iters = int(inversion_fixed_point_iters)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _prepare(self, x: Tensor | np.ndarray) -> Tensor:
        return to_model_range(x, self.model.config.get("channels")).to(self.device)

    # ------------------------------------------------------------------ abduction
    @torch.no_grad()
    def abduct(self, x_F: Tensor | np.ndarray, *, fraction: float | None = None,
               factual: Mapping[str, Any] | None = None) -> Abduction:
        """Abduction of the exogenous noise (Algorithm 1, first box; Algorithm 3): deterministic
        DDIM inversion of the factual images up to ``fraction`` of the chain.

        ``factual`` gives the factual parent values for a class-conditional UNet (ignored by an
        unconditional one; missing = null token)."""
        f = self.abduction_fraction if fraction is None else float(fraction)
        k = self.scheduler.abduction_steps(f)
        x = self._prepare(x_F)
        sch = self.scheduler
        for i in range(k):
            t = sch.model_timesteps(i, x.shape[0], device=x.device)
            x_next = sch.inverse_step(self.model.eps(x, t, factual), i, x)
            for _ in range(self.inversion_fixed_point_iters):
                x_next = sch.inverse_step(self.model.eps(x_next, t, factual), i, x)
            x = x_next
        return Abduction(u=x, index=k, fraction=f)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, abduction: Abduction | Tensor, do: Mapping[str, Any] | None = None, *,
                 scale: float | Mapping[str, float] = 1.0,
                 factual: Mapping[str, Any] | None = None, guidance_weight: float = 0.0,
                 start_index: int | None = None, return_trajectory: bool = False
                 ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Generation under intervention (Algorithm 1, second box): guided deterministic DDIM
        from the abducted noise down to ``x_0``.

        ``eps^ = eps_theta(x_t, t) - sqrt(1 - abar_t) sum_j s_j grad log p_phi(v_j | x_t, t)``
        with ``do = {parent: value}`` (an int or a ``(B,)`` tensor per parent).  A
        class-conditional UNet is conditioned on ``factual`` with the intervened parents
        replaced by their new values (classifier-free guidance weight ``guidance_weight``).
        """
        do = dict(do or {})
        self.model.check_intervention(do)
        if isinstance(abduction, Abduction):
            x, k = abduction.u.to(self.device), abduction.index
        else:
            x = abduction.to(self.device)
            k = self.scheduler.num_steps if start_index is None else int(start_index)
        labels = dict(factual or {})
        labels.update(do)
        sch = self.scheduler
        traj = [x] if return_trajectory else None
        for i in reversed(range(k)):
            t = sch.model_timesteps(i, x.shape[0], device=x.device)
            eps = self.model.eps(x, t, labels, guidance_weight=guidance_weight)
            g = self.model.log_prob_grad(x, t, do, scale) if do else None
            x = sch.step(eps, i, x, guidance=g)
            if traj is not None:
                traj.append(x)
        return (x, traj) if traj is not None else x

    def counterfactual(self, x_F: Tensor | np.ndarray, do: Mapping[str, Any], *,
                       scale: float | Mapping[str, float] = 1.0, fraction: float | None = None,
                       factual: Mapping[str, Any] | None = None,
                       guidance_weight: float = 0.0) -> Tensor:
        """Algorithm 1: ``x_CF ~ p(x | do(pa_j = v); x_F)`` -- abduction by DDIM inversion up to
        ``fraction`` of the chain, then guided DDIM towards ``do`` with scale ``s``.  ``s = 0``
        (or an empty ``do``) gives the reconstruction of ``x_F``."""
        self.model.check_intervention(do)
        ab = self.abduct(x_F, fraction=fraction, factual=factual)
        return self.generate(ab, do, scale=scale, factual=factual,
                             guidance_weight=guidance_weight)

    def reconstruct(self, x_F: Tensor | np.ndarray, *, fraction: float | None = None,
                    factual: Mapping[str, Any] | None = None) -> Tensor:
        """Abduction then unguided DDIM (Appendix H, "rec.")."""
        return self.generate(self.abduct(x_F, fraction=fraction, factual=factual), {},
                             factual=factual)

    @torch.no_grad()
    def interventional(self, do: Mapping[str, Any], n: int | None = None, *,
                       x_T: Tensor | None = None, scale: float | Mapping[str, float] = 1.0,
                       fraction: float = 1.0, generator: torch.Generator | None = None,
                       guidance_weight: float = 0.0) -> Tensor:
        """Samples of ``p(x | do(pa_j = v))`` (Appendix F): guided DDIM from fresh Gaussian noise
        ``u ~ N(0, I)`` instead of the abducted one.  ``fraction < 1`` starts at that point of
        the chain (the "no abduction" baseline of the benchmark uses the same starting point as
        the counterfactuals it is compared with)."""
        k = self.scheduler.abduction_steps(fraction)
        if x_T is None:
            if n is None:
                raise ValueError("give n (number of samples) or x_T")
            c = int(self.model.config.get("channels", 1))
            s = int(self.model.config.get("image_size", 28))
            x_T = torch.randn((int(n), c, s, s), generator=generator)
        return self.generate(Abduction(u=x_T.to(self.device), index=k, fraction=fraction), do,
                             scale=scale, guidance_weight=guidance_weight)


# ============================================================================= training
class NoisedInputClassifier(nn.Module):
    """``p_phi(y | x_t, t)`` seen by :class:`trainers.ClassifierTrainer` as ``model(x_0)``.

    In training mode draws ``t ~ U{0, ..., T-1}`` and ``x_t = q_sample(x_0, t)`` (the anti-causal
    predictor is trained on noised images at uniform ``t``; Diff-SCM Sec. 5 and Appendix E, the
    official ``training_class.noised = True``).  In eval mode classifies its input at the fixed
    timestep ``eval_timestep`` (0: clean images)."""

    def __init__(self, classifier: nn.Module, schedule: NoiseSchedule, eval_timestep: int = 0):
        super().__init__()
        self.classifier = classifier
        self.schedule = schedule
        self.eval_timestep = int(eval_timestep)

    def forward(self, x0: Tensor) -> Tensor:
        b = x0.shape[0]
        if self.training:
            t = torch.randint(0, len(self.schedule), (b,), device=x0.device)
            return self.classifier(q_sample(self.schedule, x0, t), t)
        return self.classifier(x0, torch.full((b,), self.eval_timestep, device=x0.device))


def train_diffusion(model: DiffSCMModel, images: Tensor, labels: Mapping[str, Tensor] | None =
                    None, *, steps: int = 1000, batch_size: int = 64, lr: float = 2e-4,
                    ema_decay: float = 0.995, cond_dropout: float = 0.1, grad_clip: float | None
                    = 1.0, seed: int = 0, device: str | torch.device | None = None,
                    checkpoint_path: str | os.PathLike | None = None,
                    checkpoint_every: int | None = None, resume: bool = False,
                    log_dir: str | os.PathLike | None = None, progress: bool | None = None,
                    time_budget: float | None = None) -> dict[str, Any]:
    """Train ``eps_theta`` with the DDPM epsilon loss (Diff-SCM Eq. 1 / 17, Ho et al. 2020) on the
    full training schedule, with an EMA of the weights copied into ``model.unet`` at the end
    (Appendix E; use a smaller decay than 0.9999 for short runs).  A class-conditional UNet gets
    its labels from ``labels`` with classifier-free row dropout ``cond_dropout``.  Reuses
    :class:`trainers.DiffusionTrainer` (checkpoints, resume, TensorBoard, progress bar)."""
    from trainers import DiffusionConfig, DiffusionTrainer, TensorDictLoader, resolve_device

    dev = resolve_device(device)
    model.to(dev)
    x = to_model_range(images)
    tensors: dict[str, Tensor] = {"x": x}
    conds = model.label_conditions
    for name in conds:
        if labels is None or name not in labels:
            raise ValueError(f"the UNet is conditioned on {name!r}: pass labels[{name!r}]")
        tensors[name] = torch.as_tensor(labels[name]).long().reshape(-1)
    loader = TensorDictLoader(tensors, min(int(batch_size), x.shape[0]), seed=seed)
    ema = EMA(model.unet, decay=ema_decay)
    cfg = DiffusionConfig(lr=lr, max_steps=int(steps), cond_dropout=cond_dropout if conds else 0.0,
                          grad_clip=grad_clip, checkpoint_path=checkpoint_path,
                          checkpoint_every=checkpoint_every, progress=progress,
                          time_budget=time_budget, log_every=25)
    trainer = DiffusionTrainer(model.unet, model.schedule, loader, image_key="x",
                               condition_keys=list(conds), null_tokens=dict(conds), ema=ema,
                               config=cfg, device=dev, logger=log_dir)
    if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        trainer.load_checkpoint()
    t0 = time.monotonic()
    out = trainer.train()
    ema.copy_to(model.unet)
    model.unet.eval()
    losses = out["losses"]
    tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
    return {"step": out["step"], "stopped_by": out["stopped_by"],
            "final_loss": float(np.mean(tail)), "seconds": time.monotonic() - t0}


def train_anticausal_heads(model: DiffSCMModel, images: Tensor, parents: Mapping[str, Tensor], *,
                           steps: int = 1000, batch_size: int = 64, lr: float = 1e-3,
                           seed: int = 0, device: str | torch.device | None = None,
                           eval_images: Tensor | None = None,
                           eval_parents: Mapping[str, Tensor] | None = None,
                           eval_timesteps: Sequence[int] = (0, 250, 500, 750),
                           checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
                           log_dir: str | os.PathLike | None = None,
                           progress: bool | None = None) -> dict[str, Any]:
    """Train each head ``p_phi(pa_j | x_t, t)`` with cross-entropy on noised images at uniform
    ``t`` (:class:`NoisedInputClassifier` + :class:`trainers.ClassifierTrainer`).  Returns the
    held-out accuracy per head and evaluation timestep when eval data are given."""
    from trainers import ClassifierConfig, ClassifierTrainer, TensorDictLoader, resolve_device

    dev = resolve_device(device)
    model.to(dev)
    x = to_model_range(images)
    report: dict[str, Any] = {}
    for j, (name, head) in enumerate(model.heads.items()):
        if name not in parents:
            raise ValueError(f"no training labels for parent {name!r}")
        y = torch.as_tensor(parents[name]).long().reshape(-1)
        loader = TensorDictLoader({"x": x, "y": y}, min(int(batch_size), x.shape[0]),
                                  seed=seed + j)
        wrapped = NoisedInputClassifier(head, model.schedule).to(dev)
        ck = None if checkpoint_dir is None else Path(checkpoint_dir) / f"head_{name}.pt"
        tr = ClassifierTrainer(wrapped, loader, input_keys="x", target_key="y",
                               config=ClassifierConfig(lr=lr, max_steps=int(steps),
                                                       checkpoint_path=ck, progress=progress,
                                                       checkpoint_every=max(1, int(steps) // 4)),
                               device=dev, logger=None if log_dir is None else
                               Path(log_dir) / f"head_{name}")
        if resume and ck is not None and ck.exists():
            tr.load_checkpoint()
        t0 = time.monotonic()
        tr.train()
        head.eval()
        rep: dict[str, Any] = {"seconds": time.monotonic() - t0}
        if eval_images is not None and eval_parents is not None:
            xe = to_model_range(eval_images).to(dev)
            ye = torch.as_tensor(eval_parents[name]).long().reshape(-1).to(dev)
            g = torch.Generator().manual_seed(seed)
            for t in eval_timesteps:
                with torch.no_grad():
                    noise = torch.randn(xe.shape, generator=g).to(dev)
                    xt = q_sample(model.schedule, xe, int(t), noise)
                    acc = float((head(xt, torch.full((xe.shape[0],), int(t), device=dev))
                                 .argmax(1) == ye).float().mean())
                rep[f"accuracy_t{int(t)}"] = acc
        report[name] = rep
    return report


def load_data(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """MNIST train/test images and labels from the ``data:`` section (``source: embedded`` or a
    path to full MNIST; optional ``train_size`` subsample)."""
    from .data.mnist import load_mnist

    d = dict(cfg.get("data") or {})
    src = d.get("mnist_path") or d.get("source", "embedded")
    xtr, ytr = load_mnist(src, "train")
    xte, yte = load_mnist(src, "test")
    n = d.get("train_size")
    if n is not None and int(n) < len(ytr):
        rng = np.random.default_rng(int(d.get("seed", 0)))
        idx = np.sort(rng.choice(len(ytr), int(n), replace=False))
        xtr, ytr = xtr[idx], ytr[idx]
    return {"train": (torch.as_tensor(xtr), torch.as_tensor(ytr).long()),
            "test": (torch.as_tensor(xte), torch.as_tensor(yte).long())}


def load_config(cfg: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A Diff-SCM experiment config (a YAML path, a name in ``configs/experiments`` or a dict)."""
    from .pipelines.dcm_experiment import load_config as _load

    return _load(cfg)


def train_from_config(cfg: str | os.PathLike | Mapping[str, Any], run_dir: str | os.PathLike,
                      *, device: str | torch.device | None = None, resume: bool = False,
                      progress: bool | None = None, log: Any = print) -> DiffSCMModel:
    """Train the diffusion model and the anti-causal heads of a config; writes
    ``run_dir/model.pt`` (the EMA weights), ``run_dir/config.yaml`` and TensorBoard logs in
    ``run_dir/tb``.  The MNIST class is the only parent (``model.parents: {class: 10}``)."""
    import yaml

    from trainers import resolve_device, seed_everything

    cfg = load_config(cfg)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "config.yaml", "w") as f:
        yaml.safe_dump(_plain(cfg), f, sort_keys=False)
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    dev = resolve_device(device or cfg.get("device", "auto"))
    mcfg = dict(cfg.get("model") or {})
    model = DiffSCMModel.from_config(mcfg).to(dev)
    parent = next(iter(model.parents))
    data = load_data(cfg)
    xtr, ytr = data["train"]
    xte, yte = data["test"]
    tcfg = dict(cfg.get("train") or {})
    dcfg = dict(tcfg.get("diffusion") or {})
    log(f"[diffscm] training eps_theta ({sum(p.numel() for p in model.unet.parameters())} "
        f"parameters) on {len(ytr)} images for {dcfg.get('steps', 1000)} steps on {dev}")
    drep = train_diffusion(model, xtr, {parent: ytr}, seed=seed, device=dev,
                           checkpoint_path=run / "diffusion_trainer.pt",
                           checkpoint_every=dcfg.pop("checkpoint_every", 250), resume=resume,
                           log_dir=run / "tb" / "diffusion", progress=progress, **dcfg)
    log(f"[diffscm] diffusion: {drep}")
    ccfg = dict(tcfg.get("classifier") or {})
    log(f"[diffscm] training the anti-causal head(s) {list(model.parents)} for "
        f"{ccfg.get('steps', 1000)} steps")
    crep = train_anticausal_heads(model, xtr, {parent: ytr}, seed=seed, device=dev,
                                  eval_images=xte, eval_parents={parent: yte},
                                  checkpoint_dir=run, resume=resume, log_dir=run / "tb",
                                  progress=progress, **ccfg)
    log(f"[diffscm] heads: {crep}")
    model.save(run / "model.pt", extra={"diffusion": drep, "heads": crep})
    return model.eval()


def load_run(run_dir: str | os.PathLike, device: str | torch.device | None = None
             ) -> tuple[DiffSCMModel, dict[str, Any]]:
    """``(model, config)`` of a run directory written by :func:`train_from_config`."""
    import yaml

    from trainers import resolve_device

    run = Path(run_dir)
    if not (run / "model.pt").exists():
        raise FileNotFoundError(f"{run}/model.pt not found: train first with "
                                f"'whatifgan diffscm train CONFIG --run-dir {run}'")
    cfg = {}
    if (run / "config.yaml").exists():
        with open(run / "config.yaml") as f:
            cfg = yaml.safe_load(f) or {}
    model = DiffSCMModel.load(run / "model.pt").to(resolve_device(device))
    return model.eval(), cfg


def pipeline_from_config(model: DiffSCMModel, cfg: Mapping[str, Any] | None = None
                         ) -> DiffSCMPipeline:
    """The pipeline of a config's ``sampling:`` section (``num_steps``, ``abduction_fraction``,
    ``dynamic_normalisation``, ``clip_x0``, ``spacing``)."""
    s = dict((cfg or {}).get("sampling") or {})
    sch = DiffSCMScheduler(model.schedule, int(s.get("num_steps", 100)),
                           spacing=s.get("spacing", "linspace"),
                           dynamic_normalisation=s.get("dynamic_normalisation", False),
                           clip_x0=bool(s.get("clip_x0", False)))
    return DiffSCMPipeline(model, sch,
                           abduction_fraction=float(s.get("abduction_fraction",
                                                          DEFAULT_ABDUCTION_FRACTION)))


__all__ += ["load_config", "load_data", "pipeline_from_config"]
