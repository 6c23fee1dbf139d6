"""The papers' image datasets as SCM generators with exact discrete twins.

Every generator draws the discrete attributes (and the latent confounders) from an
:class:`hgraph.DiscreteSCM` -- the *attributes-only twin* -- and then renders the images from the
attributes. So the exact distribution of every discrete attribute (observational, interventional,
counterfactual) is known, and a generated image can be mapped back to its attributes by the
attribute classifiers of :mod:`whatifgan.metrics.images` to compute a TVD against the twin.

Rendering (vectorised; no per-image morphology at sampling time)
----------------------------------------------------------------
* *digit*: an embedded-MNIST image (:func:`whatifgan.data.mnist.load_mnist`) of that class, drawn
  uniformly from a :class:`DigitPool` of the split (``"train"``: 400 digits per class, ``"test"``:
  the 100 unseen ones per class, so held-out evaluations use unseen handwriting);
* *thickness*: the pool holds every base digit at each thickness level of :data:`THICKNESS_PX`
  (thin, regular, thick: target mean stroke widths 1.5, 3 and 5 px), made once per digit with the
  Morpho-MNIST rule of :func:`~whatifgan.data.morpho.set_thickness` (Castro et al. 2019, Sec. 3;
  dilate or erode the upscaled binary digit by ``|target - thickness| / 2``) and cached on disk;
* *colour*: the grey digit is copied into the RGB channels of :data:`PALETTE` (red, green, blue,
  yellow = R+G, magenta = R+B, cyan = G+B; ID-GEN Appendix F.2.2);
* *intensity*: the stroke intensity of Morpho-MNIST (:func:`~whatifgan.data.morpho.get_intensity`)
  set by rescaling (:func:`~whatifgan.data.morpho.set_intensity`, Pawlowski et al. 2020);
* 32 px images are the 28 px ones padded by 2 pixels on each side.

With a cached pool, 10,000 images take well under a second.

Datasets
--------
* :func:`frontdoor_colored_mnist` -- WhatIfGAN Section 5.1 / Appendix F.2 (front-door graph
  ``D -> I -> A, D <-> A``, 3x32x32 images whose colour is exogenous noise).
* :func:`napkin_mnist` -- ID-GEN Section 4.1 / Appendix F.2.1-F.2.2 (napkin graph over W1, W2, X,
  Y with latent colour and thickness, p-noise on every edge).
* :func:`colored_mnist2` -- WhatIfGAN Appendix F.4.1 (X1, X2, W, Y1, Y2, Color, Thick, Image1,
  Image2 with confounders U1, U2; observational, do(X1=0) and do(X1=1) datasets).
* :func:`morpho_mnist` -- Morpho-MNIST thickness -> intensity -> image (Pawlowski et al. 2020,
  discretised), for the probing experiment.

Each returns an :class:`ImageSCMData`: the :class:`~whatifgan.data.tabular.Dataset` objects
(columns: the graph's variables -- discrete codes and images uint8 ``[N, C, H, W]`` -- plus the
attribute codes of every image), the attributes-only :class:`~hgraph.DiscreteSCM`, the image-level
:class:`~hgraph.ADMG` and variable specs. ``data, scm = napkin_mnist(...)`` also works.

Caching
-------
Datasets are written to ``<cache_dir>/<name>/`` (``.npz`` per dataset, hidden variables in
``<dataset>.latents.npz``, and ``manifest.json`` with the generating config, its SHA-256 hash and
the seed). A later call with the same config loads the files; a changed config (any parameter,
including ``n`` and ``seed``) regenerates them. ``cache_dir=None`` uses ``$WHATIFGAN_CACHE`` or
``~/.cache/whatifgan``; ``cache_dir=False`` keeps everything in memory. Digit pools are cached in
``<cache_dir>/pools/``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tempfile
import warnings
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hgraph import ADMG, DiscreteSCM

from .mnist import load_mnist
from .morpho import ImageMorphology, _apply_thickness_delta
from .tabular import Dataset

__all__ = [
    "COLOR_NAMES",
    "DigitPool",
    "GENERATORS",
    "INTENSITY_LEVELS",
    "ImageAttribute",
    "ImageSCMData",
    "PALETTE",
    "THICKNESS_NAMES",
    "THICKNESS_PX",
    "colored_mnist2",
    "colored_mnist2_scm",
    "clear_pool_cache",
    "colorize",
    "config_hash",
    "default_cache_dir",
    "digit_pool",
    "frontdoor_colored_mnist",
    "frontdoor_scm",
    "generate",
    "load_image_scm",
    "morpho_mnist",
    "morpho_scm",
    "napkin_mnist",
    "napkin_scm",
    "noisy_mechanism",
    "pad_to",
    "stroke_intensity",
    "thickness_variants",
]

#: Bumped whenever generated files would change for the same config (part of every hash).
FORMAT_VERSION = 1

#: The six colours of Napkin-MNIST (ID-GEN Appendix F.2.1), codes 0..5.
COLOR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")
#: Channel mask of each colour code: the digit is copied into the active RGB channels.
PALETTE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.uint8)
#: Thickness codes 0..2 of Napkin-MNIST (ID-GEN Appendix F.2.1).
THICKNESS_NAMES = ("thin", "regular", "thick")
#: Target mean stroke width (px, Morpho-MNIST thickness) of each thickness code.
THICKNESS_PX = (1.5, 3.0, 5.0)
#: Stroke intensities (0..255) of the intensity codes of :func:`morpho_mnist`.
INTENSITY_LEVELS = (100.0, 175.0, 250.0)

SIZES = (28, 32)


# ============================================================================= discrete mechanisms
def noisy_mechanism(table, k: int, p: float, inner: Sequence[float] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Response-function form of ``V := eta_p(g(pa, e), S)`` with ``|S| = k`` (ID-GEN App. F.2.1).

    ``eta_p(v, S)`` keeps ``v`` with probability ``1 - p`` and is uniform over ``S`` otherwise
    ("with probability p the information passed along is chosen uniformly at random").
    ``table`` holds ``g`` with shape ``(parent cards...)``, or ``(parent cards..., m)`` when ``g``
    also depends on an inner exogenous choice ``e`` with probabilities ``inner`` (length ``m``).
    Returns ``(functions, noise)`` for :class:`hgraph.DiscreteSCM` (noise values of probability
    zero are dropped).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"noise probability p must be in [0, 1], got {p}")
    g = np.asarray(table, dtype=np.int64)
    if inner is None:
        g, q_in = g[..., None], np.ones(1)
    else:
        q_in = np.asarray(inner, dtype=float)
        if g.shape[-1] != q_in.size:
            raise ValueError(f"table's last axis ({g.shape[-1]}) must match the {q_in.size} inner noise values")
    if g.size and (g.min() < 0 or g.max() >= k):
        raise ValueError(f"mechanism table takes values outside 0..{k - 1}")
    pa_shape = g.shape[:-1]
    unif = np.broadcast_to(np.arange(k, dtype=np.int64), pa_shape + (k,))
    f = np.concatenate([g, unif], axis=-1)
    q = np.concatenate([(1.0 - p) * q_in, np.full(k, p / k)])
    keep = q > 0
    return np.ascontiguousarray(f[..., keep]), q[keep] / q[keep].sum()


class _SCMBuilder:
    """Collects variables in response-function form and builds a :class:`DiscreteSCM`."""

    def __init__(self):
        self.cards: dict[str, int] = {}
        self.parents: dict[str, list[str]] = {}
        self.functions: dict[str, np.ndarray] = {}
        self.noise: dict[str, np.ndarray] = {}
        self.hidden: list[str] = []

    def root(self, name: str, prior: Sequence[float], hidden: bool = False) -> None:
        prior = np.asarray(prior, dtype=float)
        self.cards[name] = prior.size
        self.parents[name] = []
        self.functions[name] = np.arange(prior.size)
        self.noise[name] = prior / prior.sum()
        if hidden:
            self.hidden.append(name)

    def noisy(self, name: str, k: int, parents: Sequence[str], g: Callable[..., int], p: float,
              inner: Sequence[float] | None = None) -> None:
        """``name := eta_p(g(*parents[, e]), 0..k-1)``; ``g`` takes the parents' codes (and the
        inner noise value ``e`` when ``inner`` is given)."""
        pcards = [self.cards[q] for q in parents]
        m = None if inner is None else len(inner)
        shape = tuple(pcards) + (() if m is None else (m,))
        table = np.zeros(shape, dtype=np.int64)
        for idx in itertools.product(*[range(s) for s in shape]):
            table[idx] = int(g(*idx))
        f, q = noisy_mechanism(table, k, p, inner)
        self.cards[name] = int(k)
        self.parents[name] = list(parents)
        self.functions[name] = f
        self.noise[name] = q

    def build(self) -> DiscreteSCM:
        return DiscreteSCM(self.cards, self.parents, self.functions, self.noise, hidden=self.hidden)


def _uniform(k: int) -> np.ndarray:
    return np.full(int(k), 1.0 / int(k))


# ----------------------------------------------------------------------------- the four twins
def frontdoor_scm(p: float = 0.1, p_d: float = 0.2, u_prob: float = 0.5, n_digits: int = 2,
                  n_colors: int = 3, p_image: float = 0.0) -> DiscreteSCM:
    """Attributes-only twin of the front-door Colored-MNIST (WhatIfGAN Section 5.1, Appendix F.2).

    ``U ~ Bernoulli(u_prob)`` (hidden, the paper's ``U_0``); ``D := eta_{p_d}(U * (n_digits-1))``
    (``D = U_0 + e_1``); the image ``I`` shows digit ``I_digit := eta_{p_image}(D)`` (default:
    exactly ``D``) in colour ``I_color ~ U{0..n_colors-1}`` (exogenous ``e_2``); and
    ``A := eta_p([ [2 I_digit >= n_digits] + U + [I_color = 0] >= 2 ])``: A is on when at least two
    of "the digit is in the upper half of the digit set", "U = 1", "the image is red" hold (the
    paper's ``A = f_3(Image, e_3, U_0)``, a fixed function of the image's attributes instead of a
    random classifier, so the ground truth is exact). Defaults give
    ``P(A=1 | do(D)) = (0.2, 0.65)`` vs ``P(A=1 | D) = (0.08, 0.89)``: the backdoor path and the
    causal path are both strong, as F.2 asks.
    """
    if n_digits < 2 or n_colors < 1:
        raise ValueError("frontdoor_scm needs n_digits >= 2 and n_colors >= 1")
    b = _SCMBuilder()
    b.root("U", [1.0 - u_prob, u_prob], hidden=True)
    b.noisy("D", n_digits, ["U"], lambda u: u * (n_digits - 1), p_d)
    b.noisy("I_digit", n_digits, ["D"], lambda d: d, p_image)
    b.root("I_color", _uniform(n_colors))
    b.noisy("A", 2, ["I_digit", "I_color", "U"],
            lambda d, c, u: int(int(2 * d >= n_digits) + u + int(c == 0) >= 2), p)
    return b.build()


def _restrict_color(c: int) -> int:
    """ID-GEN App. F.2.1: ``R(c) = red`` for red, green, blue and ``green`` otherwise (codes 0/1)."""
    return 0 if c < 3 else 1


def napkin_scm(p: float = 0.1) -> DiscreteSCM:
    """Attributes-only twin of Napkin-MNIST (ID-GEN Appendix F.2.1, "discrete case").

    Hidden ``Color ~ U(6)`` and ``Thickness ~ U(3)``; ``W1 = (U(digits), eta(Color),
    eta(Thickness))``; ``W2 = (eta(W1.digit), eta(R(W1.color)))`` with ``R`` the restriction to
    {red, green}; ``X = (eta(W2.digit), eta(W2.color), eta(Thickness))`` (X's colour takes only
    the codes 0 = red, 1 = green); ``Y = (eta(X.digit), eta(Color), eta(X.thickness))``; every
    ``eta = eta_p``. Observed variables ``W1_digit, W1_color, W1_thick, W2_digit, W2_color,
    X_digit, X_color, X_thick, Y_digit, Y_color, Y_thick``.

    The joint over all 11 observed attributes has 7.8e7 cells (too big for ``joint()``); the
    model is separable into digits, colours and thicknesses, so use ``prob`` on the variables of
    a query (milliseconds).
    """
    b = _SCMBuilder()
    b.root("Color", _uniform(6), hidden=True)
    b.root("Thickness", _uniform(3), hidden=True)
    ident = lambda v: v  # noqa: E731
    b.root("W1_digit", _uniform(10))
    b.noisy("W1_color", 6, ["Color"], ident, p)
    b.noisy("W1_thick", 3, ["Thickness"], ident, p)
    b.noisy("W2_digit", 10, ["W1_digit"], ident, p)
    b.noisy("W2_color", 2, ["W1_color"], _restrict_color, p)
    b.noisy("X_digit", 10, ["W2_digit"], ident, p)
    b.noisy("X_color", 2, ["W2_color"], ident, p)
    b.noisy("X_thick", 3, ["Thickness"], ident, p)
    b.noisy("Y_digit", 10, ["X_digit"], ident, p)
    b.noisy("Y_color", 6, ["Color"], ident, p)
    b.noisy("Y_thick", 3, ["X_thick"], ident, p)
    return b.build()


def colored_mnist2_scm(p: float = 0.25, u1_prior: Sequence[float] | None = None,
                       u2_prior: Sequence[float] | None = None) -> DiscreteSCM:
    """Attributes-only twin of Colored-MNIST-2 (WhatIfGAN Appendix F.4.1), in discrete form.

    Every relation carries ``p`` (25%) uniform noise, as in the paper, so all outcomes have
    positive probability:

    * ``U1 in {0,1}``, ``U2 in {0,1,2}`` hidden (uniform priors by default; F.4.1 draws them from
      a Dirichlet, see ``u_alpha`` of :func:`colored_mnist2`);
    * ``X1 := eta(U1)`` (binary, ``X1 = U1 + e``);
    * ``X2 := eta(U2 + 3 X1 (1 + U1))`` in 0..8: in 0..2 when ``X1 = 0`` and in 3..8 when
      ``X1 = 1``, confounded with X1 through U1, and ``X2 % 3 = U2`` without noise (F.4.3 reads
      ``Color = X2 % 3`` off the confounder);
    * ``W := eta(X1 + X2)`` in 0..9;
    * ``Y1 := eta(floor(W^2 / 10))``, ``Y2 := eta(W^2 % 10)`` in 0..9 (the digits of ``W^2``);
    * ``Color := eta(U2)`` in {0: red, 1: green, 2: blue};
    * ``Thick := eta(min(floor(floor(W^2 / 10) / 2), 1))`` in {0: thin, 1: thick}.
    """
    b = _SCMBuilder()
    b.root("U1", _uniform(2) if u1_prior is None else u1_prior, hidden=True)
    b.root("U2", _uniform(3) if u2_prior is None else u2_prior, hidden=True)
    b.noisy("X1", 2, ["U1"], lambda u1: u1, p)
    b.noisy("X2", 9, ["X1", "U1", "U2"], lambda x1, u1, u2: u2 + 3 * x1 * (1 + u1), p)
    b.noisy("W", 10, ["X1", "X2"], lambda x1, x2: min(x1 + x2, 9), p)
    b.noisy("Color", 3, ["U2"], lambda u2: u2, p)
    b.noisy("Y1", 10, ["W"], lambda w: (w * w) // 10, p)
    b.noisy("Y2", 10, ["W"], lambda w: (w * w) % 10, p)
    b.noisy("Thick", 2, ["W"], lambda w: min(((w * w) // 10) // 2, 1), p)
    return b.build()


def morpho_scm(p: float = 0.25, thickness_prior: Sequence[float] | None = None,
               n_thickness: int = 3, n_intensity: int = 3) -> DiscreteSCM:
    """Attributes-only twin of Morpho-MNIST thickness -> intensity -> image (Pawlowski et al.
    2020, discretised): ``Digit ~ U(10)``, ``Thickness ~ thickness_prior`` (uniform),
    ``Intensity := eta_p(round(Thickness * (n_intensity-1) / (n_thickness-1)))``: thicker digits
    are brighter, as in ``i = 191 sigmoid(0.5 e + 2 t - 5) + 64``."""
    b = _SCMBuilder()
    b.root("Digit", _uniform(10))
    b.root("Thickness", _uniform(n_thickness) if thickness_prior is None else thickness_prior)
    if b.cards["Thickness"] != n_thickness:
        raise ValueError(f"thickness_prior has {b.cards['Thickness']} values for {n_thickness} levels")
    scale = (n_intensity - 1) / max(n_thickness - 1, 1)
    b.noisy("Intensity", n_intensity, ["Thickness"], lambda t: int(round(t * scale)), p)
    return b.build()


# ============================================================================= digit pools
def default_cache_dir() -> Path:
    """``$WHATIFGAN_CACHE``, else ``$XDG_CACHE_HOME/whatifgan``, else ``~/.cache/whatifgan``."""
    env = os.environ.get("WHATIFGAN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "whatifgan"


def _cache_root(cache_dir) -> Path | None:
    if cache_dir is False:
        return None
    return default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config`` (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def thickness_variants(image: np.ndarray, targets: Sequence[float], refine: int = 0
                       ) -> tuple[list[np.ndarray], float]:
    """The digit at each target thickness (px), and its own measured thickness.

    The rule of :func:`~whatifgan.data.morpho.set_thickness` (Castro et al. 2019, Sec. 3;
    Pawlowski et al. 2020): with ``delta = target - thickness`` dilate (``delta > 0``) or erode
    the upscaled binary digit by a disk of radius ``|delta| / 2``, then downscale; computed for
    all targets from one morphology (about 3x faster than calling ``set_thickness`` per target).
    ``refine`` corrections re-measure and re-apply as ``set_thickness`` does. Without refinement
    (default) the measured thickness of the results is about 1.8 / 2.9 / 5.0 px (median over
    digits) for targets 1.5 / 3 / 5 px; the three levels do not overlap.
    """
    morph = ImageMorphology(image)
    t0 = morph.mean_thickness
    if not np.isfinite(t0):
        return [np.asarray(image, dtype=np.uint8).copy() for _ in targets], float("nan")
    outs = []
    for tgt in targets:
        delta = float(tgt) - t0
        out = morph.downscale(_apply_thickness_delta(morph, delta))
        best, best_err = out, None
        for _ in range(int(refine)):
            t = ImageMorphology(out).mean_thickness
            err = float(tgt) - t if np.isfinite(t) else np.inf
            if best_err is None or abs(err) < best_err:
                best, best_err = out, abs(err)
            if not np.isfinite(err) or abs(err) <= 0.05:
                break
            delta += err
            out = morph.downscale(_apply_thickness_delta(morph, delta))
        outs.append(best)
    return outs, float(t0)


def stroke_intensity(images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Vectorised :func:`~whatifgan.data.morpho.get_intensity` over ``[N, H, W]``: median of the
    pixels at or above ``threshold`` of each image's range (NaN for blank images)."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    mask = (x >= lo + (hi - lo) * threshold) & (hi > lo)
    with warnings.catch_warnings():  # all-NaN rows (blank images) give NaN quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.where(mask, x, np.nan), axis=1)


def _pool_chunk(args):
    images, levels, refine = args
    out = np.empty((len(levels), len(images), 28, 28), dtype=np.uint8)
    t0 = np.empty(len(images))
    for i, img in enumerate(images):
        vs, t0[i] = thickness_variants(img, levels, refine)
        for j, v in enumerate(vs):
            out[j, i] = v
    return out, t0


@dataclass
class DigitPool:
    """Base MNIST digits and their thickness variants, from which images are rendered.

    ``original``: uint8 ``[M, 28, 28]``; ``images``: uint8 ``[L, M, 28, 28]``, the digits at each
    thickness level ``levels[l]`` (px); ``labels``: int64 ``[M]``; ``thickness``: measured
    thickness of the originals; ``intensity``: stroke intensity ``[L + 1, M]`` (row 0 the
    originals).
    """

    original: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    levels: tuple[float, ...]
    thickness: np.ndarray
    intensity: np.ndarray
    key: dict = field(default_factory=dict)

    def __post_init__(self):
        self.by_class = [np.flatnonzero(self.labels == c) for c in range(10)]

    def __len__(self) -> int:
        return len(self.labels)

    def draw(self, digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniformly random pool index of each requested digit class (vectorised per class)."""
        digits = np.asarray(digits, dtype=np.int64)
        idx = np.empty(len(digits), dtype=np.int64)
        for c in np.unique(digits):
            pos = np.flatnonzero(digits == c)
            members = self.by_class[int(c)] if 0 <= c < 10 else np.empty(0, np.int64)
            if members.size == 0:
                raise ValueError(f"the digit pool has no image of class {int(c)}")
            idx[pos] = members[rng.integers(members.size, size=pos.size)]
        return idx

    def gray(self, index: np.ndarray, level: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``[N, 28, 28]``: pool digits ``index`` at thickness ``level`` (None: original)."""
        if level is None:
            return self.original[index]
        level = np.asarray(level, dtype=np.int64)
        if level.size and (level.min() < 0 or level.max() >= len(self.levels)):
            raise ValueError(f"thickness level outside 0..{len(self.levels) - 1}")
        return self.images[level, index]

    def stroke(self, index: np.ndarray, level: np.ndarray | None = None) -> np.ndarray:
        """Stroke intensity of the images :meth:`gray` returns."""
        row = np.zeros(len(index), dtype=np.int64) if level is None else np.asarray(level) + 1
        return self.intensity[row, index]


_POOLS: dict[str, DigitPool] = {}


def clear_pool_cache() -> None:
    """Forget the digit pools held in memory (the files in ``<cache_dir>/pools/`` stay)."""
    _POOLS.clear()


def digit_pool(source: str | os.PathLike = "embedded", split: str = "train",
               levels: Sequence[float] = THICKNESS_PX, per_class: int | None = None,
               refine: int = 0, cache_dir=None, workers: int = 1,
               progress: bool | None = None, rebuild: bool = False) -> DigitPool:
    """The :class:`DigitPool` of an MNIST split: ``per_class`` digits of each class (all by
    default; the first ones of the split's seeded order) at every thickness of ``levels``.

    Building costs about 10 ms per digit per core (one Morpho-MNIST morphology plus a dilation or
    erosion per level; ``levels=()`` needs none); the result is cached in memory and in
    ``<cache_dir>/pools/``. ``workers > 1`` builds in parallel processes; ``rebuild`` ignores
    both caches (and refreshes them).
    """
    levels = tuple(float(v) for v in levels)
    src = "embedded" if source in (None, "embedded") else str(Path(source).expanduser().resolve())
    key = {"format": FORMAT_VERSION, "source": src, "split": split, "levels": list(levels),
           "per_class": per_class, "refine": int(refine)}
    h = config_hash(key)[:20]
    if h in _POOLS and not rebuild:
        return _POOLS[h]
    root = _cache_root(cache_dir)
    path = None if root is None else root / "pools" / f"pool_{split}_{h}.npz"
    if path is not None and path.is_file() and not rebuild:
        try:
            with np.load(path, allow_pickle=False) as z:
                pool = DigitPool(z["original"], z["images"], z["labels"], levels, z["thickness"],
                                 z["intensity"], key)
            _POOLS[h] = pool
            return pool
        except Exception:  # a corrupt file is rebuilt
            pass
    images, labels = load_mnist(source, split=split)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"digit pools need 28x28 MNIST digits, got {images.shape[1:]}")
    if per_class is not None:
        keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:int(per_class)] for c in range(10)]))
        images, labels = images[keep], labels[keep]
    m = len(images)
    out = np.empty((len(levels), m, 28, 28), dtype=np.uint8)
    t0 = np.full(m, np.nan)
    if levels:
        from trainers.core import ProgressBar

        chunk = 64
        jobs = [(images[a:a + chunk], levels, refine) for a in range(0, m, chunk)]
        bar = ProgressBar(m, desc=f"digit pool ({split}, {len(levels)} thickness levels)", enabled=progress)
        try:
            if workers and workers > 1:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                ctx = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(max_workers=int(workers), mp_context=ctx) as ex:
                    results = []
                    for r in ex.map(_pool_chunk, jobs):
                        results.append(r)
                        bar.update(len(r[1]))
            else:
                results = []
                for job in jobs:
                    results.append(_pool_chunk(job))
                    bar.update(len(job[0]))
        finally:
            bar.close()
        a = 0
        for imgs, th in results:
            out[:, a:a + len(th)] = imgs
            t0[a:a + len(th)] = th
            a += len(th)
    inten = np.stack([stroke_intensity(images)] + [stroke_intensity(out[j]) for j in range(len(levels))])
    pool = DigitPool(images, out, labels.astype(np.int64), levels, t0, inten, key)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        os.close(fd)
        np.savez_compressed(tmp, original=images, images=out, labels=pool.labels, thickness=t0, intensity=inten)
        os.replace(tmp, path)
    _POOLS[h] = pool
    return pool


# ============================================================================= rendering
def colorize(gray: np.ndarray, colors: np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Grey digits ``[N, H, W]`` -> uint8 ``[N, 3, H, W]`` with the digit copied into the active
    channels of ``palette[colors]`` (ID-GEN Appendix F.2.2)."""
    mask = np.asarray(palette, dtype=np.uint8)[np.asarray(colors, dtype=np.int64)]  # [N, 3]
    return np.asarray(gray, dtype=np.uint8)[:, None, :, :] * mask[:, :, None, None]


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``[..., 28, 28]`` images to ``size`` x ``size`` (centred)."""
    h = images.shape[-1]
    if size == h:
        return images
    if size < h or (size - h) % 2:
        raise ValueError(f"cannot pad {h}px images to {size}px")
    d = (size - h) // 2
    pad = [(0, 0)] * (images.ndim - 2) + [(d, d), (d, d)]
    return np.pad(images, pad)


def _scale_intensity(gray: np.ndarray, current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Vectorised :func:`~whatifgan.data.morpho.set_intensity`: multiply each image by
    ``target / current`` and clip to 0..255."""
    f = np.where(np.isfinite(current) & (current > 0), target / np.where(current > 0, current, 1), 1.0)
    return np.clip(np.rint(gray.astype(np.float32) * f[:, None, None].astype(np.float32)), 0, 255).astype(np.uint8)


# ============================================================================= results
@dataclass(frozen=True)
class ImageAttribute:
    """A discrete attribute rendered into an image variable.

    ``column``: the attribute's column / twin-SCM variable (e.g. ``"X_color"``); ``kind``:
    ``"digit"``, ``"color"``, ``"thickness"`` or ``"intensity"``; ``classes[code]``: the class
    (in the attribute classifier's output space: digit 0-9, :data:`PALETTE` index, thickness
    level, intensity level) that code ``code`` is rendered as; ``n_classes``: size of that space.
    """

    column: str
    kind: str
    classes: tuple[int, ...]
    n_classes: int

    def codes(self, predicted_classes: np.ndarray) -> np.ndarray:
        """Classifier classes -> attribute codes; classes that no code renders to give ``-1``."""
        lut = np.full(self.n_classes, -1, dtype=np.int64)
        for code, c in enumerate(self.classes):
            lut[c] = code
        return lut[np.asarray(predicted_classes, dtype=np.int64)]

    def to_config(self) -> dict:
        return {"column": self.column, "kind": self.kind, "classes": list(self.classes),
                "n_classes": self.n_classes}


@dataclass
class ImageSCMData:
    """Generated datasets with their exact discrete twin.

    Attributes:
        kind: generator name (a key of :data:`GENERATORS`).
        datasets: ``name -> Dataset`` (``"obs"`` first, then the interventional ones).
        scm: the attributes-only :class:`hgraph.DiscreteSCM` (exact ground truth).
        graph: the image-level :class:`hgraph.ADMG` (images as single nodes).
        variables: :class:`~whatifgan.variables.VariableSet` of the graph's nodes (images with
            ``value_range=(-1, 1)``, the range of tanh generators).
        attributes: ``image variable -> {kind: ImageAttribute}``.
        latents: ``dataset name -> {hidden variable or rendering detail: array}`` (the values of
            the SCM's hidden variables, and ``<image>_base``, the pool index of each image).
        interventions: ``dataset name -> {variable: code}``.
        config, config_hash: the generating config and its hash (as in the manifest).
        path: the cache folder (None when not cached).
    """

    kind: str
    datasets: dict[str, Dataset]
    scm: DiscreteSCM
    graph: ADMG
    variables: Any
    attributes: dict[str, dict[str, ImageAttribute]]
    latents: dict[str, dict[str, np.ndarray]]
    interventions: dict[str, dict[str, int]]
    config: dict
    config_hash: str
    path: Path | None = None
    manifest: dict = field(default_factory=dict)

    @property
    def dataset(self) -> Dataset:
        """The observational dataset (the first one)."""
        return next(iter(self.datasets.values()))

    def __iter__(self) -> Iterator:
        """``dataset, scm = generator(...)``."""
        return iter((self.dataset, self.scm))

    @property
    def image_variables(self) -> list[str]:
        return list(self.attributes)

    def attribute_columns(self) -> list[str]:
        return [a.column for attrs in self.attributes.values() for a in attrs.values()]

    def graph_dataset(self, name: str | None = None) -> Dataset:
        """The dataset restricted to the image-level graph's nodes (and its targets)."""
        ds = self.datasets[name] if name is not None else self.dataset
        return ds.subset([v for v in self.graph.nodes if v in ds.columns])

    def variant(self, name: str | None = None, **changes) -> "ImageSCMData":
        """The same generator with some parameters changed (e.g. ``split="test"``, ``n=2000``,
        ``seed=1`` for held-out data), cached next to this one."""
        params = dict(self.config.get("params", {}))
        params.update(changes)
        root = None if self.path is None else self.path.parent
        return generate(self.kind, cache_dir=False if root is None else root, name=name, **params)

    def __repr__(self) -> str:
        sizes = {k: len(v) for k, v in self.datasets.items()}
        return (f"ImageSCMData(kind={self.kind!r}, datasets={sizes}, graph={self.graph.to_string()!r}, "
                f"hash={self.config_hash[:12]}, path={str(self.path) if self.path else None!r})")


# ============================================================================= generator specs
def _image_var(name: str, channels: int, size: int):
    from whatifgan.variables import Image

    return Image(name, (channels, size, size), value_range=(-1.0, 1.0))


class _Spec:
    """One dataset family: its twin SCM, image-level graph and rendering."""

    name: str
    graph_text: str
    channels: int = 3
    default_size: int = 28
    uses_thickness = True
    defaults: dict = {}
    default_interventions: dict = {}

    def scm(self, prm) -> DiscreteSCM:
        raise NotImplementedError

    def discrete_vars(self, prm) -> dict[str, int]:
        """Categorical graph nodes and their cardinalities."""
        raise NotImplementedError

    def attributes(self, prm) -> dict[str, dict[str, ImageAttribute]]:
        raise NotImplementedError

    def render(self, attrs, pool: DigitPool, rng, prm) -> tuple[dict, dict]:
        """``-> (image columns uint8 [N, C, 28, 28], extra latents)``."""
        raise NotImplementedError

    def columns(self, attrs, prm) -> dict[str, np.ndarray]:
        """Discrete graph-node columns and attribute columns from the twin's samples."""
        out = {v: attrs[v] for v in self.discrete_vars(prm) if v in attrs}
        for a in itertools.chain.from_iterable(d.values() for d in self.attributes(prm).values()):
            out[a.column] = attrs[a.column]
        return out

    def variables(self, prm, size):
        from whatifgan.variables import Categorical, VariableSet

        g = ADMG.load(self.graph_text)
        disc = self.discrete_vars(prm)
        out = []
        for v in g.nodes:
            out.append(Categorical(v, disc[v]) if v in disc else _image_var(v, self.channels, size))
        return VariableSet(out)


def _thick_n(prm) -> int:
    return len(prm.get("thickness_px", THICKNESS_PX))


class _Frontdoor(_Spec):
    name = "frontdoor"
    graph_text = "D -> I; I -> A; D <-> A"
    default_size = 32
    uses_thickness = False
    defaults = {"p": 0.1, "p_d": 0.2, "u_prob": 0.5, "digits": [0, 1], "n_colors": 3, "p_image": 0.0}

    def scm(self, prm):
        return frontdoor_scm(prm["p"], prm["p_d"], prm["u_prob"], len(prm["digits"]), prm["n_colors"],
                             prm["p_image"])

    def discrete_vars(self, prm):
        return {"D": len(prm["digits"]), "A": 2}

    def attributes(self, prm):
        return {"I": {"digit": ImageAttribute("I_digit", "digit", tuple(int(d) for d in prm["digits"]), 10),
                      "color": ImageAttribute("I_color", "color", tuple(range(prm["n_colors"])), 6)}}

    def render(self, attrs, pool, rng, prm):
        digits = np.asarray(prm["digits"], dtype=np.int64)[attrs["I_digit"]]
        base = pool.draw(digits, rng)
        return {"I": colorize(pool.gray(base), attrs["I_color"])}, {"I_base": base}


class _Napkin(_Spec):
    name = "napkin"
    graph_text = "W1 -> W2; W2 -> X; X -> Y; W1 <-> X; W1 <-> Y"
    defaults = {"p": 0.1}

    def scm(self, prm):
        return napkin_scm(prm["p"])

    def discrete_vars(self, prm):
        return {"W2": 20}

    def attributes(self, prm):
        t = tuple(range(_thick_n(prm)))
        out = {}
        for v, ncol in (("W1", 6), ("X", 2), ("Y", 6)):
            out[v] = {"digit": ImageAttribute(f"{v}_digit", "digit", tuple(range(10)), 10),
                      "color": ImageAttribute(f"{v}_color", "color", tuple(range(ncol)), 6),
                      "thickness": ImageAttribute(f"{v}_thick", "thickness", t[:3], len(t))}
        return out

    def columns(self, attrs, prm):
        out = {"W2": 2 * attrs["W2_digit"] + attrs["W2_color"],
               "W2_digit": attrs["W2_digit"], "W2_color": attrs["W2_color"]}
        out.update(super().columns(attrs, prm))
        return out

    def render(self, attrs, pool, rng, prm):
        b_w1 = pool.draw(attrs["W1_digit"], rng)
        b_x = pool.draw(attrs["X_digit"], rng)
        # ID-GEN App. F.2.2: Y re-uses X's base image unless the noise changed the digit
        b_y = np.where(attrs["Y_digit"] == attrs["X_digit"], b_x, pool.draw(attrs["Y_digit"], rng))
        imgs = {"W1": colorize(pool.gray(b_w1, attrs["W1_thick"]), attrs["W1_color"]),
                "X": colorize(pool.gray(b_x, attrs["X_thick"]), attrs["X_color"]),
                "Y": colorize(pool.gray(b_y, attrs["Y_thick"]), attrs["Y_color"])}
        return imgs, {"W1_base": b_w1, "X_base": b_x, "Y_base": b_y}


class _ColoredMNIST2(_Spec):
    name = "colored_mnist2"
    graph_text = ("X1 -> X2; X1 -> W; X2 -> W; W -> Y1; W -> Y2; W -> Thick; Y1 -> Image1; "
                  "Color -> Image1; Thick -> Image1; Y2 -> Image2; Color -> Image2; Thick -> Image2; "
                  "X1 <-> X2; X2 <-> Color")
    defaults = {"p": 0.25, "u_alpha": None}
    default_interventions = {"do_X1_0": {"X1": 0}, "do_X1_1": {"X1": 1}}

    def _priors(self, prm):
        if prm.get("u_alpha") is None:
            return None, None
        rng = np.random.default_rng([int(prm["seed"]), 12345])
        a = float(prm["u_alpha"])
        return rng.dirichlet(np.full(2, a)), rng.dirichlet(np.full(3, a))

    def scm(self, prm):
        u1, u2 = self._priors(prm)
        return colored_mnist2_scm(prm["p"], u1, u2)

    def discrete_vars(self, prm):
        return {"X1": 2, "X2": 9, "W": 10, "Color": 3, "Y1": 10, "Y2": 10, "Thick": 2}

    def attributes(self, prm):
        nt = _thick_n(prm)
        thick = ImageAttribute("Thick", "thickness", (0, nt - 1), nt)
        color = ImageAttribute("Color", "color", (0, 1, 2), 6)
        return {"Image1": {"digit": ImageAttribute("Y1", "digit", tuple(range(10)), 10), "color": color,
                           "thickness": thick},
                "Image2": {"digit": ImageAttribute("Y2", "digit", tuple(range(10)), 10), "color": color,
                           "thickness": thick}}

    def render(self, attrs, pool, rng, prm):
        level = np.where(attrs["Thick"] == 1, len(pool.levels) - 1, 0)
        b1 = pool.draw(attrs["Y1"], rng)
        b2 = pool.draw(attrs["Y2"], rng)
        return ({"Image1": colorize(pool.gray(b1, level), attrs["Color"]),
                 "Image2": colorize(pool.gray(b2, level), attrs["Color"])},
                {"Image1_base": b1, "Image2_base": b2})


class _Morpho(_Spec):
    name = "morpho"
    graph_text = "Thickness -> Intensity; Thickness -> Image; Intensity -> Image; Digit -> Image"
    channels = 1
    defaults = {"p": 0.25, "thickness_prior": None, "intensity_levels": list(INTENSITY_LEVELS)}

    def scm(self, prm):
        return morpho_scm(prm["p"], prm["thickness_prior"], _thick_n(prm), len(prm["intensity_levels"]))

    def discrete_vars(self, prm):
        return {"Digit": 10, "Thickness": _thick_n(prm), "Intensity": len(prm["intensity_levels"])}

    def attributes(self, prm):
        nt, ni = _thick_n(prm), len(prm["intensity_levels"])
        return {"Image": {"digit": ImageAttribute("Digit", "digit", tuple(range(10)), 10),
                          "thickness": ImageAttribute("Thickness", "thickness", tuple(range(nt)), nt),
                          "intensity": ImageAttribute("Intensity", "intensity", tuple(range(ni)), ni)}}

    def columns(self, attrs, prm):
        return {v: attrs[v] for v in ("Digit", "Thickness", "Intensity")}

    def render(self, attrs, pool, rng, prm):
        base = pool.draw(attrs["Digit"], rng)
        gray = pool.gray(base, attrs["Thickness"])
        target = np.asarray(prm["intensity_levels"], dtype=np.float64)[attrs["Intensity"]]
        img = _scale_intensity(gray, pool.stroke(base, attrs["Thickness"]), target)
        return {"Image": img[:, None]}, {"Image_base": base}


#: Generator name -> spec (the ``kind`` of :func:`generate`).
GENERATORS: dict[str, _Spec] = {s.name: s for s in (_Frontdoor(), _Napkin(), _ColoredMNIST2(), _Morpho())}


# ============================================================================= generation + cache
_COMMON = ("n", "n_interventional", "seed", "split", "size", "source", "pool_per_class", "thickness_px",
           "interventions", "refine")


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return v


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)


def generate(kind: str, *, n: int = 10_000, n_interventional: int | None = None, seed: int = 0,
             split: str = "train", size: int | None = None, source: str | os.PathLike = "embedded",
             pool_per_class: int | None = None, thickness_px: Sequence[float] = THICKNESS_PX, refine: int = 0,
             interventions: Mapping[str, Mapping[str, int]] | None = None, cache_dir=None,
             name: str | None = None, regenerate: bool = False, progress: bool | None = None,
             workers: int = 1, **params) -> ImageSCMData:
    """Generate (or load from the cache) the datasets of generator ``kind``.

    Args:
        kind: ``"frontdoor"``, ``"napkin"``, ``"colored_mnist2"`` or ``"morpho"``.
        n: rows of the observational dataset; ``n_interventional``: rows of each interventional
            dataset (default ``n``).
        seed: seed of everything random (attributes, base-digit choice).
        split: MNIST split the base digits come from (``"train"``, ``"test"``, ``"all"``).
        size: 28 or 32 px (default: 32 for the front-door data, as in the paper; 28 otherwise).
        source: ``"embedded"`` or a path to full MNIST (see :func:`~whatifgan.data.mnist.load_mnist`).
        pool_per_class: base digits per class (default: all of the split).
        thickness_px: target stroke widths of the thickness codes; ``refine``: extra
            ``set_thickness`` corrections per digit.
        interventions: ``{dataset name: {twin variable: code}}`` (default: the paper's, e.g.
            do(X1=0) and do(X1=1) for Colored-MNIST-2; none otherwise).
        cache_dir: cache folder (None: :func:`default_cache_dir`; False: no files).
        name: sub-folder of the cache (default ``kind``, with ``_<split>`` unless ``"train"``).
        regenerate: ignore a cached copy.
        progress: progress bars (None: when stderr is a terminal).
        workers: processes building a new digit pool.
        **params: generator parameters (see the public generator functions).
    """
    if kind not in GENERATORS:
        raise ValueError(f"unknown image dataset {kind!r}; known: {sorted(GENERATORS)}")
    spec = GENERATORS[kind]
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise TypeError(f"{kind}: unknown parameter(s) {unknown}; known: {sorted(spec.defaults)} and {list(_COMMON)}")
    size = spec.default_size if size is None else int(size)
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    prm = {**{k: _jsonable(v) for k, v in spec.defaults.items()}, **_jsonable(dict(params))}
    prm["seed"] = int(seed)
    if spec.uses_thickness:
        prm["thickness_px"] = [float(t) for t in thickness_px]
    ivs = spec.default_interventions if interventions is None else interventions
    ivs = {str(k): {str(v): int(c) for v, c in d.items()} for k, d in ivs.items()}
    src = "embedded" if source in (None, "embedded") else str(Path(source).expanduser().resolve())
    common = {"n": int(n), "n_interventional": None if n_interventional is None else int(n_interventional),
              "seed": int(seed), "split": split, "size": size, "source": src,
              "pool_per_class": None if pool_per_class is None else int(pool_per_class),
              "interventions": ivs, "refine": int(refine)}
    if spec.uses_thickness:
        common["thickness_px"] = prm["thickness_px"]
    gen_params = {k: v for k, v in prm.items() if k not in ("seed", "thickness_px")}
    config = {"kind": kind, "format": FORMAT_VERSION, **common, "params": gen_params}
    h = config_hash(config)
    config["params"] = {**gen_params, **common}  # what variant() re-uses (not part of the hash)
    scm = spec.scm(prm)
    for ds, do in ivs.items():
        for v, c in do.items():
            if v not in scm.nodes:
                raise ValueError(f"intervention {ds!r}: {v!r} is not an observed variable of the twin "
                                 f"SCM {list(scm.nodes)}")
            if not 0 <= c < scm.cards[v]:
                raise ValueError(f"intervention {ds!r}: code {c} of {v!r} outside 0..{scm.cards[v] - 1}")
    graph = ADMG.load(spec.graph_text)
    variables = spec.variables(prm, size)
    attributes = spec.attributes(prm)
    root = _cache_root(cache_dir)
    folder = None
    if root is not None:
        folder = root / _safe(name or (kind if split == "train" else f"{kind}_{split}"))
    plan = {"obs": {}}
    plan.update(ivs)
    if folder is not None and not regenerate:
        loaded = _load_cached(folder, h, plan)
        if loaded is not None:
            datasets, latents, manifest = loaded
            return ImageSCMData(kind, datasets, scm, graph, variables, attributes, latents, ivs, config, h,
                                folder, manifest)
    t_start = time.perf_counter()
    pool = digit_pool(source, split, thickness_px if spec.uses_thickness else (), pool_per_class, refine,
                      cache_dir=cache_dir, workers=workers, progress=progress)
    datasets, latents = {}, {}
    for i, (ds_name, do) in enumerate(plan.items()):
        rows = common["n"] if i == 0 or n_interventional is None else int(n_interventional)
        ss = np.random.SeedSequence([int(seed), i])
        rng_attr, rng_img = (np.random.default_rng(s) for s in ss.spawn(2))
        attrs = scm.sample(rows, do=do or None, seed=rng_attr, hidden=True)
        cols = spec.columns(attrs, prm)
        images, extra = _render_chunked(spec, attrs, pool, rng_img, prm, size, rows, progress, ds_name)
        cols = {**{v: cols[v] for v in cols}, **images}
        order = [v for v in graph.nodes if v in cols] + [v for v in cols if v not in graph.nodes]
        meta = {"kind": kind, "config_hash": h, "seed": int(seed), "do": do}
        datasets[ds_name] = Dataset(ds_name, {v: cols[v] for v in order}, tuple(do), meta)
        latents[ds_name] = {**{v: attrs[v] for v in scm.hidden}, **extra}
    seconds = time.perf_counter() - t_start
    manifest = {"kind": kind, "config": config, "config_hash": h, "seed": int(seed),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(seconds, 3),
                "pool": pool.key, "graph": graph.to_string(),
                "attributes": {v: {k: a.to_config() for k, a in d.items()} for v, d in attributes.items()},
                "datasets": {}}
    if folder is not None:
        _save(folder, datasets, latents, plan, manifest)
    return ImageSCMData(kind, datasets, scm, graph, variables, attributes, latents, ivs, config, h, folder,
                        manifest)


def _render_chunked(spec, attrs, pool, rng, prm, size, rows, progress, ds_name):
    """Render in chunks of 8192 rows behind a progress bar; pad to ``size``."""
    from trainers.core import ProgressBar

    chunk = 8192
    parts_img: dict[str, list] = {}
    parts_ext: dict[str, list] = {}
    bar = ProgressBar(rows, desc=f"rendering {spec.name}/{ds_name}", enabled=progress)
    try:
        for a in range(0, rows, chunk):
            sub = {k: v[a:a + chunk] for k, v in attrs.items()}
            imgs, ext = spec.render(sub, pool, rng, prm)
            for k, v in imgs.items():
                parts_img.setdefault(k, []).append(pad_to(v, size))
            for k, v in ext.items():
                parts_ext.setdefault(k, []).append(v)
            bar.update(min(chunk, rows - a))
    finally:
        bar.close()
    return ({k: np.concatenate(v) for k, v in parts_img.items()},
            {k: np.concatenate(v) for k, v in parts_ext.items()})


def _save(folder: Path, datasets, latents, plan, manifest) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    old = folder / "manifest.json"
    if old.is_file():  # a stale copy: remove its files first
        try:
            prev = json.loads(old.read_text())
            for entry in prev.get("datasets", {}).values():
                for key in ("file", "latents"):
                    f = folder / entry.get(key, "")
                    if f.is_file() and f.parent == folder:
                        f.unlink()
        except Exception:
            pass
        old.unlink()
    for ds_name, ds in datasets.items():
        fname = f"{_safe(ds_name)}.npz"
        lname = f"{_safe(ds_name)}.latents.npz"
        ds.save(folder / fname)
        tmp = folder / (lname + ".tmp.npz")
        np.savez_compressed(tmp, **latents[ds_name])
        tmp.replace(folder / lname)
        manifest["datasets"][ds_name] = {"file": fname, "latents": lname, "n": len(ds), "do": plan[ds_name]}
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, folder / "manifest.json")  # written last: its presence means the files are complete


def _load_cached(folder: Path, h: str, plan) -> tuple | None:
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        return None
    try:
        manifest = json.loads(mpath.read_text())
    except Exception:
        return None
    if manifest.get("config_hash") != h or list(manifest.get("datasets", {})) != list(plan):
        return None
    datasets, latents = {}, {}
    try:
        for ds_name, entry in manifest["datasets"].items():
            datasets[ds_name] = Dataset.load(folder / entry["file"])
            with np.load(folder / entry["latents"], allow_pickle=False) as z:
                latents[ds_name] = {k: z[k] for k in z.files}
    except Exception:
        return None
    return datasets, latents, manifest


def load_image_scm(path: str | os.PathLike) -> ImageSCMData:
    """Reload a cached dataset folder (rebuilding the twin SCM from its manifest's config)."""
    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"no manifest.json in {path}; generate the data first")
    manifest = json.loads(mpath.read_text())
    prm = dict(manifest["config"]["params"])
    kind = manifest["kind"]
    return generate(kind, cache_dir=path.parent, name=path.name, **{
        k: v for k, v in prm.items() if k in _COMMON or k in GENERATORS[kind].defaults})


# ============================================================================= public generators
def frontdoor_colored_mnist(n: int = 10_000, *, p: float = 0.1, p_d: float = 0.2, u_prob: float = 0.5,
                            digits: Sequence[int] = (0, 1), n_colors: int = 3, p_image: float = 0.0,
                            size: int = 32, **common) -> ImageSCMData:
    """Front-door Colored-MNIST of WhatIfGAN Section 5.1 / Appendix F.2: ``D -> I -> A``, ``D <-> A``.

    ``D`` indexes ``digits`` (binary 0/1 by default), ``I`` is a ``3 x size x size`` image of digit
    ``digits[D]`` in an exogenous colour (red, green, blue), ``A`` a noisy attribute of the image
    (digit and colour) and of the hidden ``U``; twin: :func:`frontdoor_scm`. Columns ``D, I, A``
    and the attributes ``I_digit, I_color``. ``common``: see :func:`generate`.
    """
    return generate("frontdoor", n=n, size=size, p=p, p_d=p_d, u_prob=u_prob, digits=list(digits),
                    n_colors=n_colors, p_image=p_image, **common)


def napkin_mnist(n: int = 10_000, *, p: float = 0.1, size: int = 28, **common) -> ImageSCMData:
    """Napkin-MNIST of ID-GEN Section 4.1 / Appendix F.2.1-F.2.2 (6 colours, 3 thicknesses, p-noise
    on every edge). Graph ``W1 -> W2 -> X -> Y``, ``W1 <-> X`` (latent thickness), ``W1 <-> Y``
    (latent colour). Columns: images ``W1, X, Y``; ``W2 = 2 * W2_digit + W2_color`` (20 states)
    and its parts; the attributes ``{W1,X,Y}_{digit,color,thick}``. Twin: :func:`napkin_scm`
    (hidden ``Color``, ``Thickness`` in ``latents``). ``common``: see :func:`generate`.
    """
    return generate("napkin", n=n, size=size, p=p, **common)


def colored_mnist2(n: int = 10_000, *, p: float = 0.25, n_interventional: int | None = None,
                   u_alpha: float | None = None, size: int = 28, **common) -> ImageSCMData:
    """Colored-MNIST-2 of WhatIfGAN Appendix F.4.1 (graph ``configs/graphs/colored_mnist2.yaml``):
    datasets ``"obs"`` ~ P(V), ``"do_X1_0"`` ~ P_{X1=0}(V), ``"do_X1_1"`` ~ P_{X1=1}(V).

    ``Image1`` shows digit ``Y1`` and ``Image2`` digit ``Y2``, both in colour ``Color`` (R, G, B)
    and thickness ``Thick`` (thin, thick: the first and last of ``thickness_px``). ``u_alpha``:
    draw the priors of U1, U2 from Dirichlet(u_alpha) (seeded by ``seed``) as in F.4.1; default
    uniform. Twin: :func:`colored_mnist2_scm`. ``common``: see :func:`generate`.
    """
    return generate("colored_mnist2", n=n, n_interventional=n_interventional, size=size, p=p,
                    u_alpha=u_alpha, **common)


def morpho_mnist(n: int = 10_000, *, p: float = 0.25, thickness_prior: Sequence[float] | None = None,
                 intensity_levels: Sequence[float] = INTENSITY_LEVELS, size: int = 28,
                 **common) -> ImageSCMData:
    """Morpho-MNIST thickness -> intensity -> image (Pawlowski et al. 2020, discretised; after
    Castro et al. 2019): ``Digit``, ``Thickness`` (thin/regular/thick), ``Intensity`` (stroke
    intensity ``intensity_levels``) and a 1-channel ``Image``. Twin: :func:`morpho_scm`.
    ``common``: see :func:`generate`.
    """
    return generate("morpho", n=n, size=size, p=p,
                    thickness_prior=None if thickness_prior is None else list(thickness_prior),
                    intensity_levels=list(intensity_levels), **common)
