"""CAGE: probing the causal relations a latent generative model has learned (Sections 3.1-3.3).

The three steps of Section 3.2 and the effect estimates of Section 3.3, for a pair of binary
attributes ``(m1, m2)`` annotated on a dataset ``D``:

* **Step 1** -- encode ``D`` (``z_D(i) = ENC(x_D(i))``) and fit a calibrated probabilistic *linear*
  classifier ``phi_c(z) = sigma(w . z + b)`` per attribute (:class:`LinearClassifier`: scikit-learn
  logistic regression with Platt calibration, which stays exactly linear-logistic); ``h_c`` is the
  unit normal of its hyperplane, pointing towards ``m_c = 1``.
* **Step 2** -- sample ``k`` latents from the prior of ``G``; the factual treatment of each is
  ``m_c(i) = 1[phi_c(z(i)) > 1/2]``.
* **Step 3** -- counterfactual latents ``z(i; do(m_c = 1)) = z(i) + alpha h_c`` for ``m_c(i) = 0`` and,
  symmetrically, ``z(i; do(m_c = 0)) = z(i) - alpha h_c`` for ``m_c(i) = 1`` (the factual latent is
  kept for the factual arm); Eq. (2) decodes them, ``x(i; do) = G(z(i; do))``.

The outcome of a (counter)factual is the effect classifier's probability, either in latent space,
``m_e(i; do) = phi_e(z(i; do))`` (Eq. 3), or in pixel space on the decoded image,
``m_e(i; do) = psi_e(x(i; do))`` (Eq. 4). Then

* GITE ``tau(i) = m_e(i; do(m_c=1)) - m_e(i; do(m_c=0))`` (Eq. 5),
* GATE ``tau_GATE(m_c -> m_e) = E_i[tau(i)]`` over the prior samples (Eq. 6),
* ``Delta tau = |tau_GATE(m_1 -> m_2)| - |tau_GATE(m_2 -> m_1)|`` (Eq. 7), positive when ``m_1``
  is the cause according to ``G``.

Significance (Section 3.3, "A null distribution for treatment effects"): the treatment labels of
``D`` are shuffled, ``phi_c`` is refit (its normal becomes an effectively random projection) and
the GATE recomputed on the same prior samples, many times; the p-value of an observed GATE is
``(1 + #{|tau_null| >= |tau|}) / (1 + B)``. A null for ``Delta tau`` pairs the two directions'
null draws.

Decision (:func:`decide`): the permutation p-values test whether ``G`` links the two attributes at
all -- the pair counts as dependent when either direction's GATE is significant at ``level / 2``
(Bonferroni over the two directions), else ``"independent"``; the sign of ``Delta tau`` (Eq. 7)
then orients it, ``"m1 -> m2"`` for ``Delta tau > 0`` and ``"m2 -> m1"`` for ``Delta tau < 0``, as in
the paper's Table 1. (The paired null of ``Delta tau`` is reported too, but it is wide: two
random projections differ by much more than the two real directions do, so it is evidence, not
the decision rule.)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .models import LatentGenerativeModel

__all__ = [
    "CAGE",
    "CAGEConfig",
    "LinearClassifier",
    "ProbeResult",
    "counterfactual_latents",
    "decide",
    "delta_tau",
    "direction_table",
    "gate",
    "gate_curve",
    "gite",
    "p_value",
    "permutation_null",
]

Outcome = Callable[[np.ndarray], np.ndarray]


def _np(z: Any) -> np.ndarray:
    if isinstance(z, Tensor):
        return z.detach().cpu().numpy().astype(np.float64)
    return np.asarray(z, dtype=np.float64)


# ============================================================================= Step 1: linear probes
@dataclass
class LinearClassifier:
    """A calibrated probabilistic linear classifier ``phi(z) = sigma(w . z + b)`` (Step 1).

    ``weight``/``bias`` are the *calibrated* parameters (Platt scaling of a logistic regression
    is again linear-logistic: ``sigma(-(A f(z) + B))`` with ``f(z) = w_lr . z + b_lr``);
    ``normal`` is the unit hyperplane normal ``h = w / |w|``, pointing towards class 1.
    ``accuracy`` is measured on the fitting data, ``cv_accuracy`` on held-out folds (when
    calibrated).
    """

    weight: np.ndarray
    bias: float
    name: str = ""
    accuracy: float = float("nan")
    cv_accuracy: float = float("nan")
    positive_rate: float = float("nan")

    @property
    def normal(self) -> np.ndarray:
        n = float(np.linalg.norm(self.weight))
        if n == 0.0:
            raise ValueError(f"classifier {self.name!r} has zero weights: no hyperplane normal")
        return self.weight / n

    def logit(self, z: Any) -> np.ndarray:
        return _np(z) @ self.weight + self.bias

    def prob(self, z: Any) -> np.ndarray:
        """``phi(z) in [0, 1]``: probability of class 1."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(z), -60.0, 60.0)))

    __call__ = prob

    def predict(self, z: Any) -> np.ndarray:
        """``1[phi(z) > 1/2]`` (Step 2's factual treatment)."""
        return (self.logit(z) > 0.0).astype(np.int64)

    def distance(self, z: Any) -> np.ndarray:
        """Signed distance of ``z`` to the hyperplane (positive on the class-1 side)."""
        return self.logit(z) / float(np.linalg.norm(self.weight))

    @classmethod
    def fit(cls, z: Any, y: Any, *, name: str = "", C: float = 1.0, calibrate: bool = True, cv: int = 3,
            max_iter: int = 1000, seed: int = 0, score: bool = True) -> "LinearClassifier":
        """Logistic regression of binary ``y`` on latents ``z``, Platt-calibrated on ``cv`` folds
        (``CalibratedClassifierCV(method="sigmoid", ensemble=False)``), as one linear-logistic map.
        ``score``: also measure the regression's held-out accuracy on the same folds."""
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression

        Z = _np(z)
        y = np.asarray(y).astype(np.int64).ravel()
        if Z.ndim != 2 or len(Z) != len(y):
            raise ValueError(f"classifier {name!r}: latents {Z.shape} and {len(y)} labels do not match")
        classes = np.unique(y)
        if not set(classes.tolist()) <= {0, 1} or len(classes) < 2:
            raise ValueError(f"classifier {name!r}: labels must be binary 0/1 with both classes present, "
                             f"got values {classes.tolist()}")
        lr = LogisticRegression(C=C, max_iter=max_iter)
        cv_acc = float("nan")
        # one BLAS thread: these small problems run ~50x slower when OpenBLAS threads compete
        from threadpoolctl import threadpool_limits

        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore")
            if calibrate and min(np.bincount(y)) >= cv:
                from sklearn.model_selection import StratifiedKFold

                folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
                cal = CalibratedClassifierCV(lr, method="sigmoid", cv=folds, ensemble=False).fit(Z, y)
                cc = cal.calibrated_classifiers_[0]
                est, sig = cc.estimator, cc.calibrators[0]
                a, b = float(sig.a_), float(sig.b_)
                w = -a * est.coef_.ravel()
                b0 = -a * float(est.intercept_[0]) - b
                if not np.any(w):  # degenerate calibration slope: keep the regression's direction
                    w, b0 = est.coef_.ravel() * 1e-12, float(est.intercept_[0]) * 1e-12
                if score:  # held-out accuracy of the regression (same folds)
                    hits = 0
                    for tr, te in folds.split(Z, y):
                        m = LogisticRegression(C=C, max_iter=max_iter).fit(Z[tr], y[tr])
                        hits += int((m.predict(Z[te]) == y[te]).sum())
                    cv_acc = hits / len(y)
            else:
                lr.fit(Z, y)
                w, b0 = lr.coef_.ravel().copy(), float(lr.intercept_[0])
        clf = cls(np.asarray(w, dtype=np.float64), float(b0), name)
        clf.accuracy = float((clf.predict(Z) == y).mean())
        clf.cv_accuracy = cv_acc
        clf.positive_rate = float(y.mean())
        return clf

    def to_dict(self) -> dict:
        return {"name": self.name, "weight": self.weight.tolist(), "bias": self.bias,
                "accuracy": self.accuracy, "cv_accuracy": self.cv_accuracy, "positive_rate": self.positive_rate}


# ============================================================================= Steps 2-3 and Eqs. 5-7
def counterfactual_latents(z: Any, treatment: LinearClassifier, alpha: float
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 2 + Step 3: ``(t, z_do0, z_do1)`` with the factual treatment ``t = 1[phi_c(z) > 1/2]``,
    ``z_do1 = z + alpha h_c`` where ``t = 0`` (else ``z``) and ``z_do0 = z - alpha h_c`` where
    ``t = 1`` (else ``z``)."""
    Z = _np(z)
    t = treatment.predict(Z)
    step = float(alpha) * treatment.normal
    z1 = np.where(t[:, None] == 0, Z + step, Z)
    z0 = np.where(t[:, None] == 1, Z - step, Z)
    return t, z0, z1


def _gite_curve(z: np.ndarray, treatment: LinearClassifier, outcome: Outcome, alphas: Sequence[float],
                base: np.ndarray | None = None, t: np.ndarray | None = None) -> np.ndarray:
    """GITE (Eq. 5) for every unit and every ``alpha``: ``(len(alphas), k)``. The factual arm's
    outcome ``outcome(z)`` is computed once (``base``)."""
    t = treatment.predict(z) if t is None else t
    base = outcome(z) if base is None else base
    h = treatment.normal
    out = np.empty((len(alphas), len(z)))
    sign = np.where(t == 0, 1.0, -1.0)
    for j, a in enumerate(alphas):
        moved = outcome(z + (float(a) * sign)[:, None] * h)  # the counterfactual arm of each unit
        out[j] = sign * (moved - base)  # t=0: m(do 1) - m(z); t=1: m(z) - m(do 0)
    return out


def gite(z: Any, treatment: LinearClassifier, outcome: Outcome, alpha: float) -> np.ndarray:
    """Generative individual treatment effects ``tau(i) = m_e(i; do(m_c=1)) - m_e(i; do(m_c=0))``
    (Eq. 5) of the latents ``z``; ``outcome`` maps latents to effect probabilities (Eq. 3 or 4)."""
    return _gite_curve(_np(z), treatment, outcome, [alpha])[0]


def gate(z: Any, treatment: LinearClassifier, outcome: Outcome, alpha: float) -> float:
    """Generative average treatment effect ``E_i[m_e(i; do(m_c=1)) - m_e(i; do(m_c=0))]`` (Eq. 6)."""
    return float(gite(z, treatment, outcome, alpha).mean())


def gate_curve(z: Any, treatment: LinearClassifier, outcome: Outcome, alphas: Sequence[float],
               base: np.ndarray | None = None) -> np.ndarray:
    """GATE (Eq. 6) at every ``alpha`` (one outcome evaluation of the factual latents)."""
    return _gite_curve(_np(z), treatment, outcome, alphas, base=base).mean(axis=1)


def delta_tau(gate_12: Any, gate_21: Any) -> np.ndarray | float:
    """``Delta tau = |tau_GATE(m1 -> m2)| - |tau_GATE(m2 -> m1)|`` (Eq. 7)."""
    out = np.abs(np.asarray(gate_12, dtype=float)) - np.abs(np.asarray(gate_21, dtype=float))
    return float(out) if out.ndim == 0 else out


def p_value(observed: float, null: Any) -> float:
    """Two-sided permutation p-value ``(1 + #{|null| >= |observed|}) / (1 + B)``."""
    null = np.asarray(null, dtype=float).ravel()
    return float((1 + np.sum(np.abs(null) >= abs(float(observed)) - 1e-12)) / (1 + len(null)))


def permutation_null(z_data: Any, labels: Any, z_prior: Any, outcome: Outcome, alphas: Sequence[float], *,
                     n_permutations: int = 200, seed: int = 0, base: np.ndarray | None = None,
                     fit_kwargs: Mapping | None = None, progress: bool | None = False) -> np.ndarray:
    """GATEs under the null of no causal association (Section 3.3): shuffle the treatment labels
    of ``D``, refit the treatment classifier, recompute the GATE on the same prior latents.
    Returns ``(n_permutations, len(alphas))``."""
    from trainers.core import ProgressBar

    Zd, Zp = _np(z_data), _np(z_prior)
    y = np.asarray(labels).astype(np.int64).ravel()
    rng = np.random.default_rng(seed)
    base = outcome(Zp) if base is None else base
    out = np.empty((int(n_permutations), len(alphas)))
    kw = dict(fit_kwargs or {})
    with ProgressBar(int(n_permutations), desc="permutation null", enabled=progress) as bar:
        for b in range(int(n_permutations)):
            clf = LinearClassifier.fit(Zd, rng.permutation(y), name="null", seed=seed + b, score=False, **kw)
            out[b] = gate_curve(Zp, clf, outcome, alphas, base=base)
            bar.update(1)
    return out


def decide(delta: float, p_12: float, p_21: float, level: float = 0.05, names: tuple[str, str] = ("m1", "m2")) -> str:
    """The direction label: ``"independent"`` unless ``min(p_12, p_21) < level / 2`` (either GATE
    significant, Bonferroni over the two directions), then ``"m1 -> m2"`` if ``Delta tau > 0``
    (Eq. 7) and ``"m2 -> m1"`` if ``Delta tau < 0``."""
    m1, m2 = names
    if min(p_12, p_21) >= level / 2 or delta == 0:
        return "independent"
    return f"{m1} -> {m2}" if delta > 0 else f"{m2} -> {m1}"


# ============================================================================= the framework
@dataclass
class CAGEConfig:
    """Settings of a CAGE probe.

    ``alphas``: the grid of step sizes of Step 3 (the ``Delta tau`` curve); ``alpha``: the one
    the decision uses (added to the grid if missing); ``k``: prior samples (Step 2);
    ``n_permutations``: size of the null (Section 3.3); ``level``: significance level;
    ``outcome``: ``"latent"`` (Eq. 3) or ``"pixel"`` (Eq. 4, needs pixel classifiers);
    ``null_grid``: null at every alpha (default: yes for latent outcomes, only at ``alpha`` for
    pixel outcomes, which must decode every counterfactual); ``C``/``calibrate``/``cv``: the
    logistic regressions of Step 1.
    """

    alphas: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
    alpha: float = 1.0
    k: int = 5000
    n_permutations: int = 200
    level: float = 0.05
    outcome: str = "latent"
    null_grid: bool | None = None
    C: float = 1.0
    calibrate: bool = True
    cv: int = 3
    seed: int = 0
    batch_size: int = 1024
    progress: bool | None = False

    def __post_init__(self):
        self.alphas = tuple(sorted({float(a) for a in self.alphas} | {float(self.alpha)}))
        if self.outcome not in ("latent", "pixel"):
            raise ValueError(f"outcome must be 'latent' (Eq. 3) or 'pixel' (Eq. 4), got {self.outcome!r}")
        if min(self.alphas) <= 0:
            raise ValueError(f"alphas must be positive (Step 3: alpha in R_+), got {self.alphas}")

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "CAGEConfig":
        import dataclasses

        d = dict(d or {})
        valid = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - valid)
        if bad:
            raise ValueError(f"unknown CAGE option(s) {bad}; valid: {sorted(valid)}")
        if "alphas" in d:
            d["alphas"] = tuple(d["alphas"])
        return cls(**d)


@dataclass
class ProbeResult:
    """Everything CAGE measured for one attribute pair ``(m1, m2)``."""

    m1: str
    m2: str
    alphas: np.ndarray
    alpha: float
    gate_12: np.ndarray              #: tau_GATE(m1 -> m2) per alpha (Eq. 6)
    gate_21: np.ndarray              #: tau_GATE(m2 -> m1) per alpha
    null_alphas: np.ndarray
    null_12: np.ndarray              #: (B, len(null_alphas)) GATEs with shuffled m1 labels
    null_21: np.ndarray
    level: float
    outcome: str
    classifiers: dict = field(default_factory=dict)
    treated: dict = field(default_factory=dict)   #: fraction of prior samples with factual m = 1
    cosine: float = float("nan")                  #: cos(h_1, h_2)
    seconds: float = 0.0

    @property
    def delta_tau(self) -> np.ndarray:
        """``Delta tau`` per alpha (Eq. 7)."""
        return delta_tau(self.gate_12, self.gate_21)

    def _at(self, values: np.ndarray, alpha: float | None = None) -> float:
        a = self.alpha if alpha is None else float(alpha)
        return float(values[int(np.argmin(np.abs(self.alphas - a)))])

    def _null_col(self, alpha: float | None = None) -> int:
        a = self.alpha if alpha is None else float(alpha)
        j = int(np.argmin(np.abs(self.null_alphas - a)))
        if abs(self.null_alphas[j] - a) > 1e-9:
            raise ValueError(f"no null distribution at alpha={a} (computed at {self.null_alphas.tolist()})")
        return j

    def gate(self, direction: str = "12", alpha: float | None = None) -> float:
        return self._at(self.gate_12 if direction == "12" else self.gate_21, alpha)

    def p_value(self, direction: str = "12", alpha: float | None = None) -> float:
        j = self._null_col(alpha)
        null = self.null_12 if direction == "12" else self.null_21
        return p_value(self.gate(direction, alpha), null[:, j])

    def delta_null(self, alpha: float | None = None) -> np.ndarray:
        j = self._null_col(alpha)
        return np.abs(self.null_12[:, j]) - np.abs(self.null_21[:, j])

    def p_delta(self, alpha: float | None = None) -> float:
        """p-value of ``|Delta tau|`` against the paired null draws."""
        return p_value(self._at(self.delta_tau, alpha), self.delta_null(alpha))

    def direction(self, alpha: float | None = None) -> str:
        return decide(self._at(self.delta_tau, alpha), self.p_value("12", alpha), self.p_value("21", alpha),
                      self.level, (self.m1, self.m2))

    def summary(self) -> dict:
        """The numbers of the direction table at the chosen alpha."""
        dt = self.delta_tau
        return {"m1": self.m1, "m2": self.m2, "alpha": self.alpha, "outcome": self.outcome,
                "gate_12": self.gate("12"), "gate_21": self.gate("21"), "p_12": self.p_value("12"),
                "p_21": self.p_value("21"), "delta_tau": self._at(dt), "p_delta": self.p_delta(),
                "direction": self.direction(), "positive_alphas": int(np.sum(dt > 0)), "n_alphas": len(dt),
                "cosine": self.cosine, "n_permutations": int(self.null_12.shape[0]),
                "accuracy_1": self.classifiers.get(self.m1, {}).get("cv_accuracy"),
                "accuracy_2": self.classifiers.get(self.m2, {}).get("cv_accuracy")}

    def to_dict(self) -> dict:
        return {**self.summary(), "alphas": self.alphas.tolist(), "gate_12_curve": self.gate_12.tolist(),
                "gate_21_curve": self.gate_21.tolist(), "delta_tau_curve": self.delta_tau.tolist(),
                "null_alphas": self.null_alphas.tolist(), "null_12": self.null_12.tolist(),
                "null_21": self.null_21.tolist(), "classifiers": self.classifiers, "treated": self.treated,
                "seconds": self.seconds, "level": self.level}


class CAGE:
    """The CAGE probe of a :class:`~whatifgan.cage.models.LatentGenerativeModel` (Sections 3.1-3.3).

    >>> cage = CAGE(model, CAGEConfig(alpha=1.0)).fit(x_annotated, {"T": t, "I": i})   # Step 1
    >>> res = cage.probe("T", "I")                                                       # Steps 2-3
    >>> res.direction(), res.summary()["delta_tau"], res.p_value("12")

    ``pixel_classifiers``: ``{attribute: psi}`` with ``psi(images: Tensor) -> P(attribute = 1)``
    (numpy or tensor), used when ``config.outcome == "pixel"`` (Eq. 4).
    """

    def __init__(self, model: LatentGenerativeModel, config: CAGEConfig | Mapping | None = None, *,
                 pixel_classifiers: Mapping[str, Callable[[Tensor], Any]] | None = None):
        self.model = model
        self.config = config if isinstance(config, CAGEConfig) else CAGEConfig.from_dict(config)
        self.pixel_classifiers = dict(pixel_classifiers or {})
        self.classifiers: dict[str, LinearClassifier] = {}
        self.labels: dict[str, np.ndarray] = {}
        self.z_data: np.ndarray | None = None
        self._z_prior: np.ndarray | None = None
        self._base: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------- Step 1
    def fit(self, x: Any, attributes: Mapping[str, Any], *, latents: Any | None = None) -> "CAGE":
        """Encode the annotated data (``z_D = ENC(x_D)``) and fit one calibrated linear classifier
        per binary attribute (Step 1). Pass ``latents`` to skip the encoder."""
        if latents is None:
            latents = self.model.encode_batched(x, self.config.batch_size)
        return self.fit_latents(latents, attributes)

    def fit_latents(self, z: Any, attributes: Mapping[str, Any]) -> "CAGE":
        Z = _np(z)
        if not np.all(np.isfinite(Z)):
            raise ValueError("encoded latents contain NaN/inf; check the encoder (or the inversion settings)")
        self.z_data = Z
        for name, y in attributes.items():
            y = np.asarray(y).astype(np.int64).ravel()
            if len(y) != len(Z):
                raise ValueError(f"attribute {name!r} has {len(y)} labels for {len(Z)} encoded samples")
            self.labels[name] = y
            self.classifiers[name] = LinearClassifier.fit(Z, y, name=name, **self._fit_kwargs(),
                                                          seed=self.config.seed)
        self._base.clear()
        return self

    def _fit_kwargs(self) -> dict:
        c = self.config
        return {"C": c.C, "calibrate": c.calibrate, "cv": c.cv}

    # ---------------------------------------------------------------- Step 2
    @property
    def z_prior(self) -> np.ndarray:
        """The ``k`` prior latents of Step 2 (drawn once, seeded)."""
        if self._z_prior is None:
            g = torch.Generator().manual_seed(int(self.config.seed) + 1)
            self._z_prior = _np(self.model.sample_prior(self.config.k, generator=g))
        return self._z_prior

    def set_prior_samples(self, z: Any) -> None:
        self._z_prior = _np(z)
        self._base.clear()

    # ---------------------------------------------------------------- outcomes (Eqs. 3-4)
    def outcome_fn(self, attribute: str) -> Outcome:
        """``z -> m_e`` probabilities: ``phi_e(z)`` (Eq. 3) or ``psi_e(G(z))`` (Eq. 4)."""
        if self.config.outcome == "latent":
            if attribute not in self.classifiers:
                raise KeyError(f"no latent classifier for {attribute!r}; call fit() with it first")
            return self.classifiers[attribute].prob
        if attribute not in self.pixel_classifiers:
            raise KeyError(f"outcome='pixel' (Eq. 4) needs a pixel classifier for {attribute!r}; "
                           f"have {sorted(self.pixel_classifiers)}")
        psi = self.pixel_classifiers[attribute]
        model, bs = self.model, self.config.batch_size

        def fn(z: np.ndarray) -> np.ndarray:
            out = []
            dt = torch.get_default_dtype()
            for a in range(0, len(z), bs):
                x = model.decode_batched(torch.as_tensor(z[a:a + bs], dtype=dt), bs)
                p = psi(x)
                out.append(_np(p).ravel())
            return np.concatenate(out)

        return fn

    def _base_outcome(self, attribute: str) -> np.ndarray:
        if attribute not in self._base:
            self._base[attribute] = self.outcome_fn(attribute)(self.z_prior)
        return self._base[attribute]

    # ---------------------------------------------------------------- Eqs. 5-7 and the null
    def gate(self, treatment: str, outcome: str, alphas: Sequence[float] | None = None) -> np.ndarray:
        """``tau_GATE(treatment -> outcome)`` at each alpha (Eq. 6)."""
        alphas = self.config.alphas if alphas is None else tuple(alphas)
        return gate_curve(self.z_prior, self._clf(treatment), self.outcome_fn(outcome), alphas,
                          base=self._base_outcome(outcome))

    def gite(self, treatment: str, outcome: str, alpha: float | None = None) -> np.ndarray:
        """Per-sample GITEs (Eq. 5) at ``alpha``."""
        a = self.config.alpha if alpha is None else alpha
        return _gite_curve(self.z_prior, self._clf(treatment), self.outcome_fn(outcome), [a],
                           base=self._base_outcome(outcome))[0]

    def null(self, treatment: str, outcome: str, alphas: Sequence[float] | None = None,
             n_permutations: int | None = None, seed: int | None = None) -> np.ndarray:
        """GATEs under the permutation null (shuffled ``treatment`` labels), ``(B, len(alphas))``."""
        c = self.config
        alphas = (c.alphas if self._null_grid() else (c.alpha,)) if alphas is None else tuple(alphas)
        return permutation_null(self.z_data, self.labels[treatment], self.z_prior, self.outcome_fn(outcome), alphas,
                                n_permutations=c.n_permutations if n_permutations is None else n_permutations,
                                seed=(c.seed + 7919 if seed is None else seed), base=self._base_outcome(outcome),
                                fit_kwargs=self._fit_kwargs(), progress=c.progress)

    def _null_grid(self) -> bool:
        c = self.config
        return (c.outcome == "latent") if c.null_grid is None else bool(c.null_grid)

    def _clf(self, name: str) -> LinearClassifier:
        if name not in self.classifiers:
            raise KeyError(f"no latent classifier for attribute {name!r}; fitted: {sorted(self.classifiers)}")
        return self.classifiers[name]

    def probe(self, m1: str, m2: str) -> ProbeResult:
        """GATE both ways on the alpha grid, ``Delta tau`` (Eq. 7), the permutation nulls and the
        direction decision for the pair ``(m1, m2)``."""
        t0 = time.perf_counter()
        c = self.config
        g12, g21 = self.gate(m1, m2), self.gate(m2, m1)
        null_alphas = c.alphas if self._null_grid() else (c.alpha,)
        n12 = self.null(m1, m2, null_alphas, seed=c.seed + 7919)
        n21 = self.null(m2, m1, null_alphas, seed=c.seed + 104729)
        h1, h2 = self._clf(m1).normal, self._clf(m2).normal
        zp = self.z_prior
        return ProbeResult(
            m1, m2, np.asarray(c.alphas), float(c.alpha), g12, g21, np.asarray(null_alphas), n12, n21, c.level,
            c.outcome, classifiers={k: self.classifiers[k].to_dict() for k in (m1, m2)},
            treated={k: float(self.classifiers[k].predict(zp).mean()) for k in (m1, m2)},
            cosine=float(h1 @ h2), seconds=time.perf_counter() - t0)

    # ---------------------------------------------------------------- counterfactual images
    def counterfactual_path(self, treatment: str, z: Any, alphas: Sequence[float], *, towards: int | None = None
                            ) -> Tensor:
        """Decoded ``G(z + s alpha h_c)`` for each latent and alpha: ``(len(z), len(alphas), ...)``,
        with ``s = +1`` (towards ``m_c = 1``) or ``-1``; ``towards=None`` moves each latent to the
        other side of its factual treatment (Step 3)."""
        clf = self._clf(treatment)
        Z = _np(z)
        if towards is None:
            sign = np.where(clf.predict(Z) == 0, 1.0, -1.0)
        else:
            sign = np.full(len(Z), 1.0 if towards == 1 else -1.0)
        rows = []
        dt = torch.get_default_dtype()
        for a in alphas:
            za = Z + (float(a) * sign)[:, None] * clf.normal
            rows.append(self.model.decode_batched(torch.as_tensor(za, dtype=dt)).cpu())
        return torch.stack(rows, dim=1)


# ============================================================================= reporting
def direction_table(rows: Sequence[Mapping[str, Any]], *, truth_key: str = "truth") -> str:
    """A markdown table of probe summaries (``ProbeResult.summary()`` plus optional ``name`` and
    ``truth`` entries)."""
    head = ["experiment", "m1", "m2", "alpha", "GATE(m1->m2)", "p", "GATE(m2->m1)", "p",
            "delta_tau", "p(delta)", "delta_tau > 0 on grid", "probe acc m1/m2", "inferred", "truth"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            str(r.get("name", "")), str(r["m1"]), str(r["m2"]), f"{r['alpha']:g}", f"{r['gate_12']:+.4f}",
            f"{r['p_12']:.3g}", f"{r['gate_21']:+.4f}", f"{r['p_21']:.3g}", f"{r['delta_tau']:+.4f}",
            f"{r['p_delta']:.3g}", f"{r.get('positive_alphas', '')}/{r.get('n_alphas', '')}",
            _acc(r.get("accuracy_1"), r.get("accuracy_2")), str(r["direction"]), str(r.get(truth_key, ""))]) + " |")
    return "\n".join(lines)


def _acc(a, b) -> str:
    def f(v):
        return "-" if v is None or not np.isfinite(v) else f"{v:.2f}"

    return f"{f(a)}/{f(b)}"


def config_dict(config: CAGEConfig) -> dict:
    d = asdict(config)
    d["alphas"] = list(d["alphas"])
    return d
