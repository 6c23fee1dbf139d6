"""Generic DDPM training with classifier-free condition dropout (Ho et al. 2020; Ho & Salimans
2021).

One step (Ho et al. 2020, Algorithm 1; ID-GEN Appendix F.2.3; Diff-SCM Appendix A, Eq. 17)::

    x_0, c ~ batch;  t ~ U{0, ..., T-1};  eps ~ N(0, I)
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
    c'  = c with whole rows replaced by the null condition with probability p_uncond
    loss = mean || eps - eps_theta(x_t, t, c') ||^2          (optionally weighted by 1 - abar_t)

Condition dropout (classifier-free guidance, Ho & Salimans 2021, Algorithm 1) drops *rows*: a
dropped row gets the null value of every condition (label keys: the explicit null token given in
``null_tokens``, e.g. ``k`` for a ``k``-class label, never class 0); nothing is rescaled.
Conditions without a null token (images, continuous vectors) are nulled by the network itself:
the trainer passes the dropped rows as ``null_mask=`` (the keyword is configurable), the
convention of :class:`whatifgan.nn.UNet`.

The trainer knows nothing about causal graphs or the toolkit's networks: it gets the model, the
noise schedule as ``alphas_cumprod`` (a tensor or any object with that attribute) or a
``q_sample(x_0, t, noise)`` callable, a loader of dict batches and the keys to use.  The EMA of
weights is any object with ``update(model)``/``state_dict()``/``load_state_dict()`` (e.g.
``whatifgan.diffusion.EMA``); it is updated after every optimiser step and checkpointed.

Model calling convention: ``model(x_t, t)`` without conditions, ``model(x_t, t, cond)`` with
``cond = {key: batch[key]}``, plus ``null_mask=drop`` when some condition has no null token.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .core import (
    CheckpointError,
    EarlyStopping,
    TensorBoardLogger,
    TrainState,
    check_finite,
    cycle,
    move_to_device,
    resolve_device,
    unwrap_model,
)
from .loop import LoopTrainer

__all__ = ["DiffusionConfig", "DiffusionTrainer", "drop_conditions"]

Batch = dict[str, Tensor]
QSample = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class DiffusionConfig:
    """Hyper-parameters of :class:`DiffusionTrainer`.

    Defaults: Adam(1e-4, betas (0.9, 0.999)) as in Diff-SCM, Appendix E / Table 2;
    ``cond_dropout=0.1`` (Ho & Salimans 2021 use p_uncond in {0.1, 0.2}).
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None     #: max global gradient norm (None: no clipping)
    cond_dropout: float = 0.1          #: probability that a row's conditions become null
    loss_weighting: str = "simple"     #: "simple" (Ho Eq. 14) or "1-abar" (Diff-SCM Eq. 1)
    max_steps: int = 1000
    time_budget: float | None = None
    log_every: int = 10
    checkpoint_every: int | None = None
    checkpoint_path: str | os.PathLike | None = None
    nan_guard: bool = True
    progress: bool | None = None

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.cond_dropout <= 1.0:
            raise ValueError(f"cond_dropout must lie in [0, 1], got {self.cond_dropout}")
        if self.loss_weighting not in ("simple", "1-abar"):
            raise ValueError(f"loss_weighting must be 'simple' or '1-abar', got "
                             f"{self.loss_weighting!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        self.betas = tuple(self.betas)


def drop_conditions(cond: Mapping[str, Tensor], p: float, null_tokens: Mapping[str, int],
                    batch: int, device: torch.device | str | None = None,
                    generator: torch.Generator | None = None
                    ) -> tuple[dict[str, Tensor], Tensor]:
    """Classifier-free condition dropout (Ho & Salimans 2021, Algorithm 1, line 3).

    Draws ``drop ~ Bernoulli(p)`` per row and sets, in dropped rows only, every label key of
    ``null_tokens`` to its null token.  Label values may be integer codes ``(B,)``/``(B, 1)`` or
    one-hot rows ``(B, k)`` (arg-maxed to codes first).  Other keys are returned unchanged (the
    network nulls them through the returned ``drop`` mask).  Returns ``(cond, drop)``.
    """
    if batch == 0:
        return dict(cond), torch.zeros(0, dtype=torch.bool, device=device)
    drop = torch.rand(batch, device=device, generator=generator) < p
    out = dict(cond)
    for k, tok in null_tokens.items():
        v = cond[k]
        if v.is_floating_point():
            if v.dim() == 2 and v.shape[1] > 1:
                v = v.argmax(dim=1)
            else:
                v = v.round()
        v = v.reshape(batch, -1)
        if v.shape[1] != 1:
            raise ValueError(f"condition {k!r}: labels with a null token must be codes (B,) or "
                             f"one-hot rows (B, k), got shape {tuple(cond[k].shape)}")
        v = v.reshape(batch).long()
        if v.numel() and bool((v == tok).any()):
            raise ValueError(f"condition {k!r}: the data already contain the null token {tok}; "
                             f"the null token must be an index no real label uses (e.g. k for "
                             f"k classes)")
        out[k] = torch.where(drop.to(v.device), torch.full_like(v, int(tok)), v)
    return out, drop


class DiffusionTrainer(LoopTrainer):
    """DDPM epsilon-prediction training with classifier-free condition dropout and EMA.

    Parameters
    ----------
    model:
        ``eps_theta``; called as described in the module docstring.  May be wrapped in DDP
        (checkpoints store the unwrapped module).
    schedule:
        ``alphas_cumprod`` ``(T,)`` as a tensor, or an object with an ``alphas_cumprod``
        attribute (e.g. ``whatifgan.diffusion.NoiseSchedule``).  May be None when ``q_sample``
        and ``num_timesteps`` are given (then ``loss_weighting="1-abar"`` is unavailable).
    loader:
        Re-iterable source of dict batches (cycled); stateful loaders make resume exact.
    image_key:
        Batch key of ``x_0``.
    condition_keys:
        Batch keys passed to the model as ``cond``.
    null_tokens:
        ``{label key: null index}`` for label conditions (e.g. ``{"y": 10}`` for 10 classes).
    null_mask_kwarg:
        Keyword under which the dropped rows are passed to the model when some condition key has
        no null token (None: never pass it; then every condition needs a null token when
        ``cond_dropout > 0``).
    q_sample:
        Optional ``q_sample(x_0, t, noise) -> x_t`` replacing the built-in forward process.
    num_timesteps:
        ``T`` (default: ``len(alphas_cumprod)``).
    ema:
        Optional EMA object (see module docstring).

    Hooks, ``train()`` and the checkpoint methods come from :class:`trainers.loop.LoopTrainer`;
    hooks also get the model's train/eval mode restored afterwards, and checkpoints hold the EMA
    (checked against the live one before anything is loaded).
    """

    kind = "DiffusionTrainer"
    progress_label = "diffusion"

    def __init__(
        self,
        model: nn.Module,
        schedule: Any,
        loader: Iterable[Batch],
        *,
        image_key: str = "x",
        condition_keys: Sequence[str] = (),
        null_tokens: Mapping[str, int] | None = None,
        null_mask_kwarg: str | None = "null_mask",
        q_sample: QSample | None = None,
        num_timesteps: int | None = None,
        ema: Any = None,
        config: DiffusionConfig | None = None,
        device: str | torch.device | None = None,
        logger: TensorBoardLogger | str | os.PathLike | None = None,
        early_stopping: EarlyStopping | None = None,
        **overrides: Any,
    ):
        cfg = self.config = self._resolve_config(DiffusionConfig, config, overrides)
        self.model = model
        self.loader = loader
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("DiffusionTrainer: the model has no trainable parameters")
        self.device = (next(iter(model.parameters())).device if device is None
                       else resolve_device(device))

        # --- noise schedule ---
        abar = getattr(schedule, "alphas_cumprod", schedule)
        if abar is not None:
            abar = torch.as_tensor(abar).detach().reshape(-1)
            if not abar.is_floating_point() or abar.numel() == 0:
                raise ValueError("DiffusionTrainer: alphas_cumprod must be a non-empty float "
                                 "tensor")
            if not bool(((abar > 0) & (abar < 1 + 1e-6)).all()) or (
                    abar.numel() > 1 and not bool((abar[1:] <= abar[:-1]).all())):
                raise ValueError("DiffusionTrainer: alphas_cumprod must lie in (0, 1] and be "
                                 "non-increasing")
            self.alphas_cumprod: Tensor | None = abar.to(torch.float64)
        else:
            self.alphas_cumprod = None
        if self.alphas_cumprod is None and q_sample is None:
            raise ValueError("DiffusionTrainer needs the schedule (alphas_cumprod or an object "
                             "with that attribute) or a q_sample callable")
        if num_timesteps is None:
            if self.alphas_cumprod is None:
                raise ValueError("DiffusionTrainer: with q_sample and no schedule, give "
                                 "num_timesteps")
            num_timesteps = self.alphas_cumprod.numel()
        elif self.alphas_cumprod is not None and num_timesteps != self.alphas_cumprod.numel():
            raise ValueError(f"num_timesteps={num_timesteps} but the schedule has "
                             f"{self.alphas_cumprod.numel()} steps")
        self.num_timesteps = int(num_timesteps)
        if cfg.loss_weighting == "1-abar" and self.alphas_cumprod is None:
            raise ValueError("loss_weighting='1-abar' needs alphas_cumprod")
        self._q_sample = q_sample
        self._abar_cache: dict[tuple, Tensor] = {}

        # --- keys and condition dropout ---
        self.image_key = image_key
        if isinstance(condition_keys, str):
            condition_keys = [condition_keys]
        self.condition_keys = list(condition_keys)
        if image_key in self.condition_keys:
            raise ValueError(f"image key {image_key!r} cannot also be a condition key")
        self.null_tokens = {str(k): int(v) for k, v in (null_tokens or {}).items()}
        unknown = sorted(set(self.null_tokens) - set(self.condition_keys))
        if unknown:
            raise ValueError(f"null_tokens for {unknown}, which are not condition keys "
                             f"{self.condition_keys}")
        self.null_mask_kwarg = null_mask_kwarg
        self._needs_mask = bool(set(self.condition_keys) - set(self.null_tokens))
        if cfg.cond_dropout > 0 and self._needs_mask and null_mask_kwarg is None:
            missing = sorted(set(self.condition_keys) - set(self.null_tokens))
            raise ValueError(f"condition dropout needs a null value for every condition: give "
                             f"null_tokens for {missing} or let the model take a null mask "
                             f"(null_mask_kwarg='null_mask')")

        self._init_loop(logger, early_stopping)
        self.ema = ema
        if ema is not None and not all(hasattr(ema, a) for a in
                                       ("update", "state_dict", "load_state_dict")):
            raise TypeError("ema must have update(model), state_dict() and load_state_dict()")
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas,
                                          weight_decay=cfg.weight_decay)
        self._params = params

        stateful: dict[str, Any] = {}
        self._stateless_loader = not (hasattr(loader, "state_dict")
                                      and hasattr(loader, "load_state_dict"))
        if not self._stateless_loader:
            stateful["loader"] = loader
        if ema is not None:
            stateful["ema"] = ema
        if early_stopping is not None:
            stateful["early_stopping"] = early_stopping
        self.state = TrainState(
            kind=self.kind, modules={"model": unwrap_model(model)},
            optimizers={"model": self.optimizer}, stateful=stateful,
            meta={"image_key": image_key, "condition_keys": list(self.condition_keys),
                  "null_tokens": dict(self.null_tokens), "num_timesteps": self.num_timesteps})
        self._iter = None

    # ------------------------------------------------------------------ basics
    def _next(self) -> Batch:
        if self._iter is None:
            self._iter = cycle(self.loader, name="diffusion loader")
        batch = next(self._iter)
        if not isinstance(batch, Mapping):
            raise TypeError(f"the loader must yield dict batches, got {type(batch).__name__}")
        return move_to_device(dict(batch), self.device)

    def _abar(self, t: Tensor, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        a = self._abar_cache.get(key)
        if a is None:
            a = self._abar_cache[key] = self.alphas_cumprod.to(dtype=like.dtype).to(like.device)
        return a[t].reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (Ho et al. 2020, Eq. 4), or the
        given callable."""
        if self._q_sample is not None:
            return self._q_sample(x0, t, noise)
        a = self._abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    # ------------------------------------------------------------------ loss
    def conditions(self, batch: Mapping[str, Tensor], *, dropout: float | None = None
                   ) -> tuple[dict[str, Tensor] | None, Tensor | None]:
        """``cond`` for the model and the dropped-row mask (None without conditions)."""
        if not self.condition_keys:
            return None, None
        for k in self.condition_keys:
            if k not in batch:
                raise KeyError(f"batch lacks condition key {k!r} (has {sorted(batch)})")
        cond = {k: batch[k] for k in self.condition_keys}
        p = self.config.cond_dropout if dropout is None else float(dropout)
        b = batch[self.image_key].shape[0]
        return drop_conditions(cond, p, self.null_tokens, b, device=self.device)

    def loss(self, batch: Mapping[str, Tensor], *, dropout: float | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        """The (weighted) epsilon loss of one batch with condition dropout."""
        if self.image_key not in batch:
            raise KeyError(f"batch lacks image key {self.image_key!r} (has {sorted(batch)})")
        x0 = batch[self.image_key]
        if not x0.is_floating_point():
            x0 = x0.to(torch.get_default_dtype())
        b = x0.shape[0]
        t = torch.randint(0, self.num_timesteps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        cond, drop = self.conditions(batch, dropout=dropout)
        if cond is None:
            eps = self.model(x_t, t)
        elif self._needs_mask and self.null_mask_kwarg is not None:
            eps = self.model(x_t, t, cond, **{self.null_mask_kwarg: drop})
        else:
            eps = self.model(x_t, t, cond)
        if eps.shape != noise.shape:
            raise ValueError(f"model returned shape {tuple(eps.shape)}, expected the noise shape "
                             f"{tuple(noise.shape)}")
        per = (eps - noise).pow(2).reshape(b, -1).mean(dim=1)
        if self.config.loss_weighting == "1-abar":
            per = per * (1 - self._abar(t, per))
        loss = per.mean()
        metrics = {"train/loss": loss}
        if drop is not None:
            metrics["train/dropped"] = drop.float().mean()
        return loss, metrics

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, float]:
        self.model.train()
        loss, metrics = self.loss(self._next())
        out = {k: float(v.detach()) for k, v in metrics.items()}
        if self.config.nan_guard:
            out["train/loss"] = check_finite("diffusion/loss", loss, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            gn = torch.nn.utils.clip_grad_norm_(self._params, self.config.grad_clip)
            out["train/grad_norm"] = float(gn)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(unwrap_model(self.model))
        self.state.step += 1
        return out

    def train(self, max_steps: int | None = None, time_budget: float | None = None
              ) -> dict[str, Any]:
        """Train until ``max_steps`` total steps, the time budget (seconds of this call), early
        stopping or a hook's :class:`~trainers.core.StopTraining`.  Returns ``{"step",
        "stopped_by", "metrics", "losses"}`` (``losses``: the loss of every step of this call)."""
        self._losses: list[float] = []
        result = super().train(max_steps, time_budget)
        result["losses"] = self._losses
        return result

    # ------------------------------------------------------------------ loop services
    def _after_step(self, metrics: dict[str, float]) -> None:
        self._losses.append(metrics["train/loss"])

    def _hook_modules(self) -> list[nn.Module]:
        return [self.model]

    def _after_load(self) -> None:
        self._iter = None

    def _state_dict_warning(self) -> str | None:
        if not self._stateless_loader:
            return None
        return ("the loader has no state_dict(); on resume its batch stream restarts, so the "
                "resumed run is not bitwise identical to an uninterrupted one")

    def _save_warning(self) -> str | None:
        if not self._stateless_loader:
            return None
        return "the loader has no state_dict(); on resume its batch stream restarts"

    def _check_state(self, state: Mapping[str, Any], source: str) -> None:
        """The EMA entry must match the live EMA (its ``check_state_dict``, when it has one)."""
        check = getattr(self.ema, "check_state_dict", None)
        if check is not None and isinstance(state.get("stateful"), Mapping) and \
                "ema" in state["stateful"]:
            try:
                check(state["stateful"]["ema"])
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"checkpoint {str(source)!r}: EMA entry does not match: "
                                      f"{e}") from e
