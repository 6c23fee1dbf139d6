"""Modular (and joint) WhatIfGAN training of a DCM (Algorithms 2, 3, 4 and 7).

:func:`train` walks an ``hgraph`` training plan: for every h-node ``H`` (in dependency order) and
every dataset the plan uses for it, one critic compares the joint ``Q(S ∩ V_D | do(X))`` of the DCM
with the data's ``P(S ∩ V_D | X)``, where ``S = (H \\ I) ∪ A`` and ``X = Pa(S) \\ S`` is taken from
the real batch and fed into the DCM as an intervention (Eq. 3 / Eq. 10). Only ``H``'s mechanisms
move; the mechanisms of ``A`` are frozen (already trained or pretrained) but gradients flow through
them. The generic loop (critics, gradient penalty, n_critic, checkpoints, TensorBoard, progress)
is :class:`trainers.WGANGPTrainer`.

Joint training (Algorithm 3: all mechanisms at once, one loss per dataset over every variable it
contains) is the same code with a one-step plan (:func:`joint_plan`).

Checkpoints (``run_dir``): ``hnode{i}.pt`` after every completed h-node (an h-node whose file
exists is not retrained when resuming), ``hnode{i}.partial.pt`` every ``checkpoint_every`` steps
inside an h-node (resume continues from there), and ``model.pt`` + ``manifest.json`` at the end.

Data-parallel training of one h-node across processes (``TrainConfig.nproc``, or processes started
by ``torchrun``, or ``train(..., dist=ctx)`` from :func:`trainers.distributed.launch`) goes through
``torch.distributed`` (:mod:`trainers.distributed`): every process trains the same h-node on its
own shard of every dataset; the h-node's mechanisms and the critics are wrapped in
``DistributedDataParallel``, so the critic gradients (gradient penalty included) and the
generator gradients are averaged, and all replicas keep identical parameters.

* ``batch_size`` is the *global* batch: each of the N processes draws ``batch_size // N`` rows
  per batch, so the averaged gradient is that of a ``batch_size`` batch and N is a pure speed
  setting (the hyper-parameters need no change).
* BatchNorm in the generators uses per-process batch statistics (each process normalises its own
  ``batch_size // N`` rows, as plain DDP does; ``SyncBatchNorm`` does not run on CPU/gloo).  Each
  process updates its own running statistics during the h-node (they only matter in eval mode:
  the early-stopping check averages over processes); when the h-node ends rank 0's are broadcast,
  so the trained model is the same in every process.
* The noise of process ``r`` at step ``t`` of h-node ``i`` is seeded from ``(seed, i, t, r)``, so a
  run is reproducible and a resumed run continues exactly.  EMA, learning-rate decay and the
  temperature schedule depend on the step only; the early-stopping check averages the
  data-fit TVD over the processes and the time budget stops every process when one runs out, so
  every decision is the same on all ranks.
* Only rank 0 logs (TensorBoard, progress bar), runs the evaluator and writes checkpoints and the
  final model.  Resuming needs the run directory on a file system all processes see.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgraph import ADMG, TrainingPlan, training_plan
from hgraph.plan import DatasetUse, PlanStep
from trainers.core import (
    TensorBoardLogger,
    TensorDictLoader,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from trainers.distributed import DistributedContext, init_from_env, launch
from trainers.wgan import WGANGPConfig, WGANGPTrainer

from .data.tabular import DataError, Dataset
from .dcm import DCM
from .nn.gumbel import TemperatureSchedule
from .nn.registry import build
from .representation import check_options, representations, uses_representation
from .variables import Categorical

__all__ = ["TrainConfig", "TrainResult", "train", "joint_plan", "plan_for", "representations", "uses_representation"]


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: the paper's Appendix F.1.1 where it gives them)."""

    mode: str = "modular"            #: "modular" (Algorithm 2/7) or "joint" (Algorithm 3)
    steps: int = 2000                #: generator steps per h-node (joint: in total)
    batch_size: int = 256
    lr: float = 5e-4
    critic_lr: float | None = None
    n_critic: int = 5
    gp_lambda: float = 10.0
    pac: int = 1
    critic_hidden: tuple = (256, 256)
    image_critic_channels: tuple = (64, 128, 256)  #: conv critic widths when images are compared
    t0: float = 1.0                  #: Gumbel-softmax temperature max(t0 exp(-r t), t_min)
    t_min: float = 0.1
    anneal_steps: int | None = None  #: steps to reach t_min (default: 2/3 of ``steps``)
    eval_every: int = 0              #: call the evaluator every N steps (0: only at the end)
    checkpoint_every: int = 500
    time_budget: float | None = None  #: seconds per h-node
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    parallel_hnodes: int = 1         #: train up to N h-nodes of one stage in parallel processes
    nproc: int = 1                   #: data-parallel processes per h-node (torch.distributed;
                                     #: ``batch_size`` is the global batch, split evenly)
    early_stop_tvd: float | None = None  #: stop an h-node once the TVD between the model's and
                                     #: the data's compared joint (discrete variables; checked every
                                     #: ``eval_every`` or 50 steps) is below this plus the sampling
                                     #: noise floor twice in a row; uses data only, never the truth
    fit_samples: int = 20000         #: samples for that check
    ema_decay: float | None = 0.99   #: keep an exponential moving average of the trained
                                     #: mechanisms' weights (Yazici et al. 2019); evaluation uses it
                                     #: and it becomes the final model. None: last iterate
    straight_through: bool = False   #: hard one-hot Gumbel samples in the forward pass during
                                     #: training (gradients of the soft sample); soft by default
    lr_decay: float = 0.5            #: linearly decay both learning rates to 10% over the last
                                     #: ``lr_decay`` fraction of the steps (0: constant); damps the
                                     #: oscillation of the final GAN iterate
    image_representation: dict | None = None  #: compare images through a low-dimensional code
                                     #: ``RI = E(I)`` of a conv autoencoder trained on the data's
                                     #: images (Section 5.1): a critic that compares an image
                                     #: together with low-dimensional variables sees ``(RI, labels)``
                                     #: (an MLP critic) instead of raw pixels with label planes.
                                     #: ``{code_dim: 10, steps: 1500, batch_size: 64, lr: 1e-3,
                                     #: max_images: 10000, channels: [32, 64, 128]}``; None: raw pixels
    hnodes: dict | None = None       #: per-h-node overrides (modular training): ``{VAR: {steps: 2000,
                                     #: batch_size: 32, ...}}`` applies to the h-node that contains VAR
                                     #: (e.g. more steps for an image h-node than for the labels';
                                     #: see :data:`HNODE_OPTIONS`); ignored by joint training

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "TrainConfig":
        d = dict(d or {})
        valid = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - valid)
        if bad:
            raise ValueError(f"unknown training option(s) {bad}; valid: {sorted(valid)}")
        for k in ("critic_hidden", "image_critic_channels"):
            if k in d:
                d[k] = tuple(d[k])
        if "image_representation" in d:
            d["image_representation"] = check_options(d["image_representation"])
        if d.get("hnodes") is not None:
            if not isinstance(d["hnodes"], Mapping):
                raise ValueError(f"train.hnodes must map a variable to option overrides, got {d['hnodes']!r}")
            hn = {}
            for var, over in d["hnodes"].items():
                if not isinstance(over, Mapping):
                    raise ValueError(f"train.hnodes.{var}: expected a mapping of options, got {over!r}")
                bad = sorted(set(over) - set(HNODE_OPTIONS))
                if bad:
                    raise ValueError(f"train.hnodes.{var}: option(s) {bad} cannot be set per h-node; "
                                     f"allowed: {list(HNODE_OPTIONS)}")
                hn[str(var)] = dict(over)
            d["hnodes"] = hn
        return cls(**d)

    def for_hnode(self, hnode: Sequence[str]) -> "TrainConfig":
        """This config with the ``hnodes`` overrides of the variables in ``hnode`` applied (modular
        training only; an error when two variables of the h-node set one option differently)."""
        if not self.hnodes or self.mode == "joint":
            return self
        over: dict[str, Any] = {}
        for v in hnode:
            for k, val in (self.hnodes.get(v) or {}).items():
                if k in over and over[k] != val:
                    raise ValueError(f"train.hnodes: variables of the h-node {list(hnode)} set {k!r} to "
                                     f"different values ({over[k]!r} and {val!r})")
                over[k] = val
        if not over:
            return self
        for k in ("critic_hidden", "image_critic_channels"):
            if k in over:
                over[k] = tuple(over[k])
        return dataclasses.replace(self, **over)


#: options of :class:`TrainConfig` that ``hnodes`` may override for one h-node
HNODE_OPTIONS = ("steps", "batch_size", "lr", "critic_lr", "n_critic", "gp_lambda", "pac", "critic_hidden",
                 "image_critic_channels", "t0", "t_min", "anneal_steps", "eval_every", "checkpoint_every",
                 "time_budget", "early_stop_tvd", "fit_samples", "ema_decay", "lr_decay")


@dataclass
class TrainResult:
    plan: Any
    seconds: float
    steps: list = field(default_factory=list)  # per h-node: dict(index, hnode, seconds, steps, skipped)
    history: list = field(default_factory=list)  # evaluator outputs: dict(time, step, hnode, **metrics)


def joint_plan(graph, datasets) -> TrainingPlan:
    """A one-step plan that trains every mechanism at once (Algorithm 3).

    For each dataset ``D ~ P_I(V_D)``: the DCM is intervened on the targets ``I`` (values from the
    batch) and the critic compares all of ``V_D \\ I`` (plus ``I``).
    """
    g = ADMG.load(graph)
    base = training_plan(g, datasets, strict=False)
    allv = list(g.topological_order())
    uses = []
    for d in base.datasets:
        obs = d.observed(g)
        trained = [v for v in allv if v not in d.targets]
        uses.append(DatasetUse(
            dataset=d.name, targets=g.sorted(d.targets), role="joint", trained=trained, ancestors=[],
            joint=trained, compared=[v for v in trained if v in obs], conditioning=g.sorted(d.targets),
            hidden=[v for v in trained if v not in obs]))
    step = PlanStep(index=0, hnode=allv, components=[g.sorted(c) for c in g.c_components()], stage=0,
                    depends_on=[], uses=uses)
    return TrainingPlan(g, base.hgraph, base.datasets, [step], [])


def plan_for(dcm: DCM, datasets: Sequence[Dataset], mode: str = "modular") -> TrainingPlan:
    specs = [d.spec() for d in datasets]
    if mode == "joint":
        return joint_plan(dcm.graph, specs)
    if mode != "modular":
        raise ValueError(f"unknown training mode {mode!r}; use 'modular' or 'joint'")
    return training_plan(dcm.graph, specs, pretrained=dcm.plugins)


def _encode(dcm: DCM, ds: Dataset, keys: Sequence[str], device) -> dict[str, torch.Tensor]:
    out = {}
    for k in keys:
        if k not in ds.columns:
            raise DataError(f"dataset {ds.name!r} has no column {k!r} needed by the plan")
        out[k] = dcm.variables[k].encode(ds.columns[k]).to(device=device, dtype=torch.get_default_dtype())
    return out


def _step_key(step: PlanStep) -> str:
    return ",".join(step.hnode)


def train(dcm: DCM, datasets: Sequence[Dataset], config: TrainConfig | Mapping | None = None, *,
          plan: TrainingPlan | None = None, run_dir: str | Path | None = None, resume: bool = False,
          evaluator: Callable[[DCM], Mapping[str, float]] | None = None,
          logger: TensorBoardLogger | None = None, on_step_done: Callable[[PlanStep], None] | None = None,
          save: bool = True, dist: DistributedContext | None = None) -> TrainResult:
    """Train ``dcm`` on ``datasets`` following the modular plan (or the joint one).

    ``evaluator(dcm) -> {metric: value}`` is called every ``eval_every`` steps and after every
    h-node; its values are logged to TensorBoard and kept in ``TrainResult.history``.

    Data parallelism (see the module docstring): ``dist`` is this process's
    :class:`trainers.distributed.DistributedContext` when the caller started the processes
    (:func:`trainers.distributed.launch`); without it, a ``torchrun`` environment
    (``WORLD_SIZE > 1``) is joined, and otherwise ``config.nproc > 1`` spawns that many local
    processes and loads rank 0's trained weights into ``dcm`` (``evaluator`` must then be
    picklable).  In every process the same ``train`` call is made; only rank 0's result has the
    evaluator history.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    datasets = list(datasets)
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise DataError(f"dataset names must be unique, got {names}")
    for d in datasets:
        d.validate(dcm.graph, dcm.variables)
    ctx = _join_process_group(cfg, dist)
    if ctx is None and cfg.nproc > 1:
        return _train_spawned(dcm, datasets, cfg, plan=plan, run_dir=run_dir, resume=resume,
                              evaluator=evaluator, logger=logger, on_step_done=on_step_done, save=save)
    main = ctx is None or ctx.is_main
    from trainers.core import resolve_device

    device = ctx.device if ctx is not None else resolve_device(cfg.device)
    dcm.to(device)
    plan = plan or plan_for(dcm, datasets, cfg.mode)
    by_name = {d.name: d for d in datasets}
    run = Path(run_dir) if run_dir is not None else None
    if run is not None and main:
        run.mkdir(parents=True, exist_ok=True)
    if logger is None or not main:
        logger = TensorBoardLogger(run / "tb" / "summary" if run is not None and main else None,
                                   enabled=run is not None and main)
    result = TrainResult(plan=plan, seconds=0.0)
    t_start = time.perf_counter()
    base_cfg, base_schedule = cfg, _schedule(cfg)

    reps = representations(dcm, datasets, plan, cfg, run_dir=run if main else None, resume=resume, device=device)
    parallel_done: set[int] = set()
    for step in plan.steps:
        cfg, schedule = _for_hnode(base_cfg, base_schedule, step.hnode)
        trainable = [v for v in step.hnode if v not in dcm.plugins and v not in step.pretrained]
        info = {"index": step.index, "hnode": step.hnode, "seconds": 0.0, "steps": 0, "skipped": None}
        done_file = run / f"hnode{step.index}.pt" if run is not None else None
        if not trainable or not step.uses:
            info["skipped"] = "pretrained" if not trainable else "no dataset"
            result.steps.append(info)
            continue
        if cfg.parallel_hnodes > 1 and step.index not in parallel_done:
            parallel_done |= _train_stage_in_parallel(dcm, datasets, base_cfg, plan, step, run, resume)
        if done_file is not None and done_file.exists() and (resume or step.index in parallel_done):
            ck = load_checkpoint(done_file)
            if ck.get("hnode") != step.hnode:
                raise ValueError(f"{done_file} holds h-node {ck.get('hnode')}, the plan expects {step.hnode}; "
                                 f"use a fresh run directory")
            for v in trainable:
                dcm.mechanisms[v].load_state_dict(ck["mechanisms"][v])
            _finish_hnode(dcm, trainable, schedule, cfg)
            info["skipped"] = "parallel worker" if step.index in parallel_done else "checkpoint"
            result.steps.append(info)
            continue
        t0 = time.perf_counter()
        trainer, ema = _hnode_trainer(dcm, step, by_name, cfg, device, ctx, run, schedule, reps)
        uses = step.uses
        if cfg.early_stop_tvd is not None and all(
                isinstance(dcm.variables[k], Categorical) for u in uses for k in list(u.compared) + list(u.conditioning)):
            fit = _DataFit(dcm, uses, [by_name[u.dataset] for u in uses], cfg.fit_samples, cfg.seed + step.index)
            hits = {"n": 0}

            def fit_hook(tr, fit=fit, hits=hits, ema=ema):
                with _averaged(ema, dcm):
                    gap, floor = fit()
                if ctx is not None:  # every rank takes the same decision
                    gap = ctx.mean(gap)
                hits["n"] = hits["n"] + 1 if gap <= cfg.early_stop_tvd + floor else 0
                if hits["n"] >= 2:
                    tr.request_stop()
                return {"fit/tvd_to_data": gap, "fit/noise_floor": floor}

            trainer.add_hook(fit_hook, every=cfg.eval_every or 50, name="data_fit")
        if evaluator is not None and cfg.eval_every and main:
            def hook(tr, step=step, ema=ema):
                with _averaged(ema, dcm):
                    m = dict(evaluator(dcm))
                result.history.append({"time": time.perf_counter() - t_start, "step": tr.step,
                                       "hnode": step.index, **m})
                return m

            trainer.add_hook(hook, every=cfg.eval_every, name="eval")
        partial = run / f"hnode{step.index}.partial.pt" if run is not None else None
        if resume and partial is not None and partial.exists():
            trainer.load_checkpoint(partial)
        if ctx is not None and ctx.world_size > 1 and cfg.time_budget is not None:
            t_begin = time.perf_counter()

            def budget(tr, t_begin=t_begin):  # stop every process when one runs out of time
                if ctx.mean(float(time.perf_counter() - t_begin >= cfg.time_budget)) > 0:
                    tr.request_stop()

            trainer.add_hook(budget, every=1, name="time_budget")
        dcm.train()  # the h-node's mechanisms train in training mode (frozen ones stay in eval mode)
        trainer.train()
        if ema is not None:  # the averaged weights are the trained model
            ema.copy_to()
            _recalibrate_batchnorm(dcm, trainable, trainer)
        trainer.logger.flush()
        if ctx is not None and ctx.world_size > 1:
            _broadcast_buffers([dcm.mechanisms[v] for v in trainable])
        _finish_hnode(dcm, trainable, schedule, cfg)
        info["seconds"] = time.perf_counter() - t0
        info["steps"] = trainer.step
        result.steps.append(info)
        if done_file is not None and main:
            save_checkpoint(done_file, {"hnode": step.hnode,
                                        "mechanisms": {v: dcm.mechanisms[v].state_dict() for v in trainable}})
            if partial is not None and partial.exists():
                partial.unlink()
        if ctx is not None:
            ctx.barrier()
        if evaluator is not None and main:
            m = dict(evaluator(dcm))
            result.history.append({"time": time.perf_counter() - t_start, "step": trainer.step,
                                   "hnode": step.index, **m})
            logger.scalars(m, step.index, prefix="after_hnode/")
        if on_step_done is not None:
            on_step_done(step)
    dcm.eval()
    result.seconds = time.perf_counter() - t_start
    logger.flush()
    if run is not None and save and main:
        save_model(dcm, run, plan=plan, datasets=datasets, config=base_cfg)
    if ctx is not None:
        ctx.barrier()
    return result


def _schedule(cfg: TrainConfig) -> TemperatureSchedule:
    anneal = cfg.anneal_steps or max(1, (2 * cfg.steps) // 3)
    return TemperatureSchedule.reaching(anneal, t0=cfg.t0, t_min=cfg.t_min)


def _for_hnode(cfg: TrainConfig, schedule: TemperatureSchedule, hnode) -> tuple[TrainConfig, TemperatureSchedule]:
    """The config and temperature schedule of one h-node (``TrainConfig.hnodes`` overrides)."""
    hcfg = cfg.for_hnode(hnode)
    return (cfg, schedule) if hcfg is cfg else (hcfg, _schedule(hcfg))


def _finish_hnode(dcm: DCM, trainable, schedule: TemperatureSchedule, cfg: TrainConfig) -> None:
    """A trained mechanism keeps the final temperature of its schedule and is frozen."""
    for v in trainable:
        schedule.apply(dcm.mechanisms[v], cfg.steps)
    dcm.freeze(trainable)


def _no_buffer_sync() -> dict:
    """DDP option: BatchNorm running statistics are not broadcast at every forward (the end of an
    h-node does it); ``forward_sync_buffers`` replaces ``broadcast_buffers`` in recent torch."""
    import inspect

    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


_NO_BUFFER_SYNC = _no_buffer_sync()


class _SamplerModule(torch.nn.Module):
    """The sampler closure as a module holding the mechanisms it trains, so that
    ``DistributedDataParallel`` averages their gradients (the closure itself runs the whole DCM;
    frozen ancestors are outside this module and get no gradient)."""

    def __init__(self, mechanisms: torch.nn.ModuleDict, fn: Callable):
        super().__init__()
        self.mechanisms = mechanisms
        self.fn = fn

    def forward(self, real, i):
        return self.fn(real, i)


def _hnode_trainer(dcm: DCM, step: PlanStep, by_name: Mapping[str, Dataset], cfg: TrainConfig, device,
                   ctx: DistributedContext | None, run: Path | None, schedule: TemperatureSchedule,
                   reps: Mapping[str, torch.nn.Module] | None = None):
    """The :class:`trainers.WGANGPTrainer` of one h-node (critics, loaders of this process's
    shard, sampler, EMA, learning-rate decay), the DCM's other mechanisms frozen.  With a
    multi-process ``ctx`` the critics and the sampler (holding the h-node's mechanisms) are
    wrapped in ``DistributedDataParallel``.  Returns ``(trainer, ema)``."""
    world = ctx.world_size if ctx is not None else 1
    main = ctx is None or ctx.is_main
    trainable = [v for v in step.hnode if v not in dcm.plugins and v not in step.pretrained]
    seed_everything(cfg.seed * 1000 + step.index)  # the same critics on every rank
    dcm.freeze(dcm.graph.nodes)
    dcm.unfreeze(trainable)
    uses = step.uses
    critics, loaders, keys = [], [], []
    for j, u in enumerate(uses):
        ds = by_name[u.dataset]
        k = list(u.compared) + list(u.conditioning)
        keys.append(k)
        tensors = _encode(dcm, ds, k, device)
        critics.append(_critic(dcm, k, cfg, compared=u.compared, representations=reps).to(device))
        batch = min(cfg.batch_size, len(ds)) // world
        if batch < 1 or batch % cfg.pac:
            raise ValueError(f"dataset {u.dataset!r}: batch of {min(cfg.batch_size, len(ds))} rows split over "
                             f"{world} processes gives {batch} rows per process, which must be a positive "
                             f"multiple of pac={cfg.pac}; change batch_size or nproc")
        loaders.append(TensorDictLoader(tensors, batch, seed=cfg.seed * 7919 + 31 * step.index + j,
                                        rank=ctx.rank if ctx is not None else 0, world_size=world))

    def sampler(real: Mapping[str, torch.Tensor], i: int, uses=uses) -> dict[str, torch.Tensor]:
        u = uses[i]
        n = next(iter(real.values())).shape[0]
        do = {x: real[x] for x in u.conditioning}
        out = dcm(n, do=do, only=u.compared, hard=cfg.straight_through)
        fake = {x: out[x] for x in u.compared}
        fake.update(do)
        return fake

    def temp_cb(t: int, trainable=trainable) -> float:
        if world > 1:  # this process's noise at step t: a function of (seed, h-node, t, rank)
            torch.manual_seed(int(np.random.SeedSequence([cfg.seed, step.index, t, ctx.rank]).generate_state(1)[0]))
        # only the mechanisms being trained anneal; frozen ones keep their final temperature
        for v in trainable:
            schedule.apply(dcm.mechanisms[v], t)
        return schedule(t)

    mods = torch.nn.ModuleDict({v: dcm.mechanisms[v] for v in trainable})
    ema = _EMA(mods, cfg.ema_decay) if cfg.ema_decay else None
    if ctx is not None and world > 1:
        critics = [ctx.wrap(c) for c in critics]
        # only mechanisms the losses reach (DDP expects a gradient for every parameter it holds)
        reached = {x for u in uses for x in dcm.needed(u.compared, u.conditioning)}
        sampler = ctx.wrap(_SamplerModule(torch.nn.ModuleDict(
            {v: dcm.mechanisms[v] for v in trainable if v in reached}), sampler), **_NO_BUFFER_SYNC)
    prefix = f"hnode{step.index}"
    save = run is not None and main
    wcfg = WGANGPConfig(lr=cfg.lr, critic_lr=cfg.critic_lr, n_critic=cfg.n_critic, gp_lambda=cfg.gp_lambda,
                        pac=cfg.pac, max_steps=cfg.steps, time_budget=cfg.time_budget if world == 1 else None,
                        checkpoint_every=cfg.checkpoint_every if save else None,
                        checkpoint_path=(run / f"{prefix}.partial.pt") if save else None,
                        progress=None if cfg.progress and main else False)
    step_logger = TensorBoardLogger(run / "tb" / prefix if save else None, enabled=save)
    trainer = WGANGPTrainer(dcm.parameters_of(trainable), critics, loaders, sampler, keys, config=wcfg,
                            dataset_names=[u.dataset for u in uses], device=device, logger=step_logger,
                            checkpoint_modules={f"mech/{v}": dcm.mechanisms[v] for v in trainable}
                            | ({"ema": ema.avg} if ema is not None else {}),
                            temperature_callback=temp_cb)
    if ema is not None:
        trainer.add_hook(lambda tr, ema=ema: ema.update(), every=1, name="ema")
    if cfg.lr_decay > 0:
        def decay(tr, cfg=cfg):
            start = (1.0 - cfg.lr_decay) * cfg.steps
            frac = min(1.0, max(0.0, (tr.step - start) / max(1.0, cfg.steps - start)))
            scale = 1.0 - 0.9 * frac
            for g_ in tr.g_opt.param_groups:
                g_["lr"] = cfg.lr * scale
            for opt in tr.c_opts:
                for g_ in opt.param_groups:
                    g_["lr"] = (cfg.critic_lr or cfg.lr) * scale

        trainer.add_hook(decay, every=1, name="lr_decay")
    return trainer, ema


@torch.no_grad()
def _broadcast_buffers(modules) -> None:
    """Rank 0's buffers (BatchNorm running statistics) in every process."""
    import torch.distributed as tdist

    for m in modules:
        for b in m.buffers():
            tdist.broadcast(b, 0)


def _join_process_group(cfg: TrainConfig, dist: DistributedContext | None) -> DistributedContext | None:
    """This process's context: ``dist``, or the ``torchrun`` environment's; None for one process."""
    import os

    if dist is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist = init_from_env(device=cfg.device)
    if dist is None:
        return None
    if cfg.nproc not in (1, dist.world_size):
        raise ValueError(f"training option nproc={cfg.nproc} but {dist.world_size} processes were started; "
                         f"set nproc to {dist.world_size} (or 1) or start {cfg.nproc} processes")
    if dist.world_size > 1 and cfg.parallel_hnodes > 1:
        raise ValueError("data-parallel training (nproc > 1) and parallel_hnodes > 1 cannot be combined; "
                         "use one of them")
    return dist if dist.world_size > 1 else None


def _train_spawned(dcm, datasets, cfg, *, plan, run_dir, resume, evaluator, logger, on_step_done, save):
    """``cfg.nproc`` local processes (:func:`trainers.distributed.launch`) train ``dcm``; rank 0's
    weights are loaded into ``dcm`` and its result returned."""
    import pickle

    if cfg.parallel_hnodes > 1:
        raise ValueError("data-parallel training (nproc > 1) and parallel_hnodes > 1 cannot be combined; "
                         "use one of them")
    if logger is not None or on_step_done is not None:
        raise ValueError("train(nproc > 1) spawns processes and cannot call back a logger or on_step_done; "
                         "start the processes yourself (trainers.distributed.launch or torchrun) and pass dist=")
    if evaluator is not None:
        try:
            pickle.dumps(evaluator)
        except Exception as e:
            raise ValueError(f"train(nproc > 1) spawns processes: the evaluator must be picklable (a "
                             f"module-level function), got {evaluator!r} ({e})") from None
    from trainers.core import resolve_device

    device = resolve_device(cfg.device)
    dcm.cpu()
    out = launch(_spawned_worker, cfg.nproc, dcm, datasets, cfg, plan, None if run_dir is None else str(run_dir),
                 resume, evaluator, save, backend=spawn_backend(cfg.device, cfg.nproc), device=cfg.device)[0]
    dcm.load_state_dict(out["state"])
    dcm.to(device)
    result = out["result"]
    base_schedule = _schedule(cfg)
    for s in result.steps:  # trained (or loaded) mechanisms: final temperature, frozen
        if s.get("skipped") in (None, "checkpoint"):
            pre = result.plan.steps[s["index"]].pretrained
            hcfg, schedule = _for_hnode(cfg, base_schedule, s["hnode"])
            _finish_hnode(dcm, [v for v in s["hnode"] if v not in dcm.plugins and v not in pre], schedule, hcfg)
    dcm.eval()
    return result


def spawn_backend(device: str, nproc: int) -> str:
    """Backend for ``nproc`` spawned local processes: NCCL when every process has its own GPU,
    gloo otherwise (CPU, or processes sharing GPUs)."""
    from trainers.core import resolve_device

    dev = resolve_device(device)
    return "nccl" if dev.type == "cuda" and torch.cuda.device_count() >= nproc else "gloo"


def _spawned_worker(ctx: DistributedContext, dcm, datasets, cfg, plan, run, resume, evaluator, save):
    res = train(dcm, datasets, cfg, plan=plan, run_dir=run, resume=resume, evaluator=evaluator, save=save,
                dist=ctx)
    if not ctx.is_main:
        return None
    return {"state": {k: v.detach().cpu() for k, v in dcm.state_dict().items()}, "result": res}


def _critic(dcm: DCM, keys, cfg: TrainConfig, compared=None, representations=None):
    """An MLP critic over the compared variables, a conv critic with label planes when one of
    them is an image (the low-dimensional ones are tiled into constant planes), or an MLP critic
    over ``(RI, labels)`` when a representation is configured and images are compared together
    with low-dimensional variables (:func:`uses_representation`)."""
    images = {k: tuple(dcm.variables[k].shape) for k in keys if dcm.variables[k].kind == "image"}
    if not images:
        return build("critic_mlp", in_dim=sum(dcm.variables[x].dim for x in keys), hidden=cfg.critic_hidden,
                     pac=cfg.pac)
    cond = {k: dcm.variables[k].dim for k in keys if k not in images}
    if uses_representation(dcm, keys if compared is None else compared, cfg):
        reps = representations or {}
        missing = [k for k in images if k not in reps]
        if missing:
            raise ValueError(f"no representation encoder for image(s) {missing}")
        return build("critic_rep", encoders={k: reps[k] for k in images}, images=images, cond_dims=cond,
                     keys=list(keys), pac=cfg.pac, hidden=cfg.critic_hidden)
    return build("critic_conv", images=images, cond_dims=cond, pac=cfg.pac, keys=list(keys),
                 channels=tuple(cfg.image_critic_channels), hidden=cfg.critic_hidden[0])


class _EMA:
    """Exponential moving average of a module's parameters; ``avg`` is a module (so checkpoints
    save it), buffers (BatchNorm statistics) are copied from the live module when used."""

    def __init__(self, module: torch.nn.Module, decay: float):
        import copy

        self.module, self.decay = module, float(decay)
        self.avg = copy.deepcopy(module)
        for p in self.avg.parameters():
            p.requires_grad_(False)
        self.avg.register_buffer("_n", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self) -> None:
        n = int(self.avg._n)
        d = min(self.decay, (1 + n) / (10 + n))
        for a, p in zip(self.avg.parameters(), self.module.parameters()):
            a.lerp_(p.detach(), 1.0 - d)
        self.avg._n += 1

    @torch.no_grad()
    def swap(self) -> None:
        for a, p in zip(self.avg.parameters(), self.module.parameters()):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)

    @torch.no_grad()
    def copy_to(self) -> None:
        for a, p in zip(self.avg.parameters(), self.module.parameters()):
            p.copy_(a)


@torch.no_grad()
def _recalibrate_batchnorm(dcm: DCM, trainable, trainer, batches: int = 20) -> None:
    """BatchNorm running statistics for the averaged weights (as ``update_bn`` of stochastic
    weight averaging): the statistics tracked during training belong to the live weights, not to
    their moving average. Cumulative averages over ``batches`` generated batches per dataset."""
    bns = [m for v in trainable for m in dcm.mechanisms[v].modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was = dcm.training
    dcm.train()
    try:
        for _ in range(batches):
            for i in range(len(trainer.loaders)):
                trainer.fake_batch(i)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        dcm.train(was)


class _averaged:
    """Context for evaluations during training: the trained mechanisms temporarily hold their
    averaged weights, and the DCM's training mode is restored afterwards (evaluators put the
    model in eval mode; training must not go on with frozen BatchNorm statistics)."""

    def __init__(self, ema, dcm: DCM):
        self.ema, self.dcm = ema, dcm

    def __enter__(self):
        self.was = self.dcm.training
        if self.ema is not None:
            self.ema.swap()

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.swap()
        self.dcm.train(self.was)


class _DataFit:
    """TVD between the DCM's and the data's joint of the compared and conditioning variables of
    every dataset of a step (conditioning values taken from the same data rows), with the
    expected sampling-noise TVD between two samples of that size as the floor."""

    def __init__(self, dcm: DCM, uses, datasets, n: int, seed: int):
        self.dcm, self.uses = dcm, uses
        rng = np.random.default_rng(seed)
        self.rows, self.real, self.floor = [], [], 0.0
        for u, ds in zip(uses, datasets):
            m = min(n, len(ds))
            idx = rng.choice(len(ds), size=m, replace=False)
            keys = list(u.compared) + list(u.conditioning)
            codes = [np.asarray(ds.columns[k])[idx].astype(np.int64) for k in keys]
            shape = [dcm.variables[k].k for k in keys]
            p = np.bincount(np.ravel_multi_index(codes, shape), minlength=int(np.prod(shape))) / m
            self.rows.append((keys, shape, {k: torch.as_tensor(c) for k, c in zip(keys, codes)}, m))
            self.real.append(p)
            # E[TVD] of two independent samples of size m (normal approximation per cell)
            self.floor = max(self.floor, 0.5 * float(np.sum(np.sqrt(4 * p * (1 - p) / (np.pi * m)))))

    @torch.no_grad()
    def __call__(self) -> tuple[float, float]:
        worst = 0.0
        was = self.dcm.training
        self.dcm.eval()
        try:
            for u, (keys, shape, codes, m), p in zip(self.uses, self.rows, self.real):
                do = {x: codes[x].to(self.dcm.device) for x in u.conditioning}
                out = self.dcm(m, do=do, only=u.compared, hard=True)
                fake = [out[k].argmax(1).cpu().numpy() if k in u.compared else codes[k].numpy() for k in keys]
                q = np.bincount(np.ravel_multi_index(fake, shape), minlength=len(p)) / m
                worst = max(worst, 0.5 * float(np.abs(p - q).sum()))
        finally:
            self.dcm.train(was)
        return worst, self.floor


def _train_stage_in_parallel(dcm, datasets, cfg, plan, first, run, resume) -> set[int]:
    """Train every pending h-node of ``first``'s stage in worker processes (spawned; each writes
    its ``hnode{i}.pt``). The workers use the same per-h-node seeds as sequential training, so the
    result is the same as training the stage one h-node after the other."""
    if run is None:
        raise ValueError("parallel h-node training needs a run directory (workers write checkpoints)")
    todo = []
    for step in plan.steps:
        if step.stage != first.stage or not step.uses:
            continue
        if not [v for v in step.hnode if v not in dcm.plugins and v not in step.pretrained]:
            continue
        if resume and (run / f"hnode{step.index}.pt").exists():
            continue
        todo.append(step)
    if len(todo) <= 1:
        return set()
    import torch.multiprocessing as mp

    wcfg = dataclasses.replace(cfg, parallel_hnodes=1, progress=False, device="cpu" if dcm.device.type == "cpu" else cfg.device)
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(cfg.parallel_hnodes, len(todo))) as pool:
        pool.starmap(_stage_worker, [(dcm, datasets, wcfg, plan, s.index, str(run), resume) for s in todo])
    return {s.index for s in todo}


def _stage_worker(dcm, datasets, cfg, plan, index, run, resume):
    torch.set_num_threads(1)
    step = plan.steps[index]
    sub = TrainingPlan(plan.graph, plan.hgraph, plan.datasets, [step], [])
    train(dcm, datasets, cfg, plan=sub, run_dir=run, resume=resume, save=False)


def save_model(dcm: DCM, run: Path, *, plan=None, datasets=(), config=None) -> Path:
    """``model.pt`` (weights, loadable with ``weights_only=True``) and ``manifest.json``."""
    save_checkpoint(run / "model.pt", {"state_dict": dcm.state_dict()})
    manifest = {
        "graph": dcm.graph.to_dict(),
        "variables": dcm.variables.to_config(),
        "model": {"noise_dim": dcm.noise_dim, "conf_dim": dcm.conf_dim},
        "datasets": [{"name": d.name, "targets": list(d.targets), "variables": list(d.columns)} for d in datasets],
        "plugins": dcm.plugins,
        "train": dataclasses.asdict(config) if config is not None else None,
        "plan": plan.to_dict() if plan is not None else None,
    }
    tmp = run / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    tmp.replace(run / "manifest.json")
    return run / "model.pt"
