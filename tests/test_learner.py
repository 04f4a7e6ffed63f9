"""The learner on CPU: batched acting, the replay buffers it asks for, restoring a state whose
tensors come from elsewhere, the eager update against a plain re-statement of it, and the
CUDA-graph update path run through a CPU stand-in for the graph (every check of its logic that
does not need a GPU: the warm-up leaves no trace, replays equal eager updates, the target sync,
`set_lr`, a new batch size or config, `load_state_dict` into a captured learner)."""

from __future__ import annotations

import dataclasses
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agent import learner as learner_mod
from agent.config import LearnerConfig
from agent.learner import GRAPH_WARMUP, Learner
from agent.native import Batch, FrameReplay

STACK, HW, ACTIONS = 2, 36, 4
LR = 2.0**-12  # exact in float32: a float learning rate and a float32 tensor one step alike


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_batch(seed: int, n: int = 8, channels_last: bool = False, big: bool = False):
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, (n, STACK, HW, HW), dtype=np.uint8)
    nxt = rng.integers(0, 256, (n, STACK, HW, HW), dtype=np.uint8)
    if channels_last:  # (B, stack, H, W) views of (B, H, W, stack) bytes, as the replay gives
        obs, nxt = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
                    for a in (obs, nxt))
    scale = 300.0 if big else 2.0  # big: some TD targets clipped, gradients clipped
    return SimpleNamespace(
        obs=obs, next_obs=nxt, action=rng.integers(0, ACTIONS, n).astype(np.int64),
        reward=rng.normal(0, scale, n).astype(np.float32),
        discount=np.where(rng.random(n) < 0.2, 0.0, 0.97).astype(np.float32),
        weight=rng.uniform(0.3, 1.0, n).astype(np.float32))


def make_learner(seed: int = 0, **kw) -> Learner:
    kw = {"precision": "fp32", "device": "cpu", "lr": LR, "target_update": 5, **kw}
    torch.manual_seed(seed)
    return Learner(LearnerConfig(**kw), ACTIONS, STACK, (HW, HW))


def assert_same_learner(a: Learner, b: Learner) -> None:
    for name, nets in (("online", (a.online, b.online)), ("target", (a.target, b.target))):
        for (key, p), q in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
            assert torch.equal(p, q), f"{name}.{key}"
    pa, pb = list(a.online.parameters()), list(b.online.parameters())
    for i, (p, q) in enumerate(zip(pa, pb)):
        sa, sb = a.optimizer.state[p], b.optimizer.state[q]
        assert sa.keys() == sb.keys(), i
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (i, key)
    assert (a.updates, a.target_synced_at) == (b.updates, b.target_synced_at)


def run(learner: Learner, seeds, n: int = 8, **kw) -> list:
    out = []
    for s in seeds:
        r = learner.update(make_batch(s, n, channels_last=learner.channels_last, **kw),
                           want_td=True)
        out.append((r.stats.clone(), r.td_abs))
    return out


def assert_same_results(ra: list, rb: list) -> None:
    for i, ((sa, ta), (sb, tb)) in enumerate(zip(ra, rb, strict=True)):
        assert torch.equal(sa, sb), (i, sa, sb)
        np.testing.assert_array_equal(ta, tb)


def saved_elsewhere(state: dict, dtype=torch.float64) -> dict:
    """`state` as another machine would hand it over: written with torch.save, read back with
    map_location, every floating tensor in another dtype and plain contiguous layout."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, map_location="cpu", weights_only=True)

    def convert(obj):
        if isinstance(obj, torch.Tensor):
            return obj.to(dtype).contiguous() if obj.is_floating_point() else obj.clone()
        if isinstance(obj, dict):
            return {k: convert(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [convert(v) for v in obj]
        return obj

    return convert(loaded)


# ------------------------------------------------------------------ acting and buffers
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_act_batch_equals_act_per_observation(precision):
    learner = make_learner(precision=precision)
    with torch.no_grad():  # an output layer whose greedy action depends on the observation
        torch.manual_seed(5)
        learner.online.head[2].weight.normal_(0.0, 1.0)
        learner.online.head[2].bias.zero_()
    obs = make_batch(7, n=24).obs
    actions = learner.act_batch(obs)
    assert actions.dtype == np.int64 and actions.shape == (24,)
    assert actions.tolist() == [learner.act(o) for o in obs]
    expected = learner.q_values(obs).argmax(dim=1).numpy()
    np.testing.assert_array_equal(actions, expected)
    assert len(set(actions.tolist())) > 1  # the test tells actions apart
    # a channels_last view of the same stacks acts the same
    nhwc = np.ascontiguousarray(obs.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(learner.act_batch(nhwc), actions)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batch_buffers_are_the_learners_layout_and_fill_a_replay_batch(precision):
    learner = make_learner(precision=precision)
    B = 6
    bufs = learner.batch_buffers(B)
    frames = (B, HW, HW, STACK) if learner.channels_last else (B, STACK, HW, HW)
    want = {"obs": (np.uint8, frames), "next_obs": (np.uint8, frames),
            "action": (np.int64, (B,)), "reward": (np.float32, (B,)),
            "discount": (np.float32, (B,)), "index": (np.int64, (B,)),
            "weight": (np.float32, (B,))}
    assert set(bufs) == set(want)
    for key, (dtype, shape) in want.items():
        arr = bufs[key]
        assert arr.dtype == dtype and arr.shape == shape, key
        assert arr.flags.c_contiguous and arr.flags.writeable, key
    replay = FrameReplay(100, (HW, HW), stack=STACK, n_step=1, seed=0)
    rng = np.random.default_rng(0)
    replay.reset(rng.integers(0, 256, (HW, HW), dtype=np.uint8))
    for _ in range(40):
        replay.add(int(rng.integers(ACTIONS)), 1.0, False, False,
                   rng.integers(0, 256, (HW, HW), dtype=np.uint8))
    batch = Batch(B, STACK, HW, HW, learner.channels_last, buffers=bufs)
    assert replay.sample(B, out=batch) is batch
    assert np.shares_memory(batch.obs, bufs["obs"]) and np.shares_memory(batch.weight,
                                                                         bufs["weight"])
    assert learner.to_device(batch.obs).is_contiguous(
        memory_format=torch.channels_last if learner.channels_last else torch.contiguous_format)
    assert np.isfinite(learner.update(batch).stats.numpy()).all()


# ------------------------------------------------------------------ the eager update
def reference_update(net, target, opt, batch, cfg: LearnerConfig) -> None:
    """The documented update, written plainly: double-DQN targets clipped to +-td_clip,
    importance-weighted Huber, global-norm clip, Adam."""
    obs, nxt = torch.from_numpy(batch.obs), torch.from_numpy(batch.next_obs)
    with torch.no_grad():
        best = net(nxt).argmax(dim=1, keepdim=True)
        y = torch.from_numpy(batch.reward) + torch.from_numpy(batch.discount) * target(
            nxt).gather(1, best).squeeze(1)
        y = y.clamp(-cfg.td_clip, cfg.td_clip)
    q = net(obs).gather(1, torch.from_numpy(batch.action)[:, None]).squeeze(1)
    loss = (F.huber_loss(q, y, reduction="none", delta=cfg.huber_delta)
            * torch.from_numpy(batch.weight)).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
    opt.step()


def test_the_cpu_update_is_the_documented_update():
    """Bit for bit: the CPU update is still the plain one (fp32, NCHW as the reference's
    networks: another memory layout sums in another order), clips included."""
    learner = make_learner(target_update=4, max_grad_norm=0.1, td_clip=20.0,
                           channels_last=False)
    torch.manual_seed(0)
    net = type(learner.online)(ACTIONS, STACK, (HW, HW))
    net.load_state_dict(learner.online.state_dict())
    target = type(learner.online)(ACTIONS, STACK, (HW, HW))
    target.load_state_dict(learner.online.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=LR, eps=learner.config.adam_eps,
                           fused=True)
    clipped = 0
    for i in range(10):
        batch = make_batch(i, big=i % 2 == 0)
        clipped += learner.update(batch).stats[2].item() < 1.0
        reference_update(net, target, opt, batch, learner.config)
        if (i + 1) % 4 == 0:
            target.load_state_dict(net.state_dict())
    assert clipped >= 3  # the big batches' gradients were clipped
    for p, q in zip(learner.online.parameters(), net.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(learner.target.parameters(), target.parameters()):
        assert torch.equal(p, q)


# ------------------------------------------------------------------ restoring a state
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_state_saved_elsewhere_restores_and_continues_bit_exactly(precision):
    a = make_learner(seed=0, precision=precision)
    run(a, range(4))
    state = saved_elsewhere(a.state_dict())
    b = make_learner(seed=1, precision=precision)  # other weights, no Adam state yet
    b.load_state_dict(state)
    for p in b.online.parameters():
        assert p.dtype == torch.float32 and p.device == b.device
        st = b.optimizer.state[p]
        assert st["step"].dtype == torch.float32 and st["step"].device == p.device
        for key in ("exp_avg", "exp_avg_sq"):
            assert st[key].dtype == p.dtype and st[key].stride() == p.stride(), key
            # the learner's own tensors, not the payload's
            assert all(st[key].data_ptr() != v.data_ptr()
                       for s in state["optimizer"]["state"].values() for v in s.values())
    assert b.target.features[0].weight.dtype == a.target.features[0].weight.dtype
    assert_same_learner(a, b)
    for s in state["optimizer"]["state"].values():  # scribbling on the payload changes nothing
        s["exp_avg"].fill_(1e9)
    assert_same_results(run(a, range(10, 16)), run(b, range(10, 16)))
    assert_same_learner(a, b)


def test_a_state_with_a_never_stepped_optimizer_resets_adam():
    fresh = make_learner(seed=3)
    state = saved_elsewhere(fresh.state_dict())
    assert state["optimizer"]["state"] == {}
    b = make_learner(seed=1)
    run(b, range(3))  # b has Adam moments of its own
    b.load_state_dict(state)
    assert_same_results(run(fresh, range(5)), run(b, range(5)))
    assert_same_learner(fresh, b)


def test_resync_target_and_a_bf16_target_take_the_payloads_online_weights():
    a = make_learner(precision="bf16", target_update=1000)
    run(a, range(3))
    b = make_learner(seed=2, precision="bf16")
    b.load_state_dict(saved_elsewhere(a.state_dict()), resync_target=True)
    assert b.target_age == 0
    for p, q in zip(a.online.parameters(), b.target.parameters()):
        assert q.dtype == torch.bfloat16 and torch.equal(p.to(torch.bfloat16), q)


# ------------------------------------------------------------------ the CUDA-graph path on CPU
class EagerGraph:
    """A CPU stand-in for a captured CUDA graph. `replay()` reruns the captured step eagerly and
    writes its outputs into the tensors the capture returned. A real graph replays fixed
    addresses with the Python decisions of its capture, so before each replay this checks that
    every persistent tensor of the learner is the one the capture saw, at the same address,
    and that the config it was captured under still holds."""

    def __init__(self, learner, step, outputs):
        self.learner, self.step, self.outputs = learner, step, outputs
        self.config = learner.config
        self.tensors = [(t, t.data_ptr()) for t in persistent_tensors(learner)]
        self.replays = 0

    def replay(self):
        now = persistent_tensors(self.learner)
        assert len(now) == len(self.tensors)
        for i, (t, (then, ptr)) in enumerate(zip(now, self.tensors)):
            assert t is then and t.data_ptr() == ptr, f"tensor {i} was replaced"
        assert self.learner.config == self.config, "replayed under another config"
        for out, new in zip(self.outputs, self.step(), strict=True):
            out.copy_(new)
        self.replays += 1


def persistent_tensors(learner) -> list:
    params = list(learner.online.parameters())
    tensors = [*params, *learner.target.parameters(), *(p.grad for p in params)]
    for p in params:
        state = learner.optimizer.state[p]
        tensors += [state["step"], state["exp_avg"], state["exp_avg_sq"]]
    return tensors + [g["lr"] for g in learner.optimizer.param_groups]


def stepping_learner(step) -> Learner:
    """The learner whose captured step `step` is (the closure holds it)."""
    return next(c.cell_contents for c in step.__closure__
                if isinstance(c.cell_contents, Learner))


@pytest.fixture
def cpu_graphs(monkeypatch):
    """Learners built in this test graph their updates on CPU through EagerGraph."""
    captures = []

    def capture(step, device, warmup=GRAPH_WARMUP):
        for _ in range(warmup):
            step()
        # A real capture records without running; the learner undoes the warm-up either way.
        outputs = step()
        graph = EagerGraph(stepping_learner(step), step, outputs)
        captures.append(graph)
        return graph, outputs

    monkeypatch.setattr(learner_mod, "graph_capable", lambda device: True)
    monkeypatch.setattr(learner_mod, "capture_graph", capture)
    return captures


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphed_updates_equal_eager_updates(cpu_graphs, precision):
    eager = make_learner(precision=precision, cuda_graph=False)
    graphed = make_learner(precision=precision)
    assert graphed.graphed and not eager.graphed
    assert isinstance(graphed.optimizer.param_groups[0]["lr"], torch.Tensor)
    before = [p.detach().clone() for p in graphed.online.parameters()]
    r = graphed.update(make_batch(0, channels_last=graphed.channels_last))
    assert len(cpu_graphs) == 1 and cpu_graphs[0].replays == 1
    # the warm-up steps left no trace: one update from the initial weights
    eager.update(make_batch(0, channels_last=eager.channels_last))
    assert_same_learner(eager, graphed)
    assert not any(torch.equal(p, b) for p, b in zip(graphed.online.parameters(), before))
    assert r.stats.shape == (4,) and r.td_abs is None
    # 12 more, with target syncs (every 5) and clipping inside the graphed run
    assert_same_results(run(eager, range(1, 13), big=True), run(graphed, range(1, 13), big=True))
    assert_same_learner(eager, graphed)
    assert len(cpu_graphs) == 1 and cpu_graphs[0].replays == 13
    assert graphed.target_synced_at == 10


def test_a_captured_act_batch_acts_on_the_live_weights(cpu_graphs):
    """learner.act_graph: acting replays one capture per number of stacks, reading the online
    weights that the (graphed) updates write in place."""
    eager, graphed = make_learner(), make_learner(act_graph=True)
    for learner in (eager, graphed):
        with torch.no_grad():  # a greedy action that depends on the observation
            torch.manual_seed(5)
            learner.online.head[2].weight.normal_(0.0, 1.0)
    obs = make_batch(7, n=24).obs
    for i in range(3):
        assert_same_results(run(eager, range(i * 4, i * 4 + 4)),
                            run(graphed, range(i * 4, i * 4 + 4)))
        for n in (24, 5, 24):
            want = eager.q_values(obs[:n]).argmax(dim=1).numpy()
            np.testing.assert_array_equal(graphed.act_batch(obs[:n]), want)
            np.testing.assert_array_equal(eager.act_batch(obs[:n]), want)
    acts = [g for g in cpu_graphs if g.outputs[0].dtype == torch.int64]
    # one capture kept: captured again for each change of the number of stacks (24, 5, 24;
    # then 24 replays the last one), and every call replays
    assert len(acts) == 7 and sum(g.replays for g in acts) == 9
    assert eager._act_graph is None and graphed._act_graph.shape == (24, STACK, HW, HW)


def test_graphed_stats_are_a_copy_of_the_graphs_output(cpu_graphs):
    learner = make_learner()
    first = learner.update(make_batch(0)).stats
    kept = first.clone()
    learner.update(make_batch(1, big=True))
    assert torch.equal(first, kept)  # the next replay did not rewrite a returned result


def test_set_lr_reaches_the_captured_step(cpu_graphs):
    eager, graphed = make_learner(cuda_graph=False), make_learner()
    run(eager, range(3)), run(graphed, range(3))
    lr_tensor = graphed.optimizer.param_groups[0]["lr"]
    for lr in (LR * 8, LR / 4):
        eager.set_lr(lr), graphed.set_lr(lr)
        assert_same_results(run(eager, range(3, 6)), run(graphed, range(3, 6)))
    assert graphed.optimizer.param_groups[0]["lr"] is lr_tensor and lr_tensor.item() == LR / 4
    assert len(cpu_graphs) == 1
    assert_same_learner(eager, graphed)


def test_a_new_batch_size_or_config_captures_again(cpu_graphs):
    eager, graphed = make_learner(cuda_graph=False), make_learner()
    assert_same_results(run(eager, range(2)), run(graphed, range(2)))
    assert_same_results(run(eager, range(2, 4), n=5), run(graphed, range(2, 4), n=5))
    assert len(cpu_graphs) == 2
    assert_same_results(run(eager, range(4, 6)), run(graphed, range(4, 6)))
    assert len(cpu_graphs) == 3  # back to 8: one graph is kept, captured again
    # the watchdog's fault injection: clipping off, on a live learner
    for learner in (eager, graphed):
        learner.config = dataclasses.replace(learner.config, max_grad_norm=0.0, td_clip=0.0)
    assert_same_results(run(eager, range(6, 9), big=True), run(graphed, range(6, 9), big=True))
    assert len(cpu_graphs) == 4
    graphed.config = dataclasses.replace(graphed.config)  # an equal config: no new capture
    eager.config = dataclasses.replace(eager.config)
    assert_same_results(run(eager, range(9, 11)), run(graphed, range(9, 11)))
    assert len(cpu_graphs) == 4
    assert_same_learner(eager, graphed)


def test_turning_cuda_graph_off_and_on_at_run_time(cpu_graphs):
    eager, graphed = make_learner(cuda_graph=False), make_learner()
    run(eager, range(2)), run(graphed, range(2))
    graphed.config = dataclasses.replace(graphed.config, cuda_graph=False)
    assert not graphed.graphed
    assert_same_results(run(eager, range(2, 4)), run(graphed, range(2, 4)))
    graphed.config = dataclasses.replace(graphed.config, cuda_graph=True)
    assert_same_results(run(eager, range(4, 7)), run(graphed, range(4, 7)))
    assert len(cpu_graphs) == 2
    assert_same_learner(eager, graphed)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_load_state_dict_into_a_captured_learner_keeps_its_graph(cpu_graphs, precision):
    a = make_learner(seed=0, precision=precision)
    run(a, range(4))
    state = saved_elsewhere(a.state_dict())
    assert isinstance(state["optimizer"]["param_groups"][0]["lr"], float)
    b = make_learner(seed=1, precision=precision)
    run(b, range(20, 23))  # captured, with Adam state and an lr of its own
    b.set_lr(LR * 3)
    graph = b._graph
    tensors = persistent_tensors(b)
    b.load_state_dict(state)
    assert b._graph is graph  # no new capture: the state was copied into the same tensors
    assert all(t is u for t, u in zip(persistent_tensors(b), tensors, strict=True))
    assert b.optimizer.param_groups[0]["lr"].item() == LR
    assert b.optimizer.param_groups[0]["capturable"]
    assert_same_learner(a, b)
    assert_same_results(run(a, range(10, 17)), run(b, range(10, 17)))
    assert len(cpu_graphs) == 2  # a's capture and b's, nothing since
    assert_same_learner(a, b)


def test_a_graphed_learners_state_loads_into_an_eager_learner(cpu_graphs):
    graphed = make_learner(seed=0)
    run(graphed, range(4))
    eager = make_learner(seed=1, cuda_graph=False)
    eager.load_state_dict(saved_elsewhere(graphed.state_dict()))
    group = eager.optimizer.param_groups[0]
    assert group["lr"] == LR and not group["capturable"]  # the eager learner's own flags
    assert_same_results(run(graphed, range(4, 9)), run(eager, range(4, 9)))
    assert_same_learner(graphed, eager)


def test_rollback_then_update_equals_a_learner_that_never_diverged(cpu_graphs):
    """What the watchdog does: restore a healthy state with resync_target, keep the count."""
    healthy = make_learner(seed=0)
    run(healthy, range(3))
    state = saved_elsewhere(healthy.state_dict())
    b = make_learner(seed=0)
    run(b, range(3))
    b.set_lr(LR * 1000)
    run(b, range(3, 6), big=True)  # diverging
    b.load_state_dict(state, resync_target=True)
    b.set_lr(LR)
    healthy.sync_target()
    assert_same_results(run(healthy, range(6, 9)), run(b, range(6, 9)))
    assert_same_learner(healthy, b)


def test_a_failed_capture_says_how_to_turn_graphs_off_and_restores_the_weights(monkeypatch):
    def failing(step, device, warmup=GRAPH_WARMUP):
        for _ in range(warmup):
            step()
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(learner_mod, "graph_capable", lambda device: True)
    monkeypatch.setattr(learner_mod, "capture_graph", failing)
    learner = make_learner()
    before = [p.detach().clone() for p in learner.online.parameters()]
    with pytest.raises(RuntimeError, match=r"learner\.cuda_graph = false") as info:
        learner.update(make_batch(0))
    assert "stream is capturing" in str(info.value)
    assert all(torch.equal(p, b) for p, b in zip(learner.online.parameters(), before))
    assert learner.updates == 0 and learner._graph is None


def test_a_batch_that_does_not_fit_the_network_is_refused(cpu_graphs):
    learner = make_learner()
    bad = make_batch(0)
    bad.obs = bad.next_obs = np.zeros((8, STACK + 1, HW, HW), np.uint8)
    with pytest.raises(ValueError, match="do not fit"):
        learner.update(bad)



@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_uses_bf16_on_a_cpu_only_where_it_runs_natively(monkeypatch, native):
    """Emulated bf16 (an AVX2-only CPU) made updates 6.6x slower than fp32: "auto" keeps fp32
    there; "bf16" and "fp32" are obeyed whatever the CPU."""
    import agent.learner as learner_mod

    monkeypatch.setattr(learner_mod, "cpu_has_fast_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert learner_mod.use_bf16("auto", cpu) is native
    assert learner_mod.use_bf16("bf16", cpu) and not learner_mod.use_bf16("fp32", cpu)
    assert make_learner(precision="auto").bf16 is native


def test_the_bf16_probe_matches_onednn():
    from agent.learner import cpu_has_fast_bf16

    assert cpu_has_fast_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
