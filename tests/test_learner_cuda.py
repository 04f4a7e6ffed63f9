"""The learner on a CUDA GPU (skipped without one): the CUDA-graph update against the eager one,
the target sync, `set_lr`, a new config or batch size inside a graphed run, the replay's pinned
buffers refilled while the GPU works, state round trips onto the GPU and from it to a CPU
learner, and batched acting. Run them on a GPU machine: ``python -m pytest -m cuda``.

fp32 comparisons run with TF32 off and deterministic cuDNN, so the graphed and eager updates
differ only by what replaying the same kernels may change (nothing, or rounding)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agent.config import LearnerConfig
from agent.learner import Learner
from agent.native import Batch, FrameReplay
from tests.test_device_frames import ring_batches, updates
from tests.test_learner import (
    ACTIONS,
    HW,
    LR,
    STACK,
    make_batch,
    persistent_tensors,
    saved_elsewhere,
)

pytestmark = pytest.mark.cuda

TIGHT = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(autouse=True)
def exact_fp32():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved


def cuda_learner(seed: int = 0, **kw) -> Learner:
    kw = {"precision": "fp32", "device": "cuda", "lr": LR, "target_update": 5, **kw}
    torch.manual_seed(seed)
    return Learner(LearnerConfig(**kw), ACTIONS, STACK, (HW, HW))


def step(learner: Learner, seeds, n: int = 16, big=None, want_td: bool = True) -> list:
    out = []
    for s in seeds:
        batch = make_batch(s, n, channels_last=learner.channels_last,
                           big=(s % 3 == 0) if big is None else big)
        r = learner.update(batch, want_td=want_td)
        out.append((r.stats.clone(), r.td_abs))
    return out


def assert_close_results(ra, rb, tol=TIGHT) -> None:
    for i, ((sa, ta), (sb, tb)) in enumerate(zip(ra, rb, strict=True)):
        torch.testing.assert_close(sa, sb, **tol, msg=lambda m, i=i: f"update {i}: {m}")
        if ta is not None or tb is not None:
            np.testing.assert_allclose(ta, tb, rtol=tol["rtol"], atol=tol["atol"])


def assert_close_learners(a: Learner, b: Learner, tol=TIGHT) -> None:
    for net_a, net_b in ((a.online, b.online), (a.target, b.target)):
        for (key, p), q in zip(net_a.state_dict().items(), net_b.state_dict().values()):
            torch.testing.assert_close(p.float().cpu(), q.float().cpu(), **tol,
                                       msg=lambda m, key=key: f"{key}: {m}")
    for p, q in zip(a.online.parameters(), b.online.parameters()):
        sa, sb = a.optimizer.state[p], b.optimizer.state[q]
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(sa[key].cpu(), sb[key].cpu(), **tol)
    assert (a.updates, a.target_synced_at) == (b.updates, b.target_synced_at)


@pytest.mark.parametrize("kw", [{"max_grad_norm": 0.1}, {"dueling": True},
                                {"double_dqn": False, "max_grad_norm": 0.0, "td_clip": 0.0}],
                         ids=["clipping", "dueling", "no-clips"])
def test_graphed_update_equals_eager_update(kw):
    eager, graphed = cuda_learner(cuda_graph=False, **kw), cuda_learner(**kw)
    assert graphed.graphed and not eager.graphed
    assert graphed.channels_last and graphed.online.features[0].weight.is_contiguous(
        memory_format=torch.channels_last)
    results = step(graphed, range(20))
    assert_close_results(step(eager, range(20)), results)
    assert_close_learners(eager, graphed)
    assert graphed.target_synced_at == 20  # four syncs inside the graphed run
    stats = torch.stack([r[0] for r in results]).cpu()
    if kw.get("max_grad_norm") == 0.1:  # the clips bit inside the graph
        assert (stats[:, 2] < 1.0).any() and (stats[:, 3] > 0).any()
    graph = graphed._graph
    step(graphed, range(20, 23), want_td=False)
    assert graphed._graph is graph  # captured once


def test_graphed_bf16_update_follows_the_eager_one():
    eager = cuda_learner(precision="bf16", cuda_graph=False)
    graphed = cuda_learner(precision="bf16")
    assert graphed.bf16 and graphed.target.features[0].weight.dtype == torch.bfloat16
    loose = {"rtol": 2e-2, "atol": 1e-3}
    assert_close_results(step(eager, range(12)), step(graphed, range(12)), loose)
    assert_close_learners(eager, graphed, loose)


def test_stats_stay_on_the_gpu_and_td_comes_back_to_the_host():
    learner = cuda_learner()
    r = learner.update(make_batch(0, 16, channels_last=True), want_td=True)
    assert r.stats.device.type == "cuda" and r.stats.shape == (4,)
    assert isinstance(r.td_abs, np.ndarray) and r.td_abs.shape == (16,)
    assert r.td_abs.dtype == np.float32 and (r.td_abs >= 0).all()
    kept = r.stats.clone()
    learner.update(make_batch(1, 16, channels_last=True, big=True))
    assert torch.equal(r.stats, kept)  # a returned result is not rewritten by later replays
    assert learner.update(make_batch(2, 16, channels_last=True)).td_abs is None


def test_pinned_buffers_may_be_refilled_as_soon_as_update_returns():
    """The trainer's loop: sample into the learner's pinned buffers, update, sample again at
    once. With the GPU kept busy before each update (its input copies queue behind the work),
    the buffers are scribbled over the moment `update` returns: an update that returned before
    its copies ran would learn from the scribbles."""
    replay = FrameReplay(400, (HW, HW), stack=STACK, n_step=1, seed=0)
    rng = np.random.default_rng(0)
    replay.reset(rng.integers(0, 256, (HW, HW), dtype=np.uint8))
    for i in range(300):
        replay.add(int(rng.integers(ACTIONS)), float(rng.normal(0, 3)), i % 50 == 49, False,
                   rng.integers(0, 256, (HW, HW), dtype=np.uint8))
        if i % 50 == 49:
            replay.reset(rng.integers(0, 256, (HW, HW), dtype=np.uint8))
    B = 64
    reference = cuda_learner(cuda_graph=False)  # reads pageable arrays
    pinned = {"graph": cuda_learner(), "eager": cuda_learner(cuda_graph=False)}
    batches = {}
    for name, learner in pinned.items():
        bufs = learner.batch_buffers(B)
        for key, arr in bufs.items():
            assert torch.from_numpy(arr).is_pinned(), key
        batches[name] = Batch(B, STACK, HW, HW, learner.channels_last, buffers=bufs)
    fields = ("obs", "next_obs", "action", "reward", "discount", "weight", "index")
    results = {"reference": [], "graph": [], "eager": []}
    source = Batch(B, STACK, HW, HW, True)
    for _ in range(12):
        replay.sample(B, out=source)
        for name, learner in pinned.items():
            batch = batches[name]
            for key in fields:
                getattr(batch, key)[...] = getattr(source, key)
            torch.cuda._sleep(20_000_000)  # about 10 ms of GPU time ahead of the copies
            results[name].append((learner.update(batch).stats.clone(), None))
            batch.obs[...] = 0  # the next sample, at once
            batch.next_obs[...] = 255
            batch.reward[...] = 1e6
            batch.action[...] = 0
        results["reference"].append((reference.update(source).stats.clone(), None))
    torch.cuda.synchronize()
    for name, learner in pinned.items():
        assert_close_results(results["reference"], results[name])
        assert_close_learners(reference, learner)


def test_set_lr_in_a_graphed_run():
    eager, graphed = cuda_learner(cuda_graph=False), cuda_learner()
    step(eager, range(3)), step(graphed, range(3))
    lr = graphed.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.device.type == "cuda" and lr.dtype == torch.float32
    for new in (LR * 16, LR / 8):
        eager.set_lr(new), graphed.set_lr(new)
        assert_close_results(step(eager, range(3, 7)), step(graphed, range(3, 7)))
    assert graphed.optimizer.param_groups[0]["lr"] is lr and lr.item() == LR / 8
    assert_close_learners(eager, graphed)


def test_a_new_config_or_batch_size_captures_again():
    eager, graphed = cuda_learner(cuda_graph=False), cuda_learner()
    assert_close_results(step(eager, range(3)), step(graphed, range(3)))
    assert_close_results(step(eager, range(3, 6), n=40), step(graphed, range(3, 6), n=40))
    first = graphed._graph
    for learner in (eager, graphed):  # the watchdog test's fault injection
        learner.config = dataclasses.replace(learner.config, max_grad_norm=0.0, td_clip=0.0)
        learner.set_lr(LR * 100)
    assert_close_results(step(eager, range(6, 10), n=40, big=True),
                         step(graphed, range(6, 10), n=40, big=True), {"rtol": 1e-4,
                                                                       "atol": 1e-5})
    assert graphed._graph is not first
    assert_close_learners(eager, graphed, {"rtol": 1e-4, "atol": 1e-5})


def test_state_round_trip_onto_the_gpu_continues_like_an_uninterrupted_learner():
    a = cuda_learner(seed=0)
    step(a, range(5))
    state = saved_elsewhere(a.state_dict(), dtype=torch.float32)  # CPU tensors
    assert all(t.device.type == "cpu" for t in state["online"].values())
    fresh = cuda_learner(seed=1)
    captured = cuda_learner(seed=2)
    step(captured, range(30, 33))  # a graph, Adam state and lr of its own
    graph, tensors = captured._graph, persistent_tensors(captured)
    fresh.load_state_dict(state)
    captured.load_state_dict(state)
    assert captured._graph is graph  # the state went into the captured tensors
    assert all(t is u for t, u in zip(persistent_tensors(captured), tensors, strict=True))
    for learner in (fresh, captured):
        for p in learner.online.parameters():
            st = learner.optimizer.state[p]
            assert p.device.type == "cuda" and st["exp_avg"].device.type == "cuda"
            assert st["step"].device.type == "cuda" and st["step"].dtype == torch.float32
            assert st["exp_avg"].stride() == p.stride()
        assert learner.optimizer.param_groups[0]["lr"].device.type == "cuda"
    ra = step(a, range(10, 18))
    assert_close_results(ra, step(fresh, range(10, 18)))
    assert_close_results(ra, step(captured, range(10, 18)))
    assert_close_learners(a, fresh)
    assert_close_learners(a, captured)


def test_a_gpu_learners_state_acts_the_same_on_a_cpu_learner():
    gpu = cuda_learner()
    with torch.no_grad():  # an output layer whose greedy action depends on the observation
        torch.manual_seed(5)
        gpu.online.head[2].weight.normal_(0.0, 1.0)
        gpu.online.head[2].bias.zero_()
    step(gpu, range(4))
    state = saved_elsewhere(gpu.state_dict(), dtype=torch.float32)  # as checkpoint.load reads it
    torch.manual_seed(9)
    cpu = Learner(LearnerConfig(precision="fp32", device="cpu", lr=LR, target_update=5),
                  ACTIONS, STACK, (HW, HW))
    cpu.load_state_dict(state)
    assert not cpu.optimizer.param_groups[0]["capturable"]
    assert all(st["step"].device.type == "cpu" for st in cpu.optimizer.state.values())
    obs = make_batch(7, n=32).obs
    q_gpu, q_cpu = gpu.q_values(obs).cpu(), cpu.q_values(obs)
    torch.testing.assert_close(q_gpu, q_cpu, rtol=1e-4, atol=1e-5)
    top2 = q_cpu.sort(dim=1).values[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3  # rows whose argmax rounding cannot flip
    assert clear.sum() >= 24
    np.testing.assert_array_equal(gpu.act_batch(obs)[clear.numpy()],
                                  cpu.act_batch(obs)[clear.numpy()])
    assert [gpu.act(o) for o in obs[:4]] == [cpu.act(o) for o in obs[:4]]
    step(cpu, range(4, 6))  # and it trains on


@pytest.mark.parametrize("act_graph", [False, True])
def test_act_batch_is_the_argmax_of_q_values(act_graph):
    learner = cuda_learner(act_graph=act_graph)
    with torch.no_grad():
        learner.online.head[2].weight.mul_(50.0)
    obs = make_batch(3, n=33).obs
    expected = learner.q_values(obs).argmax(dim=1).cpu().numpy()
    for n in (1, 33):
        got = learner.act_batch(obs[:n])
        assert got.dtype == np.int64 and got.shape == (n,)
        np.testing.assert_array_equal(got, expected[:n])
    nhwc = np.ascontiguousarray(obs.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(learner.act_batch(nhwc), expected)
    pinned = torch.empty(obs.shape, dtype=torch.uint8, pin_memory=True).numpy()
    pinned[:] = obs
    np.testing.assert_array_equal(learner.act_batch(pinned), expected)
    np.testing.assert_array_equal(learner.act_batch(obs[::-1]), expected[::-1])
    assert learner.act(obs[5]) == expected[5]
    assert learner.act_graphed == act_graph and (learner._act_graph is not None) == act_graph
    # after updates (weights written in place) it acts on the new weights
    step(learner, range(6))
    after = learner.q_values(obs).argmax(dim=1).cpu().numpy()
    np.testing.assert_array_equal(learner.act_batch(obs), after)


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_a_graphed_update_gathering_from_the_gpus_ring_follows_the_eager_one(precision):
    """learner.device_frames: the stacks gathered from the ring on the GPU inside the graph."""
    eager = cuda_learner(cuda_graph=False, precision=precision)
    graphed = cuda_learner(precision=precision)
    ring, batches = ring_batches(range(12))
    graphed.use_frames(ring.cuda())
    tol = TIGHT if precision == "fp32" else {"rtol": 2e-2, "atol": 2e-2}
    assert_close_results(updates(eager, batches, rows=False), updates(graphed, batches, rows=True),
                         tol)
    assert_close_learners(eager, graphed, tol)
    assert graphed._graph.obs_shape == ("rows", 8) and "obs" not in graphed._graph.inputs
