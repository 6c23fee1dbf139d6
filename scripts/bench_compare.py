"""Benchmark: generative back ends compared on image SCMs with exact truth, and the ID-GEN paper's
stand-in experiments.

* ``napkin-mnist`` (ID-GEN Section 4.1; ``configs/experiments/compare_napkin_mnist_fast.yaml``):
  ``P(Y | do(X = x))`` for red ``x`` images of digits 3 and 5; methods ``idgen`` (ID-GEN with
  conditional diffusion models for the images), ``cond`` (the diffusion model of ``P(y | x)``) and
  ``whatifgan`` (WhatIfGAN DCM with GAN modules).  Metric ``tvd``: TVD of the classified colour of
  ``Y`` to the exact ``P(Y.color | do(X))`` (uniform), mean over the two images; also
  ``digit_agreement`` (truth 0.91), ``fid`` (local digit-classifier features), ``train_seconds``,
  ``samples_per_second`` and the colour distribution ``P(Y_color=k)`` per image.
* ``napkin-mnist-2k`` / ``napkin-mnist-gan`` (on request): the same with 2,000 diffusion steps
  per image model (``idgen``, ``cond``) / with conditional WGAN-GP image models (``idgen-gan``,
  ``cond-gan``): the two sides of GAN versus diffusion on the napkin data.
* ``frontdoor-mnist`` (``compare_frontdoor_mnist_fast.yaml``): ``P(A | do(D))`` on the front-door
  Colored-MNIST with the image mediator's model swapped (diffusion, WGAN-GP, empirical) and the
  outcome's (classifier, WGAN-GP); ``cond`` and ``whatifgan`` baselines.
* ``covid-backdoor-standin`` and ``celeba-audit-standin``: see :mod:`whatifgan.idgen.standins`.

Records go to ``benchmarks/results/compare.json`` (benchmark = config name), sample figures to
``benchmarks/results/compare_<name>.png``.

    python scripts/bench_compare.py [--only napkin-mnist frontdoor-mnist covid celeba] [--merge]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from benchlib import git_commit, record, write_results  # noqa: E402

CONFIGS = {"napkin-mnist": "compare_napkin_mnist_fast", "frontdoor-mnist": "compare_frontdoor_mnist_fast",
           "napkin-mnist-2k": "compare_napkin_mnist_2k", "napkin-mnist-gan": "compare_napkin_mnist_gan"}
DEFAULT = ["napkin-mnist", "frontdoor-mnist", "covid", "celeba"]  # napkin-mnist-2k/-gan on request
STANDINS = {"covid": "covid-backdoor-standin", "celeba": "celeba-audit-standin"}
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def compare_records(res, commit, config_text) -> list[dict]:
    out = []
    q = res.query
    for name, r in res.runs.items():
        for metric, key in (("tvd", "tvd"), ("digit_agreement", "agreement"), ("fid", "fid"),
                            ("train_seconds", "train_seconds"), ("samples_per_second", "samples_per_second")):
            if key in r.metrics:
                out.append(record(res.name, name, metric, q, r.metrics[key], r.train_seconds, config_text, commit))
        for label, per in r.per_intervention.items():
            qx = f"{q} at {label}"
            for key, v in per.items():
                metric = "digit_agreement" if key == "agreement" else key
                out.append(record(res.name, name, metric, qx, v, None, config_text, commit))
            col = res.attribute and f"{res.outcome}_{res.attribute}" or res.outcome
            for k, p in enumerate(r.distributions.get(label, [])):
                out.append(record(res.name, name, f"P({col}={k})", qx, p, None, config_text, commit))
    for label, dist in res.truth.items():
        qx = f"{q} at {label}"
        col = res.attribute and f"{res.outcome}_{res.attribute}" or res.outcome
        for k, p in enumerate(dist):
            out.append(record(res.name, "truth", f"P({col}={k})", qx, p, None, config_text, commit))
        if label in res.truth_agreement:
            out.append(record(res.name, "truth", "digit_agreement", qx, res.truth_agreement[label], None,
                              config_text, commit))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=DEFAULT,
                    help=f"benchmarks to run: {list(CONFIGS) + list(STANDINS)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--merge", action="store_true", help="keep the records of benchmarks not run now")
    ap.add_argument("--out", default=str(RESULTS / "compare.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    commit = git_commit()
    unknown = [b for b in args.only if b not in CONFIGS and b not in STANDINS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}")
    records: list[dict] = []
    ran: set[str] = set()

    def flush():
        kept = []
        if args.merge and Path(args.out).is_file():
            kept = [r for r in json.loads(Path(args.out).read_text()) if r["benchmark"] not in ran]
        write_results(args.out, kept + records)

    for b in args.only:
        t0 = time.perf_counter()
        if b in CONFIGS:
            from whatifgan.compare import load_compare_config, run_compare

            cfg = load_compare_config(CONFIGS[b])
            conf = f"configs/experiments/{CONFIGS[b]}.yaml"
            done = len(records)

            def partial(res, done=done, conf=conf):  # keep every finished method
                del records[done:]
                records.extend(compare_records(res, commit, conf))
                ran.add(res.name)
                flush()

            res = run_compare(cfg, device=args.device, progress=False,
                              figure=RESULTS / f"compare_{cfg['name']}.png",
                              json_out=RESULTS / f"compare_{cfg['name']}.details.json", on_method=partial)
            print(res.table(), flush=True)
        else:
            from whatifgan.idgen import standins

            fn = {"covid": standins.covid_benchmark, "celeba": standins.celeba_benchmark}[b]
            recs = fn(device=args.device, figure_dir=RESULTS)
            for r in recs:
                records.append(record(STANDINS[b], r["method"], r["metric"], r["query"], r["value"],
                                      r.get("seconds"), r["config"], commit))
            ran.add(STANDINS[b])
        print(f"== {b} done in {time.perf_counter() - t0:.0f} s", flush=True)
        flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
