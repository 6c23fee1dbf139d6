"""Benchmark: WhatIfGAN with image variables (WhatIfGAN Section 5.1, Appendix F.2-F.4).

1. Front-door Colored-MNIST (``configs/experiments/frontdoor_mnist_fast.yaml``), four methods with
   the same networks:

   * ``modular``: h-node order [I] -> [D, A]; the [D, A] critic sees P(D, A, RI) (RI: the code of
     a conv autoencoder of the images);
   * ``rep``: WhatIfGAN-rep, joint training (one loss over all variables) with the same RI critic;
   * ``ncm``: NCM-style joint training, one conv critic over the raw images with label planes;
   * ``pretrained``: P(I | D) trained on its own and saved (``whatifgan pretrain``), then the rest of
     the DCM trained with it frozen (``model.modules: {I: "pretrained:<path>"}``);
   * ``modular-pixel``: modular, but the [D, A] critic compares raw pixels with label planes
     (``image_representation: null``) instead of ``P(D, A, RI)``.

   Joint runs get the same total number of generator steps as the modular run (the sum over its
   h-nodes, per-h-node ``train.hnodes`` overrides included).
   Reported: TVD of P(D, A) and P(A | do(D)) against the exact twin, TVD of P(I_digit | do(D))
   read off the generated images, the share of do(D=d) images classified as digit d, FID (locally
   trained digit features) and the training wall time.

2. Colored-MNIST-2 (``configs/experiments/cmnist2_images_fast.yaml``): the Figure 20 queries (L1, L2,
   L3) read off the generated images, with the top-3 attribute tuples of the exact answer next to
   their generated frequencies.

Writes ``benchmarks/results/images.json`` (records {benchmark, method, metric, query, value,
seconds, config, commit}), PNG grids ``benchmarks/results/images_<benchmark>_<method>.png``, TVD
curves ``..._tvd.png``, keeps the run directories (models, TensorBoard logs) under
``benchmarks/results/images_runs/`` and prints a markdown table.

    python scripts/bench_images.py [--methods modular rep ncm pretrained] [--skip-cmnist2] [--steps N]
    python scripts/bench_images.py --table
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from benchlib import git_commit, record, write_results  # noqa: E402

from whatifgan.pipelines.dcm_experiment import (build_datasets, build_source, load_config, pretrain,  # noqa: E402
                                                run)
from whatifgan.training import TrainConfig  # noqa: E402

METHODS = ["modular", "rep", "ncm", "pretrained", "modular-pixel"]
IMG = " [images]"  # suffix of queries read off generated images


def method_config(cfg: dict, method: str, runs: Path, hnodes: list) -> dict:
    """The experiment config of one method (see the module docstring). ``hnodes``: the h-nodes of
    the modular plan; joint methods get the sum of their steps (``train.hnodes`` overrides
    included) in total."""
    c = copy.deepcopy(cfg)
    tr = c.setdefault("train", {})
    if method in ("rep", "ncm"):
        base = TrainConfig.from_dict(tr)
        tr["mode"] = "joint"
        tr["steps"] = sum(base.for_hnode(h).steps for h in hnodes)
        tr.pop("hnodes", None)
        if method == "ncm":
            tr["image_representation"] = None
    elif method == "modular-pixel":
        tr["image_representation"] = None
    elif method == "pretrained":
        c.setdefault("model", {})["modules"] = {"I": f"pretrained:{runs / 'plugins' / 'I.pt'}"}
    elif method != "modular":
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    return c


def _records(name, method, rep, conf, commit, extra_seconds=0.0) -> list[dict]:
    out = []
    for q, v in rep["tvd"].items():
        out.append(record(name, method, "tvd", q, v, rep["time_to_target"].get(q), conf, commit))
    for q, v in rep.get("image_tvd", {}).items():
        out.append(record(name, method, "tvd", q + IMG, v, rep["time_to_target"].get(q), conf, commit))
        fl = rep.get("image_tvd_floor", {}).get(q)
        if fl is not None:
            out.append(record(name, method, "tvd_sampling_floor", q + IMG, fl, None, conf, commit))
    for q, rows in rep.get("top", {}).items():
        for r in rows:
            key = f"{q} @ " + ", ".join(f"{k}={v}" for k, v in r["tuple"].items())
            out.append(record(name, method, "top_truth", key, r["truth"], None, conf, commit))
            out.append(record(name, method, "top_generated", key, r["generated"], None, conf, commit))
    if "digit_agreement" in rep:
        out.append(record(name, method, "digit_agreement", "do(D=d) images classified as digit d",
                          rep["digit_agreement"], None, conf, commit))
    for v, f in rep.get("fid", {}).items():
        out.append(record(name, method, "fid", v, f, None, conf, commit))
    secs = rep["train_seconds"] + extra_seconds
    out.append(record(name, method, "train_seconds", None, secs, secs, conf, commit))
    return out


def _copy_figures(run_dir: Path, out_dir: Path, name: str, method: str) -> None:
    if (run_dir / "samples.png").exists():
        shutil.copy(run_dir / "samples.png", out_dir / f"images_{name}_{method}.png")
    if (run_dir / "tvd.png").exists():
        shutil.copy(run_dir / "tvd.png", out_dir / f"images_{name}_{method}_tvd.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frontdoor", default="frontdoor_mnist_fast")
    ap.add_argument("--cmnist2", default="cmnist2_images_fast")
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--skip-frontdoor", action="store_true")
    ap.add_argument("--skip-cmnist2", action="store_true")
    ap.add_argument("--steps", type=int, help="override train.steps (train.hnodes overrides still apply)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default="benchmarks/results/images.json")
    ap.add_argument("--runs", default="benchmarks/results/images_runs")
    ap.add_argument("--merge", action="store_true", help="keep the records of --out for runs not repeated now")
    ap.add_argument("--table", action="store_true", help="only print the markdown table of --out")
    args = ap.parse_args(argv)
    if args.table:
        print_table(json.loads(Path(args.out).read_text()))
        return 0
    torch.set_num_threads(args.threads)
    commit = git_commit()
    out_dir = Path(args.out).parent
    runs = Path(args.runs)
    records: list[dict] = []
    done: set[tuple] = set()

    def flush():
        kept = []
        if args.merge and Path(args.out).exists():
            kept = [r for r in json.loads(Path(args.out).read_text()) if (r["benchmark"], r["method"]) not in done]
        write_results(args.out, kept + records)

    def load(config: str) -> dict:
        cfg = load_config(config)
        if args.steps:
            cfg.setdefault("train", {})["steps"] = args.steps
        if args.device:
            cfg.setdefault("train", {})["device"] = args.device
        return cfg

    if not args.skip_frontdoor:
        cfg = load(args.frontdoor)
        name = cfg["name"]
        from hgraph import training_plan

        g, scm = build_source(cfg)
        hnodes = [s.hnode for s in training_plan(g, [d.spec() for d in build_datasets(cfg, scm, g)]).steps if s.uses]
        for method in args.methods:
            c = method_config(cfg, method, runs / name, hnodes)
            extra = 0.0
            conf = {"config": args.frontdoor, "mode": c["train"].get("mode"), "steps": c["train"].get("steps"),
                    "hnodes": c["train"].get("hnodes"), "batch_size": c["train"].get("batch_size"),
                    "n_critic": c["train"].get("n_critic"),
                    "representation": c["train"].get("image_representation") is not None}
            if method == "pretrained":
                t0 = time.perf_counter()
                info = pretrain(cfg, "I", runs / name / "plugins" / "I.pt", progress=False)
                extra = time.perf_counter() - t0
                conf["pretrain_seconds"] = round(extra, 1)
                conf["pretrain_steps"] = info["steps"]
                print(f"pretrained P(I | D) in {extra:.0f} s -> {info['path']}", flush=True)
            run_dir = runs / name / method
            if run_dir.exists():
                shutil.rmtree(run_dir)
            print(f"== {name}: {method}", flush=True)
            rep = run(c, run_dir, progress=False)
            _copy_figures(run_dir, out_dir, name, method)
            # wall time of the method: training (incl. the representation), plus pretraining
            records.extend(_records(name, method, rep, conf, commit, extra_seconds=extra))
            done.add((name, method))
            flush()
    if not args.skip_cmnist2:
        cfg = load(args.cmnist2)
        name = cfg["name"]
        run_dir = runs / name / "modular"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        print(f"== {name}: modular", flush=True)
        rep = run(cfg, run_dir, progress=False)
        _copy_figures(run_dir, out_dir, name, "modular")
        conf = {"config": args.cmnist2, "mode": "modular", "steps": cfg["train"].get("steps"),
                "batch_size": cfg["train"].get("batch_size"), "hnodes": cfg["train"].get("hnodes")}
        records.extend(_records(name, "modular", rep, conf, commit))
        done.add((name, "modular"))
        flush()
    print_table(json.loads(Path(args.out).read_text()))
    return 0


def _fmt(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}"


def _esc(q: str) -> str:
    return q.replace("|", "\\|")


def print_table(recs) -> None:
    by = {}
    for r in recs:
        by.setdefault((r["benchmark"], r["method"]), []).append(r)
    fd = [k for k in by if k[0] == "frontdoor-mnist"]
    if fd:
        print("\n#### Front-door Colored-MNIST (WhatIfGAN Section 5.1)\n")
        print("| method | TVD P(D, A) | TVD P(A \\| do(D)) | TVD P(I_digit \\| do(D)) (images) | digit agreement "
              "| FID | wall time (s) |")
        print("|---|---|---|---|---|---|---|")
        order = {m: i for i, m in enumerate(METHODS)}
        for key in sorted(fd, key=lambda k: order.get(k[1], 99)):
            rs = by[key]

            def get(metric, query=None):
                for r in rs:
                    if r["metric"] == metric and (query is None or r["query"] == query):
                        return r["value"]
                return None

            print(f"| {key[1]} | {_fmt(get('tvd', 'P(D, A)'))} | {_fmt(get('tvd', 'P(A | do(D))'))} | "
                  f"{_fmt(get('tvd', 'P(I_digit | do(D))' + IMG))} | {_fmt(get('digit_agreement'))} | "
                  f"{_fmt(get('fid', 'I'), 1)} | {_fmt(get('train_seconds'), 0)} |")
    cm = [k for k in by if k[0] == "cmnist2"]
    for key in cm:
        rs = by[key]
        print("\n#### Colored-MNIST-2 (WhatIfGAN Appendix F.4, Figure 20)\n")
        print("| query | TVD (read off images) | sampling floor | TVD (DCM nodes) |")
        print("|---|---|---|---|")
        for r in rs:
            if r["metric"] == "tvd" and r["query"].endswith(IMG):
                q = r["query"][:-len(IMG)]
                fl = next((x["value"] for x in rs if x["metric"] == "tvd_sampling_floor" and x["query"] == r["query"]), None)
                node = next((x["value"] for x in rs if x["metric"] == "tvd" and x["query"] == q), None)
                print(f"| {_esc(q)} | {_fmt(r['value'])} | {_fmt(fl)} | {_fmt(node)} |")
        print("\n| query | attribute tuple (Y1, Y2, Color, Thick) | exact | generated images |")
        print("|---|---|---|---|")
        for r in rs:
            if r["metric"] == "top_truth":
                q, tup = r["query"].split(" @ ")
                gen = next((x["value"] for x in rs if x["metric"] == "top_generated" and x["query"] == r["query"]), None)
                print(f"| {_esc(q)} | {tup} | {_fmt(r['value'])} | {_fmt(gen)} |")
        secs = next((x["value"] for x in rs if x["metric"] == "train_seconds"), None)
        fids = [f"{x['query']}: {x['value']:.1f}" for x in rs if x["metric"] == "fid"]
        print(f"\nwall time {_fmt(secs, 0)} s; FID {', '.join(fids)}")


if __name__ == "__main__":
    raise SystemExit(main())
