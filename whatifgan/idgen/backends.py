"""Conditional generative models of ID-GEN, one per variable, with pluggable back ends.

ID-GEN (Rahman et al. 2024) trains, at its base cases (Algorithm 2, ConditionalGMs, line 4) and in
its Update step (Algorithm 4, line 2), one conditional model ``M_{V_i}`` per variable such that
``M_{V_i}(v_π^{(i-1)}) ~ P(v_i | v_π^{(i-1)})`` (Definition D.1).  Any conditional generative
model qualifies (Assumption D.5); the back end is chosen per variable:

* :class:`ClassifierBackend` -- categorical variables (the paper's choice for discrete ones,
  Appendix F.2.4 and F.6): an MLP classifier trained by cross-entropy
  (:class:`trainers.ClassifierTrainer`) with temperature-scaled calibration on held-out data
  (Guo et al. 2017; Appendix F.6).  Sampling draws from ``softmax(logits / T)``; :meth:`probs`
  gives the exact conditional, so an all-categorical sampling network can be evaluated exactly.
* :class:`DiffusionBackend` -- images (Section 3.2, step 6; Appendix F.2.3): a conditional UNet
  (:class:`whatifgan.nn.UNet`, label conditions with an explicit null token ``k``, vector
  conditions, image conditions through a small conv encoder) trained with the DDPM loss and
  classifier-free row dropout (:class:`trainers.DiffusionTrainer`), sampled with DDIM and
  guidance weight ``w`` (:class:`whatifgan.diffusion.DDIMSampler`; ``w = 0`` is the paper's
  "conditioning weight 1").
* :class:`WGANBackend` -- a conditional WGAN-GP generator (WhatIfGAN's
  :class:`~whatifgan.nn.MLPGenerator`/:class:`~whatifgan.nn.ConvGenerator` and critics, trained
  by :class:`trainers.WGANGPTrainer`).
* :class:`EmpiricalBackend` -- resampling of the training rows with the same categorical input
  codes (the empirical ``P(v | inputs)``; e.g. ``W1 ~ P(w1)`` in the Update step of Section 4.1,
  or the "No Diffusion" ablation of Appendix F.6).
* :class:`PretrainedBackend` -- a frozen plug-in with the conditional-sampler signature
  ``f(parents: dict[str, Tensor], noise: Tensor) -> Tensor`` (Section 3.2: "if we have access to
  a pre-trained model that can sample from it, we can directly plug it in").

Values inside ID-GEN are *raw* tensors: integer codes ``(N,)`` for categorical variables, floats
``(N, d)`` for continuous ones and ``(N, C, H, W)`` in the variable's ``value_range`` for images.
Every model encodes its inputs itself (one-hot codes, scaled images).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..variables import Categorical, Image, Variable

__all__ = [
    "Backend",
    "CategoricalClassifier",
    "ClassifierBackend",
    "ConditionalModel",
    "DiffusionBackend",
    "DiffusionConditional",
    "EmpiricalBackend",
    "EmpiricalConditional",
    "InputEncoder",
    "MarginalSource",
    "PretrainedBackend",
    "PretrainedConditional",
    "WGANBackend",
    "WGANConditional",
    "default_backend",
    "make_backend",
]

Table = Mapping[str, Tensor]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _to_unit(x: Tensor, var: Image) -> Tensor:
    """Image in ``value_range`` -> ``[-1, 1]`` (the range diffusion and DCGAN models use)."""
    lo, hi = var.value_range
    return (x.to(torch.get_default_dtype()) - lo) / (hi - lo) * 2.0 - 1.0


def _from_unit(x: Tensor, var: Image) -> Tensor:
    lo, hi = var.value_range
    return ((x.clamp(-1.0, 1.0) + 1.0) / 2.0) * (hi - lo) + lo


def _check_inputs(who: str, specs: Mapping[str, Variable], values: Table, n: int) -> None:
    missing = [k for k in specs if k not in values]
    if missing:
        raise KeyError(f"{who}: missing input(s) {missing} (inputs are {list(specs)}, got "
                       f"{sorted(values)})")
    for k in specs:
        if values[k].shape[0] != n:
            raise ValueError(f"{who}: input {k!r} has {values[k].shape[0]} rows, expected {n}")


def _seeded_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    g = torch.Generator(device=device if device is not None else "cpu")
    g.manual_seed(int(seed) % (2 ** 63 - 1))
    return g


def _split(n: int, frac: float, seed: int, device) -> tuple[Tensor, Tensor]:
    """Random train / held-out row indices (held-out: ``frac`` of the rows, at least 1)."""
    g = _seeded_generator(seed)
    perm = torch.randperm(n, generator=g).to(device)
    k = int(round(n * frac)) if frac > 0 else 0
    k = min(max(k, 1 if frac > 0 else 0), max(n - 1, 0))
    return perm[k:], perm[:k]


def _take(data: Table, keys: Sequence[str], idx: Tensor | None = None) -> dict[str, Tensor]:
    out = {}
    for k in keys:
        if k not in data:
            raise KeyError(f"training data lack column {k!r} (have {sorted(data)})")
        out[k] = data[k] if idx is None else data[k][idx]
    return out


def _infer_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


class InputEncoder(nn.Module):
    """Raw inputs -> one flat feature vector per row.

    Categorical inputs become one-hot rows, continuous ones pass through, images go through a
    small conv encoder (two stride-2 convolutions, global pooling, linear).  Without inputs the
    output is a constant 1 (the model is then a learned marginal).
    """

    def __init__(self, specs: Mapping[str, Variable], image_features: int = 32):
        super().__init__()
        self.specs = dict(specs)
        self.convs = nn.ModuleDict()
        dim = 0
        for name, v in self.specs.items():
            if v.kind == "image":
                c = v.shape[0]
                self.convs[name] = nn.Sequential(
                    nn.Conv2d(c, 16, 3, stride=2, padding=1), nn.ReLU(),
                    nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, image_features))
                dim += image_features
            else:
                dim += v.dim
        self.constant = dim == 0
        self.out_dim = max(dim, 1)

    def forward(self, values: Table, n: int | None = None, device=None) -> Tensor:
        if n is None:
            n = next(iter(values.values())).shape[0] if values else 1
        parts = []
        for name, v in self.specs.items():
            x = values[name]
            if v.kind == "categorical":
                x = F.one_hot(x.reshape(-1).long(), v.k).to(torch.get_default_dtype())
            elif v.kind == "image":
                x = self.convs[name](_to_unit(x.reshape(n, *v.shape), v))
            else:
                x = x.reshape(n, v.dim).to(torch.get_default_dtype())
            parts.append(x)
        if self.constant:
            ref = next(iter(values.values())) if values else None
            dev = ref.device if ref is not None else device
            return torch.ones(n, 1, device=dev)
        return torch.cat(parts, dim=1)


# ----------------------------------------------------------------------------------------------
# conditional models
# ----------------------------------------------------------------------------------------------
class ConditionalModel(nn.Module):
    """A trained conditional generative model ``M_V(inputs) ~ P(v | inputs)`` (Definition D.1).

    ``sample(values, n)`` returns ``n`` raw values of :attr:`variable` given the raw input columns
    ``values`` (each with ``n`` rows); categorical models also give ``probs(values, n)``
    (``(n, k)``).  ``info`` records how it was trained (steps, seconds, temperature, ...).
    """

    kind = "model"

    def __init__(self, variable: Variable, inputs: Mapping[str, Variable]):
        super().__init__()
        self.variable = variable
        self.input_specs: dict[str, Variable] = dict(inputs)
        self.info: dict[str, Any] = {}

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.input_specs)

    @property
    def device(self) -> torch.device:
        return _infer_device(self)

    def sample(self, values: Table, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def probs(self, values: Table, n: int) -> Tensor:
        """``P(v | inputs)`` per row, ``(n, k)``; the default estimates it from 256 samples per row
        (implicit models such as GAN generators)."""
        if self.variable.kind != "categorical":
            raise TypeError(f"probs() is defined for categorical variables; {self.variable.name!r} "
                            f"is {self.variable.kind}")
        m = 256
        rep = {k: v.repeat_interleave(m, dim=0) for k, v in values.items()}
        s = self.sample(rep, n * m).reshape(n, m)
        return F.one_hot(s.long(), self.variable.k).to(torch.float64).mean(dim=1)

    def describe(self) -> str:
        return self.kind

    def extra_repr(self) -> str:
        return f"{self.variable.name} | {', '.join(self.inputs) or '∅'}"


class MarginalSource(ConditionalModel):
    """A source without inputs for variables whose value is arbitrary: ID's line 3 adds ``W`` to
    the interventions (``P_x(y) = P_{x,w}(y)`` for every ``w``) and Update draws ``X_Z``
    "from a uniform distribution or from P(X_Z)" (Section 3.2, step 7).  ``mode="uniform"``
    (categorical only) or ``"empirical"`` (resample the given data column)."""

    kind = "source"

    def __init__(self, variable: Variable, mode: str = "uniform", data: Tensor | None = None):
        super().__init__(variable, {})
        if mode not in ("uniform", "empirical"):
            raise ValueError(f"source mode must be 'uniform' or 'empirical', got {mode!r}")
        if mode == "uniform" and variable.kind != "categorical":
            raise ValueError(f"variable {variable.name!r} is {variable.kind}: a uniform source needs a "
                             f"categorical variable; use mode='empirical'")
        if mode == "empirical" and data is None:
            raise ValueError(f"an empirical source for {variable.name!r} needs data")
        self.mode = mode
        self.register_buffer("data", data if data is not None else torch.zeros(0), persistent=True)
        if variable.kind == "categorical":
            if mode == "uniform":
                p = torch.full((variable.k,), 1.0 / variable.k, dtype=torch.float64)
            else:
                p = torch.bincount(data.reshape(-1).long().cpu(), minlength=variable.k).to(torch.float64)
                p = p / p.sum()
            self.register_buffer("p", p)
        else:
            self.p = None

    def sample(self, values: Table, n: int, generator: torch.Generator | None = None) -> Tensor:
        dev = self.data.device
        if self.mode == "uniform":
            return torch.randint(0, self.variable.k, (n,), generator=generator,
                                 device=generator.device if generator is not None else dev).to(dev)
        idx = torch.randint(0, self.data.shape[0], (n,), generator=generator,
                            device=generator.device if generator is not None else dev).to(dev)
        return self.data[idx]

    def probs(self, values: Table, n: int) -> Tensor:
        return self.p[None].expand(n, -1)

    def describe(self) -> str:
        return f"{self.mode} source"


class CategoricalClassifier(ConditionalModel):
    """MLP classifier ``logits = f(inputs)``; ``P(v | inputs) = softmax(logits / T)`` with the
    temperature ``T`` fitted on held-out data."""

    kind = "classifier"

    def __init__(self, variable: Categorical, inputs: Mapping[str, Variable],
                 hidden: Sequence[int] = (64, 64), image_features: int = 32):
        super().__init__(variable, inputs)
        if variable.kind != "categorical":
            raise TypeError(f"a classifier models categorical variables; {variable.name!r} is "
                            f"{variable.kind}")
        self.encoder = InputEncoder(inputs, image_features)
        layers: list[nn.Module] = []
        d = self.encoder.out_dim
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.ReLU()]
            d = int(h)
        layers.append(nn.Linear(d, variable.k))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("temperature", torch.tensor(1.0))

    def forward(self, values: Table) -> Tensor:
        """Uncalibrated logits (what the trainer fits)."""
        if not values:
            raise ValueError("forward needs at least one column (the target) to know the batch size")
        ref = next(iter(values.values()))
        return self.mlp(self.encoder({k: values[k] for k in self.input_specs}, ref.shape[0], ref.device))

    @torch.no_grad()
    def probs(self, values: Table, n: int) -> Tensor:
        _check_inputs(f"classifier for {self.variable.name!r}", self.input_specs, values, n)
        was = self.training
        self.eval()
        try:
            z = self.mlp(self.encoder({k: values[k] for k in self.input_specs}, n,
                                      self.temperature.device))
        finally:
            self.train(was)
        return torch.softmax(z.to(torch.float64) / self.temperature.to(torch.float64), dim=1)

    @torch.no_grad()
    def sample(self, values: Table, n: int, generator: torch.Generator | None = None) -> Tensor:
        p = self.probs(values, n)
        if generator is not None and generator.device != p.device:
            u = torch.rand(n, 1, generator=generator, device=generator.device, dtype=p.dtype).to(p.device)
        else:
            u = torch.rand(n, 1, generator=generator, device=p.device, dtype=p.dtype)
        c = p.cumsum(dim=1)
        return (u > c).sum(dim=1).clamp(max=self.variable.k - 1)

    def describe(self) -> str:
        t = float(self.temperature)
        return f"classifier (MLP, T={t:.3g})"


class WGANConditional(ConditionalModel):
    """A conditional WGAN-GP generator ``v = G(inputs, noise)``."""

    kind = "wgan"

    def __init__(self, variable: Variable, inputs: Mapping[str, Variable], generator: nn.Module,
                 noise_dim: int):
        super().__init__(variable, inputs)
        self.generator = generator
        self.noise_dim = int(noise_dim)

    def encoded_inputs(self, values: Table, n: int) -> dict[str, Tensor]:
        out = {}
        for k, v in self.input_specs.items():
            x = values[k]
            if v.kind == "categorical":
                out[k] = F.one_hot(x.reshape(-1).long(), v.k).to(torch.get_default_dtype())
            elif v.kind == "image":
                out[k] = _to_unit(x.reshape(n, *v.shape), v)
            else:
                out[k] = x.reshape(n, v.dim).to(torch.get_default_dtype())
        return out

    def generate(self, values: Table, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Encoded output (one-hot-like rows / ``[-1, 1]`` images), differentiable."""
        dev = self.device
        noise = torch.randn(n, self.noise_dim, generator=generator,
                            device=generator.device if generator is not None else dev).to(dev)
        gumbel = None
        if self.variable.kind == "categorical":
            u = torch.rand(n, self.variable.k, generator=generator,
                           device=generator.device if generator is not None else dev).to(dev)
            gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-10)))
        parents = self.encoded_inputs(values, n)
        out = self.generator(parents, noise, None, gumbel) if gumbel is not None else \
            self.generator(parents, noise)
        return out.value if hasattr(out, "value") else out

    @torch.no_grad()
    def sample(self, values: Table, n: int, generator: torch.Generator | None = None) -> Tensor:
        _check_inputs(f"WGAN generator for {self.variable.name!r}", self.input_specs, values, n)
        was = self.training
        self.eval()
        try:
            v = self.generate(values, n, generator)
        finally:
            self.train(was)
        var = self.variable
        if var.kind == "categorical":
            return v.argmax(dim=1)
        if var.kind == "image":
            return _from_unit(v.reshape(n, *var.shape), var)
        return v.reshape(n, var.dim)

    @torch.no_grad()
    def probs(self, values: Table, n: int, draws: int = 256) -> Tensor:
        """``P(v | inputs) = E_N softmax(logits(inputs, N))`` (exact in the Gumbel noise, Monte
        Carlo over ``draws`` exogenous noise vectors ``N``)."""
        if self.variable.kind != "categorical" or not hasattr(self.generator, "logits"):
            return super().probs(values, n)
        was = self.training
        self.eval()
        try:
            dev = self.device
            rep = {k: v.repeat_interleave(draws, dim=0) for k, v in values.items()
                   if k in self.input_specs}
            noise = torch.randn(n * draws, self.noise_dim, device=dev)
            z = self.generator.logits(self.encoded_inputs(rep, n * draws), noise)
            p = torch.softmax(z.to(torch.float64), dim=1).reshape(n, draws, -1).mean(dim=1)
        finally:
            self.train(was)
        return p

    def describe(self) -> str:
        return f"conditional WGAN-GP generator ({type(self.generator).__name__})"


class PretrainedConditional(ConditionalModel):
    """A frozen plug-in ``f(parents, noise) -> value`` (wrapped in
    :class:`whatifgan.nn.PretrainedModule`).  Categorical outputs may be codes ``(N,)`` or one-hot
    / score rows ``(N, k)`` (arg-maxed); ``probs_fn(parents) -> (N, k)`` optionally gives exact
    probabilities."""

    kind = "pretrained"

    def __init__(self, variable: Variable, inputs: Mapping[str, Variable], fn: Any,
                 noise_dim: int = 0, probs_fn: Callable | None = None, name: str | None = None):
        super().__init__(variable, inputs)
        from ..nn.registry import PretrainedModule

        self.module = fn if isinstance(fn, PretrainedModule) else PretrainedModule(
            fn, noise_dim=noise_dim, name=name)
        self.noise_dim = int(self.module.noise_dim)
        self.probs_fn = probs_fn
        self.name = name or self.module.name

    def _device(self) -> torch.device:
        return _infer_device(self.module)

    @torch.no_grad()
    def sample(self, values: Table, n: int, generator: torch.Generator | None = None) -> Tensor:
        _check_inputs(f"pretrained module for {self.variable.name!r}", self.input_specs, values, n)
        ref = next(iter(values.values())) if values else None
        dev = ref.device if ref is not None else self._device()
        noise = torch.randn(n, self.noise_dim, generator=generator,
                            device=generator.device if generator is not None else dev).to(dev)
        out = self.module({k: values[k] for k in self.input_specs}, noise).value
        var = self.variable
        if var.kind == "categorical":
            if out.dim() == 2 and out.shape[1] == var.k:
                return out.argmax(dim=1)
            return out.reshape(n).long()
        if var.kind == "image":
            return out.reshape(n, *var.shape)
        return out.reshape(n, var.dim)

    def probs(self, values: Table, n: int) -> Tensor:
        if self.probs_fn is not None:
            with torch.no_grad():
                return self.probs_fn({k: values[k] for k in self.input_specs}).to(torch.float64)
        return super().probs(values, n)

    def describe(self) -> str:
        return f"pretrained plug-in {self.name!r} (frozen)"


class DiffusionConditional(ConditionalModel):
    """Conditional diffusion model of an image: UNet ``eps_theta(x_t, t, cond)`` + DDIM sampling
    with classifier-free guidance weight ``guidance_weight`` (Appendix F.2.3)."""

    kind = "diffusion"

    def __init__(self, variable: Image, inputs: Mapping[str, Variable], unet: nn.Module, schedule,
                 sample_steps: int = 50, guidance_weight: float = 0.0, eta: float = 0.0,
                 batch_size: int = 256):
        super().__init__(variable, inputs)
        self.unet = unet
        self.schedule = schedule
        self.sample_steps = int(sample_steps)
        self.guidance_weight = float(guidance_weight)
        self.eta = float(eta)
        self.batch_size = int(batch_size)

    def condition(self, values: Table, n: int) -> dict[str, Tensor] | None:
        """The UNet's ``cond``: label codes, vectors and ``[-1, 1]`` images by input name."""
        if not self.input_specs:
            return None
        out = {}
        for k, v in self.input_specs.items():
            x = values[k]
            if v.kind == "categorical":
                out[k] = x.reshape(n).long()
            elif v.kind == "image":
                out[k] = _to_unit(x.reshape(n, *v.shape), v)
            else:
                out[k] = x.reshape(n, v.dim).to(torch.get_default_dtype())
        return out

    @torch.no_grad()
    def sample(self, values: Table, n: int, generator: torch.Generator | None = None, *,
               guidance_weight: float | None = None, steps: int | None = None) -> Tensor:
        from ..diffusion import DDIMSampler

        _check_inputs(f"diffusion model for {self.variable.name!r}", self.input_specs, values, n)
        w = self.guidance_weight if guidance_weight is None else float(guidance_weight)
        sampler = DDIMSampler(self.schedule, steps or self.sample_steps, eta=self.eta, clip_x0=1.0)
        dev = self.device
        was = self.unet.training
        self.unet.eval()
        outs = []
        try:
            for a in range(0, n, self.batch_size):
                b = min(n, a + self.batch_size)
                part = {k: v[a:b] for k, v in values.items() if k in self.input_specs}
                cond = self.condition(part, b - a)
                shape = (b - a, *self.variable.shape)
                x_T = torch.randn(shape, generator=generator,
                                  device=generator.device if generator is not None else dev).to(dev)
                x0 = sampler.sample(self.unet, x_T, cond=cond, guidance_weight=w,
                                    generator=generator if (generator is not None and
                                                            generator.device == dev) else None)
                outs.append(_from_unit(x0, self.variable))
        finally:
            self.unet.train(was)
        if not outs:
            return torch.zeros(0, *self.variable.shape, device=dev)
        return torch.cat(outs)

    def describe(self) -> str:
        return (f"conditional diffusion (UNet, DDIM {self.sample_steps} steps, "
                f"guidance w={self.guidance_weight:g})")


# ----------------------------------------------------------------------------------------------
# back ends (factories that train a model)
# ----------------------------------------------------------------------------------------------
class Backend:
    """Trains :class:`ConditionalModel` objects: ``fit(variable, inputs, data, seed=, device=)``.

    ``fingerprint()`` identifies the settings (part of the model-cache key)."""

    name = "backend"
    trains = True

    def supports(self, variable: Variable) -> bool:
        return True

    def fit(self, variable: Variable, inputs: Mapping[str, Variable], data: Table, *, seed: int = 0,
            device: torch.device | str | None = None) -> ConditionalModel:
        raise NotImplementedError

    def fingerprint(self) -> str:
        if dataclasses.is_dataclass(self):
            return f"{self.name}:{dataclasses.asdict(self)!r}"
        return f"{self.name}:{id(self)}"

    def _check(self, variable: Variable) -> None:
        if not self.supports(variable):
            raise TypeError(f"back end {self.name!r} cannot model variable {variable.name!r} "
                            f"({variable.describe()})")


@dataclass
class ClassifierBackend(Backend):
    """Categorical classifier with temperature calibration (default for discrete variables).

    Cross-entropy with Adam, evaluated every ``eval_every`` steps on a held-out fraction
    ``val_fraction`` of the rows; training stops when the held-out NLL has not improved for
    ``patience`` evaluations and the best weights are kept.  The temperature is then fitted on
    the held-out rows (:func:`trainers.fit_temperature`, Guo et al. 2017).

    Two loops minimise the same empirical risk:

    * all inputs categorical and at most ``aggregate_max`` distinct (inputs, target) rows
      (``aggregate=True``): the rows are aggregated into counts and the count-weighted
      cross-entropy -- exactly the mean cross-entropy over the data -- is minimised full-batch
      (hundreds of times faster than mini-batches on tabular data);
    * otherwise mini-batches of ``batch_size`` with :class:`trainers.ClassifierTrainer`.
    """

    hidden: tuple[int, ...] = (64, 64)
    steps: int = 1500
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    eval_every: int = 100
    patience: int = 3
    calibrate: bool = True
    image_features: int = 32
    aggregate: bool = True
    aggregate_max: int = 8192
    full_batch_lr: float = 1e-2
    full_batch_steps: int = 2000
    full_batch_eval_every: int = 25
    full_batch_patience: int = 8
    name: str = field(default="classifier", init=False)

    def supports(self, variable: Variable) -> bool:
        return variable.kind == "categorical"

    def fit(self, variable, inputs, data, *, seed=0, device=None) -> CategoricalClassifier:
        self._check(variable)
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = CategoricalClassifier(variable, inputs, tuple(self.hidden), self.image_features)
        cols = [variable.name, *inputs]
        ref = data[variable.name]
        dev = torch.device(device) if device is not None else ref.device
        model.to(dev)
        n = ref.shape[0]
        tr, va = _split(n, self.val_fraction, seed, dev)
        allc = {k: data[k].to(dev) for k in cols}
        train = _take(allc, cols, tr)
        val = _take(allc, cols, va) if len(va) else None
        agg = None
        if self.aggregate and all(v.kind == "categorical" for v in inputs.values()):
            agg = _aggregate(train, [variable, *inputs.values()])
            if agg[0].shape[0] > self.aggregate_max:
                agg = None
        if agg is not None:
            info = self._fit_full_batch(model, variable, inputs, agg, val, seed)
        else:
            info = self._fit_minibatch(model, variable, inputs, train, val, seed)
        temp = 1.0
        if self.calibrate and val is not None:
            from trainers import fit_temperature

            with torch.no_grad():
                model.eval()
                temp = fit_temperature(model(val), val[variable.name].reshape(-1).long())
        model.temperature.fill_(float(temp))
        model.eval()
        val_nll = None
        if val is not None:
            with torch.no_grad():
                p = model.probs({k: val[k] for k in inputs}, val[variable.name].shape[0])
                val_nll = float(-p.gather(1, val[variable.name].reshape(-1, 1).long()).clamp_min(1e-12)
                                .log().mean())
        model.info = {"backend": self.name, **info, "temperature": float(temp), "rows": int(n),
                      "val_nll": val_nll, "seconds": time.perf_counter() - t0}
        return model

    def _fit_full_batch(self, model, variable, inputs, agg, val, seed) -> dict:
        codes, counts = agg
        names = [variable.name, *inputs]
        rows = {k: codes[:, j] for j, k in enumerate(names)}
        y = rows[variable.name]
        w = counts / counts.sum()
        # categorical inputs: the encoder has no parameters, encode once
        feats = model.encoder({k: rows[k] for k in inputs}, y.shape[0], y.device)
        vagg = None
        if val is not None:
            vc, vn = _aggregate(val, [variable, *inputs.values()])
            vrows = {k: vc[:, j] for j, k in enumerate(names)}
            vfeats = model.encoder({k: vrows[k] for k in inputs}, vc.shape[0], vc.device)
            vagg = (vfeats, vrows[variable.name], vn / vn.sum())
        opt = torch.optim.Adam(model.parameters(), lr=self.full_batch_lr, weight_decay=self.weight_decay,
                               foreach=True)
        best, best_state, bad, step, stopped = float("inf"), None, 0, 0, "max_steps"
        model.train()
        for step in range(1, self.full_batch_steps + 1):
            loss = (F.cross_entropy(model.mlp(feats), y, reduction="none") * w).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if vagg is not None and step % self.full_batch_eval_every == 0:
                with torch.no_grad():
                    vl = float((F.cross_entropy(model.mlp(vagg[0]), vagg[1], reduction="none")
                                * vagg[2]).sum())
                if vl < best - 1e-5:
                    best, bad = vl, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
                    if bad >= self.full_batch_patience:
                        stopped = "early_stopping"
                        break
        if best_state is not None:
            model.load_state_dict(best_state)
        return {"loop": "full-batch (aggregated rows)", "steps": step, "stopped_by": stopped,
                "distinct_rows": int(codes.shape[0])}

    def _fit_minibatch(self, model, variable, inputs, train, val, seed) -> dict:
        from trainers import ClassifierTrainer, EarlyStopping, TensorDictLoader

        target = variable.name
        keys = list(inputs)
        loader = TensorDictLoader(train, min(self.batch_size, train[target].shape[0]), seed=seed)

        def input_fn(batch):
            # the model reads its inputs only; the target gives the batch size when there are none
            return {k: batch[k] for k in keys} | {target: batch[target]}

        es = EarlyStopping("eval/loss", patience=self.patience, min_delta=1e-4) if val is not None else None
        trainer = ClassifierTrainer(model, loader, target_key=target, input_fn=input_fn,
                                    eval_loader=[val] if val is not None else None, lr=self.lr,
                                    weight_decay=self.weight_decay, max_steps=self.steps,
                                    eval_every=self.eval_every if val is not None else None,
                                    log_every=0, progress=False, early_stopping=es, nan_guard=True)
        out = trainer.train()
        return {"loop": "mini-batch (ClassifierTrainer)", "steps": out["step"],
                "stopped_by": out["stopped_by"]}


def _aggregate(data: Table, specs: Sequence[Variable]) -> tuple[Tensor, Tensor]:
    """Distinct rows of categorical columns (codes ``(R, len(specs))``) and their counts."""
    key = torch.zeros_like(data[specs[0].name].reshape(-1).long())
    for v in specs:
        key = key * v.k + data[v.name].reshape(-1).long()
    uniq, counts = torch.unique(key, return_counts=True)
    codes = []
    rest = uniq.clone()
    for v in reversed(specs):
        codes.append(rest % v.k)
        rest = rest // v.k
    return torch.stack(codes[::-1], dim=1), counts.to(torch.get_default_dtype())


@dataclass
class WGANBackend(Backend):
    """Conditional WGAN-GP generator: :class:`~whatifgan.nn.MLPGenerator` (Gumbel-softmax head for
    categorical, linear head for continuous variables) or :class:`~whatifgan.nn.ConvGenerator` for
    28/32 px images, against one critic of ``(value, inputs)`` (:class:`~whatifgan.nn.MLPCritic`
    or :class:`~whatifgan.nn.ConvCritic`), trained by :class:`trainers.WGANGPTrainer` with the
    inputs taken from the real batch (WhatIfGAN's sampler closure)."""

    hidden: tuple[int, ...] = (128, 128)
    critic_hidden: tuple[int, ...] = (128, 128)
    noise_dim: int = 16
    steps: int = 1500
    batch_size: int = 256
    lr: float = 5e-4
    n_critic: int = 5
    gp_lambda: float = 10.0
    temperature: float = 1.0
    name: str = field(default="wgan", init=False)

    def supports(self, variable: Variable) -> bool:
        return variable.kind in ("categorical", "continuous") or (
            variable.kind == "image" and variable.shape[1] == variable.shape[2]
            and variable.shape[1] in (28, 32))

    def fit(self, variable, inputs, data, *, seed=0, device=None) -> WGANConditional:
        from trainers import TensorDictLoader, WGANGPTrainer

        from ..nn import ConvCritic, ConvGenerator, MLPCritic, MLPGenerator

        self._check(variable)
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        ref = data[variable.name]
        dev = torch.device(device) if device is not None else ref.device
        n = ref.shape[0]
        if variable.kind == "image":
            gen = ConvGenerator.for_variable(variable, list(inputs.values()), noise_dim=self.noise_dim,
                                             value_range=(-1.0, 1.0))
        else:
            gen = MLPGenerator.for_variable(variable, list(inputs.values()), noise_dim=self.noise_dim,
                                            hidden=tuple(self.hidden), temperature=self.temperature)
        model = WGANConditional(variable, inputs, gen, self.noise_dim).to(dev)
        # encoded training data: one-hot codes, [-1, 1] images
        enc = model.encoded_inputs({k: data[k].to(dev) for k in inputs}, n)
        if variable.kind == "categorical":
            enc[variable.name] = F.one_hot(ref.to(dev).reshape(-1).long(), variable.k).to(
                torch.get_default_dtype())
        elif variable.kind == "image":
            enc[variable.name] = _to_unit(ref.to(dev).reshape(n, *variable.shape), variable)
        else:
            enc[variable.name] = ref.to(dev).reshape(n, variable.dim).to(torch.get_default_dtype())
        keys = [variable.name, *inputs]
        if variable.kind == "image":
            images = {k: inputs[k].shape for k in inputs if inputs[k].kind == "image"
                      and inputs[k].shape[1:] == variable.shape[1:]}
            images = {variable.name: variable.shape, **images}
            conds = {k: inputs[k].dim for k in inputs if k not in images}
            critic = ConvCritic(images, cond_dims=conds, channels=(32, 64), hidden=128,
                                keys=keys).to(dev)
            flatten = False
        else:
            critic = MLPCritic(sum(enc[k][0].numel() for k in keys), hidden=tuple(self.critic_hidden),
                               keys=keys).to(dev)
            flatten = True
        loader = TensorDictLoader(enc, min(self.batch_size, n), seed=seed)
        name = variable.name

        def sampler(real, i):
            b = real[name].shape[0]
            fake = dict(real)
            dev_ = real[name].device
            noise = torch.randn(b, self.noise_dim, device=dev_)
            out = gen({k: real[k] for k in inputs}, noise)
            fake[name] = out.value if hasattr(out, "value") else out
            return fake

        trainer = WGANGPTrainer(list(gen.parameters()), [critic], [loader], sampler, keys,
                                lr=self.lr, n_critic=self.n_critic, gp_lambda=self.gp_lambda,
                                max_steps=self.steps, log_every=0, progress=False, flatten=flatten,
                                checkpoint_modules={"generator": gen})
        out = trainer.train()
        model.eval()
        model.info = {"backend": self.name, "steps": out["step"] if isinstance(out, dict) else self.steps,
                      "rows": int(n), "seconds": time.perf_counter() - t0}
        return model


class PretrainedBackend(Backend):
    """A frozen plug-in for one variable (nothing is trained).

    ``fn(parents: dict[str, Tensor], noise: Tensor) -> Tensor`` receives the raw input columns it
    declares in ``inputs`` (None: every input ID-GEN offers, i.e. ``v_π^{(i-1)}``); the declared
    inputs must be among those offered, and the plug-in must sample ``P(v | inputs)`` -- which,
    when it uses fewer inputs than offered, presumes the others are irrelevant given its own
    (e.g. a mechanism that only reads the variable's parents)."""

    name = "pretrained"
    trains = False

    def __init__(self, fn: Any, inputs: Sequence[str] | None = None, *, noise_dim: int = 0,
                 probs_fn: Callable | None = None, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"PretrainedBackend wraps a module or callable, got {type(fn).__name__}")
        self.fn = fn
        self.inputs = tuple(inputs) if inputs is not None else None
        self.noise_dim = int(noise_dim)
        self.probs_fn = probs_fn
        self.label = name or getattr(fn, "__name__", type(fn).__name__)

    def fingerprint(self) -> str:
        return f"pretrained:{self.label}:{id(self.fn)}:{self.inputs}"

    def fit(self, variable, inputs, data=None, *, seed=0, device=None) -> PretrainedConditional:
        use = inputs
        if self.inputs is not None:
            extra = [k for k in self.inputs if k not in inputs]
            if extra:
                raise ValueError(f"pretrained plug-in {self.label!r} for {variable.name!r} reads "
                                 f"{list(self.inputs)}, but ID-GEN offers only {list(inputs)} here "
                                 f"(missing {extra})")
            use = {k: inputs[k] for k in self.inputs}
        model = PretrainedConditional(variable, use, self.fn, self.noise_dim, self.probs_fn, self.label)
        if device is not None:
            model.to(device)
        model.info = {"backend": self.name, "steps": 0, "seconds": 0.0}
        return model


@dataclass
class DiffusionBackend(Backend):
    """Conditional diffusion for image variables (Appendix F.2.3).

    UNet (``preset`` of :data:`whatifgan.nn.UNET_PRESETS`) with label conditions for categorical
    inputs (explicit null token ``k``, never class 0), vector conditions for continuous inputs and
    image conditions through a small conv encoder; DDPM training on a noise schedule with
    ``timesteps`` steps and classifier-free row dropout ``cond_dropout`` (rows are dropped, nothing
    is rescaled); DDIM sampling over ``sample_steps`` steps with guidance weight
    ``guidance_weight`` (``eps~ = (1 + w) eps(c) - w eps(null)``)."""

    preset: str = "tiny"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    timesteps: int = 1000
    schedule: str = "linear"
    sample_steps: int = 50
    guidance_weight: float = 0.0
    cond_dropout: float = 0.1
    eta: float = 0.0
    ema_decay: float | None = 0.995
    image_mode: str = "embed"
    unet_kwargs: dict = field(default_factory=dict)
    name: str = field(default="diffusion", init=False)

    def supports(self, variable: Variable) -> bool:
        return variable.kind == "image"

    def build_unet(self, variable: Image, inputs: Mapping[str, Variable]) -> nn.Module:
        from ..nn import UNet

        labels = {k: v.k for k, v in inputs.items() if v.kind == "categorical"}
        vectors = {k: v.dim for k, v in inputs.items() if v.kind == "continuous"}
        images = {k: v.shape[0] for k, v in inputs.items() if v.kind == "image"}
        return UNet.from_preset(self.preset, in_channels=variable.shape[0], labels=labels or None,
                                vectors=vectors or None, images=images or None,
                                image_mode=self.image_mode, **dict(self.unet_kwargs))

    def make_schedule(self):
        from ..diffusion import NoiseSchedule

        if self.schedule == "cosine":
            return NoiseSchedule.cosine(self.timesteps)
        return NoiseSchedule.linear(self.timesteps)

    def fit(self, variable, inputs, data, *, seed=0, device=None) -> DiffusionConditional:
        from trainers import DiffusionTrainer, TensorDictLoader

        from ..diffusion import EMA

        self._check(variable)
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        ref = data[variable.name]
        dev = torch.device(device) if device is not None else ref.device
        n = ref.shape[0]
        unet = self.build_unet(variable, inputs).to(dev)
        schedule = self.make_schedule()
        model = DiffusionConditional(variable, inputs, unet, schedule, self.sample_steps,
                                     self.guidance_weight, self.eta)
        batch = {variable.name: _to_unit(ref.to(dev).reshape(n, *variable.shape), variable)}
        cond = model.condition({k: data[k].to(dev) for k in inputs}, n)
        if cond:
            batch.update(cond)
        loader = TensorDictLoader(batch, min(self.batch_size, n), seed=seed)
        ema = EMA(unet, decay=self.ema_decay) if self.ema_decay else None
        trainer = DiffusionTrainer(unet, schedule, loader, image_key=variable.name,
                                   condition_keys=list(inputs),
                                   null_tokens={k: v.k for k, v in inputs.items() if v.kind == "categorical"},
                                   ema=ema, lr=self.lr, cond_dropout=self.cond_dropout,
                                   max_steps=self.steps, log_every=0, progress=False)
        out = trainer.train()
        if ema is not None:
            ema.copy_to(unet)
        unet.eval()
        losses = out.get("losses") or []
        tail = losses[-max(1, len(losses) // 10):] if losses else []
        model.info = {"backend": self.name, "steps": out["step"], "rows": int(n),
                      "final_loss": (sum(tail) / len(tail)) if tail else None,
                      "seconds": time.perf_counter() - t0}
        return model


class EmpiricalConditional(ConditionalModel):
    """Resamples training values: ``P(v | inputs)`` is the empirical distribution of the rows with
    the same (categorical) input codes.  The paper samples ``W1 ~ P(w1)`` this way in its Update
    step (Section 4.1) and uses it as the "No Diffusion" ablation of ``P(x | c)`` (Appendix F.6)."""

    kind = "empirical"

    def __init__(self, variable: Variable, inputs: Mapping[str, Variable], values: Tensor, codes: Tensor):
        super().__init__(variable, inputs)
        self.register_buffer("values", values)
        self.register_buffer("codes", codes.long())      # combined input code per training row
        self.cards = [int(v.k) for v in inputs.values()]
        order = torch.argsort(self.codes, stable=True)
        uniq, counts = torch.unique_consecutive(self.codes[order], return_counts=True)
        self.register_buffer("order", order)
        self.register_buffer("uniq", uniq)
        self.register_buffer("starts", torch.cumsum(counts, 0) - counts)
        self.register_buffer("counts", counts)

    def _code(self, values: Table, n: int) -> Tensor:
        code = torch.zeros(n, dtype=torch.long, device=self.codes.device)
        for name, k in zip(self.input_specs, self.cards):
            code = code * k + values[name].reshape(-1).long().to(code.device)
        return code

    def _groups(self, values: Table, n: int) -> Tensor:
        code = self._code(values, n)
        pos = torch.searchsorted(self.uniq, code).clamp(max=max(len(self.uniq) - 1, 0))
        if len(self.uniq) == 0 or bool((self.uniq[pos] != code).any()):
            bad = code[(self.uniq[pos] != code)] if len(self.uniq) else code
            raise ValueError(f"empirical model of {self.variable.name!r}: no training row with input "
                             f"code(s) {sorted(set(bad.tolist()))[:5]} of {list(self.input_specs)}")
        return pos

    def sample(self, values: Table, n: int, generator: torch.Generator | None = None) -> Tensor:
        _check_inputs(f"empirical model for {self.variable.name!r}", self.input_specs, values, n)
        dev = self.values.device
        pos = self._groups(values, n)
        u = torch.rand(n, generator=generator, device=generator.device if generator is not None else dev,
                       dtype=torch.float64).to(dev)
        k = (u * self.counts[pos]).long()
        k = torch.minimum(k, self.counts[pos] - 1)
        return self.values[self.order[self.starts[pos] + k]]

    def probs(self, values: Table, n: int) -> Tensor:
        if self.variable.kind != "categorical":
            return super().probs(values, n)
        pos = self._groups(values, n)
        k = self.variable.k
        table = torch.zeros(len(self.uniq), k, dtype=torch.float64, device=self.values.device)
        grp = torch.searchsorted(self.uniq, self.codes)
        table.index_put_((grp, self.values.reshape(-1).long()),
                         torch.ones(len(self.codes), dtype=torch.float64, device=table.device), accumulate=True)
        table = table / table.sum(dim=1, keepdim=True)
        return table[pos]

    def describe(self) -> str:
        return f"empirical resampling ({int(self.values.shape[0])} rows)"


@dataclass
class EmpiricalBackend(Backend):
    """Resample the training column (within each combination of categorical input codes): the
    empirical ``P(v | inputs)``.  Nothing is trained; inputs must be categorical."""

    name: str = field(default="empirical", init=False)

    def supports(self, variable: Variable) -> bool:
        return True

    def fit(self, variable, inputs, data, *, seed=0, device=None) -> EmpiricalConditional:
        bad = [k for k, v in inputs.items() if v.kind != "categorical"]
        if bad:
            raise TypeError(f"the empirical back end of {variable.name!r} conditions on categorical "
                            f"inputs only; {bad} are not categorical (use a generative back end)")
        t0 = time.perf_counter()
        ref = data[variable.name]
        dev = torch.device(device) if device is not None else ref.device
        n = ref.shape[0]
        code = torch.zeros(n, dtype=torch.long, device=dev)
        for k, v in inputs.items():
            code = code * v.k + data[k].reshape(-1).long().to(dev)
        model = EmpiricalConditional(variable, inputs, ref.to(dev), code)
        model.info = {"backend": self.name, "steps": 0, "rows": int(n), "seconds": time.perf_counter() - t0}
        return model


# ----------------------------------------------------------------------------------------------
# choosing a back end per variable
# ----------------------------------------------------------------------------------------------
_NAMES: dict[str, type] = {"classifier": ClassifierBackend, "wgan": WGANBackend, "gan": WGANBackend,
                           "diffusion": DiffusionBackend, "empirical": EmpiricalBackend}


def default_backend(variable: Variable) -> Backend:
    """Classifier for categorical, diffusion for image, WGAN-GP for continuous variables."""
    if variable.kind == "categorical":
        return ClassifierBackend()
    if variable.kind == "image":
        return DiffusionBackend()
    return WGANBackend()


def make_backend(spec: Any) -> Backend:
    """A :class:`Backend` from an instance, a name (``"classifier"``, ``"wgan"``, ``"diffusion"``),
    a config dict ``{"type": name, **settings}`` or a module/callable (a frozen
    :class:`PretrainedBackend`)."""
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, str):
        if spec not in _NAMES:
            raise ValueError(f"unknown back end {spec!r}; known: {sorted(_NAMES)} (or pass a module "
                             f"for a pretrained plug-in)")
        return _NAMES[spec]()
    if isinstance(spec, Mapping):
        cfg = dict(spec)
        kind = cfg.pop("type", None) or cfg.pop("name", None)
        if kind == "pretrained":
            return PretrainedBackend(**cfg)
        if kind not in _NAMES:
            raise ValueError(f"back-end config needs 'type' in {sorted(_NAMES) + ['pretrained']}, "
                             f"got {spec!r}")
        cls = _NAMES[kind]
        for k in ("hidden", "critic_hidden"):
            if k in cfg:
                cfg[k] = tuple(cfg[k])
        try:
            return cls(**cfg)
        except TypeError as e:
            raise TypeError(f"back end {kind!r}: {e}") from None
    if callable(spec):
        return PretrainedBackend(spec)
    raise TypeError(f"cannot make a back end from {type(spec).__name__}")
