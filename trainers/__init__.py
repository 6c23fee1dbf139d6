"""trainers: generic PyTorch training loops (no knowledge of causal graphs).

Never imports ``hgraph`` or ``whatifgan``; the toolkit builds sampler closures and critics and
hands them to these loops.  Multi-process data parallelism: :mod:`trainers.distributed`
(imported on demand).
"""

from .classifier import ClassifierConfig, ClassifierTrainer, TemperatureScaled, fit_temperature
from .core import (
    CheckpointError,
    EarlyStopping,
    NonFiniteLossError,
    ProgressBar,
    StopTraining,
    TensorBoardLogger,
    TensorDictLoader,
    TrainState,
    check_finite,
    get_rng_state,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    unwrap_model,
)
from .diffusion import DiffusionConfig, DiffusionTrainer, drop_conditions
from .wgan import WGANGPConfig, WGANGPTrainer, gradient_penalty, pack

__all__ = [
    "CheckpointError",
    "ClassifierConfig",
    "ClassifierTrainer",
    "DiffusionConfig",
    "DiffusionTrainer",
    "EarlyStopping",
    "NonFiniteLossError",
    "ProgressBar",
    "StopTraining",
    "TemperatureScaled",
    "TensorBoardLogger",
    "TensorDictLoader",
    "TrainState",
    "WGANGPConfig",
    "WGANGPTrainer",
    "check_finite",
    "drop_conditions",
    "fit_temperature",
    "get_rng_state",
    "gradient_penalty",
    "load_checkpoint",
    "pack",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "unwrap_model",
]
