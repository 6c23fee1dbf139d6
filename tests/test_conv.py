"""Convolutional networks for image variables (whatifgan.nn.conv): shapes, protocol, critic, autoencoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainers import TensorDictLoader, WGANGPTrainer, gradient_penalty
from whatifgan.dcm import DCM
from whatifgan.nn import (
    ConvAutoencoder,
    ConvClassifierGenerator,
    ConvCritic,
    ConvGenerator,
    GeneratorOutput,
    PretrainedModule,
    build,
    registered,
)
from whatifgan.variables import Categorical, Image, VariableSet


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def onehot(codes, k):
    return nn.functional.one_hot(torch.as_tensor(codes), k).float()


def test_registered():
    assert {"conv", "critic_conv", "conv_classifier", "conv_autoencoder"} <= set(registered())


@pytest.mark.parametrize("shape", [(3, 28, 28), (1, 28, 28), (3, 32, 32), (1, 32, 32)])
def test_generator_shapes_and_range(shape):
    g = ConvGenerator(shape=shape, noise_dim=8, conf_dim=4, parent_dims={"D": 2}, base_channels=16)
    out = g({"D": onehot([0, 1, 1, 0], 2)}, torch.randn(4, 8), torch.randn(4, 4))
    assert isinstance(out, GeneratorOutput) and out.gumbel_noise is None
    assert out.value.shape == (4, *shape)
    assert out.value.min() >= -1 and out.value.max() <= 1
    # what the DCM does for a default network: only out_dim and output="image"
    b = build("conv", out_dim=int(np.prod(shape)), output="image", noise_dim=8, conf_dim=0,
              parent_dims={}, base_channels=16)
    assert b.shape == shape and b({}, torch.randn(3, 8)).value.shape == (3, *shape)
    # a value range other than (-1, 1)
    h = ConvGenerator(shape=shape, noise_dim=8, value_range=(0.0, 1.0), base_channels=8)
    v = h({}, torch.randn(2, 8)).value
    assert v.min() >= 0 and v.max() <= 1


@pytest.mark.parametrize("shape", [(3, 28, 28), (1, 32, 32)])
def test_cond_layers_feed_the_parents_to_every_layer(shape):
    """With ``cond_layers`` the parents reach the image even when the first linear map ignores
    them; without it they reach it only through that map."""
    d = {"D": onehot([0, 1, 0, 1], 2)}
    noise = torch.randn(1, 8).expand(4, 8)  # same noise: rows differ only through D
    for cond_layers in (False, True):
        g = ConvGenerator(shape=shape, noise_dim=8, parent_dims={"D": 2}, base_channels=8,
                          cond_layers=cond_layers)
        g.eval()
        with torch.no_grad():
            g.decoder.fc.weight[:, 8:] = 0.0  # the first linear map no longer sees D
            x = g(d, noise).value
        assert x.shape == (4, *shape)
        differs = not torch.allclose(x[0], x[1])
        assert differs == cond_layers and torch.allclose(x[0], x[2]) and torch.allclose(x[1], x[3])
    # no parents: nothing to feed, an ordinary decoder
    assert ConvGenerator(shape=shape, noise_dim=8, base_channels=8, cond_layers=True).decoder.cond_dim == 0
    with pytest.raises(ValueError, match="conditions every layer"):
        g.decoder(torch.randn(4, 10))


def test_generator_protocol_errors_and_image_parents():
    g = ConvGenerator(shape=(3, 28, 28), noise_dim=8, parent_dims={"D": 2, "X": (3, 28, 28)},
                      base_channels=16, embed_dim=16)
    x = torch.rand(5, 3, 28, 28) * 2 - 1
    assert g({"D": onehot([0] * 5, 2), "X": x}, torch.randn(5, 8)).value.shape == (5, 3, 28, 28)
    # image parents given as flat sizes (how the DCM passes them) are recognised
    g2 = ConvGenerator(shape=(3, 28, 28), noise_dim=8, parent_dims={"X": 3 * 28 * 28}, base_channels=8)
    assert "X" in g2.inputs.image_shapes
    with pytest.raises(KeyError, match="missing parent"):
        g({"D": onehot([0] * 5, 2)}, torch.randn(5, 8))
    with pytest.raises(ValueError, match="gumbel"):
        g({"D": onehot([0] * 5, 2), "X": x}, torch.randn(5, 8), None, torch.randn(5, 2))
    with pytest.raises(ValueError, match="noise"):
        g({"D": onehot([0] * 5, 2), "X": x}, torch.randn(5, 7))
    with pytest.raises(ValueError, match="confounder"):
        g({"D": onehot([0] * 5, 2), "X": x}, torch.randn(5, 8), torch.randn(5, 3))
    with pytest.raises(ValueError, match="image shape"):
        ConvGenerator(shape=(3, 30, 30))
    with pytest.raises(ValueError, match="infer"):
        ConvGenerator(out_dim=100)


def test_classifier_generator_protocol_and_replay():
    m = ConvClassifierGenerator(3, noise_dim=4, conf_dim=2, parent_dims={"I": (3, 32, 32), "D": 2},
                                channels=(8, 16, 16), embed_dim=8, hidden=32)
    m.eval()
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    par = {"I": x, "D": onehot([0, 1, 0, 1, 0, 1], 2)}
    noise, conf = torch.randn(6, 4), torch.randn(6, 2)
    a = m(par, noise, conf)
    assert a.value.shape == (6, 3) and a.gumbel_noise.shape == (6, 3)
    assert torch.allclose(a.value.sum(1), torch.ones(6))
    b = m(par, noise, conf, a.gumbel_noise)  # replayed Gumbel noise: the same sample (abduction)
    assert torch.equal(a.value, b.value)
    with pytest.raises(ValueError, match="image parent"):
        ConvClassifierGenerator(2, parent_dims={"D": 2})


def test_modules_drive_a_dcm_on_the_frontdoor_graph():
    """Protocol compliance end to end: the DCM calls the conv mechanisms, interventions pass images."""
    vs = VariableSet([Categorical("D", 2), Image("I", (3, 32, 32), value_range=(-1, 1)), Categorical("A", 2)])
    gen = ConvGenerator.for_variable(vs["I"], [vs["D"]], noise_dim=8, base_channels=16)
    cls = ConvClassifierGenerator.for_variable(vs["A"], [vs["I"]], noise_dim=8, conf_dim=8,
                                               channels=(8, 16, 16), embed_dim=8, hidden=16)
    dcm = DCM("D -> I; I -> A; D <-> A", vs, modules={"I": gen, "A": cls}, noise_dim=8, conf_dim=8,
              generator_kwargs={"hidden": (16,)})
    out = dcm(6)
    assert out["I"].shape == (6, 3, 32, 32) and out["A"].shape == (6, 2) and out["D"].shape == (6, 2)
    img = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    out2 = dcm(6, do={"I": img})  # do(I = image): A sees the encoded image
    assert torch.equal(out2["I"], vs["I"].encode(img))
    s = dcm.sample(8, do={"D": 1})
    assert s["I"].shape == (8, 3, 32, 32) and set(s["A"].tolist()) <= {0, 1}
    # a frozen plug-in wrapping the trained image generator still follows the protocol
    plug = PretrainedModule(gen, noise_dim=8)
    assert plug({"D": onehot([1, 0], 2)}, torch.randn(2, 8)).value.shape == (2, 3, 32, 32)


# ----------------------------------------------------------------------------- critic
@pytest.mark.parametrize("cond", ["planes", "embed"])
def test_critic_with_label_planes_and_packing(cond):
    c = ConvCritic({"I": (3, 28, 28)}, cond_dims={"D": 2, "A": 2}, cond=cond, channels=(8, 16, 16), hidden=16)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in c.modules())
    x = torch.rand(4, 3, 28, 28)
    d, a = onehot([0, 1, 0, 1], 2), onehot([1, 1, 0, 0], 2)
    out = c({"I": x, "D": d, "A": a})
    assert out.shape == (4, 1)
    flat = torch.cat([x.reshape(4, -1), d, a], dim=1)  # the trainer's flatten=True layout
    assert torch.allclose(c(flat), out, atol=1e-6)
    # the score depends on the labels (they reach the network)
    assert not torch.allclose(c({"I": x, "D": 1 - d, "A": a}), out)
    # PacGAN: packed dict and packed flat inputs agree; unpacked inputs are packed
    p = ConvCritic({"I": (3, 28, 28)}, cond_dims={"D": 2}, cond=cond, pac=2, channels=(8, 16, 16), hidden=16)
    packed = {"I": x.reshape(2, 6, 28, 28), "D": d.reshape(2, 4)}
    o1 = p(packed)
    o2 = p(torch.cat([x.reshape(4, -1), d], 1).reshape(2, -1))
    o3 = p({"I": x, "D": d})
    assert o1.shape == (2, 1) and torch.allclose(o1, o2, atol=1e-6) and torch.allclose(o1, o3, atol=1e-6)
    # the WGAN-GP penalty differentiates through images and labels
    fake = {"I": torch.rand(4, 3, 28, 28), "D": onehot([1, 1, 1, 1], 2), "A": a}
    for flatten in (True, False):
        gp = gradient_penalty(c, {"I": x, "D": d, "A": a}, fake, ["I", "D", "A"], flatten=flatten)
        assert gp.dim() == 0 and torch.isfinite(gp)


def test_critic_input_errors():
    c = ConvCritic((1, 32, 32), channels=(8, 8, 8), hidden=8)
    assert c(torch.rand(3, 1, 32, 32)).shape == (3, 1)  # a bare image
    with pytest.raises(ValueError, match="features per row"):
        c(torch.rand(3, 100))
    with pytest.raises(ValueError, match="batch norm"):
        ConvCritic((1, 28, 28), norm="batch")
    with pytest.raises(ValueError, match="same size"):
        ConvCritic({"a": (1, 28, 28), "b": (1, 32, 32)})


def test_wgan_trainer_runs_conv_generator_and_critic():
    """Two WGAN-GP steps of P(I | D) with a label-plane critic (WhatIfGAN step [I])."""
    n = 32
    d = torch.randint(0, 2, (n,))
    imgs = torch.rand(n, 1, 28, 28) * 2 - 1
    imgs[d == 1, :, 10:18, 10:18] = 1.0
    loader = TensorDictLoader({"D": onehot(d, 2), "I": imgs}, batch_size=8, seed=0)
    gen = ConvGenerator(shape=(1, 28, 28), noise_dim=8, parent_dims={"D": 2}, base_channels=8)
    critic = ConvCritic({"I": (1, 28, 28)}, cond_dims={"D": 2}, channels=(8, 8, 8), hidden=8)

    def sampler(real, i):
        return {"D": real["D"], "I": gen({"D": real["D"]}, torch.randn(real["D"].shape[0], 8)).value}

    before = [p.detach().clone() for p in gen.parameters()]
    tr = WGANGPTrainer(gen.parameters(), [critic], [loader], sampler, ["I", "D"], n_critic=1, max_steps=2,
                       flatten=False, progress=False)
    res = tr.train()
    assert res["step"] == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.parameters()))


# ----------------------------------------------------------------------------- autoencoder
def test_autoencoder_reconstructs_after_a_few_steps():
    """After 200 steps the reconstruction error is well below that of the best constant image (the
    per-pixel mean), so the 10-d code carries digit, shape and colour information."""
    from whatifgan.data import load_mnist
    from whatifgan.data.image_scms import colorize

    x, y = load_mnist("embedded", "train")
    rng = np.random.default_rng(0)
    imgs = colorize(x[:256], rng.integers(0, 3, 256))  # coloured 3x28x28 digits
    ae = ConvAutoencoder((3, 28, 28), code_dim=10, channels=(16, 32, 32), base_channels=16)
    before = ae.reconstruction_error(imgs)
    res = ae.fit(imgs, steps=200, batch_size=32, lr=2e-3, progress=False)
    after = ae.reconstruction_error(imgs)
    data = ae._prepare(imgs)
    mean_image = float(((data - data.mean(0, keepdim=True)) ** 2).mean())
    assert after < 0.75 * mean_image and after < 0.3 * before, (before, mean_image, after)
    assert ae.encode(data[:5]).shape == (5, 10) and res["steps"] == 200
    ae32 = ConvAutoencoder((1, 32, 32), code_dim=10, channels=(8, 8, 8), base_channels=8)
    assert ae32(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 32, 32)
    rep = ae.representation()
    assert all(not p.requires_grad for p in rep.parameters())
    assert all(p.requires_grad for p in ae.parameters())  # the autoencoder stays trainable
    z = rep(data[:4].clone().requires_grad_(True))
    assert z.shape == (4, 10)
    assert torch.allclose(z, ae.encode(data[:4]), atol=1e-5)
    rep.train()
    assert not rep.encoder.training  # frozen BatchNorm statistics
