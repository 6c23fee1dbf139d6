"""Noise schedules of denoising diffusion models (scheduler objects, separate from the networks).

The forward (noising) process of DDPM (Ho et al. 2020, Eq. 2 and 4; Diff-SCM Appendix A,
Eq. 11-13) is fixed by a variance schedule ``beta_1 .. beta_T``::

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s)

(Diff-SCM writes ``alpha_t`` for ``abar_t``.)  :class:`NoiseSchedule` holds ``betas``,
``alphas = 1 - betas`` and ``alphas_cumprod = abar`` in float64 and gathers them per sample.

* :meth:`NoiseSchedule.linear`: ``beta`` linear from 1e-4 to 0.02 with T = 1000 (Ho et al. 2020,
  Sec. 4; the schedule of Diff-SCM, Appendix E, Table 2: 1000 diffusion steps).
* :meth:`NoiseSchedule.cosine`: ``abar_t = f(t)/f(0)``, ``f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)``
  (Nichol & Dhariwal 2021, Eq. 17), betas clipped at 0.999.
* :meth:`NoiseSchedule.respace`: a sub-sequence ``tau_1 < ... < tau_K`` of the training timesteps
  for fast sampling (DDIM, Song et al. 2021a, Sec. 4.2; Nichol & Dhariwal 2021, Sec. 4): the
  respaced schedule keeps ``abar_{tau_i}`` exactly and gets the betas
  ``beta'_i = 1 - abar_{tau_i} / abar_{tau_{i-1}}`` (so its cumulative product reproduces the
  kept ``abar``).  ID-GEN samples with DDIM over 100 steps (Appendix F.2.3).

Indices versus timesteps: samplers loop over *indices* ``i = 0 .. K-1`` of a (possibly respaced)
schedule; the network is always evaluated at the *training* timestep ``timesteps[i]``.  For the
full schedule the two coincide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["NoiseSchedule", "cosine_beta_schedule", "linear_beta_schedule", "respaced_indices"]


def linear_beta_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4,
                         beta_end: float = 0.02) -> Tensor:
    """``beta_t`` linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020, Sec. 4), float64."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_beta_schedule(num_timesteps: int = 1000, s: float = 0.008,
                         max_beta: float = 0.999) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, Eq. 17): float64 betas clipped at ``max_beta``."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = 1 - abar[1:] / abar[:-1]
    return betas.clamp(min=0.0, max=max_beta)


def respaced_indices(num_timesteps: int, num_steps: int, spacing: str = "linspace") -> Tensor:
    """``num_steps`` increasing indices in ``0 .. num_timesteps - 1``.

    * ``"linspace"``: evenly spaced, always containing 0 and ``T - 1`` (rounded);
    * ``"leading"``: ``0, c, 2c, ...`` with ``c = T // K`` (DDIM's "uniform" skip, Song et al.
      2021a, Appendix D.2);
    * ``"trailing"``: ``T - 1, T - 1 - c, ...`` reversed (always contains ``T - 1``).
    """
    T, K = int(num_timesteps), int(num_steps)
    if not 1 <= K <= T:
        raise ValueError(f"cannot respace {T} timesteps to {K} steps; need 1 <= K <= {T}")
    if spacing == "linspace":
        idx = torch.linspace(0, T - 1, K, dtype=torch.float64).round().long()
    elif spacing == "leading":
        idx = torch.arange(K, dtype=torch.long) * (T // K)
    elif spacing == "trailing":
        c = T / K
        idx = (T - 1 - (torch.arange(K, dtype=torch.float64) * c).round().long()).flip(0)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; use 'linspace', 'leading' or 'trailing'")
    idx = torch.unique(idx)  # sorted
    if idx.numel() != K:  # cannot happen for K <= T with the rules above; keep the guard honest
        raise ValueError(f"spacing {spacing!r} gave {idx.numel()} distinct steps, wanted {K}")
    return idx


def _gather(values: Tensor, idx: Tensor | int, like: Tensor) -> Tensor:
    """``values[idx]`` in ``like``'s dtype/device, shaped ``(B, 1, 1, ...)`` to broadcast."""
    v = values.to(dtype=like.dtype if like.is_floating_point() else torch.float32)
    v = v.to(like.device)
    b = like.shape[0]
    if isinstance(idx, int) or (isinstance(idx, Tensor) and idx.dim() == 0):
        out = v[int(idx)].expand(b)
    else:
        idx = idx.to(device=like.device, dtype=torch.long).reshape(-1)
        if idx.numel() == 1:
            idx = idx.expand(b)
        if idx.numel() != b:
            raise ValueError(f"{idx.numel()} timesteps for a batch of {b}")
        out = v[idx]
    return out.reshape(b, *([1] * (like.dim() - 1)))


class NoiseSchedule:
    """A DDPM variance schedule: ``betas``, ``alphas``, ``alphas_cumprod`` (float64, CPU).

    Parameters
    ----------
    betas:
        ``(K,)`` values in ``(0, 1]``.
    timesteps:
        The training timestep each index corresponds to (default ``0 .. K-1``); set by
        :meth:`respace`.  The network is evaluated at ``timesteps[i]``.
    num_train_timesteps:
        ``T`` of the schedule the network was trained with (default ``K``).
    """

    def __init__(self, betas: Tensor | Sequence[float], *, timesteps: Tensor | None = None,
                 num_train_timesteps: int | None = None, name: str = "custom"):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().reshape(-1)
        if betas.numel() == 0:
            raise ValueError("a noise schedule needs at least one beta")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError(f"betas must lie in (0, 1]; got min {float(betas.min())}, "
                             f"max {float(betas.max())}")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # abar at the previous index; 1 before the first step (x_0 is the clean data)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64),
                                              self.alphas_cumprod[:-1]])
        k = betas.numel()
        if timesteps is None:
            timesteps = torch.arange(k, dtype=torch.long)
        timesteps = torch.as_tensor(timesteps, dtype=torch.long).detach().cpu().reshape(-1)
        if timesteps.numel() != k:
            raise ValueError(f"{timesteps.numel()} timesteps for {k} betas")
        if k > 1 and not bool((timesteps[1:] > timesteps[:-1]).all()):
            raise ValueError("timesteps must be strictly increasing")
        self.timesteps = timesteps
        self.num_train_timesteps = int(num_train_timesteps if num_train_timesteps is not None
                                       else int(timesteps[-1]) + 1)
        if int(timesteps[-1]) >= self.num_train_timesteps:
            raise ValueError(f"timestep {int(timesteps[-1])} outside the training range "
                             f"0..{self.num_train_timesteps - 1}")
        self.name = name

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> NoiseSchedule:
        """Ho et al. (2020): linear betas 1e-4 .. 0.02, T = 1000."""
        return cls(linear_beta_schedule(num_timesteps, beta_start, beta_end), name="linear")

    @classmethod
    def cosine(cls, num_timesteps: int = 1000, s: float = 0.008,
               max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal (2021), Eq. 17."""
        return cls(cosine_beta_schedule(num_timesteps, s, max_beta), name="cosine")

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor | Sequence[float], *,
                            timesteps: Tensor | None = None,
                            num_train_timesteps: int | None = None,
                            name: str = "custom") -> NoiseSchedule:
        """Schedule with the given ``abar`` (strictly decreasing, in (0, 1])."""
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().reshape(-1)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        if not bool(((abar > 0) & (abar <= prev)).all()):
            raise ValueError("alphas_cumprod must be positive and non-increasing, starting <= 1")
        out = cls(1.0 - abar / prev, timesteps=timesteps,
                  num_train_timesteps=num_train_timesteps, name=name)
        # keep the given values bit for bit (cumprod of the betas only matches to rounding)
        out.alphas_cumprod = abar.clone()
        out.alphas_cumprod_prev = prev.clone()
        return out

    @classmethod
    def from_name(cls, name: str, num_timesteps: int = 1000, **kwargs) -> NoiseSchedule:
        """``"linear"`` or ``"cosine"`` (for configs)."""
        if name == "linear":
            return cls.linear(num_timesteps, **kwargs)
        if name == "cosine":
            return cls.cosine(num_timesteps, **kwargs)
        raise ValueError(f"unknown noise schedule {name!r}; use 'linear' or 'cosine'")

    # ------------------------------------------------------------------ respacing
    def respace(self, num_steps: int | Sequence[int], spacing: str = "linspace") -> NoiseSchedule:
        """The schedule restricted to ``num_steps`` of its indices (or to the given indices).

        Keeps ``alphas_cumprod`` at the chosen indices exactly and sets
        ``beta'_i = 1 - abar_i / abar_{i-1}`` (Nichol & Dhariwal 2021, Sec. 4; DDIM, Song et al.
        2021a, Sec. 4.2), so ``cumprod(1 - beta')`` equals the kept ``abar``.
        """
        if isinstance(num_steps, int):
            idx = respaced_indices(len(self), num_steps, spacing)
        else:
            idx = torch.as_tensor(list(num_steps), dtype=torch.long)
            if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= len(self):
                raise ValueError(f"respace indices must lie in 0..{len(self) - 1}")
            idx = torch.unique(idx)
        return NoiseSchedule.from_alphas_cumprod(
            self.alphas_cumprod[idx], timesteps=self.timesteps[idx],
            num_train_timesteps=self.num_train_timesteps, name=f"{self.name}[{idx.numel()}]")

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return int(self.betas.numel())

    @property
    def is_respaced(self) -> bool:
        return len(self) != self.num_train_timesteps

    def __repr__(self) -> str:
        return (f"NoiseSchedule({self.name!r}, steps={len(self)}, "
                f"train_timesteps={self.num_train_timesteps})")

    def gather(self, name: str, idx: Tensor | int, like: Tensor) -> Tensor:
        """``getattr(self, name)[idx]`` broadcastable against ``like`` (its dtype and device)."""
        return _gather(getattr(self, name), idx, like)

    def model_timesteps(self, idx: Tensor | int, batch: int, device=None) -> Tensor:
        """The training timesteps ``timesteps[idx]`` as a ``(batch,)`` long tensor."""
        if isinstance(idx, Tensor):
            t = self.timesteps[idx.cpu().long()].reshape(-1)
            t = t.expand(batch) if t.numel() == 1 else t
        else:
            t = self.timesteps[int(idx)].expand(batch)
        return t.to(device).clone()

    def alphas_cumprod_at(self, t: Tensor, like: Tensor | None = None) -> Tensor:
        """``abar`` at training timesteps ``t`` (which must be timesteps of this schedule).

        Used where only the model timestep is known (e.g. classifier guidance inside an
        ``eps_fn``)."""
        t = torch.as_tensor(t).reshape(-1)
        pos = torch.searchsorted(self.timesteps, t.cpu().long())
        pos = pos.clamp(max=len(self) - 1)
        if not bool((self.timesteps[pos] == t.cpu().long()).all()):
            raise ValueError(f"timesteps {t.tolist()[:8]} are not all steps of {self!r}")
        abar = self.alphas_cumprod[pos]
        if like is None:
            return abar.to(t.device)
        return abar.to(dtype=like.dtype).to(like.device).reshape(
            -1, *([1] * (like.dim() - 1)))

    def snr(self) -> Tensor:
        """Signal-to-noise ratio ``abar / (1 - abar)`` per index."""
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    def to_dict(self) -> dict:
        """Plain data (for checkpoints/configs): alphas_cumprod, timesteps, T and name."""
        return {"alphas_cumprod": self.alphas_cumprod.clone(),
                "timesteps": self.timesteps.clone(),
                "num_train_timesteps": self.num_train_timesteps, "name": self.name}

    @classmethod
    def from_dict(cls, d) -> NoiseSchedule:
        if "alphas_cumprod" in d:
            return cls.from_alphas_cumprod(d["alphas_cumprod"], timesteps=d["timesteps"],
                                           num_train_timesteps=d["num_train_timesteps"],
                                           name=d.get("name", "custom"))
        return cls(d["betas"], timesteps=d["timesteps"],
                   num_train_timesteps=d["num_train_timesteps"], name=d.get("name", "custom"))
