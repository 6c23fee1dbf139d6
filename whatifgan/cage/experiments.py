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

The image of a DCM (:func:`run_dcm`)
------------------------------------
A small :class:`whatifgan.dcm.DCM` of the Morpho-MNIST graph (``Thickness -> Intensity``,
``{Thickness, Intensity, Digit} -> Image``; binary thickness and intensity as above) is trained
with modular WhatIfGAN training (a conv critic for the image given its parents) or loaded from a
run directory. Its image as a function of all the noise it depends on is the generator ``G`` CAGE
probes (:class:`~whatifgan.cage.models.DCMImageModel`), inverted by optimisation. In that latent
space the DCM's own causal order is explicit: the noise of Intensity cannot move Thickness, the
noise of Thickness moves Intensity through the learned mechanism -- so the true direction is known
for the generating SCM *and* for the model. Pairs: ``Thickness -> Intensity`` and the independent
roots ``Digit >= 5`` and ``Thickness``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .models import MAF, VAE, FlowModel, VAEModel, fit_flow, fit_vae
from .probe import CAGE, CAGEConfig, ProbeResult, config_dict, direction_table

__all__ = ["DCM_ATTRIBUTES", "DCM_PAIRS", "MOG_LAYOUT", "build_image_dcm", "dcm_effects", "load_config",
           "load_image_dcm", "mog_data", "morpho_data", "normal_blocks", "report_rows", "run_dcm", "run_experiment",
           "run_mog", "run_morpho", "train_image_dcm"]

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


# ============================================================================= the image of a DCM
#: Architecture of the small image DCM trained by :func:`run_dcm` (``dcm.model`` overrides it).
DCM_MODEL_DEFAULTS = {"noise_dim": 8, "conf_dim": 8, "generator_kwargs": {"hidden": [32, 32]},
                      "image_kwargs": {"base_channels": 16, "embed_dim": 16, "encoder_channels": [8, 8, 8]}}
#: Training of its low-dimensional mechanisms (``dcm.train``) and of its image mechanism
#: (``dcm.image_train``, over ``dcm.train``): :class:`whatifgan.training.TrainConfig` fields.
DCM_TRAIN_DEFAULTS = {"steps": 400, "batch_size": 256, "n_critic": 5, "critic_hidden": [64, 64], "lr": 5e-4,
                      "seed": 0, "device": "cpu"}
DCM_IMAGE_TRAIN_DEFAULTS = {"steps": 2000, "batch_size": 64, "n_critic": 2, "critic_hidden": [64],
                            "image_critic_channels": [8, 16, 32], "lr": 2e-4}
#: Binary attributes of the annotated images: ``name: {column, at_least}`` (``1[column >= at_least]``).
DCM_ATTRIBUTES = {"Thickness": {"column": "Thickness", "at_least": 1},
                  "Intensity": {"column": "Intensity", "at_least": 1},
                  "Digit_ge5": {"column": "Digit", "at_least": 5}}
#: The probed pairs and the relation the generating SCM (``morpho_scm``) implies between them.
DCM_PAIRS = [{"m1": "Thickness", "m2": "Intensity", "truth": "Thickness -> Intensity"},
             {"m1": "Digit_ge5", "m2": "Thickness", "truth": "independent"}]


def _dcm_settings(cfg: Mapping) -> tuple[dict, dict, dict]:
    d = dict(cfg.get("dcm", {}))
    model = {**DCM_MODEL_DEFAULTS, **dict(d.get("model", {}))}
    tr = {**DCM_TRAIN_DEFAULTS, **dict(d.get("train", {}))}
    img = {**tr, **DCM_IMAGE_TRAIN_DEFAULTS, **dict(d.get("image_train", {}))}
    return model, tr, img


def build_image_dcm(graph, variables, model: Mapping):
    """A :class:`whatifgan.dcm.DCM` of the architecture ``model`` (keys of :data:`DCM_MODEL_DEFAULTS`)."""
    from whatifgan.dcm import DCM

    m = dict(model)
    bad = sorted(set(m) - set(DCM_MODEL_DEFAULTS))
    if bad:
        raise ValueError(f"unknown DCM model option(s) {bad}; valid: {sorted(DCM_MODEL_DEFAULTS)}")
    return DCM(graph, variables, noise_dim=int(m["noise_dim"]), conf_dim=int(m["conf_dim"]),
               generator_kwargs=_tuples(m["generator_kwargs"]), image_kwargs=_tuples(m["image_kwargs"]))


def _tuples(d: Mapping) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(d).items()}


def train_image_dcm(dcm, dataset, train_cfg: Mapping, image_train_cfg: Mapping, *, progress: bool | None = False
                    ) -> dict:
    """Modular WhatIfGAN training (:func:`whatifgan.training.train`) of ``dcm`` on ``dataset``:
    the h-nodes holding an image variable with ``image_train_cfg`` (a conv critic on images given
    their parents), the others with ``train_cfg``. Returns per-h-node timings."""
    from whatifgan.training import TrainConfig, plan_for, train

    plan = plan_for(dcm, [dataset])
    is_img = [any(dcm.variables[v].kind == "image" for v in s.hnode) for s in plan.steps]
    out = {"hnodes": []}
    for flag, tc in ((False, train_cfg), (True, image_train_cfg)):
        steps = [s for s, f in zip(plan.steps, is_img) if f == flag]
        if not steps:
            continue
        cfg = TrainConfig.from_dict({**dict(tc), "progress": bool(progress)})
        res = train(dcm, [dataset], cfg, plan=dataclasses.replace(plan, steps=steps), save=False)
        out["hnodes"] += [{"hnode": s["hnode"], "seconds": s["seconds"], "steps": s["steps"]} for s in res.steps]
    dcm.eval()
    out["plan"] = plan
    return out


def load_image_dcm(run_dir: str | Path, model: Mapping | None = None):
    """A trained DCM from a run directory: a :mod:`whatifgan.pipelines.dcm_experiment` run
    (``config.json`` + ``model.pt``, via ``load_run``) or a :func:`whatifgan.training.save_model`
    folder (``manifest.json`` + ``model.pt``; the architecture from its ``cage_dcm.json``, else
    ``model``). Returns ``(dcm, info)``."""
    from trainers.core import load_checkpoint
    from whatifgan.variables import VariableSet

    run = Path(run_dir)
    if not (run / "model.pt").is_file():
        raise FileNotFoundError(f"DCM run directory {run} has no model.pt")
    if (run / "config.json").is_file():
        from whatifgan.pipelines.dcm_experiment import load_run

        dcm, cfg, _ = load_run(run)
        return dcm.eval(), {"format": "dcm_experiment", "run_dir": str(run), "config": cfg}
    if not (run / "manifest.json").is_file():
        raise FileNotFoundError(f"{run} has model.pt but neither config.json (a DCM experiment run) nor "
                                f"manifest.json (whatifgan.training.save_model)")
    manifest = json.loads((run / "manifest.json").read_text())
    side = run / "cage_dcm.json"
    info = json.loads(side.read_text()) if side.is_file() else {}
    arch = dict(info.get("model") or model or DCM_MODEL_DEFAULTS)
    arch.update({k: manifest["model"][k] for k in ("noise_dim", "conf_dim") if k in manifest.get("model", {})})
    dcm = build_image_dcm(manifest["graph"], VariableSet.from_config(manifest["variables"]), arch)
    ck = load_checkpoint(run / "model.pt")
    try:
        dcm.load_state_dict(ck["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{run / 'model.pt'} does not fit the DCM architecture {arch}: {e}") from None
    return dcm.eval(), {"format": "save_model", "run_dir": str(run), **info, "model": arch}


def _binary_attributes(columns: Mapping, specs: Mapping) -> dict[str, np.ndarray]:
    out = {}
    for name, s in specs.items():
        if s["column"] not in columns:
            raise ValueError(f"attribute {name!r}: the annotated data has no column {s['column']!r} "
                             f"(has {sorted(columns)})")
        out[name] = (np.asarray(columns[s["column"]]) >= int(s.get("at_least", 1))).astype(np.int64)
    return out


@torch.no_grad()
def dcm_effects(dcm, scm, cause: str, effect: str, n: int = 4000, seed: int = 0) -> dict:
    """``P(effect >= 1 | do(cause = 1)) - P(effect >= 1 | do(cause = 0))`` in the DCM (sampled)
    and in the generating SCM (exact)."""
    g = torch.Generator(device=dcm.device).manual_seed(int(seed))
    model = [float((dcm.sample(n, do={cause: c}, generator=g)[effect] >= 1).float().mean()) for c in (0, 1)]
    true = [float(scm.prob([effect], do={cause: c}).values[1:].sum()) for c in (0, 1)]
    return {"dcm": model[1] - model[0], "scm": true[1] - true[0], "dcm_p": model, "scm_p": true}


def normal_blocks(model, classifiers: Mapping) -> dict[str, dict[str, float]]:
    """Where each probe's hyperplane normal ``h_c`` lies in the DCM's latent: the share of
    ``|h_c|^2`` on the noise of each variable (``"exo:V"``, ``"gumbel:V"``, ``"conf:G"``). Moving
    along ``h_c`` (Step 3) changes exactly the variables whose noise it touches and their
    descendants."""
    out = {}
    for name, clf in classifiers.items():
        h = clf.normal
        out[name] = {f"{kind}:{v}": float(np.sum(h[a:b] ** 2)) for kind, v, a, b in model.blocks}
    return out


def run_dcm(config: Mapping, out_dir: str | Path | None = None, *, progress: bool | None = False,
            plots: bool = True) -> dict:
    """CAGE on the image generator of a DCM (the toolkit's own deep causal model).

    The DCM models Morpho-MNIST with the generating graph ``Thickness -> Intensity``,
    ``{Thickness, Intensity, Digit} -> Image``; it is trained here (modular WhatIfGAN training,
    :func:`train_image_dcm`, cached in ``<out_dir>/dcm``) or loaded from ``dcm.run_dir``. The
    generative model CAGE probes is :class:`~whatifgan.cage.models.DCMImageModel`: ``G(z)`` is the
    image computed from all the exogenous noise it depends on (``z`` = the noise of Thickness,
    Intensity, Digit and Image and the Gumbel noise of the three categorical heads), ``ENC`` is
    optimisation-based inversion. The annotated images (MNIST test-split digits) are inverted,
    linear probes fitted on the inverted latents (Step 1), and each pair of ``pairs`` probed with
    latent outcomes (Eq. 3) and, for attributes with a pixel classifier, pixel outcomes (Eq. 4:
    the toolkit's attribute CNNs on the decoded counterfactual images).
    """
    from trainers.core import seed_everything

    from .models import DCMImageModel, InversionConfig
    from whatifgan.training import save_model

    cfg = dict(config)
    data_cfg = dict(cfg.get("data", {}))
    kind = data_cfg.pop("kind", "morpho")
    if kind != "morpho":
        raise ValueError(f"run_dcm generates its annotated images with the Morpho-MNIST generator; "
                         f"data.kind={kind!r} is not supported")
    image = str(cfg.get("image", "Image"))
    specs = dict(cfg.get("attributes") or DCM_ATTRIBUTES)
    pairs = [dict(p) for p in (cfg.get("pairs") or DCM_PAIRS)]
    for p in pairs:
        for k in ("m1", "m2"):
            if p[k] not in specs:
                raise ValueError(f"pair {p}: {p[k]!r} is not one of the attributes {sorted(specs)}")
    cage_cfg = CAGEConfig.from_dict(cfg.get("cage", {}))
    pixel_cfg = cfg.get("pixel_outcome")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    train_data, annotated = morpho_data(data_cfg, progress=progress)
    data_secs = time.perf_counter() - t0

    # ---------------------------------------------------------------- the DCM: load or train
    model_cfg, tr_cfg, img_cfg = _dcm_settings(cfg)
    dcm_cfg = dict(cfg.get("dcm", {}))
    settings = {"data": {**data_cfg, "train_hash": train_data.config_hash}, "model": model_cfg, "train": tr_cfg,
                "image_train": img_cfg}
    h = _settings_hash(settings)
    cached, train_info = False, {}
    if dcm_cfg.get("run_dir"):
        dcm, train_info = load_image_dcm(dcm_cfg["run_dir"], model_cfg)
        cached, train_secs = True, float(train_info.get("seconds", 0.0))
    else:
        run = out / "dcm" if out is not None else None
        side = run / "cage_dcm.json" if run is not None else None
        if side is not None and side.is_file() and json.loads(side.read_text()).get("settings_hash") == h:
            dcm, train_info = load_image_dcm(run)
            cached, train_secs = True, float(train_info.get("seconds", 0.0))
        else:
            seed_everything(int(tr_cfg["seed"]))
            dcm = build_image_dcm(train_data.graph, train_data.variables, model_cfg)
            t0 = time.perf_counter()
            info = train_image_dcm(dcm, train_data.graph_dataset(), tr_cfg, img_cfg, progress=progress)
            train_secs = time.perf_counter() - t0
            train_info = {"model": model_cfg, "settings_hash": h, "seconds": train_secs, "hnodes": info["hnodes"]}
            if run is not None:
                run.mkdir(parents=True, exist_ok=True)
                save_model(dcm, run, plan=info["plan"], datasets=[train_data.graph_dataset()])
                side.write_text(json.dumps(train_info, indent=1, default=str))
    dcm.eval()
    if image not in dcm.graph:
        raise ValueError(f"the DCM has no image variable {image!r} (nodes {list(dcm.graph.nodes)})")
    effects = {f"{c} -> {e}": dcm_effects(dcm, train_data.scm, c, e, seed=int(cage_cfg.seed))
               for c, e in (("Thickness", "Intensity"), ("Intensity", "Thickness"))
               if c in dcm.graph and e in dcm.graph}

    # ---------------------------------------------------------------- Step 1: invert the annotated images
    inv = InversionConfig(**{**dict(cfg.get("inversion", {})), "seed": int(cage_cfg.seed)})
    var = dcm.variables[image]
    model = DCMImageModel(dcm, image, hard=True, temperature=cfg.get("inversion_temperature", 1.0), inversion=inv,
                          preprocess=lambda x: var.encode(x if isinstance(x, torch.Tensor) else torch.as_tensor(x)))
    n_enc = int(cfg.get("n_encode", len(annotated.dataset)))
    cols = {k: v[:n_enc] for k, v in annotated.dataset.columns.items()}
    attrs = _binary_attributes(cols, specs)
    t0 = time.perf_counter()
    z_data = model.encode(cols[image])
    inv_secs = time.perf_counter() - t0
    inv_mse = model.last_inversion_loss.cpu().numpy()
    # what the DCM's own variables say about the inverted latents (the encoder's fidelity)
    inner = model.decode_all(z_data)
    fidelity = {name: float(np.mean((inner[s["column"]].cpu().numpy() >= int(s.get("at_least", 1))) == attrs[name]))
                for name, s in specs.items() if s["column"] in inner}
    with torch.no_grad():
        g = torch.Generator().manual_seed(int(cage_cfg.seed) + 3)
        z_rand = model.sample_prior(len(z_data), g)
        x_true = model._prepare(cols[image])
        rand_mse = float(((model.decode_batched(z_rand) - x_true) ** 2).flatten(1).mean(1).mean())

    cage = CAGE(model, cage_cfg).fit(None, attrs, latents=z_data)
    reports, results, labels = [], [], []
    common = {"normal_blocks": normal_blocks(model, cage.classifiers), "data_seconds": data_secs, "inversion_seconds": inv_secs, "inversion_mse": float(inv_mse.mean()),
              "random_latent_mse": rand_mse, "encoder_fidelity": fidelity, "dcm_effects": effects,
              "dcm": {k: v for k, v in train_info.items() if k != "config"}, "inversion": dataclasses.asdict(inv)}
    for p in pairs:
        t0 = time.perf_counter()
        res = cage.probe(p["m1"], p["m2"])
        reports.append(_report("dcm-probe", "cage-dcm-latent", res, truth=p["truth"], cfg=cfg, cage_cfg=cage_cfg,
                               train_secs=train_secs, probe_secs=inv_secs + time.perf_counter() - t0,
                               cached=cached, extra=common))
        results.append(res)
        labels.append(f"{p['m1']} vs {p['m2']}, latent")

    # ---------------------------------------------------------------- pixel outcomes (Eq. 4)
    if pixel_cfg:
        from whatifgan.metrics.images import train_attribute_classifiers

        pc = dict(pixel_cfg)
        kinds = {a.column: a.kind for a in train_data.attributes[image].values()}
        t0 = time.perf_counter()
        clfs = train_attribute_classifiers(train_data, kinds=["thickness", "intensity"],
                                           steps=int(pc.get("steps", 300)), seed=int(pc.get("seed", 0)),
                                           channels=tuple(pc.get("channels", (16, 32, 32))),
                                           max_images=int(pc.get("max_images", 20000)),
                                           device=pc.get("device", "cpu"), progress=progress,
                                           cache_dir=data_cfg.get("cache_dir"))
        clf_secs = time.perf_counter() - t0
        lo, hi = var.value_range

        def psi(name):
            s = specs[name]
            k = kinds[s["column"]]

            def fn(x):
                pr = clfs.predict_proba(x.cpu().clamp(lo, hi), k, value_range=(lo, hi))
                return pr[:, int(s.get("at_least", 1)):].sum(1)

            return fn

        pixel = {n: psi(n) for n, s in specs.items() if kinds.get(s["column"]) in clfs.models}
        # the DCM's rendering, read by the classifiers: P(attribute read off G | do(attribute))
        rendering = {}
        for n in pixel:
            col = specs[n]["column"]
            with torch.no_grad():
                gg = torch.Generator(device=dcm.device).manual_seed(int(cage_cfg.seed) + 11)
                rendering[n] = [float(pixel[n](dcm.sample(500, do={col: c}, generator=gg, decode=False)[image]).mean())
                                for c in (0, 1)]
        pix_cfg = CAGEConfig.from_dict({**config_dict(cage_cfg), "outcome": "pixel",
                                        "k": int(pc.get("k", cage_cfg.k)),
                                        "n_permutations": int(pc.get("n_permutations", cage_cfg.n_permutations))})
        cage_pix = CAGE(model, pix_cfg, pixel_classifiers=pixel)
        cage_pix.fit(None, attrs, latents=z_data)
        for p in pairs:
            if p["m1"] not in pixel or p["m2"] not in pixel:
                continue
            t0 = time.perf_counter()
            res = cage_pix.probe(p["m1"], p["m2"])
            reports.append(_report("dcm-probe", "cage-dcm-pixel", res, truth=p["truth"], cfg=cfg, cage_cfg=pix_cfg,
                                   train_secs=0.0, probe_secs=time.perf_counter() - t0, cached=True,
                                   extra={**common, "classifier_seconds": clf_secs,
                                          "classifier_accuracy": dict(clfs.accuracy),
                                          "rendering_given_do": rendering}))
            results.append(res)
            labels.append(f"{p['m1']} vs {p['m2']}, pixel (Eq. 4)")
    if plots and out is not None:
        from . import plots as P

        first = pairs[0]
        figs = [str(P.delta_tau_figure(results, out / "cage_dcm_delta_tau.png", labels=labels,
                                       title="DCM image (Morpho-MNIST): delta tau with m1 as listed")),
                str(P.null_figure(results[-1] if pixel_cfg else results[0], out / "cage_dcm_null.png"))]
        grid = dict(cfg.get("grid", {}))
        n_grid = int(grid.get("n", 6))
        grid_alphas = tuple(grid.get("alphas", (0.0, 1.0, 2.0, 3.0, 4.0)))
        z0 = torch.as_tensor(cage.z_prior[:n_grid], dtype=torch.get_default_dtype())
        rows = {f"do({a})": (cage.counterfactual_path(a, z0, grid_alphas) - lo) / (hi - lo)
                for a in (first["m1"], first["m2"])}
        figs.append(str(P.counterfactual_grid(rows, grid_alphas, out / "cage_dcm_grid.png",
                                              title="DCM image G(z + s alpha h_c): each latent moved to the other "
                                                    "side of its factual treatment")))
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
    """Run the experiment a config names (``experiment: mog | morpho | dcm``); a list of reports."""
    cfg = load_config(config)
    kind = cfg.get("experiment")
    runners = {"mog": run_mog, "morpho": run_morpho, "dcm": run_dcm}
    if kind not in runners:
        raise ValueError(f"config 'experiment' must be one of {sorted(runners)}, got {kind!r}")
    out = runners[kind](cfg, out_dir, progress=progress, plots=plots)
    return out["reports"] if "reports" in out else [out]


def print_table(reports) -> str:
    return direction_table(report_rows(reports))
