"""Diff-SCM on MNIST: counterfactual metrics (Table 1), the scale sweep (Figure 4) and figures 6/7.

Trains (or reuses) the diffusion model and the anti-causal classifier of a config
(``configs/experiments/diffscm_mnist_fast.yaml`` by default), the metric networks (CLD's VAE,
the IM1/IM2 autoencoders, an independent digit CNN for the extra ``validity`` metric), then, over
``bench.n_eval`` test images with random target classes (never the factual class):

* ``diffscm``: Algorithm 1 (abduction by DDIM inversion up to ``abduction_fraction`` of the chain,
  guided DDIM down) for every scale ``s`` of ``bench.scales`` (Figure 4), and at the table scale
  (by default the CLD-minimising ``s``, as the paper picks s = 0.7);
* ``no-abduction``: the same guided DDIM with the same ``s`` from fresh Gaussian noise
  (Appendix F's interventional sampling; no information from the factual image);
* ``pixel-gradient``: a Wachter-style counterfactual on the classifier alone: Adam in pixel space
  on ``CE(p_phi(y_CF | x, t=0)) + lambda ||x - x_F||_1``.

Writes ``benchmarks/results/diffscm.json`` (records ``benchmark, method, metric, query, value,
seconds, config, commit``; ``query`` is ``mean``, ``std`` or ``ci95`` over the test images),
``diffscm_fig4_scale_sweep.png``, ``diffscm_fig6_all_classes.png``, ``diffscm_fig7_scales.png``,
``diffscm_fig3b_methods.png`` in ``benchmarks/results/`` and prints a markdown table.

    python scripts/bench_diffscm.py                      # fast config (CPU, ~30 min)
    python scripts/bench_diffscm.py --reuse              # reuse trained networks in the run dir
    python scripts/bench_diffscm.py --config diffscm_mnist_paper --device cuda
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import git_commit, record, write_results  # noqa: E402

from whatifgan.diffscm import (  # noqa: E402
    Abduction,
    DiffSCMModel,
    load_data,
    load_config,
    pipeline_from_config,
    to_model_range,
    train_from_config,
)
from whatifgan.metrics.counterfactual import CounterfactualMetrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = "diffscm"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def quick(cfg: dict) -> dict:
    """Tiny sizes for a smoke run of the script (minutes)."""
    cfg = copy.deepcopy(cfg)
    cfg["train"]["diffusion"]["steps"] = 30
    cfg["train"]["classifier"]["steps"] = 30
    cfg["sampling"]["num_steps"] = 10
    cfg["metrics"].update(vae_steps=30, ae_class_steps=10, ae_all_steps=20, judge_steps=20)
    cfg["bench"].update(n_eval=20, scales=[0.0, 1.0, 3.0], figure_images=2)
    cfg["bench"]["pixel_gradient"]["steps"] = 10
    return cfg


def stratified(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` indices, as equal per class as possible, in a seeded random order."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels).tolist()
    per = int(math.ceil(n / len(classes)))
    idx = []
    for c in classes:
        members = torch.nonzero(labels == c).reshape(-1)
        idx.append(members[torch.randperm(members.numel(), generator=g)[:per]])
    idx = torch.cat(idx)
    return idx[torch.randperm(idx.numel(), generator=g)][:n]


def random_targets(y: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Target classes uniform over the other ``k - 1`` classes (Sec. 5.1)."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, k, y.shape, generator=g)
    return (y + shift) % k


def train_judge(xtr, ytr, steps: int, seed: int, device):
    """An independent digit CNN (not used by any method) that reads the class of the outputs."""
    from trainers import ClassifierConfig, ClassifierTrainer, TensorDictLoader

    from whatifgan.metrics.images import AttributeCNN

    torch.manual_seed(seed)
    net = AttributeCNN(1, 10).to(device)
    loader = TensorDictLoader({"x": to_model_range(xtr), "y": ytr}, 64, seed=seed)
    ClassifierTrainer(net, loader, config=ClassifierConfig(lr=1e-3, max_steps=steps,
                                                           progress=False),
                      device=device).train()
    return net.eval()


@torch.no_grad()
def judge_predict(net, x: torch.Tensor, device) -> torch.Tensor:
    out = [net(x[a:a + 256].to(device)).argmax(1).cpu() for a in range(0, x.shape[0], 256)]
    return torch.cat(out)


def pixel_gradient(model: DiffSCMModel, parent: str, x_f: torch.Tensor, y_cf: torch.Tensor,
                   *, steps: int, lr: float, l1: float, batch: int = 100) -> torch.Tensor:
    """Wachter et al. (2017)-style counterfactual on the classifier alone, in pixel space:
    ``argmin_x CE(p_phi(y_CF | x, t=0)) + l1 * ||x - x_F||_1`` with Adam, ``x`` kept in [-1, 1]."""
    head = model.heads[parent]
    dev = model.device
    outs = []
    for a in range(0, x_f.shape[0], batch):
        xf = x_f[a:a + batch].to(dev)
        y = y_cf[a:a + batch].to(dev)
        t0 = torch.zeros(xf.shape[0], dtype=torch.long, device=dev)
        x = xf.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(int(steps)):
            loss = F.cross_entropy(head(x, t0), y, reduction="sum") \
                + l1 * (x - xf).abs().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(-1.0, 1.0)
        outs.append(x.detach().cpu())
    return torch.cat(outs)


def summarise(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": std,
            "ci95": 1.96 * std / math.sqrt(max(v.size, 1))}


def grid_png(rows: list[torch.Tensor], path: Path, row_labels: list[str],
             col_labels: list[str] | None = None, title: str | None = None) -> None:
    """Rows of images (each ``(n, 1, H, W)`` in [-1, 1]) as a labelled grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(r.shape[0] for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(1.1 * nc + 0.8, 1.15 * nr + (0.4 if title else 0)),
                             squeeze=False)
    for i, r in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < r.shape[0]:
                ax.imshow(((r[j, 0].clamp(-1, 1) + 1) / 2).numpy(), cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
            if i == 0 and col_labels is not None and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="diffscm_mnist_fast")
    ap.add_argument("--run-dir", help="default runs/<config name>")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--device", help="auto, cpu, cuda, ...")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--reuse", action="store_true",
                    help="reuse model.pt / metrics.pt of the run directory when present")
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    args = ap.parse_args(argv)

    from trainers import resolve_device, seed_everything

    t_start = time.monotonic()
    cfg = load_config(args.config)
    if args.quick:
        cfg = quick(cfg)
    torch.set_num_threads(int(args.threads or cfg.get("threads", 1)))
    dev = resolve_device(args.device or cfg.get("device", "auto"))
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    run = Path(args.run_dir or ROOT / "runs" / (cfg["name"] + ("_quick" if args.quick else "")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "diffscm_quick" if args.quick else "diffscm"
    commit = git_commit()
    records: list[dict] = []
    timings: dict[str, float] = {}

    # ---------------------------------------------------------------- training
    t0 = time.monotonic()
    if args.reuse and (run / "model.pt").exists():
        model = DiffSCMModel.load(run / "model.pt").to(dev)
        log(f"reusing {run / 'model.pt'}")
    else:
        model = train_from_config(cfg, run, device=dev, progress=False,
                                  log=lambda m: log(m))
    timings["train_model"] = time.monotonic() - t0
    parent = next(iter(model.parents))
    k = model.parents[parent]
    data = load_data(cfg)
    xtr, ytr = data["train"]
    xte, yte = data["test"]

    mc = dict(cfg.get("metrics") or {})
    t0 = time.monotonic()
    if args.reuse and (run / "metrics.pt").exists():
        metrics = CounterfactualMetrics.load(run / "metrics.pt", xtr, ytr, device=dev)
        log("reusing metric networks")
    else:
        metrics = CounterfactualMetrics(
            k, (1, 28, 28), latent_dim=int(mc.get("latent_dim", 20)),
            ae_code_dim=int(mc.get("ae_code_dim", 16)),
            vae_channels=tuple(mc.get("vae_channels", (32, 64, 128))),
            vae_base_channels=int(mc.get("vae_base_channels", 32)),
            ae_channels=tuple(mc.get("ae_channels", (32, 64, 128))),
            ae_base_channels=int(mc.get("ae_base_channels", 32)))
        rep = metrics.fit(xtr, ytr, vae_steps=int(mc.get("vae_steps", 1500)),
                          ae_class_steps=int(mc.get("ae_class_steps", 400)),
                          ae_all_steps=int(mc.get("ae_all_steps", 1200)),
                          batch_size=int(mc.get("batch_size", 64)), seed=seed, device=dev,
                          progress=False)
        metrics.save(run / "metrics.pt")
        log(f"metric networks: VAE loss {rep['vae']['loss']:.1f}, autoencoders "
            f"{rep['autoencoders']['seconds']:.0f} s")
    judge = train_judge(xtr, ytr, int(mc.get("judge_steps", 600)), seed, dev)
    acc = float((judge_predict(judge, to_model_range(xte), dev) == yte).float().mean())
    timings["train_metrics"] = time.monotonic() - t0
    log(f"judge CNN test accuracy {acc:.3f}")
    head_acc = float((model.predict_parent(parent, to_model_range(xte).to(dev)).argmax(1).cpu()
                      == yte).float().mean())
    log(f"anti-causal head accuracy on clean test images {head_acc:.3f}")

    # ---------------------------------------------------------------- evaluation set
    bc = dict(cfg.get("bench") or {})
    n_eval = int(bc.get("n_eval", 100))
    idx = stratified(yte, n_eval, seed)
    x_f = to_model_range(xte[idx])
    y_f = yte[idx]
    y_cf = random_targets(y_f, k, seed + 1)
    pipe = pipeline_from_config(model, cfg)
    sc = pipe.scheduler
    frac = pipe.abduction_fraction
    desc = (f"{sc.num_steps} DDIM steps, abduction {frac:g}, dynamic norm "
            f"{sc.percentile is not None}, clip x0 {sc.clip_x0}, n={n_eval}")
    log(f"evaluating on {n_eval} test images: {desc}")

    def evaluate(x_cf: torch.Tensor) -> dict[str, np.ndarray]:
        m = metrics.evaluate(x_cf, x_f, y_f, y_cf)
        m["validity"] = (judge_predict(judge, x_cf, dev) == y_cf).double().numpy()
        return m

    def add(method: str, res: dict[str, np.ndarray], seconds: float, config: str) -> dict:
        summ = {}
        for metric in ("cld", "im1", "im2", "validity", "div", "p_cf", "p_f"):
            s = summarise(res[metric])
            summ[metric] = s
            for q in ("mean", "std", "ci95"):
                records.append(record(BENCH, method, metric, q, s[q], seconds, config, commit))
        return summ

    # abduction once, shared by every scale
    t0 = time.monotonic()
    ab = Abduction(u=torch.cat([pipe.abduct(x_f[a:a + 100]).u.cpu()
                                for a in range(0, n_eval, 100)]), index=sc.abduction_steps(frac),
                   fraction=frac)
    t_abduct = time.monotonic() - t0
    log(f"abduction: {t_abduct:.0f} s")

    def counterfactuals(s: float, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        outs = []
        for a in range(0, u.shape[0], 100):
            outs.append(pipe.generate(Abduction(u[a:a + 100], ab.index, frac),
                                      {parent: y[a:a + 100]}, scale=s).cpu())
        return torch.cat(outs)

    # ---------------------------------------------------------------- Figure 4: scale sweep
    scales = [float(s) for s in bc.get("scales", [0.0, 0.5, 0.7, 1.0, 2.0, 3.0])]
    sweep, cf_by_scale, sweep_seconds = {}, {}, {}
    for s in scales:
        t0 = time.monotonic()
        x_cf = counterfactuals(s, y_cf, ab.u)
        secs = time.monotonic() - t0 + t_abduct  # abduction + generation
        cf_by_scale[s], sweep_seconds[s] = x_cf, secs
        sweep[s] = add("diffscm", evaluate(x_cf), secs, f"sweep s={s:g}; {desc}")
        log(f"s={s:g}: CLD {sweep[s]['cld']['mean']:.3f}  IM1 {sweep[s]['im1']['mean']:.3f}  "
            f"IM2 {sweep[s]['im2']['mean']:.4f}  validity {sweep[s]['validity']['mean']:.2f}  "
            f"({secs:.0f} s)")
    best = min(scales, key=lambda s: sweep[s]["cld"]["mean"])
    ts = bc.get("table_scale", "best")
    s_tab = best if ts == "best" else float(ts)
    if s_tab not in cf_by_scale:
        t0 = time.monotonic()
        cf_by_scale[s_tab] = counterfactuals(s_tab, y_cf, ab.u)
        sweep_seconds[s_tab] = time.monotonic() - t0 + t_abduct
        sweep[s_tab] = add("diffscm", evaluate(cf_by_scale[s_tab]), sweep_seconds[s_tab],
                           f"sweep s={s_tab:g}; {desc}")
    log(f"CLD-minimising scale s = {best:g}; table scale s = {s_tab:g}")

    # ---------------------------------------------------------------- Table 1
    table = {}
    res = evaluate(cf_by_scale[s_tab])
    table["diffscm"] = add("diffscm", res, sweep_seconds[s_tab], f"table s={s_tab:g}; {desc}")
    # no abduction (Appendix F): u ~ N(0, I) at the top of the chain instead of the abducted
    # latent (at 0.75 of the linear schedule abar ~ 0.003, so starting there would hardly differ)
    t0 = time.monotonic()
    g = torch.Generator().manual_seed(seed + 2)
    x_T = torch.randn(x_f.shape, generator=g)
    x_na = torch.cat([pipe.interventional({parent: y_cf[a:a + 100]}, x_T=x_T[a:a + 100],
                                          scale=s_tab).cpu() for a in range(0, n_eval, 100)])
    t_na = time.monotonic() - t0
    table["no-abduction"] = add("no-abduction", evaluate(x_na), t_na,
                                f"table s={s_tab:g}; guided DDIM from x_T ~ N(0, I); {desc}")
    pg = dict(bc.get("pixel_gradient") or {})
    t0 = time.monotonic()
    x_pg = pixel_gradient(model, parent, x_f, y_cf, steps=int(pg.get("steps", 200)),
                          lr=float(pg.get("lr", 0.02)), l1=float(pg.get("l1", 0.005)))
    t_pg = time.monotonic() - t0
    table["pixel-gradient"] = add("pixel-gradient", evaluate(x_pg), t_pg,
                                  f"Adam {pg.get('steps', 200)} steps, lr {pg.get('lr', 0.02)}, "
                                  f"L1 weight {pg.get('l1', 0.005)}; n={n_eval}")
    for name in ("diffscm", "no-abduction", "pixel-gradient"):
        log(f"{name}: CLD {table[name]['cld']['mean']:.3f}  IM1 {table[name]['im1']['mean']:.3f}"
            f"  IM2 {table[name]['im2']['mean']:.4f}  validity "
            f"{table[name]['validity']['mean']:.2f}")

    # ---------------------------------------------------------------- figures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ms = np.array([sweep[s]["cld"]["mean"] for s in scales])
    ci = np.array([sweep[s]["cld"]["ci95"] for s in scales])
    ax.plot(scales, ms, "o-", color="C0", label="CLD (mean)")
    ax.fill_between(scales, ms - ci, ms + ci, color="C0", alpha=0.25, label="95% CI")
    ax.plot([best], [sweep[best]["cld"]["mean"]], "*", color="C3", ms=14,
            label=f"minimum, s = {best:g}")
    if max(scales) > 10:  # a sweep continued far past the paper's [0, 3]
        ax.set_xscale("symlog", linthresh=1.0)
        ax.axvspan(0, 3, color="0.9", zorder=0, label="paper's range [0, 3]")
    ax.set_xlabel("classifier scale s")
    ax.set_ylabel("CLD (lower is better)")
    ax.set_title("Diff-SCM scale sweep on MNIST (Figure 4)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{prefix}_fig4_scale_sweep.png", dpi=120)
    plt.close(fig)

    # Figure 6: factual, reconstruction, counterfactuals to every class at the table scale
    nf = int(bc.get("figure_images", 4))
    fi = torch.arange(nf)
    xf6 = x_f[fi]
    ab6 = pipe.abduct(xf6)
    u10 = ab6.u.cpu().repeat_interleave(k, 0)
    y10 = torch.arange(k).repeat(nf)
    rec6 = pipe.generate(ab6, {}).cpu()
    cf10 = torch.cat([pipe.generate(Abduction(u10[a:a + 100], ab6.index, frac),
                                    {parent: y10[a:a + 100]}, scale=s_tab).cpu()
                      for a in range(0, u10.shape[0], 100)])
    rows = [torch.cat([xf6[i:i + 1], rec6[i:i + 1], cf10[i * k:(i + 1) * k]]) for i in range(nf)]
    grid_png(rows, out / f"{prefix}_fig6_all_classes.png",
             [f"y={int(y_f[i])}" for i in range(nf)],
             ["orig.", "rec."] + [f"do({c})" for c in range(k)],
             f"Diff-SCM counterfactuals to every class (s = {s_tab:g}; Figure 6)")

    # Figure 7: orig., rec., do(target) at three scales for several factual images
    target = int(bc.get("figure7_target", 5))
    sel = torch.nonzero(y_f != target).reshape(-1)[:8]
    x7 = x_f[sel]
    ab7 = pipe.abduct(x7)
    s_lo = min(s for s in scales if s > 0) if any(s > 0 for s in scales) else 0.5
    s_hi = max(scales)
    s_set = sorted({s_lo, s_tab, s_hi})
    rows = [x7, pipe.generate(ab7, {}).cpu()]
    for s in s_set:
        rows.append(pipe.generate(ab7, {parent: target}, scale=s).cpu())
    grid_png(rows, out / f"{prefix}_fig7_scales.png",
             ["orig.", "rec."] + [f"do({target})\ns={s:g}" for s in s_set],
             None, "Influence of the classifier scale (Figure 7)")

    # Figure 3(b)-like comparison of the methods on the first evaluation images
    n3 = min(8, n_eval)
    grid_png([x_f[:n3], cf_by_scale[s_tab][:n3], x_na[:n3], x_pg[:n3]],
             out / f"{prefix}_fig3b_methods.png",
             ["factual", f"Diff-SCM\ns={s_tab:g}", "no\nabduction", "pixel\ngradient"],
             [f"{int(a)}->{int(b)}" for a, b in zip(y_f[:n3], y_cf[:n3])],
             "Counterfactuals to random target classes")

    # ---------------------------------------------------------------- results
    total = time.monotonic() - t_start
    for name, v in timings.items():
        records.append(record(BENCH, "setup", "seconds", name, v, v, desc, commit))
    records.append(record(BENCH, "setup", "accuracy", "judge CNN, test split", acc, None, desc,
                          commit))
    records.append(record(BENCH, "setup", "accuracy", "anti-causal head at t=0, test split",
                          head_acc, None, desc, commit))
    records.append(record(BENCH, "setup", "seconds", "total", total, total, desc, commit))
    write_results(out / f"{prefix}.json", records)

    def cell(s):
        return f"{s['mean']:.3f} ± {s['std']:.3f}"

    print()
    print(f"Diff-SCM on MNIST ({cfg['name']}; {desc}; mean ± std over the test images; "
          f"lower is better except validity)")
    print()
    print("| method | IM1 | IM2 | CLD | validity |")
    print("|---|---|---|---|---|")
    names = {"diffscm": f"Diff-SCM (s = {s_tab:g})", "no-abduction": f"no abduction (s = {s_tab:g})",
             "pixel-gradient": "pixel-space gradient (Wachter-style)"}
    for m in ("diffscm", "no-abduction", "pixel-gradient"):
        t = table[m]
        print(f"| {names[m]} | {cell(t['im1'])} | {t['im2']['mean']:.4f} ± {t['im2']['std']:.4f} "
              f"| {cell(t['cld'])} | {t['validity']['mean']:.2f} |")
    print()
    print("Scale sweep (Figure 4): " + ", ".join(
        f"s={s:g}: CLD {sweep[s]['cld']['mean']:.3f}" for s in scales) + f"; minimum at s={best:g}")
    print(f"total time {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
