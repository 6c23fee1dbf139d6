"""Benchmark: modular versus joint WhatIfGAN training against exact ground truth.

For each experiment config (default: the six in configs/experiments), trains the same networks
modularly (Algorithm 2/7) and jointly (Algorithm 3), side by side in one run, and records for every
query the final TVD to the exact answer and the training wall time until TVD <= target was first
met (null if never). Writes ``benchmarks/results/dcm.json``, a TVD-curve PNG per run and prints a
markdown table.

    python scripts/bench_dcm.py [--configs frontdoor_discrete napkin_discrete ...] [--steps N]
                                [--set model.batchnorm=false ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from benchlib import git_commit, record, write_results  # noqa: E402

from whatifgan.pipelines.dcm_experiment import load_config, run  # noqa: E402

DEFAULT = ["frontdoor_discrete", "napkin_discrete", "asia", "sachs", "synthetic_f7", "cmnist2_lowdim"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=DEFAULT)
    ap.add_argument("--modes", nargs="+", default=["modular", "joint"])
    ap.add_argument("--steps", type=int, help="override steps per h-node (joint: total = steps x #h-nodes)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="override config entries of every run, e.g. model.batchnorm=false (YAML values)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/dcm.json")
    ap.add_argument("--runs", default="benchmarks/results/dcm_runs")
    ap.add_argument("--table", action="store_true", help="only print the markdown table of --out")
    ap.add_argument("--merge", action="store_true",
                    help="keep the records of --out for benchmarks not run now (default: overwrite)")
    args = ap.parse_args(argv)
    if args.table:
        print_table(json.loads(Path(args.out).read_text()))
        return 0
    torch.set_num_threads(args.threads)
    commit = git_commit()
    records, rows = [], []
    kept = []
    if args.merge and Path(args.out).exists():
        names = {load_config(n)["name"] for n in args.configs}
        kept = [r for r in json.loads(Path(args.out).read_text()) if r["benchmark"] not in names]
    for name in args.configs:
        cfg = load_config(name)
        if args.steps:
            cfg.setdefault("train", {})["steps"] = args.steps
        for item in args.set:
            _set(cfg, item)
        reports = {}
        for mode in args.modes:
            c = dict(cfg)
            c["train"] = dict(cfg.get("train") or {})
            if mode == "joint":  # same total generator-step budget as the modular run
                from hgraph import training_plan

                from whatifgan.pipelines.dcm_experiment import build_datasets, build_source

                g, scm = build_source(c)
                ds = build_datasets(c, scm, g)
                n_steps = len([s for s in training_plan(g, [d.spec() for d in ds]).steps if s.uses])
                c["train"]["steps"] = int(c["train"].get("steps", 2000)) * max(1, n_steps)
            run_dir = Path(args.runs) / f"{cfg['name']}-{mode}"
            rep = run(c, run_dir, mode=mode, progress=False)
            if (run_dir / "tvd.png").exists():  # the TVD curve next to the JSON (runs are not kept)
                shutil.copy(run_dir / "tvd.png", Path(args.out).parent / f"dcm_{cfg['name']}_{mode}.png")
            reports[mode] = rep
            conf = f"{name}: steps={c['train'].get('steps')}, batch={c['train'].get('batch_size')}"
            if args.set:
                conf += ", " + ", ".join(args.set)
            for q, v in rep["tvd"].items():
                records.append(record(cfg["name"], mode, "tvd", q, v, rep["time_to_target"].get(q), conf, commit))
            records.append(record(cfg["name"], mode, "train_seconds", None, rep["train_seconds"],
                                  rep["train_seconds"], conf, commit))
        if "modular" in reports and "joint" in reports:
            tm = _all_reached(reports["modular"])
            tj = _all_reached(reports["joint"])
            ratio = tm / tj if (tm is not None and tj is not None and tj > 0) else None
            records.append(record(cfg["name"], "modular", "time_to_target_ratio_vs_joint", None, ratio,
                                  tm, f"{name}: modular time / joint time until every query's TVD <= target",
                                  commit))
            rows.append((cfg["name"], reports, tm, tj, ratio))
        write_results(args.out, kept + records)
    print("\n| benchmark | query | TVD modular | TVD joint | time to target modular | joint |")
    print("|---|---|---:|---:|---:|---:|")
    for name, reps, tm, tj, ratio in rows:
        for q in reps["modular"]["tvd"]:
            tmq = reps["modular"]["time_to_target"].get(q)
            tjq = reps["joint"]["time_to_target"].get(q)
            print(f"| {name} | `{q}` | {reps['modular']['tvd'][q]:.3f} | {reps['joint']['tvd'][q]:.3f} | "
                  f"{_s(tmq)} | {_s(tjq)} |")
        print(f"| {name} | all queries | | | {_s(tm)} | {_s(tj)} (ratio {ratio:.2f}) |" if ratio is not None
              else f"| {name} | all queries | | | {_s(tm)} | {_s(tj)} |")
    return 0


def print_table(records) -> None:
    """Markdown table from the JSON records (final TVD; seconds = time until TVD <= target)."""
    rows: dict = {}
    for r in records:
        if r["metric"] == "tvd":
            rows.setdefault((r["benchmark"], r["query"]), {})[r["method"]] = (r["value"], r["seconds"])
    ratios = {r["benchmark"]: r["value"] for r in records if r["metric"] == "time_to_target_ratio_vs_joint"}
    print("| benchmark | query | TVD modular | TVD joint | time to TVD<=0.05 modular | joint |")
    print("|---|---|---:|---:|---:|---:|")
    for (b, q), m in rows.items():
        mv, ms = m.get("modular", (None, None))
        jv, js = m.get("joint", (None, None))
        print(f"| {b} | `{q}` | {_v(mv)} | {_v(jv)} | {_s(ms) if 'modular' in m else '-'} | "
              f"{_s(js) if 'joint' in m else '-'} |")
    for b, r in ratios.items():
        print(f"| {b} | time ratio modular/joint (all queries) | | | {'%.2f' % r if r is not None else 'n/a'} | |")


def _set(cfg: dict, item: str) -> None:
    """``a.b=value``: set ``cfg[a][b]`` to the YAML-parsed value (creating the dicts on the way)."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
    *path, last = key.split(".")
    node = cfg
    for k in path:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise SystemExit(f"--set {item!r}: {k!r} is not a mapping in the config")
    value = yaml.safe_load(raw)
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    node[last] = value


def _v(x):
    return f"{x:.3f}" if x is not None else "-"


def _s(t):
    return f"{t:.1f} s" if t is not None else "not reached"


def _all_reached(rep):
    ts = list(rep["time_to_target"].values())
    if not ts or any(t is None for t in ts):
        return None
    return max(ts)


if __name__ == "__main__":
    sys.exit(main())
