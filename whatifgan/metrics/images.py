"""Image metrics: attribute classifiers, images -> discrete attributes (TVD against exact twins),
and FID with features from a network trained locally on the dataset.

Attribute classifiers (ID-GEN Section 4.1 and Appendix F.2.2/F.2.4: "we employ a classifier to map
all generated images to discrete analogues (Digit, Color, Thickness) and compute exact
likelihoods"; WhatIfGAN Appendix F.4.3 reads digits, colour and thickness off generated images the
same way): one small CNN per attribute kind (``digit``, ``color``, ``thickness``, ``intensity``),
trained with :class:`trainers.ClassifierTrainer` on the images of an
:class:`~whatifgan.data.image_scms.ImageSCMData` and their attribute labels, evaluated on held-out
images rendered from *unseen* MNIST digits (the embedded test split), temperature-calibrated, and
cached on disk keyed by the dataset's manifest hash (and the training settings).

:func:`image_attributes` maps generated images to the attribute codes of the twin SCM, so the TVD
of any image query against the exact discrete ground truth is :func:`attribute_tvd`; e.g. for
Napkin-MNIST's ``P(Y | do(X = a red, regular 3))``::

    clf = train_attribute_classifiers(data)                      # once; cached
    codes = image_attributes({"Y": generated_y}, data, clf)      # generator outputs in [-1, 1]
    truth = data.scm.prob(["Y_color"], do={"X_digit": 3, "X_color": 0, "X_thick": 1})
    attribute_tvd(codes, truth)

FID (Heusel et al. 2017) here is **not** Inception FID: the features are the penultimate layer
(``feature_dim`` = 128 ReLU units) of the digit classifier trained on the dataset itself, as the
papers' MNIST evaluations do with a locally trained network. Values are comparable only between
models evaluated with the same classifiers (same dataset hash), not with published Inception FIDs.
:func:`fid_per_class` computes it per digit class.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hgraph import Factor

__all__ = [
    "AttributeCNN",
    "AttributeClassifiers",
    "attribute_distribution",
    "attribute_tvd",
    "feature_statistics",
    "fid",
    "fid_per_class",
    "frechet_distance",
    "image_attributes",
    "train_attribute_classifiers",
]

KINDS = ("digit", "color", "thickness", "intensity")


# ============================================================================= network
class AttributeCNN(nn.Module):
    """Small CNN classifier: three stride-2 3x3 convolutions (BatchNorm, ReLU; 28/32 px -> 4x4),
    a ``feature_dim`` ReLU layer (the FID features) and a linear layer to the logits."""

    def __init__(self, in_channels: int, n_classes: int, *, channels: Sequence[int] = (32, 64, 128),
                 feature_dim: int = 128, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        c = int(in_channels)
        for w in channels:
            layers += [nn.Conv2d(c, int(w), 3, stride=2, padding=1), nn.BatchNorm2d(int(w)), nn.ReLU()]
            c = int(w)
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(c * 16, feature_dim), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(feature_dim, int(n_classes))
        self.in_channels, self.n_classes, self.feature_dim = int(in_channels), int(n_classes), int(feature_dim)
        self.config = {"in_channels": int(in_channels), "n_classes": int(n_classes),
                       "channels": [int(w) for w in channels], "feature_dim": int(feature_dim),
                       "dropout": float(dropout)}

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer activations ``(B, feature_dim)`` (used for FID)."""
        return self.fc(self.trunk(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(self.features(x)))


def _to_input(images, value_range: tuple[float, float] | None = None, channels: int | None = None) -> Tensor:
    """uint8 ``[N, C, H, W]`` (0..255) or floats in ``value_range`` -> float tensor in [-1, 1]."""
    t = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
    if t.dim() == 3:
        t = t[:, None]
    if t.dim() == 2 and channels is not None:  # flat rows
        side = int(round((t.shape[1] / channels) ** 0.5))
        t = t.reshape(t.shape[0], channels, side, side)
    if t.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(t.shape)}")
    if channels is not None and t.shape[1] != channels:
        raise ValueError(f"the classifiers take {channels}-channel images, got {t.shape[1]} channels")
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 127.5 - 1.0
    lo, hi = (-1.0, 1.0) if value_range is None else (float(value_range[0]), float(value_range[1]))
    t = t.to(torch.float32)
    if (lo, hi) != (-1.0, 1.0):
        t = (t - lo) / (hi - lo) * 2.0 - 1.0
    return t


def _shift_augment(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Random integer translations (per sample, up to ``max_shift`` px, zero fill): exact pixel
    shifts via ``grid_sample`` at integer offsets."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    s = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator).to(x.device, x.dtype)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * s[:, 0] / w
    theta[:, 1, 2] = -2.0 * s[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1.0, grid, mode="nearest", padding_mode="zeros", align_corners=False) - 1.0


# ============================================================================= classifiers
@dataclass
class AttributeClassifiers:
    """Trained attribute classifiers of one dataset.

    ``models[kind]``: an :class:`AttributeCNN` (eval mode); ``temperatures[kind]``: calibration
    temperature; ``accuracy[kind]``: held-out accuracy; ``info``: dataset hash, training settings,
    timings, per-kind held-out sizes; ``path``: cache folder.
    """

    models: dict[str, AttributeCNN]
    temperatures: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def kinds(self) -> list[str]:
        return list(self.models)

    @property
    def channels(self) -> int:
        return next(iter(self.models.values())).in_channels

    @property
    def device(self) -> torch.device:
        return next(next(iter(self.models.values())).parameters()).device

    def to(self, device) -> "AttributeClassifiers":
        for m in self.models.values():
            m.to(device)
        return self

    def _model(self, kind: str) -> AttributeCNN:
        if kind not in self.models:
            raise KeyError(f"no {kind!r} classifier; trained: {self.kinds}")
        return self.models[kind]

    @torch.no_grad()
    def _run(self, fn, images, value_range, batch_size) -> np.ndarray:
        x = _to_input(images, value_range, self.channels)
        dev = self.device
        out = []
        for a in range(0, x.shape[0], batch_size):
            out.append(fn(x[a:a + batch_size].to(dev)).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0,))

    def logits(self, images, kind: str, *, value_range=(-1.0, 1.0), batch_size: int = 512) -> np.ndarray:
        m = self._model(kind)
        m.eval()
        return self._run(m, images, value_range, batch_size)

    def predict_proba(self, images, kind: str, *, value_range=(-1.0, 1.0), batch_size: int = 512) -> np.ndarray:
        """Calibrated class probabilities ``softmax(logits / T)`` ``[N, n_classes]``."""
        z = torch.as_tensor(self.logits(images, kind, value_range=value_range, batch_size=batch_size))
        return torch.softmax(z / self.temperatures.get(kind, 1.0), dim=1).numpy()

    def predict(self, images, kind: str, *, value_range=(-1.0, 1.0), batch_size: int = 512) -> np.ndarray:
        """Predicted classes (digit 0-9, palette colour, thickness level, intensity level)."""
        z = self.logits(images, kind, value_range=value_range, batch_size=batch_size)
        return z.argmax(axis=1).astype(np.int64)

    def features(self, images, kind: str = "digit", *, value_range=(-1.0, 1.0), batch_size: int = 512) -> np.ndarray:
        """Penultimate-layer features ``[N, feature_dim]`` of the ``kind`` classifier (FID)."""
        m = self._model(kind)
        m.eval()
        return self._run(m.features, images, value_range, batch_size).astype(np.float64)

    def attributes(self, images, attributes: Mapping[str, Any], *, value_range=(-1.0, 1.0),
                   batch_size: int = 512) -> dict[str, np.ndarray]:
        """Codes of the attributes ``{kind: ImageAttribute}`` of one image variable (``-1`` for a
        predicted class that no code renders to, e.g. blue for Napkin's red/green X)."""
        out = {}
        for kind, attr in attributes.items():
            if kind in self.models:
                out[attr.column] = attr.codes(self.predict(images, kind, value_range=value_range,
                                                           batch_size=batch_size))
        return out

    # -------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for k, m in self.models.items():
            tmp = path / f"{k}.pt.tmp"
            torch.save({"config": m.config, "state_dict": {n: t.cpu() for n, t in m.state_dict().items()}}, tmp)
            os.replace(tmp, path / f"{k}.pt")
        meta = {"kinds": self.kinds, "temperatures": self.temperatures, "accuracy": self.accuracy, "info": self.info}
        tmp = path / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1, default=str))
        os.replace(tmp, path / "meta.json")  # last: its presence means the weights are complete
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = "cpu") -> "AttributeClassifiers":
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise FileNotFoundError(f"no trained attribute classifiers in {path} (meta.json missing)")
        meta = json.loads((path / "meta.json").read_text())
        models = {}
        for k in meta["kinds"]:
            ck = torch.load(path / f"{k}.pt", map_location=map_location, weights_only=True)
            cfg = dict(ck["config"])
            m = AttributeCNN(cfg.pop("in_channels"), cfg.pop("n_classes"), **cfg)
            m.load_state_dict(ck["state_dict"])
            m.eval()
            models[k] = m
        return cls(models, {k: float(v) for k, v in meta.get("temperatures", {}).items()},
                   {k: float(v) for k, v in meta.get("accuracy", {}).items()}, meta.get("info", {}), path)


def _labelled_images(data, kind: str, max_images: int | None, rng: np.random.Generator):
    """All images of ``data`` with their ``kind`` class labels (over every dataset and image variable)."""
    imgs, labels = [], []
    for ds in data.datasets.values():
        for var, attrs in data.attributes.items():
            if kind in attrs and var in ds.columns:
                a = attrs[kind]
                imgs.append(ds.columns[var])
                labels.append(np.asarray(a.classes, dtype=np.int64)[ds.columns[a.column]])
    if not imgs:
        return None, None, 0
    n_classes = max(a[kind].n_classes for a in data.attributes.values() if kind in a)
    x, y = np.concatenate(imgs), np.concatenate(labels)
    if max_images is not None and len(x) > max_images:
        keep = np.sort(rng.choice(len(x), size=int(max_images), replace=False))
        x, y = x[keep], y[keep]
    return x, y, n_classes


def train_attribute_classifiers(data, *, kinds: Sequence[str] | None = None, held_out=None, steps: int = 2000,
                                batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 1e-4,
                                max_images: int | None = 60_000, held_out_n: int = 2000, augment: int = 2,
                                channels: Sequence[int] = (32, 64, 128), feature_dim: int = 128, seed: int = 0,
                                device: str | torch.device | None = None, cache_dir=None, retrain: bool = False,
                                progress: bool | None = None) -> AttributeClassifiers:
    """Train (or load from the cache) one :class:`AttributeCNN` per attribute kind of ``data``.

    Args:
        data: an :class:`~whatifgan.data.image_scms.ImageSCMData`; all its datasets' images are used.
        kinds: attribute kinds to train (default: every kind of ``data.attributes`` among digit,
            color, thickness, intensity).
        held_out: held-out :class:`ImageSCMData` for the reported accuracy and the temperature;
            ``None``: ``data.variant(split="test", n=held_out_n, seed=seed + 1000)``, images of
            the MNIST test split (unseen handwriting); ``False``: the last 10% of the rows.
        steps, batch_size, lr, weight_decay: Adam training (:class:`trainers.ClassifierTrainer`).
        max_images: cap on training images per kind (random subset).
        augment: random translations of up to ``augment`` px (digit classifier only).
        cache_dir: cache root (default as for the datasets; ``False``: no files). The folder is
            ``<cache_dir>/classifiers/<kind>-<manifest hash>-<settings hash>/``.
        retrain: ignore a cached copy.

    On a shared CPU, ``torch.set_num_threads(1)`` is often much faster than several threads for
    these small networks (measured: 60 ms vs 630 ms per step of 128 images on two busy cores).
    """
    from trainers import ClassifierTrainer, TensorDictLoader
    from trainers.core import resolve_device
    from whatifgan.data.image_scms import _cache_root, config_hash

    present = [k for k in KINDS if any(k in a for a in data.attributes.values())]
    kinds = present if kinds is None else list(kinds)
    bad = [k for k in kinds if k not in present]
    if bad:
        raise ValueError(f"dataset {data.kind!r} has no attribute(s) {bad}; it has {present}")
    settings = {"kinds": kinds, "steps": int(steps), "batch_size": int(batch_size), "lr": lr,
                "weight_decay": weight_decay, "max_images": max_images, "held_out_n": held_out_n,
                "augment": int(augment), "channels": list(channels), "feature_dim": int(feature_dim),
                "seed": int(seed), "held_out": ("split" if held_out is False else
                                                 "test_split" if held_out is None else held_out.config_hash)}
    root = _cache_root(cache_dir)
    folder = None
    if root is not None:
        folder = root / "classifiers" / f"{data.kind}-{data.config_hash[:16]}-{config_hash(settings)[:10]}"
        if not retrain and (folder / "meta.json").is_file():
            try:
                clf = AttributeClassifiers.load(folder)
                if device is not None:
                    clf.to(resolve_device(device))
                return clf
            except Exception:
                pass
    dev = resolve_device("auto" if device is None else device)
    if held_out is None:
        held_out = data.variant(split="test", n=held_out_n, seed=int(data.config.get("seed", 0)) + 1000 + seed)
    rng = np.random.default_rng(seed)
    models, temps, acc, info = {}, {}, {}, {"dataset": data.kind, "config_hash": data.config_hash,
                                            "settings": settings, "seconds": {}, "n_train": {}, "n_test": {}}
    for kind in kinds:
        t0 = time.perf_counter()
        x, y, n_classes = _labelled_images(data, kind, max_images, rng)
        if held_out is False:
            perm = rng.permutation(len(x))
            cut = max(1, len(x) // 10)
            xt, yt = x[perm[:cut]], y[perm[:cut]]
            x, y = x[perm[cut:]], y[perm[cut:]]
        else:
            xt, yt, _ = _labelled_images(held_out, kind, None, rng)
        torch.manual_seed(seed)
        model = AttributeCNN(x.shape[1], n_classes, channels=channels, feature_dim=feature_dim).to(dev)
        loader = TensorDictLoader({"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(y)},
                                  batch_size=min(batch_size, len(x)), seed=seed)
        test_loader = TensorDictLoader({"x": torch.from_numpy(np.ascontiguousarray(xt)), "y": torch.from_numpy(yt)},
                                       batch_size=min(1024, len(xt)), shuffle=False, drop_last=False)
        shift = int(augment) if kind == "digit" else 0
        gen = torch.Generator().manual_seed(seed)

        def train_input(batch, shift=shift, gen=gen):
            return _shift_augment(_to_input(batch["x"]), shift, gen)

        trainer = ClassifierTrainer(model, loader, input_fn=train_input, target_key="y", lr=lr,
                                    weight_decay=weight_decay, max_steps=int(steps), progress=progress,
                                    log_every=0)
        # the decayed learning rate of the last third improves held-out accuracy noticeably
        sched = torch.optim.lr_scheduler.OneCycleLR(trainer.optimizer, max_lr=lr, total_steps=int(steps),
                                                    pct_start=0.15)
        orig_step = trainer.train_step

        def step_with_schedule(orig_step=orig_step, sched=sched):
            m = orig_step()
            sched.step()
            return m

        trainer.train_step = step_with_schedule
        trainer.train()
        trainer.input_fn = lambda batch: _to_input(batch["x"])
        ev = trainer.evaluate(test_loader, temperature=1.0)
        temps[kind] = trainer.calibrate(test_loader)
        model.eval()
        models[kind] = model
        acc[kind] = ev["accuracy"]
        info["seconds"][kind] = round(time.perf_counter() - t0, 2)
        info["n_train"][kind], info["n_test"][kind] = int(len(x)), int(len(xt))
    clf = AttributeClassifiers(models, temps, acc, info)
    if folder is not None:
        clf.save(folder)
    return clf


# ============================================================================= attributes and TVD
def image_attributes(images: Mapping[str, Any], data, classifiers: AttributeClassifiers, *,
                     value_range=(-1.0, 1.0), batch_size: int = 512) -> dict[str, np.ndarray]:
    """Map generated images to the discrete attribute codes of the twin SCM.

    ``images``: ``{image variable: images}`` (uint8 or floats in ``value_range``, e.g. generator
    outputs in [-1, 1]); ``data``: the :class:`ImageSCMData` (or its ``attributes`` mapping).
    Returns ``{attribute column: codes}`` (``-1`` where the predicted class is no valid code), to
    be compared with ``data.scm`` by :func:`attribute_tvd`.
    """
    attrs = data.attributes if hasattr(data, "attributes") else data
    out = {}
    for var, x in images.items():
        if var not in attrs:
            raise KeyError(f"{var!r} is not an image variable of the dataset ({list(attrs)})")
        out.update(classifiers.attributes(x, attrs[var], value_range=value_range, batch_size=batch_size))
    return out


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def attribute_distribution(codes: Mapping[str, Any], vars: Sequence[str], cards: Mapping[str, int]) -> Factor:
    """Empirical distribution of ``vars`` over the codes ``0..k-1`` *plus one extra state* ``k``
    per variable collecting invalid predictions (code ``-1``)."""
    vars = list(vars)
    cols = []
    for v in vars:
        c = _np(codes[v]).astype(np.int64).reshape(-1)
        k = int(cards[v])
        if c.size and c.max() >= k:
            raise ValueError(f"codes of {v!r} exceed its {k} states")
        cols.append(np.where(c < 0, k, c))
    shape = tuple(int(cards[v]) + 1 for v in vars)
    n = len(cols[0])
    if n == 0:
        raise ValueError("no samples")
    table = np.bincount(np.ravel_multi_index(cols, shape), minlength=int(np.prod(shape))).reshape(shape) / n
    return Factor(vars, table)


def attribute_tvd(codes: Mapping[str, Any], truth: Factor, cards: Mapping[str, int] | None = None,
                  given: Sequence[str] = ()) -> float:
    """TVD between the attributes of generated images (codes from :func:`image_attributes`) and an
    exact distribution of the twin (``scm.prob(...)``, ``scm.joint(do=...)`` as a Factor).

    Invalid predictions (``-1``) form an extra state of probability zero under ``truth``, so they
    count fully. With ``given`` (``truth`` is conditional, e.g. ``P(Y_color | X_color)``) the TVD
    is averaged over the values of ``given`` that occur, weighted by their empirical frequency.
    """
    vars = list(truth.vars)
    cards = {v: truth.values.shape[i] for i, v in enumerate(vars)} if cards is None else dict(cards)
    emp = attribute_distribution(codes, vars, cards)
    pad = [(0, 1)] * len(vars)
    t = np.pad(truth.values, pad)
    if not given:
        return float(0.5 * np.abs(emp.values - t).sum())
    given = list(given)
    order = given + [v for v in vars if v not in given]
    axes = [vars.index(v) for v in order]
    e, t = np.transpose(emp.values, axes), np.transpose(t, axes)
    g = len(given)
    gshape = e.shape[:g]
    e = e.reshape(int(np.prod(gshape)), -1)
    t = t.reshape(int(np.prod(gshape)), -1)
    w = e.sum(axis=1)
    ok = w > 0
    cond = e[ok] / w[ok, None]
    per = 0.5 * np.abs(cond - t[ok]).sum(axis=1)
    return float((per * w[ok]).sum() / w[ok].sum())


# ============================================================================= FID
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``ddof=1``) of ``[N, d]`` features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors [N, d], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Heusel et al. 2017), with the usual
    ``eps`` diagonal offset when the product is singular."""
    import warnings

    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    s1, s2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1.dot(s2))
        if not np.isfinite(covmean).all():
            off = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(max(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean), 0.0))


def fid(real, fake, classifiers: AttributeClassifiers, *, kind: str = "digit", value_range=(-1.0, 1.0),
        batch_size: int = 512) -> float:
    """FID between two image sets with the penultimate features of the locally trained ``kind``
    classifier (not Inception FID; see the module docstring). uint8 images are read as 0..255,
    float images in ``value_range``."""
    f1 = classifiers.features(real, kind, value_range=value_range, batch_size=batch_size)
    f2 = classifiers.features(fake, kind, value_range=value_range, batch_size=batch_size)
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


def fid_per_class(real, fake, classifiers: AttributeClassifiers, *, real_labels=None, fake_labels=None,
                  kind: str = "digit", value_range=(-1.0, 1.0), min_count: int = 10,
                  batch_size: int = 512) -> dict[str, Any]:
    """FID per class of ``kind`` (digit by default).

    Labels default to the classifier's predictions on each set. Classes with fewer than
    ``min_count`` images in either set are skipped. Returns ``{"per_class": {class: fid},
    "mean": mean over classes, "counts": {class: (n_real, n_fake)}}``.
    """
    f1 = classifiers.features(real, kind, value_range=value_range, batch_size=batch_size)
    f2 = classifiers.features(fake, kind, value_range=value_range, batch_size=batch_size)
    m = classifiers._model(kind)
    with torch.no_grad():
        def pred(f):
            return m.out(torch.as_tensor(f, dtype=torch.float32, device=classifiers.device)).argmax(1).cpu().numpy()
        y1 = pred(f1) if real_labels is None else _np(real_labels).astype(np.int64)
        y2 = pred(f2) if fake_labels is None else _np(fake_labels).astype(np.int64)
    per, counts = {}, {}
    for c in sorted(set(np.unique(y1).tolist()) | set(np.unique(y2).tolist())):
        a, b = f1[y1 == c], f2[y2 == c]
        counts[int(c)] = (int(len(a)), int(len(b)))
        if len(a) >= max(2, min_count) and len(b) >= max(2, min_count):
            per[int(c)] = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    return {"per_class": per, "mean": float(np.mean(list(per.values()))) if per else float("nan"),
            "counts": counts}
