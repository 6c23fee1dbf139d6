"""The WhatIfGAN experiment pipeline: config -> data with exact truth -> plan -> training -> queries.

A config (YAML, see ``configs/experiments/``)::

    name: frontdoor-discrete
    graph: frontdoor                     # shipped name, file or edge string
    source:                              # where the data (and the exact truth) come from
      scm: {kind: dirichlet, cards: 2, latent_card: 3, seed: 3}
      # or: bayesnet: {name: asia, hidden: [smoke, bronc]}
    datasets:
      - {name: obs, n: 20000}
      - {name: D2, do: {PKA: 2}, variables: [PKA, Mek], n: 5000}   # do values: int or "uniform"
      - {name: D1, exclude: [W0, Y0], n: 20000}
    model: {noise_dim: 16, conf_dim: 16, hidden: [64, 64]}
    train: {mode: modular, steps: 600, batch_size: 128}            # TrainConfig fields
    eval: {samples: 20000, every: 100, target_tvd: 0.05,
           queries: ["P(D, I, A)", "P(A | do(D))"]}
    seed: 0

:func:`run` trains (modular or joint), evaluates every query against the exact answer of the
generating SCM (TVD; for tables with treatment/conditioning axes the average over their values) and
writes ``report.json``, a TVD-curve PNG and TensorBoard logs in the run directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgraph import ADMG, DiscreteSCM, Factor
from hgraph.identify import NotIdentifiable, parse_query

from ..data.tabular import DataError, Dataset
from ..dcm import DCM
from ..metrics import tvd
from ..sampling import Sampler
from ..training import TrainConfig, spawn_backend, train
from ..variables import Categorical, VariableSet

__all__ = ["load_config", "build_source", "build_datasets", "build_model", "truth", "evaluate", "run",
           "load_run", "image_source", "pretrain", "load_pretrained"]


def load_config(cfg: str | Path | Mapping) -> dict:
    """Read a config file (or a shipped experiment name from ``configs/experiments``)."""
    if isinstance(cfg, Mapping):
        return copy.deepcopy(dict(cfg))
    p = Path(cfg)
    if not p.exists():
        here = Path(__file__).resolve().parents[2] / "configs" / "experiments"
        for cand in (Path.cwd() / "configs" / "experiments" / f"{cfg}.yaml", here / f"{cfg}.yaml"):
            if cand.exists():
                p = cand
                break
        else:
            raise FileNotFoundError(f"experiment config {str(cfg)!r} not found (a path or a name in configs/experiments)")
    import yaml

    with open(p) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, Mapping):
        raise ValueError(f"{p}: an experiment config must be a mapping")
    data.setdefault("name", p.stem)
    return dict(data)


def config_hash(cfg: Mapping) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


_IMAGE_DATA: dict[str, Any] = {}


def image_source(cfg: Mapping):
    """The :class:`~whatifgan.data.image_scms.ImageSCMData` of a config whose source is an image
    SCM (``source: {image_scm: frontdoor, n: 10000, seed: 0, size: 28, ...}``: the generator name
    and the keyword arguments of :func:`~whatifgan.data.image_scms.generate`; cached on disk by
    the generator and in memory here), or None for other sources."""
    src = dict(cfg.get("source") or {})
    if "image_scm" not in src:
        return None
    from ..data.image_scms import GENERATORS, generate

    spec = src.pop("image_scm")
    spec = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = spec.pop("kind", None)
    if kind not in GENERATORS:
        raise ValueError(f"source.image_scm: unknown image SCM {kind!r}; known: {sorted(GENERATORS)}")
    params = {**src, **spec}
    key = json.dumps([kind, params], sort_keys=True, default=str)
    if key not in _IMAGE_DATA:
        params.setdefault("progress", False)
        _IMAGE_DATA[key] = generate(kind, **params)
    return _IMAGE_DATA[key]


def build_source(cfg: Mapping) -> tuple[ADMG, DiscreteSCM]:
    """The model's graph and the exact generating SCM (for an image SCM: the image-level graph and
    the attributes-only twin)."""
    src = dict(cfg.get("source") or {})
    if "image_scm" in src:
        data = image_source(cfg)
        if "graph" in cfg:
            g = ADMG.load(cfg["graph"])
            if set(g.nodes) != set(data.graph.nodes) or set(g.directed_edges) != set(data.graph.directed_edges):
                raise ValueError(f"the config's graph {g} differs from the image SCM's graph {data.graph}")
        return data.graph, data.scm
    if "scm" in src:
        spec = dict(src["scm"])
        g = ADMG.load(cfg["graph"])
        scm = DiscreteSCM.random(g, cards=spec.get("cards", 2), seed=spec.get("seed", 0),
                                 latent_card=spec.get("latent_card", 3), kind=spec.get("kind", "dirichlet"),
                                 alpha=spec.get("alpha", 1.0), noise=spec.get("noise", 0.1))
        return g, scm
    if "bayesnet" in src:
        from ..data.bif import bayesnet_scm

        spec = dict(src["bayesnet"])
        full = bayesnet_scm(spec["name"])
        keep = spec.get("observed")
        hidden = list(spec.get("hidden", []))
        if keep is not None:
            hidden = [v for v in full.variables if v not in keep]
        scm = bayesnet_scm(spec["name"], hidden=hidden)
        g = ADMG.load(cfg["graph"]) if "graph" in cfg else scm.graph
        if set(g.nodes) != set(scm.graph.nodes) or set(g.directed_edges) != set(scm.graph.directed_edges) \
                or {frozenset(e) for e in g.bidirected_edges} != {frozenset(e) for e in scm.graph.bidirected_edges}:
            raise ValueError(f"the config's graph {g} differs from the latent projection of the network "
                             f"{scm.graph}")
        return g, scm
    raise ValueError("config 'source' needs 'scm', 'bayesnet' or 'image_scm'")


def build_datasets(cfg: Mapping, scm: DiscreteSCM, g: ADMG) -> list[Dataset]:
    data = image_source(cfg)
    if data is not None:  # the generator's datasets (all, or those the config names)
        names = [d if isinstance(d, str) else d["name"] for d in cfg.get("datasets") or list(data.datasets)]
        bad = [nm for nm in names if nm not in data.datasets]
        if bad:
            raise DataError(f"image SCM {data.kind!r} has no dataset(s) {bad}; it has {list(data.datasets)}")
        return [data.graph_dataset(nm) for nm in names]
    out = []
    seed = int(cfg.get("seed", 0))
    for i, d in enumerate(cfg.get("datasets") or [{"name": "obs", "n": 20000}]):
        d = dict(d)
        n = int(d.get("n", 20000))
        do = {}
        rng = np.random.default_rng(seed * 7777 + i)
        for v, val in (d.get("do") or {}).items():
            if v not in g:
                raise DataError(f"dataset {d.get('name')!r}: cannot intervene on unknown variable {v!r}")
            do[v] = rng.integers(0, scm.cards[v], size=n) if val == "uniform" else int(val)
        if "variables" in d and "exclude" in d:
            raise DataError(f"dataset {d.get('name')!r}: give 'variables' or 'exclude', not both")
        variables = d.get("variables")
        if "exclude" in d:
            variables = [v for v in g.nodes if v not in set(d["exclude"])]
        name = d.get("name") or (f"do({', '.join(do)})" if do else f"D{i}")
        out.append(Dataset.from_scm(scm, n, name=name, do=do, variables=variables, seed=seed * 1000 + i))
    return out


def build_model(cfg: Mapping, g: ADMG, scm: DiscreteSCM, plugins=None) -> DCM:
    """The DCM of a config. ``model``: ``noise_dim``, ``conf_dim``, ``hidden`` and ``batchnorm`` (MLP mechanisms),
    ``image`` / ``image_child`` (keyword arguments of the conv generator of image variables and of
    the conv classifier of their children), ``plugins: {var: path | {path, arch, arch_kwargs}}`` and
    ``modules: {var: "pretrained:<path>"}`` (a mechanism saved by :func:`pretrain`, frozen)."""
    m = dict(cfg.get("model") or {})
    data = image_source(cfg)
    if data is not None:
        variables = data.variables
    else:
        variables = VariableSet([Categorical(v, int(scm.cards[v])) for v in g.nodes])
    gkw = {"hidden": tuple(m.get("hidden", (256, 256)))}
    if "batchnorm" in m:  # BatchNorm in the MLP mechanisms (default on, as in the paper)
        gkw["batchnorm"] = bool(m["batchnorm"])
    plugins = dict(plugins or {})
    from ..nn.registry import PretrainedModule

    for v, spec in (m.get("plugins") or {}).items():  # {var: path} or {var: {path, arch, arch_kwargs}}
        spec = {"path": spec} if isinstance(spec, str) else dict(spec)
        plugins[v] = PretrainedModule.from_file(spec.pop("path"), **spec)
    for v, spec in (m.get("modules") or {}).items():
        if not (isinstance(spec, str) and spec.startswith("pretrained:")):
            raise ValueError(f"model.modules.{v}: expected 'pretrained:<path>' (a mechanism saved by "
                             f"whatifgan pretrain), got {spec!r}")
        plugins[v] = load_pretrained(spec[len("pretrained:"):], name=v)
    for v in plugins:
        if v not in g:
            raise ValueError(f"plug-in given for {v!r}, which is not a node of the graph {list(g.nodes)}")
    return DCM(g, variables, noise_dim=int(m.get("noise_dim", 128)), conf_dim=int(m.get("conf_dim", 128)),
               generator_kwargs=gkw, plugins=plugins, image_kwargs=m.get("image"),
               image_child_kwargs=m.get("image_child"))


def load_pretrained(path: str | Path, name: str | None = None):
    """A frozen :class:`~whatifgan.nn.registry.PretrainedModule` from a file written by
    :func:`pretrain` (weights ``<path>``, architecture ``<path>.json``)."""
    from ..nn.registry import PretrainedModule

    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: a pretrained mechanism is saved as weights + "
                                f"architecture JSON by 'whatifgan pretrain'")
    meta = json.loads(meta_path.read_text())
    return PretrainedModule.from_file(path, arch=meta["arch"], arch_kwargs=meta["arch_kwargs"],
                                      noise_dim=meta.get("noise_dim"), name=name or meta.get("variable"))


def pretrain(config, variable: str, out: str | Path, *, steps: int | None = None, device: str | None = None,
             progress: bool = True) -> dict:
    """Train the mechanism of ``variable`` on its own -- its h-node of the modular plan, e.g.
    ``P(I | D)`` with ``D`` from the data -- and save it as a plug-in: ``out`` (state_dict,
    loadable with ``weights_only=True``) and ``out.json`` (architecture). Use it with
    ``model: {modules: {<variable>: "pretrained:<out>"}}``. Returns ``{"path", "seconds", "steps"}``."""
    from trainers.core import save_checkpoint

    from hgraph import TrainingPlan

    cfg = load_config(config)
    tr = dict(cfg.get("train") or {})
    tr["mode"] = "modular"
    tr.pop("image_representation", None)  # a single h-node: no mixed critic
    if steps:  # the given steps win over a train.hnodes override
        tr["steps"] = int(steps)
        tr["hnodes"] = {v: {k: x for k, x in o.items() if k != "steps"} for v, o in (tr.get("hnodes") or {}).items()}
    if device:
        tr["device"] = device
    seed = int(cfg.get("seed", 0))
    tcfg = TrainConfig.from_dict({"seed": seed, "progress": progress, **tr})
    g, scm = build_source(cfg)
    datasets = build_datasets(cfg, scm, g)
    torch.manual_seed(seed)
    dcm = build_model(cfg, g, scm)
    if variable not in dcm.graph:
        raise ValueError(f"cannot pretrain {variable!r}: not a node of {list(dcm.graph.nodes)}")
    from ..training import plan_for

    plan = plan_for(dcm, datasets, "modular")
    steps_ = [s for s in plan.steps if variable in s.hnode]
    if not steps_ or not steps_[0].uses:
        raise ValueError(f"{variable!r} has no trainable h-node in the plan with these datasets")
    if len(steps_[0].hnode) != 1:
        raise ValueError(f"{variable!r} shares its h-node {steps_[0].hnode} with other variables; only a "
                         f"mechanism trained alone can be pretrained")
    sub = TrainingPlan(plan.graph, plan.hgraph, plan.datasets, [steps_[0]], [])
    t0 = time.perf_counter()
    res = train(dcm, datasets, tcfg, plan=sub, save=False)
    seconds = time.perf_counter() - t0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, {"state_dict": dcm.mechanisms[variable].state_dict()})
    spec = dcm.mechanism_specs[variable]
    meta = {"variable": variable, "arch": spec["arch"], "arch_kwargs": spec["arch_kwargs"],
            "noise_dim": dcm.noise_dim, "config": cfg.get("name"), "steps": res.steps[0]["steps"],
            "seconds": seconds}
    out.with_name(out.name + ".json").write_text(json.dumps(meta, indent=1, default=list))
    return {"path": str(out), "seconds": seconds, "steps": res.steps[0]["steps"]}


def truth(scm: DiscreteSCM, query) -> Factor:
    """The exact answer of a query (table over the query's variables) from the SCM."""
    q = parse_query(query) if isinstance(query, str) else query
    if q.is_counterfactual:
        worlds: dict[tuple, list] = {}
        for c in q.cf_outcome:
            worlds.setdefault(c.do, []).append(c.var)
        ev = [(c.var, c.do_dict, c.value) for c in q.cf_given]
        t = scm.counterfactual([(dict(w), vs) for w, vs in worlds.items()], evidence=ev or None,
                               method="eliminate")
        fixed = {c.name: c.value for c in q.cf_outcome if c.value is not None}
        return t.reduce(fixed) if fixed else t
    y, x, z = list(q.outcome), list(q.treatment), list(q.given)
    if x:
        t = scm.do_table(x).marginal(y + z + x)
        t = t.conditional(z + x)
    else:
        t = scm.prob(y, given=z) if z else scm.prob(y)
    fixed = {v: val for v, val in q.value_map.items() if v in t.vars}
    return t.reduce(fixed) if fixed else t


def _tvd(est: Factor, tru: Factor, q) -> float:
    if q.is_counterfactual:
        return tvd(est.transpose(tru.vars), tru)
    given = [v for v in list(q.treatment) + list(q.given) if v in tru.vars]
    return tvd(est.transpose(tru.vars), tru, given=given)


def evaluate(dcm: DCM, scm: DiscreteSCM, queries, sampler: Sampler, n: int = 20000, force: bool = False) -> dict:
    """TVD of every query against the exact answer (``nan`` for refused queries)."""
    out = {}
    for qs in queries:
        q = parse_query(qs)
        try:
            est = sampler.query(q, n=n, force=force)
        except NotIdentifiable:
            out[qs] = float("nan")
            continue
        out[qs] = _tvd(est, truth(scm, q), q)
    return out


def _available(datasets) -> list[tuple]:
    return list(dict.fromkeys(tuple(d.targets) for d in datasets))


def run(config, run_dir: str | Path | None = None, *, mode: str | None = None, resume: bool = False,
        device: str | None = None, steps: int | None = None, progress: bool = True, quiet: bool = False,
        parallel_hnodes: int | None = None, nproc: int | None = None, dist=None) -> dict:
    """Run one experiment end to end; returns the report (also written to ``run_dir``).

    Data-parallel training (``nproc`` or ``train.nproc`` > 1): the whole run is repeated in
    ``nproc`` spawned local processes (each builds the same data and model from the seed) that
    train every h-node together through ``torch.distributed``; started by ``torchrun``, the
    processes join its group.  Only rank 0 evaluates, writes and prints; the other ranks return
    ``{}``.  ``dist``: this process's :class:`trainers.distributed.DistributedContext` when the
    caller started the processes.
    """
    import os

    cfg = load_config(config)
    if nproc:
        cfg.setdefault("train", {})["nproc"] = int(nproc)
    if mode:
        cfg.setdefault("train", {})["mode"] = mode
    if steps:
        cfg.setdefault("train", {})["steps"] = int(steps)
    if device:
        cfg.setdefault("train", {})["device"] = device
    if parallel_hnodes:
        cfg.setdefault("train", {})["parallel_hnodes"] = int(parallel_hnodes)
    seed = int(cfg.get("seed", 0))
    tcfg = TrainConfig.from_dict({"seed": seed, "progress": progress, **(cfg.get("train") or {})})
    if dist is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        from trainers.distributed import init_from_env

        dist = init_from_env(device=tcfg.device)
    if dist is None and tcfg.nproc > 1:
        from trainers.distributed import launch

        if tcfg.parallel_hnodes > 1:
            raise ValueError("data-parallel training (nproc > 1) and parallel_hnodes > 1 cannot be combined; "
                             "use one of them")
        report = launch(_run_worker, tcfg.nproc, cfg, None if run_dir is None else str(run_dir),
                        dict(resume=resume, progress=progress, quiet=True),
                        backend=spawn_backend(tcfg.device, tcfg.nproc), device=tcfg.device)[0]
        if not quiet:
            print(format_report(report))
        return report
    main = dist is None or dist.is_main
    ev = dict(cfg.get("eval") or {})
    queries = list(ev.get("queries", []))
    n_eval = int(ev.get("samples", 20000))
    target = float(ev.get("target_tvd", 0.05))
    tcfg.eval_every = int(ev.get("every", tcfg.eval_every))
    run = Path(run_dir) if run_dir is not None else None
    if run is not None and main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(cfg, indent=1))
    g, scm = build_source(cfg)
    datasets = build_datasets(cfg, scm, g)
    data = image_source(cfg)
    image_queries = list(ev.get("image_queries", [])) if data is not None else []
    clf = None
    if data is not None and (image_queries or ev.get("agreement") or ev.get("fid", 2000)):
        from .image_eval import attribute_classifiers

        clf = attribute_classifiers(data, ev.get("classifiers"), device=tcfg.device if tcfg.device != "auto" else None)
    torch.manual_seed(seed)
    dcm = build_model(cfg, g, scm)
    sampler = Sampler(dcm, available=_available(datasets), seed=seed)
    eval_time = [0.0]

    def evaluator(model):
        t0 = time.perf_counter()
        res = evaluate(model, scm, queries, sampler, n=n_eval, force=True)
        if image_queries:
            from .image_eval import evaluate_images

            res.update(evaluate_images(sampler, data, clf, ev, n=int(ev.get("curve_samples", 500)),
                                       full=False)["image_tvd"])
        eval_time[0] += time.perf_counter() - t0
        res["_train_time"] = time.perf_counter() - start - eval_time[0]
        return res

    start = time.perf_counter()
    result = train(dcm, datasets, tcfg, run_dir=run, resume=resume,
                   evaluator=evaluator if (queries or image_queries) else None,
                   dist=dist)
    if not main:
        return {}
    final = evaluate(dcm, scm, queries, sampler, n=n_eval)
    refused = [q for q, v in final.items() if v != v]
    if refused:  # report the value anyway, forced, but mark it
        forced = evaluate(dcm, scm, refused, sampler, n=n_eval, force=True)
    else:
        forced = {}
    def first_hit(q):  # training time at which q first reached the target, every h-node trained
        for h in result.history:
            v = h.get(q)
            if v is not None and v == v and v <= target and _all_trained(h, result):
                return h["_train_time"]
        return None

    time_to_target = {q: first_hit(q) for q in queries}
    report = {
        "name": cfg.get("name"), "mode": tcfg.mode, "train_seconds": result.seconds - eval_time[0],
        "tvd": {q: (final[q] if final[q] == final[q] else forced[q]) for q in queries},
        "not_identifiable": refused, "target_tvd": target, "time_to_target": time_to_target,
        "steps": result.steps, "history": result.history, "plan": str(result.plan),
    }
    if data is not None and clf is not None:
        from .image_eval import evaluate_images

        t0 = time.perf_counter()
        img = evaluate_images(sampler, data, clf, ev, run_dir=run, title=f"{cfg.get('name')} ({tcfg.mode})")
        report.update(img)
        report["classifier_accuracy"] = dict(clf.accuracy)
        report["image_eval_seconds"] = time.perf_counter() - t0
        report["time_to_target"].update({q: first_hit(q) for q in image_queries})
    if run is not None:
        (run / "report.json").write_text(json.dumps(report, indent=1, default=str))
        try:
            plot_history(result.history, queries + image_queries, run / "tvd.png",
                         title=f"{cfg.get('name')} ({tcfg.mode})")
        except Exception:  # plotting is a convenience; never lose the report over it
            pass
    if not quiet:
        print(format_report(report))
    return report


def _run_worker(ctx, cfg, run_dir, kwargs) -> dict:
    return run(cfg, run_dir, dist=ctx, **kwargs)


def _all_trained(h: Mapping, result) -> bool:
    """True once the evaluation happened during/after the last trained h-node."""
    trained = [s["index"] for s in result.steps if not s.get("skipped")]
    return not trained or h.get("hnode", -1) >= max(trained)


def format_report(report: Mapping) -> str:
    lines = [f"{report['name']} ({report['mode']}): trained in {report['train_seconds']:.1f} s",
             f"  {'query':40s} {'TVD':>8s}  time to TVD <= {report['target_tvd']}"]
    for q, v in report["tvd"].items():
        t = report["time_to_target"].get(q)
        mark = " (not identifiable from the data: forced)" if q in report["not_identifiable"] else ""
        lines.append(f"  {q:40s} {v:8.4f}  {('%.1f s' % t) if t is not None else 'not reached'}{mark}")
    for q, v in report.get("image_tvd", {}).items():
        t = report["time_to_target"].get(q)
        lines.append(f"  {q:40s} {v:8.4f}  {('%.1f s' % t) if t is not None else 'not reached'} (read off images)")
    if "digit_agreement" in report:
        lines.append(f"  digit agreement of do() images: {report['digit_agreement']:.3f}")
    for v, f in report.get("fid", {}).items():
        lines.append(f"  FID({v}, local digit features): {f:.2f}")
    return "\n".join(lines)


def plot_history(history, queries, path, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for q in queries:
        pts = [(h["_train_time"], h[q]) for h in history if q in h and h[q] == h[q]]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=q)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("TVD to exact answer")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_run(run_dir: str | Path) -> tuple[DCM, dict, Sampler]:
    """Rebuild a trained DCM from a run directory (``config.json`` + ``model.pt``)."""
    from trainers.core import load_checkpoint

    run = Path(run_dir)
    if not (run / "model.pt").exists():
        raise FileNotFoundError(f"{run} has no model.pt: train first (whatifgan train CONFIG --run-dir {run})")
    cfg = json.loads((run / "config.json").read_text())
    g, scm = build_source(cfg)
    dcm = build_model(cfg, g, scm)
    ck = load_checkpoint(run / "model.pt")
    try:
        dcm.load_state_dict(ck["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{run / 'model.pt'} does not fit the model of {run / 'config.json'}: {e}") from None
    dcm.eval()
    if image_source(cfg) is not None:
        available = _available(build_datasets(cfg, scm, g))
    else:
        datasets_cfg = cfg.get("datasets") or [{"name": "obs"}]
        available = list(dict.fromkeys(tuple((d.get("do") or {}).keys()) for d in datasets_cfg))
    return dcm, cfg, Sampler(dcm, available=available, seed=int(cfg.get("seed", 0)))
