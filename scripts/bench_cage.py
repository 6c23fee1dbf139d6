"""Benchmark: CAGE probes of generative models for the causal direction between two attributes.

Runs the experiment configs (default ``cage_mog`` and ``cage_morpho``) with
:func:`whatifgan.cage.experiments.run_experiment`, records for every probe the GATE of the true
cause on the true effect at the chosen alpha (Eq. 6), Delta tau with the true cause as m1 (Eq. 7),
the permutation p-values of both GATEs and whether the inferred direction is the true one, and
writes ``benchmarks/results/cage.json``, the PNGs in ``benchmarks/results/`` and a markdown table.

``cage_dcm`` is the third benchmark, ``dcm-probe``: CAGE on the image generator of a DCM trained on
Morpho-MNIST (trained by the experiment and cached in ``--runs``, or loaded from ``dcm.run_dir``).
Records of benchmarks not run are kept from the existing ``--out`` file (merge).

    python scripts/bench_cage.py [--configs cage_mog cage_morpho cage_dcm] [--permutations B]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from benchlib import git_commit, record, write_results  # noqa: E402

from whatifgan.cage.experiments import load_config, print_table, run_experiment  # noqa: E402

DEFAULT = ["cage_mog", "cage_morpho", "cage_dcm"]


def _records(rep: dict, config: str, commit: str) -> list[dict]:
    s = rep["summary"]
    bench, method = rep["benchmark"], rep["method"]
    seed = f", seed {rep['seed']}" if "seed" in rep else ""
    query = f"{s['m1']} vs {s['m2']} (truth {rep['truth']}), alpha={s['alpha']:g}{seed}"
    secs = rep.get("train_seconds", 0.0) + rep.get("probe_seconds", 0.0)
    return [record(bench, method, "gate", query + ", m1 -> m2", s["gate_12"], secs, config, commit),
            record(bench, method, "gate", query + ", m2 -> m1", s["gate_21"], secs, config, commit),
            record(bench, method, "delta_tau", query, s["delta_tau"], secs, config, commit),
            record(bench, method, "p_value", query + ", m1 -> m2", s["p_12"], secs, config, commit),
            record(bench, method, "p_value", query + ", m2 -> m1", s["p_21"], secs, config, commit),
            record(bench, method, "direction_correct", query + f", inferred {s['direction']}",
                   rep["direction_correct"], secs, config, commit)]


def _merge(path: Path, records: list[dict]) -> list[dict]:
    """``records`` plus the records of ``path`` whose benchmark was not run now."""
    if not path.is_file():
        return records
    ran = {r["benchmark"] for r in records}
    old = [r for r in json.loads(path.read_text()) if r["benchmark"] not in ran and r["value"] is not None]
    return old + records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=DEFAULT)
    ap.add_argument("--permutations", type=int, help="override the size of the permutation null")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/cage.json")
    ap.add_argument("--runs", default="runs/bench_cage", help="trained models and per-run reports")
    ap.add_argument("--figures", default="benchmarks/results")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--table", action="store_true", help="only print the markdown table of --out's reports")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    if args.table:
        reports = [r for name in args.configs for r in json.loads((runs / name / "report.json").read_text())]
        print(print_table(reports))
        return 0
    torch.set_num_threads(args.threads)
    commit = git_commit()
    records, all_reports = [], []
    for name in args.configs:
        cfg = load_config(name)
        if args.permutations:
            cfg.setdefault("cage", {})["n_permutations"] = args.permutations
        out = runs / name
        t0 = time.perf_counter()
        reports = run_experiment(cfg, out, progress=args.progress or None)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(reports, indent=1, default=float))
        for r in reports:
            records += _records(r, name, commit)
        for f in sorted({f for r in reports for f in r.get("figures", [])}):
            dst = Path(args.figures) / Path(f).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
            print(f"figure {dst}")
        all_reports += reports
    write_results(args.out, _merge(Path(args.out), records))
    print()
    print(print_table(all_reports))
    print("\n| benchmark | method | seconds (train + probe) | direction correct |\n|---|---|---|---|")
    for r in all_reports:
        seed = f" (seed {r['seed']})" if "seed" in r else ""
        print(f"| {r['benchmark']} | {r['method']}{seed} | {r['train_seconds'] + r['probe_seconds']:.0f} | "
              f"{r['direction_correct']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
