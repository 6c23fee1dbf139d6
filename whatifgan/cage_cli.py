"""``whatifgan probe CONFIG``: run a CAGE experiment and print the direction table.

The main CLI (:mod:`whatifgan.cli`) adds the subcommand with::

    from . import cage_cli
    cage_cli.register(sub)

``CONFIG`` is a YAML file or a name in ``configs/experiments`` (``cage_mog``, ``cage_morpho``,
``cage_dcm``: the image generator of a DCM trained on Morpho-MNIST, or loaded with ``dcm.run_dir``).
The table lists, per attribute pair, GATE(m1 -> m2) and GATE(m2 -> m1) at the chosen alpha
(Eq. 6) with their permutation p-values, Delta tau (Eq. 7) with the p-value of its paired null,
the inferred direction and the true one; plots and ``report.json`` go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register", "run", "main"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``probe`` subcommand to an ``argparse`` subparsers object."""
    s = subparsers.add_parser("probe", help="CAGE: probe the causal direction a generative model has learned",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("config", help="YAML file or a name in configs/experiments (cage_mog, cage_morpho, cage_dcm)")
    s.add_argument("--out", help="output directory for plots, the model and report.json "
                                 "(default runs/<config name>)")
    s.add_argument("--permutations", type=int, metavar="B", help="size of the permutation null")
    s.add_argument("-k", type=int, help="number of prior samples (Step 2)")
    s.add_argument("--alpha", type=float, help="the alpha of the decision")
    s.add_argument("--seed", type=int, help="CAGE seed")
    s.add_argument("--no-plots", action="store_true")
    s.add_argument("--json", action="store_true", help="print the summaries as JSON instead of a table")
    s.add_argument("--progress", action="store_true", help="progress bars")
    s.set_defaults(func=run)
    return s


def run(args) -> int:
    from .cage.experiments import load_config, print_table, run_experiment

    cfg = load_config(args.config)
    cage = dict(cfg.get("cage", {}))
    for key, val in (("n_permutations", args.permutations), ("k", args.k), ("alpha", args.alpha),
                     ("seed", args.seed)):
        if val is not None:
            cage[key] = val
    cfg["cage"] = cage
    name = cfg.get("name") or Path(str(args.config)).stem
    out = Path(args.out) if args.out else Path("runs") / str(name)
    reports = run_experiment(cfg, out, progress=True if args.progress else False, plots=not args.no_plots)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(reports, indent=1, default=float))
    if args.json:
        print(json.dumps([{**r["summary"], "truth": r["truth"], "method": r["method"]} for r in reports],
                         indent=1, default=float))
        return 0
    print(print_table(reports))
    figs = sorted({f for r in reports for f in r.get("figures", [])})
    if figs:
        print("\nplots: " + ", ".join(figs))
    print(f"report: {out / 'report.json'}")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point (``python -m whatifgan.cage_cli CONFIG``)."""
    p = argparse.ArgumentParser(prog="whatifgan")
    sub = p.add_subparsers(dest="cmd", required=True)
    register(sub)
    args = p.parse_args(["probe", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
