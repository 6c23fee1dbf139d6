"""The image pieces of the experiment pipeline: image-SCM sources, the RI representation critic
(WhatIfGAN-rep), NCM-style pixel critics, pretrained plug-ins, image-query evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from whatifgan.nn.conv import ConvAutoencoder, ConvCritic, RepresentationCritic
from whatifgan.training import TrainConfig, _critic
from whatifgan.representation import uses_representation


TINY_MODEL = {"noise_dim": 8, "conf_dim": 8, "hidden": [16, 16],
              "image": {"base_channels": 8, "embed_dim": 8, "encoder_channels": [8, 8, 8]},
              "image_child": {"channels": [8, 8, 8], "embed_dim": 8, "hidden": [16]}}
TINY_TRAIN = {"mode": "modular", "steps": 3, "batch_size": 16, "n_critic": 1, "critic_hidden": [16, 16],
              "image_critic_channels": [8, 8, 8], "checkpoint_every": 100,
              "image_representation": {"code_dim": 4, "steps": 5, "batch_size": 16, "channels": [8, 8, 8],
                                       "base_channels": 8}}
CLASSIFIERS = {"steps": 60, "color_steps": 20, "held_out_n": 200, "batch_size": 64}


def tiny_frontdoor(tmp_path, **over):
    cfg = {"name": "tiny-frontdoor", "source": {"image_scm": "frontdoor", "n": 400, "seed": 3, "size": 28,
                                                 "cache_dir": str(tmp_path / "cache")},
           "datasets": ["obs"], "model": json.loads(json.dumps(TINY_MODEL)),
           "train": json.loads(json.dumps(TINY_TRAIN)),
           "eval": {"samples": 200, "every": 0, "queries": ["P(D, A)", "P(A | do(D))"],
                    "image_queries": ["P(I_digit | do(D))"], "image_samples": 100,
                    "agreement": {"treatment": "D", "attribute": "I_digit"}, "fid": 60,
                    "grid": {"do": [{"D": 0}, {"D": 1}], "n": 3}, "classifiers": CLASSIFIERS},
           "seed": 0}
    for k, v in over.items():
        cfg[k] = v
    return cfg


def _rep_encoder(shape=(3, 28, 28), code=4):
    torch.manual_seed(0)
    return ConvAutoencoder(shape, code, channels=(8, 8, 8), base_channels=8).representation()


def test_representation_critic_sees_codes_and_labels_in_key_order():
    enc = _rep_encoder()
    crit = RepresentationCritic({"I": enc}, {"I": (3, 28, 28)}, cond_dims={"D": 2, "A": 2}, keys=["D", "I", "A"],
                                hidden=(16,))
    assert crit.feature_dim == 2 + 4 + 2 and crit.in_dim == 2 + 3 * 28 * 28 + 2
    b = 6
    d = torch.nn.functional.one_hot(torch.arange(b) % 2, 2).float()
    a = torch.nn.functional.one_hot((torch.arange(b) // 2) % 2, 2).float()
    img = torch.rand(b, 3, 28, 28) * 2 - 1
    img.requires_grad_(True)
    flat = torch.cat([d, img.reshape(b, -1), a], dim=1)
    f = crit.features(flat)
    assert f.shape == (b, 8)
    assert torch.equal(f[:, :2], d) and torch.equal(f[:, 6:], a)
    assert torch.allclose(f[:, 2:6], enc(img.detach()), atol=1e-6)  # the code RI = E(I)
    out = crit(flat)
    out.sum().backward()
    assert out.shape == (b, 1)
    assert img.grad is not None and img.grad.abs().sum() > 0  # generators upstream of I get gradients
    assert all(p.grad is None and not p.requires_grad for p in crit.encoders.parameters())  # frozen E
    # packed input (PacGAN): pairs of samples -> one score each
    crit2 = RepresentationCritic({"I": enc}, {"I": (3, 28, 28)}, cond_dims={"D": 2, "A": 2}, keys=["D", "I", "A"],
                                 pac=2, hidden=(16,))
    assert crit2(flat.detach()).shape == (b // 2, 1)
    with pytest.raises(ValueError, match="no representation encoder"):
        RepresentationCritic({}, {"I": (3, 28, 28)}, cond_dims={"D": 2})


def test_critic_choice_rep_for_mixed_joints_pixels_otherwise():
    from whatifgan.dcm import DCM
    from whatifgan.variables import Categorical, Image, VariableSet

    vs = VariableSet([Categorical("D", 2), Image("I", (3, 28, 28), value_range=(-1, 1)), Categorical("A", 2)])
    dcm = DCM("D -> I; I -> A; D <-> A", vs, noise_dim=4, conf_dim=4, generator_kwargs={"hidden": (8,)},
              image_kwargs={"base_channels": 8, "embed_dim": 4, "encoder_channels": (8, 8, 8)},
              image_child_kwargs={"channels": (8, 8, 8), "embed_dim": 4, "hidden": (8,)})
    rep = TrainConfig.from_dict({"image_representation": {"code_dim": 4}, "critic_hidden": [8],
                                 "image_critic_channels": [8, 8, 8]})
    raw = TrainConfig.from_dict({"critic_hidden": [8], "image_critic_channels": [8, 8, 8]})
    reps = {"I": _rep_encoder()}
    # [D, A] step / joint: D, A and I compared together -> RI critic (modular and WhatIfGAN-rep)
    assert uses_representation(dcm, ["D", "I", "A"], rep)
    assert isinstance(_critic(dcm, ["D", "I", "A"], rep, compared=["D", "I", "A"], representations=reps),
                      RepresentationCritic)
    # [I] step: the image compared alone, D from the data -> pixel critic with label planes
    assert not uses_representation(dcm, ["I"], rep)
    assert isinstance(_critic(dcm, ["I", "D"], rep, compared=["I"], representations=reps), ConvCritic)
    # NCM-style: no representation -> one pixel critic over everything
    assert isinstance(_critic(dcm, ["D", "I", "A"], raw, compared=["D", "I", "A"]), ConvCritic)
    with pytest.raises(ValueError, match="unknown image_representation option"):
        TrainConfig.from_dict({"image_representation": {"code": 4}})


def test_image_source_config_end_to_end(tmp_path):
    from whatifgan.pipelines.dcm_experiment import load_run, run

    cfg = tiny_frontdoor(tmp_path)
    rep = run(cfg, tmp_path / "run", progress=False, quiet=True)
    assert [s["hnode"] for s in rep["steps"]] == [["I"], ["D", "A"]]
    for q in ("P(D, A)", "P(A | do(D))"):
        assert 0.0 <= rep["tvd"][q] <= 1.0
    assert 0.0 <= rep["image_tvd"]["P(I_digit | do(D))"] <= 1.0
    assert 0.0 <= rep["digit_agreement"] <= 1.0 and rep["fid"]["I"] >= 0.0
    for f in ("model.pt", "representation_I.pt", "samples.png", "report.json"):
        assert (tmp_path / "run" / f).exists(), f
    dcm, cfg2, sampler = load_run(tmp_path / "run")
    s = dcm.sample(4, do={"D": 1})
    assert s["I"].shape == (4, 3, 28, 28) and (s["D"] == 1).all()
    # the joint methods run through the same pipeline
    rep_j = run({**cfg, "train": {**cfg["train"], "mode": "joint", "image_representation": None}},
                tmp_path / "ncm", progress=False, quiet=True)
    assert [s["hnode"] for s in rep_j["steps"]] == [["D", "I", "A"]]
    assert not (tmp_path / "ncm" / "representation_I.pt").exists()


def test_pretrained_image_plugin_stays_frozen_bitwise(tmp_path):
    from whatifgan.pipelines.dcm_experiment import load_run, pretrain, run

    cfg = tiny_frontdoor(tmp_path)
    cfg["eval"] = {"samples": 100, "classifiers": CLASSIFIERS, "fid": 0}
    info = pretrain(cfg, "I", tmp_path / "plug" / "I.pt", progress=False)
    assert info["steps"] == 3
    saved = torch.load(tmp_path / "plug" / "I.pt", weights_only=True)["state_dict"]
    cfg2 = {**cfg, "model": {**cfg["model"], "modules": {"I": f"pretrained:{tmp_path / 'plug' / 'I.pt'}"}}}
    rep = run(cfg2, tmp_path / "run", progress=False, quiet=True)
    assert rep["steps"][0]["skipped"] == "pretrained" and rep["steps"][1]["steps"] == 3
    dcm, _, _ = load_run(tmp_path / "run")
    assert "I" in dcm.plugins
    state = dcm.mechanisms["I"].module.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], saved[k]) for k in saved)  # bitwise: training never touched it
    with pytest.raises(ValueError, match="pretrained:<path>"):
        run({**cfg, "model": {**cfg["model"], "modules": {"I": str(tmp_path / "plug" / "I.pt")}}},
            tmp_path / "bad", progress=False, quiet=True)
    with pytest.raises(ValueError, match="shares its h-node"):
        pretrain(cfg, "A", tmp_path / "plug" / "A.pt", progress=False)
    # the same from the command line
    import yaml

    from whatifgan.cli import main

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["pretrain", str(tmp_path / "tiny.yaml"), "--variable", "I", "--out", str(tmp_path / "cli" / "I.pt"),
                 "--steps", "1", "--no-progress"]) == 0
    meta = json.loads((tmp_path / "cli" / "I.pt.json").read_text())
    assert meta["arch"] == "conv" and meta["steps"] == 1 and meta["variable"] == "I"


def test_image_queries_of_an_oracle_image_mechanism_match_the_twin(tmp_path):
    """An image mechanism that shows real data images of the right digit and a uniform colour (the
    true mechanism of the front-door data) gives image-query TVDs at the sampling floor and a
    digit agreement of ~1; a mechanism ignoring D gives agreement ~0.5."""
    from whatifgan.dcm import DCM
    from whatifgan.pipelines.dcm_experiment import image_source
    from whatifgan.pipelines.image_eval import (attribute_classifiers, digit_agreement, image_query, query_tvd,
                                                sampling_floor)
    from whatifgan.pipelines.dcm_experiment import truth
    from whatifgan.sampling import Sampler
    from hgraph.identify import parse_query

    cfg = tiny_frontdoor(tmp_path)
    data = image_source(cfg)
    clf = attribute_classifiers(data, CLASSIFIERS)
    obs = data.dataset.columns
    imgs = torch.as_tensor(np.asarray(obs["I"]))
    digit = torch.as_tensor(np.asarray(obs["I_digit"]))

    def oracle(parents, noise, ignore_d=False):
        d = parents["D"].argmax(1)
        if ignore_d:
            d = torch.zeros_like(d)
        out = torch.empty(len(d), 3, 28, 28)
        for k in (0, 1):
            pool = torch.nonzero(digit == k).flatten()
            idx = pool[(noise[:, 0].abs() * 1e4).long() % len(pool)]
            out[d == k] = imgs[idx[d == k]].float() / 127.5 - 1.0
        return out

    q = parse_query("P(I_digit | do(D))")
    for fn, agree in ((oracle, 1.0), (lambda p, z: oracle(p, z, ignore_d=True), 0.5)):
        dcm = DCM(data.graph, data.variables, noise_dim=4, conf_dim=4, generator_kwargs={"hidden": (8,)},
                  image_child_kwargs={"channels": (8, 8, 8), "embed_dim": 4, "hidden": (8,)}, plugins={"I": fn})
        sampler = Sampler(dcm, seed=0)
        entries = image_query(sampler, q, data, clf, n=400)
        tv = query_tvd(entries, truth(data.scm, q), q)
        floor = sampling_floor(entries, truth(data.scm, q), 400)
        ag = digit_agreement(sampler, data, clf, "D", "I_digit", n=200)
        assert abs(ag - agree) < 0.06, (agree, ag)
        if agree == 1.0:
            assert tv < floor + 0.05
        else:
            assert tv > 0.4  # under do(D=1) the images still show 0s
