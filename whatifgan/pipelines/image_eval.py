"""Evaluation of DCMs with image variables against the exact discrete twin of an image SCM.

Generated images are mapped to the twin's attribute codes by the attribute classifiers of
:mod:`whatifgan.metrics.images` (one CNN per attribute kind, trained on the dataset and cached), so
a query over image attributes -- observational, interventional or counterfactual, e.g.
``P(Y1, Y2, Color, Thick | do(X1=1, X2=4))`` read off the generated ``Image1``/``Image2`` -- gets a
TVD against the exact answer of the twin SCM. Also: the share of ``do(T=t)`` images whose
classified attribute equals ``t`` (digit agreement), FID with the locally trained digit features,
the top-3 attribute tuples of a query next to their generated frequencies (WhatIfGAN Figure 20),
and a PNG grid of interventional samples.

Eval config keys (``eval:`` of an experiment config with an ``image_scm`` source)::

    image_queries: ["P(I_digit | do(D))", "P(Y1, Y2, Color, Thick | X1=1, X2=4)", ...]
    read: {Y1: Image1, Color: Image1}   # attribute -> image it is read from (default: each
                                        # attribute of the dataset from the first image showing it)
    image_samples: 2000                 # generated images per query (and treatment value)
    agreement: {treatment: D, attribute: I_digit}
    fid: 2000                           # generated and real images for FID (0: skip)
    top: 3                              # attribute tuples listed per query
    grid: {do: [{D: 0}, {D: 1}], n: 8}
    classifiers: {steps: 1500, color_steps: 600, held_out_n: 2000, held_out_seed: 1000}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgraph.identify import parse_query

__all__ = ["attribute_classifiers", "image_query", "evaluate_images", "save_grid", "read_map"]


def attribute_classifiers(data, opts: Mapping | None = None, device=None):
    """One classifier per attribute kind of ``data`` (cached on disk by the dataset's hash and the
    settings; held-out accuracy on images of unseen MNIST digits), merged into one
    :class:`~whatifgan.metrics.images.AttributeClassifiers`."""
    from ..metrics.images import KINDS, AttributeClassifiers, train_attribute_classifiers

    o = {"steps": 1500, "color_steps": 600, "held_out_n": 2000, "held_out_seed": 1000, "batch_size": 128,
         **dict(opts or {})}
    held = data.variant(split="test", n=int(o["held_out_n"]), seed=int(o["held_out_seed"]))
    kinds = [k for k in KINDS if any(k in a for a in data.attributes.values())]
    models, temps, acc, info = {}, {}, {}, {}
    for k in kinds:
        c = train_attribute_classifiers(data, kinds=[k], held_out=held,
                                        steps=int(o["color_steps"] if k == "color" else o["steps"]),
                                        batch_size=int(o["batch_size"]), device=device, progress=False)
        models[k], temps[k], acc[k] = c.models[k], c.temperatures[k], c.accuracy[k]
        info[k] = c.info
    return AttributeClassifiers(models, temps, acc, info)


def read_map(data, read: Mapping[str, str] | None = None) -> dict[str, tuple[str, Any]]:
    """``{attribute column: (image variable, ImageAttribute)}``: which image each attribute is read
    from (``read`` overrides the default, the first image variable rendering it)."""
    out: dict[str, tuple[str, Any]] = {}
    for img, attrs in data.attributes.items():
        for a in attrs.values():
            out.setdefault(a.column, (img, a))
    for col, img in (read or {}).items():
        if img not in data.attributes:
            raise ValueError(f"read: {img!r} is not an image variable ({list(data.attributes)})")
        hit = [a for a in data.attributes[img].values() if a.column == col]
        if not hit:
            raise ValueError(f"read: image {img!r} does not show attribute {col!r}")
        out[col] = (img, hit[0])
    return out


def _resample(values: Mapping[str, torch.Tensor], weights: torch.Tensor, n: int, gen) -> dict:
    idx = torch.multinomial(weights.float().cpu() / weights.sum().cpu(), n, replacement=True, generator=gen)
    return {k: v[idx.to(v.device)] for k, v in values.items()}


@torch.no_grad()
def image_query(sampler, query, data, clf, n: int = 2000, read=None, seed: int = 0) -> list[dict]:
    """Samples of a query's attributes read off generated images.

    Returns one entry per value of the query's free treatments: ``{"do": {T: t}, "codes":
    {attribute or counterfactual name: codes}, "images": {image variable: tensor}}``. Evidence
    (``| Z=z`` or counterfactual evidence) is imposed by the sampler's Gumbel-max importance
    weights (or rejection) and the weighted samples are resampled to ``n`` unweighted ones.
    """
    q = parse_query(query) if isinstance(query, str) else query
    dcm = sampler.dcm
    rmap = read_map(data, read)
    gen = torch.Generator().manual_seed(int(seed))
    dcm.eval()
    if q.is_counterfactual:
        outs = list(q.cf_outcome)
        for c in outs:
            if c.var not in rmap:
                raise ValueError(f"{c.var!r} is not an attribute shown by an image ({sorted(rmap)})")
        res = sampler.abduct(q, n)
        noise, w = res["noise"], res["weights"]
        codes, images = {}, {}
        for c in outs:
            img, attr = rmap[c.var]
            world = dcm(noise=noise, do={k: v for k, v in c.do}, hard=True, only=[img])
            x = _resample({img: world[img]}, w, n, gen)[img]
            images[f"{img}_{{{','.join(f'{k}={v}' for k, v in c.do)}}}"] = x
            codes[c.name] = attr.codes(clf.predict(x, attr.kind))
        return [{"do": {}, "codes": codes, "images": images}]
    fixed = q.value_map
    outs = list(q.outcome)
    for v in outs:
        if v not in rmap:
            raise ValueError(f"{v!r} is not an attribute shown by an image ({sorted(rmap)}); query DCM nodes "
                             f"with eval.queries")
    free_z = [z for z in q.given if z not in fixed]
    if free_z:
        raise ValueError(f"image queries need values for the conditioning variables {free_z}")
    treat = list(q.treatment)
    free_t = [t for t in treat if t not in fixed]
    imgs = sorted({rmap[v][0] for v in outs})
    states = [{}]
    for t in free_t:
        states = [s | {t: i} for s in states for i in range(dcm.variables[t].k)]
    out = []
    for xs in states:
        do = {t: fixed[t] for t in treat if t in fixed} | xs
        evidence = {z: fixed[z] for z in q.given}
        if evidence:
            res = sampler._evidence_pass(do, evidence, n, keep=imgs)
            vals = res["values"]
            if vals is None:  # rejection: replay the accepted noise
                vals = dcm(noise=res["noise"], do=do, hard=True, only=imgs)
            vals = _resample({k: vals[k] for k in imgs}, res["weights"], n, gen)
        else:
            vals = dcm(n, do=do, hard=True, only=imgs, generator=sampler.generator)
        images = {k: vals[k] for k in imgs}
        codes = {}
        for v in outs:  # an attribute shown by several images is read from the one ``read`` names
            img, attr = rmap[v]
            codes[v] = attr.codes(clf.predict(images[img], attr.kind))
        out.append({"do": xs, "codes": {v: codes[v] for v in outs}, "images": images})
    return out


def _truth(scm, q):
    from .dcm_experiment import truth

    return truth(scm, q)


def query_tvd(entries: Sequence[Mapping], truth_table, q) -> float:
    """TVD of the classified attributes against the exact table, averaged over the values of the
    free treatments (each value weighted equally)."""
    from ..metrics.images import attribute_tvd

    tvds = []
    for e in entries:
        t = truth_table.reduce(e["do"]) if e["do"] else truth_table
        names = list(e["codes"])
        t = t.transpose(names) if set(t.vars) == set(names) else t.marginal(names).transpose(names)
        tvds.append(attribute_tvd(e["codes"], t))
    return float(np.mean(tvds))


def sampling_floor(entries: Sequence[Mapping], truth_table, n: int, seed: int = 0) -> float:
    """TVD between the exact table and ``n`` samples drawn from it (the finite-sample floor of the
    image-query TVD, before any classifier or model error), averaged like :func:`query_tvd`."""
    rng = np.random.default_rng(seed)
    tvds = []
    for e in entries:
        t = truth_table.reduce(e["do"]) if e["do"] else truth_table
        p = t.values.reshape(-1) / t.values.sum()
        emp = rng.multinomial(n, p) / n
        tvds.append(0.5 * float(np.abs(emp - p).sum()))
    return float(np.mean(tvds))


def top_tuples(entries: Sequence[Mapping], truth_table, k: int = 3) -> list[dict]:
    """The ``k`` most likely attribute tuples of the exact answer next to their frequency among the
    classified generated images (WhatIfGAN Figure 20); first treatment value only."""
    from ..metrics.images import attribute_distribution

    e = entries[0]
    t = truth_table.reduce(e["do"]) if e["do"] else truth_table
    names = list(e["codes"])
    t = t.transpose(names)
    cards = {v: t.values.shape[i] for i, v in enumerate(names)}
    emp = attribute_distribution(e["codes"], names, cards)
    flat = np.argsort(-t.values.reshape(-1))[:k]
    rows = []
    for f in flat:
        idx = np.unravel_index(int(f), t.values.shape)
        rows.append({"tuple": {v: int(i) for v, i in zip(names, idx)}, "truth": float(t.values[idx]),
                     "generated": float(emp.values[idx])})
    return rows


@torch.no_grad()
def digit_agreement(sampler, data, clf, treatment: str, attribute: str, n: int = 1000, read=None) -> float:
    """Share of images generated under ``do(T=t)`` whose classified ``attribute`` code equals ``t``,
    averaged over ``t`` (e.g. the digit shown under ``do(D=d)`` in the front-door data)."""
    img, attr = read_map(data, read)[attribute]
    dcm = sampler.dcm
    dcm.eval()
    shares = []
    for t in range(dcm.variables[treatment].k):
        x = dcm(n, do={treatment: t}, hard=True, only=[img], generator=sampler.generator)[img]
        shares.append(float(np.mean(attr.codes(clf.predict(x, attr.kind)) == t)))
    return float(np.mean(shares))


@torch.no_grad()
def image_fid(sampler, data, clf, n: int = 2000) -> dict[str, float]:
    """FID (locally trained digit features) between ``n`` observational images of the data and
    ``n`` generated ones, per image variable."""
    from ..metrics.images import fid

    dcm = sampler.dcm
    dcm.eval()
    out = {}
    for img in data.attributes:
        if "digit" not in clf.models:
            continue
        real = np.asarray(data.dataset.columns[img])[:n]
        fake = dcm(len(real), hard=True, only=[img], generator=sampler.generator)[img]
        out[img] = fid(real, fake, clf, kind="digit")
    return out


@torch.no_grad()
def save_grid(sampler, interventions: Sequence[Mapping], path, n: int = 8, images: Sequence[str] | None = None,
              title: str = "") -> Path:
    """A PNG grid: one row per intervention (``[{D: 0}, {D: 1}]``), ``n`` samples per row, the
    image variables of a sample side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dcm = sampler.dcm
    dcm.eval()
    names = list(images or [v for v in dcm.graph.nodes if dcm.variables[v].kind == "image"])
    rows = []
    for do in interventions:
        vals = dcm(n, do=dict(do), hard=True, only=names, generator=sampler.generator)
        tiles = []
        for i in range(n):
            parts = []
            for v in names:
                lo, hi = dcm.variables[v].value_range
                x = ((vals[v][i].float().cpu() - lo) / (hi - lo)).clamp(0, 1)
                parts.append(x.permute(1, 2, 0).numpy() if x.shape[0] == 3 else x[0].numpy()[..., None].repeat(3, 2))
            tiles.append(np.concatenate(parts, axis=1))
        rows.append(tiles)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9 * len(names), len(rows) * 1.0 + 0.4), squeeze=False)
    for r, (do, tiles) in enumerate(zip(interventions, rows)):
        for c, t in enumerate(tiles):
            ax = axes[r][c]
            ax.imshow(t)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel("do(" + ", ".join(f"{k}={v}" for k, v in do.items()) + ")", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_images(sampler, data, clf, ev: Mapping, *, n: int | None = None, full: bool = True,
                    run_dir=None, title: str = "") -> dict:
    """All image metrics of an ``eval`` config (see the module docstring). ``full=False``: only the
    image-query TVDs (the cheap part, for the curves during training)."""
    n = int(n or ev.get("image_samples", 2000))
    read = ev.get("read")
    seed = int(ev.get("seed", 0))
    out: dict[str, Any] = {"image_tvd": {}, "top": {}}
    for qs in ev.get("image_queries", []):
        q = parse_query(qs)
        entries = image_query(sampler, q, data, clf, n=n, read=read, seed=seed)
        truth_table = _truth(data.scm, q)
        out["image_tvd"][qs] = query_tvd(entries, truth_table, q)
        if full:
            out.setdefault("image_tvd_floor", {})[qs] = sampling_floor(entries, truth_table, n, seed)
        if full:
            out["top"][qs] = top_tuples(entries, truth_table, int(ev.get("top", 3)))
    if not full:
        return out
    ag = ev.get("agreement")
    if ag:
        out["digit_agreement"] = digit_agreement(sampler, data, clf, ag["treatment"], ag["attribute"], n=n // 2 or 1,
                                                 read=read)
    n_fid = int(ev.get("fid", 2000))
    if n_fid:
        out["fid"] = image_fid(sampler, data, clf, n=n_fid)
    grid = ev.get("grid")
    if grid and run_dir is not None:
        out["grid"] = str(save_grid(sampler, grid["do"], Path(run_dir) / "samples.png", n=int(grid.get("n", 8)),
                                    title=title))
    return out
