"""Counterfactual image metrics: CLD (Diff-SCM, Sec. 5.2) and IM1 / IM2 (Van Looveren & Klaise).

**CLD, counterfactual latent divergence** (Sanchez & Tsaftaris 2022, Sec. 5.2, Eq. 8-10) measures
*minimality* relative to the data set.  A VAE trained on the data gives every image a latent
Gaussian ``N(mu_i, sigma_i) = E_phi(x_i)`` (:class:`ConvVAE`, 20 latent dimensions as the paper's
Fig. 3a).  With ``D(x_i, x_j) = KL(N(mu_i, sigma_i) || N(mu_j, sigma_j))`` (Eq. 8)::

    div       = D(x_CF, x_F)
    S_class   = { D(x, x_F) | (x, y) in dataset, y = class }            (Eq. 9)
    CLD       = log( exp P(S_CF <= div) + exp P(S_F >= div) )             (Eq. 10)

``P(S_CF <= div)`` is the fraction of counterfactual-class images closer to the factual than the
counterfactual is (low = minimal change); ``P(S_F >= div)`` the fraction of factual-class images
farther from the factual than the counterfactual (low = left the factual class).  CLD lies in
``[log 2, 1 + log 2]``; lower is better.  A counterfactual identical to the factual has
``div = 0``, hence ``P(S_F >= 0) = 1`` and ``CLD = log(1 + e) ~ 1.31``.

**IM1, IM2** (Van Looveren & Klaise 2021, Sec. 4; Diff-SCM Appendix G, Eq. 19-20) measure
realism / closeness to the counterfactual class's data manifold with autoencoders trained on one
class each (``AE_y``) and one on all classes (``AE``), all :class:`whatifgan.nn.ConvAutoencoder`::

    IM1 = ||x_CF - AE_{y_CF}(x_CF)||_2^2 / (||x_CF - AE_{y_F}(x_CF)||_2^2 + eps)
    IM2 = ||AE_{y_CF}(x_CF) - AE(x_CF)||_2^2 / (||x_CF||_1 + eps)

IM2 follows Van Looveren & Klaise and the text of Diff-SCM Appendix G ("the reconstruction of the
CF under an autoencoder trained on the counterfactual class, and one trained on all classes");
Diff-SCM's printed Eq. 20 writes ``AE_{x_F}`` in the numerator, which contradicts that text.
Norms are computed with images mapped to ``[-0.5, 0.5]``, the range of Van Looveren & Klaise's
MNIST experiments (IM1 is scale-free; IM2 scales linearly with the range).  Lower is better for
both.

Images are given as floats ``(B, C, H, W)`` in ``[-1, 1]`` (the diffusion model's range) or as
uint8.  Networks are trained here on demand and can be saved/loaded (:class:`CounterfactualMetrics`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.conv import ConvAutoencoder, ConvDecoder, ConvEncoder

__all__ = [
    "CLD",
    "ConvVAE",
    "CounterfactualMetrics",
    "IMAutoencoders",
    "cld_from_measures",
    "gaussian_kl",
    "im1_from_reconstructions",
    "im2_from_reconstructions",
    "relative_measures",
]


def _images(x: Tensor | np.ndarray, shape: Sequence[int] | None = None) -> Tensor:
    """uint8 ``[N, H, W]`` / ``[N, C, H, W]`` or floats in ``[-1, 1]`` -> float ``(N, C, H, W)``."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() == 3:
        t = t[:, None]
    if shape is not None:
        t = t.reshape(t.shape[0], *shape)
    if t.dtype == torch.uint8:
        return t.to(torch.get_default_dtype()) / 127.5 - 1.0
    return t.to(torch.get_default_dtype())


def _batched(fn, x: Tensor, batch_size: int, device) -> Tensor:
    outs = [fn(x[a:a + batch_size].to(device)) for a in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else x.new_zeros((0,))


# ============================================================================= CLD
def gaussian_kl(mu_p: Tensor, logvar_p: Tensor, mu_q: Tensor, logvar_q: Tensor) -> Tensor:
    """``KL(N(mu_p, diag e^logvar_p) || N(mu_q, diag e^logvar_q))`` summed over the last dim
    (broadcasting over the others); Diff-SCM Eq. 8."""
    return 0.5 * (logvar_q - logvar_p + (logvar_p.exp() + (mu_p - mu_q) ** 2) / logvar_q.exp()
                  - 1.0).sum(-1)


def relative_measures(div: Tensor, s_cf: Tensor, s_f: Tensor, *,
                      mask_cf: Tensor | None = None, mask_f: Tensor | None = None
                      ) -> tuple[Tensor, Tensor]:
    """``P(S_CF <= div)`` and ``P(S_F >= div)`` (Diff-SCM Sec. 5.2).

    ``div``: ``(B,)``; ``s_cf``, ``s_f``: ``(B, N)`` divergence sets (or ``(N,)`` shared), with
    optional boolean masks selecting each row's members (for sets of different sizes)."""
    div = div.reshape(-1, 1)
    if s_cf.dim() == 1:
        s_cf = s_cf[None].expand(div.shape[0], -1)
    if s_f.dim() == 1:
        s_f = s_f[None].expand(div.shape[0], -1)
    m_cf = torch.ones_like(s_cf, dtype=torch.bool) if mask_cf is None else mask_cf
    m_f = torch.ones_like(s_f, dtype=torch.bool) if mask_f is None else mask_f
    n_cf = m_cf.sum(1).clamp(min=1)
    n_f = m_f.sum(1).clamp(min=1)
    p_cf = ((s_cf <= div) & m_cf).sum(1) / n_cf
    p_f = ((s_f >= div) & m_f).sum(1) / n_f
    return p_cf.to(div.dtype), p_f.to(div.dtype)


def cld_from_measures(p_cf: Tensor | float, p_f: Tensor | float) -> Tensor:
    """``CLD = log(exp P(S_CF <= div) + exp P(S_F >= div))`` (Diff-SCM Eq. 10)."""
    p_cf = torch.as_tensor(p_cf, dtype=torch.float64)
    p_f = torch.as_tensor(p_f, dtype=torch.float64)
    return torch.logaddexp(p_cf, p_f)


class ConvVAE(nn.Module):
    """Convolutional VAE (Kingma & Welling 2014) giving the latent Gaussians of CLD.

    Encoder :class:`whatifgan.nn.ConvEncoder` to ``2 * latent_dim`` (mean, log-variance); decoder
    :class:`whatifgan.nn.ConvDecoder` to Bernoulli means in ``[0, 1]``; loss = binary
    cross-entropy summed over pixels + ``KL(q(z|x) || N(0, I))``.
    """

    def __init__(self, shape: Sequence[int] = (1, 28, 28), latent_dim: int = 20, *,
                 channels: Sequence[int] = (32, 64, 128), base_channels: int = 32):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.latent_dim = int(latent_dim)
        self.encoder = ConvEncoder(self.shape, 2 * self.latent_dim, channels=channels,
                                   norm="batch")
        self.decoder = ConvDecoder(self.latent_dim, self.shape, base_channels=base_channels,
                                   value_range=(0.0, 1.0))
        self.config = {"shape": list(self.shape), "latent_dim": self.latent_dim,
                       "channels": [int(c) for c in channels], "base_channels": int(base_channels)}

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of ``q(z | x)`` for images in ``[-1, 1]``."""
        h = self.encoder(x.reshape(x.shape[0], *self.shape))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli means in ``[0, 1]``."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decode(z), mu, logvar

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO per image (mean over the batch)."""
        rec, mu, logvar = self(x)
        target = (x.reshape_as(rec) + 1.0) / 2.0
        bce = F.binary_cross_entropy(rec.clamp(1e-6, 1 - 1e-6), target.clamp(0, 1),
                                     reduction="sum") / x.shape[0]
        kl = gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar)).mean()
        return bce + kl

    def fit(self, images: Tensor | np.ndarray, *, steps: int = 2000, batch_size: int = 128,
            lr: float = 1e-3, seed: int = 0, device: str | torch.device | None = None,
            progress: bool | None = None) -> dict[str, Any]:
        """Adam on the negative ELBO; returns ``{"loss", "steps", "seconds"}``."""
        from trainers.core import ProgressBar

        data = _images(images, self.shape)
        dev = next(self.parameters()).device if device is None else torch.device(device)
        self.to(dev)
        g = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        ema, t0 = None, time.monotonic()
        bar = ProgressBar(steps, desc="VAE", enabled=progress)
        try:
            for _ in range(int(steps)):
                idx = torch.randint(data.shape[0], (min(batch_size, data.shape[0]),), generator=g)
                loss = self.loss(data[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                v = float(loss.detach())
                ema = v if ema is None else 0.98 * ema + 0.02 * v
                bar.update(1, loss=ema)
        finally:
            bar.close()
        self.eval()
        return {"loss": ema, "steps": int(steps), "seconds": time.monotonic() - t0}


class CLD:
    """Counterfactual latent divergence against a reference data set (Diff-SCM Eq. 8-10).

    Parameters
    ----------
    vae:
        A trained :class:`ConvVAE` (any module with ``encode(x) -> (mu, logvar)``).
    images, labels:
        The data set ``D`` whose per-class divergence sets ``S_class`` (Eq. 9) the
        counterfactual is compared with (the training split in the benchmark, so factual test
        images are never members).
    """

    def __init__(self, vae: nn.Module, images: Tensor | np.ndarray, labels: Tensor | np.ndarray,
                 *, batch_size: int = 512):
        self.vae = vae.eval()
        self.batch_size = int(batch_size)
        x = _images(images)
        self.labels = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
        if self.labels.numel() != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {self.labels.numel()} labels")
        self.mu, self.logvar = self.latents(x)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @torch.no_grad()
    def latents(self, x: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` on the CPU, float64."""
        x = _images(x)
        mus, lvs = [], []
        for a in range(0, x.shape[0], self.batch_size):
            mu, lv = self.vae.encode(x[a:a + self.batch_size].to(self.device))
            mus.append(mu.double().cpu())
            lvs.append(lv.double().cpu())
        return torch.cat(mus), torch.cat(lvs)

    def divergence(self, x_cf: Tensor | np.ndarray, x_f: Tensor | np.ndarray) -> Tensor:
        """``div = D(x_CF, x_F)`` per pair (Eq. 8)."""
        mc, lc = self.latents(x_cf)
        mf, lf = self.latents(x_f)
        return gaussian_kl(mc, lc, mf, lf)

    def divergence_sets(self, x_f: Tensor | np.ndarray) -> Tensor:
        """``(B, N)``: ``D(x, x_F)`` for every reference image ``x`` and factual ``x_F`` (Eq. 9)."""
        mf, lf = self.latents(x_f)
        return gaussian_kl(self.mu[None], self.logvar[None], mf[:, None], lf[:, None])

    def __call__(self, x_cf: Tensor | np.ndarray, x_f: Tensor | np.ndarray,
                 y_f: Tensor | Sequence[int], y_cf: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """Per-pair ``div``, ``p_cf = P(S_CF <= div)``, ``p_f = P(S_F >= div)`` and ``cld``."""
        y_f = torch.as_tensor(y_f).long().reshape(-1)
        y_cf = torch.as_tensor(y_cf).long().reshape(-1)
        div = self.divergence(x_cf, x_f)
        sets = self.divergence_sets(x_f)
        mask_cf = self.labels[None] == y_cf[:, None]
        mask_f = self.labels[None] == y_f[:, None]
        if not bool(mask_cf.any(1).all()) or not bool(mask_f.any(1).all()):
            raise ValueError("a factual or counterfactual class has no image in the reference "
                             "data set of CLD")
        p_cf, p_f = relative_measures(div, sets, sets, mask_cf=mask_cf, mask_f=mask_f)
        return {"div": div, "p_cf": p_cf, "p_f": p_f, "cld": cld_from_measures(p_cf, p_f)}


# ============================================================================= IM1 / IM2
def _to_range(x: Tensor, value_range: tuple[float, float]) -> Tensor:
    lo, hi = value_range
    return lo + (x + 1.0) / 2.0 * (hi - lo)


def im1_from_reconstructions(x_cf: Tensor, rec_cf_class: Tensor, rec_f_class: Tensor, *,
                             eps: float = 1e-8) -> Tensor:
    """IM1 (Eq. 19) from the reconstructions by the counterfactual- and factual-class AEs."""
    b = x_cf.shape[0]
    num = (x_cf - rec_cf_class).reshape(b, -1).pow(2).sum(1)
    den = (x_cf - rec_f_class).reshape(b, -1).pow(2).sum(1)
    return num / (den + eps)


def im2_from_reconstructions(x_cf: Tensor, rec_cf_class: Tensor, rec_all: Tensor, *,
                             eps: float = 1e-8) -> Tensor:
    """IM2 (Eq. 20, Van Looveren & Klaise's form) from the reconstructions by the
    counterfactual-class AE and the all-class AE; all tensors in the metric's value range."""
    b = x_cf.shape[0]
    num = (rec_cf_class - rec_all).reshape(b, -1).pow(2).sum(1)
    return num / (x_cf.reshape(b, -1).abs().sum(1) + eps)


class IMAutoencoders:
    """Class-specific autoencoders ``AE_y`` plus one on all classes ``AE`` (IM1, IM2).

    Parameters
    ----------
    num_classes:
        Number of classes (one AE each).
    shape, code_dim:
        Image shape and code size of every :class:`whatifgan.nn.ConvAutoencoder`.
    value_range:
        Range the images are mapped to before the norms of IM1/IM2 (``[-0.5, 0.5]`` as Van
        Looveren & Klaise's MNIST experiments).
    """

    def __init__(self, num_classes: int = 10, shape: Sequence[int] = (1, 28, 28), *,
                 code_dim: int = 16, value_range: tuple[float, float] = (-0.5, 0.5),
                 eps: float = 1e-8, **ae_kwargs: Any):
        self.num_classes = int(num_classes)
        self.shape = tuple(int(s) for s in shape)
        self.code_dim = int(code_dim)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.eps = float(eps)
        self.ae_kwargs = dict(ae_kwargs)
        self.class_aes = [ConvAutoencoder(self.shape, self.code_dim, **ae_kwargs).eval()
                          for _ in range(self.num_classes)]
        self.all_ae = ConvAutoencoder(self.shape, self.code_dim, **ae_kwargs).eval()
        self.device = torch.device("cpu")

    def modules(self) -> dict[str, nn.Module]:
        return {**{f"class_{k}": ae for k, ae in enumerate(self.class_aes)}, "all": self.all_ae}

    def to(self, device) -> IMAutoencoders:
        self.device = torch.device(device)
        for m in self.modules().values():
            m.to(self.device)
        return self

    def fit(self, images: Tensor | np.ndarray, labels: Tensor | np.ndarray, *,
            class_steps: int = 600, all_steps: int = 1500, batch_size: int = 64,
            lr: float = 1e-3, seed: int = 0, device: str | torch.device | None = None,
            progress: bool | None = None) -> dict[str, Any]:
        """Train ``AE_y`` on the images of class ``y`` and ``AE`` on all images (MSE)."""
        if device is not None:
            self.to(device)
        x = _images(images, self.shape)
        y = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
        t0 = time.monotonic()
        losses = {}
        for k, ae in enumerate(self.class_aes):
            xs = x[y == k]
            if xs.shape[0] == 0:
                raise ValueError(f"no training image of class {k} for its autoencoder")
            losses[f"class_{k}"] = ae.fit(xs, steps=class_steps, batch_size=batch_size, lr=lr,
                                          seed=seed + k, device=self.device,
                                          progress=progress)["loss"]
        losses["all"] = self.all_ae.fit(x, steps=all_steps, batch_size=batch_size, lr=lr,
                                        seed=seed + 1000, device=self.device,
                                        progress=progress)["loss"]
        for m in self.modules().values():
            m.eval()
        return {"losses": losses, "seconds": time.monotonic() - t0}

    @torch.no_grad()
    def _reconstruct_by_class(self, x: Tensor, y: Tensor) -> Tensor:
        out = torch.empty_like(x)
        for k in torch.unique(y).tolist():
            sel = y == k
            out[sel] = self.class_aes[int(k)](x[sel].to(self.device)).to(out.device)
        return out

    @torch.no_grad()
    def reconstructions(self, x_cf: Tensor | np.ndarray, y_f: Tensor | Sequence[int],
                        y_cf: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """``AE_{y_CF}(x)``, ``AE_{y_F}(x)``, ``AE(x)`` in ``[-1, 1]`` (CPU)."""
        x = _images(x_cf, self.shape).cpu()
        y_f = torch.as_tensor(y_f).long().reshape(-1)
        y_cf = torch.as_tensor(y_cf).long().reshape(-1)
        return {"cf_class": self._reconstruct_by_class(x, y_cf),
                "f_class": self._reconstruct_by_class(x, y_f),
                "all": _batched(self.all_ae, x, 512, self.device).cpu()}

    def __call__(self, x_cf: Tensor | np.ndarray, y_f: Tensor | Sequence[int],
                 y_cf: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """``{"im1": (B,), "im2": (B,)}``."""
        x = _images(x_cf, self.shape).cpu()
        r = self.reconstructions(x, y_f, y_cf)
        vr = self.value_range
        xm = _to_range(x, vr)
        rc, rf, ra = (_to_range(r[k], vr) for k in ("cf_class", "f_class", "all"))
        return {"im1": im1_from_reconstructions(xm, rc, rf, eps=self.eps),
                "im2": im2_from_reconstructions(xm, rc, ra, eps=self.eps)}

    def im1(self, x_cf, y_f, y_cf) -> Tensor:
        return self(x_cf, y_f, y_cf)["im1"]

    def im2(self, x_cf, y_cf) -> Tensor:
        y = torch.as_tensor(y_cf).long().reshape(-1)
        return self(x_cf, y, y)["im2"]


# ============================================================================= bundle
class CounterfactualMetrics:
    """CLD (VAE + reference set) and IM1/IM2 (autoencoders), trained together, saved and loaded
    as one checkpoint.

    ``evaluate(x_cf, x_f, y_f, y_cf)`` returns per-pair arrays ``cld``, ``div``, ``p_cf``,
    ``p_f``, ``im1``, ``im2``.
    """

    KIND = "CounterfactualMetrics"

    def __init__(self, num_classes: int = 10, shape: Sequence[int] = (1, 28, 28), *,
                 latent_dim: int = 20, ae_code_dim: int = 16,
                 im_value_range: tuple[float, float] = (-0.5, 0.5),
                 vae_channels: Sequence[int] = (32, 64, 128), vae_base_channels: int = 32,
                 ae_channels: Sequence[int] = (32, 64, 128), ae_base_channels: int = 32):
        self.num_classes = int(num_classes)
        self.shape = tuple(int(s) for s in shape)
        self.vae = ConvVAE(self.shape, latent_dim, channels=vae_channels,
                           base_channels=vae_base_channels)
        self.ims = IMAutoencoders(self.num_classes, self.shape, code_dim=ae_code_dim,
                                  value_range=im_value_range, channels=tuple(ae_channels),
                                  base_channels=int(ae_base_channels))
        self.config = {"num_classes": self.num_classes, "shape": list(self.shape),
                       "latent_dim": int(latent_dim), "ae_code_dim": int(ae_code_dim),
                       "im_value_range": [float(v) for v in im_value_range],
                       "vae_channels": [int(c) for c in vae_channels],
                       "vae_base_channels": int(vae_base_channels),
                       "ae_channels": [int(c) for c in ae_channels],
                       "ae_base_channels": int(ae_base_channels)}
        self.cld: CLD | None = None
        self.report: dict[str, Any] = {}

    def to(self, device) -> CounterfactualMetrics:
        self.vae.to(device)
        self.ims.to(device)
        return self

    def fit(self, images, labels, *, vae_steps: int = 2000, ae_class_steps: int = 600,
            ae_all_steps: int = 1500, batch_size: int = 64, seed: int = 0, device=None,
            progress: bool | None = None) -> dict[str, Any]:
        if device is not None:
            self.to(device)
        self.report["vae"] = self.vae.fit(images, steps=vae_steps, batch_size=2 * batch_size,
                                          seed=seed, progress=progress)
        self.report["autoencoders"] = self.ims.fit(images, labels, class_steps=ae_class_steps,
                                                   all_steps=ae_all_steps,
                                                   batch_size=batch_size, seed=seed,
                                                   progress=progress)
        self.set_reference(images, labels)
        return self.report

    def set_reference(self, images, labels) -> None:
        """The data set ``D`` of CLD's divergence sets (Eq. 9)."""
        self.cld = CLD(self.vae, images, labels)

    def evaluate(self, x_cf, x_f, y_f, y_cf) -> dict[str, np.ndarray]:
        if self.cld is None:
            raise RuntimeError("call fit() or set_reference() first")
        out = {k: v.detach().cpu().double().numpy() for k, v in self.cld(x_cf, x_f, y_f,
                                                                         y_cf).items()}
        out.update({k: v.detach().cpu().double().numpy()
                    for k, v in self.ims(x_cf, y_f, y_cf).items()})
        return out

    def save(self, path: str | os.PathLike) -> Path:
        from trainers.core import save_checkpoint

        payload = {"kind": self.KIND, "config": self.config,
                   "vae": {k: v.cpu() for k, v in self.vae.state_dict().items()},
                   "aes": {n: {k: v.cpu() for k, v in m.state_dict().items()}
                           for n, m in self.ims.modules().items()}}
        return save_checkpoint(path, payload)

    @classmethod
    def load(cls, path: str | os.PathLike, images=None, labels=None,
             device=None) -> CounterfactualMetrics:
        """Load a checkpoint of :meth:`save`; give the reference data set for CLD."""
        from trainers.core import load_checkpoint

        ck = load_checkpoint(path, map_location="cpu", kind=cls.KIND)
        c = dict(ck["config"])
        m = cls(c.pop("num_classes"), c.pop("shape"), **{
            k: (tuple(v) if isinstance(v, list) else v) for k, v in c.items()})
        m.vae.load_state_dict(ck["vae"])
        m.vae.eval()
        for n, mod in m.ims.modules().items():
            mod.load_state_dict(ck["aes"][n])
            mod.eval()
        if device is not None:
            m.to(device)
        if images is not None:
            m.set_reference(images, labels)
        return m
