"""Generic WGAN-GP training with one critic per dataset (WhatIfGAN paper, Algorithms 3 and 4).

The trainer knows nothing about causal graphs.  It is given

* the *trainable* generator parameters (theta_{H_k} in Algorithm 4); only these are updated,
  everything else the sampler touches (frozen, pre-trained mechanisms of the ancestor set A_k)
  stays bitwise unchanged;
* one critic D_{w_i} per dataset D_i, with one data loader per dataset yielding dict batches;
* a sampler closure ``sampler(real_batch, i) -> fake_batch`` (Algorithm 4, line 9: RunGAN with
  the parents intervened from the real batch);
* the keys each critic compares (V_r in Algorithm 4, line 4).

One training *step* is: for every dataset i, ``n_critic`` critic updates, each with a fresh real
batch and a fresh fake batch (Algorithm 4, lines 6-12), then one generator update on the loss
summed over datasets, ``G_loss = sum_i -E[D_{w_i}(v_f)]`` (Algorithm 4, lines 13-15; Algorithm 3,
line 10; Appendix C.1, Eq. 4: the gradients from all datasets are summed).

The critic loss is the WGAN-GP loss of Gulrajani et al. (2017),

    L_i = E[D(v_f)] - E[D(v_r)] + lambda * E[(||grad_{v_hat} D(v_hat)||_2 - 1)^2],
    v_hat = eps * v_r + (1 - eps) * v_f,   eps ~ U[0, 1] per sample,

(Algorithm 4, lines 10-11; the pseudo-code's ``*`` before lambda is a typo for ``+``), where the
gradient is taken w.r.t. all compared variables together (flattened and concatenated per
sample).  Adam with betas (0.5, 0.9) for generator and critics, lambda = 10 (Appendix F.1.1).

Optional PacGAN packing (Lin et al., 2018): the critic sees ``pac`` samples concatenated along
the feature (channel) dimension; interpolation weights and gradient norms are per pack.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
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

__all__ = ["WGANGPConfig", "WGANGPTrainer", "gradient_penalty", "pack"]

Batch = dict[str, Tensor]
Sampler = Callable[[Batch, int], Batch]


@dataclass
class WGANGPConfig:
    """Hyper-parameters of :class:`WGANGPTrainer` (defaults from the paper, Appendix F.1.1)."""

    lr: float = 5e-4                   #: generator learning rate (paper: 5e-4)
    critic_lr: float | None = None     #: critic learning rate (None: same as ``lr``)
    betas: tuple[float, float] = (0.5, 0.9)
    n_critic: int = 5                  #: critic updates per dataset per generator update
    gp_lambda: float = 10.0            #: gradient-penalty weight (paper: LAMBDA_GP = 10)
    pac: int = 1                       #: PacGAN packing factor (1 = no packing)
    flatten: bool = True               #: critic input: flat (B, D) tensor; False: dict of keys
    max_steps: int = 1000              #: total generator steps (counting resumed ones)
    time_budget: float | None = None   #: seconds of wall time per ``train()`` call
    log_every: int = 10                #: TensorBoard scalars every N steps
    checkpoint_every: int | None = None
    checkpoint_path: str | os.PathLike | None = None
    nan_guard: bool = True
    progress: bool | None = None       #: None: only when stderr is a TTY

    def __post_init__(self):
        if self.n_critic < 0:
            raise ValueError(f"n_critic must be >= 0, got {self.n_critic}")
        if self.pac < 1:
            raise ValueError(f"pac must be >= 1, got {self.pac}")
        if self.lr <= 0 or (self.critic_lr is not None and self.critic_lr <= 0):
            raise ValueError("learning rates must be positive")
        self.betas = tuple(self.betas)


def pack(x: Tensor, pac: int) -> Tensor:
    """PacGAN packing: ``(B, d0, d1, ...) -> (B/pac, pac*d0, d1, ...)`` (``(B,) -> (B/pac, pac)``).

    Consecutive samples are concatenated along the first feature (channel) dimension.
    """
    if pac == 1:
        return x
    b = x.shape[0]
    if b % pac:
        raise ValueError(f"batch size {b} is not divisible by the PacGAN factor pac={pac}")
    if x.dim() == 1:
        return x.reshape(b // pac, pac)
    return x.reshape(b // pac, pac * x.shape[1], *x.shape[2:])


def _float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _critic_out(critic: nn.Module, inp: Any) -> Tensor:
    out = critic(inp)
    if out.dim() > 1:
        if out[0].numel() != 1:
            raise ValueError(f"a critic must return one score per (packed) sample, got output of "
                             f"shape {tuple(out.shape)}")
        out = out.reshape(out.shape[0])
    return out


def gradient_penalty(critic: nn.Module, real: Mapping[str, Tensor], fake: Mapping[str, Tensor],
                     keys: Sequence[str], *, pac: int = 1, flatten: bool = True) -> Tensor:
    """WGAN-GP penalty E[(||grad D(v_hat)||_2 - 1)^2] (Gulrajani et al. 2017; Algorithm 4, l. 10-11).

    ``v_hat`` interpolates every compared variable with the same ``eps ~ U[0,1]`` per (packed)
    sample; the norm is over the gradients of all compared variables, flattened and concatenated.
    """
    b = real[keys[0]].shape[0]
    if b % pac:
        raise ValueError(f"batch size {b} is not divisible by the PacGAN factor pac={pac}")
    ref = real[keys[0]]
    eps = torch.rand(b // pac, 1, device=ref.device, dtype=_float(ref).dtype)
    eps = eps.repeat_interleave(pac, dim=0)
    interp = {}
    for k in keys:
        r, f = _float(real[k]), _float(fake[k]).detach()
        e = eps.reshape(b, *([1] * (r.dim() - 1))).to(r.dtype)
        interp[k] = (e * r + (1 - e) * f).requires_grad_(True)
    inputs = [interp[k] for k in keys]
    out = _critic_out(critic, _critic_input(interp, keys, pac, flatten))
    grads = torch.autograd.grad(out.sum(), inputs, create_graph=True)
    g = torch.cat([gr.reshape(b, -1) for gr in grads], dim=1).reshape(b // pac, -1)
    return ((g.norm(2, dim=1) - 1) ** 2).mean()


def _critic_input(batch: Mapping[str, Tensor], keys: Sequence[str], pac: int, flatten: bool):
    if flatten:
        b = batch[keys[0]].shape[0]
        x = torch.cat([_float(batch[k]).reshape(b, -1) for k in keys], dim=1)
        return pack(x, pac)
    return {k: pack(_float(batch[k]), pac) for k in keys}


class WGANGPTrainer(LoopTrainer):
    """WGAN-GP with several datasets/critics; only the given generator parameters move.

    Parameters
    ----------
    generator_params:
        The trainable parameters theta_{H_k} (Algorithm 4).  Only these are given to the generator
        optimizer and receive gradients (``backward(inputs=...)``): frozen modules and critics used
        by the sampler are never modified by the generator step.
    critics:
        One critic per dataset; called on a ``(B/pac, pac*D)`` float tensor of the compared
        variables (``flatten=True``) or on a dict of packed tensors (``flatten=False``), returning
        one score per row.  No batch norm in critics (WGAN-GP penalises per-sample gradients).
    loaders:
        One re-iterable source of dict batches per dataset (cycled forever).  Loaders with
        ``state_dict``/``load_state_dict`` (e.g. :class:`trainers.core.TensorDictLoader`) are
        checkpointed, which makes resume bitwise identical.
    sampler:
        ``sampler(real_batch, dataset_index) -> fake_batch``, a dict containing at least the
        compared keys, same batch size as ``real_batch``.  Called under ``torch.no_grad()`` for
        critic steps and with gradients for the generator step.
    compare_keys:
        Keys compared by each critic (one sequence per dataset, or one sequence for all).
    config / overrides:
        :class:`WGANGPConfig`, keyword arguments override its fields.
    checkpoint_modules:
        Extra modules whose full state (e.g. generator BatchNorm running statistics) is saved in
        and restored from checkpoints.
    temperature_callback:
        ``f(step) -> float | None`` called before every step (e.g. a Gumbel-softmax temperature
        schedule); a returned number is logged as ``temperature``.
    early_stopping:
        :class:`trainers.core.EarlyStopping` on a metric returned by a hook.

    Hooks, ``train()`` and the checkpoint methods come from :class:`trainers.loop.LoopTrainer`;
    one step (``step``, ``max_steps``) is one generator update.
    """

    kind = "WGANGPTrainer"
    progress_label = "WGAN-GP"

    def __init__(
        self,
        generator_params: Iterable[Tensor],
        critics: Sequence[nn.Module],
        loaders: Sequence[Iterable[Batch]],
        sampler: Sampler,
        compare_keys: Sequence[Sequence[str]] | Sequence[str],
        *,
        config: WGANGPConfig | None = None,
        dataset_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        logger: TensorBoardLogger | str | os.PathLike | None = None,
        checkpoint_modules: Mapping[str, nn.Module] | None = None,
        temperature_callback: Callable[[int], float | None] | None = None,
        early_stopping: EarlyStopping | None = None,
        **overrides: Any,
    ):
        cfg = self.config = self._resolve_config(WGANGPConfig, config, overrides)

        # --- generator parameters (deduplicated, order preserved) ---
        params, seen = [], set()
        for p in generator_params:
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if not params:
            raise ValueError("WGANGPTrainer: no trainable generator parameters were given")
        for j, p in enumerate(params):
            if not p.requires_grad:
                raise ValueError(f"WGANGPTrainer: generator parameter {j} (shape "
                                 f"{tuple(p.shape)}) has requires_grad=False; pass only the "
                                 f"parameters to train")
        self.params: list[Tensor] = params

        # --- datasets ---
        self.critics = list(critics)
        self.loaders = list(loaders)
        n = len(self.critics)
        if n == 0:
            raise ValueError("WGANGPTrainer: at least one critic/dataset is required")
        if len(self.loaders) != n:
            raise ValueError(f"WGANGPTrainer: {n} critics but {len(self.loaders)} loaders; one "
                             f"loader per critic is required")
        if isinstance(compare_keys, str):
            raise TypeError("compare_keys must be a sequence of keys, not a string")
        ck = list(compare_keys)
        if ck and all(isinstance(k, str) for k in ck):
            ck = [ck] * n
        if len(ck) != n:
            raise ValueError(f"WGANGPTrainer: {n} critics but {len(ck)} compare_keys entries")
        self.compare_keys = [list(k) for k in ck]
        for i, keys in enumerate(self.compare_keys):
            if not keys:
                raise ValueError(f"WGANGPTrainer: critic {i} compares no keys")
        self.dataset_names = list(dataset_names) if dataset_names is not None else [
            str(i) for i in range(n)]
        if len(self.dataset_names) != n:
            raise ValueError(f"{n} datasets but {len(self.dataset_names)} dataset_names")
        self.sampler = sampler

        gen_ids = {id(p) for p in params}
        for i, c in enumerate(self.critics):
            if any(id(p) in gen_ids for p in c.parameters()):
                raise ValueError(f"critic {self.dataset_names[i]!r} shares parameters with the "
                                 f"generator")
            cpac = getattr(unwrap_model(c), "pac", None)
            if cpac is not None and int(cpac) != cfg.pac:
                raise ValueError(f"critic {self.dataset_names[i]!r} was built with pac={cpac} "
                                 f"but the trainer uses pac={cfg.pac}; use the same factor")

        if device is None:
            first = next((p for c in self.critics for p in c.parameters()), params[0])
            self.device = first.device
        else:
            self.device = resolve_device(device)

        self._init_loop(logger, early_stopping)
        self.temperature_callback = temperature_callback

        # --- optimizers: Adam(lr, betas=(0.5, 0.9)) (Algorithm 4, lines 12 and 15) ---
        self.g_opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=cfg.betas)
        clr = cfg.critic_lr if cfg.critic_lr is not None else cfg.lr
        self.c_opts = [torch.optim.Adam(c.parameters(), lr=clr, betas=cfg.betas)
                       for c in self.critics]

        stateful: dict[str, Any] = {}
        self._stateless_loaders = []
        for i, ld in enumerate(self.loaders):
            if hasattr(ld, "state_dict") and hasattr(ld, "load_state_dict"):
                stateful[f"loader/{i}"] = ld
            else:
                self._stateless_loaders.append(self.dataset_names[i])
        if early_stopping is not None:
            stateful["early_stopping"] = early_stopping
        modules = {f"critic/{i}": unwrap_model(c) for i, c in enumerate(self.critics)}
        for k, m in (checkpoint_modules or {}).items():
            modules[f"module/{k}"] = unwrap_model(m)
        optimizers = {"generator": self.g_opt}
        optimizers.update({f"critic/{i}": o for i, o in enumerate(self.c_opts)})
        self.state = TrainState(
            kind=self.kind, modules=modules, params={"generator": self.params},
            optimizers=optimizers, stateful=stateful,
            meta={"n_datasets": n, "compare_keys": [list(k) for k in self.compare_keys],
                  "pac": cfg.pac, "flatten": cfg.flatten},
        )
        self._iters: list[Any] = [None] * n

    # ------------------------------------------------------------------ basics
    def _next_real(self, i: int) -> Batch:
        if self._iters[i] is None:
            self._iters[i] = cycle(self.loaders[i], name=f"loader {self.dataset_names[i]!r}")
        batch = next(self._iters[i])
        if not isinstance(batch, Mapping):
            raise TypeError(f"loader {self.dataset_names[i]!r} must yield dict batches of "
                            f"tensors, got {type(batch).__name__}")
        return move_to_device(dict(batch), self.device)

    def fake_batch(self, i: int) -> Batch:
        """A generated batch for dataset ``i`` (the sampler applied to the next real batch), e.g.
        to recompute BatchNorm statistics of the generator after training."""
        return self._sample(self._next_real(i), i)

    def _sample(self, real: Batch, i: int) -> Batch:
        fake = self.sampler(real, i)
        name = self.dataset_names[i]
        if not isinstance(fake, Mapping):
            raise TypeError(f"sampler must return a dict of tensors for dataset {name!r}, got "
                            f"{type(fake).__name__}")
        for k in self.compare_keys[i]:
            if k not in fake:
                raise KeyError(f"sampler output for dataset {name!r} lacks key {k!r} compared by "
                               f"its critic (has {sorted(fake)})")
            if k not in real:
                raise KeyError(f"real batch of dataset {name!r} lacks key {k!r} compared by its "
                               f"critic (has {sorted(real)})")
            if fake[k].shape[0] != real[k].shape[0]:
                raise ValueError(f"dataset {name!r}, key {k!r}: fake batch size "
                                 f"{fake[k].shape[0]} != real batch size {real[k].shape[0]}")
            if fake[k][0].numel() != real[k][0].numel():
                raise ValueError(f"dataset {name!r}, key {k!r}: fake sample has "
                                 f"{fake[k][0].numel()} values per sample, real has "
                                 f"{real[k][0].numel()} (encode real data the same way, e.g. "
                                 f"one-hot for categorical variables)")
        return fake

    # ------------------------------------------------------------------ one step
    def critic_step(self, i: int) -> dict[str, float]:
        """One critic update for dataset ``i`` with a fresh real and fake batch
        (Algorithm 4, lines 7-12).  Returns loss, Wasserstein estimate and penalty."""
        cfg, critic, keys = self.config, self.critics[i], self.compare_keys[i]
        real = self._next_real(i)
        with torch.no_grad():
            fake = self._sample(real, i)
        d_real = _critic_out(critic, _critic_input(real, keys, cfg.pac, cfg.flatten)).mean()
        d_fake = _critic_out(critic, _critic_input(
            {k: fake[k].detach() for k in keys}, keys, cfg.pac, cfg.flatten)).mean()
        gp = gradient_penalty(critic, real, fake, keys, pac=cfg.pac, flatten=cfg.flatten)
        loss = d_fake - d_real + cfg.gp_lambda * gp
        name = self.dataset_names[i]
        loss_v = self._guard(f"critic/{name}/loss", loss)
        self.c_opts[i].zero_grad(set_to_none=True)
        loss.backward(inputs=[p for p in critic.parameters() if p.requires_grad])
        self.c_opts[i].step()
        return {f"critic/{name}/loss": loss_v,
                f"critic/{name}/wasserstein": float((d_real - d_fake).detach()),
                f"critic/{name}/gp": float(gp.detach())}

    def generator_loss(self) -> tuple[Tensor, dict[str, Tensor]]:
        """``G_loss = sum_i -E[D_{w_i}(v_f^{(i)})]`` over all datasets (Algorithm 4, line 13;
        Algorithm 3, line 10; Eq. 4), with the autograd graph to the generator parameters.
        Returns the total and the per-dataset terms."""
        cfg = self.config
        terms: dict[str, Tensor] = {}
        for i, critic in enumerate(self.critics):
            real = self._next_real(i)
            fake = self._sample(real, i)
            inp = _critic_input(fake, self.compare_keys[i], cfg.pac, cfg.flatten)
            terms[self.dataset_names[i]] = -_critic_out(critic, inp).mean()
        total = torch.stack(list(terms.values())).sum()
        return total, terms

    def generator_step(self) -> dict[str, float]:
        """One generator update on the summed loss (Algorithm 4, lines 13-15)."""
        total, terms = self.generator_loss()
        out = {"generator/loss": self._guard("generator/loss", total)}
        for name, t in terms.items():
            out[f"generator/loss/{name}"] = float(t.detach())
        self.g_opt.zero_grad(set_to_none=True)
        total.backward(inputs=self.params)
        self.g_opt.step()
        return out

    def train_step(self) -> dict[str, float]:
        """n_critic critic updates per dataset, then one generator update."""
        metrics: dict[str, float] = {}
        if self.temperature_callback is not None:
            t = self.temperature_callback(self.step)
            if t is not None:
                metrics["temperature"] = float(t)
        for c in self.critics:
            c.train()
        for i in range(len(self.critics)):
            for _ in range(self.config.n_critic):
                metrics.update(self.critic_step(i))
        metrics.update(self.generator_step())
        self.state.step += 1
        return metrics

    # ------------------------------------------------------------------ loop services
    def _progress_postfix(self, metrics: Mapping[str, float]) -> dict[str, float]:
        return {"g": metrics["generator/loss"]}

    def _after_load(self) -> None:
        self._iters = [None] * len(self.critics)

    def _state_dict_warning(self) -> str | None:
        if not self._stateless_loaders:
            return None
        return (f"loaders {self._stateless_loaders} have no state_dict(); on resume their batch "
                f"stream restarts, so the resumed run is not bitwise identical to an "
                f"uninterrupted one")
