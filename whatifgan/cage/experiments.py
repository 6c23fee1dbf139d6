"""The CAGE experiments: synthetic mixture of Gaussians (Section 4.1), Morpho-MNIST thickness ->
intensity (Section 4.2) and the probe of a DCM's image (the WhatIfGAN toolkit's own models).

Each ``run_*`` takes a config dict (the YAML files ``configs/experiments/cage_*.yaml``), trains
the generative model (or loads it from ``<out_dir>/model.pt`` when present with the same
settings), runs :class:`~whatifgan.cage.probe.CAGE` on the attribute pair in both orders and
returns a report: the probe summaries, the true direction, whether the inferred one matches,
timings and the figures written to ``out_dir``.

Mixture of Gaussians (Section 4.1)
----------------------------------
The paper draws the cause ``m_c`` (which mixture a point comes from: 8 Gaussians or 3 Gaussians)
and defines the effect ``m_e = 1[(x + y) / 2 < 2.5]``; the figure's exact layout is not given in
the text. Here (:data:`MOG_LAYOUT`): ``m_c = 0`` -- 8 Gaussians (sd 0.35) on a circle of radius
2 around (1, 1); ``m_c = 1`` -- 3 Gaussians (sd 0.6) at (5.5, 5.5), (6, 1.5), (3.5, 0.5), equally
weighted; ``P(m_c = 1) = 1/2``. Then ``P(m_e = 1 | m_c = 0) ~ 0.95`` and
``P(m_e = 1 | m_c = 1) ~ 0.29``. Masked autoregressive flows are the generative models (Appendix B:
10 transforms, 5000 points); the config may list several flows (``models``) and ``seeds`` -- each
(flow, seed) pair is trained and probed separately, which shows how much the probe's answer
depends on the learned latent geometry.

Morpho-MNIST (Section 4.2)
--------------------------
Images from :func:`whatifgan.data.image_scms.morpho_mnist` with two thickness levels (1.5 and
5 px stroke width) and two stroke intensities (100 and 250): ``Thickness ~ U{0,1}``,
``Intensity := eta_p(Thickness)`` (kept with probability ``1 - p``, else uniform), digits
uniform. The paper fine-tunes a MintNet flow; here (CPU) the models are a MAF on the top 32
principal components of the images (:class:`~whatifgan.cage.models.MAF` with ``data_shape``) and,
for comparison, an MLP VAE, both trained on the training split. The annotated dataset ``D`` of
Step 1 is a held-out set rendered from unseen MNIST digits (the paper projects the test set).
Outcomes use the latent classifiers (Eq. 3) and, optionally, the toolkit's pixel-space
attribute CNNs on the decoded counterfactuals (Eq. 4).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import MAF, VAE, FlowModel, VAEModel, fit_flow, fit_vae
from .probe import CAGE, CAGEConfig, ProbeResult, config_dict, direction_table

__all__ = ["MOG_LAYOUT", "mog_data", "morpho_data", "run_experiment", "run_mog", "run_morpho", "load_config",
           "report_rows"]

#: The mixture layout of :func:`mog_data` (see the module docstring).
MOG_LAYOUT = {
    "ring_center": [1.0, 1.0], "ring_radius": 2.0, "ring_components": 8, "ring_sd": 0.35,
    "blob_centers": [[5.5, 5.5], [6.0, 1.5], [3.5, 0.5]], "blob_sd": 0.6,
    "p_blobs": 0.5, "effect_threshold": 2.5,
}


# ============================================================================= configs
def load_config(config: str | Path | Mapping) -> dict:
    """A config dict from a mapping, a YAML path, or a name in ``configs/experiments``."""
    if isinstance(config, Mapping):
        return dict(config)
    import yaml

    p = Path(config)
    if not p.exists():
        root = Path(__file__).resolve().parents[2] / "configs" / "experiments"
        for cand in (root / f"{config}.yaml", root / str(config)):
            if cand.exists():
                p = cand
                break
        else:
            raise FileNotFoundError(f"no CAGE config {config!r} (neither a file nor a name in {root})")
    return dict(yaml.safe_load(p.read_text()))


def _settings_hash(d: Mapping) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ============================================================================= mixture of Gaussians
def mog_data(n: int, seed: int = 0, layout: Mapping | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Section 4.1's toy data: ``(x [n, 2] float32, m_c, m_e)`` with ``m_c = 1`` for the mixture of
    3 Gaussians and ``m_e = 1[mean(x, y) < threshold]`` (:data:`MOG_LAYOUT`)."""
    L = {**MOG_LAYOUT, **dict(layout or {})}
    rng = np.random.default_rng(seed)
    m_c = (rng.random(n) < L["p_blobs"]).astype(np.int64)
    k = int(L["ring_components"])
    ang = 2 * np.pi * rng.integers(k, size=n) / k
    c = np.asarray(L["ring_center"], dtype=float)
    ring = np.stack([c[0] + L["ring_radius"] * np.cos(ang), c[1] + L["ring_radius"] * np.sin(ang)], 1)
    ring = ring + L["ring_sd"] * rng.normal(size=(n, 2))
    centers = np.asarray(L["blob_centers"], dtype=float)
    blobs = centers[rng.integers(len(centers), size=n)] + L["blob_sd"] * rng.normal(size=(n, 2))
    x = np.where(m_c[:, None] == 1, blobs, ring)
    m_e = (x.mean(axis=1) < L["effect_threshold"]).astype(np.int64)
    return x.astype(np.float32), m_c, m_e


def _load_or_train(path: Path | None, settings: Mapping, load, train):
    """Load ``path`` when it exists with the same settings hash, else train and save. Returns
    ``(model, training seconds, loaded from the cache)``."""
    h = _settings_hash(settings)
    if path is not None and path.is_file():
        try:
            model, extra = load(path)
            if extra.get("settings_hash") == h:  # the training time recorded when it was trained
                return model, float(extra.get("seconds", 0.0)), True
        except Exception:
            pass
    t0 = time.perf_counter()
    model = train()
    secs = time.perf_counter() - t0
    if path is not None:
        model.save(path, settings_hash=h, settings=json.loads(json.dumps(settings, default=str)), seconds=secs)
    return model, secs, False


def _load_with_extra(cls):
    def load(path):
        from trainers.core import load_checkpoint

        ck = load_checkpoint(path)
        return cls.load(path), dict(ck.get("extra", {}))

    return load


FLOW_DEFAULTS = {"transforms": 10, "hidden_features": [64, 64], "steps": 3000, "batch_size": 256, "lr": 2e-3,
                 "device": "cpu"}


def _mog_single(cfg: Mapping, spec: Mapping, seed: int, out: Path | None, progress, cage_base: Mapping) -> tuple:
    """One MAF (``spec``) trained and probed on the data of ``seed``."""
    from trainers.core import seed_everything

    data_cfg = {"n_train": 5000, "n_annotated": 5000, "layout": {}, **dict(cfg.get("data", {}))}
    data_cfg["seed"] = int(seed)
    name = spec.get("name", "maf")
    flow_cfg = {**FLOW_DEFAULTS, **{k: v for k, v in spec.items() if k != "name"}}
    flow_cfg["seed"] = int(seed)
    cage_cfg = CAGEConfig.from_dict({**dict(cage_base), "seed": int(cage_base.get("seed", 0)) + int(seed)})
    x, _, _ = mog_data(int(data_cfg["n_train"]), int(seed), data_cfg["layout"])

    def train() -> MAF:
        seed_everything(int(seed))
        flow = MAF(2, transforms=int(flow_cfg["transforms"]), hidden_features=tuple(flow_cfg["hidden_features"]))
        fit_flow(flow, x, steps=int(flow_cfg["steps"]), batch_size=int(flow_cfg["batch_size"]),
                 lr=float(flow_cfg["lr"]), seed=int(seed), device=flow_cfg["device"], progress=progress)
        return flow

    settings = {"data": data_cfg, "flow": flow_cfg}
    path = out / f"model_{name}_seed{seed}.pt" if out is not None else None
    flow, train_secs, cached = _load_or_train(path, settings, _load_with_extra(MAF), train)
    model = FlowModel(flow)
    xd, cd, ed = mog_data(int(data_cfg["n_annotated"]), int(seed) + 100, data_cfg["layout"])
    names = cfg.get("attributes", {"cause": "mixture", "effect": "mean_below"})
    cname, ename = names["cause"], names["effect"]
    t0 = time.perf_counter()
    cage = CAGE(model, cage_cfg).fit(xd, {cname: cd, ename: ed})
    res = cage.probe(cname, ename)
    probe_secs = time.perf_counter() - t0
    with torch.no_grad():
        nll = float(-flow.log_prob(torch.as_tensor(xd)).mean())
    report = _report("mog", f"cage-{name}", res, truth=f"{cname} -> {ename}", cfg=cfg, cage_cfg=cage_cfg,
                     train_secs=train_secs, probe_secs=probe_secs, cached=cached,
                     extra={"seed": int(seed), "model": {"name": name, **flow_cfg}, "test_nll": nll,
                            "p_effect_given_cause": [float(ed[cd == 0].mean()), float(ed[cd == 1].mean())]})
    return report, res, model, (xd, cd)


def run_mog(config: Mapping, out_dir: str | Path | None = None, *, progress: bool | None = False,
            plots: bool = True) -> dict:
    """Section 4.1 with masked autoregressive flows: for each flow of ``models`` (default: the one
    of ``flow``) and each seed of ``seeds`` (default: ``data.seed``), train, probe ``(m_c, m_e)``;
    plot Figure 3 (data, null histogram with the estimate, ``Delta tau`` against alpha) for the
    first run and the ``Delta tau`` curves of all runs. Returns ``{"reports": [...]}`` (one report
    when there is a single run)."""
    cfg = dict(config)
    specs = list(cfg.get("models") or [{"name": "maf", **dict(cfg.get("flow", {}))}])
    seeds = [int(v) for v in (cfg.get("seeds") or [int(dict(cfg.get("data", {})).get("seed", 0))])]
    cage_base = dict(cfg.get("cage", {}))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    reports, results, labels, first = [], [], [], None
    for spec in specs:
        for seed in seeds:
            rep, res, model, data = _mog_single(cfg, spec, seed, out, progress, cage_base)
            reports.append(rep)
            results.append(res)
            labels.append(f"{spec.get('name', 'maf')}, seed {seed}")
            if first is None:
                first = (res, model, data)
    if plots and out is not None:
        from . import plots as P

        res, model, (xd, cd) = first
        figs = [str(P.mog_figure(xd, cd, res, out / "cage_mog.png", decoded=model.decode_batched(
            model.sample_prior(2000, torch.Generator().manual_seed(5))).cpu().numpy()))]
        if len(results) > 1:
            figs.append(str(P.delta_tau_figure(results, out / "cage_mog_delta_tau.png", labels=labels,
                                               title="Mixture of Gaussians: mixture as m1, mean_below as m2")))
        for r in reports:
            r["figures"] = figs
    total = time.perf_counter() - t_all
    for r in reports:
        r["seconds"] = total
    return reports[0] if len(reports) == 1 else {"reports": reports}


# ============================================================================= Morpho-MNIST
def morpho_data(data_cfg: Mapping, *, progress: bool | None = False):
    """The training and annotated (held-out, unseen digits) Morpho-MNIST sets of the config."""
    from whatifgan.data.image_scms import morpho_mnist

    d = dict(data_cfg)
    common = {"thickness_px": tuple(d.get("thickness_px", (1.5, 5.0))),
              "intensity_levels": tuple(d.get("intensity_levels", (100.0, 250.0))), "p": float(d.get("p", 0.25)),
              "cache_dir": d.get("cache_dir"), "progress": progress, "workers": int(d.get("workers", 1))}
    if len(common["thickness_px"]) != 2 or len(common["intensity_levels"]) != 2:
        raise ValueError("CAGE probes binary attributes: give two thickness levels and two intensity levels")
    train = morpho_mnist(n=int(d.get("n_train", 20000)), seed=int(d.get("seed", 0)), name="cage_morpho", **common)
    annotated = morpho_mnist(n=int(d.get("n_annotated", 5000)), seed=int(d.get("seed", 0)) + 1, split="test",
                             name="cage_morpho_test", **common)
    return train, annotated


MORPHO_MODEL_DEFAULTS = {
    "flow": {"features": 32, "transforms": 5, "hidden_features": [256, 256], "steps": 2000, "batch_size": 256,
             "lr": 1e-3, "seed": 0, "device": "cpu"},
    "vae": {"latent_dim": 16, "hidden": 256, "channels": [32, 64, 64], "arch": "mlp", "encoder": "sample",
            "steps": 2000, "batch_size": 128, "lr": 2e-3, "beta": 1.0, "seed": 0, "device": "cpu"},
}


def _morpho_model(spec: Mapping, x_train, out: Path | None, train_hash: str, progress):
    """Train (or load) one generative model of the Morpho-MNIST images: ``kind: flow`` (a MAF on
    the top principal components) or ``kind: vae``. Returns ``(adapter, train seconds, cached, info)``."""
    from trainers.core import seed_everything

    kind = spec.get("kind", "flow")
    if kind not in MORPHO_MODEL_DEFAULTS:
        raise ValueError(f"Morpho-MNIST model kind must be one of {sorted(MORPHO_MODEL_DEFAULTS)}, got {kind!r}")
    m = {**MORPHO_MODEL_DEFAULTS[kind], **{k: v for k, v in spec.items() if k not in ("kind", "name")}}
    name = spec.get("name", kind)
    path = out / f"model_{name}.pt" if out is not None else None
    settings = {"kind": kind, "model": {k: v for k, v in m.items() if k != "encoder"}, "train_hash": train_hash}
    if kind == "flow":
        def train():
            seed_everything(int(m["seed"]))
            flow = MAF(int(m["features"]), transforms=int(m["transforms"]),
                       hidden_features=tuple(m["hidden_features"]), data_shape=(1, 28, 28))
            fit_flow(flow, x_train, steps=int(m["steps"]), batch_size=int(m["batch_size"]), lr=float(m["lr"]),
                     seed=int(m["seed"]), device=m["device"], progress=progress)
            return flow

        flow, secs, cached = _load_or_train(path, settings, _load_with_extra(MAF), train)
        return FlowModel(flow), secs, cached, {"kind": kind, "name": name, **m}

    def train():
        seed_everything(int(m["seed"]))
        vae = VAE((1, 28, 28), latent_dim=int(m["latent_dim"]), hidden=int(m["hidden"]),
                  channels=tuple(m["channels"]), arch=str(m["arch"]))
        fit_vae(vae, x_train, steps=int(m["steps"]), batch_size=int(m["batch_size"]), lr=float(m["lr"]),
                beta=float(m["beta"]), seed=int(m["seed"]), device=m["device"], progress=progress)
        return vae

    vae, secs, cached = _load_or_train(path, settings, _load_with_extra(VAE), train)
    return VAEModel(vae, encoder=str(m["encoder"]), seed=int(m["seed"])), secs, cached, {"kind": kind, "name": name, **m}


def run_morpho(config: Mapping, out_dir: str | Path | None = None, *, progress: bool | None = False,
               plots: bool = True) -> dict:
    """Section 4.2 on Morpho-MNIST thickness -> intensity: for each configured generative model
    (``models``: a flow on the principal subspace and/or a VAE), probe ``(Thickness, Intensity)``
    with latent outcomes (Eq. 3); for the first model also with pixel outcomes (Eq. 4, the
    toolkit's attribute CNNs on the decoded counterfactuals) when ``pixel_outcome`` is set, and
    draw the ``Delta tau`` curves, the null histograms and the counterfactual grid."""
    cfg = dict(config)
    data_cfg = dict(cfg.get("data", {}))
    specs = list(cfg.get("models") or [{"kind": "flow"}])
    cage_cfg = CAGEConfig.from_dict(cfg.get("cage", {}))
    pixel_cfg = cfg.get("pixel_outcome")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    train_data, annotated = morpho_data(data_cfg, progress=progress)
    data_secs = time.perf_counter() - t0
    x_train = train_data.dataset.columns["Image"]
    cols = annotated.dataset.columns
    attrs = {"Thickness": cols["Thickness"], "Intensity": cols["Intensity"]}
    truth = "Thickness -> Intensity"
    reports, results, labels = [], [], []
    first = None
    for spec in specs:
        model, train_secs, cached, info = _morpho_model(spec, x_train, out, train_data.config_hash, progress)
        t0 = time.perf_counter()
        cage = CAGE(model, cage_cfg).fit(cols["Image"], attrs)
        res = cage.probe("Thickness", "Intensity")
        zp = cage.z_prior
        c_t, c_i = cage.classifiers["Thickness"], cage.classifiers["Intensity"]
        extra = {"model": info, "data_seconds": data_secs,
                 "agreement_T_I_data": float((attrs["Thickness"] == attrs["Intensity"]).mean()),
                 "agreement_T_I_prior": float((c_t.predict(zp) == c_i.predict(zp)).mean())}
        if isinstance(model, FlowModel):
            extra["explained_variance"] = getattr(model.flow, "explained_variance", None)
        if isinstance(model, VAEModel):
            extra["active_units"] = int(len(model.active_units(cols["Image"])))
        reports.append(_report("morpho", f"cage-{info['name']}-latent", res, truth=truth, cfg=cfg,
                               cage_cfg=cage_cfg, train_secs=train_secs, probe_secs=time.perf_counter() - t0,
                               cached=cached, extra=extra))
        results.append(res)
        labels.append(f"{info['name']}, latent")
        if first is None:
            first = (model, cage, info)
    if pixel_cfg:
        from whatifgan.metrics.images import train_attribute_classifiers

        model, cage0, info = first
        pc = dict(pixel_cfg)
        t0 = time.perf_counter()
        clfs = train_attribute_classifiers(train_data, kinds=["thickness", "intensity"],
                                           steps=int(pc.get("steps", 300)), seed=int(pc.get("seed", 0)),
                                           channels=tuple(pc.get("channels", (16, 32, 32))),
                                           max_images=int(pc.get("max_images", 20000)),
                                           device=pc.get("device", "cpu"), progress=progress,
                                           cache_dir=data_cfg.get("cache_dir"))
        clf_secs = time.perf_counter() - t0

        def psi(kind):
            return lambda x: clfs.predict_proba(x.cpu().clamp(0, 1), kind, value_range=(0.0, 1.0))[:, 1]

        pix_cfg = CAGEConfig.from_dict({**config_dict(cage_cfg), "outcome": "pixel",
                                        "k": int(pc.get("k", cage_cfg.k)),
                                        "n_permutations": int(pc.get("n_permutations", cage_cfg.n_permutations))})
        t0 = time.perf_counter()
        cage_pix = CAGE(model, pix_cfg, pixel_classifiers={"Thickness": psi("thickness"),
                                                           "Intensity": psi("intensity")})
        cage_pix.fit(None, attrs, latents=cage0.z_data)
        res_pix = cage_pix.probe("Thickness", "Intensity")
        reports.append(_report("morpho", f"cage-{info['name']}-pixel", res_pix, truth=truth, cfg=cfg,
                               cage_cfg=pix_cfg, train_secs=0.0, probe_secs=time.perf_counter() - t0,
                               cached=True, extra={"model": info, "classifier_seconds": clf_secs,
                                                   "classifier_accuracy": dict(clfs.accuracy)}))
        results.append(res_pix)
        labels.append(f"{info['name']}, pixel (Eq. 4)")
    if plots and out is not None:
        from . import plots as P

        model, cage0, info = first
        figs = [str(P.delta_tau_figure(results, out / "cage_morpho_delta_tau.png", labels=labels,
                                       title="Morpho-MNIST: Thickness as m1, Intensity as m2")),
                str(P.null_figure(results[0], out / "cage_morpho_null.png"))]
        grid = dict(cfg.get("grid", {}))
        n_grid = int(grid.get("n", 6))
        grid_alphas = tuple(grid.get("alphas", (0.0, 1.0, 2.0, 3.0, 4.0)))
        z0 = torch.as_tensor(cage0.z_prior[:n_grid], dtype=torch.get_default_dtype())
        rows = {"do(Thickness)": cage0.counterfactual_path("Thickness", z0, grid_alphas),
                "do(Intensity)": cage0.counterfactual_path("Intensity", z0, grid_alphas)}
        figs.append(str(P.counterfactual_grid(rows, grid_alphas, out / "cage_morpho_grid.png",
                                              title=f"G(z + s alpha h_c), {info['name']}: each latent moved to "
                                                    f"the other side of its factual treatment")))
        for r in reports:
            r["figures"] = figs
    total = time.perf_counter() - t_all
    for r in reports:
        r["seconds"] = total
    return {"reports": reports}


# ============================================================================= reports
def _report(benchmark: str, method: str, res: ProbeResult, *, truth: str, cfg: Mapping, cage_cfg: CAGEConfig,
            train_secs: float, probe_secs: float, cached: bool, extra: Mapping | None = None) -> dict:
    s = res.summary()
    return {"benchmark": benchmark, "method": method, "name": cfg.get("name", benchmark), "summary": s,
            "truth": truth, "direction_correct": int(s["direction"] == truth), "result": res.to_dict(),
            "train_seconds": train_secs, "probe_seconds": probe_secs, "model_cached": cached,
            "cage_config": config_dict(cage_cfg), **dict(extra or {})}


def report_rows(reports) -> list[dict]:
    """Rows for :func:`~whatifgan.cage.probe.direction_table`."""
    rows = []
    for r in reports:
        seed = f", seed {r['seed']}" if "seed" in r else ""
        rows.append({**r["summary"], "name": f"{r['benchmark']} ({r['method']}{seed})", "truth": r["truth"]})
    return rows


def run_experiment(config: str | Path | Mapping, out_dir: str | Path | None = None, *,
                   progress: bool | None = False, plots: bool = True) -> list[dict]:
    """Run the experiment a config names (``experiment: mog | morpho``); a list of reports."""
    cfg = load_config(config)
    kind = cfg.get("experiment")
    runners = {"mog": run_mog, "morpho": run_morpho}
    if kind not in runners:
        raise ValueError(f"config 'experiment' must be one of {sorted(runners)}, got {kind!r}")
    out = runners[kind](cfg, out_dir, progress=progress, plots=plots)
    return out["reports"] if "reports" in out else [out]


def print_table(reports) -> str:
    return direction_table(report_rows(reports))
