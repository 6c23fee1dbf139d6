"""DDIM sampling and inversion (Song et al. 2021a), with classifier-free and classifier guidance.

Sampling (Song et al. 2021a, Eq. 12; Diff-SCM Algorithm 2), between consecutive kept steps
``t = tau_i`` and ``t' = tau_{i-1}`` (``abar_{t'} = 1`` after the last step)::

    x_0_hat  = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    sigma    = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t')
    x_t'     = sqrt(abar_t') x_0_hat + sqrt(1 - abar_t' - sigma^2) eps + sigma z

``eta = 0`` is the deterministic DDIM of Diff-SCM (the exogenous noise ``u = x_T`` fixes the
image); ``eta = 1`` has the DDPM marginals.  (Diff-SCM's Algorithms 1-3 print
``+ sqrt(alpha_{t-1}) eps``; the direction term is ``sqrt(1 - alpha_{t-1}) eps`` as in Song et al.)

Inversion / abduction of the exogenous noise (Diff-SCM Sec. 3.4 and Algorithm 3; Song et al.
2021a, Sec. 4.3 and 5.4): the deterministic update run forwards, ``x_0 -> x_T``::

    x_t = sqrt(abar_t) (x_t' - sqrt(1 - abar_t') eps) / sqrt(abar_t') + sqrt(1 - abar_t) eps

It is the exact inverse of the sampling step when ``eps = eps_theta(x_t, t)``; since ``x_t`` is
not known yet, the usual approximation evaluates ``eps_theta(x_t', t)`` (error of the order of the
step size).  ``fixed_point_iters > 0`` refines ``x_t`` by the fixed-point iteration
``x_t <- step^{-1}(x_t', eps_theta(x_t, t))``, which makes sampling reconstruct ``x_0`` to within
solver tolerance for smooth models.

Guidance (:mod:`whatifgan.diffusion.guidance`, re-exported here): classifier-free guidance
``eps~ = (1 + w) eps(x, c) - w eps(x, null)`` (Ho & Salimans 2021; ID-GEN, Appendix F.2.3: DDIM
over 100 steps) and classifier guidance ``eps^ = eps - s sqrt(1 - abar_t) grad log p(y | x_t)``
(Dhariwal & Nichol 2021; Diff-SCM Algorithm 1, "Generation under Intervention").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .ddpm import DiffusionSampler
from .guidance import (
    EpsFn,
    GradFn,
    apply_classifier_guidance,
    classifier_free_guidance,
    classifier_guidance,
    classifier_log_prob_grad,
    make_eps_fn,
)
from .schedules import NoiseSchedule

__all__ = ["DDIMSampler", "apply_classifier_guidance", "classifier_free_guidance",
           "classifier_guidance", "classifier_log_prob_grad", "make_eps_fn"]


class DDIMSampler(DiffusionSampler):
    """DDIM sampler (Song et al. 2021a) over a respaced schedule; :meth:`invert` abducts ``x_T``.

    Parameters
    ----------
    schedule:
        The training schedule (:class:`~whatifgan.diffusion.schedules.NoiseSchedule`).
    num_steps:
        Number of DDIM steps (e.g. 100 for ID-GEN; None = all training steps, as Diff-SCM uses
        for counterfactuals, Appendix E).
    eta:
        0 = deterministic DDIM, > 0 stochastic (1 = DDPM-like variance).
    spacing, clip_x0:
        See :class:`~whatifgan.diffusion.ddpm.DiffusionSampler`.
    """

    def __init__(self, schedule: NoiseSchedule, num_steps: int | None = None, *,
                 eta: float = 0.0, spacing: str = "linspace", clip_x0: float | None = None):
        super().__init__(schedule, num_steps, spacing=spacing, clip_x0=clip_x0)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = float(eta)

    # ------------------------------------------------------------------ single steps
    def sigma(self, i: int, like: Tensor, eta: float | None = None) -> Tensor:
        """``sigma_i(eta)`` of Song et al. (2021a), Eq. 16."""
        eta = self.eta if eta is None else float(eta)
        a_t = self.schedule.gather("alphas_cumprod", i, like)
        a_p = self.schedule.gather("alphas_cumprod_prev", i, like)
        return eta * ((1 - a_p) / (1 - a_t)).sqrt() * (1 - a_t / a_p).clamp(min=0).sqrt()

    def step(self, eps: Tensor, i: int, x_t: Tensor, *, eta: float | None = None,
             noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """One DDIM update from index ``i`` to ``i - 1`` (Song et al. 2021a, Eq. 12)."""
        eta = self.eta if eta is None else float(eta)
        x0, eps = self._x0_and_eps(eps, i, x_t)
        a_p = self.schedule.gather("alphas_cumprod_prev", i, x_t)
        if eta == 0.0:
            return a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps
        sig = self.sigma(i, x_t, eta)
        x = a_p.sqrt() * x0 + (1 - a_p - sig ** 2).clamp(min=0).sqrt() * eps
        if i == 0:
            return x  # sigma_0 = 0: abar_prev = 1
        if noise is None:
            noise = self._noise(x_t, generator)
        return x + sig * noise

    def inverse_step(self, eps: Tensor, i: int, x_prev: Tensor) -> Tensor:
        """Deterministic update from index ``i - 1`` (``x_0`` for ``i = 0``) to ``i``
        (Diff-SCM Algorithm 3): the exact inverse of :meth:`step` with ``eta = 0`` and the same
        ``eps``."""
        a_p = self.schedule.gather("alphas_cumprod_prev", i, x_prev)
        a_t = self.schedule.gather("alphas_cumprod", i, x_prev)
        x0 = (x_prev - (1 - a_p).sqrt() * eps) / a_p.sqrt()
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        return a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps

    # ------------------------------------------------------------------ loops
    @torch.no_grad()
    def sample(self, model: Callable | None, x_T: Tensor | None = None, *, shape=None,
               cond: Mapping[str, Any] | None = None, guidance_weight: float = 0.0,
               null_cond: Mapping[str, Any] | None = None,
               classifier_grad: GradFn | None = None, classifier_scale: float = 1.0,
               eps_fn: EpsFn | None = None, eta: float | None = None,
               generator: torch.Generator | None = None, device=None, dtype=None,
               return_trajectory: bool = False, progress: bool = False
               ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """DDIM sampling ``x_T -> x_0`` (Diff-SCM Algorithm 2; with ``classifier_grad``,
        Algorithm 1's "Generation under Intervention").

        ``x_T`` is the exogenous noise (abducted by :meth:`invert` for counterfactuals, or drawn
        from ``N(0, I)`` of ``shape`` with ``generator``).  ``guidance_weight`` is the
        classifier-free guidance weight ``w`` (0: conditional model only); ``classifier_grad``
        (e.g. :func:`classifier_log_prob_grad`) and ``classifier_scale`` ``s`` add classifier
        guidance.  ``eps_fn`` overrides all model/guidance arguments.  Put the network in eval
        mode first (dropout would make the sampler stochastic).
        """
        fn = eps_fn or self.eps_fn(model, cond=cond, guidance_weight=guidance_weight,
                                   null_cond=null_cond, classifier_grad=classifier_grad,
                                   classifier_scale=classifier_scale)
        x = self._initial(x_T, shape, generator, device, dtype)
        traj = [x] if return_trajectory else None
        bar = self._progress(self.num_steps, progress, "DDIM")
        for i in reversed(range(self.num_steps)):
            t = self.schedule.model_timesteps(i, x.shape[0], device=x.device)
            x = self.step(fn(x, t), i, x, eta=eta, generator=generator)
            if traj is not None:
                traj.append(x)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return (x, traj) if traj is not None else x

    @torch.no_grad()
    def invert(self, model: Callable | None, x_0: Tensor, *,
               cond: Mapping[str, Any] | None = None, guidance_weight: float = 0.0,
               null_cond: Mapping[str, Any] | None = None, eps_fn: EpsFn | None = None,
               fixed_point_iters: int = 0, return_trajectory: bool = False,
               progress: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """DDIM inversion ``x_0 -> x_T``: abduction of the exogenous noise ``u = x_T``
        (Diff-SCM Sec. 3.4, Algorithm 1 first box and Algorithm 3).

        Always deterministic (``eta = 0``).  Use the same model/conditioning (and number of steps)
        as the later :meth:`sample` call that should reconstruct ``x_0``; Diff-SCM abducts with
        the unconditional model and intervenes with classifier guidance only in the generation.
        ``fixed_point_iters`` refines each step (see the module docstring).
        """
        if fixed_point_iters < 0:
            raise ValueError(f"fixed_point_iters must be >= 0, got {fixed_point_iters}")
        fn = eps_fn or self.eps_fn(model, cond=cond, guidance_weight=guidance_weight,
                                   null_cond=null_cond)
        x = x_0
        traj = [x] if return_trajectory else None
        bar = self._progress(self.num_steps, progress, "DDIM inversion")
        for i in range(self.num_steps):
            t = self.schedule.model_timesteps(i, x.shape[0], device=x.device)
            x_next = self.inverse_step(fn(x, t), i, x)
            for _ in range(int(fixed_point_iters)):
                x_next = self.inverse_step(fn(x_next, t), i, x)
            x = x_next
            if traj is not None:
                traj.append(x)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return (x, traj) if traj is not None else x
