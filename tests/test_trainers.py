"""Tests of the generic training loops in ``trainers`` (fast: CPU, small models)."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainers import (
    CheckpointError,
    ClassifierTrainer,
    EarlyStopping,
    NonFiniteLossError,
    StopTraining,
    TensorBoardLogger,
    TensorDictLoader,
    WGANGPTrainer,
    fit_temperature,
    get_rng_state,
    load_checkpoint,
    pack,
    resolve_device,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)


def _critic(d_in: int, hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                         nn.LeakyReLU(0.2), nn.Linear(hidden, 1))


def _gaussian_setup(seed: int = 0, *, bn_generator: bool = False, n: int = 2048, batch: int = 64,
                    **cfg):
    """A 2-D Gaussian target, a small generator (affine, or an MLP with BatchNorm) and a critic."""
    seed_everything(seed)
    mu, sd = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 1.5])
    data = torch.randn(n, 2) * sd + mu
    if bn_generator:
        gen = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    else:
        gen = nn.Linear(2, 2)
        with torch.no_grad():
            gen.weight.copy_(torch.eye(2))
            gen.bias.zero_()

    def sampler(real, i):
        z = torch.randn(real["x"].shape[0], 2, device=real["x"].device)
        return {"x": gen(z)}

    critic = _critic(2)
    loader = TensorDictLoader({"x": data}, batch, seed=seed)
    trainer = WGANGPTrainer(gen.parameters(), [critic], [loader], sampler, ["x"],
                            checkpoint_modules={"generator": gen}, **cfg)
    return trainer, gen, critic


def _params(*modules: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for m in modules for t in m.state_dict().values()]


def _all_equal(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------------------- WGAN-GP
def test_wgan_gp_learns_2d_gaussian():
    """Target N((1, -1), diag(0.5, 1.5)^2) from an affine generator started at N(0, I).

    Tolerance 0.2 on every mean and std: the critic sees batches of 256 whose means alone
    fluctuate by sigma/sqrt(256) <= 0.09, and an un-annealed WGAN keeps oscillating around the
    optimum on that scale (6 seeds: worst error 0.09).  0.2 is ~2x that, far below the initial
    errors (1.0 on both means, 0.5 on both stds).  Evaluated on 20k generator samples (standard
    error < 0.011) after 400 steps, lr 5e-3, n_critic 5, seed 0.
    """
    trainer, gen, _ = _gaussian_setup(0, n=8192, batch=256, lr=5e-3, max_steps=400)
    result = trainer.train()
    assert result["step"] == 400 and result["stopped_by"] == "max_steps"
    with torch.no_grad():
        x = gen(torch.randn(20000, 2))
    assert torch.allclose(x.mean(0), torch.tensor([1.0, -1.0]), atol=0.2), x.mean(0)
    assert torch.allclose(x.std(0), torch.tensor([0.5, 1.5]), atol=0.2), x.std(0)
    # the logged Wasserstein estimate is small at the end compared with the start (~1)
    assert abs(result["metrics"]["critic/0/wasserstein"]) < 0.3


class _FixedLinearCritic(nn.Module):
    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[w]]))

    def forward(self, x):
        return x @ self.w


def test_generator_loss_sums_all_datasets():
    """Algorithm 4 line 13 / Eq. 4: G_loss = sum_i -E[D_i(fake_i)] and its gradient sums too."""
    theta = nn.Parameter(torch.tensor([0.3]))

    def sampler(real, i):
        return {"x": torch.randn(real["x"].shape[0], 1) * 0 + theta + i}

    loaders = [TensorDictLoader({"x": torch.randn(64, 1)}, 16, seed=s) for s in (0, 1)]
    critics = [_FixedLinearCritic(1.0), _FixedLinearCritic(2.0)]
    tr = WGANGPTrainer([theta], critics, loaders, sampler, [["x"], ["x"]],
                       dataset_names=["obs", "do_z"], n_critic=1)
    total, terms = tr.generator_loss()
    assert set(terms) == {"obs", "do_z"}
    assert torch.allclose(terms["obs"], torch.tensor(-1.0 * 0.3))
    assert torch.allclose(terms["do_z"], torch.tensor(-2.0 * 1.3))
    assert torch.allclose(total, terms["obs"] + terms["do_z"])
    total.backward(inputs=[theta])
    assert torch.allclose(theta.grad, torch.tensor([-(1.0 + 2.0)]))  # sum of both gradients
    # one full step: both critics are trained and logged separately, the logged total is the sum
    m = tr.train_step()
    for name in ("obs", "do_z"):
        assert {f"critic/{name}/loss", f"critic/{name}/wasserstein", f"critic/{name}/gp"} <= set(m)
    assert math.isclose(m["generator/loss"], m["generator/loss/obs"] + m["generator/loss/do_z"],
                        rel_tol=1e-6, abs_tol=1e-6)


def test_only_trainable_parameters_move():
    """Frozen mechanisms used by the sampler stay bitwise unchanged, even with requires_grad."""
    seed_everything(1)
    frozen = nn.Linear(2, 2)          # a "pre-trained ancestor": requires_grad left True on purpose
    frozen_bn = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).eval()
    trainable = nn.Linear(4, 2)
    before_frozen = _params(frozen, frozen_bn)
    before_trainable = _params(trainable)

    def sampler(real, i):
        a = frozen(real["pa"])                          # parents intervened from the real batch
        b = frozen_bn(torch.randn_like(real["pa"]))
        return {"pa": real["pa"], "x": trainable(torch.cat([a, b], 1))}

    data = {"pa": torch.randn(256, 2), "x": torch.randn(256, 2)}
    tr = WGANGPTrainer(trainable.parameters(), [_critic(4)], [TensorDictLoader(data, 32)],
                       sampler, ["pa", "x"], n_critic=2, lr=1e-2)
    tr.train(max_steps=5)
    assert _all_equal(_params(frozen, frozen_bn), before_frozen)
    assert all(p.grad is None for p in frozen.parameters())    # no gradient even accumulated
    assert not _all_equal(_params(trainable), before_trainable)


def test_same_seed_gives_identical_parameters():
    runs = []
    for _ in range(2):
        tr, gen, critic = _gaussian_setup(7, bn_generator=True, max_steps=6, n_critic=2)
        tr.train()
        runs.append(_params(gen, critic))
    assert _all_equal(*runs)
    tr, gen, critic = _gaussian_setup(8, bn_generator=True, max_steps=6, n_critic=2)
    tr.train()
    assert not _all_equal(runs[0], _params(gen, critic))


def test_resume_is_bitwise_identical(tmp_path):
    n = 5
    straight, gen, critic = _gaussian_setup(3, bn_generator=True, n=256, batch=64, n_critic=2)
    straight.train(max_steps=2 * n)         # 256/64 = 4 batches/epoch: crosses epoch boundaries
    expected = _params(gen, critic)

    first, gen1, critic1 = _gaussian_setup(3, bn_generator=True, n=256, batch=64, n_critic=2)
    first.train(max_steps=n)
    ckpt = tmp_path / "run" / "wgan.pt"
    first.save_checkpoint(ckpt)
    # perturb every global RNG and build the new trainer from a different seed: resume must
    # restore all of it from the checkpoint
    random.random(), np.random.rand(), torch.rand(3)
    resumed, gen2, critic2 = _gaussian_setup(99, bn_generator=True, n=256, batch=64, n_critic=2)
    # same data as the first run (the setup re-draws it from its seed)
    resumed.loaders[0].tensors = first.loaders[0].tensors
    assert resumed.load_checkpoint(ckpt) == n
    resumed.train(max_steps=2 * n)
    assert resumed.step == 2 * n
    assert _all_equal(_params(gen2, critic2), expected)


def test_periodic_checkpoint_and_end_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    tr, _, _ = _gaussian_setup(0, n_critic=1, checkpoint_path=path, checkpoint_every=2)
    tr.train(max_steps=3)
    ck = load_checkpoint(path, kind="WGANGPTrainer")
    assert ck["step"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name != "ckpt.pt"]   # no temp files left over


def test_corrupt_checkpoint_raises_and_keeps_good_file(tmp_path):
    tr, gen, critic = _gaussian_setup(0, n_critic=1)
    tr.train(max_steps=2)
    good = tmp_path / "good.pt"
    tr.save_checkpoint(good)
    good_bytes = good.read_bytes()
    state_before = _params(gen, critic)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good_bytes[: len(good_bytes) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(1000))
    for bad in (truncated, garbage):
        with pytest.raises(CheckpointError, match=bad.name):
            tr.load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        tr.load_checkpoint(tmp_path / "missing.pt")
    assert _all_equal(_params(gen, critic), state_before)

    # a checkpoint of another architecture: clear error naming the module, nothing changed
    other, _, _ = _gaussian_setup(0, n_critic=1)
    other.critics[0][0] = nn.Linear(2, 32)
    other2 = WGANGPTrainer(other.params, [_critic(2, hidden=8)], other.loaders, other.sampler,
                           ["x"])
    with pytest.raises(CheckpointError, match=r"critic/0.*shape"):
        other2.load_checkpoint(good)

    # a crash in the middle of writing over the good file leaves it intact, no temp file left
    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    torch.save = crashing_save
    try:
        with pytest.raises(OSError, match="disk full"):
            tr.save_checkpoint(good)
    finally:
        torch.save = real_save
    assert good.read_bytes() == good_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.pt", "good.pt",
                                                          "truncated.pt"]
    assert tr.load_checkpoint(good) == 2


def test_nan_loss_raises_clear_error():
    theta = nn.Parameter(torch.zeros(1))

    def sampler(real, i):
        return {"x": real["x"] * float("nan") + theta}

    tr = WGANGPTrainer([theta], [_critic(1)], [TensorDictLoader({"x": torch.randn(64, 1)}, 16)],
                       sampler, ["x"], dataset_names=["obs"])
    with pytest.raises(NonFiniteLossError, match=r"loss 'critic/obs/loss' became nan at step 0"):
        tr.train(max_steps=3)


def test_pacgan_packing_and_validation():
    x = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(pack(x, 3), torch.tensor([[0., 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]))
    assert pack(torch.zeros(4, 3, 5, 5), 2).shape == (2, 6, 5, 5)
    with pytest.raises(ValueError, match="divisible"):
        pack(x, 4)

    class PacCritic(nn.Module):
        pac = 4

        def __init__(self):
            super().__init__()
            self.net = _critic(4 * 2)

        def forward(self, v):
            assert v.shape[1] == 8
            return self.net(v)

    tr, gen, _ = _gaussian_setup(0, n_critic=1)
    pac_tr = WGANGPTrainer(gen.parameters(), [PacCritic()], tr.loaders, tr.sampler, ["x"], pac=4)
    pac_tr.train(max_steps=2)
    with pytest.raises(ValueError, match="pac=4"):
        WGANGPTrainer(gen.parameters(), [PacCritic()], tr.loaders, tr.sampler, ["x"], pac=2)


def test_hooks_early_stopping_temperature_and_budget():
    temps, calls = [], []
    tr, gen, critic = _gaussian_setup(
        0, n_critic=1, temperature_callback=lambda s: temps.append(s) or 1.0 / (1 + s),
        early_stopping=EarlyStopping("eval/score", patience=2))

    def evaluate(trainer):
        calls.append(trainer.step)
        torch.randn(100)                    # consumes RNG: must not change training
        return {"eval/score": 1.0}          # never improves after the first evaluation

    tr.add_hook(evaluate, every=2)
    res = tr.train(max_steps=100)
    assert res["stopped_by"] == "early_stopping" and res["step"] == 6
    assert calls == [2, 4, 6] and temps == list(range(6))
    assert res["metrics"]["temperature"] == pytest.approx(1 / 6)

    # the same run without the hook: identical parameters (hooks do not consume training RNG)
    tr2, gen2, critic2 = _gaussian_setup(0, n_critic=1)
    tr2.train(max_steps=6)
    assert _all_equal(_params(gen, critic), _params(gen2, critic2))

    def stopper(trainer):
        raise StopTraining

    tr2.add_hook(stopper, every=1)
    assert tr2.train(max_steps=100)["stopped_by"] == "hook" and tr2.step == 7
    tr2.hooks.clear()
    assert tr2.train(max_steps=10_000, time_budget=0.0)["stopped_by"] == "time_budget"


def test_wgan_input_validation():
    tr, gen, critic = _gaussian_setup(0)
    with pytest.raises(ValueError, match="one loader per critic"):
        WGANGPTrainer(gen.parameters(), [critic, critic], tr.loaders, tr.sampler, ["x"])
    with pytest.raises(TypeError, match="unknown options"):
        WGANGPTrainer(gen.parameters(), [critic], tr.loaders, tr.sampler, ["x"], lrr=1)
    frozen = nn.Linear(1, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        WGANGPTrainer(frozen.parameters(), [critic], tr.loaders, tr.sampler, ["x"])
    bad = WGANGPTrainer(gen.parameters(), [critic], tr.loaders, lambda r, i: {"y": r["x"]}, ["x"])
    with pytest.raises(KeyError, match="lacks key 'x'"):
        bad.train_step()


# ---------------------------------------------------------------------------- core services
def test_seed_and_rng_state_round_trip():
    seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(2))
    seed_everything(123)
    assert (random.random(), np.random.rand()) == a[:2] and torch.equal(torch.rand(2), a[2])
    state = get_rng_state()
    b = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(state)
    assert (random.random(), np.random.rand()) == b[:2] and torch.equal(torch.rand(2), b[2])


def test_save_load_checkpoint_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "sub" / "x.pt", {"w": torch.arange(3), "name": "a"})
    ck = load_checkpoint(path)
    assert torch.equal(ck["w"], torch.arange(3)) and ck["name"] == "a"
    with pytest.raises(CheckpointError, match=r"x.pt.*written by None"):
        load_checkpoint(path, kind="WGANGPTrainer")
    torch.save({"w": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt.*not a trainers checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_tensordict_loader_resume_and_shards():
    data = {"x": torch.arange(10)}
    ld = TensorDictLoader(data, 3, seed=5)          # 3 batches per epoch (drop_last)
    it = iter(ld)
    first = [next(it)["x"] for _ in range(2)]
    state = ld.state_dict()
    rest = [b["x"] for b in it] + [b["x"] for b in ld]
    ld2 = TensorDictLoader(data, 3, seed=5)
    ld2.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(rest, [b["x"] for b in ld2] +
                                                 [b["x"] for b in ld2]))
    assert len(torch.cat(first + rest[:1]).unique()) == 9     # one epoch: no repeats
    shards = [TensorDictLoader(data, 5, seed=1, rank=r, world_size=2) for r in (0, 1)]
    got = torch.cat([next(iter(s))["x"] for s in shards])
    assert sorted(got.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="different first dimensions"):
        TensorDictLoader({"a": torch.zeros(3), "b": torch.zeros(4)}, 1)


def test_resolve_device_and_logger(tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu-ish")
    off = TensorBoardLogger(None)
    off.scalar("a", 1.0, 0)                           # no-op, but remembered
    assert off.last == {"a": 1.0} and off.writer is None
    on = TensorBoardLogger(tmp_path / "tb")
    on.scalars({"loss": torch.tensor(0.5)}, step=1)
    on.images("samples", torch.rand(4, 1, 8, 8), step=1)
    on.close()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_early_stopping_modes():
    es = EarlyStopping("acc", patience=2, mode="max", min_delta=0.01)
    assert [es.update(v) for v in (0.5, 0.6, 0.605, 0.6)] == [False, False, False, True]
    es2 = EarlyStopping("acc", patience=2)
    es2.load_state_dict(es.state_dict())
    assert es2.best == 0.6 and es2.stopped
    with pytest.raises(NonFiniteLossError, match="'acc'"):
        es.update(float("inf"))


# ---------------------------------------------------------------------------- classifier
def _blobs(n: int, centers: torch.Tensor, scale: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(len(centers), (n,), generator=g)
    x = centers[y] + scale * torch.randn(n, centers.shape[1], generator=g)
    return {"x": x, "y": y}


def test_classifier_reaches_high_accuracy_and_resumes(tmp_path):
    seed_everything(0)
    centers = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    train = TensorDictLoader(_blobs(1500, centers, 0.6, 0), 64, seed=0)
    test = TensorDictLoader(_blobs(600, centers, 0.6, 1), 200, shuffle=False)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    tr = ClassifierTrainer(model, train, input_keys="x", target_key="y", eval_loader=test,
                           eval_every=50, lr=1e-2, max_steps=200,
                           checkpoint_path=tmp_path / "clf.pt")
    res = tr.train()
    assert res["metrics"]["eval/accuracy"] > 0.97
    assert tr.evaluate(test)["accuracy"] > 0.97
    # resume works from the file written at the end of train()
    model2 = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    tr2 = ClassifierTrainer(model2, TensorDictLoader(_blobs(1500, centers, 0.6, 0), 64, seed=0),
                            input_keys="x", target_key="y")
    assert tr2.load_checkpoint(tmp_path / "clf.pt") == 200
    assert _all_equal(_params(model), _params(model2))
    with pytest.raises(CheckpointError, match="WGANGPTrainer"):
        tr2.state.validate({**load_checkpoint(tmp_path / "clf.pt"), "kind": "WGANGPTrainer"},
                           source="x.pt")


def test_temperature_scaling_lowers_nll_of_overconfident_model():
    seed_everything(0)
    centers = torch.tensor([[0.0, 1.0], [1.0, -0.5], [-1.0, -0.5]])   # overlapping classes
    train = TensorDictLoader(_blobs(3000, centers, 0.7, 0), 100, seed=0)
    held_out = TensorDictLoader(_blobs(2000, centers, 0.7, 1), 500, shuffle=False)
    test = TensorDictLoader(_blobs(2000, centers, 0.7, 2), 500, shuffle=False)
    model = nn.Linear(2, 3)
    tr = ClassifierTrainer(model, train, lr=2e-2, max_steps=300)
    tr.train()
    with torch.no_grad():             # make it over-confident: logits x 8 (same arg-max)
        model.weight.mul_(8)
        model.bias.mul_(8)
    before = tr.evaluate(test)
    t = tr.calibrate(held_out)
    after = tr.evaluate(test)
    assert t > 3.0                                     # roughly undoes the x8
    assert after["loss"] < before["loss"] - 0.5
    assert after["accuracy"] == before["accuracy"]
    probs = tr.predict_proba({"x": torch.zeros(1, 2)})
    assert probs.shape == (1, 3) and torch.allclose(probs.sum(), torch.tensor(1.0))
    z, y = tr.collect_logits(test)
    assert torch.allclose(tr.calibrated_model()(torch.zeros(1, 2)), model(torch.zeros(1, 2)) / t)
    # an already calibrated model keeps T close to 1
    assert 0.5 < fit_temperature(z / t, y) < 2.0


# ---------------------------------------------------------------------------- distributed
class _SamplerModule(nn.Module):
    """A sampler closure as a module, so DDP can average its trainable parameters' gradients."""

    def __init__(self):
        super().__init__()
        self.gen = nn.Linear(2, 2)

    def forward(self, real, i):
        return {"x": self.gen(torch.randn(real["x"].shape[0], 2))}


def _ddp_worker(ctx, steps: int):
    """Runs in each spawned process: DDP-wrapped models, this rank's shard of the data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
    data = _blobs(512, torch.tensor([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]]), 1.0, 0)
    tr = ClassifierTrainer(ctx.wrap(model), ctx.loader(data, 16, seed=0), lr=1e-2,
                           max_steps=steps, progress=False)
    tr.train()
    # WGAN-GP: critic and sampler wrapped; every rank draws different noise (seeded by rank)
    torch.manual_seed(0)
    sampler, critic = _SamplerModule(), _critic(2, hidden=16)
    gan = WGANGPTrainer(sampler.gen.parameters(), [ctx.wrap(critic)],
                        [ctx.loader({"x": torch.randn(256, 2) + 1}, 32)], ctx.wrap(sampler),
                        ["x"], n_critic=2, progress=False)
    torch.manual_seed(1000 + ctx.rank)
    gan.train(max_steps=4)
    return {"clf": [p.detach().clone() for p in model.parameters()],
            "gan": [p.detach().clone() for m in (sampler, critic) for p in m.parameters()]}


def test_distributed_data_parallel_two_cpu_processes():
    """2 processes on gloo.  Classifier: 16 samples each, gradients averaged by DDP == one
    process on the union batch of 32 (same samples: the shards interleave one permutation)."""
    from trainers.distributed import launch

    steps = 20
    results = launch(_ddp_worker, 2, steps, backend="gloo", device="cpu")
    ranks = [r["clf"] for r in results]
    assert all(torch.equal(a, b) for a, b in zip(*ranks))         # replicas stay identical
    # WGAN-GP (gradient penalty = double backward through DDP): replicas identical although
    # each rank saw different data and noise, i.e. critic and generator gradients were averaged
    gans = [r["gan"] for r in results]
    assert all(torch.equal(a, b) for a, b in zip(*gans))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
    data = _blobs(512, torch.tensor([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]]), 1.0, 0)
    ClassifierTrainer(model, TensorDictLoader(data, 32, seed=0), lr=1e-2, max_steps=steps,
                      progress=False).train()
    for p, q in zip(model.parameters(), ranks[0]):
        assert torch.allclose(p.detach(), q, atol=1e-5), (p, q)
    assert not torch.allclose(ranks[0][0], nn.Linear(2, 16).weight)  # it did train


def test_trainers_never_import_hgraph_or_whatifgan():
    """The arrows point one way (ARCHITECTURE.md): trainers knows nothing of causal graphs."""
    import ast

    import trainers

    root = Path(trainers.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in ("hgraph", "whatifgan"), f"{path.name} imports {n}"
