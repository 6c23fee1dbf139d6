"""The ``whatifgan`` command line."""

from __future__ import annotations

import argparse
import sys

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
        plan = training_plan(name, datasets)
        print(f"=== {name}")
        print(plan)
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="whatifgan", description="Deep causal generative models: train, sample, query.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sd = sub.add_parser("plan-demo", help="print the modular training plans of the papers' graphs")
    sd.set_defaults(func=_cmd_plan_demo)
    sd = sub.add_parser("demo", help="the main job on embedded data")
    sd.set_defaults(func=_cmd_plan_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
