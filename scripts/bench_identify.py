"""Benchmark: hgraph.identify against y0 on random ADMGs (10 to 800 nodes).

For every size, random ADMGs (``hgraph.generate.random_admg``) of two families -- *sparse*:
Poisson(1.5) parents per node and 0.5 n confounded pairs; *dense*: Poisson(2.5) parents and n
confounded pairs -- and, per graph, two queries with small Y, X, Z: ``P(Y | do(X))`` and
``P(Y | do(X), Z)``, where Y is one of the nodes with most ancestors and X, Z are 1-2 of its
ancestors.  Both libraries answer the same queries in the same process, one after the other:

* ``id_seconds``              median wall time of one identification (hgraph: median of
                              ``--repeat`` runs per query; y0: one run), per size and method;
* ``id_speedup_vs_y0``        median over queries of y0 time / hgraph time, per size;
* ``id_verdict_agreement``    fraction of queries where both say identifiable / not identifiable
                              (queries on which y0 raised an internal error are excluded and
                              counted in ``y0_errors``).

Writes ``benchmarks/results/identify.json`` (a list of records ``{"benchmark", "method",
"metric", "query", "value", "seconds", "config", "commit"}``) and prints a markdown table.

    python scripts/bench_identify.py            # about 3-5 minutes (y0 takes most of it)
    python scripts/bench_identify.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hgraph.generate import random_admg  # noqa: E402
from hgraph.identify import NotIdentifiable, identify  # noqa: E402

SIZES = (10, 50, 100, 200, 800)
KINDS = ("P(Y | do(X))", "P(Y | do(X), Z)")
# graph families: name -> (random_admg keyword arguments, graphs per size (default, quick))
FAMILIES = {
    "sparse": (dict(avg_parents=1.5, bidirected=0.5), (25, 4)),
    "dense": (dict(avg_parents=2.5, bidirected=1.0), (10, 2)),
}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def make_queries(n: int, n_graphs: int, seed0: int = 0, **graph_kw):
    """[(graph, y, x, z, kind)] for one size."""
    out = []
    for k in range(n_graphs):
        seed = seed0 + 1000 * n + k
        g = random_admg(n, seed=seed, **graph_kw)
        rng = np.random.default_rng(seed)
        ranked = sorted(g.nodes, key=lambda v: (-len(g.ancestors([v])), v))
        y = None
        for v in ranked[: max(3, min(10, n // 5))]:
            if len(g.ancestors([v])) >= 3:
                y = v
                break
        if y is None:
            continue
        anc = g.sorted(g.ancestors([y]) - {y})
        picks = [str(v) for v in rng.permutation(anc)]
        nx = 1 if len(picks) < 4 else int(rng.integers(1, 3))
        x = picks[:nx]
        rest = picks[nx:]
        nz = min(len(rest), int(rng.integers(1, 3)))
        out.append((g, [y], x, [], KINDS[0]))
        if nz:
            out.append((g, [y], x, rest[:nz], KINDS[1]))
    return out


def run_hgraph(g, y, x, z, repeat: int):
    times = []
    verdict = None
    for _ in range(repeat):
        t = time.perf_counter()
        try:
            identify(g, y, x, z)
            verdict = True
        except NotIdentifiable:
            verdict = False
        times.append(time.perf_counter() - t)
    return statistics.median(times), verdict


def y0_tools():
    try:
        from y0.algorithm.identify import identify_outcomes
        from y0.dsl import Variable
        from y0.graph import NxMixedGraph
    except ImportError:
        return None

    def convert(g):
        return NxMixedGraph.from_str_edges(nodes=list(g.nodes), directed=g.directed_edges,
                                           undirected=g.bidirected_edges)

    def run(yg, y, x, z):
        t = time.perf_counter()
        try:
            r = identify_outcomes(yg, {Variable(v) for v in x}, {Variable(v) for v in y},
                                  conditions={Variable(v) for v in z} if z else None)
            verdict = r is not None
        except Exception:  # noqa: BLE001 - y0 crashes on some graphs (KeyError, NetworkXError)
            verdict = None
        return time.perf_counter() - t, verdict

    return convert, run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few graphs per size (seconds)")
    ap.add_argument("--graphs", type=int, default=None,
                    help="graphs per size and family (default: sparse 25, dense 10; quick: 4, 2)")
    ap.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--repeat", type=int, default=5, help="hgraph runs per query (median)")
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "identify.json"))
    ap.add_argument("--no-y0", action="store_true", help="time hgraph only")
    args = ap.parse_args(argv)
    tools = None if args.no_y0 else y0_tools()
    if tools is None and not args.no_y0:
        print("y0 is not installed: timing hgraph only (pip install y0)", file=sys.stderr)
    commit = git_commit()
    records = []
    rows = []
    t_start = time.perf_counter()
    plan = [(fam, n) for fam in args.families for n in args.sizes]
    for fam, n in plan:
        kw, (n_default, n_quick) = FAMILIES[fam]
        n_graphs = args.graphs or (n_quick if args.quick else n_default)
        queries = make_queries(n, n_graphs, seed0=0 if fam == "sparse" else 500, **kw)
        config = (f"{fam}: random_admg(n={n}, avg_parents={kw['avg_parents']}, bidirected={kw['bidirected']}); "
                  f"{n_graphs} graphs x {{P(Y|do(X)), P(Y|do(X),Z)}}, |Y|=1, |X|,|Z| in 1..2 ancestors of Y; "
                  f"hgraph median of {args.repeat} runs, y0 one run")
        per = {k: {"h": [], "y": [], "ratio": [], "agree": 0, "total": 0, "err": 0, "nonid": 0} for k in KINDS}
        converted = {}
        for g, y, x, z, kind in queries:
            th, vh = run_hgraph(g, y, x, z, args.repeat)
            st = per[kind]
            st["h"].append(th)
            st["nonid"] += not vh
            if tools is not None:
                convert, run = tools
                yg = converted.get(id(g))
                if yg is None:
                    yg = converted[id(g)] = convert(g)
                ty, vy = run(yg, y, x, z)
                if vy is None:
                    st["err"] += 1
                    continue
                st["y"].append(ty)
                st["ratio"].append(ty / th)
                st["total"] += 1
                st["agree"] += vy == vh
                if vy != vh:
                    print(f"  verdicts differ (n={n}): {g.to_string()[:200]}... y={y} x={x} z={z}: "
                          f"hgraph {vh}, y0 {vy}", file=sys.stderr)
        for kind in (None,) + KINDS:
            sts = [per[k] for k in KINDS] if kind is None else [per[kind]]
            h = [t for s in sts for t in s["h"]]
            yy = [t for s in sts for t in s["y"]]
            ratio = [r for s in sts for r in s["ratio"]]
            agree = sum(s["agree"] for s in sts)
            total = sum(s["total"] for s in sts)
            err = sum(s["err"] for s in sts)
            nonid = sum(s["nonid"] for s in sts)
            if not h:
                continue
            q = kind
            base = {"benchmark": "identify", "query": q, "config": config, "commit": commit}
            records.append({**base, "method": "hgraph", "metric": "id_seconds", "value": statistics.median(h),
                            "seconds": sum(h)})
            records.append({**base, "method": "hgraph", "metric": "not_identifiable_fraction",
                            "value": nonid / len(h), "seconds": sum(h)})
            if yy:
                records.append({**base, "method": "y0", "metric": "id_seconds", "value": statistics.median(yy),
                                "seconds": sum(yy)})
                records.append({**base, "method": "hgraph", "metric": "id_speedup_vs_y0",
                                "value": statistics.median(ratio), "seconds": sum(h) + sum(yy)})
                records.append({**base, "method": "hgraph", "metric": "id_verdict_agreement",
                                "value": agree / total if total else float("nan"), "seconds": sum(h) + sum(yy)})
                records.append({**base, "method": "y0", "metric": "y0_errors", "value": float(err),
                                "seconds": 0.0})
            if kind is None:
                rows.append((fam, n, len(h), statistics.median(h), max(h), statistics.median(yy) if yy else None,
                             statistics.median(ratio) if ratio else None, min(ratio) if ratio else None,
                             (agree / total) if total else None, total, err, nonid))
        print(f"{fam} n={n}: {len(queries)} queries done ({time.perf_counter() - t_start:.1f} s)", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {out} ({len(records)} records, commit {commit})", file=sys.stderr)
    print()
    print("| graphs | nodes | queries | hgraph median | hgraph max | y0 median | speedup (median) | speedup (min) "
          "| verdict agreement | not identifiable |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def ms(v):
        return "n/a" if v is None else (f"{1000 * v:.2f} ms" if v < 1 else f"{v:.2f} s")

    for fam, n, nq, hm, hmax, ym, sp, spmin, ag, tot, err, nonid in rows:
        agt = "n/a" if ag is None else f"{ag:.3f} ({tot}{f', {err} y0 errors' if err else ''})"
        print(f"| {fam} | {n} | {nq} | {ms(hm)} | {ms(hmax)} | {ms(ym)} | "
              f"{'n/a' if sp is None else f'{sp:.0f}x'} | {'n/a' if spmin is None else f'{spmin:.0f}x'} | "
              f"{agt} | {nonid} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
