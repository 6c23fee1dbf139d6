"""Cross-entropy classifier training with temperature-scaling calibration.

Classifiers are the conditional models of discrete variables in ID-GEN and the attribute
classifiers used by the metrics (e.g. the digit/colour classifiers of the paper's MNIST
experiments, Appendix F.4).  Temperature scaling (Guo et al., 2017) fits a single scalar T > 0 on
held-out data by minimising the negative log-likelihood of ``softmax(logits / T)``; it leaves the
arg-max (accuracy) unchanged and repairs over-confidence.

Generic: batches are dicts of tensors; the model sees ``batch[input_key]`` (or the flattened
concatenation of several keys, or whatever ``input_fn(batch)`` returns) and the label is
``batch[target_key]`` (integer codes, or one-hot rows that are arg-maxed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import (
    EarlyStopping,
    TensorBoardLogger,
    TrainState,
    cycle,
    move_to_device,
    resolve_device,
    unwrap_model,
)
from .loop import LoopTrainer

__all__ = ["ClassifierConfig", "ClassifierTrainer", "TemperatureScaled", "fit_temperature"]

Batch = dict[str, Tensor]


@dataclass
class ClassifierConfig:
    """Hyper-parameters of :class:`ClassifierTrainer`."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = 0.0
    max_steps: int = 1000
    time_budget: float | None = None
    eval_every: int | None = None      #: evaluate on ``eval_loader`` every N steps
    log_every: int = 10
    checkpoint_every: int | None = None
    checkpoint_path: str | os.PathLike | None = None
    nan_guard: bool = True
    progress: bool | None = None

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        self.betas = tuple(self.betas)


def fit_temperature(logits: Tensor, targets: Tensor, *, max_iter: int = 100) -> float:
    """Temperature scaling (Guo et al. 2017): ``argmin_T NLL(softmax(logits / T), targets)``.

    Optimises ``log T`` with L-BFGS in float64; returns T (> 0).  If the optimum is not better
    than T = 1 (already calibrated), returns 1.0.
    """
    if logits.dim() != 2:
        raise ValueError(f"fit_temperature expects logits of shape (N, K), got {tuple(logits.shape)}")
    z = logits.detach().to(torch.float64)
    y = targets.detach().long().to(z.device)
    log_t = torch.zeros((), dtype=torch.float64, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        t = float(log_t.exp())
        nll_t = float(F.cross_entropy(z / t, y))
        nll_1 = float(F.cross_entropy(z, y))
    if not (t > 0 and nll_t <= nll_1):
        return 1.0
    return t


class TemperatureScaled(nn.Module):
    """``model`` with its logits divided by a fitted temperature (a buffer, saved in state)."""

    def __init__(self, model: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, *args, **kwargs) -> Tensor:
        return self.model(*args, **kwargs) / self.temperature


class ClassifierTrainer(LoopTrainer):
    """Cross-entropy training on dict batches, evaluation, and temperature calibration.

    Parameters
    ----------
    model:
        Returns logits ``(B, K)``.  May be wrapped in ``DistributedDataParallel``
        (see :mod:`trainers.distributed`); checkpoints store the unwrapped module.
    loader:
        Re-iterable source of dict batches (cycled).  Stateful loaders (``state_dict``) make resume
        bitwise identical.
    input_keys, target_key:
        Which entries are the input(s) and the label.  Several input keys are flattened and
        concatenated; ``input_fn(batch)`` overrides this.
    eval_loader:
        Held-out data evaluated every ``eval_every`` steps (``eval/loss``, ``eval/accuracy``) and
        offered to ``early_stopping``.

    ``train()``, hooks and the checkpoint methods come from :class:`trainers.loop.LoopTrainer`
    (checkpoints also hold the fitted temperature).  A :class:`~trainers.core.StopTraining` raised
    during a step or the evaluation ends ``train()`` with ``stopped_by="hook"``.
    """

    kind = "ClassifierTrainer"
    progress_label = "classifier"
    _stop_in_step_ends_training = True

    def __init__(
        self,
        model: nn.Module,
        loader: Iterable[Batch],
        *,
        input_keys: str | Sequence[str] = "x",
        target_key: str = "y",
        input_fn: Callable[[Batch], Any] | None = None,
        eval_loader: Iterable[Batch] | None = None,
        config: ClassifierConfig | None = None,
        device: str | torch.device | None = None,
        logger: TensorBoardLogger | str | os.PathLike | None = None,
        early_stopping: EarlyStopping | None = None,
        **overrides: Any,
    ):
        cfg = self.config = self._resolve_config(ClassifierConfig, config, overrides)
        self.model = model
        self.loader, self.eval_loader = loader, eval_loader
        self.input_keys = [input_keys] if isinstance(input_keys, str) else list(input_keys)
        self.target_key = target_key
        self.input_fn = input_fn
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("ClassifierTrainer: the model has no trainable parameters")
        self.device = (next(iter(model.parameters())).device if device is None
                       else resolve_device(device))
        self._init_loop(logger, early_stopping)
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas,
                                          weight_decay=cfg.weight_decay)
        self.temperature = 1.0
        stateful: dict[str, Any] = {}
        if hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict"):
            stateful["loader"] = loader
        if early_stopping is not None:
            stateful["early_stopping"] = early_stopping
        self.state = TrainState(kind=self.kind, modules={"model": unwrap_model(model)},
                                optimizers={"model": self.optimizer}, stateful=stateful,
                                meta={"input_keys": self.input_keys, "target_key": target_key})
        self._iter = None

    # ------------------------------------------------------------------ batches
    def inputs(self, batch: Mapping[str, Tensor]) -> Any:
        if self.input_fn is not None:
            return self.input_fn(batch)
        for k in self.input_keys:
            if k not in batch:
                raise KeyError(f"batch lacks input key {k!r} (has {sorted(batch)})")
        if len(self.input_keys) == 1:
            x = batch[self.input_keys[0]]
            return x if x.is_floating_point() else x.to(torch.get_default_dtype())
        b = batch[self.input_keys[0]].shape[0]
        return torch.cat([batch[k].reshape(b, -1).to(torch.get_default_dtype())
                          for k in self.input_keys], dim=1)

    def targets(self, batch: Mapping[str, Tensor]) -> Tensor:
        if self.target_key not in batch:
            raise KeyError(f"batch lacks target key {self.target_key!r} (has {sorted(batch)})")
        y = batch[self.target_key]
        if y.is_floating_point() and y.dim() == 2 and y.shape[1] > 1:
            return y.argmax(dim=1)
        return y.reshape(y.shape[0]).long()

    def _next(self) -> Batch:
        if self._iter is None:
            self._iter = cycle(self.loader, name="classifier loader")
        return move_to_device(dict(next(self._iter)), self.device)

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, float]:
        self.model.train()
        batch = self._next()
        logits = self.model(self.inputs(batch))
        y = self.targets(batch)
        loss = F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
        v = self._guard("classifier/loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.state.step += 1
        acc = float((logits.detach().argmax(1) == y).float().mean())
        return {"train/loss": v, "train/accuracy": acc}

    def _evaluations(self) -> dict[str, float]:
        """``eval/loss`` and ``eval/accuracy`` on ``eval_loader`` every ``eval_every`` steps."""
        cfg = self.config
        if self.eval_loader is None or not cfg.eval_every or self.step % cfg.eval_every != 0:
            return {}
        ev = {f"eval/{k}": v for k, v in self.evaluate(self.eval_loader).items()}
        self.logger.scalars(ev, self.step)
        return ev

    def _hook_modules(self) -> list[nn.Module]:
        return [self.model]

    # ------------------------------------------------------------------ evaluation/calibration
    @torch.no_grad()
    def collect_logits(self, loader: Iterable[Batch]) -> tuple[Tensor, Tensor]:
        """Logits and integer labels of one pass over ``loader`` (model in eval mode)."""
        was_training = self.model.training
        self.model.eval()
        zs, ys = [], []
        try:
            for batch in loader:
                batch = move_to_device(dict(batch), self.device)
                zs.append(self.model(self.inputs(batch)))
                ys.append(self.targets(batch))
        finally:
            self.model.train(was_training)
        if not zs:
            raise ValueError("collect_logits: the loader yielded no batch")
        return torch.cat(zs), torch.cat(ys)

    def evaluate(self, loader: Iterable[Batch], *, temperature: float | None = None
                 ) -> dict[str, float]:
        """Accuracy and mean NLL (cross-entropy) at ``temperature`` (default: the fitted one)."""
        t = self.temperature if temperature is None else float(temperature)
        z, y = self.collect_logits(loader)
        return {"loss": float(F.cross_entropy(z / t, y)),
                "accuracy": float((z.argmax(1) == y).float().mean())}

    def calibrate(self, loader: Iterable[Batch], *, max_iter: int = 100) -> float:
        """Fit the temperature on held-out ``loader`` (minimum NLL); stores and returns it."""
        z, y = self.collect_logits(loader)
        self.temperature = fit_temperature(z, y, max_iter=max_iter)
        self.state.extra["temperature"] = self.temperature
        return self.temperature

    @torch.no_grad()
    def predict_proba(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Calibrated class probabilities ``softmax(logits / T)`` (model in eval mode)."""
        was_training = self.model.training
        self.model.eval()
        try:
            z = self.model(self.inputs(move_to_device(dict(batch), self.device)))
        finally:
            self.model.train(was_training)
        return torch.softmax(z / self.temperature, dim=1)

    def calibrated_model(self) -> TemperatureScaled:
        """The (unwrapped) model with the fitted temperature, as an ``nn.Module``."""
        return TemperatureScaled(unwrap_model(self.model), self.temperature)

    # ------------------------------------------------------------------ checkpoints
    def _before_save(self) -> None:
        self.state.extra["temperature"] = self.temperature

    def _after_load(self) -> None:
        self.temperature = float(self.state.extra.get("temperature", 1.0))
        self._iter = None
