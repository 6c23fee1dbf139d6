"""``whatifgan diffscm``: train Diff-SCM and compute counterfactual images (Algorithm 1).

    whatifgan diffscm train CONFIG [--run-dir DIR] [--device cuda] [--resume]
    whatifgan diffscm counterfactual RUN --image i.png --do class=5 [--scale 1.0] [--out cf.png]

:func:`register` adds the ``diffscm`` group to the main parser's subparsers; :func:`run`
executes a parsed command.  ``python -m whatifgan.diffscm_cli ...`` runs the group on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["build_parser", "main", "register", "run"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``diffscm train`` and ``diffscm counterfactual`` to ``subparsers``."""
    p = subparsers.add_parser(
        "diffscm", help="Diff-SCM: diffusion counterfactuals with anti-causal classifier guidance",
        description="Diff-SCM (Sanchez & Tsaftaris 2022): train the diffusion model and the "
                    "anti-causal classifier, and compute counterfactual images by abduction "
                    "(DDIM inversion) and guided DDIM (Algorithm 1).")
    sub = p.add_subparsers(dest="diffscm_cmd", required=True)

    t = sub.add_parser("train", help="train eps_theta and the anti-causal head(s) of a config")
    t.add_argument("config", help="YAML file or a name in configs/experiments "
                                  "(e.g. diffscm_mnist_fast)")
    t.add_argument("--run-dir", help="output directory (default runs/<config name>)")
    t.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    t.add_argument("--resume", action="store_true",
                   help="continue from the run directory's trainer checkpoints")
    t.add_argument("--steps", type=int, help="override train.diffusion.steps")
    t.add_argument("--classifier-steps", type=int, help="override train.classifier.steps")
    t.add_argument("--mnist-path", help="full MNIST (IDX files or mnist.npz) instead of the "
                                        "embedded 5,000 digits")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: config threads)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=run)

    c = sub.add_parser("counterfactual", help="counterfactual image(s) of a trained run: "
                                              "abduction, then guided DDIM towards --do")
    c.add_argument("run", help="run directory written by 'whatifgan diffscm train'")
    c.add_argument("--image", action="append", required=True, metavar="PNG",
                   help="factual image (grey-scale PNG, white digit on black; repeatable)")
    c.add_argument("--do", action="append", required=True, metavar="PARENT=VALUE",
                   help="intervention, e.g. class=5 (repeatable / comma-separated)")
    c.add_argument("--scale", type=float, help="classifier scale s (default: config "
                                               "sampling.scale, else 1.0)")
    c.add_argument("--fraction", type=float,
                   help="abduction fraction of the chain (default: config, else 0.75)")
    c.add_argument("--steps", type=int, help="DDIM steps over the whole chain (default: config)")
    c.add_argument("--dynamic-normalisation", choices=["on", "off"],
                   help="clamp predicted x_0 to its 99th-percentile magnitude (default: config)")
    c.add_argument("--factual", action="append", metavar="PARENT=VALUE",
                   help="factual parent values (used by a class-conditional UNet only)")
    c.add_argument("--invert", action="store_true", help="invert the input (black digit on white)")
    c.add_argument("--out", help="output PNG (one image) or directory (default: next to the input, "
                                 "<name>_do_<parent><value>.png)")
    c.add_argument("--device", help="auto, cpu, cuda, ...")
    c.set_defaults(func=run)
    return p


def _parse_assignments(items, what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items or []:
        for part in str(it).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ValueError(f"{what} expects PARENT=VALUE (e.g. class=5), got {part!r}")
            k, v = part.split("=", 1)
            try:
                out[k.strip()] = int(v)
            except ValueError:
                raise ValueError(f"{what} {part!r}: the value must be an integer class code") \
                    from None
    return out


def _read_png(path: str, size: int, channels: int, invert: bool):
    import numpy as np
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image {str(p)!r} not found")
    img = Image.open(p).convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        print(f"note: resizing {p.name} from {img.size[0]}x{img.size[1]} to {size}x{size}",
              file=sys.stderr)
        img = img.resize((size, size), Image.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    if invert:
        a = 255 - a
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def _write_png(x, path: Path) -> None:
    from PIL import Image

    from .diffscm import from_model_range

    a = from_model_range(x[None])[0].numpy()
    img = Image.fromarray(a[0]) if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _cmd_train(args) -> int:
    import copy

    import torch

    from .diffscm import load_config, train_from_config

    cfg = copy.deepcopy(load_config(args.config))
    if args.steps is not None:
        cfg.setdefault("train", {}).setdefault("diffusion", {})["steps"] = int(args.steps)
    if args.classifier_steps is not None:
        cfg.setdefault("train", {}).setdefault("classifier", {})["steps"] = \
            int(args.classifier_steps)
    if args.mnist_path:
        cfg.setdefault("data", {})["mnist_path"] = args.mnist_path
    torch.set_num_threads(int(args.threads or cfg.get("threads", 1)))
    run_dir = args.run_dir or str(Path("runs") / cfg["name"])
    train_from_config(cfg, run_dir, device=args.device, resume=args.resume,
                      progress=False if args.no_progress else None)
    print(f"run directory: {run_dir}  (model.pt, config.yaml; TensorBoard: tensorboard --logdir "
          f"{run_dir}/tb)")
    return 0


def _cmd_counterfactual(args) -> int:
    import copy

    import numpy as np

    from .diffscm import load_run, pipeline_from_config, to_model_range

    model, cfg = load_run(args.run, device=args.device)
    cfg = copy.deepcopy(cfg)
    s = cfg.setdefault("sampling", {})
    if args.fraction is not None:
        s["abduction_fraction"] = args.fraction
    if args.steps is not None:
        s["num_steps"] = args.steps
    if args.dynamic_normalisation is not None:
        s["dynamic_normalisation"] = args.dynamic_normalisation == "on"
    scale = float(args.scale if args.scale is not None else s.get("scale", 1.0))
    do = _parse_assignments(args.do, "--do")
    factual = _parse_assignments(args.factual, "--factual") or None
    model.check_intervention(do)
    for name, v in do.items():
        k = model.parents[name]
        if not 0 <= v < k:
            raise ValueError(f"--do {name}={v}: {name!r} has classes 0..{k - 1}")
    pipe = pipeline_from_config(model, cfg)
    size = int(model.config.get("image_size", 28))
    ch = int(model.config.get("channels", 1))
    x = to_model_range(np.stack([_read_png(p, size, ch, args.invert) for p in args.image]))
    cf = pipe.counterfactual(x, do, scale=scale, factual=factual).cpu()
    tag = "_".join(f"{k}{v}" for k, v in do.items())
    first = next(iter(do))
    p_f = model.predict_parent(first, x.to(model.device)).cpu()
    p_cf = model.predict_parent(first, cf.to(model.device)).cpu()
    for i, src in enumerate(args.image):
        if args.out and len(args.image) == 1 and args.out.lower().endswith(".png"):
            dst = Path(args.out)
        elif args.out:
            dst = Path(args.out) / f"{Path(src).stem}_do_{tag}.png"
        else:
            dst = Path(src).with_name(f"{Path(src).stem}_do_{tag}.png")
        _write_png(cf[i], dst)
        print(f"{src}: p({first}) factual argmax {int(p_f[i].argmax())} "
              f"({float(p_f[i].max()):.2f}) -> counterfactual argmax {int(p_cf[i].argmax())} "
              f"({float(p_cf[i].max()):.2f}); wrote {dst}")
    print(f"(Algorithm 1: abduction over {pipe.abduction_fraction:g} of {pipe.scheduler.num_steps} "
          f"DDIM steps, guided generation with s = {scale:g})")
    return 0


def run(args) -> int:
    """Execute a parsed ``diffscm`` command; returns the exit status."""
    cmd = getattr(args, "diffscm_cmd", None)
    if cmd == "train":
        return _cmd_train(args)
    if cmd == "counterfactual":
        return _cmd_counterfactual(args)
    raise SystemExit(f"unknown diffscm command {cmd!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="whatifgan")
    register(p.add_subparsers(dest="cmd", required=True))
    return p


def main(argv=None) -> int:
    """Standalone entry point (``python -m whatifgan.diffscm_cli diffscm ...``)."""
    args = build_parser().parse_args(argv)
    try:
        return int(run(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
