"""Benchmark: attribute classifiers of the image datasets (held-out accuracy), data timings, FID floor.

For each image dataset (Napkin-MNIST, Colored-MNIST-2, front-door Colored-MNIST, Morpho-MNIST):

* generate ``--n`` training rows from the embedded MNIST *train* split (``data_seconds``: load
  from the dataset cache, or render from the digit pool), time loading the cached digit pool
  (``pool_load_seconds``), building it afresh (``pool_build_seconds``, with ``--time-pool-build``)
  and rendering 10,000 rows (every dataset of the generator) from the pool in memory
  (``render_seconds_10k_rows``);
* train one small CNN per attribute kind (digit, colour, thickness, intensity) with
  ``trainers.ClassifierTrainer`` and report its accuracy on ``--held-out`` rows rendered from the
  embedded *test* split, i.e. unseen handwriting (``heldout_accuracy``; ``seconds`` = training);
* map the held-out images back to attribute codes and compare with the exact twin SCM's marginals
  (``attribute_tvd_vs_twin``: the error floor that the classifiers add to every image TVD);
* FID (digit-classifier features, not Inception) between training and held-out images
  (``fid_train_vs_heldout``: the floor for real data) and of the held-out set with itself.

    python scripts/bench_classifiers.py [--n 10000] [--held-out 2000] [--steps 3000]
        [--datasets napkin colored_mnist2 frontdoor morpho] [--out benchmarks/results/classifiers.json]
        [--append]   (keep the other datasets' records already in --out)
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

from whatifgan.data.image_scms import clear_pool_cache, digit_pool, generate  # noqa: E402
from whatifgan.metrics.images import attribute_tvd, fid, image_attributes, train_attribute_classifiers  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["napkin", "colored_mnist2", "frontdoor", "morpho"])
    ap.add_argument("--n", type=int, default=10_000, help="training rows per dataset")
    ap.add_argument("--held-out", type=int, default=2000, help="held-out rows (MNIST test split)")
    ap.add_argument("--steps", type=int, default=3000, help="training steps per classifier")
    ap.add_argument("--color-steps", type=int, default=600, help="training steps of colour classifiers")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="processes building a digit pool")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (on a shared CPU one thread is often 10x faster than two)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--time-pool-build", action="store_true",
                    help="also time a fresh digit-pool build (once per set of thickness levels)")
    ap.add_argument("--out", default="benchmarks/results/classifiers.json")
    ap.add_argument("--append", action="store_true",
                    help="keep the records of other datasets already in --out (replace this run's datasets)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    commit = git_commit()
    kept = []
    if args.append and Path(args.out).is_file():
        kept = [r for r in json.loads(Path(args.out).read_text())
                if r["query"].split(":")[0] not in args.datasets]
    records = []
    built_levels: set = set()
    for kind in args.datasets:
        common = {"cache_dir": args.cache_dir, "workers": args.workers, "progress": None}
        t0 = time.perf_counter()
        data = generate(kind, n=args.n, **common)
        gen_s = time.perf_counter() - t0
        n_images = sum(len(ds) for ds in data.datasets.values()) * len(data.attributes)
        cfg = {"dataset": kind, "n": args.n, "held_out": args.held_out, "images": n_images,
               "size": data.config["size"], "config_hash": data.config_hash[:16]}
        pk = data.manifest["pool"]
        pool_args = (pk["source"], pk["split"], pk["levels"], pk["per_class"], pk["refine"])
        if args.time_pool_build and pk["levels"] and tuple(pk["levels"]) not in built_levels:
            t0 = time.perf_counter()  # a fresh build, bypassing the caches
            pool = digit_pool(*pool_args, cache_dir=False, workers=args.workers, progress=None, rebuild=True)
            build_s = time.perf_counter() - t0
            built_levels.add(tuple(pk["levels"]))
            records.append(record("attribute_classifiers", "image_scms", "pool_build_seconds", kind, build_s, build_s,
                                  {**cfg, "digits": len(pool), "levels": pk["levels"], "workers": args.workers},
                                  commit))
        clear_pool_cache()
        t0 = time.perf_counter()
        pool = digit_pool(*pool_args, cache_dir=args.cache_dir, workers=args.workers)  # cached pool into memory
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = generate(kind, n=10_000, seed=12345, cache_dir=False, progress=False)
        render_s = time.perf_counter() - t0
        records.append(record("attribute_classifiers", "image_scms", "data_seconds", kind, gen_s, gen_s, cfg, commit))
        records.append(record("attribute_classifiers", "image_scms", "pool_load_seconds", kind, load_s, load_s,
                              {**cfg, "digits": len(pool)}, commit))
        records.append(record("attribute_classifiers", "image_scms", "render_seconds_10k_rows", kind, render_s,
                              render_s, {**cfg, "images_per_row": len(data.attributes),
                                         "rows": sum(len(d) for d in rows.datasets.values())}, commit))
        held = data.variant(split="test", n=args.held_out, seed=1000)
        kinds = [k for k in ("digit", "color", "thickness", "intensity") if any(k in a for a in data.attributes.values())]
        clfs = {}
        for k in kinds:
            steps = args.color_steps if k == "color" else args.steps
            c = train_attribute_classifiers(data, kinds=[k], held_out=held, steps=steps, batch_size=args.batch_size,
                                            cache_dir=args.cache_dir, retrain=args.retrain, progress=None)
            clfs[k] = c
            acc = c.accuracy[k]
            secs = c.info["seconds"][k]
            print(f"{kind:15s} {k:10s} held-out accuracy {acc:.4f}  ({secs:.0f} s, {c.info['n_train'][k]} train / "
                  f"{c.info['n_test'][k]} test images)", flush=True)
            records.append(record("attribute_classifiers", "cnn", "heldout_accuracy", f"{kind}:{k}", acc, secs,
                                  {**cfg, "steps": steps, "batch_size": args.batch_size,
                                   "n_train_images": c.info["n_train"][k], "n_test_images": c.info["n_test"][k],
                                   "temperature": round(c.temperatures[k], 4)}, commit))
        # classifier-induced error floor: held-out images -> codes vs the exact twin marginals
        hcols = held.dataset.columns
        for var, attrs in data.attributes.items():
            for k, a in attrs.items():
                if k not in clfs:
                    continue
                codes = image_attributes({var: hcols[var]}, {var: {k: a}}, clfs[k])
                truth = data.scm.prob([a.column])
                tv = attribute_tvd(codes, truth)
                emp_true = attribute_tvd({a.column: hcols[a.column]}, truth)
                records.append(record("attribute_classifiers", "cnn", "attribute_tvd_vs_twin",
                                      f"{kind}:{var}.{a.column}", tv,
                                      None, {**cfg, "tvd_of_true_codes": round(emp_true, 4)}, commit))
        digit = clfs.get("digit")
        if digit is not None:
            var = next(v for v, a in data.attributes.items() if "digit" in a)
            train_imgs = data.dataset.columns[var][: args.held_out]
            f_tt = fid(train_imgs, hcols[var], digit)
            f_self = fid(hcols[var], hcols[var], digit)
            records.append(record("attribute_classifiers", "digit_features", "fid_train_vs_heldout", f"{kind}:{var}", f_tt,
                                  None, cfg, commit))
            records.append(record("attribute_classifiers", "digit_features", "fid_self", f"{kind}:{var}", f_self,
                                  None, cfg, commit))
        write_results(args.out, kept + records)  # after every dataset: partial results survive an interruption
    for r in records:
        if r["metric"] in ("heldout_accuracy", "fid_train_vs_heldout", "render_seconds_10k_rows", "data_seconds",
                           "pool_build_seconds", "pool_load_seconds"):
            print(f"{r['metric']:24s} {r['query']:28s} {r['value']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
