"""Runnable stand-ins for the ID-GEN paper's real-data experiments (Rahman et al. 2024).

Covid X-ray (Appendix F.6)
--------------------------
Backdoor graph ``C -> X -> N``, ``C <-> N`` (COVID-19 ``C``, chest X-ray ``X``, pneumonia ``N``;
a hidden "location" confounds ``C`` and ``N``); query ``P(N | do(C))``.  ID-GEN's sampling network
draws ``X ~ M_X(c)`` (a conditional diffusion model), ``C' ~ P(c')`` and
``N ~ M_N(X, C')`` (a temperature-calibrated classifier).  Ablations, as in Table 4 (right):
"no diffusion" (``P(x | c)`` by resampling real images of class ``c``) and "no latent" (the
conditional ``P(n | c)``, i.e. a graph without the confounder).

* :func:`covid_standin` -- a generated dataset on that graph with the exact answer known: the
  front-door Colored-MNIST generator (:func:`whatifgan.data.image_scms.frontdoor_colored_mnist`,
  the same graph) with one colour, grey one-channel "X-rays" of digit ``X_digit = eta(C)``, and
  ``N = eta(X_digit or U)``; its discrete twin gives ``P(N | do(C))``;
* :func:`load_covid_folder` -- the real data from a local folder (``labels.csv`` with columns
  ``file, C, N`` or sub-folders ``c0_n1`` style); nothing is downloaded;
* :func:`covid_experiment` -- the three methods and the TVD to the truth.

CelebA translation audit (Section 4.2)
--------------------------------------
Graph ``I1 -> Male, I1 -> Young, Male <-> Young, (I1, Male, Young) -> I2``; ID-GEN samples
``P_{Male=0}(I2)`` with ``M_I1`` (the images), ``M_Young(I1)`` (a classifier) and a *pluggable
pretrained translator* as ``M_I2`` (:class:`~whatifgan.idgen.PretrainedBackend`); a *pluggable
attribute classifier* reads the attributes ``P1`` of ``I1`` and ``P2`` of ``I2``, and ``A`` (the
attributes the translation added) estimates ``P_{Male=0}(A)``.

* :func:`celeba_standin` -- "faces" are MNIST digits whose colour encodes the sex (red male, green
  female) and whose stroke intensity encodes age (bright young, dim old), with sex and age
  correlated in the population and confounded labels;
* :func:`rule_translator` -- exact translators: ``bias = 0`` changes the sex only, ``bias = q``
  also makes a translated face young with probability ``q`` (the spurious sex-age correlation a
  translator can pick up, as EGSDE does in the paper); their added-attribute rates are known
  (:meth:`CelebAStandIn.audit_truth`);
* :func:`train_translator` -- a small conv translator trained here on pairs of such renderings
  (the stand-in for a pretrained StarGAN / EGSDE);
* :func:`train_attribute_classifier` -- the stand-in attribute classifier (small CNNs);
* :func:`audit_translator` -- the audit.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..variables import Categorical, Image, VariableSet

__all__ = [
    "BackdoorData", "CelebAStandIn", "audit_translator", "celeba_benchmark", "celeba_standin",
    "covid_benchmark", "covid_experiment", "covid_standin", "load_covid_folder", "rule_translator",
    "train_attribute_classifier", "train_translator",
]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "experiments"
COVID_GRAPH = "C -> X; X -> N; C <-> N"
CELEBA_GRAPH = "I1 -> Male; I1 -> Young; Male <-> Young; I1 -> I2; Male -> I2; Young -> I2"


def _load_yaml(name_or_cfg, default: str) -> dict:
    if isinstance(name_or_cfg, Mapping):
        return dict(name_or_cfg)
    import yaml

    p = Path(name_or_cfg or default)
    if not p.is_file():
        p = CONFIG_DIR / f"{name_or_cfg or default}.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"no stand-in config {name_or_cfg or default!r}")
    return yaml.safe_load(p.read_text())


# ============================================================================= Covid: data
@dataclass
class BackdoorData:
    """Data on ``C -> X -> N, C <-> N``: ``columns`` (``C``, ``N`` codes, ``X`` uint8 images
    ``[n, 1, H, W]``), variable specs, and -- for generated data -- the exact ``P(N | do(C = c))``
    and ``P(N | C = c)`` (``truth[c]``, ``observational[c]``: lists over ``N``)."""

    columns: dict[str, np.ndarray]
    variables: VariableSet
    graph: str = COVID_GRAPH
    truth: dict[int, list[float]] | None = None
    observational: dict[int, list[float]] | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["C"])


def covid_standin(n: int = 4000, *, p: float = 0.1, p_c: float = 0.3, u_prob: float = 0.5,
                  p_image: float = 0.2, digits: Sequence[int] = (0, 1), seed: int = 0, split: str = "train",
                  cache_dir=None, pool_per_class: int | None = None) -> BackdoorData:
    """Generated Covid-X-ray stand-in with exact truth (see the module docstring).

    ``U ~ Bernoulli(u_prob)`` hidden; ``C := eta_{p_c}(U)``; ``X`` a grey image of digit
    ``digits[X_digit]`` with ``X_digit := eta_{p_image}(C)``; ``N := eta_p([X_digit = 1 or U = 1])``.
    """
    from ..data.image_scms import frontdoor_colored_mnist

    d = frontdoor_colored_mnist(n, p=p, p_d=p_c, u_prob=u_prob, digits=tuple(digits), n_colors=1,
                                p_image=p_image, size=28, seed=seed, split=split, cache_dir=cache_dir,
                                name=f"covid_standin_{split}", progress=False, pool_per_class=pool_per_class)
    cols = d.dataset.columns
    x = np.ascontiguousarray(cols["I"][:, :1])  # the single colour is red: channel 0 is the grey image
    columns = {"C": cols["D"].astype(np.int64), "X": x, "N": cols["A"].astype(np.int64),
               "X_digit": cols["I_digit"].astype(np.int64)}
    vs = VariableSet([Categorical("C", 2), Image("X", (1, 28, 28), (-1.0, 1.0)), Categorical("N", 2)])
    truth = {c: [float(v) for v in d.scm.prob(["A"], do={"D": c}).values.reshape(-1)] for c in (0, 1)}
    cond = d.scm.prob(["A"], given=["D"]).transpose(["A", "D"]).values
    obs = {c: [float(v) for v in cond[:, c]] for c in (0, 1)}
    return BackdoorData(columns, vs, COVID_GRAPH, truth, obs,
                        {"generator": "frontdoor (one colour)", "config_hash": d.config_hash, "n": n,
                         "seed": seed, "split": split})


_FOLDER_RE = re.compile(r"c\s*=?\s*(\d)\W*_?\W*n\s*=?\s*(\d)", re.IGNORECASE)


def _read_image(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    try:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            return np.asarray(im.convert("L"))
    except ImportError:
        if suffix != ".png":
            raise ImportError(f"reading {path.name} needs Pillow (pip install pillow); without it only "
                              f".png and .npy images can be read") from None
        import matplotlib.image as mpimg

        a = mpimg.imread(str(path))
        if a.dtype != np.uint8:
            a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return a


def _to_gray(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=-1) if a.shape[-1] in (3, 4) else a[0]
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D (grey) or RGB image, got shape {a.shape}")
    return a.astype(np.float32)


def load_covid_folder(root, *, size: int = 64, limit: int | None = None) -> BackdoorData:
    """The real Covid X-ray data (ID-GEN Appendix F.5/F.6) from a local folder.

    Layouts (nothing is downloaded):

    * ``root/labels.csv`` with a header ``file,C,N`` (binary COVID-19 and pneumonia labels, the
      file path relative to ``root``), or
    * ImageFolder style: sub-folders named by both labels, e.g. ``root/c0_n1/*.png`` (also
      ``C=0,N=1``).

    Images (``.png``; ``.jpg`` etc. with Pillow; ``.npy`` arrays) are converted to grey and resized
    to ``size x size`` (area interpolation).  Returns a :class:`BackdoorData` without truth.
    """
    import torch.nn.functional as F

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"Covid X-ray folder {str(root)!r} does not exist. Put the images there (nothing is "
            f"downloaded) with either a labels.csv (columns file,C,N) or sub-folders such as c0_n1/ "
            f"holding the images of each (COVID-19, pneumonia) label pair")
    items: list[tuple[Path, int, int]] = []
    labels = root / "labels.csv"
    if labels.is_file():
        with labels.open(newline="") as f:
            reader = csv.DictReader(f)
            need = {"file", "C", "N"}
            if reader.fieldnames is None or not need <= set(reader.fieldnames):
                raise ValueError(f"{labels} needs the columns {sorted(need)}; it has {reader.fieldnames}")
            for i, row in enumerate(reader):
                try:
                    c, n_ = int(row["C"]), int(row["N"])
                except ValueError:
                    raise ValueError(f"{labels}, row {i + 2}: labels C and N must be 0 or 1, got "
                                     f"{row['C']!r}, {row['N']!r}") from None
                items.append((root / row["file"], c, n_))
    else:
        for sub in sorted(q for q in root.iterdir() if q.is_dir()):
            m = _FOLDER_RE.fullmatch(sub.name.strip())
            if m is None:
                continue
            c, n_ = int(m.group(1)), int(m.group(2))
            for f in sorted(sub.iterdir()):
                if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy"):
                    items.append((f, c, n_))
        if not items:
            raise FileNotFoundError(f"{root} has neither a labels.csv (columns file,C,N) nor label "
                                    f"sub-folders such as c0_n1/ with images")
    bad = [(str(f), c, n_) for f, c, n_ in items if c not in (0, 1) or n_ not in (0, 1)]
    if bad:
        raise ValueError(f"labels must be 0 or 1; e.g. {bad[0]}")
    missing = [str(f) for f, _, _ in items if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) listed in {root} are missing, e.g. {missing[0]}")
    if limit is not None:
        items = items[:int(limit)]
    imgs = []
    for f, _, _ in items:
        a = _to_gray(_read_image(f))
        if a.max() <= 1.0:
            a = a * 255.0
        t = torch.from_numpy(a)[None, None]
        t = F.interpolate(t, size=(size, size), mode="area") if t.shape[-1] != size or t.shape[-2] != size else t
        imgs.append(t[0].round().clamp(0, 255).to(torch.uint8).numpy())
    cols = {"C": np.array([c for _, c, _ in items], np.int64), "X": np.stack(imgs),
            "N": np.array([n_ for _, _, n_ in items], np.int64)}
    vs = VariableSet([Categorical("C", 2), Image("X", (1, size, size), (-1.0, 1.0)), Categorical("N", 2)])
    return BackdoorData(cols, vs, COVID_GRAPH, info={"root": str(root), "n": len(items), "size": size})


# ============================================================================= Covid: experiment
def _ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    e = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        m = (conf > a) & (conf <= b)
        if m.any():
            e += m.mean() * abs(float((pred[m] == y[m]).mean()) - float(conf[m].mean()))
    return float(e)


def _interventional_probs(net, c: int, n: int, seed: int) -> np.ndarray:
    """``P(N | do(C = c))`` of a sampling network: the outcome model's probabilities averaged over
    ``n`` ancestral samples of its inputs (Rao-Blackwellised)."""
    out = net.sample(n, do={"C": c}, seed=seed, nodes="all")
    nd = net.node("N")
    names = {i.id: i.name for i in net.nodes}
    inputs = {var: out[names[src]] for var, src in nd.wiring.items()}
    return nd.model.probs(inputs, n).mean(dim=0).cpu().numpy()


def covid_experiment(data: BackdoorData, *, diffusion: Mapping | None = None, classifier: Mapping | None = None,
                     samples: int = 1000, seed: int = 0, device: str | None = None,
                     held_out: BackdoorData | None = None, figure: str | Path | None = None,
                     methods: Sequence[str] = ("idgen", "no-diffusion", "no-latent")) -> dict:
    """ID-GEN (diffusion ``P(x | c)`` + calibrated classifier ``P(n | x, c')``) vs "no diffusion"
    (real images of class ``c``) vs "no latent" (``P(n | c)``) for ``P(N | do(C))``.

    Returns ``{"methods": {name: {"p": {c: P(N=1 | do(C=c))}, "tvd": ..., "seconds": ...}},
    "truth": ..., "calibration": {...}}`` (``tvd`` only when ``data.truth`` is known)."""
    from . import ClassifierBackend, DiffusionBackend, EmpiricalBackend, ModelCache, idgen, make_backend

    dif = make_backend({"type": "diffusion", **dict(diffusion or {})})
    clf = make_backend({"type": "classifier", **dict(classifier or {})})
    assert isinstance(dif, DiffusionBackend) and isinstance(clf, ClassifierBackend)
    cols = {k: data.columns[k] for k in ("C", "X", "N")}
    cache = ModelCache()
    out: dict[str, Any] = {"methods": {}, "truth": None, "observational": None}
    if data.truth is not None:
        out["truth"] = {c: data.truth[c][1] for c in (0, 1)}
        out["observational"] = {c: data.observational[c][1] for c in (0, 1)}
    nets = {}
    bad = sorted(set(methods) - {"idgen", "no-diffusion", "no-latent"})
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from idgen, no-diffusion, no-latent")
    for name, bes in (("idgen", {"X": dif, "N": clf, "C": clf}),
                      ("no-diffusion", {"X": EmpiricalBackend(), "N": clf, "C": clf})):
        if name not in methods:
            continue
        t0 = time.perf_counter()
        net = idgen(COVID_GRAPH, "P(N | do(C))", cols, variables=data.variables, backends=bes, cache=cache,
                    seed=seed, device=device)
        secs = time.perf_counter() - t0
        t1 = time.perf_counter()
        p = {c: float(_interventional_probs(net, c, samples, seed + 17 * c)[1]) for c in (0, 1)}
        out["methods"][name] = {"p": p, "seconds": secs, "sampling_seconds": time.perf_counter() - t1,
                                "network": net.describe()}
        nets[name] = net
    dev = torch.device(device) if device else torch.device("cpu")
    t0 = time.perf_counter()
    if "no-latent" in methods:
        m = clf.fit(data.variables["N"], {"C": data.variables["C"]},
                    {"N": torch.as_tensor(cols["N"]).to(dev), "C": torch.as_tensor(cols["C"]).to(dev)},
                    seed=seed, device=dev)
        pc = m.probs({"C": torch.tensor([0, 1], device=dev)}, 2)[:, 1].cpu().numpy()
        out["methods"]["no-latent"] = {"p": {0: float(pc[0]), 1: float(pc[1])}, "seconds": time.perf_counter() - t0}
    if data.truth is not None:
        for r in out["methods"].values():
            r["tvd"] = float(np.mean([abs(r["p"][c] - out["truth"][c]) for c in (0, 1)]))
    # calibration of the classifier P(n | x, c) on held-out rows (Appendix F.6, Figure 22)
    if held_out is not None and nets:
        mn = next(iter(nets.values())).node("N").model
        h = held_out.columns
        vals = {"C": torch.as_tensor(h["C"]).to(dev), "X": data.variables["X"].encode(h["X"], dev)}
        with torch.no_grad():
            logits = mn({**vals, "N": torch.as_tensor(h["N"]).to(dev)}).cpu()
        y = np.asarray(h["N"])
        raw = torch.softmax(logits, 1).numpy()
        cal = mn.probs(vals, len(y)).cpu().numpy()
        out["calibration"] = {"temperature": float(mn.temperature), "accuracy": float((raw.argmax(1) == y).mean()),
                              "ece_uncalibrated": _ece(raw, y), "ece_calibrated": _ece(cal, y)}
    if figure is not None and "idgen" in nets:
        _covid_figure(nets["idgen"], data, figure, seed)
    return out


def _covid_figure(net, data: BackdoorData, path, seed: int, k: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, k, figsize=(k * 0.8, 4 * 0.85 + 0.3), squeeze=False)
    rows = []
    for c in (0, 1):
        real = data.columns["X"][data.columns["C"] == c][:k]
        rows.append((f"real C={c}", (real.astype(np.float32) / 127.5 - 1.0)))
        gen = net.sample(k, do={"C": c}, seed=seed + 99 + c, nodes="all")["X"].cpu().numpy()
        rows.append((f"generated C={c}", gen))
    for i, (lab, imgs) in enumerate(rows):
        for j in range(k):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(imgs):
                ax.imshow((imgs[j][0] + 1) / 2, cmap="gray", vmin=0, vmax=1)
        axes[i][0].text(-0.1, 0.5, lab, transform=axes[i][0].transAxes, ha="right", va="center", fontsize=6)
    fig.suptitle("Covid X-ray stand-in: X ~ P(x | c), real vs diffusion", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def covid_benchmark(config=None, *, device: str | None = None, figure_dir=None) -> list[dict]:
    """Run ``configs/experiments/standin_covid_backdoor.yaml``; benchmark records (dicts)."""
    cfg = _load_yaml(config, "standin_covid_backdoor")
    dcfg = dict(cfg.get("data") or {})
    seed = int(cfg.get("seed", 0))
    data = covid_standin(seed=seed, **dcfg)
    held = covid_standin(**{**dcfg, "n": int(cfg.get("held_out", 1000))}, seed=seed + 1000, split="test")
    fig = None if figure_dir is None else Path(figure_dir) / "compare_covid_standin.png"
    res = covid_experiment(data, diffusion=cfg.get("diffusion"), classifier=cfg.get("classifier"),
                           samples=int(cfg.get("samples", 1000)), seed=seed, device=device, held_out=held, figure=fig)
    conf = "configs/experiments/standin_covid_backdoor.yaml"
    q = "P(N | do(C))"
    recs = []
    for c in (0, 1):
        recs.append({"method": "truth", "metric": f"P(N=1 | do(C={c}))", "query": q, "value": res["truth"][c],
                     "config": conf})
        recs.append({"method": "truth-observational", "metric": f"P(N=1 | C={c})", "query": "P(N | C)",
                     "value": res["observational"][c], "config": conf})
    for name, r in res["methods"].items():
        for c in (0, 1):
            recs.append({"method": name, "metric": f"P(N=1 | do(C={c}))", "query": q, "value": r["p"][c],
                         "seconds": r["seconds"], "config": conf})
        recs.append({"method": name, "metric": "tvd", "query": q, "value": r["tvd"], "seconds": r["seconds"],
                     "config": conf})
        recs.append({"method": name, "metric": "train_seconds", "query": q, "value": r["seconds"],
                     "seconds": r["seconds"], "config": conf})
    for k, v in (res.get("calibration") or {}).items():
        recs.append({"method": "idgen", "metric": f"classifier_{k}", "query": "P(N | X, C)", "value": v,
                     "config": conf})
    for r in recs:
        print(f"covid-standin {r['method']:20s} {r['metric']:28s} {r['value']:.4f}", flush=True)
    return recs


# ============================================================================= CelebA: data
#: Stroke intensity (max pixel, 0..1) of old and young faces.
AGE_LEVELS = (0.5, 1.0)


def _render_faces(gray: np.ndarray, male: np.ndarray, young: np.ndarray) -> np.ndarray:
    """uint8 ``[n, 3, 28, 28]``: the grey digit scaled to the age's stroke intensity, in the red
    (male) or green (female) channel."""
    g = gray.astype(np.float32) / np.maximum(gray.reshape(len(gray), -1).max(axis=1), 1)[:, None, None]
    g = g * np.asarray(AGE_LEVELS, np.float32)[young][:, None, None]
    out = np.zeros((len(gray), 3, 28, 28), np.float32)
    out[np.arange(len(gray)), np.where(male == 1, 0, 1)] = g
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class CelebAStandIn:
    """The CelebA stand-in: ``columns`` (``I1`` uint8 faces, ``Male``, ``Young`` labels and the
    rendered attributes ``sex_attr`` (1 male), ``young_attr``, ``digit``), variable specs and the
    population probabilities that give the audit's truth."""

    columns: dict[str, np.ndarray]
    variables: VariableSet
    p_male: float
    p_old: float
    graph: str = CELEBA_GRAPH
    info: dict = field(default_factory=dict)

    def audit_truth(self, bias: float, empirical: bool = False) -> dict[str, float]:
        """Exact ``P_{Male=0}(A)`` for :func:`rule_translator` ``(bias)``: the translation adds
        "female" to every male face, "young" to a fraction ``bias`` of the old faces, and never
        changes the digit (identity).  ``empirical=True``: with the faces' frequencies in
        ``columns`` (what a network resampling these faces as ``M_I1`` targets) instead of the
        population's."""
        pm, po = self.p_male, self.p_old
        if empirical:
            pm = float(np.mean(self.columns["sex_attr"]))
            po = float(np.mean(1 - self.columns["young_attr"]))
        return {"female": pm, "young": float(bias) * po, "digit_changed": 0.0}


def celeba_standin(n: int = 3000, *, p_male: float = 0.5, p_young_male: float = 0.35,
                   p_young_female: float = 0.75, label_noise: float = 0.05, seed: int = 0,
                   split: str = "train", cache_dir=None, pool_per_class: int | None = None) -> CelebAStandIn:
    """Faces for the audit (module docstring): sex ~ Bernoulli(p_male), young | sex as given (the
    dataset's sex-age correlation), a hidden ``U ~ Bernoulli(label_noise)`` flipping both labels
    (``Male <-> Young``)."""
    from ..data.image_scms import digit_pool

    rng = np.random.default_rng(seed)
    pool = digit_pool("embedded", split, (), pool_per_class, cache_dir=cache_dir, progress=False)
    sex = (rng.random(n) < p_male).astype(np.int64)
    young = (rng.random(n) < np.where(sex == 1, p_young_male, p_young_female)).astype(np.int64)
    digit = rng.integers(0, 10, n)
    base = pool.draw(digit, rng)
    img = _render_faces(pool.gray(base), sex, young)
    u = (rng.random(n) < label_noise).astype(np.int64)
    cols = {"I1": img, "Male": sex ^ u, "Young": young ^ u, "sex_attr": sex, "young_attr": young,
            "digit": digit.astype(np.int64)}
    vs = VariableSet([Image("I1", (3, 28, 28), (-1.0, 1.0)), Categorical("Male", 2), Categorical("Young", 2),
                      Image("I2", (3, 28, 28), (-1.0, 1.0))])
    p_old = p_male * (1 - p_young_male) + (1 - p_male) * (1 - p_young_female)
    return CelebAStandIn(cols, vs, float(p_male), float(p_old),
                         info={"n": n, "seed": seed, "split": split, "label_noise": label_noise})


# ============================================================================= CelebA: translators
def rule_translator(bias: float = 0.0) -> Callable[[Mapping[str, Tensor], Tensor], Tensor]:
    """An exact translator ``f({"I1", "Male"}, noise) -> I2`` (images in ``[-1, 1]``): moves the
    face to the target sex's colour channel; with ``bias > 0`` a face translated to female is also
    made young (full stroke intensity) when ``noise[:, 0] < Phi^{-1}(bias)``."""
    from scipy.stats import norm

    thr = float(norm.ppf(min(max(bias, 0.0), 1.0))) if 0 < bias < 1 else (np.inf if bias >= 1 else -np.inf)

    def translate(parents: Mapping[str, Tensor], noise: Tensor) -> Tensor:
        x = (parents["I1"].float() + 1.0) / 2.0
        male = parents["Male"].reshape(-1).long()
        g = x.amax(dim=1)                                    # the grey face
        if bias > 0:
            peak = g.flatten(1).amax(dim=1).clamp_min(1e-6)
            young = (noise[:, 0] < thr) & (male == 0)
            g = torch.where(young[:, None, None], g / peak[:, None, None] * AGE_LEVELS[1], g)
        out = torch.zeros_like(x)
        out[torch.arange(len(g)), torch.where(male == 1, 0, 1)] = g
        return out * 2.0 - 1.0

    translate.__name__ = f"rule_translator(bias={bias:g})"
    return translate


class ConvTranslator(nn.Module):
    """A small image-to-image network: per pixel, the face's channels, a plane of the target sex
    and a plane of the face's peak intensity (its one global feature) go through 1x1 convolutions
    (a pixel-wise MLP) to the translated face."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(5, channels, 1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                 nn.Conv2d(channels, 3, 1))

    def forward(self, parents: Mapping[str, Tensor], noise: Tensor | None = None) -> Tensor:
        x = parents["I1"].float()
        m = parents["Male"].reshape(-1, 1, 1, 1).float().expand(-1, 1, *x.shape[2:])
        peak = x.flatten(1).amax(dim=1).reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.net(torch.cat([x, m * 2.0 - 1.0, peak], dim=1)).clamp(-1.0, 1.0)


def train_translator(data: CelebAStandIn, *, bias: float = 1.0, steps: int = 400, batch_size: int = 64,
                     lr: float = 5e-3, seed: int = 0, device=None) -> ConvTranslator:
    """Train a :class:`ConvTranslator` on pairs (face, random target sex) -> the rendering of the
    same digit in the target sex, made young when translated to female with probability ``bias``
    (``bias = 1``: a translator that learned "female means young" from its training pairs)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(device) if device else torch.device("cpu")
    model = ConvTranslator().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x_all = torch.as_tensor(data.columns["I1"]).float().div(127.5).sub(1.0)
    teacher = rule_translator(bias)
    for _ in range(int(steps)):
        idx = torch.as_tensor(rng.integers(0, len(x_all), batch_size))
        x = x_all[idx].to(dev)
        target_sex = torch.as_tensor(rng.integers(0, 2, batch_size)).to(dev)
        with torch.no_grad():
            y = teacher({"I1": x, "Male": target_sex}, torch.as_tensor(rng.standard_normal((batch_size, 1)),
                                                                       dtype=x.dtype).to(dev))
        loss = (model({"I1": x, "Male": target_sex}) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.requires_grad_(False)
    model.info = {"steps": int(steps), "final_loss": float(loss.detach()), "bias": float(bias)}
    return model


# ============================================================================= CelebA: classifier
class StandInAttributeClassifier:
    """Pluggable attribute classifier: ``classifier(images) -> {attribute: codes}`` (images in
    ``[-1, 1]``); one small CNN per attribute (``female``, ``young``, ``digit``)."""

    def __init__(self, models: Mapping[str, nn.Module], accuracy: Mapping[str, float]):
        self.models = dict(models)
        self.accuracy = dict(accuracy)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, np.ndarray]:
        x = torch.as_tensor(images).float()
        out = {}
        for k, m in self.models.items():
            dev = next(m.parameters()).device
            out[k] = torch.cat([m(x[a:a + 512].to(dev)).argmax(1).cpu() for a in range(0, len(x), 512)]).numpy()
        return out


def train_attribute_classifier(data: CelebAStandIn, held_out: CelebAStandIn | None = None, *,
                               steps: Mapping[str, int] | None = None, seed: int = 0,
                               device=None) -> StandInAttributeClassifier:
    """Small CNNs (:class:`whatifgan.metrics.images.AttributeCNN`) for ``female`` (colour),
    ``young`` (intensity) and ``digit`` on the rendered faces; accuracies on ``held_out``."""
    from ..metrics.images import AttributeCNN

    steps = {"female": 60, "young": 150, "digit": 400, **dict(steps or {})}
    dev = torch.device(device) if device else torch.device("cpu")
    x = torch.as_tensor(data.columns["I1"]).float().div(127.5).sub(1.0)
    labels = {"female": 1 - data.columns["sex_attr"], "young": data.columns["young_attr"],
              "digit": data.columns["digit"]}
    models = {}
    g = np.random.default_rng(seed)
    for k, y in labels.items():
        torch.manual_seed(seed)
        m = AttributeCNN(3, 10 if k == "digit" else 2, channels=(16, 32, 32), feature_dim=64).to(dev)
        opt = torch.optim.Adam(m.parameters(), lr=2e-3)
        yt = torch.as_tensor(y)
        for _ in range(int(steps[k])):
            idx = torch.as_tensor(g.integers(0, len(x), 128))
            loss = nn.functional.cross_entropy(m(x[idx].to(dev)), yt[idx].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
        models[k] = m
    clf = StandInAttributeClassifier(models, {})
    if held_out is not None:
        xh = torch.as_tensor(held_out.columns["I1"]).float().div(127.5).sub(1.0)
        pred = clf(xh)
        truth = {"female": 1 - held_out.columns["sex_attr"], "young": held_out.columns["young_attr"],
                 "digit": held_out.columns["digit"]}
        clf.accuracy = {k: float((pred[k] == truth[k]).mean()) for k in models}
    return clf


# ============================================================================= CelebA: audit
def audit_translator(data: CelebAStandIn, translator: Any, classifier: Callable[[Tensor], Mapping[str, Any]], *,
                     n: int = 1000, male: int = 0, seed: int = 0, noise_dim: int = 1, device=None,
                     young_backend: Any = None, cache=None) -> dict:
    """``P_{Male=male}(A)`` by ID-GEN with ``translator`` plugged in as ``M_I2``.

    ``translator``: a module or callable ``f({"I1", "Male"[, "Young"]}, noise) -> I2`` (images in
    ``[-1, 1]``); ``classifier(images) -> {attribute: codes}`` with binary attributes (1 = present)
    and optionally ``digit``.  ``A_k = P2_k and not P1_k`` for binary attributes;
    ``digit_changed = P2.digit != P1.digit``.  Returns ``{"added": {attribute: rate}, "network":
    description, "seconds": ...}``."""
    from . import PretrainedBackend, idgen

    reads = ["I1", "Male"] + (["Young"] if getattr(translator, "reads_young", False) else [])
    cols = {k: data.columns[k] for k in ("I1", "Male", "Young")}
    t0 = time.perf_counter()
    bes = {"I1": "empirical", "Young": young_backend or {"type": "classifier", "steps": 300},
           "I2": PretrainedBackend(translator, inputs=reads, noise_dim=noise_dim,
                                   name=getattr(translator, "__name__", type(translator).__name__))}
    net = idgen(CELEBA_GRAPH, "P(I2 | do(Male))", cols, variables=data.variables, backends=bes, seed=seed,
                device=device, cache=cache)
    s = net.sample(n, do={"Male": male}, seed=seed, nodes="all")
    p1 = classifier(s["I1"].float().div(127.5).sub(1.0) if s["I1"].dtype == torch.uint8 else s["I1"])
    p2 = classifier(s["I2"])
    added = {}
    for k in p1:
        a, b = np.asarray(p1[k]), np.asarray(p2[k])
        if k == "digit":
            added["digit_changed"] = float((a != b).mean())
        else:
            added[k] = float(((b == 1) & (a == 0)).mean())
    return {"added": added, "network": net.describe(), "seconds": time.perf_counter() - t0,
            "samples": {"I1": s["I1"][:10].cpu(), "I2": s["I2"][:10].cpu()}}


def celeba_benchmark(config=None, *, device: str | None = None, figure_dir=None) -> list[dict]:
    """Run ``configs/experiments/standin_celeba_audit.yaml``; benchmark records (dicts)."""
    cfg = _load_yaml(config, "standin_celeba_audit")
    seed = int(cfg.get("seed", 0))
    dcfg = dict(cfg.get("data") or {})
    data = celeba_standin(seed=seed, **dcfg)
    held = celeba_standin(**{**dcfg, "n": int(cfg.get("held_out", 1000))}, seed=seed + 1000, split="test")
    t0 = time.perf_counter()
    clf = train_attribute_classifier(data, held, steps=cfg.get("classifier_steps"), seed=seed, device=device)
    clf_s = time.perf_counter() - t0
    conf = "configs/experiments/standin_celeba_audit.yaml"
    q = "P(A | do(Male=0))"
    recs = [{"method": "attribute-classifier", "metric": f"accuracy_{k}", "query": "held-out faces", "value": v,
             "seconds": clf_s, "config": conf} for k, v in clf.accuracy.items()]
    bias = float(cfg.get("bias", 0.6))
    translators = {"rule-faithful": (rule_translator(0.0), 0.0), "rule-biased": (rule_translator(bias), bias)}
    tcfg = dict(cfg.get("translator") or {})
    t0 = time.perf_counter()
    learned = train_translator(data, bias=float(tcfg.get("bias", 1.0)), steps=int(tcfg.get("steps", 400)),
                               seed=seed, device=device)
    tr_s = time.perf_counter() - t0
    translators["learned-biased"] = (learned, float(tcfg.get("bias", 1.0)))
    panels = []
    from . import ModelCache

    cache = ModelCache()  # M_I1 and M_Young are the same for every translator
    for name, (tr, b) in translators.items():
        res = audit_translator(data, tr, clf, n=int(cfg.get("samples", 1000)), seed=seed, device=device,
                               cache=cache)
        truth = data.audit_truth(b)
        for k, v in res["added"].items():
            recs.append({"method": name, "metric": f"added_{k}", "query": q, "value": v,
                         "seconds": res["seconds"] + (tr_s if name == "learned-biased" else 0.0), "config": conf})
            recs.append({"method": f"truth:{name}", "metric": f"added_{k}", "query": q, "value": truth[k],
                         "config": conf})
            recs.append({"method": name, "metric": f"abs_error_{k}", "query": q, "value": abs(v - truth[k]),
                         "config": conf})
        panels.append((name, res["samples"]))
    if figure_dir is not None:
        _celeba_figure(panels, Path(figure_dir) / "compare_celeba_standin.png")
    for r in recs:
        print(f"celeba-standin {r['method']:28s} {r['metric']:22s} {r['value']:.4f}", flush=True)
    return recs


def _celeba_figure(panels, path, k: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(panels), k, figsize=(k * 0.8, 2 * len(panels) * 0.85 + 0.3), squeeze=False)
    for p, (name, s) in enumerate(panels):
        for r, key in enumerate(("I1", "I2")):
            imgs = s[key].float()
            imgs = imgs / 255.0 if s[key].dtype == torch.uint8 else (imgs + 1) / 2
            for j in range(k):
                ax = axes[2 * p + r][j]
                ax.axis("off")
                if j < len(imgs):
                    ax.imshow(imgs[j].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[2 * p + r][0].text(-0.1, 0.5, f"{name}\n{key}", transform=axes[2 * p + r][0].transAxes,
                                    ha="right", va="center", fontsize=6)
    fig.suptitle("CelebA audit stand-in: I1 and I2 ~ P_{Male=0}(I2)", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
