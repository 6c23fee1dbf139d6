"""``hgraph identify GRAPH QUERY``: identification from the command line.

GRAPH is a graph file (YAML/JSON), the name of a shipped graph (``hgraph list``) or an edge string
(``"X -> M; M -> Y; X <-> Y"``); QUERY uses :func:`hgraph.identify.parse_query` syntax, e.g.
``"P(Y | do(X), Z)"`` or ``"P(Y_{X=1} | X=0)"``.

Exit status: 0 identified, 1 not identifiable (the message names the hedge or the conflict),
2 bad graph or query (the :class:`~hgraph.GraphError` message).

The main ``hgraph`` parser calls :func:`register`; ``python -m hgraph.cli_identify`` also works.
"""

from __future__ import annotations

import argparse
import json
import sys

from .admg import ADMG, GraphError

__all__ = ["register", "run", "main"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``identify`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "identify",
        help="identify a causal query (ID, IDC, gID, ID*, IDC*): estimand, LaTeX, trace",
        description="Identify P(y | do(x), z) or a counterfactual query; print the estimand. "
                    "Exit 1 if not identifiable (with the hedge), 2 on a bad graph or query.",
    )
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph", metavar="GRAPH", help="graph file, shipped graph name or edge string")
    p.add_argument("query", metavar="QUERY", help='query, e.g. "P(Y | do(X), Z)" or "P(Y_{X=1} | X=0)"')
    p.add_argument("--latex", action="store_true", help="print the estimand in LaTeX")
    p.add_argument("--trace", action="store_true", help="print the ID recursion trace")
    p.add_argument("--json", action="store_true", help="print query, estimand, LaTeX and trace as JSON")
    p.add_argument("--available", action="append", default=[], metavar='"do(Z)"',
                   help="an available experiment P(V | do(Z)) besides P(V) (repeatable)")
    p.add_argument("--no-observational", action="store_true",
                   help="P(V) is not available (only the --available experiments)")


def run(args) -> int:
    """Run the subcommand; returns the exit status."""
    from .identify import NotIdentifiable, identify

    try:
        g = ADMG.load(args.graph)
        est = identify(g, args.query, available=list(getattr(args, "available", None) or []),
                       observational=not getattr(args, "no_observational", False))
    except NotIdentifiable as e:
        if getattr(args, "json", False):
            out = {"identifiable": False, "query": e.query, "message": str(e),
                   "hedge": e.hedge.to_dict() if e.hedge is not None else None,
                   "hedges": [h.to_dict() for h in e.hedges], "conflict": e.conflict}
            print(json.dumps(out, indent=2))
        print(f"not identifiable: {e}", file=sys.stderr)
        if getattr(args, "trace", False) and e.trace is not None:
            print(e.trace.render(), file=sys.stderr)
        return 1
    except GraphError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        d = {"identifiable": True}
        d.update(est.to_dict())
        print(json.dumps(d, indent=2))
        return 0
    if getattr(args, "latex", False):
        print(est.latex(equation=True))
    else:
        print(est.equation())
    if getattr(args, "trace", False) and est.trace is not None:
        print()
        print(est.trace.render())
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="hgraph identify", description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
