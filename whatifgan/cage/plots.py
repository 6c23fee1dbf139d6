"""Figures of the CAGE experiments (matplotlib, Agg backend, PNG files).

* :func:`mog_figure` -- Figure 3: the annotated data coloured by the cause, the GATE histogram
  under the permutation null with the estimate marked, and ``Delta tau`` against alpha;
* :func:`null_figure` -- the two directions' null histograms with the estimates;
* :func:`delta_tau_figure` -- ``Delta tau`` (Eq. 7) and both GATEs (Eq. 6) against alpha
  (Figure 4 right);
* :func:`counterfactual_grid` -- decoded counterfactuals ``G(z + alpha h_c)`` (Eq. 2) per
  treatment and alpha (Figure 4 left).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .probe import ProbeResult

__all__ = ["counterfactual_grid", "delta_tau_figure", "mog_figure", "null_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _null_axis(ax, res: ProbeResult, direction: str = "12") -> None:
    j = res._null_col()
    null = (res.null_12 if direction == "12" else res.null_21)[:, j]
    est = res.gate(direction)
    t, o = (res.m1, res.m2) if direction == "12" else (res.m2, res.m1)
    ax.hist(null, bins=30, color="0.6", label=f"null ({len(null)} permutations)")
    ax.axvline(est, color="k", lw=2, label=f"GATE = {est:+.3f}")
    ax.set_title(f"GATE({t} -> {o}) at alpha={res.alpha:g}, p={res.p_value(direction):.3g}", fontsize=9)
    ax.set_xlabel("GATE under H0 (shuffled treatment labels)")
    ax.legend(fontsize=7)


def _delta_axis(ax, results: Sequence[ProbeResult], labels: Sequence[str] | None = None) -> None:
    for i, r in enumerate(results):
        lab = labels[i] if labels else r.outcome
        ax.plot(r.alphas, r.delta_tau, "o-", label=f"Delta tau ({lab})")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvline(results[0].alpha, color="0.5", ls=":", lw=1)
    ax.set_xlabel("alpha")
    ax.set_ylabel("Delta tau")
    ax.set_title("Delta tau (Eq. 7); > 0 means m1 -> m2", fontsize=9)
    ax.legend(fontsize=7)


def mog_figure(x: np.ndarray, cause: np.ndarray, res: ProbeResult, path, decoded: np.ndarray | None = None) -> Path:
    """Figure 3 of the paper (left: data by cause; centre: null histogram; right: Delta tau)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    ax.scatter(x[cause == 0, 0], x[cause == 0, 1], s=3, c="tab:blue", label=f"{res.m1}=0 (8 Gaussians)")
    ax.scatter(x[cause == 1, 0], x[cause == 1, 1], s=3, c="tab:orange", label=f"{res.m1}=1 (3 Gaussians)")
    if decoded is not None:
        ax.scatter(decoded[:, 0], decoded[:, 1], s=1, c="0.3", alpha=0.3, label="flow samples")
    lim = np.array([x.min(0), x.max(0)])
    xs = np.linspace(lim[0, 0], lim[1, 0], 2)
    ax.plot(xs, 5.0 - xs, "k--", lw=1, label=f"{res.m2}: (x+y)/2 = 2.5")
    ax.set_title("annotated data", fontsize=9)
    ax.legend(fontsize=7, markerscale=3)
    _null_axis(axes[1], res, "12")
    _delta_axis(axes[2], [res])
    return _save(fig, path)


def null_figure(res: ProbeResult, path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    _null_axis(axes[0], res, "12")
    _null_axis(axes[1], res, "21")
    ax = axes[2]
    d = res.delta_null()
    ax.hist(d, bins=30, color="0.6", label="paired null")
    ax.axvline(res.summary()["delta_tau"], color="k", lw=2, label="Delta tau")
    ax.set_title(f"Delta tau at alpha={res.alpha:g}, p={res.p_delta():.3g}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def delta_tau_figure(results: Sequence[ProbeResult], path, title: str = "", labels=None) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _delta_axis(axes[0], results, labels)
    ax = axes[1]
    for i, r in enumerate(results):
        lab = labels[i] if labels else r.outcome
        ax.plot(r.alphas, r.gate_12, "o-", label=f"GATE({r.m1}->{r.m2}) [{lab}]")
        ax.plot(r.alphas, r.gate_21, "s--", label=f"GATE({r.m2}->{r.m1}) [{lab}]")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("alpha")
    ax.set_title("GATE (Eq. 6)", fontsize=9)
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def counterfactual_grid(rows: Mapping[str, "object"], alphas: Sequence[float], path, title: str = "") -> Path:
    """``rows[name]``: tensor ``(n, len(alphas), C, H, W)`` of decoded counterfactuals in [0, 1];
    one block of ``n`` rows per treatment, one column per alpha."""
    plt = _plt()
    blocks = list(rows.items())
    n = blocks[0][1].shape[0]
    fig, axes = plt.subplots(n * len(blocks), len(alphas), figsize=(1.2 * len(alphas), 1.2 * n * len(blocks)),
                             squeeze=False)
    for b, (name, imgs) in enumerate(blocks):
        arr = imgs.detach().cpu().numpy() if hasattr(imgs, "detach") else np.asarray(imgs)
        for i in range(n):
            for j, a in enumerate(alphas):
                ax = axes[b * n + i, j]
                img = arr[i, j]
                img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
                ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if b * n + i == 0 or i == 0:
                    ax.set_title(f"alpha={a:g}", fontsize=7)
                if j == 0 and i == 0:
                    ax.set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
