"""Back-end comparison on image SCMs with exact twins: ``whatifgan compare CONFIG``.

For one graph, one generated image dataset (:mod:`whatifgan.data.image_scms`, whose attributes
have an exact discrete twin) and one interventional query, the same pipeline is run with the
conditional models swapped per variable, and every method is scored against the twin's exact
answer:

* ``type: idgen`` -- an ID-GEN sampling network (:func:`whatifgan.idgen.idgen`) with the back end
  of each variable taken from the config (``diffusion``, ``gan``, ``classifier``, ``empirical`` or
  a named entry of ``backends:``);
* ``type: cond`` -- the conditional model ``P(y | x)`` of the outcome given the treatment (the
  paper's "Cond" baseline, Section 4.1), trained with the same back ends;
* ``type: dcm`` -- a WhatIfGAN deep causal model (:class:`whatifgan.DCM`, conditional GAN
  modules for every variable, modular training) sampled under ``do``.

Scores (one table, :meth:`CompareResult.table`):

* ``tvd`` -- TVD between the distribution of an attribute of the generated outcome (read off the
  images by the locally trained attribute classifiers of :mod:`whatifgan.metrics.images`, e.g.
  the colour of Napkin-MNIST's ``Y``) or of a categorical outcome (e.g. ``A`` of the front-door
  data) and the exact interventional distribution of the twin SCM, averaged over the
  interventions;
* ``agreement`` -- for image outcomes, the fraction of samples whose attribute (digit) equals the
  intervention's, next to its exact probability;
* ``fid`` -- FID of the generated images against real images of the interventional distribution
  (features of the locally trained digit classifier, not Inception; comparable only within one
  table);
* ``train_seconds`` and ``samples_per_second`` (wall time, the cores as they are).

The image interventions of ``P(Y | do(X = x))`` are concrete images: ``x`` is the first ``X`` of
the interventional reference set rendered with the requested attributes (unseen test-split
digits); the twin gives the exact answer for those attributes.
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

__all__ = ["CompareResult", "load_compare_config", "run_compare", "save_sample_figure"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "experiments"

_METHOD_TYPES = ("idgen", "cond", "dcm")


# ============================================================================= config
def load_compare_config(config: Any) -> dict:
    """A compare config from a dict, a YAML file or a name in ``configs/experiments``."""
    if isinstance(config, Mapping):
        cfg = dict(config)
    else:
        import yaml

        p = Path(config)
        if not p.is_file():
            cand = CONFIG_DIR / (str(config) if str(config).endswith(".yaml") else f"{config}.yaml")
            if not cand.is_file():
                raise FileNotFoundError(f"no compare config {config!r} (neither a file nor "
                                        f"{cand.relative_to(CONFIG_DIR.parents[1])})")
            p = cand
        cfg = yaml.safe_load(p.read_text())
        cfg.setdefault("name", p.stem)
    for key in ("name", "dataset", "query", "interventions", "methods"):
        if key not in cfg:
            raise ValueError(f"compare config lacks {key!r} (has {sorted(cfg)})")
    names = [m.get("name") for m in cfg["methods"]]
    if any(n is None for n in names) or len(set(names)) != len(names):
        raise ValueError(f"every method needs a unique name; got {names}")
    for m in cfg["methods"]:
        if m.get("type") not in _METHOD_TYPES:
            raise ValueError(f"method {m.get('name')!r}: type must be one of {_METHOD_TYPES}, got "
                             f"{m.get('type')!r}")
    if not cfg["interventions"]:
        raise ValueError("compare config: give at least one intervention")
    return cfg


# ============================================================================= results
@dataclass
class MethodRun:
    name: str
    type: str
    train_seconds: float
    samples_per_second: float
    per_intervention: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict)   #: label -> images [-1, 1]
    distributions: dict[str, list[float]] = field(default_factory=dict)
    description: str = ""


@dataclass
class CompareResult:
    """Everything :func:`run_compare` measured (``runs`` by method name)."""

    name: str
    query: str
    outcome: str
    attribute: str | None
    interventions: list[dict]
    truth: dict[str, list[float]]                 #: label -> exact distribution of the attribute
    truth_agreement: dict[str, float]
    runs: dict[str, MethodRun] = field(default_factory=dict)
    do_images: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    COLUMNS = ("tvd", "agreement", "fid", "train_seconds", "samples_per_second")

    def table(self) -> str:
        """A markdown table: one row per method, the true distribution as the first row."""
        lab = list(self.truth)
        head = ["method"] + [f"P({self.attribute or self.outcome}) {x}" for x in lab] + list(self.COLUMNS)
        rows = [["truth"] + [_fmt_dist(self.truth[x]) for x in lab] + ["0", _fmt(
            np.mean(list(self.truth_agreement.values())) if self.truth_agreement else None), "", "", ""]]
        for r in self.runs.values():
            rows.append([r.name] + [_fmt_dist(r.distributions.get(x)) for x in lab]
                        + [_fmt(r.metrics.get(c)) for c in self.COLUMNS])
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {"name": self.name, "query": self.query, "outcome": self.outcome, "attribute": self.attribute,
                "interventions": self.interventions, "truth": self.truth, "truth_agreement": self.truth_agreement,
                "info": self.info,
                "methods": {k: {"type": r.type, "metrics": r.metrics, "per_intervention": r.per_intervention,
                                "distributions": r.distributions, "description": r.description}
                            for k, r in self.runs.items()}}


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.3g}" if abs(v) >= 100 else f"{v:.3f}"


def _fmt_dist(d) -> str:
    return "-" if d is None else " ".join(f"{p:.2f}" for p in d)


# ============================================================================= helpers
def _backend(spec: Any, named: Mapping[str, Any]):
    from .idgen import make_backend

    if isinstance(spec, str) and spec in named:
        spec = named[spec]
    return make_backend(spec)


def _backends(method: Mapping, named: Mapping[str, Any], variables) -> dict:
    spec = dict(method.get("backends") or {})
    unknown = [k for k in spec if k not in variables]
    if unknown:
        raise KeyError(f"method {method['name']!r}: back ends for unknown variable(s) {unknown} "
                       f"(variables: {list(variables)})")
    return {k: _backend(v, named) for k, v in spec.items()}


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))


def _to_unit(images: np.ndarray | torch.Tensor, var) -> np.ndarray:
    """Raw images (uint8 or floats in the variable's range) -> float32 in [-1, 1]."""
    t = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if t.dtype == torch.uint8:
        return (t.float() / 127.5 - 1.0).numpy()
    lo, hi = var.value_range
    return ((t.float() - lo) / (hi - lo) * 2.0 - 1.0).clamp(-1, 1).numpy()


class _Stopwatch:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


# ============================================================================= the experiment
class _Experiment:
    def __init__(self, cfg: dict, device: str | None, progress: bool, cache_dir):
        from .data.image_scms import generate

        self.cfg = cfg
        self.seed = int(cfg.get("seed", 0))
        self.device = device if device is not None else cfg.get("device")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.progress = progress
        self.cache_dir = cache_dir if cache_dir is not None else cfg.get("cache_dir")
        ds = dict(cfg["dataset"])
        kind = ds.pop("kind", None)
        if kind is None:
            raise ValueError("dataset needs a 'kind' (napkin, frontdoor, colored_mnist2, morpho)")
        ds.setdefault("seed", self.seed)
        self.data = generate(kind, cache_dir=self.cache_dir, progress=progress, **ds)
        self.obs = self.data.graph_dataset()
        self.vs = self.data.variables
        from hgraph.identify import parse_query

        self.q = parse_query(cfg["query"])
        if len(self.q.outcome) != 1 or len(self.q.treatment) != 1 or self.q.given:
            raise ValueError(f"compare supports P(Y | do(X)) with one outcome and one treatment; got "
                             f"{cfg['query']!r}")
        self.y, self.x = self.q.outcome[0], self.q.treatment[0]
        for v in (self.x, self.y):
            if v not in self.vs:
                raise ValueError(f"{v!r} is not a variable of the {kind} data ({list(self.vs)})")
        ev = dict(cfg.get("evaluate") or {})
        self.n_samples = int(ev.get("samples", 500))
        self.n_reference = int(ev.get("reference", 1000))
        self.image_var = ev.get("images", self.y if self.vs[self.y].kind == "image" else None)
        self.y_image = self.vs[self.y].kind == "image"
        self.attribute = ev.get("attribute") if self.y_image else None
        if self.y_image and self.attribute is None:
            raise ValueError(f"the outcome {self.y!r} is an image: give evaluate.attribute (e.g. color)")
        self.agreement = ev.get("agreement")  # e.g. {attribute: digit, with: X_digit}
        self.labels: list[str] = []
        self.do_values: dict[str, Any] = {}
        self.twin_do: dict[str, dict[str, int]] = {}
        self._interventions(cfg["interventions"])
        self.clf = self._classifiers(dict(cfg.get("classifiers") or {}))
        from .idgen import ModelCache

        # models shared by several ID-GEN methods (same variable, inputs, data, back end) train once;
        # their recorded training time is still charged to every method that uses them
        self.model_cache = ModelCache()

    # ------------------------------------------------------------------ interventions and truth
    def _interventions(self, items) -> None:
        xs = self.vs[self.x]
        ivs = {}
        for i, it in enumerate(items):
            label = str(it.get("label", f"do{i}"))
            if xs.kind == "image":
                attrs = it.get("attributes")
                if not attrs:
                    raise ValueError(f"intervention {label!r}: the treatment {self.x!r} is an image; give "
                                     f"its attributes, e.g. {{X_digit: 3, X_color: 0, X_thick: 1}}")
                ivs[label] = {str(k): int(v) for k, v in attrs.items()}
            else:
                if "value" not in it:
                    raise ValueError(f"intervention {label!r}: give the code of {self.x!r} as value")
                ivs[label] = {self.x: int(it["value"])}
            self.labels.append(label)
        self.twin_do = ivs
        self.reference = self.data.variant(name=f"{self.data.kind}_compare_ref", split="test",
                                           n=max(self.n_reference, 16), n_interventional=self.n_reference,
                                           seed=self.seed + 1000,
                                           interventions={_safe_label(k): v for k, v in ivs.items()})
        scm = self.data.scm
        self.truth, self.truth_agreement, self.do_images = {}, {}, {}
        for label in self.labels:
            ref = self.reference.datasets[_safe_label(label)].columns
            if xs.kind == "image":
                img = ref[self.x][0]
                self.do_images[label] = _to_unit(img[None], xs)[0]
                self.do_values[label] = torch.as_tensor(self.do_images[label])
            else:
                self.do_values[label] = ivs[label][self.x]
            col = self._outcome_column()
            f = scm.prob([col], do=ivs[label])
            self.truth[label] = [float(v) for v in f.values.reshape(-1)]
            if self.agreement:
                a = self.vs_attr(self.y, self.agreement["attribute"])
                g = scm.prob([a.column], do=ivs[label])
                self.truth_agreement[label] = float(g.values.reshape(-1)[ivs[label][self.agreement["with"]]])

    def _outcome_column(self) -> str:
        if self.y_image:
            return self.vs_attr(self.y, self.attribute).column
        return self.y

    def vs_attr(self, var: str, kind: str):
        attrs = self.data.attributes.get(var, {})
        if kind not in attrs:
            raise ValueError(f"image {var!r} has no {kind!r} attribute (has {sorted(attrs)})")
        return attrs[kind]

    def _classifiers(self, ccfg: dict):
        from .metrics.images import AttributeClassifiers, train_attribute_classifiers

        kinds = set()
        if self.y_image:
            kinds.add(self.attribute)
            if self.agreement:
                kinds.add(self.agreement["attribute"])
        if self.image_var is not None:
            kinds.add("digit")
        steps = ccfg.get("steps", {})
        out = {}
        held = self.data.variant(split="test", n=int(ccfg.get("held_out", 1000)), seed=self.seed + 2000)
        for k in sorted(kinds):
            s = int(steps.get(k, 800) if isinstance(steps, Mapping) else steps)
            c = train_attribute_classifiers(self.data, kinds=[k], held_out=held, steps=s,
                                            batch_size=int(ccfg.get("batch_size", 128)),
                                            cache_dir=self.cache_dir, device=self.device, seed=self.seed,
                                            progress=self.progress)
            out[k] = c
            print(f"[compare] {k} classifier: held-out accuracy {c.accuracy[k]:.3f}", flush=True)
        if not out:
            return None
        models = {k: c.models[k] for k, c in out.items()}
        return AttributeClassifiers(models, {k: c.temperatures[k] for k, c in out.items()},
                                    {k: c.accuracy[k] for k, c in out.items()})

    # ------------------------------------------------------------------ scoring
    def score(self, name: str, samples: Mapping[str, Mapping[str, torch.Tensor]]) -> MethodRun:
        """``samples[label]``: ``{outcome: values, image_var: images}`` raw values."""
        from .metrics.images import fid, image_attributes

        run = MethodRun(name, "", 0.0, 0.0)
        tvds, agrees, fids = [], [], []
        for label in self.labels:
            s = samples[label]
            per = {}
            truth = self.truth[label]
            k = len(truth)
            if self.y_image:
                imgs = _to_unit(s[self.y], self.vs[self.y])
                a = self.vs_attr(self.y, self.attribute)
                codes = image_attributes({self.y: imgs}, {self.y: {self.attribute: a}}, self.clf)[a.column]
            else:
                codes = s[self.y].detach().cpu().numpy().reshape(-1)
            dist = np.bincount(np.where(codes < 0, k, codes), minlength=k + 1)[:k + 1] / max(len(codes), 1)
            per["tvd"] = 0.5 * (float(np.abs(dist[:k] - np.asarray(truth)).sum()) + float(dist[k]))
            run.distributions[label] = [float(v) for v in dist[:k]]
            if self.agreement:
                a = self.vs_attr(self.y, self.agreement["attribute"])
                c2 = image_attributes({self.y: _to_unit(s[self.y], self.vs[self.y])},
                                      {self.y: {self.agreement["attribute"]: a}}, self.clf)[a.column]
                per["agreement"] = float(np.mean(c2 == self.twin_do[label][self.agreement["with"]]))
                agrees.append(per["agreement"])
            if self.image_var is not None and self.image_var in s and self.clf is not None \
                    and "digit" in self.clf.models:
                real = self.reference.datasets[_safe_label(label)].columns[self.image_var]
                fake = _to_unit(s[self.image_var], self.vs[self.image_var])
                if len(fake) >= 2:
                    per["fid"] = fid(real, fake, self.clf, kind="digit")
                    fids.append(per["fid"])
            tvds.append(per["tvd"])
            run.per_intervention[label] = per
            if self.image_var is not None and self.image_var in s:
                run.samples[label] = _to_unit(s[self.image_var][:16], self.vs[self.image_var])
        run.metrics["tvd"] = float(np.mean(tvds))
        if agrees:
            run.metrics["agreement"] = float(np.mean(agrees))
        if fids:
            run.metrics["fid"] = float(np.mean(fids))
        return run

    # ------------------------------------------------------------------ methods
    def columns(self) -> dict[str, np.ndarray]:
        return {k: self.obs.columns[k] for k in self.vs}

    def run_idgen(self, m: Mapping) -> tuple[MethodRun, float, Any]:
        from .idgen import IDGenOptions, idgen

        named = self.cfg.get("backends") or {}
        opts = IDGenOptions(seed=self.seed, device=self.device, **dict(m.get("options") or {}))
        with _Stopwatch() as sw:
            net = idgen(self.data.graph, self.cfg["query"], self.columns(), variables=self.vs,
                        backends=_backends(m, named, self.vs), options=opts, cache=self.model_cache)
        print(net.describe(), flush=True)
        reused = sum(float(nd.model.info.get("seconds") or 0.0) for nd in net.nodes
                     if nd.cached and nd.model is not None)
        want = "all" if self.image_var not in (None, self.y) else "outputs"

        def sample(label, n, seed):
            out = net.sample(n, do={self.x: self.do_values[label]}, seed=seed, nodes=want)
            return {k: v for k, v in out.items() if k in (self.y, self.image_var)}

        return self._sample_all(m["name"], sample), sw.seconds + reused, net.describe()

    def run_cond(self, m: Mapping) -> tuple[MethodRun, float, Any]:
        named = self.cfg.get("backends") or {}
        from .idgen import default_backend

        bes = _backends(m, named, self.vs)
        be = bes.get(self.y, default_backend(self.vs[self.y]))
        cols = self.columns()
        dev = torch.device(self.device) if self.device else torch.device("cpu")
        data = {v: (torch.as_tensor(cols[v]).long().to(dev) if self.vs[v].kind == "categorical"
                    else self.vs[v].encode(cols[v], dev)) for v in (self.x, self.y)}
        with _Stopwatch() as sw:
            model = be.fit(self.vs[self.y], {self.x: self.vs[self.x]}, data, seed=self.seed, device=dev)
        xs = self.vs[self.x]

        def sample(label, n, seed):
            v = self.do_values[label]
            if xs.kind == "image":
                xv = torch.as_tensor(v).to(dev).reshape(1, *xs.shape).expand(n, *xs.shape).contiguous()
            else:
                xv = torch.full((n,), int(v), dtype=torch.long, device=dev)
            g = torch.Generator(device=dev).manual_seed(seed)
            return {self.y: model.sample({self.x: xv}, n, g)}

        return self._sample_all(m["name"], sample), sw.seconds, f"{self.y} ~ {model.describe()}({self.x})"

    def run_dcm(self, m: Mapping) -> tuple[MethodRun, float, Any]:
        from .data.tabular import Dataset
        from .dcm import DCM
        from .training import TrainConfig, train

        model = dict(m.get("model") or {})
        dcm = DCM(self.data.graph, self.vs, **model)
        tcfg = dict(m.get("train") or {})
        tcfg.setdefault("seed", self.seed)
        tcfg.setdefault("progress", self.progress)
        if self.device:
            tcfg.setdefault("device", self.device)
        with _Stopwatch() as sw:
            train(dcm, [Dataset("obs", self.columns())], TrainConfig.from_dict(tcfg), save=False)
        dcm.eval()
        xs = self.vs[self.x]

        def sample(label, n, seed):
            v = self.do_values[label]
            dev = dcm.device
            if xs.kind == "image":
                val = torch.as_tensor(v).to(dev).reshape(1, *xs.shape).expand(n, *xs.shape).contiguous()
            else:
                val = int(v)
            g = torch.Generator(device=dev).manual_seed(seed)
            out = dcm.sample(n, do={self.x: val}, generator=g)
            return {k: out[k] for k in (self.y, self.image_var) if k is not None}

        return self._sample_all(m["name"], sample), sw.seconds, "WhatIfGAN DCM (GAN modules, modular training)"

    def _sample_all(self, name, sample) -> MethodRun:
        samples, secs, total = {}, 0.0, 0
        for i, label in enumerate(self.labels):
            with _Stopwatch() as sw:
                samples[label] = sample(label, self.n_samples, self.seed * 7919 + i)
            secs += sw.seconds
            total += self.n_samples
        run = self.score(name, samples)
        run.samples_per_second = total / max(secs, 1e-9)
        return run


def _safe_label(label: str) -> str:
    import re

    return "do_" + re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")


def run_compare(config: Any, *, methods: Sequence[str] | None = None, device: str | None = None,
                progress: bool = False, cache_dir=None, figure: str | os.PathLike | None = None,
                json_out: str | os.PathLike | None = None, on_method=None) -> CompareResult:
    """Run every method of a compare config (or only ``methods``) and score it.

    ``config``: a dict, YAML file or name in ``configs/experiments`` (see
    ``compare_napkin_mnist_fast.yaml``).  ``figure``: write the side-by-side sample PNG there;
    ``json_out``: the result as JSON (rewritten after every method, so a long run keeps what it
    finished).  ``on_method(result)`` is called after every method with the partial result.
    Returns a :class:`CompareResult` (``.table()``)."""
    cfg = load_compare_config(config)
    if cache_dir is None and "cache_dir" not in cfg:
        cache_dir = None
    chosen = [m for m in cfg["methods"] if methods is None or m["name"] in methods]
    if methods is not None:
        missing = sorted(set(methods) - {m["name"] for m in cfg["methods"]})
        if missing:
            raise ValueError(f"unknown method(s) {missing}; the config has {[m['name'] for m in cfg['methods']]}")
    _seed_all(int(cfg.get("seed", 0)))
    t0 = time.perf_counter()
    exp = _Experiment(cfg, device, progress, cache_dir)
    res = CompareResult(cfg["name"], cfg["query"], exp.y, exp.attribute, [dict(i) for i in cfg["interventions"]],
                        exp.truth, exp.truth_agreement, do_images=exp.do_images,
                        info={"dataset": cfg["dataset"], "seed": exp.seed, "samples": exp.n_samples,
                              "classifier_accuracy": dict(exp.clf.accuracy) if exp.clf else {},
                              "setup_seconds": time.perf_counter() - t0})
    for m in chosen:
        _seed_all(exp.seed)
        print(f"[compare] {cfg['name']}: method {m['name']} ({m['type']})", flush=True)
        fn = {"idgen": exp.run_idgen, "cond": exp.run_cond, "dcm": exp.run_dcm}[m["type"]]
        run, secs, desc = fn(m)
        run.type, run.train_seconds, run.description = m["type"], secs, str(desc)
        run.metrics["train_seconds"] = secs
        run.metrics["samples_per_second"] = run.samples_per_second
        res.runs[m["name"]] = run
        print(f"[compare] {m['name']}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in run.metrics.items()),
              flush=True)
        if json_out is not None:
            Path(json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(json_out).write_text(json.dumps(res.to_dict(), indent=1))
        if on_method is not None:
            on_method(res)
    if figure is not None:
        if any(r.samples for r in res.runs.values()):
            save_sample_figure(res, figure)
        else:
            print("[compare] no method generated images: no sample figure", flush=True)
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(res.to_dict(), indent=1))
    return res


# ============================================================================= figure
def save_sample_figure(res: CompareResult, path: str | os.PathLike, per_row: int = 8) -> Path:
    """Samples side by side: one row per method and intervention (the intervened image first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in res.runs.values() if r.samples]
    labels = list(res.truth)
    if not runs:
        raise ValueError("no method produced image samples to draw")
    rows = [(r, lab) for lab in labels for r in runs]
    has_do = bool(res.do_images)
    cols = per_row + (1 if has_do else 0)
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.9, len(rows) * 0.95 + 0.4), squeeze=False)
    for i, (r, lab) in enumerate(rows):
        imgs = r.samples.get(lab, np.zeros((0,)))
        for j in range(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            k = j - (1 if has_do else 0)
            if has_do and j == 0:
                img = res.do_images[lab]
            elif 0 <= k < len(imgs):
                img = imgs[k]
            else:
                continue
            a = (np.asarray(img).transpose(1, 2, 0) + 1.0) / 2.0
            ax.imshow(a.squeeze(-1) if a.shape[-1] == 1 else a.clip(0, 1), cmap="gray" if a.shape[-1] == 1 else None)
        tvd = r.per_intervention.get(lab, {}).get("tvd")
        axes[i][0].set_ylabel(f"{r.name}\n{lab}" + (f"\nTVD {tvd:.2f}" if tvd is not None else ""),
                              fontsize=6, rotation=0, ha="right", va="center")
    if has_do:
        axes[0][0].set_title("do(x)", fontsize=7)
    fig.suptitle(f"{res.name}: {res.query}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
