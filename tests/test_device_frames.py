"""The replay's frames kept on the learner's device (learner.device_frames), checked on the CPU:
the copy follows the ring through wraps, resets and a loaded snapshot; an update that gathers
its stacks from ring rows equals one on the gathered frames, eager and graphed (through the CPU
stand-in for a CUDA graph); a training run with the frames on the device equals one without,
bit for bit, with env workers writing while the learner samples. The CUDA runs of the same are
in tests/test_learner_cuda.py and tests/test_train_cuda.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agent import device_frames as device_frames_mod
from agent.device_frames import DeviceFrames
from agent.native import FrameReplay
from tests.reference_replay import ReferenceStreams
from tests.test_learner import (
    ACTIONS,
    HW,
    STACK,
    assert_same_learner,
    assert_same_results,
    cpu_graphs,  # noqa: F401 - a fixture
    make_learner,
)
from tests.test_replay_streams import Driver, H, W
from tests.test_train import _assert_same
from tests.test_train_envs import _state, envs_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


def assert_mirrors(frames: DeviceFrames, rb: FrameReplay) -> None:
    """Every row the replay may read holds the same frame in the copy."""
    P = rb.stream_capacity
    for s in range(rb.streams):
        start, total = rb.stream_live_start(s), rb.stream_totals[s]
        rows = s * P + np.arange(start, total) % P
        index = torch.from_numpy(rows).to(frames.device)
        np.testing.assert_array_equal(frames.ring[index].cpu().numpy(), rb.ring[rows],
                                      err_msg=f"stream {s}")


@pytest.mark.parametrize("streams, external, device", [
    (1, False, "cpu"), (3, True, "cpu"), (4, False, "cpu"),
    pytest.param(3, True, "cuda", marks=pytest.mark.cuda)])
def test_the_copy_follows_the_ring_through_wraps(streams, external, device):
    rng = np.random.default_rng(streams)
    capacity = 40 * streams
    ring = np.zeros((capacity, H, W), np.uint8) if external else None
    rb = FrameReplay(capacity, (H, W), stack=4, n_step=3, streams=streams, frames=ring, seed=1)
    drive = Driver(rb, ReferenceStreams(capacity, streams, 4, 3, 0.99), rng, ring)
    frames = DeviceFrames(rb, torch.device(device))
    assert frames.ring.device.type == device
    assert frames.ring.shape == (capacity, H, W) and frames.sync() == 0
    copied = 0
    for _ in range(60):  # short and long gaps: some longer than a stream's sub-ring
        before = rb.stream_totals
        drive.run(int(rng.integers(1, 3 * capacity // 2)))
        new = sum(min(t - b, rb.stream_capacity - 1) for b, t in zip(before, rb.stream_totals))
        assert frames.sync() == new  # each frame once; the part that wrapped away, never
        copied += new
        assert_mirrors(frames, rb)
        rows = np.empty((8, 2, 4), np.int64)
        if len(rb) >= 8:  # what the learner gathers is what the replay gathers
            batch = rb.sample(8, rows=rows)
            rb.gather(batch.index, out=batch)
            for k, want in ((0, batch.obs), (1, batch.next_obs)):
                got = frames.ring[torch.from_numpy(rows[:, k]).to(frames.device)]
                np.testing.assert_array_equal(got.cpu().numpy(), want)
    assert frames.uploaded == copied and min(rb.stream_totals) > 3 * rb.stream_capacity


def test_a_loaded_snapshot_and_a_reset_replay_are_copied_again():
    rng = np.random.default_rng(0)
    rb = FrameReplay(90, (H, W), stack=4, n_step=3, streams=3, seed=2)
    Driver(rb, ReferenceStreams(90, 3, 4, 3, 0.99), rng).run(200)
    # A resumed run: a fresh replay loads the snapshot, then its copy is made.
    resumed = FrameReplay(90, (H, W), stack=4, n_step=3, streams=3, seed=2)
    resumed.load_state_dict(rb.state_dict())
    frames = DeviceFrames(resumed, CPU)
    assert frames.sync() == sum(min(t, 29) for t in resumed.stream_totals)
    assert_mirrors(frames, resumed)
    # The same replay emptied and refilled (its counts go back): copied again from the start.
    small = FrameReplay(90, (H, W), stack=4, n_step=3, streams=3, seed=3)
    Driver(small, ReferenceStreams(90, 3, 4, 3, 0.99), rng).run(20)
    resumed.load_state_dict(small.state_dict())
    assert frames.sync() == sum(small.stream_totals)
    assert_mirrors(frames, resumed)


def test_a_ring_too_big_for_the_gpu_is_refused_naming_the_sizes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 80 * 2**30))
    rb = FrameReplay(1_000_000, (84, 84), stack=4, n_step=3)
    assert not device_frames_mod.device_frames_fit(1_000_000, (84, 84), torch.device("cuda"))
    assert device_frames_mod.device_frames_fit(300_000, (84, 84), torch.device("cuda"))
    with pytest.raises(ValueError, match=r"1,000,000 frames needs 6\.6 GiB .* 3\.0 GiB is free; "
                                         r"lower replay.capacity or set learner.device_frames"):
        DeviceFrames(rb, torch.device("cuda"))


# ------------------------------------------------------------------ the learner
def ring_batches(seeds, n: int = 8, capacity: int = 50):
    """A ring of random frames and batches over it: each as (frames batch, rows)."""
    ring = np.random.default_rng(99).integers(0, 256, (capacity, HW, HW), dtype=np.uint8)
    out = []
    for s in seeds:
        rng = np.random.default_rng(s)
        rows = rng.integers(0, capacity, (n, 2, STACK)).astype(np.int64)
        batch = SimpleNamespace(
            obs=ring[rows[:, 0]], next_obs=ring[rows[:, 1]],
            action=rng.integers(0, ACTIONS, n).astype(np.int64),
            reward=rng.normal(0, 300.0 if s % 3 == 0 else 2.0, n).astype(np.float32),
            discount=np.where(rng.random(n) < 0.2, 0.0, 0.97).astype(np.float32),
            weight=rng.uniform(0.3, 1.0, n).astype(np.float32), batch_size=n)
        out.append((batch, rows))
    return torch.from_numpy(ring), out


def updates(learner, batches, rows: bool) -> list:
    results = []
    for batch, r in batches:
        res = learner.update(batch, want_td=True, rows=r if rows else None)
        results.append((res.stats.clone(), res.td_abs))
    return results


@pytest.mark.parametrize("graphed", [False, True])
def test_an_update_from_ring_rows_equals_one_from_the_frames(request, graphed):
    if graphed:
        request.getfixturevalue("cpu_graphs")
    on_frames, on_rows = make_learner(cuda_graph=graphed), make_learner(cuda_graph=graphed)
    assert on_rows.graphed == graphed
    ring, batches = ring_batches(range(12))
    on_rows.use_frames(ring)
    assert_same_results(updates(on_frames, batches, rows=False),
                        updates(on_rows, batches, rows=True))
    assert_same_learner(on_frames, on_rows)
    if graphed:  # captured once, for rows (the gather inside), and only again for frames
        graph = on_rows._graph
        assert graph.obs_shape == ("rows", 8) and set(graph.inputs) == {
            "rows", "action", "reward", "discount", "weight"}
        updates(on_rows, batches[:2], rows=True)
        assert on_rows._graph is graph
        updates(on_rows, batches[:1], rows=False)
        assert on_rows._graph is not graph and on_rows._graph.obs_shape == (8, STACK, HW, HW)


def test_rows_without_a_ring_or_a_ring_that_does_not_fit_are_refused():
    learner = make_learner()
    ring, batches = ring_batches([0])
    with pytest.raises(ValueError, match=r"needs the replay's frames on the device: call "
                                         r"use_frames\(ring\) first"):
        learner.update(batches[0][0], rows=batches[0][1])
    bad = batches[0][1].copy()
    bad[3, 1, 0] = 50
    learner.use_frames(ring)
    with pytest.raises(ValueError, match=r"rows must be ring rows in \[0, 50\), got values in "
                                         r"\[\d+, 50\]"):
        learner.update(batches[0][0], rows=bad)
    with pytest.raises(ValueError, match=rf"uint8 \(capacity, {HW}, {HW}\) tensor on cpu, got "
                                         r"torch.uint8 \(50, 36, 35\) on cpu"):
        learner.use_frames(ring[:, :, :35])
    with pytest.raises(ValueError, match=r"got torch.float32"):
        learner.use_frames(ring.float())
    assert learner.updates == 0


def test_batch_buffers_without_frames_and_the_rows_buffer():
    learner = make_learner()
    assert set(learner.batch_buffers(8, frames=False)) == {
        "action", "reward", "discount", "index", "weight"}
    rows = learner.rows_buffer(8)
    assert rows.shape == (8, 2, STACK) and rows.dtype == np.int64 and rows.flags.c_contiguous


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("envs, overlap", [(1, "off"), (2, "on")])
def test_a_run_with_the_frames_on_the_device_equals_one_without(tmp_path, trainers, envs,
                                                                 overlap):
    """With two envs and overlap the env workers write the next round's frames while the
    learner syncs and samples."""
    kw = {"run": {"total_steps": 700, "report_seconds": 1e6, "checkpoint_every": 10_000,
                  "eval_every": 0, "diag_batch": 64, "probe_size": 16, "seed": 4,
                  "overlap": overlap}}
    host = envs_trainer(tmp_path, "host", envs, **kw)
    trainers.append(host)
    device = envs_trainer(tmp_path, "device", envs, learner={"device_frames": "on"}, **kw)
    trainers.append(device)
    assert host.frames is None and device.frames is not None
    host.run(), device.run()
    assert device.rows is not None and device.learner.updates > 50
    # every frame went to the copy once (none wrapped away in this short run); the last
    # round's go with the next update's sync
    device.frames.sync()
    assert device.frames.uploaded == device.replay.total
    assert_mirrors(device.frames, device.replay)
    _assert_same(_state(host), _state(device))


def test_a_resumed_run_with_the_frames_on_the_device_equals_an_uninterrupted_one(tmp_path,
                                                                                 trainers):
    """The resumed run's copy is made from the loaded replay snapshot, then kept up."""
    kw = {"learner": {"device_frames": "on"},
          "run": {"total_steps": 700, "report_seconds": 1e6, "checkpoint_every": 300,
                  "eval_every": 0, "diag_batch": 64, "probe_size": 16, "seed": 6,
                  "save_replay": True, "overlap": "on"}}
    straight = envs_trainer(tmp_path, "straight", **kw)
    trainers.append(straight)
    straight.run()
    first = envs_trainer(tmp_path, "stopped", **kw)
    trainers.append(first)
    assert first.run(stop_after=437).state == "interrupted"
    first.close()
    resumed = envs_trainer(tmp_path, "stopped", **kw)
    trainers.append(resumed)
    resumed.restore(first.store.latest())
    assert resumed.frames.uploaded == 0  # copied at the first update, from the snapshot
    assert resumed.run().state == "finished"
    assert resumed.frames.uploaded >= 438
    resumed.frames.sync()  # (the last round's frames)
    assert_mirrors(resumed.frames, resumed.replay)
    a, b = _state(straight), _state(resumed)
    b["checks"] = [*[c for c in first.checks if c["steps"] <= 438], *b["checks"]]
    _assert_same(a, b)


def test_auto_keeps_the_frames_on_the_host_on_a_cpu(tmp_path, trainers):
    trainer = envs_trainer(tmp_path, envs=1, learner={"device_frames": "auto"})
    trainers.append(trainer)
    assert trainer.frames is None
