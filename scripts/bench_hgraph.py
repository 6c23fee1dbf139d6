"""Benchmark: modular training plans on random ADMGs (H-graph + every ancestor set).

For 20, 50, 100, 200 nodes: plan an observational and two interventional datasets (metric
``plan_seconds``, median over graphs) with the exact closure search, and the same plans with a
direct transcription of Algorithm 7's subset enumeration where it finishes within its budget
(metric ``plan_seconds`` with method ``algorithm7``); ``plan_speedup_vs_algorithm7`` is the median
per-graph ratio measured side by side. ``ancestor_sets_agree`` checks the two give the same sets.

    python scripts/bench_hgraph.py [--graphs 5] [--budget 20] [--out benchmarks/results/hgraph.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import git_commit, record, write_results  # noqa: E402

from hgraph.generate import random_admg  # noqa: E402
from hgraph.plan import PlanError, ancestor_set_bruteforce, training_plan  # noqa: E402


def brute_force_plan(plan, budget_s: float):
    """Recompute every ancestor set of ``plan`` with Algorithm 7's enumeration."""
    t0 = time.perf_counter()
    out = []
    for step in plan.steps:
        for u in step.uses:
            if time.perf_counter() - t0 > budget_s:
                raise TimeoutError
            out.append((ancestor_set_bruteforce(plan.graph, step.hnode, u.targets, max_candidates=1 << 20,
                                                  exhaustive=True),
                        frozenset(u.ancestors)))
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 50, 100, 200])
    ap.add_argument("--graphs", type=int, default=5, help="random graphs per size")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds allowed for one brute-force plan")
    ap.add_argument("--out", default="benchmarks/results/hgraph.json")
    args = ap.parse_args(argv)
    commit = git_commit()
    records = []
    rows = []
    for n in args.sizes:
        fast, slow, ratios, agree, done = [], [], [], [], 0
        for seed in range(args.graphs):
            g = random_admg(n, seed=seed, avg_parents=1.5, bidirected=0.3)
            datasets = ["obs", f"do({g.nodes[1]})", f"do({g.nodes[2]})"]
            t0 = time.perf_counter()
            plan = training_plan(g, datasets)
            dt = time.perf_counter() - t0
            fast.append(dt)
            try:
                pairs, bt = brute_force_plan(plan, args.budget)
            except (TimeoutError, PlanError):
                continue
            done += 1
            slow.append(bt + dt)  # same H-graph work, ancestor sets by enumeration
            ratios.append((bt + dt) / dt)
            agree.append(all(a == b for a, b in pairs))
        cfg = f"n={n}, graphs={args.graphs}, avg_parents=1.5, bidirected=0.3n, datasets=obs+2 do"
        med = statistics.median(fast)
        records.append(record("hgraph", "closure", "plan_seconds", None, med, sum(fast), cfg, commit))
        if slow:
            records.append(record("hgraph", "algorithm7", "plan_seconds", None, statistics.median(slow), sum(slow),
                                  cfg + f", finished {done}/{args.graphs}", commit))
            records.append(record("hgraph", "closure", "plan_speedup_vs_algorithm7", None,
                                  statistics.median(ratios), None, cfg + f", finished {done}/{args.graphs}", commit))
            records.append(record("hgraph", "closure", "ancestor_sets_agree", None,
                                  float(all(agree)), None, cfg, commit))
        rows.append((n, med, statistics.median(slow) if slow else None, done, statistics.median(ratios) if ratios else None,
                     all(agree) if agree else None))
        print(f"n={n}: closure {med * 1e3:.1f} ms; algorithm 7 finished {done}/{args.graphs}", flush=True)
    write_results(args.out, records)
    print("\n| nodes | closure plan (median) | Algorithm 7 plan (median, where finished) | speed-up | sets agree |")
    print("|---:|---:|---:|---:|:---:|")
    for n, med, sl, done, ratio, ag in rows:
        sl_s = f"{sl:.3f} s ({done}/{args.graphs})" if sl is not None else f"did not finish (> 2^20 subsets or > {args.budget:.0f} s)"
        r_s = f"{ratio:.0f}x" if ratio else "-"
        print(f"| {n} | {med * 1e3:.1f} ms | {sl_s} | {r_s} | {'yes' if ag else ('-' if ag is None else 'NO')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
