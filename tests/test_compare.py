"""`whatifgan compare`: back ends swapped per variable, scored against the exact twin."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from whatifgan.compare import CONFIG_DIR, _backend, load_compare_config, run_compare
from whatifgan.data.image_scms import frontdoor_scm, napkin_scm


def _frontdoor_config(cache) -> dict:
    return {
        "name": "frontdoor-tiny", "seed": 0, "cache_dir": str(cache),
        "dataset": {"kind": "frontdoor", "n": 3000, "size": 28, "pool_per_class": 8, "p_image": 0.3},
        "query": "P(A | do(D))",
        "interventions": [{"label": "D=0", "value": 0}, {"label": "D=1", "value": 1}],
        "evaluate": {"samples": 3000, "reference": 16, "images": None},
        "backends": {"clf": {"type": "classifier", "steps": 250, "batch_size": 128}},
        "methods": [
            {"name": "idgen-empirical", "type": "idgen", "backends": {"I": "empirical", "A": "clf", "D": "clf"}},
            {"name": "cond", "type": "cond", "backends": {"A": "clf"}},
        ],
    }


def test_compare_cli_frontdoor_recovers_the_exact_effect_and_cond_does_not(tmp_path):
    """ID-GEN with the mediator image resampled from the data (a correct model of P(i | d)) and a
    classifier P(a | i, d') recovers the exact P(A | do(D)); the conditional P(a | d) does not."""
    from whatifgan.cli import main

    cfg = tmp_path / "fd.yaml"
    cfg.write_text(yaml.safe_dump(_frontdoor_config(tmp_path / "cache")))
    out = tmp_path / "res.json"
    assert main(["compare", str(cfg), "--figure", "none", "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    scm = frontdoor_scm(p_image=0.3)  # the image's digit is D with probability 0.85: positivity holds
    for d in (0, 1):
        exact = scm.prob(["A"], do={"D": d}).values.reshape(-1)
        assert res["truth"][f"D={d}"] == pytest.approx(list(exact), abs=1e-12)
    # the two paths are strong: the conditional differs from the interventional answer by 0.18
    cond = scm.prob(["A"], given=["D"]).transpose(["A", "D"]).values
    gap = np.mean([0.5 * np.abs(cond[:, d] - scm.prob(["A"], do={"D": d}).values).sum() for d in (0, 1)])
    assert gap > 0.12
    m = res["methods"]
    assert m["idgen-empirical"]["metrics"]["tvd"] < 0.06
    assert m["cond"]["metrics"]["tvd"] > gap - 0.05
    assert m["cond"]["metrics"]["tvd"] > m["idgen-empirical"]["metrics"]["tvd"] + 0.06
    for r in m.values():
        assert r["metrics"]["train_seconds"] > 0 and r["metrics"]["samples_per_second"] > 0
        assert set(r["per_intervention"]) == {"D=0", "D=1"}


def test_table_lists_truth_and_every_method(tmp_path):
    cfg = _frontdoor_config(tmp_path / "cache")
    cfg["methods"] = cfg["methods"][1:]
    cfg["evaluate"]["samples"] = 200
    res = run_compare(cfg)
    rows = res.table().splitlines()
    assert rows[0].startswith("| method | P(A) D=0 | P(A) D=1 | tvd |")
    assert rows[2].startswith("| truth | 0.73 0.27 | 0.42 0.58 | 0 |")
    assert rows[3].startswith("| cond |") and len(rows) == 4


def test_config_errors_name_the_problem(tmp_path):
    cfg = _frontdoor_config(tmp_path)
    with pytest.raises(ValueError, match="type must be one of"):
        load_compare_config({**cfg, "methods": [{"name": "x", "type": "vae"}]})
    with pytest.raises(ValueError, match="unique name"):
        load_compare_config({**cfg, "methods": [cfg["methods"][1], cfg["methods"][1]]})
    with pytest.raises(ValueError, match="lacks 'query'"):
        load_compare_config({k: v for k, v in cfg.items() if k != "query"})
    with pytest.raises(FileNotFoundError, match="no compare config"):
        load_compare_config("no_such_config")
    shipped = sorted(p.stem for p in CONFIG_DIR.glob("compare_*.yaml"))
    assert {"compare_napkin_mnist_fast", "compare_frontdoor_mnist_fast"} <= set(shipped)
    for name in shipped:  # every shipped compare config loads and its back ends build
        cfg = load_compare_config(name)
        for m in cfg["methods"]:
            for spec in (m.get("backends") or {}).values():
                assert _backend(spec, cfg.get("backends") or {}).name in ("diffusion", "wgan", "classifier",
                                                                          "empirical", "pretrained")


@pytest.mark.slow
def test_napkin_tiny_runs_every_method_type(tmp_path):
    """The Napkin-MNIST pipeline end to end at toy sizes: image interventions, diffusion, Cond and
    the WhatIfGAN DCM; the truth rows are the exact twin's (uniform colour, digit kept w.p. 0.91)."""
    cfg = load_compare_config("compare_napkin_mnist_fast")
    cfg["cache_dir"] = str(tmp_path / "cache")
    cfg["dataset"].update(n=300, pool_per_class=8)
    cfg["evaluate"].update(samples=6, reference=20)
    cfg["classifiers"] = {"steps": {"digit": 5, "color": 5}, "held_out": 50}
    cfg["backends"]["diffusion"].update(steps=2, sample_steps=2)
    cfg["methods"][0]["options"]["n_update"] = 30
    cfg["methods"][2]["train"].update(steps=1)
    res = run_compare(cfg, figure=tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    scm = napkin_scm()
    for label, do in (("red 3", {"X_digit": 3, "X_color": 0, "X_thick": 1}),
                      ("red 5", {"X_digit": 5, "X_color": 0, "X_thick": 1})):
        assert res.truth[label] == pytest.approx([1 / 6] * 6, abs=1e-12)
        assert res.truth_agreement[label] == pytest.approx(0.9 + 0.1 / 10)
        assert res.truth[label] == pytest.approx(list(scm.prob(["Y_color"], do=do).values), abs=1e-12)
        assert res.do_images[label].shape == (3, 28, 28)
        assert res.do_images[label][1:].max() == pytest.approx(-1.0)  # a red x: no green, no blue
    assert list(res.runs) == ["idgen", "cond", "whatifgan"]
    for r in res.runs.values():
        assert 0.0 <= r.metrics["tvd"] <= 1.0 and 0.0 <= r.metrics["agreement"] <= 1.0
        assert r.samples["red 3"].shape[1:] == (3, 28, 28)
