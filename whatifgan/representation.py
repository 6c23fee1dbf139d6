"""Image representations ``RI = E(I)`` for critics over joints of images and labels.

WhatIfGAN (Section 5.1, Appendix F.2) matches ``P(D, A, RI)`` instead of ``P(D, A, I)`` when an
h-node's joint mixes an image with low-dimensional variables: the losses of the two kinds are hard
to balance in one critic, so the image enters through the low-dimensional code of a trained
encoder. Here the encoder is the encoder half of a :class:`~whatifgan.nn.conv.ConvAutoencoder`
fitted on the data's images of that variable; the critic is
:class:`~whatifgan.nn.conv.RepresentationCritic` (``"critic_rep"``). An image compared alone (e.g.
``P(I | D)`` with ``D`` from the data) keeps the pixel critic.

:class:`~whatifgan.training.TrainConfig` ``image_representation: {code_dim, steps, ...}`` switches
it on; ``None`` compares raw pixels with label planes (the NCM-style critic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["REP_DEFAULTS", "check_options", "representations", "uses_representation"]

#: autoencoder settings of ``TrainConfig.image_representation``
REP_DEFAULTS = {"code_dim": 10, "steps": 1500, "batch_size": 64, "lr": 1e-3, "max_images": 10000,
                "channels": (32, 64, 128), "base_channels": 32}


def check_options(rep) -> dict | None:
    """Validate ``image_representation`` (a mapping of :data:`REP_DEFAULTS` keys, or None)."""
    if rep is None:
        return None
    if not isinstance(rep, Mapping):
        raise ValueError(f"image_representation must be a mapping of autoencoder settings or null, got {rep!r}")
    bad = sorted(set(rep) - set(REP_DEFAULTS))
    if bad:
        raise ValueError(f"unknown image_representation option(s) {bad}; valid: {sorted(REP_DEFAULTS)}")
    return dict(rep)


def uses_representation(dcm, compared: Sequence[str], cfg) -> bool:
    """True when a critic over ``compared`` sees image codes: a representation is configured and
    the compared variables mix images with low-dimensional ones."""
    if getattr(cfg, "image_representation", None) is None:
        return False
    kinds = [dcm.variables[k].kind == "image" for k in compared]
    return any(kinds) and not all(kinds)


def representations(dcm, datasets, plan, cfg, *, run_dir=None, resume: bool = False,
                    device=None) -> dict[str, torch.nn.Module]:
    """The frozen encoders of the image variables that some critic of ``plan`` compares through a
    representation: one :class:`~whatifgan.nn.conv.ConvAutoencoder` per image variable, trained
    (seeded by ``cfg.seed``) on that variable's images of all datasets, saved as
    ``representation_<var>.pt`` in the run directory and reloaded from there when resuming."""
    from trainers.core import load_checkpoint, save_checkpoint, seed_everything

    from .data.tabular import DataError
    from .nn.registry import build

    if cfg.image_representation is None:
        return {}
    need: list[str] = []
    for step in plan.steps:
        for u in step.uses:
            if uses_representation(dcm, u.compared, cfg):
                need += [k for k in u.compared if dcm.variables[k].kind == "image" and k not in need]
    if not need:
        return {}
    opts = {**REP_DEFAULTS, **cfg.image_representation}
    out = {}
    for v in need:
        spec = dcm.variables[v]
        ae = build("conv_autoencoder", shape=tuple(spec.shape), code_dim=int(opts["code_dim"]),
                   channels=tuple(opts["channels"]), base_channels=int(opts["base_channels"]),
                   value_range=tuple(spec.value_range))
        path = Path(run_dir) / f"representation_{v}.pt" if run_dir is not None else None
        cached = _cache_file(datasets, v, opts, cfg.seed)
        if resume and path is not None and path.exists():
            ae.load_state_dict(load_checkpoint(path)["state_dict"])
        elif cached is not None and cached.exists():
            ae.load_state_dict(load_checkpoint(cached)["state_dict"])
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_checkpoint(path, load_checkpoint(cached))
        else:
            imgs = [np.asarray(d.columns[v]) for d in datasets if v in d.columns]
            if not imgs:
                raise DataError(f"no dataset has images of {v!r} to train its representation on")
            x = np.concatenate(imgs)
            if len(x) > int(opts["max_images"]):
                x = x[np.sort(np.random.default_rng(cfg.seed).choice(len(x), int(opts["max_images"]), replace=False))]
            seed_everything(cfg.seed + 4242)
            xt = spec.encode(x).to(torch.get_default_dtype()).reshape(len(x), *spec.shape)
            ae.fit(xt, steps=int(opts["steps"]), batch_size=int(opts["batch_size"]), lr=float(opts["lr"]),
                   seed=cfg.seed, device=device, progress=None if cfg.progress else False)
            state = {"state_dict": ae.state_dict(), "variable": v, "options": {
                k: (list(o) if isinstance(o, tuple) else o) for k, o in opts.items()}}
            for f in (path, cached):
                if f is not None:
                    f.parent.mkdir(parents=True, exist_ok=True)
                    save_checkpoint(f, state)
        out[v] = ae.representation().to(device if device is not None else "cpu")
    return out


def _cache_file(datasets, variable: str, opts: Mapping, seed: int) -> Path | None:
    """Where the autoencoder of ``variable`` is cached when every dataset comes from a cached
    image-SCM generator (its ``meta`` holds the generating config's hash): the representation is
    then a function of (data hashes, options, seed) and is shared by runs on the same data,
    e.g. the methods of one benchmark. None otherwise (trained per run)."""
    import hashlib
    import json

    hashes = []
    for d in datasets:
        if variable not in d.columns:
            continue
        h = (d.meta or {}).get("config_hash") if hasattr(d, "meta") else None
        if not h:
            return None
        hashes.append([d.name, h, len(d)])
    if not hashes:
        return None
    from .data.image_scms import default_cache_dir

    key = json.dumps({"data": hashes, "variable": variable, "seed": int(seed), "format": 1,
                      "options": {k: (list(o) if isinstance(o, tuple) else o) for k, o in opts.items()}},
                     sort_keys=True)
    return default_cache_dir() / "representations" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"
