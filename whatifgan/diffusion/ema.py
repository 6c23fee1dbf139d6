"""Exponential moving average (EMA) of network weights for diffusion models.

Diffusion models are sampled with an EMA of their weights: Ho et al. (2020), Appendix B (decay
0.9999); Diff-SCM, Appendix E ("We use an EMA rate of 0.9999 for all experiments").  After every
optimiser step::

    theta_ema <- d theta_ema + (1 - d) theta,      d = min(decay, (1 + n) / (10 + n)) with warm-up

The warm-up (optional, as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)``) lets short
runs use the average early.  Buffers (e.g. BatchNorm statistics) are copied, not averaged.

:class:`EMA` follows the duck-typed protocol :class:`trainers.DiffusionTrainer` expects
(``update(model)``, ``state_dict()``, ``load_state_dict()``), so the trainer checkpoints it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


def _unwrap(model: nn.Module) -> nn.Module:
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


class EMA:
    """EMA of a model's floating-point parameters (and a copy of its buffers).

    Parameters
    ----------
    model:
        The trained network (a DDP wrapper is unwrapped).
    decay:
        Target decay ``d`` (0.9999 in Ho et al. and Diff-SCM; smaller, e.g. 0.995, for short
        runs).
    warmup:
        Use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates.
    update_after_step:
        Updates before this count only copy the weights (the average starts afterwards).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, *, warmup: bool = True,
                 update_after_step: int = 0):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.update_after_step = int(update_after_step)
        self.num_updates = 0
        m = _unwrap(model)
        self.shadow: dict[str, Tensor] = {
            n: p.detach().clone() for n, p in m.named_parameters() if p.is_floating_point()}
        self.buffers: dict[str, Tensor] = {n: b.detach().clone() for n, b in m.named_buffers()}
        self._backup: dict[str, Tensor] | None = None

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses."""
        n = self.num_updates
        if n < self.update_after_step:
            return 0.0
        n -= self.update_after_step
        d = self.decay
        if self.warmup:
            d = min(d, (1.0 + n) / (10.0 + n))
        return d

    def _params(self, model: nn.Module) -> dict[str, Tensor]:
        m = _unwrap(model)
        params = {n: p for n, p in m.named_parameters() if p.is_floating_point()}
        if params.keys() != self.shadow.keys():
            missing = sorted(set(self.shadow) - set(params))[:5]
            extra = sorted(set(params) - set(self.shadow))[:5]
            raise ValueError(f"EMA: the model's parameters differ from the averaged ones "
                             f"(missing {missing}, unexpected {extra}); build the EMA from this "
                             f"model")
        return params

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``shadow <- d shadow + (1 - d) theta``; buffers copied."""
        d = self.current_decay()
        for n, p in self._params(model).items():
            s = self.shadow[n]
            if s.device != p.device or s.dtype != p.dtype:
                s = self.shadow[n] = s.to(device=p.device, dtype=p.dtype)
            s.lerp_(p.detach(), 1.0 - d)
        for n, b in _unwrap(model).named_buffers():
            if n in self.buffers:
                self.buffers[n] = b.detach().clone()
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters (and buffers) with the averaged ones."""
        for n, p in self._params(model).items():
            p.copy_(self.shadow[n].to(device=p.device, dtype=p.dtype))
        for n, b in _unwrap(model).named_buffers():
            if n in self.buffers:
                b.copy_(self.buffers[n].to(device=b.device, dtype=b.dtype))

    @torch.no_grad()
    def store(self, model: nn.Module) -> None:
        """Remember ``model``'s current weights (for :meth:`restore`)."""
        m = _unwrap(model)
        self._backup = {n: t.detach().clone() for n, t in m.state_dict().items()}

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        if self._backup is None:
            raise RuntimeError("EMA.restore() without a previous store()")
        _unwrap(model).load_state_dict(self._backup)
        self._backup = None

    @contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily swap the averaged weights into ``model`` (e.g. to sample)."""
        self.store(model)
        self.copy_to(model)
        try:
            yield model
        finally:
            self.restore(model)

    def averaged_model(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` holding the averaged weights, in eval mode, frozen."""
        m = copy.deepcopy(_unwrap(model))
        self.copy_to(m)
        for p in m.parameters():
            p.requires_grad_(False)
        return m.eval()

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = {n: s.to(device) for n, s in self.shadow.items()}
        self.buffers = {n: b.to(device) for n, b in self.buffers.items()}
        return self

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Tensors and numbers only (loadable with ``torch.load(weights_only=True)``)."""
        return {"decay": self.decay, "warmup": self.warmup,
                "update_after_step": self.update_after_step, "num_updates": self.num_updates,
                "shadow": {n: s.detach().clone() for n, s in self.shadow.items()},
                "buffers": {n: b.detach().clone() for n, b in self.buffers.items()}}

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` if ``state`` does not fit this EMA (names, shapes)."""
        if not isinstance(state, Mapping) or not isinstance(state.get("shadow"), Mapping) \
                or "num_updates" not in state:
            raise ValueError("not an EMA state_dict (needs 'shadow' and 'num_updates')")
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            raise ValueError(f"EMA state does not match the model: missing "
                             f"{sorted(set(self.shadow) - set(shadow))[:5]}, unexpected "
                             f"{sorted(set(shadow) - set(self.shadow))[:5]}")
        for n, s in self.shadow.items():
            if tuple(shadow[n].shape) != tuple(s.shape):
                raise ValueError(f"EMA state: {n!r} has shape {tuple(shadow[n].shape)}, the "
                                 f"model has {tuple(s.shape)}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Validate names and shapes, then load (nothing changes on a mismatch)."""
        self.check_state_dict(state)
        shadow = state["shadow"]
        self.shadow = {n: shadow[n].to(device=s.device, dtype=s.dtype).clone()
                       for n, s in self.shadow.items()}
        bufs = state.get("buffers", {})
        self.buffers = {n: bufs[n].to(b.device).clone() if n in bufs else b
                        for n, b in self.buffers.items()}
        self.decay = float(state.get("decay", self.decay))
        self.warmup = bool(state.get("warmup", self.warmup))
        self.update_after_step = int(state.get("update_after_step", self.update_after_step))
        self.num_updates = int(state["num_updates"])
