"""Tests of variable specs and the basic networks (whatifgan.variables, whatifgan.nn)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from whatifgan.nn import (
    GeneratorOutput,
    GumbelSoftmax,
    MLPCritic,
    MLPGenerator,
    PretrainedModule,
    TemperatureSchedule,
    UnknownModuleError,
    build,
    build_from_config,
    gumbel_softmax,
    register_module,
    registered,
    sample_gumbel,
)
from whatifgan.variables import Categorical, Continuous, Image, VariableSet


# ---------------------------------------------------------------------------- variables
def test_variable_dims_encode_decode():
    c, x, im = Categorical("D", 3), Continuous("Z", 2), Image("I", (1, 4, 4))
    assert (c.dim, x.dim, im.dim) == (3, 2, 16)
    oh = c.encode(np.array([0, 2, 1]))
    assert oh.dtype == torch.get_default_dtype()
    assert torch.equal(oh, torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]))
    assert torch.equal(c.decode(oh), torch.tensor([0, 2, 1]))
    assert torch.equal(c.encode(torch.tensor([[1], [0]])), torch.tensor([[0.0, 1, 0], [1, 0, 0]]))
    assert x.encode(np.zeros((5, 2), dtype=np.int64)).dtype == torch.get_default_dtype()
    assert Continuous("W").encode([1.0, 2.0]).shape == (2, 1)
    img = im.encode(np.full((2, 4, 4), 255, dtype=np.uint8))       # channel axis omitted, C=1
    assert img.shape == (2, 1, 4, 4) and torch.all(img == 1.0)
    assert torch.all(Image("J", (1, 2, 2), value_range=(-1, 1)).encode(
        np.zeros((1, 2, 2), np.uint8)) == -1.0)
    assert im.decode(torch.full((2, 16), 3.0)).max() == 1.0          # clamped to value_range


@pytest.mark.parametrize("var, data, message", [
    (Categorical("Smoke", 2), np.array([0, 1, 2]), r"'Smoke'.*values \[2\] outside 0..1"),
    (Categorical("Smoke", 2), np.array([0, -1]), r"'Smoke'.*outside 0..1"),
    (Categorical("Smoke", 2), np.array([0.0, np.nan]), r"'Smoke'.*NaN"),
    (Categorical("Smoke", 2), np.array([0.5]), r"'Smoke'.*non-integer"),
    (Categorical("Smoke", 2), np.zeros((3, 2), dtype=int), r"'Smoke'.*shape"),
    (Continuous("Z", 2), np.zeros((3, 3)), r"'Z'.*expected shape \(N, 2\)"),
    (Continuous("Z", 1), np.array([1.0, np.nan]), r"'Z'.*nan"),
    (Image("I", (1, 4, 4)), np.zeros((2, 5, 5)), r"'I'.*expected shape"),
    (Image("I", (1, 4, 4)), np.full((2, 1, 4, 4), 2.0), r"'I'.*outside value_range"),
    (Image("I", (1, 4, 4)), np.full((2, 1, 4, 4), np.nan), r"'I'.*NaN"),
])
def test_variable_validation_errors(var, data, message):
    with pytest.raises(ValueError, match=message):
        var.validate(data)
    with pytest.raises(ValueError, match=message):
        var.encode(data)


def test_variable_constructor_errors():
    with pytest.raises(ValueError, match="'X'.*k >= 2"):
        Categorical("X", 1)
    with pytest.raises(ValueError, match="'Z'.*dim >= 1"):
        Continuous("Z", 0)
    with pytest.raises(ValueError, match="'I'.*\\(C, H, W\\)"):
        Image("I", (28, 28))


def test_variable_set_from_config():
    vs = VariableSet.from_config({
        "X1": {"type": "categorical", "k": 3},
        "W": "categorical:5",
        "Z": {"type": "continuous", "dim": 2},
        "Image1": "image:3x28x28",
    })
    assert list(vs) == ["X1", "W", "Z", "Image1"]
    assert vs["Image1"].shape == (3, 28, 28) and vs["W"].k == 5
    assert vs.dim(["X1", "Z"]) == 5
    assert VariableSet.from_config(vs.to_config())["Z"] == vs["Z"]
    listed = VariableSet.from_config({"variables": [{"name": "A", "type": "categorical", "k": 2}]})
    assert listed["A"] == Categorical("A", 2)
    enc = vs.encode({"X1": [0, 2], "Z": np.ones((2, 2))})
    assert enc["X1"].shape == (2, 3) and enc["Z"].shape == (2, 2)
    with pytest.raises(KeyError, match=r"unknown variable 'Q'; known: \['X1'"):
        vs["Q"]
    with pytest.raises(ValueError, match="'A': unknown type 'gaussian'"):
        VariableSet.from_config({"A": {"type": "gaussian"}})
    with pytest.raises(ValueError, match=r"'A': unknown spec field\(s\) \['kk'\]"):
        VariableSet.from_config({"A": {"type": "categorical", "k": 2, "kk": 3}})
    with pytest.raises(ValueError, match="'A'.*needs 'k'"):
        VariableSet.from_config({"A": {"type": "categorical"}})
    with pytest.raises(ValueError, match="defined twice"):
        VariableSet([Categorical("A", 2), Continuous("A")])
    with pytest.raises(ValueError, match="'X1'"):
        vs.validate({"X1": [0, 7]})


# ---------------------------------------------------------------------------- Gumbel-softmax
def test_gumbel_soft_is_a_distribution():
    logits = torch.randn(64, 4)
    y, g = gumbel_softmax(logits, 0.5)
    assert y.shape == g.shape == (64, 4)
    assert torch.allclose(y.sum(1), torch.ones(64)) and (y > 0).all()
    assert torch.equal(y, torch.softmax((logits + g) / 0.5, dim=1))
    # the Gumbel noise has the right law: mean = Euler-Mascheroni constant, var = pi^2 / 6
    s = sample_gumbel((200_000,), generator=torch.Generator().manual_seed(0))
    assert abs(float(s.mean()) - 0.5772) < 0.01 and abs(float(s.var()) - math.pi ** 2 / 6) < 0.03


def test_straight_through_gives_exact_one_hot_with_gradients():
    torch.manual_seed(0)
    logits = torch.randn(256, 5, requires_grad=True)
    y, g = gumbel_softmax(logits, 0.7, hard=True)
    expected = torch.nn.functional.one_hot((logits + g).argmax(1), 5).to(y.dtype)
    assert torch.equal(y, expected)                         # exactly 0.0 / 1.0
    w = torch.randn(5)
    (y * w).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # the straight-through gradient is the soft sample's gradient
    logits2 = logits.detach().clone().requires_grad_(True)
    soft, _ = gumbel_softmax(logits2, 0.7, noise=g)
    (soft * w).sum().backward()
    assert torch.allclose(logits.grad, logits2.grad)
    head = GumbelSoftmax(hard=True)
    assert torch.equal(head(logits.detach(), g).value.sum(1), torch.ones(256))


def test_replayed_gumbel_noise_reproduces_outputs_exactly():
    torch.manual_seed(1)
    logits = torch.randn(32, 3)
    first = gumbel_softmax(logits, 0.3)
    replay = gumbel_softmax(logits, 0.3, noise=first.noise)
    assert torch.equal(first.value, replay.value) and replay.noise is first.noise
    other = gumbel_softmax(logits, 0.3)
    assert not torch.equal(first.value, other.value)
    with pytest.raises(ValueError, match=r"replayed Gumbel noise has shape \(32, 2\)"):
        gumbel_softmax(logits, 0.3, noise=torch.zeros(32, 2))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        gumbel_softmax(logits, 0.0)
    # through a whole mechanism (abduction -> prediction): same exogenous + Gumbel noise
    gen = MLPGenerator(3, output="categorical", noise_dim=4, parent_dims={"A": 2},
                       hidden=(16, 16)).eval()
    pa, n = {"A": torch.randn(32, 2)}, torch.randn(32, 4)
    out = gen(pa, n)
    again = gen(pa, n, gumbel_noise=out.gumbel_noise)
    assert torch.equal(out.value, again.value)


def test_temperature_schedule():
    s = TemperatureSchedule(t0=1.0, rate=0.01, t_min=0.1)
    assert s(0) == 1.0
    assert s(50) == pytest.approx(math.exp(-0.5))
    assert s(10_000) == 0.1                                   # clamped at t_min
    assert [s(t) for t in (300, 100, 200)] == [s(300), s(100), s(200)]  # pure function of t
    r = TemperatureSchedule.reaching(1000, t0=1.0, t_min=0.1)
    assert r(1000) == pytest.approx(0.1) and r(500) == pytest.approx(math.sqrt(0.1))
    gen = MLPGenerator(2, output="categorical", noise_dim=2, hidden=8)
    assert s.apply(gen, 50) == gen.gumbel.temperature == pytest.approx(math.exp(-0.5))
    cb = s.callback(gen)
    assert cb(10_000) == 0.1 and gen.gumbel.temperature == 0.1
    with pytest.raises(ValueError, match="t_min"):
        TemperatureSchedule(t0=0.1, t_min=1.0)


# ---------------------------------------------------------------------------- MLPs
def test_mlp_generator_shapes_and_structure():
    gen = MLPGenerator(4, output="categorical", noise_dim=3, conf_dim=2,
                       parent_dims={"A": 2, "B": 1})
    assert gen.in_dim == 8
    blocks = list(gen.blocks)
    assert len(blocks) == 2 and all(b.fc.out_features == 256 for b in blocks)  # default 2 x 256
    assert all(isinstance(b.bn, nn.BatchNorm1d) for b in blocks)
    assert isinstance(blocks[1].skip, nn.Identity)                              # residual
    b = 10
    out = gen({"A": torch.randn(b, 2), "B": torch.randn(b, 1)}, torch.randn(b, 3),
              torch.randn(b, 2))
    assert isinstance(out, GeneratorOutput)
    assert out.value.shape == (b, 4) and out.gumbel_noise.shape == (b, 4)
    out.value.sum().backward()
    assert gen.head.weight.grad is not None
    cont = MLPGenerator(2, noise_dim=3, hidden=(16,))
    o = cont(None, torch.randn(b, 3))
    assert o.value.shape == (b, 2) and o.gumbel_noise is None
    with pytest.raises(KeyError, match="missing parent 'B'"):
        gen({"A": torch.randn(b, 2)}, torch.randn(b, 3), torch.randn(b, 2))
    with pytest.raises(ValueError, match=r"noise must have shape \(B, 3\)"):
        gen({"A": torch.randn(b, 2), "B": torch.randn(b, 1)}, torch.randn(b, 5), torch.randn(b, 2))
    with pytest.raises(ValueError, match="confounder noise of size 2"):
        gen({"A": torch.randn(b, 2), "B": torch.randn(b, 1)}, torch.randn(b, 3))
    v = MLPGenerator.for_variable(Categorical("Y", 3), [Categorical("X", 2), Continuous("Z", 4)],
                                  noise_dim=5, hidden=8)
    assert v.in_dim == 11 and v.out_dim == 3 and v.gumbel is not None
    with pytest.raises(ValueError, match="image generator"):
        MLPGenerator.for_variable(Image("I"), [])


def test_mlp_critic_has_no_batchnorm_and_packs():
    c = MLPCritic(3, hidden=(16, 16), pac=2)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in c.modules())
    acts = [m for m in c.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.negative_slope == 0.2 for a in acts)
    x = torch.randn(8, 3)
    packed = x.reshape(4, 6)
    assert c(x).shape == (4, 1)
    assert torch.equal(c(x), c(packed))
    assert c({"a": x[:, :2], "b": x[:, 2:]}).shape == (4, 1)
    with pytest.raises(ValueError, match="expects 6"):
        c(torch.randn(8, 5))


def test_mlp_modules_train_with_wgan_trainer():
    """Integration with trainers.WGANGPTrainer: generator + frozen plug-in + packed critic."""
    from trainers import TensorDictLoader, WGANGPTrainer, seed_everything

    seed_everything(0)
    parent = PretrainedModule(MLPGenerator(2, output="categorical", noise_dim=2, hidden=8))
    child = MLPGenerator(1, noise_dim=2, parent_dims={"A": 2}, hidden=(16, 16))
    frozen_before = [t.clone() for t in parent.state_dict().values()]

    def sampler(real, i):
        b = real["Y"].shape[0]
        a = parent({}, torch.randn(b, 2)).value
        return {"A": a, "Y": child({"A": a}, torch.randn(b, 2)).value}

    data = {"A": Categorical("A", 2).encode(torch.randint(2, (256,))), "Y": torch.randn(256, 1)}
    tr = WGANGPTrainer(child.parameters(), [MLPCritic(3, hidden=16, pac=2)],
                       [TensorDictLoader(data, 32)], sampler, ["A", "Y"], pac=2, n_critic=2)
    tr.train(max_steps=3)
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, parent.state_dict().values()))


# ---------------------------------------------------------------------------- registry, plug-ins
def test_registry_build_and_errors():
    assert {"mlp", "critic_mlp", "pretrained"} <= set(registered())
    c = build("critic_mlp", in_dim=4, hidden=8)
    assert isinstance(c, MLPCritic)
    g = build_from_config({"type": "mlp", "out_dim": 2, "hidden": [8]}, noise_dim=3)
    assert isinstance(g, MLPGenerator) and g.noise_dim == 3
    with pytest.raises(UnknownModuleError, match=r"unknown module 'unet9'; known modules: "
                                                 r".*critic_mlp.*mlp"):
        build("unet9")
    with pytest.raises(TypeError, match=r"build\('critic_mlp'\)"):
        build("critic_mlp", in_dim=4, widht=3)
    with pytest.raises(ValueError, match="already registered"):
        register_module("mlp")(lambda **kw: nn.Identity())

    @register_module("test_identity_module")
    def _ident(**kw):
        return nn.Identity()

    assert isinstance(build("test_identity_module"), nn.Identity)


def test_pretrained_plugin_is_frozen_and_differentiable():
    lin = nn.Linear(3, 2)
    plug = PretrainedModule(lambda parents, noise: lin(torch.cat([parents["A"], noise], 1)),
                            noise_dim=2, name="lam")
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, parents, noise):
            return self.net(torch.cat([parents["A"], noise], 1))

    mod = PretrainedModule(Wrapped(), noise_dim=2, out_dim=2)
    assert all(not p.requires_grad for p in mod.parameters()) and mod.frozen
    mod.train()
    assert not net.training                                   # BN statistics stay frozen
    a = torch.randn(6, 1, requires_grad=True)                 # an upstream trainable output
    out = mod({"A": a}, torch.randn(6, 1), torch.randn(6, 1))  # confounders appended to noise
    assert out.value.shape == (6, 2) and out.gumbel_noise is None
    out.value.sum().backward()
    assert a.grad is not None and all(p.grad is None for p in net.parameters())
    assert plug({"A": torch.randn(4, 1)}, torch.randn(4, 2)).value.shape == (4, 2)
    with pytest.raises(ValueError, match="expected out_dim=3"):
        PretrainedModule(Wrapped(), out_dim=3)({"A": torch.randn(4, 1)}, torch.randn(4, 2))


def test_pretrained_from_file(tmp_path):
    torch.manual_seed(0)
    gen = MLPGenerator(3, output="categorical", noise_dim=4, parent_dims={"A": 2}, hidden=(8, 8))
    gen.eval()
    path = tmp_path / "gen.pt"
    torch.save(gen.state_dict(), path)
    kwargs = dict(out_dim=3, output="categorical", noise_dim=4, parent_dims={"A": 2},
                  hidden=(8, 8))
    plug = PretrainedModule.from_file(path, arch="mlp", arch_kwargs=kwargs)
    assert plug.native and plug.noise_dim == 4
    assert all(not p.requires_grad for p in plug.parameters())
    pa, n = {"A": torch.randn(5, 2)}, torch.randn(5, 4)
    ref = gen(pa, n)
    got = plug(pa, n, gumbel_noise=ref.gumbel_noise)           # counterfactual replay works
    assert torch.equal(ref.value, got.value)
    cfg_built = build("pretrained", path=str(path), arch="mlp", arch_kwargs=kwargs)
    assert torch.equal(cfg_built(pa, n, gumbel_noise=ref.gumbel_noise).value, ref.value)

    with pytest.raises(ValueError, match=r"gen.pt.*does not fit architecture 'mlp'"):
        PretrainedModule.from_file(path, arch="mlp", arch_kwargs={**kwargs, "hidden": (4,)})
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        PretrainedModule.from_file(bad, arch="mlp", arch_kwargs=kwargs)
    with pytest.raises(ValueError, match="junk.pt.*not a TorchScript file"):
        PretrainedModule.from_file(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        PretrainedModule.from_file(tmp_path / "missing.pt", arch="mlp")

    class Plain(nn.Module):
        def forward(self, parents: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
            return parents["A"] * 2 + noise

    ts = tmp_path / "plain.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Plain()), str(ts))
    plug2 = PretrainedModule.from_file(ts, noise_dim=2)
    x = torch.randn(3, 2)
    assert torch.equal(plug2({"A": x}, torch.zeros(3, 2)).value, 2 * x)
