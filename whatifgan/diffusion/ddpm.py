"""DDPM: forward noising, the epsilon-prediction loss and ancestral sampling (Ho et al. 2020).

Notation of Ho et al. (2020) and Diff-SCM, Appendix A (Diff-SCM writes ``alpha_t`` for
``abar_t``):

* forward process, closed form (Ho Eq. 4; Diff-SCM Eq. 12-13)::

      x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I)        (:func:`q_sample`)

* the simple loss (Ho Eq. 14; Diff-SCM Eq. 1 and 17 add the weight ``1 - abar_t``)::

      L_simple = E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2            (:func:`epsilon_loss`)

* the posterior of one reverse step (Ho Eq. 6-7; Diff-SCM Eq. 14-15)::

      q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)
      mu~_t   = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0
              + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
      beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t

* ancestral sampling (Ho Algorithm 2; Diff-SCM Eq. 2): ``x_0`` is predicted from ``eps_theta``,
  then ``x_{t-1} ~ N(mu~_t(x_t, x_0_hat), sigma_t^2 I)`` with ``sigma_t^2 = beta~_t`` or
  ``beta_t`` (:class:`DDPMSampler`).  On a respaced schedule this is the strided DDPM sampler of
  Nichol & Dhariwal (2021), Sec. 4.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .guidance import EpsFn, GradFn, make_eps_fn
from .schedules import NoiseSchedule

__all__ = ["DDPMSampler", "DiffusionSampler", "epsilon_loss", "predict_eps", "predict_x0",
           "q_posterior", "q_sample"]


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor | int,
             noise: Tensor | None = None) -> Tensor:
    """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (Ho et al. 2020, Eq. 4; Diff-SCM Eq. 13).

    ``t`` indexes ``schedule`` (for the full training schedule: the timestep).
    """
    if noise is None:
        noise = torch.randn_like(x0)
    abar = schedule.gather("alphas_cumprod", t, x0)
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise


def predict_x0(schedule: NoiseSchedule, x_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
    """``x_0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (inverse of Eq. 4)."""
    abar = schedule.gather("alphas_cumprod", t, x_t)
    return (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()


def predict_eps(schedule: NoiseSchedule, x_t: Tensor, t: Tensor | int, x0: Tensor) -> Tensor:
    """``eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)``."""
    abar = schedule.gather("alphas_cumprod", t, x_t)
    return (x_t - abar.sqrt() * x0) / (1.0 - abar).sqrt()


def q_posterior(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor | int
                ) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``q(x_{t-1} | x_t, x_0)`` (Ho et al. 2020, Eq. 6-7; Diff-SCM Eq. 14-15).

    ``t`` indexes ``schedule``; on a respaced schedule ``beta_t``/``alpha_t`` are the respaced
    ones, so the formula is the posterior between consecutive kept steps."""
    abar = schedule.gather("alphas_cumprod", t, x_t)
    abar_prev = schedule.gather("alphas_cumprod_prev", t, x_t)
    beta = schedule.gather("betas", t, x_t)
    alpha = 1.0 - beta
    mean = (abar_prev.sqrt() * beta / (1.0 - abar)) * x0 + (
        alpha.sqrt() * (1.0 - abar_prev) / (1.0 - abar)) * x_t
    var = beta * (1.0 - abar_prev) / (1.0 - abar)
    return mean, var


def epsilon_loss(model: Callable, schedule: NoiseSchedule, x0: Tensor, *,
                 cond: Mapping[str, Any] | None = None, t: Tensor | None = None,
                 noise: Tensor | None = None, weighting: str = "simple",
                 reduction: str = "mean", **model_kwargs: Any) -> Tensor:
    """The DDPM epsilon-prediction loss with ``t`` uniform on the schedule's indices.

    ``weighting="simple"``: ``L_simple`` of Ho et al. (2020), Eq. 14 (what Dhariwal & Nichol and
    most implementations train with); ``"1-abar"``: the weighted form of Diff-SCM, Eq. 1 / 17.
    ``reduction="none"`` returns the per-sample losses.  The network sees the training timestep
    ``schedule.timesteps[t]``.
    """
    b = x0.shape[0]
    if t is None:
        t = torch.randint(0, len(schedule), (b,), device=x0.device)
    if noise is None:
        noise = torch.randn_like(x0)
    x_t = q_sample(schedule, x0, t, noise)
    tm = schedule.model_timesteps(t, b, device=x0.device)
    if cond is None and not model_kwargs:
        eps = model(x_t, tm)
    else:
        eps = model(x_t, tm, cond, **model_kwargs)
    per = (eps - noise).pow(2).reshape(b, -1).mean(dim=1)
    if weighting == "1-abar":
        per = per * (1.0 - schedule.gather("alphas_cumprod", t, per))
    elif weighting != "simple":
        raise ValueError(f"unknown loss weighting {weighting!r}; use 'simple' or '1-abar'")
    if reduction == "mean":
        return per.mean()
    if reduction == "none":
        return per
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'none'")


class DiffusionSampler:
    """Common part of the samplers: a (respaced) schedule, initial noise and the eps function.

    Parameters
    ----------
    schedule:
        The training schedule of the network.
    num_steps:
        Sample over this many respaced steps (None: every training step).
    spacing:
        How the steps are chosen (:func:`~whatifgan.diffusion.schedules.respaced_indices`).
    clip_x0:
        Clamp the predicted ``x_0`` to ``[-clip_x0, clip_x0]`` at every step (images scaled to
        ``[-1, 1]``: 1.0); None disables it (needed for exact DDIM inversion).
    """

    def __init__(self, schedule: NoiseSchedule, num_steps: int | None = None, *,
                 spacing: str = "linspace", clip_x0: float | None = None):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.train_schedule = schedule
        if num_steps is not None and int(num_steps) != len(schedule):
            self.schedule = schedule.respace(int(num_steps), spacing)
        else:
            self.schedule = schedule
        self.clip_x0 = clip_x0

    @property
    def num_steps(self) -> int:
        return len(self.schedule)

    @property
    def timesteps(self) -> Tensor:
        """Training timesteps visited, in increasing order (sampling walks them backwards)."""
        return self.schedule.timesteps

    def eps_fn(self, model: Callable, *, cond: Mapping[str, Any] | None = None,
               guidance_weight: float = 0.0, null_cond: Mapping[str, Any] | None = None,
               classifier_grad: GradFn | None = None, classifier_scale: float = 1.0) -> EpsFn:
        """See :func:`whatifgan.diffusion.guidance.make_eps_fn`."""
        return make_eps_fn(model, self.schedule, cond=cond, guidance_weight=guidance_weight,
                           null_cond=null_cond, classifier_grad=classifier_grad,
                           classifier_scale=classifier_scale)

    def _x0_and_eps(self, eps: Tensor, i: int, x_t: Tensor) -> tuple[Tensor, Tensor]:
        x0 = predict_x0(self.schedule, x_t, i, eps)
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            eps = predict_eps(self.schedule, x_t, i, x0)  # keep eps consistent with the clip
        return x0, eps

    @staticmethod
    def _noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    @staticmethod
    def _initial(x_T: Tensor | None, shape, generator, device, dtype) -> Tensor:
        if x_T is not None:
            return x_T
        if shape is None:
            raise ValueError("give x_T (the exogenous noise) or shape= to draw it from N(0, I)")
        return torch.randn(tuple(shape), generator=generator, device=device,
                           dtype=dtype or torch.get_default_dtype())

    @staticmethod
    def _progress(n: int, enabled: bool, desc: str):
        if not enabled:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=n, desc=desc, leave=False, dynamic_ncols=True)


class DDPMSampler(DiffusionSampler):
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2; Diff-SCM Eq. 2), optionally strided.

    ``variance="beta_tilde"`` uses the posterior variance ``beta~_t`` (the lower bound of Ho et
    al., Sec. 3.2), ``"beta"`` the upper one ``beta_t``.  Guidance options as in
    :func:`~whatifgan.diffusion.guidance.make_eps_fn`.
    """

    def __init__(self, schedule: NoiseSchedule, num_steps: int | None = None, *,
                 spacing: str = "linspace", variance: str = "beta_tilde",
                 clip_x0: float | None = None):
        super().__init__(schedule, num_steps, spacing=spacing, clip_x0=clip_x0)
        if variance not in ("beta_tilde", "beta"):
            raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {variance!r}")
        self.variance = variance

    def step(self, eps: Tensor, i: int, x_t: Tensor, *, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """``x_{i-1} ~ N(mu~(x_t, x_0_hat), sigma^2 I)``; no noise at the last step (``i = 0``)."""
        x0, _ = self._x0_and_eps(eps, i, x_t)
        mean, var = q_posterior(self.schedule, x0, x_t, i)
        if i == 0:
            return mean
        if self.variance == "beta":
            var = self.schedule.gather("betas", i, x_t)
        if noise is None:
            noise = self._noise(x_t, generator)
        return mean + var.sqrt() * noise

    @torch.no_grad()
    def sample(self, model: Callable, x_T: Tensor | None = None, *, shape=None,
               cond: Mapping[str, Any] | None = None, guidance_weight: float = 0.0,
               null_cond: Mapping[str, Any] | None = None,
               classifier_grad: GradFn | None = None, classifier_scale: float = 1.0,
               eps_fn: EpsFn | None = None, generator: torch.Generator | None = None,
               device=None, dtype=None, return_trajectory: bool = False,
               progress: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Draw ``x_0`` from ``x_T`` (given, or ``N(0, I)`` of ``shape``).

        ``eps_fn`` overrides the model/guidance arguments.  Put the network in eval mode first.
        With ``return_trajectory`` also returns ``[x_T, ..., x_0]``.
        """
        fn = eps_fn or self.eps_fn(model, cond=cond, guidance_weight=guidance_weight,
                                   null_cond=null_cond, classifier_grad=classifier_grad,
                                   classifier_scale=classifier_scale)
        x = self._initial(x_T, shape, generator, device, dtype)
        traj = [x] if return_trajectory else None
        bar = self._progress(self.num_steps, progress, "DDPM")
        for i in reversed(range(self.num_steps)):
            t = self.schedule.model_timesteps(i, x.shape[0], device=x.device)
            x = self.step(fn(x, t), i, x, generator=generator)
            if traj is not None:
                traj.append(x)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return (x, traj) if traj is not None else x
