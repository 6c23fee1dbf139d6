"""Data-parallel training of a DCM h-node across processes (torch.distributed, 2 gloo processes on
CPU): the gradients are really averaged, all ranks end identical, frozen ancestors stay frozen and
the trained model matches the exact truth."""

import copy

import pytest
import torch

from hgraph import ADMG, DiscreteSCM
from hgraph.identify import identify
from trainers.core import load_checkpoint
from trainers.distributed import DistributedContext, launch
from whatifgan.data.tabular import Dataset
from whatifgan.dcm import DCM
from whatifgan.metrics import tvd
from whatifgan.sampling import Sampler
from whatifgan.training import TrainConfig, _hnode_trainer, _schedule, plan_for, train
from whatifgan.variables import Categorical, VariableSet


def _setup():
    """The tiny front-door DCM of tests/test_dcm.py and data from an exact discrete SCM."""
    g = ADMG.load("frontdoor")
    scm = DiscreteSCM.random(g, cards=2, seed=3)
    ds = Dataset.from_scm(scm, 5000, seed=1)
    vs = VariableSet([Categorical(v, scm.cards[v]) for v in g.nodes])
    torch.manual_seed(0)
    dcm = DCM(g, vs, noise_dim=8, conf_dim=8, generator_kwargs={"hidden": (32, 32)})
    return g, scm, ds, dcm


# batch_size is the global batch: 64 rows per process with 2 processes
TINY = dict(batch_size=128, critic_hidden=(64, 64), progress=False, lr=1e-3, n_critic=5)
ONE_STEP = dict(steps=1, n_critic=1, batch_size=64, critic_hidden=(32, 32), lr=1e-3, ema_decay=None,
                lr_decay=0.0, progress=False)


class _Shard(DistributedContext):
    """Rank ``r`` of 2 for the data shard and the noise seed, but no process group: ``wrap`` is
    the identity, so one process can replay what each rank computes."""

    def wrap(self, module, **kwargs):
        return module.to(self.device)


def _one_step_trainer(ctx):
    g, scm, ds, dcm = _setup()
    cfg = TrainConfig(**ONE_STEP)
    step = plan_for(dcm, [ds]).steps[1]  # h-node [D, A]; I is a frozen ancestor
    assert step.hnode == ["D", "A"]
    trainer, _ = _hnode_trainer(dcm, step, {ds.name: ds}, cfg, torch.device("cpu"), ctx, None, _schedule(cfg))
    return dcm, trainer


def _grads(params):
    return [p.grad.detach().clone() for p in params]


def _worker(ctx, run_dir, probe):
    probe.add_(ctx.rank + 1)  # an argument tensor is this process's own copy
    ctx.barrier()
    probe = probe.clone()
    # (b) one DDP step of the [D, A] h-node: the gradients every rank ends with
    dcm, tr = _one_step_trainer(ctx)
    frozen = {k: v.clone() for k, v in dcm.mechanisms["I"].state_dict().items()}
    tr.train_step()
    one = {"critic_grad": _grads(tr.critics[0].parameters()), "gen_grad": _grads(tr.params),
           "critic": [p.detach().clone() for p in tr.critics[0].parameters()],
           "gen": [p.detach().clone() for p in tr.params],
           "frozen_ok": all(torch.equal(frozen[k], v) for k, v in dcm.mechanisms["I"].state_dict().items())}
    # (a, c) a whole modular training run, early stopping on the data fit included
    g, scm, ds, dcm = _setup()
    snaps = {}

    def snap(step):
        snaps[step.index] = {k: v.clone() for k, v in dcm.state_dict().items()}

    res = train(dcm, [ds], TrainConfig(steps=200, early_stop_tvd=0.02, eval_every=25, **TINY),
                run_dir=run_dir, dist=ctx, on_step_done=snap)
    return {"probe": probe, "one": one, "state": {k: v.clone() for k, v in dcm.state_dict().items()},
            "snaps": snaps, "steps": [s["steps"] for s in res.steps]}


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp_run")
    return launch(_worker, 2, str(run), torch.zeros(3), backend="gloo", device="cpu"), run


def test_launch_copies_arguments_into_each_process(ddp):
    """train(nproc=N) hands the DCM to the processes through launch: each must train its own copy
    (shared-memory tensors would let all processes update the same parameters)."""
    assert [r["probe"].tolist() for r in ddp[0]] == [[1.0] * 3, [2.0] * 3]


def test_ddp_step_averages_critic_and_generator_gradients(ddp):
    """One step (n_critic=1) with 2 processes, each on its half of the batch, against a single
    process replaying both halves with the same rows and noise (BatchNorm on the half batch, as
    in each rank): the critic gradient (gradient penalty included) and then the generator
    gradient (through the critic after its averaged update) are the means of the two halves'
    gradients, and the parameters are those of Adam steps on these means."""
    results, _ = ddp
    r0, r1 = results[0]["one"], results[1]["one"]
    for k in ("critic_grad", "gen_grad", "critic", "gen"):
        assert all(torch.equal(a, b) for a, b in zip(r0[k], r1[k])), k
    assert r0["frozen_ok"] and r1["frozen_ok"]

    refs = [_one_step_trainer(_Shard(r, 2, r, "gloo", torch.device("cpu"))) for r in (0, 1)]
    halves, rng = [], []
    for _, tr in refs:
        tr.temperature_callback(0)  # seeds this rank's noise for step 0
        saved = copy.deepcopy((tr.critics[0].state_dict(), tr.c_opts[0].state_dict()))
        tr.critic_step(0)
        halves.append(_grads(tr.critics[0].parameters()))
        tr.critics[0].load_state_dict(saved[0])
        tr.c_opts[0].load_state_dict(saved[1])
        rng.append(torch.get_rng_state())
    mean_c = [(a + b) / 2 for a, b in zip(*halves)]
    # the halves disagree, so an un-averaged (or summed) gradient could not pass
    assert max(float((a - b).abs().max()) for a, b in zip(*halves)) > 1e-2
    for g, m in zip(r0["critic_grad"], mean_c):
        torch.testing.assert_close(g, m, atol=1e-6, rtol=1e-5)
    for _, tr in refs:
        for p, m in zip(tr.critics[0].parameters(), mean_c):
            p.grad = m.clone()
        tr.c_opts[0].step()
    for p, q in zip(refs[0][1].critics[0].parameters(), r0["critic"]):
        torch.testing.assert_close(p.detach(), q, atol=1e-6, rtol=1e-5)

    gen_halves = []
    for (_, tr), state in zip(refs, rng):
        torch.set_rng_state(state)
        saved = copy.deepcopy(([p.detach().clone() for p in tr.params], tr.g_opt.state_dict()))
        tr.generator_step()
        gen_halves.append(_grads(tr.params))
        with torch.no_grad():
            for p, v in zip(tr.params, saved[0]):
                p.copy_(v)
        tr.g_opt.load_state_dict(saved[1])
    mean_g = [(a + b) / 2 for a, b in zip(*gen_halves)]
    assert max(float((a - b).abs().max()) for a, b in zip(*gen_halves)) > 1e-3
    for g, m in zip(r0["gen_grad"], mean_g):
        torch.testing.assert_close(g, m, atol=1e-6, rtol=1e-5)
    tr = refs[0][1]
    for p, m in zip(tr.params, mean_g):
        p.grad = m.clone()
    tr.g_opt.step()
    for p, q in zip(tr.params, r0["gen"]):
        torch.testing.assert_close(p.detach(), q, atol=1e-6, rtol=1e-5)


def test_ddp_training_ranks_identical_and_saved_model_matches_truth(ddp):
    results, run = ddp
    a, b = results
    assert a["steps"] == b["steps"] and all(0 < s <= 200 for s in a["steps"])  # same stop step
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:  # parameters and BatchNorm statistics
        assert torch.equal(a["state"][k], b["state"][k]), k
    g, scm, _, dcm = _setup()
    dcm.load_state_dict(load_checkpoint(run / "model.pt")["state_dict"])
    for k, v in dcm.state_dict().items():  # rank 0 wrote the final model
        assert torch.equal(v, a["state"][k]), k
    est = Sampler(dcm, available=[()]).query("P(A | do(D))", n=20000)
    true = identify(g, "P(A | do(D))").evaluate(scm)
    do_tvd = tvd(est.transpose(true.vars), true, given=["D"])
    # an untrained model is at TVD ~0.3-0.5; sampling noise alone is ~0.01
    assert do_tvd < 0.06, do_tvd
    assert sorted(p.name for p in run.glob("hnode*.pt")) == ["hnode0.pt", "hnode1.pt"]


def test_ddp_frozen_ancestor_bitwise_unchanged(ddp):
    """I is trained in h-node 0 and frozen (parameters and BatchNorm statistics) while [D, A]
    trains under DDP, in every process."""
    for r in ddp[0]:
        s0, s1 = r["snaps"][0], r["snaps"][1]
        keys = [k for k in s0 if k.startswith("mechanisms.I.")]
        assert keys
        for k in keys:
            assert torch.equal(s0[k], s1[k]), k
        assert any(not torch.equal(s0[k], s1[k]) for k in s0 if k.startswith("mechanisms.A.") and "weight" in k)


def test_data_parallel_options_are_checked():
    _, _, ds, dcm = _setup()
    with pytest.raises(ValueError, match="parallel_hnodes"):
        train(dcm, [ds], TrainConfig(nproc=2, parallel_hnodes=2, **TINY))
    with pytest.raises(ValueError, match="evaluator must be picklable"):
        train(dcm, [ds], TrainConfig(nproc=2, **TINY), evaluator=lambda m: {})
    two = _Shard(0, 2, 0, "gloo", torch.device("cpu"))
    with pytest.raises(ValueError, match="nproc=3 but 2 processes"):
        train(dcm, [ds], TrainConfig(nproc=3, **TINY), dist=two)
    cfg = TrainConfig(batch_size=1, **{k: v for k, v in TINY.items() if k != "batch_size"})
    with pytest.raises(ValueError, match="0 rows per process"):
        _hnode_trainer(dcm, plan_for(dcm, [ds]).steps[0], {ds.name: ds}, cfg, torch.device("cpu"), two, None,
                       _schedule(cfg))
