"""Gumbel-softmax head for categorical variables, with replayable noise, and its temperature
schedule.

WhatIfGAN generates discrete variables with the Gumbel-softmax relaxation (Jang et al., 2017;
paper Appendix C.2 and F.1.1): ``y = softmax((logits + g) / T)`` with ``g ~ Gumbel(0, 1)`` i.i.d.
The Gumbel noise ``g`` is part of the exogenous noise of the mechanism: counterfactual sampling
records it during abduction and replays it in the prediction step (Appendix C.2; Algorithm 9,
lines 12-13 and 17-18: ``exos, conf, gumbel = N[V_i]``).  So every function here takes an optional
external ``noise`` and returns the noise it used.

The temperature starts at 1 and decreases to 0.1 during training (Appendix F.1.1);
:class:`TemperatureSchedule` implements ``T(t) = max(T0 * exp(-r * t), T_min)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["GumbelSample", "GumbelSoftmax", "TemperatureSchedule", "gumbel_softmax",
           "sample_gumbel"]


class GumbelSample(NamedTuple):
    """Output of the Gumbel-softmax head: the (soft or straight-through one-hot) sample and the
    Gumbel noise that produced it (replay it to reproduce ``value`` exactly)."""

    value: Tensor
    noise: Tensor


def sample_gumbel(shape: tuple[int, ...] | torch.Size, *, device=None, dtype=None,
                  generator: torch.Generator | None = None) -> Tensor:
    """i.i.d. standard Gumbel noise ``g = -log(E)``, ``E ~ Exp(1)`` (same as ``-log(-log U)``;
    numerically safe: ``E > 0`` almost surely)."""
    e = torch.empty(shape, device=device, dtype=dtype or torch.get_default_dtype())
    return -e.exponential_(generator=generator).log()


def gumbel_softmax(logits: Tensor, temperature: float = 1.0, *, hard: bool = False,
                   noise: Tensor | None = None, dim: int = -1,
                   generator: torch.Generator | None = None) -> GumbelSample:
    """Gumbel-softmax sample ``softmax((logits + g) / T)`` (Jang et al. 2017).

    ``hard=True`` is the straight-through estimator: the forward value is an *exact* one-hot
    vector (arg-max), the backward pass uses the gradient of the soft sample.  (Written as
    ``one_hot + (soft - soft.detach())``, whose forward value is exactly the one-hot, unlike the
    common ``one_hot - soft.detach() + soft`` that can be off by one ulp.)

    ``noise``: Gumbel noise of the same shape as ``logits`` to replay (abduction); when None, fresh
    noise is drawn.  Returns :class:`GumbelSample` ``(value, noise)``.
    """
    if temperature <= 0:
        raise ValueError(f"Gumbel-softmax temperature must be > 0, got {temperature}")
    if noise is None:
        noise = sample_gumbel(logits.shape, device=logits.device, dtype=logits.dtype,
                              generator=generator)
    else:
        if noise.shape != logits.shape:
            raise ValueError(f"replayed Gumbel noise has shape {tuple(noise.shape)}, the logits "
                             f"have shape {tuple(logits.shape)}")
        noise = noise.to(device=logits.device, dtype=logits.dtype)
    soft = torch.softmax((logits + noise) / temperature, dim=dim)
    if not hard:
        return GumbelSample(soft, noise)
    index = soft.argmax(dim=dim, keepdim=True)
    one_hot = torch.zeros_like(soft).scatter_(dim, index, 1.0)
    return GumbelSample(one_hot + (soft - soft.detach()), noise)


class GumbelSoftmax(nn.Module):
    """Gumbel-softmax head module (soft by default; ``hard=True`` for straight-through).

    ``temperature`` is a plain attribute, updated during training by
    :class:`TemperatureSchedule` (``schedule.apply(model, step)``).
    """

    def __init__(self, temperature: float = 1.0, hard: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"Gumbel-softmax temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.hard = bool(hard)

    def forward(self, logits: Tensor, noise: Tensor | None = None, *, hard: bool | None = None,
                temperature: float | None = None) -> GumbelSample:
        return gumbel_softmax(logits, self.temperature if temperature is None else temperature,
                              hard=self.hard if hard is None else hard, noise=noise)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, hard={self.hard}"


@dataclass(frozen=True)
class TemperatureSchedule:
    """Exponentially decaying Gumbel-softmax temperature ``T(t) = max(T0 * exp(-r * t), T_min)``.

    The paper anneals the temperature from 1 down to 0.1 (Appendix F.1.1).  ``t`` is the training
    step (or epoch) counter and the value is a closed-form function of it, so it is the same
    whether training runs straight through or is resumed from a checkpoint.

    Why the closed form: the paper's official code updates the temperature in place, applying the
    decay factor to the *already decayed* temperature at every update, which compounds the decay
    by accident.  With the factor ``exp(-r * t)`` at update ``t`` (``T <- T * exp(-r * t)``), after
    ``t`` updates ``T = T0 * exp(-r * t (t + 1) / 2)``: quadratic instead of linear in the
    exponent, so ``T_min`` is reached after about ``sqrt(2 ln(T0/T_min) / r)`` updates instead of
    ``ln(T0/T_min) / r``, and the value depends on the update history rather than on the step
    alone (which also breaks exact resume).  We implement the stated formula as a pure function
    of the step; :meth:`reaching` picks ``r`` from the step at which ``T_min`` should be reached.
    """

    t0: float = 1.0
    rate: float = 1e-3
    t_min: float = 0.1

    def __post_init__(self):
        if self.t0 <= 0 or self.t_min <= 0:
            raise ValueError(f"temperatures must be > 0 (t0={self.t0}, t_min={self.t_min})")
        if self.t_min > self.t0:
            raise ValueError(f"t_min={self.t_min} must not exceed t0={self.t0}")
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0, got {self.rate}")

    @classmethod
    def reaching(cls, steps: int, *, t0: float = 1.0, t_min: float = 0.1) -> TemperatureSchedule:
        """The schedule that decays from ``t0`` to ``t_min`` in exactly ``steps`` steps."""
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        return cls(t0=t0, rate=math.log(t0 / t_min) / steps, t_min=t_min)

    def __call__(self, step: int | float) -> float:
        return max(self.t0 * math.exp(-self.rate * float(step)), self.t_min)

    def apply(self, module: nn.Module, step: int | float) -> float:
        """Set the temperature of every :class:`GumbelSoftmax` inside ``module``; returns it."""
        t = self(step)
        for m in module.modules():
            if isinstance(m, GumbelSoftmax):
                m.temperature = t
        return t

    def callback(self, *modules: nn.Module) -> Callable[[int], float]:
        """``f(step)`` for ``trainers.WGANGPTrainer(temperature_callback=...)``."""
        def update(step: int) -> float:
            t = self(step)
            for mod in modules:
                self.apply(mod, step)
            return t

        return update
