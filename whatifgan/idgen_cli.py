"""``whatifgan idgen``: ID-GEN sampling networks from the command line.

* ``whatifgan idgen plan GRAPH QUERY`` -- the sampling network ID-GEN would train (which models,
  which inputs, which generated datasets), without data or training;
* ``whatifgan idgen run GRAPH QUERY --scm-seed 0 --n 20000`` -- sample training data from a random
  discrete SCM on GRAPH, train the network, print it and the TVD to the SCM's exact answer;
* ``whatifgan idgen sweep`` -- the same on random identifiable queries whose trace passes ID's
  line 7.

The main CLI calls :func:`register` when it builds its parser and :func:`run` for the command.
Imports of torch and the toolkit happen inside :func:`run` so ``whatifgan --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["register", "run"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", choices=["predecessors", "reduced"], default="predecessors",
                   help="model inputs: all predecessors v_π^(i-1) (Algorithm 2) or the Tian-Pearl "
                        "conditioning set plus \\hat X")
    p.add_argument("--no-reuse-update", action="store_true",
                   help="follow Algorithm 1 literally at line 1 under line 7 (train on D') instead of "
                        "reusing the Update's models")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cards", type=int, default=2, help="states of every observed variable")
    p.add_argument("--latent-card", type=int, default=3, help="states of every hidden confounder")
    p.add_argument("--n", type=int, default=20000, help="training rows")
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--x-z", choices=["auto", "uniform", "empirical"], default="auto",
                   help="how Update draws X_Z (and IDC-GEN draws X ∪ α)")
    p.add_argument("--n-update", type=int, default=None, help="rows of each generated D'")
    p.add_argument("--backend", choices=["classifier", "wgan"], default="classifier",
                   help="back end of every (categorical) variable")
    p.add_argument("--method", choices=["exact", "sample"], default="exact",
                   help="evaluate the network exactly or from --eval-n samples per value")
    p.add_argument("--eval-n", type=int, default=20000)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the small models train fastest single-threaded)")
    p.add_argument("--cache-dir", default=None, help="persist trained models here (reused later)")
    p.add_argument("--json", default=None, help="write the network and the TVD here")
    _common(p)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``idgen`` command group to the main CLI's subparsers."""
    p = subparsers.add_parser("idgen", help="ID-GEN: sampling networks of conditional models for any "
                                            "identifiable query (plan, run, sweep)")
    sub = p.add_subparsers(dest="idgen_cmd", required=True)
    s = sub.add_parser("plan", help="the sampling network ID-GEN would train (no data, no training)")
    s.add_argument("graph", help="graph name, YAML file or edge string")
    s.add_argument("query", help='e.g. "P(Y | do(X))" or "P(Y | do(X), Z)"')
    s.add_argument("--trace", action="store_true", help="also print the identification trace")
    _common(s)
    s = sub.add_parser("run", help="train on data from a random discrete SCM; print the network and "
                                   "the TVD to the exact answer")
    s.add_argument("graph")
    s.add_argument("query")
    s.add_argument("--scm-seed", type=int, default=0, help="seed of DiscreteSCM.random")
    s.add_argument("--trace", action="store_true")
    _train_args(s)
    s = sub.add_parser("sweep", help="random identifiable queries through ID's line 7, against exact "
                                     "answers")
    s.add_argument("--count", type=int, default=5)
    s.add_argument("--query-seed", type=int, default=0)
    s.add_argument("--conditional", action="store_true", help="queries P(y | do(x), z)")
    s.add_argument("--scm-seed", type=int, default=0)
    _train_args(s)
    p.set_defaults(func=run)
    return p


def _options(args) -> dict:
    out = {"inputs": args.inputs, "reuse_update": not args.no_reuse_update}
    for k in ("seed", "x_z", "n_update", "device"):
        if hasattr(args, k):
            out[k] = getattr(args, k)
    return out


def _train_one(args, g, query, scm_seed, cache):
    from hgraph import DiscreteSCM

    from .idgen import idgen, tvd_report

    scm = DiscreteSCM.random(g, cards=args.cards, seed=scm_seed, latent_card=args.latent_card)
    data = scm.sample(args.n, seed=args.data_seed)
    t0 = time.perf_counter()
    net = idgen(g, query, data, variables={v: scm.cards[v] for v in scm.nodes},
                backends=args.backend, cache=cache, **_options(args))
    secs = time.perf_counter() - t0
    rep = tvd_report(net, scm, method=args.method, n=args.eval_n, seed=args.seed)
    return net, rep, secs


def run(args) -> int:
    """Run ``whatifgan idgen <plan|run|sweep>``."""
    from hgraph import ADMG

    from .idgen import ModelCache, idgen_plan, random_step7_queries

    cmd = getattr(args, "idgen_cmd", None)
    if cmd == "plan":
        g = ADMG.load(args.graph)
        net = idgen_plan(g, args.query, **_options(args))
        if args.trace:
            print(net.trace)
            print()
        print(net.describe())
        return 0
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    cache = ModelCache(args.cache_dir)
    if cmd == "run":
        g = ADMG.load(args.graph)
        net, rep, secs = _train_one(args, g, args.query, args.scm_seed, cache)
        if args.trace:
            print(net.trace)
            print()
        print(net.describe())
        print()
        print(f"TVD to the exact {net.query}: mean over x {rep['tvd_mean']:.4f}, max {rep['tvd_max']:.4f} "
              f"({args.method}; {args.n} training rows, trained in {secs:.1f} s)")
        for k, v in rep["per_x"].items():
            print(f"  {k:20s} {v:.4f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"network": net.to_dict(), "tvd": rep, "seconds": secs}, f, indent=1)
        return 0
    if cmd == "sweep":
        results = []
        for g, est in random_step7_queries(args.query_seed, args.count, conditional=args.conditional):
            net, rep, secs = _train_one(args, g, est, args.scm_seed, cache)
            results.append({"graph": g.to_string(), "query": str(est.query), "tvd": rep, "seconds": secs})
            print(f"{str(est.query):40s} {len(g)} nodes  models {net.stats['trained']:2d}  TVD mean "
                  f"{rep['tvd_mean']:.4f} max {rep['tvd_max']:.4f}  {secs:.1f} s", flush=True)
        worst = max(r["tvd"]["tvd_max"] for r in results) if results else float("nan")
        print(f"worst TVD {worst:.4f} over {len(results)} queries")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return 0
    print("usage: whatifgan idgen {plan,run,sweep} ...", file=sys.stderr)
    return 2
