"""Latent variable generative models as CAGE sees them: ``G: Z -> X`` plus an encoder ``ENC: X -> Z``.

CAGE (Section 2.2) needs white-box access to a pretrained generator ``G`` (the *decoder*), an
encoder ``ENC`` mapping data to latents, and samples from the latent prior. This module defines
that interface, :class:`LatentGenerativeModel` (``decode(z)``, ``encode(x)``, ``sample_prior(n)``),
and adapters for the four model families of the issue:

* :class:`VAEModel` over :class:`VAE` (trained here with :func:`fit_vae`): ``ENC`` is the mean of the
  variational posterior (Section 3.2, footnote 1), ``G`` the decoder mean, prior ``N(0, I)``;
* :class:`FlowModel` over :class:`MAF` (a ``zuko`` masked autoregressive flow, Papamakarios et al.
  2017, trained with :func:`fit_flow`): ``ENC = G^{-1}`` (Section 2.2), prior ``N(0, I)``;
* :class:`DecoderModel` / :class:`GANModel`: any decoder callable (a GAN generator, ...) with
  *optimisation-based inversion* -- gradient descent on ``z`` for a reconstruction loss plus the
  prior's negative log-density (Lipton & Tripathi 2017; Bora et al. 2017, cited in Section 2.2);
* :class:`DCMImageModel`: the image of a trained :class:`whatifgan.dcm.DCM` as a function of all the
  exogenous noise it depends on (the noise of the image's ancestors, shared confounder noise and
  the Gumbel noise of categorical ancestors), inverted by optimisation;
* :class:`LinearLatentModel`: ``x = A z + b`` with the pseudo-inverse as encoder, a hand-built
  ground-truth model for tests.

Everything is device-agnostic: tensors are moved to the model's device, nothing here picks one.
The training loops reuse the shared services of :mod:`trainers.core` (seeding, devices, batches,
progress bar, NaN guard, atomic checkpoints loaded with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.core import (
    ProgressBar,
    TensorDictLoader,
    check_finite,
    cycle,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    seed_everything,
)

__all__ = [
    "DCMImageModel",
    "DecoderModel",
    "FlowModel",
    "GANModel",
    "InversionConfig",
    "LatentGenerativeModel",
    "LinearLatentModel",
    "MAF",
    "VAE",
    "VAEModel",
    "fit_flow",
    "fit_vae",
    "invert",
]


def _as_float(x: Any, device: torch.device | None = None) -> Tensor:
    """A float tensor: numpy data in torch's default dtype, integer tensors converted, float
    tensors kept."""
    if isinstance(x, Tensor):
        t = x if x.is_floating_point() else x.to(torch.get_default_dtype())
    else:
        t = torch.as_tensor(np.asarray(x), dtype=torch.get_default_dtype())
    return t if device is None else t.to(device)


# ============================================================================= the interface
class LatentGenerativeModel(ABC):
    """A latent variable generative model ``G: Z -> X`` with an encoder (CAGE Section 2.2).

    Subclasses implement :meth:`decode` (``G``), :meth:`encode` (``ENC``) and
    :meth:`sample_prior`; ``latent_dim`` is the size of ``z``. ``decode`` is differentiable in
    ``z`` (optimisation-based inversion and pixel-space probes rely on it); the batched helpers
    :meth:`decode_batched` / :meth:`encode_batched` run without gradients in chunks.
    """

    latent_dim: int

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """``x = G(z)`` for a batch of latents ``(n, latent_dim)``."""

    @abstractmethod
    def encode(self, x: Any) -> Tensor:
        """``z = ENC(x)`` for a batch of data (the first axis indexes samples)."""

    @abstractmethod
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` latents from the prior of ``G`` (Step 2 of Section 3.2)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @torch.no_grad()
    def decode_batched(self, z: Tensor, batch_size: int = 1024) -> Tensor:
        z = _as_float(z, self.device)
        return torch.cat([self.decode(z[a:a + batch_size]).detach() for a in range(0, len(z), batch_size)])

    def encode_batched(self, x: Any, batch_size: int = 1024) -> Tensor:
        n = len(x)
        return torch.cat([self.encode(x[a:a + batch_size]).detach() for a in range(0, n, batch_size)])


# ============================================================================= linear ground truth
class LinearLatentModel(LatentGenerativeModel):
    """``x = A z + b`` with ``z ~ N(0, I)``; ``ENC(x) = A^+ (x - b)`` (exact when ``A`` has full
    column rank). A hand-built model whose latent geometry is known exactly (tests)."""

    def __init__(self, A: Any, b: Any | None = None):
        self.A = (A.detach() if isinstance(A, Tensor) else torch.as_tensor(np.asarray(A))).to(torch.float64)
        if self.A.dim() != 2:
            raise ValueError(f"A must be a matrix (data_dim, latent_dim), got shape {tuple(self.A.shape)}")
        self.b = torch.zeros(self.A.shape[0], dtype=self.A.dtype) if b is None else _as_float(b).to(self.A.dtype)
        self.latent_dim = int(self.A.shape[1])
        self.A_pinv = torch.linalg.pinv(self.A)

    def decode(self, z: Tensor) -> Tensor:
        return _as_float(z).to(self.A.dtype) @ self.A.T + self.b

    def encode(self, x: Any) -> Tensor:
        return (_as_float(x).to(self.A.dtype) - self.b) @ self.A_pinv.T

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(int(n), self.latent_dim, generator=generator, dtype=self.A.dtype)


# ============================================================================= shared training loop
def _fit_loop(module: nn.Module, loss_fn: Callable[[Tensor], Tensor], data: Tensor, *, steps: int,
              batch_size: int, lr: float, seed: int, device, progress: bool | None, desc: str,
              weight_decay: float = 0.0, grad_clip: float | None = None, log_every: int = 50) -> list:
    """Adam on ``loss_fn(batch)`` over mini-batches of ``data`` (shared services of ``trainers.core``)."""
    seed_everything(seed)
    dev = resolve_device(device) if device is not None else next(module.parameters()).device
    module.to(dev)
    loader = cycle(TensorDictLoader({"x": data}, min(int(batch_size), len(data)), seed=seed), name=desc)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(steps)), eta_min=lr * 0.05)
    module.train()
    history, ema = [], None
    with ProgressBar(int(steps), desc=desc, enabled=progress) as bar:
        for step in range(int(steps)):
            x = next(loader)["x"].to(dev, non_blocking=True)
            loss = loss_fn(x)
            v = check_finite(f"{desc} loss", loss, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
            opt.step()
            sched.step()
            ema = v if ema is None else 0.98 * ema + 0.02 * v
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history.append((step + 1, ema))
            bar.update(1, loss=ema)
    module.eval()
    return history


# ============================================================================= VAE
class VAE(nn.Module):
    """A small VAE (Kingma & Welling 2013) for 28/32 px images or for vectors.

    Images (``shape=(C, H, W)``, pixels in [0, 1], Bernoulli likelihood): ``arch="mlp"`` (default;
    cheap on CPUs) flattens the image through MLPs; ``arch="conv"`` uses a stride-2 convolutional
    encoder (:class:`whatifgan.nn.conv.ConvEncoder`, no normalisation) and a transposed-convolution
    decoder. Vectors (``shape=d``): MLPs and a Gaussian likelihood with a learned global scale.
    The posterior is ``N(mu(x), diag(exp(log_var(x))))``, the prior ``N(0, I)``.
    """

    def __init__(self, shape: int | Sequence[int] = (1, 28, 28), latent_dim: int = 16, *,
                 hidden: int = 256, channels: Sequence[int] = (32, 64, 128), arch: str = "mlp"):
        super().__init__()
        self.latent_dim = int(latent_dim)
        if arch not in ("mlp", "conv"):
            raise ValueError(f"VAE arch must be 'mlp' or 'conv', got {arch!r}")
        self.config = {"shape": shape if isinstance(shape, int) else list(shape), "latent_dim": self.latent_dim,
                       "hidden": int(hidden), "channels": list(channels), "arch": arch}
        self.kind = "vector" if isinstance(shape, int) else "image"
        self.shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        self.arch = "mlp" if self.kind == "vector" else arch
        d = int(math.prod(self.shape))
        if self.kind == "vector":
            self.log_scale = nn.Parameter(torch.zeros(()))
        if self.arch == "mlp":
            self.enc = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                     nn.SiLU(), nn.Linear(hidden, 2 * self.latent_dim))
            self.dec = nn.Sequential(nn.Linear(self.latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                     nn.SiLU(), nn.Linear(hidden, d))
        else:
            from ..nn.conv import ConvEncoder

            c, s, _ = self.shape
            self.enc = ConvEncoder(self.shape, 2 * self.latent_dim, channels=channels, norm="none")
            self.s0 = s // 4
            w = int(channels[-1])
            self.c0 = w
            self.dec_fc = nn.Sequential(nn.Linear(self.latent_dim, hidden), nn.SiLU(),
                                        nn.Linear(hidden, w * self.s0 * self.s0), nn.SiLU())
            self.dec = nn.Sequential(
                nn.ConvTranspose2d(w, w // 2, 4, stride=2, padding=1), nn.SiLU(),
                nn.ConvTranspose2d(w // 2, w // 4, 4, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(w // 4, c, 3, padding=1))

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, log_var)`` of ``q(z | x)``."""
        h = self.enc(x.reshape(x.shape[0], *self.shape))
        mu, log_var = h.chunk(2, dim=1)
        return mu, log_var.clamp(-12.0, 8.0)

    def logits(self, z: Tensor) -> Tensor:
        """Decoder output before the mean function (Bernoulli logits for images), in ``shape``."""
        if self.arch == "mlp":
            return self.dec(z).reshape(z.shape[0], *self.shape)
        h = self.dec_fc(z).reshape(z.shape[0], self.c0, self.s0, self.s0)
        return self.dec(h)

    def decode_mean(self, z: Tensor) -> Tensor:
        out = self.logits(z)
        return torch.sigmoid(out) if self.kind == "image" else out

    def loss(self, x: Tensor, beta: float = 1.0) -> Tensor:
        """Negative ELBO per sample (mean over the batch)."""
        mu, log_var = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
        out = self.logits(z)
        if self.kind == "image":
            rec = F.binary_cross_entropy_with_logits(out, x.reshape(out.shape), reduction="sum") / x.shape[0]
        else:
            scale = self.log_scale.exp()
            rec = (0.5 * ((x - out) / scale) ** 2 + self.log_scale + 0.5 * math.log(2 * math.pi)).sum() / x.shape[0]
        kl = 0.5 * (mu ** 2 + log_var.exp() - 1.0 - log_var).sum() / x.shape[0]
        return rec + beta * kl

    def save(self, path: str | Path, **extra: Any) -> Path:
        return save_checkpoint(path, {"kind": "cage.VAE", "config": self.config, "state": self.state_dict(),
                                      "extra": extra})

    @classmethod
    def load(cls, path: str | Path, map_location: Any = "cpu") -> "VAE":
        ck = load_checkpoint(path, map_location=map_location, kind="cage.VAE")
        cfg = dict(ck["config"])
        shape = cfg.pop("shape")
        vae = cls(shape if isinstance(shape, int) else tuple(shape), **cfg)
        vae.load_state_dict(ck["state"])
        return vae.eval()


def _images_01(x: Any) -> Tensor:
    """uint8 0..255 -> floats in [0, 1]; floats pass through."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.dtype == torch.uint8:
        return t.to(torch.get_default_dtype()) / 255.0
    return t.to(torch.get_default_dtype())


def fit_vae(vae: VAE, data: Any, *, steps: int = 2000, batch_size: int = 128, lr: float = 1e-3,
            beta: float = 1.0, seed: int = 0, device: str | torch.device | None = None,
            progress: bool | None = None) -> list:
    """Train ``vae`` on ``data`` (images uint8 ``[N, C, H, W]`` / floats in [0, 1], or vectors)
    by maximising the ELBO with Adam (cosine-decayed learning rate). Returns the loss history."""
    x = _images_01(data) if vae.kind == "image" else _as_float(data)
    x = x.reshape(len(x), *vae.shape)
    return _fit_loop(vae, lambda b: vae.loss(b, beta), x, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                     device=device, progress=progress, desc="VAE", grad_clip=100.0)


class VAEModel(LatentGenerativeModel):
    """CAGE adapter of a :class:`VAE`: ``ENC(x)`` = posterior mean (Section 3.2, footnote 1),
    ``G(z)`` = decoder mean (pixel probabilities in [0, 1] for images), prior ``N(0, I)``.

    ``encoder="sample"`` encodes with one draw ``mu + sigma * eps`` of the posterior instead (seeded
    by ``seed``). With inactive latent units (posterior = prior, mean ~ 0 for every input) the mean
    encodings have near-zero variance along those units, and a linear probe fitted on them can put
    large weights on directions the decoder ignores; posterior draws give those units unit variance
    and no signal, so the probe's normal stays in the active subspace.
    """

    def __init__(self, vae: VAE, encoder: str = "mean", seed: int = 0):
        if encoder not in ("mean", "sample"):
            raise ValueError(f"encoder must be 'mean' or 'sample', got {encoder!r}")
        self.vae = vae.eval()
        self.latent_dim = vae.latent_dim
        self.encoder = encoder
        self._gen = torch.Generator().manual_seed(int(seed))

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode_mean(_as_float(z, self.device))

    @torch.no_grad()
    def encode(self, x: Any) -> Tensor:
        t = _images_01(x) if self.vae.kind == "image" else _as_float(x)
        mu, log_var = self.vae.posterior(t.to(self.device))
        if self.encoder == "mean":
            return mu
        eps = torch.randn(mu.shape, generator=self._gen).to(mu)
        return mu + eps * (0.5 * log_var).exp()

    def active_units(self, x: Any, threshold: float = 0.01) -> Tensor:
        """Indices of latent units whose posterior mean varies over ``x`` (variance > threshold)."""
        t = _images_01(x) if self.vae.kind == "image" else _as_float(x)
        with torch.no_grad():
            mu = self.vae.posterior(t.to(self.device))[0]
        return torch.nonzero(mu.var(0) > threshold).ravel()

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(int(n), self.latent_dim, generator=generator).to(self.device)


# ============================================================================= masked autoregressive flow
class MAF(nn.Module):
    """A masked autoregressive flow (Papamakarios et al. 2017) from ``zuko`` on standardised data.

    ``x`` is standardised with the training data's mean and standard deviation (buffers), then
    ``zuko.flows.MAF`` maps it to ``z ~ N(0, I)``. :meth:`forward_transform` is ``ENC = G^{-1}``
    (``x -> z``), :meth:`inverse_transform` is ``G`` (``z -> x``, one pass per dimension).
    Defaults follow Appendix B (10 transforms) with small hidden layers.

    High-dimensional data (images): with ``data_shape`` given, ``x`` (any shape with
    ``prod(data_shape)`` values per sample; uint8 pixels are scaled to [0, 1]) is first projected
    orthogonally onto its top ``features`` principal components (fitted by :func:`fit_flow`), and
    the flow models the coefficients: ``ENC(x) = f(P (x - mean))``, ``G(z) = P^T f^{-1}(z) + mean``
    -- a flow on the principal subspace, with the discarded components set to their mean.
    """

    def __init__(self, features: int, *, transforms: int = 10, hidden_features: Sequence[int] = (64, 64),
                 randperm: bool = False, data_shape: Sequence[int] | None = None):
        super().__init__()
        import zuko

        self.features = int(features)
        self.data_shape = None if data_shape is None else tuple(int(s) for s in data_shape)
        self.config = {"features": self.features, "transforms": int(transforms),
                       "hidden_features": [int(h) for h in hidden_features], "randperm": bool(randperm),
                       "data_shape": None if self.data_shape is None else list(self.data_shape)}
        self.flow = zuko.flows.MAF(self.features, 0, transforms=int(transforms),
                                   hidden_features=tuple(int(h) for h in hidden_features), randperm=randperm)
        self.register_buffer("shift", torch.zeros(self.features))
        self.register_buffer("scale", torch.ones(self.features))
        if self.data_shape is not None:
            d = int(math.prod(self.data_shape))
            if self.features > d:
                raise ValueError(f"MAF: {self.features} principal components for {d}-dimensional data")
            self.register_buffer("data_mean", torch.zeros(d))
            self.register_buffer("components", torch.zeros(self.features, d))

    # ---------------------------------------------------------------- projection
    def _flat(self, x: Any) -> Tensor:
        t = _images_01(x) if not (isinstance(x, Tensor) and x.is_floating_point()) else x
        return t.reshape(t.shape[0], -1).to(self.shift.device, self.shift.dtype)

    def project(self, x: Any) -> Tensor:
        """Data -> the flow's input space (principal coefficients when projecting)."""
        if self.data_shape is None:
            return _as_float(x).to(self.shift)
        return (self._flat(x) - self.data_mean) @ self.components.T

    def unproject(self, u: Tensor) -> Tensor:
        if self.data_shape is None:
            return u
        return (u @ self.components + self.data_mean).reshape(u.shape[0], *self.data_shape)

    def set_projection(self, x: Any) -> float:
        """Fit the principal subspace on data ``x``; returns the explained variance fraction."""
        if self.data_shape is None:
            raise ValueError("this MAF has no data_shape: it does not project")
        xf = self._flat(x)
        mean = xf.mean(0)
        _, s, vh = torch.linalg.svd(xf - mean, full_matrices=False)
        self.data_mean.copy_(mean)
        self.components.copy_(vh[:self.features])
        var = s ** 2
        return float(var[:self.features].sum() / var.sum())

    # ---------------------------------------------------------------- flow
    def set_standardisation(self, u: Tensor) -> None:
        self.shift.copy_(u.mean(0))
        self.scale.copy_(u.std(0).clamp_min(1e-6))

    def log_prob(self, x: Tensor, projected: bool = False) -> Tensor:
        """``log p(x)`` (including the standardisation's Jacobian; on the principal subspace when
        projecting). ``projected``: ``x`` already is in the flow's input space."""
        u = (x if projected else self.project(x))
        return self.flow().log_prob((u - self.shift) / self.scale) - self.scale.log().sum()

    def forward_transform(self, x: Any) -> Tensor:
        return self.flow().transform((self.project(x) - self.shift) / self.scale)

    def inverse_transform(self, z: Tensor) -> Tensor:
        return self.unproject(self.flow().transform.inv(z) * self.scale + self.shift)

    def save(self, path: str | Path, **extra: Any) -> Path:
        return save_checkpoint(path, {"kind": "cage.MAF", "config": self.config, "state": self.state_dict(),
                                      "extra": extra})

    @classmethod
    def load(cls, path: str | Path, map_location: Any = "cpu") -> "MAF":
        ck = load_checkpoint(path, map_location=map_location, kind="cage.MAF")
        cfg = dict(ck["config"])
        maf = cls(cfg.pop("features"), **cfg)
        maf.load_state_dict(ck["state"])
        return maf.eval()


def fit_flow(flow: MAF, data: Any, *, steps: int = 3000, batch_size: int = 256, lr: float = 1e-3,
             seed: int = 0, device: str | torch.device | None = None, progress: bool | None = None) -> list:
    """Maximum-likelihood training of ``flow`` on ``data`` (Appendix B trains its MAF for 5000
    iterations on 5000 samples); fits the principal subspace first when the flow projects.
    Returns the loss (negative log-likelihood) history."""
    if flow.data_shape is not None:
        flow.explained_variance = flow.set_projection(data)
    with torch.no_grad():
        u = flow.project(data)
    flow.set_standardisation(u)
    return _fit_loop(flow, lambda b: -flow.log_prob(b, projected=True).mean(), u, steps=steps,
                     batch_size=batch_size, lr=lr, seed=seed, device=device, progress=progress, desc="MAF",
                     grad_clip=10.0)


class FlowModel(LatentGenerativeModel):
    """CAGE adapter of a normalising flow: ``ENC = G^{-1}`` (Section 2.2), prior ``N(0, I)``.

    ``flow`` is a :class:`MAF` (or any module with ``forward_transform``/``inverse_transform``).
    """

    def __init__(self, flow: nn.Module):
        self.flow = flow.eval()
        self.latent_dim = int(getattr(flow, "features"))

    @property
    def device(self) -> torch.device:
        return self.flow.shift.device if hasattr(self.flow, "shift") else next(self.flow.parameters()).device

    def decode(self, z: Tensor) -> Tensor:
        return self.flow.inverse_transform(_as_float(z).to(self.flow.shift))

    @torch.no_grad()
    def encode(self, x: Any) -> Tensor:
        return self.flow.forward_transform(x)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(int(n), self.latent_dim, generator=generator).to(self.device)


# ============================================================================= optimisation-based inversion
@dataclass
class InversionConfig:
    """Settings of optimisation-based inversion (Section 2.2: "backpropagating through G to find a
    latent vector z that best represents a target input x, as measured via a reconstruction loss").

    ``steps`` of Adam with learning rate ``lr`` on ``mean((G(z) - x)^2) + prior_weight * nll(z) / dim(x)``
    from ``restarts`` prior draws per target (the lowest final loss wins); ``batch_size`` targets
    are inverted together.
    """

    steps: int = 300
    lr: float = 0.05
    restarts: int = 1
    prior_weight: float = 1e-3
    batch_size: int = 512
    seed: int = 0


def invert(decode: Callable[[Tensor], Tensor], x: Tensor, sample_prior: Callable[[int, torch.Generator], Tensor],
           prior_nll: Callable[[Tensor], Tensor], config: InversionConfig | None = None,
           loss: Callable[[Tensor, Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Latents ``z`` with ``decode(z) ~ x`` by gradient descent (Lipton & Tripathi 2017; Bora et al.
    2017). Returns ``(z, per-sample reconstruction loss)``. ``loss(x_hat, x)`` gives the
    per-sample reconstruction loss (default: mean squared error)."""
    cfg = config or InversionConfig()
    loss = loss or (lambda xh, xt: ((xh - xt) ** 2).flatten(1).mean(1))
    g = torch.Generator().manual_seed(int(cfg.seed))
    outs_z, outs_l = [], []
    for a in range(0, len(x), cfg.batch_size):
        xt = x[a:a + cfg.batch_size]
        best_z, best_l = None, None
        for _ in range(max(1, int(cfg.restarts))):
            z = sample_prior(len(xt), g).detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=cfg.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.steps), eta_min=cfg.lr * 0.05)
            for _ in range(int(cfg.steps)):
                rec = loss(decode(z), xt)
                total = (rec + cfg.prior_weight * prior_nll(z)).sum()
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                sched.step()
            with torch.no_grad():
                rec = loss(decode(z), xt)
            if best_z is None:
                best_z, best_l = z.detach().clone(), rec
            else:
                better = rec < best_l
                best_z[better] = z.detach()[better]
                best_l = torch.where(better, rec, best_l)
        outs_z.append(best_z)
        outs_l.append(best_l)
    return torch.cat(outs_z), torch.cat(outs_l)


class DecoderModel(LatentGenerativeModel):
    """Any decoder callable ``G: (n, latent_dim) -> x`` with a standard normal prior (or a custom
    ``prior_sampler`` and ``prior_nll``) and optimisation-based inversion as its encoder.

    ``decoder`` may be an ``nn.Module`` (kept in eval mode; its device is the model's) or a plain
    callable (then pass ``device``). ``encode`` runs :func:`invert`; the last inversion's
    reconstruction errors are kept in ``last_inversion_loss``.
    """

    def __init__(self, decoder: Callable[[Tensor], Tensor], latent_dim: int, *,
                 inversion: InversionConfig | Mapping | None = None,
                 prior_sampler: Callable[[int, torch.Generator | None], Tensor] | None = None,
                 prior_nll: Callable[[Tensor], Tensor] | None = None,
                 preprocess: Callable[[Any], Tensor] | None = None,
                 device: str | torch.device | None = None):
        self.decoder = decoder
        if isinstance(decoder, nn.Module):
            decoder.eval()
        self.latent_dim = int(latent_dim)
        self.inversion = inversion if isinstance(inversion, InversionConfig) else InversionConfig(**dict(inversion or {}))
        self._prior_sampler = prior_sampler
        self._prior_nll = prior_nll
        self.preprocess = preprocess
        self._device = None if device is None else torch.device(device)
        self.last_inversion_loss: Tensor | None = None

    @property
    def device(self) -> torch.device:
        if self._device is not None:
            return self._device
        if isinstance(self.decoder, nn.Module):
            for p in self.decoder.parameters():
                return p.device
        return torch.device("cpu")

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(_as_float(z, self.device))

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if self._prior_sampler is not None:
            return self._prior_sampler(int(n), generator).to(self.device)
        return torch.randn(int(n), self.latent_dim, generator=generator).to(self.device)

    def prior_nll(self, z: Tensor) -> Tensor:
        """Per-sample negative log prior density (up to a constant)."""
        if self._prior_nll is not None:
            return self._prior_nll(z)
        return 0.5 * (z ** 2).sum(1)

    def _prepare(self, x: Any) -> Tensor:
        return (self.preprocess(x) if self.preprocess is not None else _as_float(x)).to(self.device)

    def encode(self, x: Any) -> Tensor:
        xt = self._prepare(x)
        dec = self.decoder
        params = list(dec.parameters()) if isinstance(dec, nn.Module) else []
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                z, rec = invert(self.decode, xt, self.sample_prior, self.prior_nll, self.inversion)
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)
        self.last_inversion_loss = rec
        return z.detach()

    def encode_batched(self, x: Any, batch_size: int | None = None) -> Tensor:
        return self.encode(x)  # invert() batches by InversionConfig.batch_size


class GANModel(DecoderModel):
    """CAGE adapter of a GAN generator ``G(z)`` with ``z ~ N(0, I)``; the encoder is
    optimisation-based inversion (Section 2.2). Same as :class:`DecoderModel`."""


# ============================================================================= the image of a DCM
class DCMImageModel(DecoderModel):
    """The image variable ``image`` of a trained :class:`whatifgan.dcm.DCM` as ``G: Z -> X``.

    The latent ``z`` concatenates every noise the image depends on: the exogenous noise
    ``N_V`` of the image and of each of its ancestors, the noise of every confounder touching
    them, and the Gumbel noise of each categorical ancestor (Definition 4.1 / Appendix C.2 of
    WhatIfGAN: all exogenous randomness is replayable). ``G(z)`` runs the DCM's topological forward
    pass with that noise (``hard``: straight-through one-hot categorical parents) and returns the
    image. The prior is ``N(0, I)`` on the Gaussian blocks and ``Gumbel(0, 1)`` on the Gumbel
    blocks; the encoder is optimisation-based inversion. ``blocks`` lists ``(kind, name, start,
    stop)`` so a latent can be read back per variable (:meth:`split`).
    """

    def __init__(self, dcm, image: str, *, hard: bool = True, temperature: float | None = None,
                 inversion: InversionConfig | Mapping | None = None,
                 preprocess: Callable[[Any], Tensor] | None = None):
        from ..variables import Categorical

        if image not in dcm.graph:
            raise ValueError(f"{image!r} is not a variable of the DCM ({list(dcm.graph.nodes)})")
        self.dcm, self.image = dcm.eval(), image
        self.hard, self.temperature = hard, temperature
        needed = dcm.needed([image])
        blocks: list[tuple[str, str, int, int]] = []
        pos = 0
        for v in needed:
            blocks.append(("exo", v, pos, pos + dcm.noise_dim))
            pos += dcm.noise_dim
        for g in sorted({g for v in needed for g in dcm.groups_of[v]}):
            blocks.append(("conf", g, pos, pos + dcm.conf_dim))
            pos += dcm.conf_dim
        for v in needed:
            spec = dcm.variables[v]
            if isinstance(spec, Categorical) and v != image:
                blocks.append(("gumbel", v, pos, pos + spec.k))
                pos += spec.k
        self.blocks = blocks
        self._gumbel_mask = torch.zeros(pos, dtype=torch.bool)
        for kind, _, a, b in blocks:
            if kind == "gumbel":
                self._gumbel_mask[a:b] = True
        super().__init__(self._decode, pos, inversion=inversion, preprocess=preprocess)
        self._device = None

    @property
    def device(self) -> torch.device:
        return self.dcm.device

    def split(self, z: Tensor) -> dict[str, dict[str, Tensor]]:
        """The DCM noise dictionary (``{"exo", "conf", "gumbel"}``) held in latents ``z``."""
        out: dict[str, dict[str, Tensor]] = {"exo": {}, "conf": {}, "gumbel": {}}
        for kind, name, a, b in self.blocks:
            out[kind][name] = z[:, a:b]
        return out

    def _decode(self, z: Tensor) -> Tensor:
        vals = self.dcm(z.shape[0], noise=self.split(z), only=[self.image], hard=self.hard,
                        temperature=self.temperature)
        return vals[self.image]

    def decode_all(self, z: Tensor) -> dict[str, Tensor]:
        """Every variable the image depends on (decoded: codes for categorical ones)."""
        with torch.no_grad():
            vals = self.dcm(z.shape[0], noise=self.split(_as_float(z, self.device)), only=[self.image],
                            hard=True, temperature=self.temperature)
        return {k: self.dcm.variables[k].decode(v) for k, v in vals.items()}

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(int(n), self.latent_dim, generator=generator)
        m = self._gumbel_mask
        if m.any():
            e = torch.empty(int(n), int(m.sum())).exponential_(generator=generator)
            z[:, m] = -e.log()
        return z.to(self.device)

    def prior_nll(self, z: Tensor) -> Tensor:
        m = self._gumbel_mask.to(z.device)
        gauss = 0.5 * (z[:, ~m] ** 2).sum(1)
        g = z[:, m]
        return gauss + (g + torch.exp(-g)).sum(1)


def model_summary(model: LatentGenerativeModel) -> dict:
    """A JSON-friendly description of a model (for reports)."""
    out = {"class": type(model).__name__, "latent_dim": int(model.latent_dim)}
    if isinstance(model, DecoderModel):
        out["inversion"] = asdict(model.inversion)
    return out
