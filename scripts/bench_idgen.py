"""Benchmark: ID-GEN sampling networks against exact answers of discrete SCMs.

* ``random-step7`` / ``random-step7-conditional``: random identifiable queries ``P(y | do(x))`` and
  ``P(y | do(x), z)`` whose ID trace passes through line 7, on random ADMGs with 4-8 nodes and
  confounders (:func:`whatifgan.idgen.random_step7_queries`), random binary SCMs
  (``DiscreteSCM.random``, hidden confounders with 3 states), 20 000 training rows;
* ``napkin``: P(Y | do(X)) on the napkin graph, binary (20 000 rows) and ternary (100 000 rows);
* ``napkin-mnist-discrete``: the attribute twin of Napkin-MNIST (ID-GEN Appendix F.2.1,
  ``whatifgan.data.image_scms.napkin_scm``) with composite variables W1 = (colour, thickness)
  (18 states), W2 = restricted colour (2), X = (colour, thickness) (6), Y = (colour, thickness)
  (18) -- the napkin graph; digits are left out (an unconfounded chain that does not change the
  colour question).  Also the paper's "Cond" baseline P(y | x).

* ``figure3``: P_{w1}(y) on the paper's Figure 3 graph, binary, 20 000 rows.

Methods: ``idgen`` (classifier back ends, the defaults), ``idgen-reduced`` (Tian-Pearl inputs),
``idgen-literal`` (Algorithm 1 without reusing Update networks, Figure 3 only) and ``plugin`` (the
estimand evaluated on the empirical joint of the same training rows: the exact-table reference
that ID-GEN's models approximate).  Metrics: ``tvd_max`` (worst intervention value ``x``;
conditional queries averaged over ``z`` with the true ``P(z | do(x))``), ``tvd_mean`` (mean over
``x``) and, for Napkin-MNIST, ``tvd_color`` (colour marginal of Y, mean over ``x``).  The network's
answer is computed exactly from its models' probabilities.

    python scripts/bench_idgen.py [--quick] [--out benchmarks/results/idgen.json]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchlib import git_commit, record, write_results  # noqa: E402

from hgraph import ADMG, DiscreteSCM, Factor  # noqa: E402
from hgraph.identify import identify  # noqa: E402
from whatifgan.idgen import idgen, plugin_report, random_step7_queries, tvd_report  # noqa: E402
from whatifgan.metrics.discrete import empirical  # noqa: E402


def run_random(records, commit, count, seed, conditional, n):
    bench = "random-step7" + ("-conditional" if conditional else "")
    worst = {}
    for g, est in random_step7_queries(seed, count, conditional=conditional):
        scm = DiscreteSCM.random(g, cards=2, seed=0)
        data = scm.sample(n, seed=1)
        cards = {v: 2 for v in g.nodes}
        truth = est.evaluate(scm)
        config = f"{g.to_string()}; binary SCM seed 0, latent 3 states; n={n}"
        qtext = str(est.query)
        for method, kw in (("idgen", {}), ("idgen-reduced", {"inputs": "reduced"})):
            t0 = time.perf_counter()
            net = idgen(g, est, data, variables=cards, **kw)
            secs = time.perf_counter() - t0
            rep = tvd_report(net, scm, truth=truth)
            for m in ("tvd_max", "tvd_mean"):
                records.append(record(bench, method, m, qtext, rep[m], secs, config, commit))
            worst.setdefault(method, []).append(rep["tvd_max"])
            print(f"{bench:32s} {method:14s} {qtext:34s} TVD max {rep['tvd_max']:.4f} mean "
                  f"{rep['tvd_mean']:.4f}  models {net.stats['trained']:2d}  {secs:5.1f} s", flush=True)
        t0 = time.perf_counter()
        pr = plugin_report(est, scm, data, truth=truth)
        secs = time.perf_counter() - t0
        worst.setdefault("plugin", []).append(pr["tvd_max"])
        for m in ("tvd_max", "tvd_mean"):
            records.append(record(bench, "plugin", m, qtext, pr[m], secs, config, commit))
    for method, vals in worst.items():
        cfg = f"{len(vals)} queries (seed {seed}); n={n}"
        records.append(record(bench, method, "tvd_max_worst", "all", max(vals), None, cfg, commit))
        records.append(record(bench, method, "tvd_max_mean", "all", float(np.mean(vals)), None, cfg, commit))
        records.append(record(bench, method, "fraction_within_0.05", "all",
                              float(np.mean([v <= 0.05 for v in vals])), None, cfg, commit))
        print(f"{bench:32s} {method:14s} worst {max(vals):.4f} mean {np.mean(vals):.4f} "
              f"within 0.05: {np.mean([v <= 0.05 for v in vals]):.2f}")


def run_napkin(records, commit, settings):
    est = identify("napkin", "P(Y | do(X))")
    for cards_n, seed, n in settings:
        scm = DiscreteSCM.random("napkin", cards=cards_n, seed=seed)
        data = scm.sample(n, seed=seed + 1)
        cards = {v: cards_n for v in scm.nodes}
        truth = est.evaluate(scm)
        config = f"napkin, DiscreteSCM.random(cards={cards_n}, seed={seed}), latent 3 states; n={n}"
        for method, kw in (("idgen", {}),):
            t0 = time.perf_counter()
            net = idgen("napkin", est, data, variables=cards, **kw)
            secs = time.perf_counter() - t0
            rep = tvd_report(net, scm, truth=truth)
            for m in ("tvd_max", "tvd_mean"):
                records.append(record("napkin", method, m, "P(Y | do(X))", rep[m], secs, config, commit))
            print(f"napkin {cards_n} states seed {seed} n={n:6d} {method:14s} TVD max {rep['tvd_max']:.4f}  "
                  f"{secs:5.1f} s", flush=True)
        pr = plugin_report(est, scm, data, truth=truth)
        for m in ("tvd_max", "tvd_mean"):
            records.append(record("napkin", "plugin", m, "P(Y | do(X))", pr[m], None, config, commit))
        print(f"napkin {cards_n} states seed {seed} n={n:6d} {'plugin':14s} TVD max {pr['tvd_max']:.4f}")


def run_figure3(records, commit, n, seeds):
    """P_{w1}(y) on the paper's Figure 3 graph: the sampling network of the figure (Update networks
    reused) versus Algorithm 1 taken literally (M_X(W2) trained on its own D')."""
    est = identify("idgen_fig3", "P(Y | do(W1))")
    for seed in seeds:
        scm = DiscreteSCM.random("idgen_fig3", cards=2, seed=seed)
        data = scm.sample(n, seed=seed + 1)
        cards = {v: 2 for v in scm.nodes}
        truth = est.evaluate(scm)
        config = f"idgen_fig3, DiscreteSCM.random(cards=2, seed={seed}), latent 3 states; n={n}"
        for method, kw in (("idgen", {}), ("idgen-literal", {"reuse_update": False})):
            t0 = time.perf_counter()
            net = idgen("idgen_fig3", est, data, variables=cards, **kw)
            secs = time.perf_counter() - t0
            rep = tvd_report(net, scm, truth=truth)
            for m in ("tvd_max", "tvd_mean"):
                records.append(record("figure3", method, m, "P(Y | do(W1))", rep[m], secs, config, commit))
            print(f"figure3 seed {seed} {method:14s} TVD max {rep['tvd_max']:.4f}  models "
                  f"{net.stats['trained']}  {secs:5.1f} s", flush=True)
        pr = plugin_report(est, scm, data, truth=truth)
        for m in ("tvd_max", "tvd_mean"):
            records.append(record("figure3", "plugin", m, "P(Y | do(W1))", pr[m], None, config, commit))
        print(f"figure3 seed {seed} {'plugin':14s} TVD max {pr['tvd_max']:.4f}")


def napkin_mnist_discrete(n: int, seed: int, p: float = 0.1):
    """Composite (colour, thickness) variables of the Napkin-MNIST attribute twin on the napkin
    graph W1 -> W2 -> X -> Y, W1 <-> X, W1 <-> Y; returns data, cards and the exact
    P(Y | do(X)) as a Factor over (Y, X)."""
    from whatifgan.data.image_scms import napkin_scm

    scm = napkin_scm(p)
    s = scm.sample(n, seed=seed)
    data = {"W1": s["W1_color"] * 3 + s["W1_thick"], "W2": s["W2_color"],
            "X": s["X_color"] * 3 + s["X_thick"], "Y": s["Y_color"] * 3 + s["Y_thick"]}
    cards = {"W1": 18, "W2": 2, "X": 6, "Y": 18}
    table = np.zeros((18, 6))
    for xc, xt in itertools.product(range(2), range(3)):
        f = scm.prob(["Y_color", "Y_thick"], do={"X_color": xc, "X_thick": xt})
        table[:, xc * 3 + xt] = f.transpose(["Y_color", "Y_thick"]).values.reshape(-1)
    return data, cards, Factor(["Y", "X"], table)


def _color_tvd(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over x of the TVD of the colour marginal (Y = colour * 3 + thickness)."""
    a = pred.reshape(6, 3, -1).sum(axis=1)
    b = truth.reshape(6, 3, -1).sum(axis=1)
    return float(np.mean(0.5 * np.abs(a - b).sum(axis=0)))


def run_napkin_mnist(records, commit, n, seed):
    g = ADMG.load("idgen_fig3")  # W1 -> W2 -> X -> Y, W1 <-> X, W1 <-> Y: the napkin graph
    data, cards, truth = napkin_mnist_discrete(n, seed)
    est = identify(g, "P(Y | do(X))")
    config = (f"Napkin-MNIST attribute twin (p=0.1), composite (colour, thickness) variables; "
              f"n={n}, seed={seed}")
    t0 = time.perf_counter()
    net = idgen(g, est, data, variables=cards)
    secs = time.perf_counter() - t0
    got = net.query_table().transpose(["Y", "X"]).values
    per = 0.5 * np.abs(got - truth.values).sum(axis=0)
    res = {"idgen": (per, got, secs)}
    emp = empirical(data, ["Y"], cards, given=["X"]).transpose(["Y", "X"]).values
    res["cond"] = (0.5 * np.abs(emp - truth.values).sum(axis=0), emp, None)
    for method, (per, pred, s) in res.items():
        vals = {"tvd_max": float(per.max()), "tvd_mean": float(per.mean()),
                "tvd_color": _color_tvd(pred, truth.values)}
        for m, v in vals.items():
            records.append(record("napkin-mnist-discrete", method, m, "P(Y | do(X))", v, s, config, commit))
        print(f"napkin-mnist-discrete {method:8s} TVD max {vals['tvd_max']:.4f} mean {vals['tvd_mean']:.4f} "
              f"colour {vals['tvd_color']:.4f}" + (f"  {s:.1f} s" if s else ""), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer random queries")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--out", default="benchmarks/results/idgen.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    commit = git_commit()
    records: list[dict] = []
    count = 4 if args.quick else 20
    run_random(records, commit, count, seed=101, conditional=False, n=args.n)
    run_random(records, commit, count // 2 if args.quick else 12, seed=202, conditional=True, n=args.n)
    run_napkin(records, commit, [(2, 0, args.n), (2, 1, args.n), (3, 1, 20000), (3, 1, 100000)])
    run_figure3(records, commit, args.n, [0, 1, 2])
    run_napkin_mnist(records, commit, 60000, 0)
    write_results(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
