"""Shared services of every training loop in :mod:`trainers`.

Written once, reused by :class:`trainers.WGANGPTrainer`, :class:`trainers.ClassifierTrainer` and any
later trainer: seeding, device resolution, TensorBoard logging, a progress bar, atomic checkpoints
with validated loading, a NaN/inf guard, early stopping, a resumable in-memory loader and
:class:`TrainState` (everything needed to resume a run bitwise identically on CPU).

This module knows nothing about causal graphs (it never imports ``hgraph`` or ``whatifgan``).

The paper's training recipe (WhatIfGAN, Appendix F.1.1: Adam, batch 200, WGAN-GP with
lambda = 10) runs for hours on a GPU; resuming interrupted runs exactly and never losing a good
checkpoint to a crash half-way through a write is what these services are for.
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "EarlyStopping",
    "NonFiniteLossError",
    "ProgressBar",
    "StopTraining",
    "TensorBoardLogger",
    "TensorDictLoader",
    "TrainState",
    "check_finite",
    "cycle",
    "get_rng_state",
    "load_checkpoint",
    "move_to_device",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "unwrap_model",
]

CHECKPOINT_FORMAT_VERSION = 1
_FORMAT_KEY = "__trainers_checkpoint__"


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or does not match the object it is loaded into.

    The message always names the file and what is wrong.  Loading validates everything before
    touching the live objects, so after a ``CheckpointError`` the trainer is unchanged.
    """


class NonFiniteLossError(FloatingPointError):
    """A loss (or metric) became NaN or infinite; raised by :func:`check_finite`."""

    def __init__(self, name: str, value: float, step: int | None = None):
        self.name, self.value, self.step = name, value, step
        where = f" at step {step}" if step is not None else ""
        super().__init__(
            f"loss '{name}' became {value}{where}; training stopped. Typical causes: learning rate "
            f"too high, unnormalised or NaN inputs, log of zero in a custom loss. Lower the learning "
            f"rate, check the data, or resume from the last good checkpoint."
        )


class StopTraining(Exception):
    """Raise from a hook/callback to end training cleanly after the current step."""


# ----------------------------------------------------------------------------------------------
# seeding and RNG state
# ----------------------------------------------------------------------------------------------
def seed_everything(seed: int, *, deterministic: bool = True) -> int:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and all CUDA devices).

    On CPU, the same seed then gives bitwise identical results (for a fixed number of threads).
    With ``deterministic=True`` and CUDA available, cuDNN autotuning is switched off and torch is
    asked for deterministic algorithms (``warn_only=True``: an op without a deterministic kernel
    warns instead of failing).  That global switch is skipped on CPU-only machines, where it is
    not needed and costs seconds at first use.  Returns the seed.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        if torch.cuda.is_available():
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def get_rng_state() -> dict[str, Any]:
    """Snapshot of every global RNG (Python, NumPy, torch CPU, torch CUDA) in a form that
    ``torch.load(..., weights_only=True)`` accepts (tensors, ints, tuples, dicts)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def _tuplify(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return tuple(_tuplify(v) for v in x)
    return x


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a snapshot taken by :func:`get_rng_state`."""
    random.setstate(_tuplify(state["python"]))
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npst["bit_generator"],
            "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": int(npst["pos"])},
            "has_gauss": int(npst["has_gauss"]),
            "gauss": float(npst["gauss"]),
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = list(state.get("cuda", []))
    if cuda_states and torch.cuda.is_available():
        n = min(len(cuda_states), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states[:n]])


# ----------------------------------------------------------------------------------------------
# devices
# ----------------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` / ``None`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:1"`` / ``"mps"`` into a
    :class:`torch.device`.

    ``"auto"`` picks CUDA, then Apple MPS, then CPU.  Asking for an unavailable accelerator raises
    a ``RuntimeError`` saying so (instead of failing later inside a kernel).
    """
    if isinstance(device, torch.device):
        dev = device
    elif device is None or str(device).lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        try:
            dev = torch.device(str(device))
        except RuntimeError as e:
            raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(dev)!r} requested but CUDA is not available here; "
                               f"use --device cpu or --device auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {str(dev)!r} requested but only "
                               f"{torch.cuda.device_count()} CUDA device(s) are visible")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RuntimeError("device 'mps' requested but MPS is not available here")
    return dev


def unwrap_model(module: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (checkpoints
    store the unwrapped module, so they load with or without distribution)."""
    if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return module.module
    return module


def move_to_device(batch: Any, device: torch.device | str | None) -> Any:
    """Move a tensor or a (nested) dict/list/tuple of tensors to ``device``."""
    if device is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


# ----------------------------------------------------------------------------------------------
# logging and progress
# ----------------------------------------------------------------------------------------------
class TensorBoardLogger:
    """Thin wrapper over :class:`torch.utils.tensorboard.SummaryWriter`.

    A no-op when ``log_dir`` is ``None`` or ``enabled=False`` (and also on non-zero ranks in a
    distributed run, which pass ``enabled=is_main``), so loops can log unconditionally.  The
    writer is created lazily on the first call.  ``history`` keeps the last value of every tag in
    memory (handy for tests and for early stopping).
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, *, enabled: bool = True,
                 flush_secs: int = 30):
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.enabled = bool(enabled) and log_dir is not None
        self.flush_secs = flush_secs
        self._writer = None
        self.last: dict[str, float] = {}

    @property
    def writer(self):
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when needed

            self._writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=self.flush_secs)
        return self._writer

    def scalar(self, tag: str, value: float | Tensor, step: int) -> None:
        value = float(value.detach()) if isinstance(value, Tensor) else float(value)
        self.last[tag] = value
        if self.enabled:
            self.writer.add_scalar(tag, value, global_step=step)

    def scalars(self, values: Mapping[str, float | Tensor], step: int, prefix: str = "") -> None:
        for tag, value in values.items():
            self.scalar(prefix + tag, value, step)

    def image(self, tag: str, img: Tensor, step: int, dataformats: str = "CHW") -> None:
        if self.enabled:
            self.writer.add_image(tag, img.detach().float().cpu(), global_step=step,
                                  dataformats=dataformats)

    def images(self, tag: str, batch: Tensor, step: int, nrow: int = 8,
               value_range: tuple[float, float] | None = None) -> None:
        """Log a batch ``(B, C, H, W)`` as one grid image."""
        if self.enabled:
            from torchvision.utils import make_grid

            grid = make_grid(batch.detach().float().cpu(), nrow=nrow, normalize=value_range
                             is not None, value_range=value_range)
            self.writer.add_image(tag, grid, global_step=step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ProgressBar:
    """tqdm progress bar with ETA; disabled when stderr is not a TTY or ``enabled=False``."""

    def __init__(self, total: int | None, *, initial: int = 0, desc: str = "",
                 enabled: bool | None = None):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = bool(enabled)
        self._bar = None
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                             leave=False)

    def update(self, n: int = 1, **postfix: float) -> None:
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# guards
# ----------------------------------------------------------------------------------------------
def check_finite(name: str, value: Tensor | float, step: int | None = None) -> float:
    """NaN/inf guard: return ``float(value)`` or raise :class:`NonFiniteLossError` naming the loss."""
    v = float(value.detach()) if isinstance(value, Tensor) else float(value)
    if not math.isfinite(v):
        raise NonFiniteLossError(name, v, step)
    return v


class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    consecutive evaluations.

    ``update(value)`` returns True when training should stop.  Stateful (``state_dict``) so a
    resumed run keeps its patience counter.
    """

    def __init__(self, monitor: str, patience: int = 10, *, mode: str = "min",
                 min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"EarlyStopping patience must be >= 1, got {patience}")
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best: float | None = None
        self.bad_evals = 0
        self.stopped = False

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float | Tensor) -> bool:
        value = check_finite(self.monitor, value)
        if self.improved(value):
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        self.stopped = self.bad_evals >= self.patience
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_evals": self.bad_evals, "stopped": self.stopped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.bad_evals = state["best"], int(state["bad_evals"])
        self.stopped = bool(state["stopped"])


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
class TensorDictLoader:
    """Mini-batches of an in-memory dict of tensors, with a resumable position.

    Each epoch draws a permutation from a private generator seeded by ``(seed, epoch)``, so the
    batch stream does not consume (or depend on) the global RNG, and ``state_dict()`` (epoch and
    position) is all a checkpoint needs to continue the stream exactly.  Iterating yields the rest
    of the current epoch.  With ``world_size > 1`` every rank sees the same permutation and takes
    every ``world_size``-th sample (a disjoint shard, as ``DistributedSampler`` does).
    """

    def __init__(self, tensors: Mapping[str, Tensor], batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not tensors:
            raise ValueError("TensorDictLoader needs at least one tensor")
        sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"TensorDictLoader: tensors have different first dimensions {sizes}")
        if not 0 <= rank < world_size:
            raise ValueError(f"TensorDictLoader: rank {rank} not in 0..{world_size - 1}")
        self.tensors = dict(tensors)
        self.n = next(iter(sizes.values()))
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.n_local = len(range(rank, self.n, world_size))
        if self.batch_size < 1 or (drop_last and self.n_local < self.batch_size):
            raise ValueError(f"TensorDictLoader: batch_size {batch_size} larger than the "
                             f"{self.n_local} samples of this shard (drop_last=True)")
        self.epoch = 0
        self.position = 0  # batches already served in the current epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_local // self.batch_size
        return math.ceil(self.n_local / self.batch_size)

    def _indices(self, epoch: int) -> Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        return perm[self.rank::self.world_size]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        idx = self._indices(self.epoch)
        while self.position < len(self):
            b = idx[self.position * self.batch_size:(self.position + 1) * self.batch_size]
            self.position += 1
            yield {k: v[b.to(v.device)] for k, v in self.tensors.items()}
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.seed = int(state.get("seed", self.seed))


def cycle(loader: Iterable, name: str = "loader") -> Iterator:
    """Iterate ``loader`` forever, re-creating its iterator at the end of every epoch.

    A one-shot iterator (e.g. a generator) that runs dry raises a ``RuntimeError`` naming it,
    instead of looping silently.
    """
    while True:
        empty = True
        for item in loader:
            empty = False
            yield item
        if empty:
            raise RuntimeError(f"{name} yielded no batch: it is empty or a one-shot iterator that "
                               f"is exhausted; pass a re-iterable loader (DataLoader, "
                               f"TensorDictLoader) or a larger dataset")


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Atomically write ``payload`` (tensors, numbers, strings, containers) to ``path``.

    The file is written to a temporary file in the same directory, flushed and fsync'ed, then
    moved over ``path`` with :func:`os.replace`; a crash at any moment leaves either the old
    checkpoint or the new one, never a half-written file.  The format marker checked by
    :func:`load_checkpoint` is added to the payload if missing.
    """
    path = Path(path)
    payload = dict(payload)
    payload.setdefault(_FORMAT_KEY, CHECKPOINT_FORMAT_VERSION)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); best effort elsewhere
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu",
                    kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` naming the file if it is missing, truncated/corrupt, not a
    ``trainers`` checkpoint, of another format version, or (when ``kind`` is given) written by a
    different trainer.  The file itself is never modified.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip errors, unpickling errors, EOF, ...
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or unreadable (truncated or not a torch file?): "
            f"{type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or _FORMAT_KEY not in ckpt:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a trainers checkpoint "
                              f"(missing {_FORMAT_KEY!r} marker)")
    if ckpt[_FORMAT_KEY] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {ckpt[_FORMAT_KEY]}, "
                              f"this code reads version {CHECKPOINT_FORMAT_VERSION}")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"checkpoint {str(path)!r} was written by {ckpt.get('kind')!r}, "
                              f"cannot load it into {kind!r}")
    return ckpt


def _describe(obj: Any) -> Any:
    """Shapes/structure of a state dict, for mismatch messages."""
    if isinstance(obj, Tensor):
        return tuple(obj.shape)
    return type(obj).__name__


def _check_module_state(src: str, name: str, module: nn.Module, state: Any) -> None:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {src}: entry {name!r} is a {type(state).__name__}, "
                              f"expected a module state_dict")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(f"checkpoint {src}: module {name!r} does not match: missing keys "
                              f"{missing[:8]}, unexpected keys {extra[:8]}")
    for k, v in own.items():
        w = state[k]
        if isinstance(v, Tensor) and (not isinstance(w, Tensor) or w.shape != v.shape):
            raise CheckpointError(f"checkpoint {src}: module {name!r} parameter {k!r} has shape "
                                  f"{_describe(w)}, the model has {tuple(v.shape)}")


def _check_params_state(src: str, name: str, params: list[Tensor], state: Any) -> None:
    if not isinstance(state, (list, tuple)) or len(state) != len(params):
        n = len(state) if isinstance(state, (list, tuple)) else type(state).__name__
        raise CheckpointError(f"checkpoint {src}: parameter list {name!r} has {n} tensors, the "
                              f"trainer has {len(params)}")
    for i, (p, s) in enumerate(zip(params, state)):
        if not isinstance(s, Tensor) or s.shape != p.shape:
            raise CheckpointError(f"checkpoint {src}: {name!r}[{i}] has shape {_describe(s)}, "
                                  f"the trainer's parameter has shape {tuple(p.shape)}")


def _check_optimizer_state(src: str, name: str, opt: torch.optim.Optimizer, state: Any) -> None:
    if not isinstance(state, Mapping) or "param_groups" not in state or "state" not in state:
        raise CheckpointError(f"checkpoint {src}: optimizer {name!r} entry is not an optimizer "
                              f"state_dict")
    own = [len(g["params"]) for g in opt.param_groups]
    theirs = [len(g["params"]) for g in state["param_groups"]]
    if own != theirs:
        raise CheckpointError(f"checkpoint {src}: optimizer {name!r} has parameter groups of "
                              f"sizes {theirs}, the trainer's optimizer has {own}")


@dataclass
class TrainState:
    """Everything a loop needs to resume exactly: the step counter, named modules, named lists
    of bare parameters, optimizers, other stateful objects (loaders, early stopping, ...),
    metadata that must match on resume, and the global RNG states.

    ``state_dict()`` gathers it (RNG included); ``load_state_dict()`` first validates every
    entry against the live objects (keys, shapes, optimizer groups, metadata) and only then loads,
    so a mismatching checkpoint raises :class:`CheckpointError` and changes nothing.
    ``save(path)``/``load(path)`` go through :func:`save_checkpoint`/:func:`load_checkpoint`.
    """

    kind: str
    modules: dict[str, nn.Module] = field(default_factory=dict)
    params: dict[str, list[Tensor]] = field(default_factory=dict)
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    stateful: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {
            _FORMAT_KEY: CHECKPOINT_FORMAT_VERSION,
            "kind": self.kind,
            "step": int(self.step),
            "meta": dict(self.meta),
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "params": {k: [p.detach().clone() for p in ps] for k, ps in self.params.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "stateful": {k: s.state_dict() for k, s in self.stateful.items()},
            "extra": dict(self.extra),
            "rng": get_rng_state(),
            "saved_at": time.time(),
        }

    def validate(self, ckpt: Mapping[str, Any], source: str = "<in memory>") -> None:
        src = repr(str(source))
        if ckpt.get(_FORMAT_KEY) != CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(f"checkpoint {src}: not a trainers checkpoint of version "
                                  f"{CHECKPOINT_FORMAT_VERSION}")
        if ckpt.get("kind") != self.kind:
            raise CheckpointError(f"checkpoint {src} was written by {ckpt.get('kind')!r}, cannot "
                                  f"load it into {self.kind!r}")
        for section in ("modules", "params", "optimizers", "stateful", "meta", "rng"):
            if not isinstance(ckpt.get(section), Mapping):
                raise CheckpointError(f"checkpoint {src}: section {section!r} missing or invalid")
        for key, want in self.meta.items():
            got = ckpt["meta"].get(key, "<missing>")
            if _tuplify(got) != _tuplify(want):
                raise CheckpointError(f"checkpoint {src}: setting {key!r} is {got!r} in the "
                                      f"checkpoint but {want!r} in this trainer")
        for section, live in (("modules", self.modules), ("params", self.params),
                              ("optimizers", self.optimizers), ("stateful", self.stateful)):
            missing = sorted(set(live) - set(ckpt[section]))
            if missing:
                raise CheckpointError(f"checkpoint {src}: {section} entries {missing} missing "
                                      f"(checkpoint has {sorted(ckpt[section])})")
        for k, m in self.modules.items():
            _check_module_state(src, k, m, ckpt["modules"][k])
        for k, ps in self.params.items():
            _check_params_state(src, k, ps, ckpt["params"][k])
        for k, o in self.optimizers.items():
            _check_optimizer_state(src, k, o, ckpt["optimizers"][k])

    def load_state_dict(self, ckpt: Mapping[str, Any], source: str = "<in memory>",
                        restore_rng: bool = True) -> None:
        self.validate(ckpt, source)
        src = repr(str(source))
        try:
            with torch.no_grad():
                for k, m in self.modules.items():
                    m.load_state_dict(ckpt["modules"][k])
                for k, ps in self.params.items():
                    for p, s in zip(ps, ckpt["params"][k]):
                        p.copy_(s.to(p.device, p.dtype))
            for k, o in self.optimizers.items():
                o.load_state_dict(ckpt["optimizers"][k])
            for k, s in self.stateful.items():
                s.load_state_dict(ckpt["stateful"][k])
            if restore_rng:
                set_rng_state(ckpt["rng"])
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"checkpoint {src}: could not be loaded: "
                                  f"{type(e).__name__}: {e}") from e
        self.step = int(ckpt["step"])
        self.extra = dict(ckpt.get("extra", {}))

    def save(self, path: str | os.PathLike) -> Path:
        return save_checkpoint(path, self.state_dict())

    def load(self, path: str | os.PathLike, *, map_location: Any = None,
             restore_rng: bool = True) -> dict[str, Any]:
        ckpt = load_checkpoint(path, map_location=map_location or "cpu", kind=self.kind)
        self.load_state_dict(ckpt, source=str(path), restore_rng=restore_rng)
        return ckpt

