"""Morpho-MNIST: morphometrics and perturbations of handwritten digits.

A reimplementation, with scikit-image and scipy.ndimage, of the measurement and perturbation
framework of

    D. C. Castro, J. Tan, B. Kainz, E. Konukoglu, B. Glocker. "Morpho-MNIST: Quantitative
    Assessment and Diagnostics for Representation Learning". JMLR 20(178), 2019
    (arXiv:1809.10780).

Section numbers below refer to that paper: Sec. 2 (morphometry: the processing pipeline and
the measurements) and Sec. 3 (perturbations: thinning/thickening, swelling, fractures). The
thickness-setting and intensity operations follow the Morpho-MNIST datasets of Pawlowski,
Castro & Glocker, "Deep Structural Causal Models for Tractable Counterfactual Inference"
(NeurIPS 2020; their Morpho-MNIST experiments), which build on the same pipeline.

Processing pipeline (Castro et al., Sec. 2, Fig. 2)
---------------------------------------------------
1. *Upscale* the 28x28 (or 32x32) image by ``scale`` (default 4) with bicubic interpolation
   after Gaussian anti-aliasing (``skimage.transform.pyramid_expand(order=3)``).
2. *Binarise* at ``threshold`` (default 0.5) of the image's intensity range: for an image
   spanning 0..255 this is intensity >= 127.5, i.e. the usual "128 of 255". The threshold is
   relative to the range so that measurements do not change when the intensity is rescaled
   (the thickness -> intensity -> image datasets rely on this).
3. *Skeletonise* with the medial axis (``skimage.morphology.medial_axis``) and keep its
   Euclidean *distance map* (distance of each foreground pixel to the background).
4. Perturbations act on the binary high-resolution image; the result is *downscaled* back
   (``pyramid_reduce(order=3)``) to a smooth uint8 image of the original size.

Measurements (Castro et al., Sec. 2), all in pixels of the original resolution
------------------------------------------------------------------------------
* ``area``: number of foreground pixels of the binarised image / scale**2.
* ``length``: skeleton length, summing 1 for each horizontal/vertical and sqrt(2) for each
  diagonal pair of adjacent skeleton pixels, / scale. Two artefacts of this definition make it
  read long on clean synthetic strokes: a band with an even number of high-resolution pixels
  has a zigzag medial axis (diagonal steps count sqrt 2; up to ~+25%), and a stroke end whose
  binarised cap is flat grows spurs into its corners (up to ~w/sqrt 2 each).
* ``thickness``: 2 x mean of the distance map along the skeleton / scale (mean stroke width).
  Because the distance is measured between pixel centres, a band of ``n`` high-resolution pixels
  has ``2*d = n + 1``: thickness carries a known bias of about +1/scale px (+0.25 px at scale 4).
* ``slant``: ``arctan(-u11 / u02)`` in radians, from the central second moments of the upscaled
  intensity image (x = column, y = row, rows pointing down). ``-u11/u02`` is the horizontal shear
  that best explains the image, so **positive slant = the top of the digit leans right**
  (like italics); an upright digit has slant 0.
* ``width``, ``height``: sides of the bounding parallelogram aligned with the slant that
  encloses ``1 - bound_frac`` (default 98%) of the image mass, trimming ``bound_frac/2`` on each
  side: the width is measured along the de-slanted horizontal axis, the height vertically.

Perturbations (Castro et al., Sec. 3)
--------------------------------------
``thin``/``thicken`` (erosion/dilation by a disk of radius ``amount * thickness / 2``),
``swell`` (a local radial magnification around a random skeleton point), ``fracture`` (thin
cuts across the stroke, perpendicular to the skeleton, at random skeleton points away from tips
and forks), and ``set_thickness``/``set_intensity``. All take a 2-D image with intensities in
0..255 (uint8 28x28 in the common case) and return the same dtype and shape; randomness comes
from an explicit ``numpy.random.Generator``.

Known differences from the reference implementation: morphological radii are real numbers
(erosion/dilation via the Euclidean distance transform; identical to a ``disk(r)`` footprint for
integer ``r``) instead of being truncated to integers; bicubic overshoot is clipped before
binarisation; the medial axis' tie-breaking is seeded, so measurements are deterministic; the
mass quantiles of the bounding parallelogram are computed exactly for pixels spread over unit
intervals instead of by interpolating a CDF on an integer grid.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage import draw, morphology, transform

__all__ = [
    "MEASUREMENTS",
    "ImageMoments",
    "ImageMorphology",
    "bounding_parallelogram",
    "fracture",
    "get_intensity",
    "measure",
    "medial_axis",
    "measure_batch",
    "measurements_table",
    "num_components",
    "scale_intensity",
    "set_intensity",
    "set_thickness",
    "swell",
    "thicken",
    "thin",
]

#: Names (and order) of the measurements returned by :func:`measure` and :func:`measure_batch`.
MEASUREMENTS = ("area", "length", "thickness", "slant", "width", "height")

DEFAULT_SCALE = 4
DEFAULT_THRESHOLD = 0.5
DEFAULT_BOUND_FRAC = 0.02

# Correlating the skeleton with this mask counts each adjacent pair once: right (1), down (1),
# down-left and down-right (sqrt 2). Castro et al., Sec. 2 (length).
_SKEL_LEN_MASK = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [np.sqrt(2.0), 1.0, np.sqrt(2.0)]])
_NB_MASK = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]])


# ============================================================================= image helpers
def _as_intensity(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"expected a single 2-D image [H, W], got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"expected a numeric image, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _restore(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Clip to 0..255 and cast to ``like``'s dtype (rounding for integers)."""
    like = np.asarray(like)
    values = np.clip(values, 0.0, 255.0)
    if np.issubdtype(like.dtype, np.integer):
        return np.rint(values).astype(like.dtype)
    if like.dtype == bool:
        return values >= 127.5
    return values.astype(like.dtype)


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        raise TypeError("pass an explicit numpy.random.Generator (or an int seed) as rng=")
    return np.random.default_rng(rng)


def _dilate(binary: np.ndarray, radius: float) -> np.ndarray:
    """Dilation by a Euclidean disk of real radius (== ``disk(r)`` footprint for integer r)."""
    if radius <= 0 or not binary.any():
        return binary.copy()
    return ndi.distance_transform_edt(~binary) <= radius


def _erode(binary: np.ndarray, radius: float) -> np.ndarray:
    """Erosion by a Euclidean disk of real radius; outside the image counts as background."""
    if radius <= 0 or not binary.any():
        return binary.copy()
    dist = ndi.distance_transform_edt(np.pad(binary, 1))[1:-1, 1:-1]
    return dist > radius


def num_components(image: np.ndarray, threshold: float = 127.5, connectivity: int = 2) -> int:
    """Connected components of ``image >= threshold`` (8-connected by default)."""
    structure = ndi.generate_binary_structure(2, connectivity)
    return int(ndi.label(np.asarray(image) >= threshold, structure=structure)[1])


# ============================================================================= medial axis
_MEDIAL_TABLES: tuple[np.ndarray, np.ndarray] | None = None


def _pattern(index: int) -> np.ndarray:
    return np.array([bool(index & (1 << b)) for b in range(9)]).reshape(3, 3)


def _medial_tables() -> tuple[np.ndarray, np.ndarray]:
    """The 3x3 lookup tables of ``skimage.morphology.medial_axis``, built once per process.

    keep[index]: the centre is foreground and removing it changes the number of 8-connected
    components, or the neighbourhood has fewer than 3 foreground pixels. cornerness[index]:
    number of background pixels in the neighbourhood (corners are processed last).
    skimage rebuilds both on every call, which costs ~20 ms, i.e. most of a measurement.
    """
    global _MEDIAL_TABLES
    if _MEDIAL_TABLES is None:
        eight = ndi.generate_binary_structure(2, 2)
        keep = np.zeros(512, dtype=np.uint8)
        corner = np.zeros(512, dtype=np.int64)
        for index in range(512):
            pat = _pattern(index)
            corner[index] = 9 - pat.sum()
            if not pat[1, 1]:
                continue
            without = pat.copy()
            without[1, 1] = False
            changes = ndi.label(pat, eight)[1] != ndi.label(without, eight)[1]
            keep[index] = changes or pat.sum() < 3
        _MEDIAL_TABLES = (keep, corner)
    return _MEDIAL_TABLES


def _neighbourhood_index(binary: np.ndarray) -> np.ndarray:
    """Index sum(2**k * pixel_k) of each pixel's 3x3 neighbourhood (k row-major, 0 outside)."""
    padded = np.pad(binary.astype(np.int64), 1)
    h, w = binary.shape
    index = np.zeros((h, w), dtype=np.int64)
    for k in range(9):
        di, dj = divmod(k, 3)
        index += padded[di : di + h, dj : dj + w] << k
    return index


def medial_axis(binary: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Medial axis and Euclidean distance map of a binary image (Castro et al., Sec. 2, skeletonisation).

    Same algorithm and result as ``skimage.morphology.medial_axis(binary, return_distance=True,
    rng=seed)`` (pixels removed in order of distance, then cornerness, ties broken by a seeded
    permutation), with the lookup tables cached across calls; falls back to skimage itself when
    its compiled inner loop cannot be imported.
    """
    binary = np.asarray(binary, dtype=bool)
    try:
        from skimage.morphology._skeletonize_various_cy import _skeletonize_loop
    except ImportError:  # pragma: no cover - depends on skimage internals
        skel, dist = morphology.medial_axis(binary, return_distance=True, rng=seed)
        return skel.astype(bool), dist
    keep, corner = _medial_tables()
    distance = ndi.distance_transform_edt(binary)
    if not binary.any():
        return binary.copy(), distance
    corner_score = corner[_neighbourhood_index(binary)]
    ii, jj = np.nonzero(binary)
    i = np.ascontiguousarray(ii, dtype=np.intp)
    j = np.ascontiguousarray(jj, dtype=np.intp)
    result = np.ascontiguousarray(binary, dtype=np.uint8)
    tiebreaker = np.random.default_rng(seed).permutation(np.arange(len(ii)))
    order = np.lexsort((tiebreaker, corner_score[ii, jj], distance[ii, jj]))
    _skeletonize_loop(result, i, j, np.ascontiguousarray(order, dtype=np.int32), keep)
    return result.astype(bool), distance


# ============================================================================= moments
class ImageMoments:
    """Centroid and central second moments of a non-negative image (x = column, y = row, down).

    ``horizontal_shear = u11 / u02`` (Castro et al., Sec. 2: slant = arctan(-u11/u02)).
    """

    def __init__(self, image: np.ndarray):
        img = np.asarray(image, dtype=np.float64)
        x = np.arange(img.shape[1], dtype=np.float64)[None, :]
        y = np.arange(img.shape[0], dtype=np.float64)[:, None]
        m00 = img.sum()
        self.m00 = float(m00)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.m10 = float((x * img).sum() / m00)
            self.m01 = float((y * img).sum() / m00)
            self.u20 = float(((x - self.m10) ** 2 * img).sum() / m00)
            self.u11 = float(((x - self.m10) * (y - self.m01) * img).sum() / m00)
            self.u02 = float(((y - self.m01) ** 2 * img).sum() / m00)

    @property
    def centroid(self) -> tuple[float, float]:
        """(x, y) = (column, row)."""
        return self.m10, self.m01

    @property
    def covariance(self) -> tuple[float, float, float]:
        return self.u20, self.u11, self.u02

    @property
    def angle(self) -> float:
        """Orientation of the principal axis in (x, y) coordinates, radians."""
        return 0.5 * float(np.arctan2(2.0 * self.u11, self.u20 - self.u02))

    @property
    def horizontal_shear(self) -> float:
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.float64(self.u11) / np.float64(self.u02))

    @property
    def slant(self) -> float:
        """arctan(-u11/u02), radians; positive = top leaning right (Castro et al., Sec. 2)."""
        return float(np.arctan(-self.horizontal_shear))


def _interval_quantiles(centres: np.ndarray, weights: np.ndarray, qs: Iterable[float]) -> np.ndarray:
    """Quantiles of the mass ``weights[i]`` spread uniformly over ``[centres[i] - .5, centres[i] + .5]``.

    The CDF is piecewise linear with knots at the interval ends; it is built exactly from the
    slope changes (+w at a left end, -w at a right end) and inverted by interpolation.
    """
    lo = centres - 0.5
    knots = np.concatenate([lo, lo + 1.0])
    dslope = np.concatenate([weights, -weights])
    order = np.argsort(knots, kind="stable")
    knots, dslope = knots[order], dslope[order]
    slope = np.cumsum(dslope)
    cdf = np.concatenate([[0.0], np.cumsum(slope[:-1] * np.diff(knots))])
    cdf /= cdf[-1]
    keep = np.concatenate([[True], np.diff(cdf) > 0])
    return np.interp(np.asarray(list(qs), dtype=np.float64), cdf[keep], knots[keep])


def bounding_parallelogram(image: np.ndarray, frac: float = DEFAULT_BOUND_FRAC,
                           moments: ImageMoments | None = None) -> np.ndarray:
    """Corners (x, y) of the slant-aligned parallelogram enclosing ``1 - frac`` of the image mass.

    Castro et al., Sec. 2 (width and height): the image is de-slanted with the moment shear
    about the centroid row (x' = x - shear * (y - y_c)); the left/right sides are the
    ``frac/2`` and ``1 - frac/2`` mass quantiles of x', the top/bottom those of y.
    Returns a [4, 2] array: top-left, top-right, bottom-right, bottom-left.
    """
    img = np.asarray(image, dtype=np.float64)
    if moments is None:
        moments = ImageMoments(img)
    rows, cols = np.nonzero(img > 0)
    w = img[rows, cols]
    if w.sum() <= 0:
        return np.full((4, 2), np.nan)
    shear = moments.horizontal_shear
    if not np.isfinite(shear):
        shear = 0.0
    y_mid = moments.centroid[1]
    x_desl = cols - shear * (rows - y_mid)
    half = frac / 2.0
    left, right = _interval_quantiles(x_desl, w, [half, 1.0 - half])
    top, bottom = _interval_quantiles(rows.astype(np.float64), w, [half, 1.0 - half])
    def corner(x, y):
        return [x + shear * (y - y_mid), y]
    return np.array([corner(left, top), corner(right, top), corner(right, bottom), corner(left, bottom)])


# ============================================================================= morphology
class ImageMorphology:
    """The processing pipeline of Castro et al., Sec. 2 (Fig. 2) for one image.

    Attributes:
        image: the input as float intensities (0..255), shape [H, W].
        scale: upscaling factor (default 4).
        threshold: binarisation level as a fraction of the upscaled image's intensity range.
        hires_image: upscaled intensities, float [H*scale, W*scale], clipped to 0..255.
        binary_image: ``hires_image >= min + threshold * (max - min)`` (all False for a blank image).
        skeleton: medial axis of ``binary_image`` (bool).
        distance_map: Euclidean distance of each foreground pixel to the background (hires px).
    """

    def __init__(self, image: np.ndarray, threshold: float = DEFAULT_THRESHOLD, scale: int = DEFAULT_SCALE,
                 *, skeleton_seed: int = 0):
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale = int(scale)
        self.threshold = float(threshold)
        self.image = _as_intensity(image)
        if self.scale > 1:
            up = transform.pyramid_expand(self.image / 255.0, upscale=self.scale, order=3, channel_axis=None)
            self.hires_image = np.clip(up * 255.0, 0.0, 255.0)
        else:
            self.hires_image = self.image.copy()
        lo, hi = self.hires_image.min(), self.hires_image.max()
        if hi > lo:
            self.binary_image = self.hires_image >= lo + (hi - lo) * self.threshold
        else:
            self.binary_image = np.zeros(self.hires_image.shape, dtype=bool)
        skel, dist = medial_axis(self.binary_image, seed=skeleton_seed)
        self.skeleton = skel
        self.distance_map = dist
        self._moments = None

    # -- measurements (Castro et al., Sec. 2)
    @property
    def moments(self) -> ImageMoments:
        if self._moments is None:
            self._moments = ImageMoments(self.hires_image)
        return self._moments

    @property
    def area(self) -> float:
        """Foreground pixels of the binarised image, in original-resolution pixels."""
        return float(self.binary_image.sum()) / self.scale ** 2

    @property
    def stroke_length(self) -> float:
        """Skeleton length (adjacent pairs: 1 straight, sqrt 2 diagonal) / scale."""
        skel = self.skeleton.astype(np.float64)
        conv = ndi.correlate(skel, _SKEL_LEN_MASK, mode="constant")
        return float(np.einsum("ij,ij->", conv, skel)) / self.scale

    @property
    def mean_thickness(self) -> float:
        """2 x mean distance along the skeleton / scale (NaN for a blank image)."""
        if not self.skeleton.any():
            return float("nan")
        return 2.0 * float(np.mean(self.distance_map[self.skeleton])) / self.scale

    @property
    def median_thickness(self) -> float:
        if not self.skeleton.any():
            return float("nan")
        return 2.0 * float(np.median(self.distance_map[self.skeleton])) / self.scale

    @property
    def slant(self) -> float:
        return self.moments.slant

    def downscale(self, hires: np.ndarray) -> np.ndarray:
        """High-resolution image (bool or float in [0, 1]) -> uint8 image of the original size."""
        hires = np.asarray(hires, dtype=np.float64)
        if self.scale > 1:
            down = transform.pyramid_reduce(hires, downscale=self.scale, order=3, channel_axis=None)
        else:
            down = hires
        return np.rint(np.clip(down, 0.0, 1.0) * 255.0).astype(np.uint8)


def measure(image: np.ndarray, threshold: float = DEFAULT_THRESHOLD, scale: int = DEFAULT_SCALE,
            bound_frac: float = DEFAULT_BOUND_FRAC, *, morph: ImageMorphology | None = None) -> dict[str, float]:
    """Morphometrics of one digit (Castro et al., Sec. 2).

    Returns ``dict(area, length, thickness, slant, width, height)``: pixels of the original
    resolution, slant in radians (positive = leaning right). A blank image gives area 0,
    length 0 and NaN for the rest.
    """
    if morph is None:
        morph = ImageMorphology(image, threshold=threshold, scale=scale)
    if not morph.binary_image.any():
        return dict(area=0.0, length=0.0, thickness=float("nan"), slant=float("nan"),
                    width=float("nan"), height=float("nan"))
    moments = morph.moments
    corners = bounding_parallelogram(morph.hires_image, bound_frac, moments)
    return dict(
        area=morph.area,
        length=morph.stroke_length,
        thickness=morph.mean_thickness,
        slant=moments.slant,
        width=float(corners[1][0] - corners[0][0]) / morph.scale,
        height=float(corners[3][1] - corners[0][1]) / morph.scale,
    )


def measure_batch(images: np.ndarray, threshold: float = DEFAULT_THRESHOLD, scale: int = DEFAULT_SCALE,
                  bound_frac: float = DEFAULT_BOUND_FRAC, *, progress: bool | None = None) -> dict[str, np.ndarray]:
    """:func:`measure` over a batch ``[N, H, W]``; returns a dict of float arrays [N] keyed by :data:`MEASUREMENTS`.

    ``progress``: show a tqdm bar (default: only for N >= 500). About 5 ms per 28x28 image at scale 4.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"expected images [N, H, W], got shape {images.shape}")
    n = len(images)
    out = {k: np.empty(n, dtype=np.float64) for k in MEASUREMENTS}
    it: Iterable = range(n)
    if progress is None:
        progress = n >= 500
    if progress:
        try:
            from tqdm.auto import tqdm
            it = tqdm(it, total=n, unit="img", desc="morphometry")
        except ImportError:  # pragma: no cover - tqdm is a declared dependency
            pass
    for i in it:
        m = measure(images[i], threshold, scale, bound_frac)
        for k in MEASUREMENTS:
            out[k][i] = m[k]
    return out


# ============================================================================= skeleton helpers
def _num_neighbours(skel: np.ndarray) -> np.ndarray:
    s = skel.astype(np.int64)
    return ndi.convolve(s, _NB_MASK, mode="constant") * s


def _erase_near(skel: np.ndarray, seeds: np.ndarray, radius: float) -> np.ndarray:
    """Skeleton pixels farther than ``radius`` from every seed pixel."""
    if radius <= 0 or not seeds.any():
        return skel.copy()
    return skel & (ndi.distance_transform_edt(~seeds) > radius)


def _skeleton_locations(morph: ImageMorphology, prune_tips: float | None = None,
                        prune_forks: float | None = None) -> np.ndarray:
    """Candidate (row, col) skeleton points, optionally away from tips and forks (original px)."""
    skel = morph.skeleton
    if prune_tips is not None:
        skel = _erase_near(skel, _num_neighbours(skel) == 1, prune_tips * morph.scale)
    if prune_forks is not None:
        # forks of the original pipeline: 3 neighbours; crossings with more count too
        skel = _erase_near(skel, _num_neighbours(skel) >= 3, prune_forks * morph.scale)
    return np.argwhere(skel)


def _skeleton_angle(skel: np.ndarray, i: int, j: int, r: int) -> float:
    """Local direction of the skeleton around (i, j): principal axis of its pixels in a (2r+1)^2 window."""
    padded = np.pad(skel, r)
    window = padded[i : i + 2 * r + 1, j : j + 2 * r + 1].astype(np.float64)
    return ImageMoments(window).angle


# ============================================================================= perturbations (Sec. 3)
def _thickness_radius(morph: ImageMorphology, amount: float) -> float:
    t = morph.mean_thickness
    return 0.0 if not np.isfinite(t) else amount * morph.scale * t / 2.0


def _perturbed(image, hires_fn, threshold, scale):
    morph = ImageMorphology(image, threshold=threshold, scale=scale)
    if not morph.binary_image.any():
        return np.array(image, copy=True)
    return _restore(morph.downscale(hires_fn(morph)).astype(np.float64), image)


def thin(image: np.ndarray, amount: float = 0.7, *, threshold: float = DEFAULT_THRESHOLD,
         scale: int = DEFAULT_SCALE) -> np.ndarray:
    """Thinning (Castro et al., Sec. 3, thinning and thickening): erosion of the upscaled binary digit by a disk of radius
    ``amount * thickness / 2`` (so the stroke loses about ``amount`` of its width).

    Radii at or above the thickest point are clamped so that the digit never vanishes entirely.
    """
    def fn(morph):
        r = _thickness_radius(morph, amount)
        dmax = float(morph.distance_map.max())
        return _erode(morph.binary_image, min(r, dmax * (1 - 1e-6)))
    return _perturbed(image, fn, threshold, scale)


def thicken(image: np.ndarray, amount: float = 1.0, *, threshold: float = DEFAULT_THRESHOLD,
            scale: int = DEFAULT_SCALE) -> np.ndarray:
    """Thickening (Castro et al., Sec. 3, thinning and thickening): dilation of the upscaled binary digit by a disk of radius
    ``amount * thickness / 2`` (so the stroke gains about ``amount`` of its width)."""
    return _perturbed(image, lambda m: _dilate(m.binary_image, _thickness_radius(m, amount)), threshold, scale)


def swell(image: np.ndarray, strength: float = 3.0, radius: float = 7.0, *, rng,
          threshold: float = DEFAULT_THRESHOLD, scale: int = DEFAULT_SCALE,
          return_centre: bool = False):
    """Local swelling (Castro et al., Sec. 3, swelling): a radial warp centred on a random skeleton point.

    Inside the disk of radius ``R = radius * sqrt(thickness) / 2`` (original px) the output point
    at distance ``d`` from the centre samples the input at distance ``d * (d / R)**(strength - 1)``,
    a magnification for ``strength > 1`` that fades to the identity at ``R``; outside nothing moves.

    Args:
        rng: ``numpy.random.Generator`` (or int seed) choosing the centre.
        return_centre: also return the centre (row, col) in original-resolution pixel coordinates.
    """
    if strength <= 0:
        raise ValueError(f"strength must be positive, got {strength}")
    rng = _as_rng(rng)
    morph = ImageMorphology(image, threshold=threshold, scale=scale)
    locs = _skeleton_locations(morph)
    if len(locs) == 0:
        out = np.array(image, copy=True)
        return (out, None) if return_centre else out
    ci, cj = locs[rng.integers(len(locs))]
    centre_xy = np.array([cj, ci], dtype=np.float64)
    big_r = radius * np.sqrt(morph.mean_thickness) / 2.0 * morph.scale

    def inverse_map(xy):
        off = xy - centre_xy
        d = np.hypot(off[:, 0], off[:, 1])
        w = np.ones_like(d)
        inside = d < big_r
        w[inside] = (np.maximum(d[inside], 1e-9) / big_r) ** (strength - 1.0)
        return centre_xy + w[:, None] * off

    hires = transform.warp(morph.binary_image.astype(np.float64), inverse_map, order=1, mode="constant", cval=0.0)
    out = _restore(morph.downscale(hires).astype(np.float64), image)
    if return_centre:
        s = morph.scale
        return out, ((ci + 0.5) / s - 0.5, (cj + 0.5) / s - 0.5)
    return out


_FRAC_ANGLE_WINDOW = 2.0  # original px around the cut centre used to estimate the stroke direction
_FRAC_EXTENSION = 0.5  # original px by which each cut extends beyond the stroke


def fracture(image: np.ndarray, num_frac: int = 3, *, rng, thickness: float = 1.5, prune: float = 2.0,
             threshold: float = DEFAULT_THRESHOLD, scale: int = DEFAULT_SCALE,
             return_centres: bool = False):
    """Fractures (Castro et al., Sec. 3, fractures): ``num_frac`` thin cuts across the stroke.

    Each cut is centred on a random skeleton point at least ``prune`` px from tips and forks
    (falling back to any skeleton point when pruning leaves none), runs perpendicular to the local
    skeleton direction (principal axis of the skeleton within 2 px), spans the local stroke width
    plus 0.5 px on each side, and is ``thickness`` px wide (a round brush at high resolution).

    Args:
        rng: ``numpy.random.Generator`` (or int seed) choosing the cut centres (with replacement).
        return_centres: also return the centres (row, col) in original-resolution coordinates.
    """
    rng = _as_rng(rng)
    morph = ImageMorphology(image, threshold=threshold, scale=scale)
    s = morph.scale
    locs = _skeleton_locations(morph, prune, prune)
    if len(locs) == 0:
        locs = _skeleton_locations(morph)
    if len(locs) == 0 or num_frac <= 0:
        out = np.array(image, copy=True)
        return (out, []) if return_centres else out
    centres = locs[rng.integers(len(locs), size=int(num_frac))]
    h, w = morph.binary_image.shape
    cuts = np.zeros((h, w), dtype=bool)
    win = int(round(_FRAC_ANGLE_WINDOW * s))
    for i, j in centres:
        angle = _skeleton_angle(morph.skeleton, int(i), int(j), win) + np.pi / 2.0  # perpendicular
        half_len = morph.distance_map[i, j] + _FRAC_EXTENSION * s
        normal = half_len * np.array([np.sin(angle), np.cos(angle)])  # (row, col)
        p0 = np.rint(np.array([i, j]) + normal).astype(int)
        p1 = np.rint(np.array([i, j]) - normal).astype(int)
        rr, cc = draw.line(p0[0], p0[1], p1[0], p1[1])
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        cuts[rr[ok], cc[ok]] = True
    brush_r = int(np.ceil((thickness * s - 1) / 2.0))
    cut_mask = ndi.distance_transform_edt(~cuts) <= brush_r
    hires = morph.binary_image & ~cut_mask
    out = _restore(morph.downscale(hires).astype(np.float64), image)
    if return_centres:
        return out, [((i + 0.5) / s - 0.5, (j + 0.5) / s - 0.5) for i, j in centres]
    return out


def _apply_thickness_delta(morph: ImageMorphology, delta: float) -> np.ndarray:
    r = morph.scale * abs(delta) / 2.0
    if delta >= 0:
        return _dilate(morph.binary_image, r)
    dmax = float(morph.distance_map.max())
    return _erode(morph.binary_image, min(r, dmax * (1 - 1e-6)))


def set_thickness(image: np.ndarray, target: float, *, refine: int = 3, tol: float = 0.05,
                  threshold: float = DEFAULT_THRESHOLD, scale: int = DEFAULT_SCALE) -> np.ndarray:
    """Thin or thicken the digit so that its measured thickness is close to ``target`` px.

    The first step is the rule of the Morpho-MNIST thickness datasets (Pawlowski et al. 2020, after
    Castro et al., Sec. 3 thinning/thickening): with ``delta = target - thickness``, dilate (delta > 0) or erode
    (delta < 0) the upscaled binary digit by a disk of radius ``|delta| / 2``. Because
    re-rendering and re-measuring shifts the result a little, up to ``refine`` corrections follow,
    each re-applying the operation to the *original* binary digit with ``delta`` increased by the
    remaining error; the output whose measured thickness is closest to ``target`` is returned
    (stops early once within ``tol`` px). ``refine=0`` gives the plain one-step rule.

    Very thin targets cannot be reached on digits with uneven strokes (erosion removes thin parts
    first); the erosion radius is clamped so that the digit never vanishes.
    """
    morph = ImageMorphology(image, threshold=threshold, scale=scale)
    t0 = morph.mean_thickness
    if not np.isfinite(t0):
        return np.array(image, copy=True)
    delta = float(target) - t0
    best, best_err = None, np.inf
    for _ in range(int(refine) + 1):
        out = morph.downscale(_apply_thickness_delta(morph, delta))
        t = ImageMorphology(out, threshold=threshold, scale=scale).mean_thickness
        err = float(target) - t if np.isfinite(t) else np.inf
        if abs(err) < best_err:
            best, best_err = out, abs(err)
        if best_err <= tol or not np.isfinite(err):
            break
        delta += err
    return _restore(best.astype(np.float64), image)


def get_intensity(image: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Stroke intensity: median of the pixels at or above ``threshold`` of the image's intensity range.

    The definition of the thickness -> intensity -> image Morpho-MNIST dataset (Pawlowski et al. 2020).
    NaN for a blank image.
    """
    img = _as_intensity(image)
    lo, hi = img.min(), img.max()
    if hi <= lo:
        return float("nan")
    return float(np.median(img[img >= lo + (hi - lo) * threshold]))


def scale_intensity(image: np.ndarray, factor: float) -> np.ndarray:
    """Multiply intensities by ``factor``, clip to 0..255, keep dtype and shape."""
    return _restore(_as_intensity(image) * float(factor), image)


def set_intensity(image: np.ndarray, intensity: float, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Rescale intensities so that :func:`get_intensity` becomes ``intensity`` (0..255), clipping at 255.

    As in the Morpho-MNIST thickness/intensity dataset of Pawlowski et al. (2020): the whole image is
    multiplied by ``intensity / get_intensity(image)``. A blank image is returned unchanged.
    """
    current = get_intensity(image, threshold)
    if not np.isfinite(current) or current <= 0:
        return np.array(image, copy=True)
    return scale_intensity(image, float(intensity) / current)


def measurements_table(values: Mapping[str, np.ndarray]) -> str:  # pragma: no cover - reporting helper
    """A small text summary (median, 5%, 95%) of :func:`measure_batch` output; slant in degrees."""
    lines = [f"{'':10s} {'median':>8s} {'p5':>8s} {'p95':>8s} {'mean':>8s}"]
    for k in MEASUREMENTS:
        v = np.asarray(values[k], dtype=np.float64)
        if k == "slant":
            v = np.rad2deg(v)
        v = v[np.isfinite(v)]
        lines.append(f"{k + (' (deg)' if k == 'slant' else ''):10s} {np.median(v):8.2f} "
                     f"{np.percentile(v, 5):8.2f} {np.percentile(v, 95):8.2f} {v.mean():8.2f}")
    return "\n".join(lines)
