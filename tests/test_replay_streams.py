"""The multi-stream frame-ring replay: S envs writing one ring, each in its own sub-ring.

Checked against S independent plain references (tests/reference_replay.py) on long random
interleaved streams; sampling statistics over all streams; the worker-facing slots
(next_slots, an external frames buffer); snapshots with streams; draw_valid; caller-owned Batch
buffers; and the errors. Frames encode (stream, frame index) so contents are checked exactly.
"""

from __future__ import annotations

import math
from multiprocessing import shared_memory

import numpy as np
import pytest

from agent.native import Batch, FrameReplay
from tests.reference_replay import ReferenceReplay, ReferenceStreams
from tests.test_replay import assert_matches, uniform_draw_counts
from tests.test_replay import drive as drive_one_stream

H = W = 6


def encoded_frame(stream: int, index: int, rng: np.random.Generator) -> np.ndarray:
    """A frame whose first three bytes spell its stream and its index in that stream."""
    f = rng.integers(0, 256, (H, W), dtype=np.uint8)
    f[0, 0], f[0, 1], f[0, 2] = stream, index % 256, (index // 256) % 256
    return f


class Driver:
    """Feeds a native replay and the reference the same random interleaved streams.

    Each call to step() picks a stream at random and gives it one event: a reset (at the start,
    after an episode end, or in the middle of an episode), or a step, terminated or truncated
    at random. Frames reach the replay in one of three ways: as an argument, written into
    frame_slot(stream), or (with an external ring) written into the rows next_slots() names,
    as a worker process does.
    """

    def __init__(self, rb: FrameReplay, ref: ReferenceStreams, rng: np.random.Generator,
                 ring: np.ndarray | None = None, mean_len: float = 10.0, p_trunc: float = 0.3,
                 p_abort: float = 0.04):
        self.rb, self.ref, self.rng, self.ring = rb, ref, rng, ring
        self.mean_len, self.p_trunc, self.p_abort = mean_len, p_trunc, p_abort
        self.streams = ref.streams

    def _open(self, s: int) -> bool:
        r = self.ref[s]
        return r.total > 0 and r.episodes[-1].end == "open"

    def _frame(self, s: int, offset: int = 0) -> np.ndarray:
        return encoded_frame(s, self.ref[s].total + offset, self.rng)

    def _mode(self) -> int:
        return int(self.rng.integers(0, 3 if self.ring is not None else 2))

    def _reset(self, s: int) -> None:
        f = self._frame(s)
        mode = self._mode()
        if mode == 0:
            self.rb.reset(f, stream=s)
        elif mode == 1:
            self.rb.frame_slot(stream=s)[:] = f
            self.rb.reset(stream=s)
        else:
            self.ring[self.rb.next_slots()[s, 0]] = f
            self.rb.reset(None, stream=s)
        self.ref[s].reset(f)

    def step(self, stream: int | None = None) -> None:
        s = int(self.rng.integers(0, self.streams)) if stream is None else stream
        if not self._open(s) or self.rng.random() < self.p_abort:
            self._reset(s)
            return
        done = self.rng.random() < 1.0 / self.mean_len
        truncated = done and self.rng.random() < self.p_trunc
        terminated = done and not truncated
        action = int(self.rng.integers(0, 18))
        reward = float(self.rng.choice([-1.0, 0.0, 0.0, 1.0, 0.5]))
        f = self._frame(s)
        mode = self._mode()
        if mode == 2 and done:
            # A worker's step that ended the episode: the step's frame and the next episode's
            # first frame, written before the parent records either.
            first = self._frame(s, offset=1)
            rows = self.rb.next_slots()
            self.ring[rows[s, 0]] = f
            self.ring[rows[s, 1]] = first
            self.rb.add(action, reward, terminated, truncated, stream=s)
            self.rb.reset(stream=s)
            self.ref[s].add(action, reward, terminated, truncated, f)
            self.ref[s].reset(first)
            return
        if mode == 0:
            self.rb.add(action, reward, terminated, truncated, f, stream=s)
        elif mode == 1:
            self.rb.frame_slot(s)[:] = f
            self.rb.add(action, reward, terminated, truncated, None, stream=s)
        else:
            self.ring[self.rb.next_slots()[s, 0]] = f
            self.rb.add(action, reward, terminated, truncated, stream=s)
        self.ref[s].add(action, reward, terminated, truncated, f)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()


def assert_counters(rb: FrameReplay, ref: ReferenceStreams) -> None:
    totals = tuple(r.total for r in ref.refs)
    assert rb.stream_totals == totals
    assert rb.total == sum(totals)
    for s, r in enumerate(ref.refs):
        assert rb.stream_live_start(s) == r.live_start
        if r.total:
            ep = r.episodes[-1]
            np.testing.assert_array_equal(rb.current_stack(stream=s),
                                          r._stack(ep, len(ep.frames) - 1), err_msg=f"stream {s}")
    assert rb.live_start == ref[0].live_start


def build(capacity, streams, stack, n_step, gamma, prioritized, external, seed=3):
    P = capacity // streams
    ring = np.zeros((P * streams, H, W), np.uint8) if external else None
    rb = FrameReplay(capacity, (H, W), stack=stack, n_step=n_step, gamma=gamma,
                     prioritized=prioritized, seed=seed, streams=streams, frames=ring)
    return rb, ring


CASES = [
    # capacity, streams, stack, n_step, gamma, external frames buffer
    (200, 2, 4, 1, 0.99, False),
    (301, 3, 4, 3, 0.9, True),  # two requested slots dropped
    (97, 4, 2, 5, 0.95, True),
    (24, 4, 4, 1, 0.99, False),  # each stream barely larger than stack + n_step
    (90, 5, 1, 1, 0.0, True),
    (160, 8, 3, 2, 1.0, False),
    (120, 1, 4, 3, 0.9, True),  # one stream, written through next_slots too
]


@pytest.mark.parametrize("capacity,streams,stack,n_step,gamma,external", CASES)
@pytest.mark.parametrize("prioritized", [False, True])
def test_interleaved_streams_match_the_reference(capacity, streams, stack, n_step, gamma,
                                                 external, prioritized):
    rng = np.random.default_rng(capacity * 1000 + streams * 100 + stack * 10 + n_step)
    rb, ring = build(capacity, streams, stack, n_step, gamma, prioritized, external)
    P = capacity // streams
    assert rb.capacity == P * streams and rb.stream_capacity == P and rb.streams == streams
    ref = ReferenceStreams(capacity, streams, stack, n_step, gamma)
    drive = Driver(rb, ref, rng, ring)
    checked = 0
    for _ in range(40):  # before full, at full, and through many wraparounds of every stream
        drive.run(int(rng.integers(1, capacity // 2 + 3)))
        assert_counters(rb, ref)
        expected_valid = ref.valid_indices()
        np.testing.assert_array_equal(rb.valid_indices(), expected_valid)
        assert len(rb) == rb.num_valid() == len(expected_valid)
        if not expected_valid:
            continue
        gathered = rb.gather(expected_valid)
        assert_matches(ref, gathered)
        nhwc = rb.gather(expected_valid, channels_last=True)
        np.testing.assert_array_equal(nhwc.obs, gathered.obs)
        np.testing.assert_array_equal(nhwc.next_obs, gathered.next_obs)
        assert_rows_name_the_stacks(rb, gathered, rb.gather(
            expected_valid, rows=(rows := np.empty((len(expected_valid), 2, stack), np.int64)),
        ), rows)
        k, state = min(16, len(expected_valid)), rb.rng_state
        rows = np.full((k, 2, stack), -1, np.int64)
        by_rows = rb.sample(k, beta=0.5, rows=rows)
        rb.rng_state = state  # the same draw again, with frames
        batch = rb.sample(k, beta=0.5)
        assert_matches(ref, batch)
        assert_rows_name_the_stacks(rb, batch, by_rows, rows)
        if prioritized:
            rb.update_priorities(batch.index, rng.uniform(0.05, 5.0, batch.batch_size))
        checked += 1
    assert checked > 20
    assert min(rb.stream_totals) > 3 * P  # every stream wrapped several times


def assert_rows_name_the_stacks(rb: FrameReplay, framed, by_rows, rows: np.ndarray) -> None:
    """A batch drawn with rows= is the framed batch: the same transitions and fields, and the
    ring rows it gives gather the framed batch's stacks (first-frame padding included)."""
    for key in ("index", "weight", "action", "reward", "discount"):
        np.testing.assert_array_equal(getattr(by_rows, key), getattr(framed, key), err_msg=key)
    assert rows.min() >= 0 and rows.max() < rb.capacity
    np.testing.assert_array_equal(rb.ring[rows[:, 0]], framed.obs)
    np.testing.assert_array_equal(rb.ring[rows[:, 1]], framed.next_obs)


def test_rows_leave_the_frames_alone_and_the_ring_is_read_only():
    rb, _ = filled(prioritized=False)
    out = Batch(8, 4, H, W)
    out.obs[:] = 7
    out.next_obs[:] = 9
    rb.sample(8, out=out, rows=np.empty((8, 2, 4), np.int64))
    assert (out.obs == 7).all() and (out.next_obs == 9).all()  # nothing gathered
    ring = rb.ring
    assert ring.shape == (rb.capacity, H, W) and ring.dtype == np.uint8
    with pytest.raises(ValueError, match="read-only"):
        ring[0, 0, 0] = 1


@pytest.mark.parametrize("rows, needle", [
    (np.empty((8, 2, 3), np.int64), r"shape \(batch_size, 2, stack\) = \(8, 2, 4\), got a int64 "
                                     r"array of shape \(8, 2, 3\)"),
    (np.empty((8, 2, 4), np.int32), "got a int32 array"),
    (np.empty((8, 4, 2), np.int64).transpose(0, 2, 1), "C-contiguous int64"),
    ([[0]], "got list"),
])
def test_bad_rows_name_the_expected_array(rows, needle):
    rb, _ = filled(prioritized=True)
    state = rb.rng_state
    with pytest.raises(ValueError, match=needle):
        rb.sample(8, rows=rows)
    with pytest.raises(ValueError, match=needle):
        rb.gather(rb.valid_indices()[:8], rows=rows)
    assert rb.rng_state == state  # refused before drawing


def filled(prioritized: bool, streams: int = 3, capacity: int = 300, seed: int = 0,
           alpha: float = 0.6, weights=None) -> tuple[FrameReplay, ReferenceStreams]:
    """A replay whose streams were written unevenly (by `weights`): some wrapped, some not."""
    rng = np.random.default_rng(seed)
    rb = FrameReplay(capacity, (H, W), stack=4, n_step=3, gamma=0.99, prioritized=prioritized,
                     alpha=alpha, seed=seed, streams=streams)
    ref = ReferenceStreams(capacity, streams, 4, 3, 0.99)
    drive = Driver(rb, ref, rng, mean_len=40, p_abort=0.0)
    weights = np.asarray(weights if weights is not None else [3.0] + [1.0] * (streams - 1))
    for s in rng.choice(streams, size=int(capacity * 1.6), p=weights / weights.sum()):
        drive.step(int(s))
    return rb, ref


UNEVEN = [6.0, 1.5, 1.0]  # stream 0 wraps, streams 1 and 2 hold about 85 and 55 frames


def test_uniform_draws_cover_every_valid_index_of_every_stream_evenly():
    rb, ref = filled(prioritized=False, weights=UNEVEN)
    totals = rb.stream_totals
    assert totals[0] > rb.stream_capacity > totals[1]  # one stream wrapped, the others not
    valid = rb.valid_indices()
    assert {int(i) % 3 for i in valid} == {0, 1, 2}
    draws = 200_000
    observed = uniform_draw_counts(rb, valid, draws)
    # and per stream: each gets its share of the valid transitions
    per_stream = np.bincount(valid % 3, weights=observed, minlength=3)
    share = np.bincount(valid % 3, minlength=3) / len(valid)
    np.testing.assert_allclose(per_stream / draws, share, atol=0.01)


def test_prioritized_draws_follow_priorities_across_streams():
    alpha, beta = 0.7, 0.4
    rb, ref = filled(prioritized=True, alpha=alpha, streams=4, capacity=300,
                     weights=[1, 2, 1, 4])
    valid = rb.valid_indices()
    assert {int(i) % 4 for i in valid} == {0, 1, 2, 3}
    rng = np.random.default_rng(1)
    priorities = rng.uniform(0.01, 10.0, valid.size)
    rb.update_priorities(valid, priorities)
    expected_p = priorities**alpha / (priorities**alpha).sum()
    np.testing.assert_allclose(rb.probabilities(valid), expected_p, rtol=1e-5)

    position = {int(v): k for k, v in enumerate(valid)}
    counts = np.zeros(valid.size)
    draws = 0
    while draws < 300_000:
        b = rb.sample(150, beta=beta)
        k = np.array([position[int(i)] for i in b.index])
        np.add.at(counts, k, 1)
        w = (valid.size * expected_p[k]) ** -beta  # N: valid transitions of all streams
        np.testing.assert_allclose(b.weight, w / w.max(), rtol=1e-4)
        draws += 150
    exp_counts = expected_p * draws
    chi2 = float(((counts - exp_counts) ** 2 / exp_counts).sum())
    df = valid.size - 1
    assert chi2 < df + 5 * math.sqrt(2 * df), f"chi2 {chi2:.1f} for {df} dof"


def test_stale_indices_of_one_stream_are_skipped_and_new_ones_get_the_max_priority():
    rb = FrameReplay(60, (H, W), stack=2, n_step=1, prioritized=True, seed=0, streams=3)
    zero = np.zeros((H, W), np.uint8)
    for s in range(3):
        rb.reset(zero, stream=s)
    for _ in range(15):
        for s in range(3):
            rb.add(0, 0.0, False, False, zero, stream=s)
    old = int(rb.valid_indices()[0])  # stream 0
    assert old % 3 == 0
    rb.update_priorities([old], [40.0])
    assert rb.max_priority == 40.0
    for _ in range(25):  # stream 0 turns over: `old` leaves its sub-ring
        rb.add(0, 0.0, False, False, zero, stream=0)
    assert old // 3 < rb.stream_live_start(0)
    before = rb.probabilities(rb.valid_indices())
    rb.update_priorities([old, -5], [1.0, 1.0])  # left the ring / never valid: ignored
    np.testing.assert_array_equal(rb.probabilities(rb.valid_indices()), before)
    # stream 0's new transitions got the max priority; streams 1 and 2 kept priority 1
    valid = rb.valid_indices()
    newest = int(valid[valid % 3 == 0][-1])
    other = int(valid[valid % 3 == 1][0])
    ratio = rb.probabilities([newest])[0] / rb.probabilities([other])[0]
    assert ratio == pytest.approx(40.0**0.6, rel=1e-5)


def test_next_slots_name_the_rows_frame_slot_views_and_wrap():
    S, P = 3, 8
    ring = np.zeros((S * P, H, W), np.uint8)
    rb = FrameReplay(S * P + 2, (H, W), stack=2, n_step=2, streams=S, frames=ring)
    assert rb.capacity == S * P  # the two slots over S * P are dropped
    out = np.empty((S, 2), np.int64)
    rng = np.random.default_rng(0)
    seen = [[] for _ in range(S)]
    for _ in range(5 * S * P):
        slots = rb.next_slots(out=out)
        assert slots is out
        np.testing.assert_array_equal(slots, rb.next_slots())
        for s in range(S):
            view = rb.frame_slot(stream=s)
            assert np.shares_memory(view, ring)
            assert view.ctypes.data == ring[slots[s, 0]].ctypes.data
            t = rb.stream_totals[s]
            assert slots[s, 0] == s * P + t % P and slots[s, 1] == s * P + (t + 1) % P
        s = int(rng.integers(S))
        expected_next = slots[s, 1]
        seen[s].append(int(slots[s, 0]))
        if rb.stream_totals[s] == 0 or rng.random() < 0.1:
            rb.reset(stream=s)
        else:
            rb.add(0, 0.0, False, False, stream=s)
        assert rb.next_slots()[s, 0] == expected_next  # [s, 1] is the stream's next write
    for s in range(S):  # each stream cycles through its own sub-ring, in order
        rows = np.array(seen[s])
        assert set(rows.tolist()) == set(range(s * P, (s + 1) * P))
        np.testing.assert_array_equal(rows, s * P + np.arange(len(rows)) % P)
    for bad in (np.empty((S, 2), np.int32), np.empty((S + 1, 2), np.int64),
                np.empty((2, S), np.int64).T, [[0, 0]] * S):
        with pytest.raises(ValueError, match=r"out must be a writable C-contiguous int64 array"):
            rb.next_slots(out=bad)


def test_an_external_frames_buffer_is_the_ring_without_a_copy():
    S, P = 2, 10
    shm = shared_memory.SharedMemory(create=True, size=S * P * H * W)
    try:
        ring = np.ndarray((S * P, H, W), np.uint8, buffer=shm.buf)
        ring[:] = 0
        rb = FrameReplay(S * P, (H, W), stack=2, n_step=1, streams=S, frames=ring)
        assert rb.nbytes >= ring.nbytes
        for s in range(S):
            assert np.shares_memory(rb.frame_slot(s), ring)
        # a frame written into the shared ring (as a worker would) is what the replay samples
        rows = rb.next_slots()
        ring[rows[1, 0]] = 7
        rb.reset(stream=1)
        ring[rb.next_slots()[1, 0]] = 8
        rb.add(3, 1.0, True, False, stream=1)
        b = rb.gather([0 * S + 1])
        assert list(b.obs[0, :, 0, 0]) == [7, 7] and list(b.next_obs[0, :, 0, 0]) == [7, 8]
        # a frame given to add() lands in the shared ring too
        rb.reset(np.full((H, W), 9, np.uint8), stream=0)
        assert np.all(ring[0] == 9)
        # once every stream has wrapped, a copy=False snapshot's frames view the ring itself
        rb.reset(np.full((H, W), 5, np.uint8), stream=1)
        for _ in range(P):
            for s in range(S):
                rb.add(0, 0.0, False, False, np.full((H, W), s + 1, np.uint8), stream=s)
        view = rb.state_dict(copy=False)["frames"]
        assert np.shares_memory(view, ring) and not view.flags.writeable
        del b, view, rows
    finally:
        del ring, rb
        shm.close()
        shm.unlink()


@pytest.mark.parametrize("bad,needle", [
    (np.zeros((19, H, W), np.uint8), r"\(20, 6, 6\)"),
    (np.zeros((20, H, W), np.int16), "int16"),
    (np.zeros((20, W, H + 1), np.uint8), r"shape \(20, 6, 7\)"),
    (np.zeros((20, H, 2 * W), np.uint8)[:, :, ::2], "not C-contiguous"),
    ([[0] * W] * H, "list"),
])
def test_a_bad_frames_buffer_names_the_expected_shape(bad, needle):
    with pytest.raises(ValueError, match=needle) as info:
        FrameReplay(21, (H, W), stack=2, n_step=1, streams=2, frames=bad)
    assert "frames must be a writable C-contiguous uint8 array of shape" in str(info.value)
    read_only = np.zeros((20, H, W), np.uint8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        FrameReplay(21, (H, W), stack=2, n_step=1, streams=2, frames=read_only)


# ------------------------------------------------------------------------------ snapshots
def snapshot_pair(prioritized: bool, steps: int, seed: int):
    """Two replays of 3 streams: one driven `steps` events and sampled, one loaded from it."""
    rng = np.random.default_rng(seed)
    a = FrameReplay(90, (H, W), stack=4, n_step=3, gamma=0.9, prioritized=prioritized,
                    seed=seed, streams=3)
    ref = ReferenceStreams(90, 3, 4, 3, 0.9)
    drive = Driver(a, ref, rng)
    drive.run(steps)
    for _ in range(3):
        b = a.sample(8, beta=0.5)
        if prioritized:
            a.update_priorities(b.index, 10.0 ** rng.uniform(-12, 12, 8))
    state = a.state_dict()
    c = FrameReplay(90, (H, W), stack=4, n_step=3, gamma=0.9, prioritized=prioritized,
                    seed=seed + 100, streams=3)
    Driver(c, ReferenceStreams(90, 3, 4, 3, 0.9), np.random.default_rng(seed + 1)).run(40)
    c.load_state_dict(state)
    return a, c, state, ref


def assert_same_replay(a: FrameReplay, b: FrameReplay) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert a.stream_totals == b.stream_totals and a.num_valid() == b.num_valid()
    np.testing.assert_array_equal(a.valid_indices(), b.valid_indices())
    for s in range(a.streams):
        if a.stream_totals[s]:
            np.testing.assert_array_equal(a.current_stack(stream=s), b.current_stack(stream=s))
    if a.prioritized and a.num_valid():
        np.testing.assert_array_equal(a.probabilities(a.valid_indices()),
                                      b.probabilities(b.valid_indices()))


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("steps", [25, 100, 400])  # none, some and all streams wrapped
def test_snapshot_with_three_streams_continues_exactly(prioritized, steps):
    a, b, state, ref = snapshot_pair(prioritized, steps, seed=steps)
    P = 30
    totals = np.array(a.stream_totals)
    assert state["version"] == 2 and state["streams"] == 3 and state["capacity"] == 90
    np.testing.assert_array_equal(state["total"], totals)
    for key in ("total", "live_transitions", "episode_open", "episode_transitions"):
        assert state[key].shape == (3,), key
    # only the rows written so far: each stream's prefix
    assert state["frames"].shape == (int(np.minimum(totals, P).sum()), H, W)
    assert_same_replay(a, b)
    rng = np.random.default_rng(5)
    for _ in range(6):
        for _ in range(4):
            x, y = a.sample(8, beta=0.5), b.sample(8, beta=0.5)
            for k in ("obs", "next_obs", "action", "reward", "discount", "index", "weight"):
                np.testing.assert_array_equal(getattr(x, k), getattr(y, k), err_msg=k)
            assert_matches(ref, x)
            if prioritized:
                pr = 10.0 ** rng.uniform(-12, 12, 8)
                a.update_priorities(x.index, pr)
                b.update_priorities(y.index, pr)
        for _ in range(17):
            same_event(a, b, ref, int(rng.integers(3)), rng)
    assert_same_replay(a, b)


def same_event(a, b, ref: ReferenceStreams, s: int, rng: np.random.Generator) -> None:
    """One random event for stream s, given to both replays (and to the reference)."""
    r = ref[s]
    f = encoded_frame(s, r.total, rng)
    if r.total == 0 or r.episodes[-1].end != "open":
        a.reset(f, stream=s)
        b.reset(f, stream=s)
        r.reset(f)
        return
    done = rng.random() < 0.1
    a.add(1, 0.5, done, False, f, stream=s)
    b.add(1, 0.5, done, False, f, stream=s)
    r.add(1, 0.5, done, False, f)


def test_snapshot_frames_follow_the_streams_and_refuse_wrong_counts():
    a, b, state, _ = snapshot_pair(False, 60, seed=2)
    totals = state["total"]
    bad = dict(state, total=totals + np.array([0, 1, 0]))
    with pytest.raises(ValueError, match=r"'frames'.*sum over streams of min\(total\[s\]"):
        b.load_state_dict(bad)
    flags = state["flags"].copy()
    s = int(np.argmin(totals))
    flags[s * 30 + int(totals[s])] = 1  # a slot of stream s it never wrote
    with pytest.raises(ValueError, match=rf"'flags'.*\(stream {s}\).*never written"):
        b.load_state_dict(dict(state, flags=flags))
    live = state["live_transitions"].copy()
    live[1] += 1
    with pytest.raises(ValueError, match="live_transitions"):
        b.load_state_dict(dict(state, live_transitions=live))
    with pytest.raises(ValueError, match=r"'total'.*\(streams,\)"):
        b.load_state_dict(dict(state, total=totals[:2]))
    assert_same_replay(a, b)  # nothing written by the refused loads


def v1_state(state: dict) -> dict:
    """A version 1 snapshot (the layout before streams) of a single-stream replay's state."""
    assert int(state["streams"]) == 1
    old = {k: v for k, v in state.items() if k != "streams"}
    old["version"] = np.asarray(1, np.int64)
    for key in ("total", "live_transitions", "episode_open", "episode_transitions"):
        old[key] = np.asarray(state[key][0])
        assert old[key].shape == ()
    return old


@pytest.mark.parametrize("prioritized", [False, True])
def test_a_version_1_snapshot_still_loads_into_one_stream(prioritized):
    rng = np.random.default_rng(9)
    a = FrameReplay(64, (H, W), stack=4, n_step=3, gamma=0.9, prioritized=prioritized, seed=1)
    drive_one_stream(a, ReferenceReplay(64, 4, 3, 0.9), 150, rng)
    for _ in range(3):
        x = a.sample(8)
        if prioritized:
            a.update_priorities(x.index, rng.uniform(0.1, 9.0, 8))
    old = v1_state(a.state_dict())
    b = FrameReplay(64, (H, W), stack=4, n_step=3, gamma=0.9, prioritized=prioritized, seed=7)
    b.load_state_dict(old)
    assert_same_replay(a, b)
    for _ in range(5):
        x, y = a.sample(16), b.sample(16)
        for k in ("obs", "next_obs", "index", "weight", "reward"):
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k), err_msg=k)

    many = FrameReplay(64, (H, W), stack=4, n_step=3, gamma=0.9, prioritized=prioritized,
                       streams=2)
    with pytest.raises(ValueError, match=r"'version'.*streams=1.*streams=2"):
        many.load_state_dict(old)
    with pytest.raises(ValueError, match=r"'total'.*0-d"):
        b.load_state_dict(dict(old, total=np.asarray([a.total], np.int64)))
    with pytest.raises(ValueError, match="unexpected key.*'streams'"):
        b.load_state_dict(dict(old, streams=np.asarray(1, np.int64)))
    assert_same_replay(a, b)


# ------------------------------------------------------------------------------ draw_valid
def test_draw_valid_gives_distinct_valid_indices_reproducibly_without_touching_the_sampler():
    rb, _ = filled(prioritized=True, streams=3)
    valid = rb.valid_indices()
    n_valid = len(valid)
    before = rb.rng_state
    for n in (1, 7, 40, n_valid // 2, n_valid // 2 + 1, n_valid - 1, n_valid, n_valid + 50):
        got = rb.draw_valid(n, seed=n)
        assert got.dtype == np.int64 and got.shape == (min(n, n_valid),)
        assert np.all(np.diff(got) > 0)  # sorted, distinct
        assert np.isin(got, valid).all()
        np.testing.assert_array_equal(got, rb.draw_valid(n, seed=n))
    np.testing.assert_array_equal(rb.draw_valid(n_valid + 1, seed=0), valid)
    assert rb.draw_valid(0, seed=0).shape == (0,)
    assert not np.array_equal(rb.draw_valid(20, seed=1), rb.draw_valid(20, seed=2))
    assert rb.rng_state == before  # the sampler's generator is untouched
    empty = FrameReplay(40, (H, W), stack=2, n_step=1, streams=2)
    assert empty.draw_valid(5, seed=0).shape == (0,)
    for bad in (-1, 2.5, "3", None):
        with pytest.raises(ValueError, match="n must be an int >= 0"):
            rb.draw_valid(bad, seed=0)
    for bad in (-1, 2**64, 1.5):
        with pytest.raises(ValueError, match="seed"):
            rb.draw_valid(3, seed=bad)


@pytest.mark.parametrize("n", [5, 150])  # the rejection path, and the enumerating one
def test_draw_valid_covers_valid_indices_uniformly(n):
    rb, _ = filled(prioritized=False, streams=3, weights=UNEVEN)
    valid = rb.valid_indices()
    assert (2 * n > len(valid)) == (n == 150)
    position = {int(v): k for k, v in enumerate(valid)}
    counts = np.zeros(len(valid))
    rounds = 60_000 // n
    for seed in range(rounds):
        for i in rb.draw_valid(n, seed=seed):
            counts[position[int(i)]] += 1
    expected = rounds * n / len(valid)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = len(valid) - 1
    # Without replacement the counts vary less than multinomial ones: the bound still holds.
    assert chi2 < df + 5 * math.sqrt(2 * df), f"chi2 {chi2:.1f} for {df} dof"


# ------------------------------------------------------------------------------ Batch buffers
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_batch_writes_into_caller_owned_buffers(channels_last):
    rb, ref = filled(prioritized=True, streams=3)
    B, frames = 8, ((8, H, W, 4) if channels_last else (8, 4, H, W))
    buffers = {"obs": np.zeros(frames, np.uint8), "next_obs": np.zeros(frames, np.uint8),
               "action": np.zeros(B, np.int64), "reward": np.zeros(B, np.float32),
               "discount": np.zeros(B, np.float32), "index": np.zeros(B, np.int64),
               "weight": np.zeros(B, np.float32)}
    out = Batch(B, 4, H, W, channels_last=channels_last, buffers=buffers)
    assert rb.sample(B, out=out) is out
    for key in ("action", "reward", "discount", "index", "weight"):
        assert getattr(out, key) is buffers[key]
    for key in ("obs", "next_obs"):
        view = getattr(out, key)
        assert view.shape == (B, 4, H, W) and view.ctypes.data == buffers[key].ctypes.data
        if channels_last:
            np.testing.assert_array_equal(view, buffers[key].transpose(0, 3, 1, 2))
        else:
            assert view is buffers[key]
    assert_matches(ref, out)
    assert np.any(buffers["obs"]) and np.any(buffers["weight"])
    # a subset: the rest is allocated
    part = Batch(B, 4, H, W, channels_last=channels_last, buffers={"index": buffers["index"]})
    assert part.index is buffers["index"] and part.action is not buffers["action"]


@pytest.mark.parametrize("key,value,needle", [
    ("obs", np.zeros((8, 4, H, W + 1), np.uint8), r"shape \(8, 4, 6, 7\)"),
    ("next_obs", np.zeros((8, 4, H, W), np.int8), "int8"),
    ("obs", np.zeros((8, H, W, 4), np.uint8), r"shape \(8, 6, 6, 4\)"),  # the other layout
    ("action", np.zeros(8, np.int32), "int32"),
    ("reward", np.zeros(9, np.float32), r"\(9,\)"),
    ("discount", np.zeros(16, np.float32)[::2], "not C-contiguous"),
    ("index", [0] * 8, "list"),
    ("weight", np.zeros(8, np.float64), "float64"),
])
def test_bad_batch_buffers_name_the_key_what_was_given_and_what_was_expected(key, value, needle):
    with pytest.raises(ValueError, match=needle) as info:
        Batch(8, 4, H, W, buffers={key: value})
    assert f"buffers['{key}'] must be a writable C-contiguous" in str(info.value)
    read_only = np.zeros(8, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"buffers\['weight'\].*read-only"):
        Batch(8, 4, H, W, buffers={"weight": read_only})
    with pytest.raises(ValueError, match="unknown key 'obs_next'"):
        Batch(8, 4, H, W, buffers={"obs_next": np.zeros((8, 4, H, W), np.uint8)})
    with pytest.raises(ValueError, match="buffers must be a dict"):
        Batch(8, 4, H, W, buffers=[np.zeros(8)])
    with pytest.raises(ValueError, match=r"\(8, 6, 6, 4\) \(B, H, W, stack\) for channels_last"):
        Batch(8, 4, H, W, channels_last=True, buffers={"obs": np.zeros((8, 4, H, W), np.uint8)})


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("streams", [0, -2, 1.5, "2", True, None])
def test_bad_streams_name_the_parameter(streams):
    with pytest.raises(ValueError, match="streams must be an int >= 1"):
        FrameReplay(100, (H, W), streams=streams)


def test_a_capacity_too_small_for_the_streams_names_the_minimum():
    with pytest.raises(ValueError, match=r"capacity must be at least streams \* \(stack \+ n_step"
                                         r" \+ 1\) = 4 \* 8 = 32.*got capacity=31 with streams=4"):
        FrameReplay(31, (H, W), stack=4, n_step=3, streams=4)
    rb = FrameReplay(32, (H, W), stack=4, n_step=3, streams=4)
    assert rb.stream_capacity == 8 and rb.capacity == 32
    odd = FrameReplay(103, (H, W), stack=4, n_step=3, streams=4)
    assert odd.capacity == 100 and odd.stream_capacity == 25
    assert odd.bytes_per_transition == odd.nbytes / 100
    assert "streams=4" in repr(odd) and "streams" not in repr(FrameReplay(100, (H, W)))


def test_bad_stream_indices_name_the_range_and_change_nothing():
    rb = FrameReplay(60, (H, W), stack=2, n_step=1, streams=3)
    f = np.zeros((H, W), np.uint8)
    rb.reset(f, stream=2)
    rb.add(0, 1.0, False, False, f, stream=2)
    before = rb.state_dict()
    calls = [
        lambda s: rb.frame_slot(stream=s),
        lambda s: rb.reset(f, stream=s),
        lambda s: rb.add(0, 0.0, False, False, f, stream=s),
        lambda s: rb.current_stack(stream=s),
        lambda s: rb.stream_live_start(s),
    ]
    for bad in (-1, 3, 2**70, 1.0, "1", None, True):
        for call in calls:
            with pytest.raises(ValueError, match=r"stream must be an int in \[0, 2\]") as info:
                call(bad)
            assert repr(bad) in str(info.value)
    for key, value in before.items():
        np.testing.assert_array_equal(rb.state_dict()[key], value, err_msg=key)
    assert rb.stream_live_start(np.int64(2)) == 0  # numpy ints are fine
    with pytest.raises(ValueError, match="open episode of stream 1"):
        rb.add(0, 0.0, False, False, f, stream=1)
    with pytest.raises(ValueError, match="needs a frame of stream 0"):
        rb.current_stack(stream=0)


def test_gather_names_the_stream_of_an_invalid_index():
    rb, _ = filled(prioritized=False, streams=3)
    top = rb.stream_totals[1] - 1  # stream 1's newest frame: no transition yet
    with pytest.raises(ValueError, match=rf"index {top * 3 + 1} is not a valid transition now "
                                         rf"\(stream 1, logical index {top};"):
        rb.gather([top * 3 + 1])
    with pytest.raises(ValueError, match="index -3 is not a valid transition"):
        rb.gather([-3])
