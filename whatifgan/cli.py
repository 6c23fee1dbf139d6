"""The ``whatifgan`` command line: train, sample, query, counterfactual, evaluate, demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PAPER_GRAPHS = [
    ("whatifgan_fig2", ["obs"]),
    ("frontdoor", ["obs"]),
    ("asia_hidden", ["obs"]),
    ("sachs_pkc_hidden", ["D1", "D2=do(PKA)[PKA, Mek]"]),
    ("whatifgan_f7", ["D1=[-W0, -Y0]", "D2=[-Y1]"]),
    ("colored_mnist2", ["D1", "D2=do(X1)"]),
]


def _cmd_plan_demo(args) -> int:
    from hgraph import training_plan

    for name, datasets in PAPER_GRAPHS:
        print(f"=== {name}")
        print(training_plan(name, datasets))
        print()
    return 0


def _default_run_dir(config: str) -> str:
    return str(Path("runs") / Path(config).stem)


def _cmd_train(args) -> int:
    import os

    from .pipelines.dcm_experiment import run

    if args.nproc is not None and args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
    run_dir = args.run_dir or _default_run_dir(args.config)
    run(args.config, run_dir, mode=args.mode, resume=args.resume, device=args.device, steps=args.steps,
        progress=not args.no_progress, parallel_hnodes=args.parallel_hnodes, nproc=args.nproc,
        quiet=int(os.environ.get("RANK", "0")) != 0)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(f"run directory: {run_dir}  (TensorBoard: tensorboard --logdir {run_dir}/tb)")
    return 0


def _cmd_pretrain(args) -> int:
    from .pipelines.dcm_experiment import pretrain

    info = pretrain(args.config, args.variable, args.out, steps=args.steps, device=args.device,
                    progress=not args.no_progress)
    print(f"saved the mechanism of {args.variable} ({info['steps']} steps, {info['seconds']:.1f} s) to {info['path']}; "
          f"use it with model: {{modules: {{{args.variable}: \"pretrained:{info['path']}\"}}}}")
    return 0


def _cmd_demo(args) -> int:
    """The main job on embedded data: modular WhatIfGAN on the discrete front-door benchmark."""
    print("Modular training plan:")
    from hgraph import training_plan

    print(training_plan("frontdoor", ["obs"]))
    print()
    from .pipelines.dcm_experiment import run

    run_dir = args.run_dir or "runs/demo-frontdoor"
    run("frontdoor_discrete", run_dir, progress=not args.no_progress)
    print(f"\nrun directory: {run_dir} (report.json, tvd.png, TensorBoard logs in tb/)")
    return 0


def _parse_do(items) -> dict:
    out = {}
    for it in items or []:
        for part in it.split(","):
            if "=" not in part:
                raise SystemExit(f"error: --do expects VAR=VALUE, got {part!r}")
            k, v = part.split("=", 1)
            out[k.strip()] = int(v)
    return out


def _cmd_sample(args) -> int:
    import numpy as np

    from .pipelines.dcm_experiment import load_run

    dcm, cfg, sampler = load_run(args.run)
    out = sampler.sample(args.n, do=_parse_do(args.do) or None, force=args.force)
    cols = {k: v.cpu().numpy() for k, v in out.items()}
    if args.out:
        p = Path(args.out)
        if p.suffix == ".csv":
            names = list(cols)
            np.savetxt(p, np.stack([cols[k] for k in names], 1), fmt="%d", delimiter=",",
                       header=",".join(names), comments="")
        else:
            np.savez_compressed(p, **cols)
        print(f"wrote {args.n} samples to {p}")
    else:
        names = list(cols)
        print(",".join(names))
        for i in range(min(args.n, 20)):
            print(",".join(str(int(cols[k][i])) for k in names))
        if args.n > 20:
            print(f"... ({args.n} samples; use --out FILE to save them all)")
    return 0


def _print_table(f, title: str) -> None:
    import itertools

    print(title)
    for idx in itertools.product(*[range(c) for c in f.cards]):
        lab = ", ".join(f"{v}={i}" for v, i in zip(f.vars, idx))
        print(f"  {lab:50s} {f.values[idx]:.4f}")


def _cmd_query(args) -> int:
    from hgraph.identify import parse_query

    from .pipelines.dcm_experiment import load_run, truth, build_source

    dcm, cfg, sampler = load_run(args.run)
    q = parse_query(args.query)
    if q.is_counterfactual:
        r = sampler.counterfactual(q, n=args.n, force=args.force)
        _print_table(r.table, f"{args.query}  (model, {r.method}, effective sample size {r.ess:.0f})")
        est = r.table
    else:
        est = sampler.query(q, n=args.n, force=args.force)
        _print_table(est, f"{args.query}  (model, {args.n} samples per treatment value)")
    if args.truth:
        _, scm = build_source(cfg)
        _print_table(truth(scm, q), "exact answer of the generating SCM")
    return 0


def _cmd_evaluate(args) -> int:
    from .pipelines.dcm_experiment import build_source, evaluate, load_run

    dcm, cfg, sampler = load_run(args.run)
    _, scm = build_source(cfg)
    queries = args.queries or (cfg.get("eval") or {}).get("queries", [])
    res = evaluate(dcm, scm, queries, sampler, n=args.n, force=args.force)
    for q, v in res.items():
        print(f"{q:45s} TVD {v:.4f}" if v == v else f"{q:45s} not identifiable from the training data")
    if args.json:
        print(json.dumps(res))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="whatifgan", description="Deep causal generative models: train, sample, query.")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("demo", help="the main job: modular WhatIfGAN on the front-door benchmark")
    s.add_argument("--run-dir")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("plan-demo", help="print the modular training plans of the papers' graphs")
    s.set_defaults(func=_cmd_plan_demo)

    s = sub.add_parser("train", help="train a DCM from an experiment config")
    s.add_argument("config", help="YAML file or a name in configs/experiments")
    s.add_argument("--run-dir", help="output directory (default runs/<config name>)")
    s.add_argument("--mode", choices=["modular", "joint"])
    s.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoints")
    s.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    s.add_argument("--steps", type=int, help="generator steps per h-node")
    s.add_argument("--parallel-hnodes", type=int, metavar="N", help="train up to N h-nodes of a stage in parallel processes")
    s.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel training: N local processes train each h-node together (torch.distributed; "
                        "gloo on CPU, NCCL when every process has a GPU); batch_size is the global batch. "
                        "Or start the command with torchrun --nproc_per_node=N -m whatifgan.cli train ...")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("pretrain", help="train one mechanism (its h-node) on its own and save it as a frozen plug-in")
    s.add_argument("config", help="YAML file or a name in configs/experiments")
    s.add_argument("--variable", required=True, help="the variable whose mechanism is trained, e.g. I")
    s.add_argument("--out", required=True, help="weights file (an architecture JSON is written next to it)")
    s.add_argument("--steps", type=int, help="generator steps (default: the config's)")
    s.add_argument("--device", help="auto, cpu, cuda, ...")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_pretrain)

    s = sub.add_parser("sample", help="sample from a trained model")
    s.add_argument("run")
    s.add_argument("--do", action="append", metavar="X=1", help="intervention(s), repeatable")
    s.add_argument("-n", type=int, default=1000)
    s.add_argument("--out", help="write samples to FILE.npz or FILE.csv")
    s.add_argument("--force", action="store_true", help="sample even if not identifiable from the data")
    s.set_defaults(func=_cmd_sample)

    for name, helptext in [("query", "estimate P(Y | do(X), Z) with a trained model"),
                           ("counterfactual", "estimate a counterfactual such as P(Y_{X=1} | X=0)")]:
        s = sub.add_parser(name, help=helptext)
        s.add_argument("run")
        s.add_argument("query")
        s.add_argument("-n", type=int, default=20000)
        s.add_argument("--force", action="store_true")
        s.add_argument("--truth", action="store_true", help="also print the exact answer of the generating SCM")
        s.set_defaults(func=_cmd_query)

    import importlib

    for mod in ("idgen_cli", "diffscm_cli", "cage_cli", "compare_cli"):  # the other papers' pipelines
        try:
            m = importlib.import_module(f"whatifgan.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"whatifgan.{mod}":
                raise
            continue
        m.register(sub)

    s = sub.add_parser("evaluate", help="TVD of the config's queries against the exact truth")
    s.add_argument("run")
    s.add_argument("--queries", nargs="*")
    s.add_argument("-n", type=int, default=20000)
    s.add_argument("--force", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_evaluate)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from hgraph import GraphError
    from hgraph.identify import NotIdentifiable

    func = getattr(args, "func", None)
    if func is None:  # groups registered by pipeline modules may only provide run(args)
        import importlib

        mod = {"idgen": "idgen_cli", "diffscm": "diffscm_cli", "probe": "cage_cli",
               "compare": "compare_cli"}.get(args.cmd)
        func = importlib.import_module(f"whatifgan.{mod}").run
    try:
        return int(func(args) or 0)
    except NotIdentifiable as e:
        print(f"error: {e}\n(use --force to sample anyway)", file=sys.stderr)
        return 1
    except (GraphError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
