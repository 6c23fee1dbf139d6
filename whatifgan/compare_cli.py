"""``whatifgan compare CONFIG``: the same causal query with the conditional models swapped per
variable (diffusion / GAN / classifier / empirical), the conditional baseline and a WhatIfGAN DCM,
scored against the exact answer of the data's discrete twin (see :mod:`whatifgan.compare`).

The main CLI calls :func:`register` when it builds its parser; torch is imported inside :func:`run`.
"""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="compare generative back ends (diffusion, GAN, classifier) "
                                              "on one query of an image SCM with exact truth")
    p.add_argument("config", help="YAML file or a name in configs/experiments (e.g. compare_napkin_mnist_fast)")
    p.add_argument("--methods", nargs="+", help="run only these methods of the config")
    p.add_argument("--figure", help="write the side-by-side samples here (default benchmarks/results/"
                                    "compare_<name>.png; 'none' to skip)")
    p.add_argument("--json", help="write the full result (table, distributions) here")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: the config's, else cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: small models train fastest single-threaded)")
    p.add_argument("--cache-dir", help="dataset / classifier cache (default $WHATIFGAN_CACHE or ~/.cache/whatifgan)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import torch

    from .compare import load_compare_config, run_compare

    if args.threads:
        torch.set_num_threads(int(args.threads))
    cfg = load_compare_config(args.config)
    fig = args.figure
    if fig is None:
        fig = f"benchmarks/results/compare_{cfg['name']}.png"
    elif fig.lower() == "none":
        fig = None
    res = run_compare(cfg, methods=args.methods, device=args.device, progress=not args.no_progress,
                      cache_dir=args.cache_dir, figure=fig, json_out=args.json)
    print()
    print(f"{res.name}: {res.query}  (TVD of {res.attribute or res.outcome} to the exact interventional "
          f"distribution, mean over {len(res.truth)} interventions)")
    print(res.table())
    if fig:
        print(f"samples: {fig}")
    return 0
