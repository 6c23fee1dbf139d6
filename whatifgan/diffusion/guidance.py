"""Noise-prediction functions and guidance, shared by the DDPM and DDIM samplers.

Samplers work with an *eps function* ``eps_fn(x_t, t) -> eps`` where ``t`` is a ``(B,)`` long
tensor of training timesteps.  :func:`make_eps_fn` builds it from a network and the sampling
options, composing:

* **Conditioning.**  The network is called as ``model(x_t, t, cond)`` (``model(x_t, t)`` when
  ``cond`` is None).  Networks of :mod:`whatifgan.nn.unet` also accept ``null_mask=`` (rows to
  treat as unconditional); they advertise it with ``supports_null_mask = True``.
* **Classifier-free guidance** (Ho & Salimans 2021, Eq. 6; ID-GEN, Appendix F.2.3)::

      eps~(x_t, c) = (1 + w) eps(x_t, c) - w eps(x_t, null)

  where ``eps(x_t, null)`` is the network's own unconditional branch, learned by condition
  dropout to an explicit null token (:class:`trainers.DiffusionTrainer`).  ``w = 0`` is plain
  conditional sampling and is computed without the unconditional branch at all.  ID-GEN's
  "conditioning weight w = 1 (true conditional sampling)" uses the other common convention
  ``eps~ = w' eps(c) + (1 - w') eps(null)``: ``w' = 1 + w``, so ID-GEN's setting is ``w = 0`` here.
* **Classifier guidance** (Dhariwal & Nichol 2021, Algorithm 2; Diff-SCM Algorithm 1, "Generation
  under Intervention")::

      eps^(x_t) = eps(x_t) - s sqrt(1 - abar_t) grad_{x_t} log p_phi(y | x_t, t)

  with the gradient of an anti-causal, time-conditioned classifier (Diff-SCM, Prop. 1 / Eq. 7;
  :func:`classifier_log_prob_grad`) and scale ``s`` (Diff-SCM Sec. 3.4, "Controlling the
  Intervention").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .schedules import NoiseSchedule

__all__ = ["EpsFn", "GradFn", "apply_classifier_guidance", "classifier_free_guidance",
           "classifier_guidance", "classifier_log_prob_grad", "make_eps_fn", "model_eps_fn"]

EpsFn = Callable[[Tensor, Tensor], Tensor]
GradFn = Callable[[Tensor, Tensor], Tensor]
Cond = Mapping[str, Any] | None


def _call(model: Callable, x: Tensor, t: Tensor, cond: Cond, null_mask: Tensor | None) -> Tensor:
    if null_mask is not None:
        return model(x, t, cond, null_mask=null_mask)
    if cond is None:
        return model(x, t)
    return model(x, t, cond)


def model_eps_fn(model: Callable, cond: Cond = None, *, null_mask: Tensor | None = None
                 ) -> EpsFn:
    """``eps_fn(x, t) = model(x, t, cond)`` (``model(x, t)`` when ``cond`` is None)."""

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        return _call(model, x, t, cond, null_mask)

    return eps_fn


def _repeat_cond(cond: Cond) -> Cond:
    if cond is None:
        return None
    return {k: (None if v is None else torch.cat([v, v], dim=0)) for k, v in cond.items()}


def classifier_free_guidance(model: Callable, cond: Cond, weight: float, *,
                             null_cond: Cond = None, batched: bool = True) -> EpsFn:
    """``eps~ = (1 + w) eps(x, c) - w eps(x, null)`` (Ho & Salimans 2021, Eq. 6).

    The unconditional branch ``eps(x, null)`` is

    * ``model(x, t, null_cond)`` when ``null_cond`` is given (e.g. every label set to its null
      token), for any network; or
    * ``model(x, t, cond, null_mask=all True)`` for networks with ``supports_null_mask`` (the
      UNet of :mod:`whatifgan.nn.unet`, whose null embeddings were learned by condition dropout).

    With ``batched=True`` and the null-mask route both branches run in one forward pass of a
    doubled batch.  ``w = 0`` returns the conditional branch only.
    """
    w = float(weight)
    if w == 0.0:
        return model_eps_fn(model, cond)
    uses_mask = null_cond is None
    if uses_mask and not getattr(model, "supports_null_mask", False):
        raise TypeError(
            f"classifier-free guidance needs the model's unconditional branch: pass null_cond= "
            f"(the condition with every label set to its null token), or use a network that "
            f"accepts null_mask= (supports_null_mask = True), e.g. whatifgan.nn.UNet; "
            f"{type(model).__name__} does neither")

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        if uses_mask and batched:
            mask = torch.cat([torch.zeros(b, dtype=torch.bool, device=x.device),
                              torch.ones(b, dtype=torch.bool, device=x.device)])
            out = _call(model, torch.cat([x, x]), torch.cat([t, t]), _repeat_cond(cond), mask)
            e_c, e_u = out[:b], out[b:]
        elif uses_mask:
            e_c = _call(model, x, t, cond, None)
            e_u = _call(model, x, t, cond, torch.ones(b, dtype=torch.bool, device=x.device))
        else:
            e_c = _call(model, x, t, cond, None)
            e_u = _call(model, x, t, null_cond, None)
        return (1.0 + w) * e_c - w * e_u

    return eps_fn


def classifier_log_prob_grad(classifier: Callable[[Tensor, Tensor], Tensor],
                             y: Tensor | int) -> GradFn:
    """``grad_{x_t} log p_phi(y | x_t, t)`` of a time-conditioned classifier returning logits.

    The anti-causal predictor of Diff-SCM (Sec. 3.3, Eq. 7; Appendix E), e.g.
    :class:`whatifgan.nn.TimeConditionedClassifier`.  ``y`` is the intervened class (an int or a
    ``(B,)`` long tensor).  Gradients are computed even inside ``torch.no_grad()``; the
    classifier's parameters receive none.
    """

    def grad_fn(x: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            logp = F.log_softmax(classifier(xi, t), dim=-1)
            yy = torch.as_tensor(y, device=x.device, dtype=torch.long).reshape(-1)
            if yy.numel() == 1:
                yy = yy.expand(x.shape[0])
            sel = logp.gather(1, yy[:, None]).sum()
            (g,) = torch.autograd.grad(sel, xi)
        return g.detach()

    return grad_fn


def apply_classifier_guidance(eps: Tensor, grad: Tensor, scale: float,
                              alphas_cumprod_t: Tensor) -> Tensor:
    """``eps - s sqrt(1 - abar_t) grad`` (Dhariwal & Nichol 2021, Alg. 2; Diff-SCM Alg. 1)."""
    return eps - float(scale) * torch.sqrt(1.0 - alphas_cumprod_t) * grad


def classifier_guidance(eps_fn: EpsFn, grad_fn: GradFn, scale: float,
                        schedule: NoiseSchedule) -> EpsFn:
    """Wrap ``eps_fn`` with classifier guidance (:func:`apply_classifier_guidance`); ``abar_t``
    is looked up in ``schedule`` at the model timestep ``t``."""
    s = float(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        eps = eps_fn(x, t)
        if s == 0.0:
            return eps
        abar = schedule.alphas_cumprod_at(t, like=x)
        return apply_classifier_guidance(eps, grad_fn(x, t), s, abar)

    return guided


def make_eps_fn(model: Callable, schedule: NoiseSchedule, *, cond: Cond = None,
                guidance_weight: float = 0.0, null_cond: Cond = None,
                classifier_grad: GradFn | None = None, classifier_scale: float = 1.0,
                batched: bool = True) -> EpsFn:
    """The eps function a sampler uses: conditioning, classifier-free guidance with weight
    ``guidance_weight`` (:func:`classifier_free_guidance`), then classifier guidance with
    ``classifier_grad`` and scale ``classifier_scale`` (:func:`classifier_guidance`)."""
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    fn = classifier_free_guidance(model, cond, guidance_weight, null_cond=null_cond,
                                  batched=batched)
    if classifier_grad is not None:
        fn = classifier_guidance(fn, classifier_grad, classifier_scale, schedule)
    return fn
