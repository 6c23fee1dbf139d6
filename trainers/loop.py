"""The training loop shared by every trainer in :mod:`trainers`.

:class:`LoopTrainer` holds the loop services written once: hooks (run every N steps with the
global RNG state saved and restored), stop requests, the ``train(max_steps, time_budget)`` loop
(progress bar, TensorBoard scalars every ``log_every`` steps, early stopping, periodic and final
checkpoints, the stop reasons ``"max_steps"``, ``"request"``, ``"hook"``, ``"early_stopping"`` and
``"time_budget"``) and ``state_dict``/``load_state_dict``/``save_checkpoint``/``load_checkpoint``
around the trainer's :class:`~trainers.core.TrainState`.

A subclass builds ``self.config`` (a dataclass with ``max_steps``, ``time_budget``, ``log_every``,
``checkpoint_every``, ``checkpoint_path``, ``nan_guard`` and ``progress``), calls
:meth:`LoopTrainer._init_loop`, builds ``self.state`` and provides :meth:`LoopTrainer.train_step`
(one update; advances ``self.state.step`` and returns the step's metrics).  The other methods
starting with an underscore are the places where a trainer adds what is its own (evaluation on a
schedule, the progress-bar postfix, what to do after loading, ...).

Like the rest of :mod:`trainers`, this module knows nothing about causal graphs.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from .core import (
    EarlyStopping,
    ProgressBar,
    StopTraining,
    TensorBoardLogger,
    TrainState,
    check_finite,
    get_rng_state,
    load_checkpoint,
    set_rng_state,
)

__all__ = ["LoopTrainer"]


class _Hook:
    def __init__(self, fn: Callable, every: int, name: str):
        if every < 1:
            raise ValueError(f"hook {name!r}: every must be >= 1, got {every}")
        self.fn, self.every, self.name = fn, int(every), name


class LoopTrainer:
    """Base class of the trainers: hooks, the ``train()`` loop and checkpoints.

    Attributes set by the subclass: ``config``, ``state`` (a :class:`~trainers.core.TrainState`
    with the trainer's ``kind``) and, through :meth:`_init_loop`, ``logger``,
    ``early_stopping``, ``hooks`` and ``last_metrics``.
    """

    kind = "LoopTrainer"
    #: description shown in front of the progress bar
    progress_label = ""
    #: True: a :class:`~trainers.core.StopTraining` raised by the step itself (or by the
    #: scheduled evaluation) ends ``train()`` with ``stopped_by="hook"``; False: it propagates.
    #: Raised by a hook it always ends training cleanly.
    _stop_in_step_ends_training = False

    config: Any
    state: TrainState

    # ------------------------------------------------------------------ construction
    def _resolve_config(self, config_cls: type, config: Any, overrides: Mapping[str, Any]) -> Any:
        """``config`` (or the defaults of ``config_cls``) with keyword ``overrides`` applied;
        unknown names raise ``TypeError`` listing the valid ones."""
        cfg = config if config is not None else config_cls()
        if overrides:
            valid = {f.name for f in dataclasses.fields(config_cls)}
            bad = sorted(set(overrides) - valid)
            if bad:
                raise TypeError(f"{self.kind} got unknown options {bad}; valid: {sorted(valid)}")
            cfg = dataclasses.replace(cfg, **overrides)
        return cfg

    def _init_loop(self, logger: TensorBoardLogger | str | os.PathLike | None,
                   early_stopping: EarlyStopping | None) -> None:
        """Set up the loop's own attributes (logger, early stopping, hooks, last metrics)."""
        if isinstance(logger, TensorBoardLogger):
            self.logger = logger
        else:
            self.logger = TensorBoardLogger(logger, enabled=logger is not None)
        self.early_stopping = early_stopping
        self.hooks: list[_Hook] = []
        self.last_metrics: dict[str, float] = {}
        self._stop_requested = False

    # ------------------------------------------------------------------ basics
    @property
    def step(self) -> int:
        """Number of training steps done so far (including those before a resume)."""
        return self.state.step

    def add_hook(self, fn: Callable[[LoopTrainer], Mapping[str, float] | None], every: int,
                 name: str | None = None) -> None:
        """Call ``fn(trainer)`` every ``every`` steps (e.g. evaluation metrics computed by the
        caller, or sample images logged with ``trainer.logger.images``).  A returned dict of
        scalars is logged and offered to early stopping; raise
        :class:`trainers.core.StopTraining` (or call :meth:`request_stop`) to stop.  Hooks run with
        the global RNG state saved and restored, so evaluation does not alter training."""
        self.hooks.append(_Hook(fn, every, name or getattr(fn, "__name__", "hook")))

    def request_stop(self) -> None:
        """End ``train()`` after the current step (``stopped_by="request"``)."""
        self._stop_requested = True

    def _guard(self, name: str, value: Tensor) -> float:
        """NaN/inf guard (when ``config.nan_guard``): ``float(value)`` or
        :class:`~trainers.core.NonFiniteLossError` naming the loss and the step."""
        if self.config.nan_guard:
            return check_finite(name, value, self.step)
        return float(value.detach())

    # ------------------------------------------------------------------ what subclasses add
    def train_step(self) -> dict[str, float]:
        """One training update; advances ``self.state.step`` and returns the step's metrics."""
        raise NotImplementedError

    def _after_step(self, metrics: dict[str, float]) -> None:
        """Called in ``train()`` with the metrics of every step, before anything else."""

    def _evaluations(self) -> dict[str, float]:
        """The trainer's own evaluation when it is due after the current step (logged here),
        before the hooks run; its scalars join the step's metrics and early stopping."""
        return {}

    def _hook_modules(self) -> list[nn.Module]:
        """Modules whose train/eval mode is restored after the hooks ran."""
        return []

    def _progress_postfix(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Values shown after the progress bar."""
        return {"loss": metrics["train/loss"]}

    def _check_state(self, state: Mapping[str, Any], source: str) -> None:
        """Extra validation of a checkpoint before anything is loaded (raise
        :class:`~trainers.core.CheckpointError`)."""

    def _after_load(self) -> None:
        """Called after a checkpoint was loaded (e.g. restart the data iterators)."""

    def _before_save(self) -> None:
        """Called before the state is gathered for a checkpoint."""

    def _state_dict_warning(self) -> str | None:
        """A warning for :meth:`state_dict` (e.g. loaders that cannot be resumed), or None."""
        return None

    def _save_warning(self) -> str | None:
        """A warning for :meth:`save_checkpoint`, or None."""
        return None

    # ------------------------------------------------------------------ loop
    def _run_hooks(self) -> dict[str, float]:
        out: dict[str, float] = {}
        due = [h for h in self.hooks if self.step % h.every == 0]
        if not due:
            return out
        rng = get_rng_state()
        modes = [(m, m.training) for m in self._hook_modules()]
        try:
            for h in due:
                res = h.fn(self)
                if res:
                    for k, v in res.items():
                        out[k] = float(v.detach()) if isinstance(v, Tensor) else float(v)
        finally:
            set_rng_state(rng)
            for m, training in modes:
                m.train(training)
        if out:
            self.logger.scalars(out, self.step)
        return out

    def train(self, max_steps: int | None = None, time_budget: float | None = None
              ) -> dict[str, Any]:
        """Train until ``max_steps`` total steps (counting resumed ones), the time budget
        (seconds of this call), early stopping, :meth:`request_stop` or a hook's
        :class:`~trainers.core.StopTraining`.  Returns ``{"step", "stopped_by", "metrics"}``.
        Checkpoints every ``checkpoint_every`` steps and at the end when ``checkpoint_path`` is
        set."""
        cfg = self.config
        max_steps = cfg.max_steps if max_steps is None else int(max_steps)
        time_budget = cfg.time_budget if time_budget is None else time_budget
        t0, stopped_by = time.monotonic(), "max_steps"
        self._stop_requested = False
        bar = ProgressBar(max_steps, initial=min(self.step, max_steps), desc=self.progress_label,
                          enabled=cfg.progress)
        try:
            while self.step < max_steps:
                metrics = self.train_step()
                self._after_step(metrics)
                self.last_metrics = metrics
                if cfg.log_every and self.step % cfg.log_every == 0:
                    self.logger.scalars(metrics, self.step)
                evals = self._evaluations()
                try:
                    evals.update(self._run_hooks())
                except StopTraining:
                    stopped_by = "hook"
                    self._stop_requested = True
                self.last_metrics.update(evals)
                es = self.early_stopping
                if es is not None and es.monitor in evals and es.update(evals[es.monitor]):
                    stopped_by = "early_stopping"
                    self._stop_requested = True
                if (cfg.checkpoint_path is not None and cfg.checkpoint_every
                        and self.step % cfg.checkpoint_every == 0):
                    self.save_checkpoint()
                bar.update(1, **self._progress_postfix(metrics))
                if self._stop_requested:
                    if stopped_by == "max_steps":
                        stopped_by = "request"
                    break
                if time_budget is not None and time.monotonic() - t0 >= time_budget:
                    stopped_by = "time_budget"
                    break
        except StopTraining:
            if not self._stop_in_step_ends_training:
                raise
            stopped_by = "hook"
        finally:
            bar.close()
            self.logger.flush()
        if cfg.checkpoint_path is not None:
            self.save_checkpoint()
        return {"step": self.step, "stopped_by": stopped_by, "metrics": dict(self.last_metrics)}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The full training state (see :class:`~trainers.core.TrainState`), RNG included."""
        msg = self._state_dict_warning()
        if msg is not None:
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        self._before_save()
        return self.state.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], source: str = "<in memory>") -> None:
        """Validate everything first, then load (a mismatch raises
        :class:`~trainers.core.CheckpointError` and changes nothing)."""
        self._check_state(state, source)
        self.state.load_state_dict(state, source=source)
        self._after_load()

    def _checkpoint_file(self, path: str | os.PathLike | None, what: str) -> str | os.PathLike:
        path = path if path is not None else self.config.checkpoint_path
        if path is None:
            raise ValueError(f"{what}: no path given and config.checkpoint_path is None")
        return path

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> os.PathLike:
        """Atomically save the training state (modules, parameters, optimizers, loaders, step
        and RNG) to ``path`` (default: ``config.checkpoint_path``)."""
        path = self._checkpoint_file(path, "save_checkpoint")
        msg = self._save_warning()
        if msg is not None:
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        self._before_save()
        return self.state.save(path)

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> int:
        """Resume from ``path`` (default: ``config.checkpoint_path``; read with
        ``torch.load(weights_only=True)``).  Raises :class:`trainers.core.CheckpointError` (and
        changes nothing) if the file is corrupt or does not match this trainer.  Returns the
        step."""
        path = self._checkpoint_file(path, "load_checkpoint")
        ckpt = load_checkpoint(path, map_location="cpu", kind=self.kind)
        self.load_state_dict(ckpt, source=str(path))
        return self.step
