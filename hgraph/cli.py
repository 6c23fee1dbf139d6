"""The ``hgraph`` command line: plan, draw, identify, list.

GRAPH is a graph file (YAML/JSON), the name of a shipped graph (``hgraph list``) or an edge string
such as ``"X -> M; M -> Y; X <-> Y"``. Bad graphs exit with status 2 and the GraphError message.
"""

from __future__ import annotations

import argparse
import sys

from .admg import ADMG, GraphError


def _load(spec: str) -> ADMG:
    return ADMG.load(spec)


def _cmd_plan(args) -> int:
    from .plan import PlanError, training_plan

    g = _load(args.graph)
    datasets = args.dataset or ["obs"]
    try:
        plan = training_plan(g, datasets, pretrained=args.pretrained or ())
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(plan.to_json())
    elif args.dot:
        print(plan.to_dot())
    else:
        print(plan)
    if args.png:
        out = plan.draw(args.png)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _cmd_draw(args) -> int:
    g = _load(args.graph)
    if args.dot or not args.out:
        print(g.to_dot())
    if args.out:
        from .draw import draw_graph

        print(f"wrote {draw_graph(g, args.out)}", file=sys.stderr)
    return 0


def _cmd_hgraph(args) -> int:
    from .hgraph import build_hgraphs

    g = _load(args.graph)
    res = build_hgraphs(g, [frozenset(x.split(",")) for x in args.do or []])
    for inter, r in res.items():
        print(r["hgraph"])
        if inter:
            print("  projection on H^∅: " + ", ".join(f"H{j} <- {ks}" for j, ks in r["projection"].items()))
    return 0


def _cmd_list(args) -> int:
    from .library import graph_path, list_graphs

    for name in list_graphs():
        g = ADMG.from_file(graph_path(name))
        print(f"{name:24s} {g.to_string()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hgraph", description="Causal graphs, H-graphs, training plans and identification.")
    sub = p.add_subparsers(dest="cmd", required=True)

    sp = sub.add_parser("plan", help="modular training plan (H-graph + ancestor sets per dataset)")
    sp.add_argument("graph")
    sp.add_argument("--dataset", "--datasets", action="append", metavar="SPEC", nargs="+",
                    help="dataset spec, repeatable: obs | do(X) | NAME=do(X)[X, Y] | NAME=[-W0, -Y0]")
    sp.add_argument("--pretrained", nargs="*", help="variables whose modules are pretrained plug-ins")
    sp.add_argument("--json", action="store_true", help="print the plan as JSON")
    sp.add_argument("--dot", action="store_true", help="print the plan as Graphviz DOT")
    sp.add_argument("--png", metavar="FILE", help="draw the H-graph over the causal graph to a PNG")
    sp.set_defaults(func=_cmd_plan)

    sd = sub.add_parser("draw", help="print DOT or draw a PNG of a graph")
    sd.add_argument("graph")
    sd.add_argument("--out", "-o", metavar="FILE.png")
    sd.add_argument("--dot", action="store_true")
    sd.set_defaults(func=_cmd_draw)

    sh = sub.add_parser("hgraph", help="H-graph (and H^I graphs for --do X,Y)")
    sh.add_argument("graph")
    sh.add_argument("--do", action="append", metavar="X[,Y]")
    sh.set_defaults(func=_cmd_hgraph)

    sl = sub.add_parser("list", help="graphs shipped in configs/graphs")
    sl.set_defaults(func=_cmd_list)

    try:
        from . import cli_identify
    except ImportError:  # pragma: no cover - identification module missing in a partial install
        cli_identify = None
    if cli_identify is not None:
        cli_identify.register(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "dataset", None):
        args.dataset = [d for group in args.dataset for d in group]
    func = getattr(args, "func", None)
    if func is None:  # subcommands registered by other modules may only provide run(args)
        from . import cli_identify

        func = cli_identify.run
    try:
        return int(func(args) or 0)
    except GraphError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
