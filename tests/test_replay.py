"""The native frame-ring replay against the plain reference, plus sampling statistics and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agent.native import Batch, FrameReplay
from tests.reference_replay import ReferenceReplay

H = W = 6  # small frames keep the randomized streams fast; the kernel does not care about size


def encoded_frame(index: int, rng: np.random.Generator) -> np.ndarray:
    """A frame whose first two bytes spell its logical index, the rest random."""
    f = rng.integers(0, 256, (H, W), dtype=np.uint8)
    f[0, 0], f[0, 1] = index % 256, (index // 256) % 256
    return f


def drive(rb: FrameReplay, ref: ReferenceReplay, steps: int, rng: np.random.Generator,
          mean_len: float = 12.0, p_trunc: float = 0.3, p_abort: float = 0.05) -> None:
    """Feed both replays the same random stream of episodes."""
    if ref.total == 0 or ref.episodes[-1].end != "open":
        f = encoded_frame(ref.total, rng)
        rb.reset(f)
        ref.reset(f)
    for _ in range(steps):
        if rng.random() < p_abort:  # a reset in the middle of an episode (or twice in a row)
            f = encoded_frame(ref.total, rng)
            rb.reset(f)
            ref.reset(f)
            continue
        done = rng.random() < 1.0 / mean_len
        truncated = done and rng.random() < p_trunc
        terminated = done and not truncated
        action = int(rng.integers(0, 18))
        reward = float(rng.choice([-1.0, 0.0, 0.0, 1.0, 0.5]))
        f = encoded_frame(ref.total, rng)
        if rng.random() < 0.5:
            rb.add(action, reward, terminated, truncated, f)
        else:  # the in-place path: write into the slot, then record
            rb.frame_slot()[:] = f
            rb.add(action, reward, terminated, truncated, None)
        ref.add(action, reward, terminated, truncated, f)
        if done:
            f = encoded_frame(ref.total, rng)
            rb.reset(f)
            ref.reset(f)


def assert_matches(ref, batch: Batch) -> None:
    """Every transition of `batch` is what the reference (`expected(index)`) says it holds."""
    for i, index in enumerate(batch.index):
        exp = ref.expected(int(index))
        assert exp is not None, f"sampled invalid index {index}"
        np.testing.assert_array_equal(batch.obs[i], exp.obs, err_msg=f"obs of {index}")
        np.testing.assert_array_equal(batch.next_obs[i], exp.next_obs, err_msg=f"next of {index}")
        assert batch.action[i] == exp.action
        assert batch.reward[i] == pytest.approx(exp.reward, rel=1e-6, abs=1e-6)
        assert batch.discount[i] == pytest.approx(exp.discount, rel=1e-6, abs=1e-7)


def assert_same_batch(nhwc: Batch, nchw: Batch) -> None:
    """A channels_last batch holds exactly what the (B, stack, H, W) batch holds."""
    assert nhwc.channels_last and not nchw.channels_last
    for name in ("obs", "next_obs", "action", "reward", "discount", "index", "weight"):
        a, b = getattr(nhwc, name), getattr(nchw, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


CASES = [
    # capacity, stack, n_step, gamma
    (200, 4, 1, 0.99),
    (200, 4, 3, 0.9),
    (97, 4, 5, 0.95),
    (6, 4, 1, 0.99),  # capacity barely larger than stack + n
    (9, 4, 4, 0.5),
    (64, 1, 1, 0.0),
    (50, 2, 10, 1.0),
]


@pytest.mark.parametrize("capacity,stack,n_step,gamma", CASES)
@pytest.mark.parametrize("prioritized", [False, True])
def test_matches_reference_on_long_streams(capacity, stack, n_step, gamma, prioritized):
    rng = np.random.default_rng(capacity * 100 + stack * 10 + n_step)
    rb = FrameReplay(capacity, (H, W), stack=stack, n_step=n_step, gamma=gamma,
                     prioritized=prioritized, seed=3)
    ref = ReferenceReplay(capacity, stack, n_step, gamma)
    checked = 0
    for _ in range(40):  # before full, at full, and through many wraparounds
        drive(rb, ref, steps=int(rng.integers(1, capacity // 2 + 3)), rng=rng)
        expected_valid = ref.valid_indices()
        np.testing.assert_array_equal(rb.valid_indices(), expected_valid)
        assert len(rb) == len(expected_valid)
        if not expected_valid:
            continue
        # every valid index, gathered explicitly, in both layouts
        gathered = rb.gather(expected_valid)
        assert_matches(ref, gathered)
        assert_same_batch(rb.gather(expected_valid, channels_last=True), gathered)
        # and what the sampler draws (the same draw again, channels_last)
        state = rb.rng_state
        batch = rb.sample(min(16, len(expected_valid)), beta=0.5)
        assert_matches(ref, batch)
        after = rb.rng_state
        rb.rng_state = state
        assert_same_batch(rb.sample(batch.batch_size, beta=0.5, channels_last=True), batch)
        assert rb.rng_state == after
        if prioritized:
            rb.update_priorities(batch.index, rng.uniform(0.05, 5.0, batch.batch_size))
        checked += 1
    assert checked > 20


def test_window_never_reads_the_slot_being_written():
    rng = np.random.default_rng(0)
    rb = FrameReplay(8, (H, W), stack=4, n_step=2, gamma=0.9, seed=0)
    ref = ReferenceReplay(8, 4, 2, 0.9)
    drive(rb, ref, 50, rng, mean_len=1000)
    # Scribble over the slot handed out for the next write: no valid sample may see it.
    rb.frame_slot()[:] = 0xAB
    batch = rb.gather(rb.valid_indices())
    assert not np.any(np.all(batch.obs == 0xAB, axis=(2, 3)))
    assert not np.any(np.all(batch.next_obs == 0xAB, axis=(2, 3)))
    assert_matches(ref, batch)


def test_terminated_and_truncated_semantics():
    rb = FrameReplay(100, (H, W), stack=2, n_step=3, gamma=0.5, seed=0)
    frames = [np.full((H, W), i, np.uint8) for i in range(20)]
    # episode A: 0 -> 1 -> 2 -> 3 terminated; episode B: 4 -> 5 -> 6 truncated; C open
    rb.reset(frames[0])
    rb.add(0, 1.0, False, False, frames[1])
    rb.add(1, 1.0, False, False, frames[2])
    rb.add(2, 1.0, True, False, frames[3])
    rb.reset(frames[4])
    rb.add(3, 2.0, False, False, frames[5])
    rb.add(0, 2.0, False, True, frames[6])
    rb.reset(frames[7])
    rb.add(1, 4.0, False, False, frames[8])
    assert list(rb.valid_indices()) == [0, 1, 2, 4, 5]  # 7: window of 3 not complete yet
    b = rb.gather([1, 2, 4, 5])
    # 1: two steps to the terminal, no bootstrap
    assert b.reward[0] == pytest.approx(1 + 0.5) and b.discount[0] == 0.0
    # 2: the terminal step itself
    assert b.reward[1] == pytest.approx(1.0) and b.discount[1] == 0.0
    # 4: truncated after two steps: bootstraps from the last observation (frame 6) with gamma^2
    assert b.reward[2] == pytest.approx(2 + 1) and b.discount[2] == pytest.approx(0.25)
    assert b.next_obs[2, -1, 0, 0] == 6 and b.next_obs[2, 0, 0, 0] == 5
    # 5: truncated step: bootstraps from frame 6 with gamma
    assert b.discount[3] == pytest.approx(0.5)
    # first-frame padding: the stack of index 4 repeats the episode's first frame
    assert list(b.obs[2, :, 0, 0]) == [4, 4]


def test_current_stack_pads_with_first_frame_and_follows_the_newest_frame():
    rb = FrameReplay(50, (H, W), stack=4, n_step=1, gamma=0.9)
    rb.reset(np.full((H, W), 7, np.uint8))
    assert list(rb.current_stack()[:, 0, 0]) == [7, 7, 7, 7]
    rb.add(0, 0.0, False, False, np.full((H, W), 8, np.uint8))
    assert list(rb.current_stack()[:, 0, 0]) == [7, 7, 7, 8]
    rb.add(0, 0.0, True, False, np.full((H, W), 9, np.uint8))
    rb.reset(np.full((H, W), 1, np.uint8))
    assert list(rb.current_stack()[:, 0, 0]) == [1, 1, 1, 1]


def filled(prioritized: bool, seed: int = 0, capacity: int = 300, steps: int = 1000,
           alpha: float = 0.6) -> FrameReplay:
    rng = np.random.default_rng(seed)
    rb = FrameReplay(capacity, (H, W), stack=4, n_step=3, gamma=0.99, prioritized=prioritized,
                     alpha=alpha, seed=seed)
    drive(rb, ReferenceReplay(capacity, 4, 3, 0.99), steps, rng, mean_len=40, p_abort=0.0)
    return rb


def uniform_draw_counts(rb: FrameReplay, valid: np.ndarray, draws: int = 200_000) -> np.ndarray:
    """How often each of `valid` was drawn in `draws` uniform draws; asserts that they are
    spread evenly (chi-square within 5 standard deviations of its mean) and never invalid."""
    counts = dict.fromkeys(valid.tolist(), 0)
    for _ in range(draws // 200):
        for i in rb.sample(200).index:
            counts[int(i)] += 1  # KeyError would mean an invalid index was drawn
    observed = np.array(list(counts.values()), dtype=float)
    expected = draws / len(valid)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    df = len(valid) - 1
    assert chi2 < df + 5 * math.sqrt(2 * df), f"chi2 {chi2:.1f} for {df} dof"
    return observed


def test_uniform_draws_cover_valid_indices_evenly():
    rb = filled(prioritized=False)
    uniform_draw_counts(rb, rb.valid_indices())


def test_prioritized_draws_follow_priorities_and_weights_are_normalised():
    alpha = 0.7
    rb = filled(prioritized=True, alpha=alpha)
    valid = rb.valid_indices()
    rng = np.random.default_rng(1)
    priorities = rng.uniform(0.01, 10.0, valid.size)
    rb.update_priorities(valid, priorities)
    expected_p = priorities**alpha / (priorities**alpha).sum()
    np.testing.assert_allclose(rb.probabilities(valid), expected_p, rtol=1e-5)

    position = {int(v): k for k, v in enumerate(valid)}
    counts = np.zeros(valid.size)
    draws = 0
    beta = 0.4
    while draws < 300_000:
        b = rb.sample(250, beta=beta)
        k = np.array([position[int(i)] for i in b.index])
        np.add.at(counts, k, 1)
        # importance weights: (N P(i))^-beta over the batch's largest
        w = (valid.size * expected_p[k]) ** -beta
        np.testing.assert_allclose(b.weight, w / w.max(), rtol=1e-4)
        draws += 250
    exp_counts = expected_p * draws
    chi2 = float(((counts - exp_counts) ** 2 / exp_counts).sum())
    df = valid.size - 1
    assert chi2 < df + 5 * math.sqrt(2 * df), f"chi2 {chi2:.1f} for {df} dof"


def test_new_transitions_get_the_max_priority_and_stale_indices_are_skipped():
    rb = filled(prioritized=True, capacity=100, steps=300)
    valid = rb.valid_indices()
    rb.update_priorities(valid[:1], [50.0])
    assert rb.max_priority == 50.0
    old = int(rb.live_start)
    rb.reset(np.zeros((H, W), np.uint8))
    for _ in range(150):  # the ring turns over: `old` leaves it
        rb.add(0, 0.0, False, False, np.zeros((H, W), np.uint8))
    newest = rb.valid_indices()[-1]
    p = rb.probabilities([newest])[0]
    assert p == pytest.approx(50.0**0.6 / np.sum([50.0**0.6] * len(rb)), rel=1e-5)
    rb.update_priorities([old], [1.0])  # left the ring: ignored, no error
    assert old < rb.live_start


def test_sampling_is_reproducible_for_a_seed_and_rng_state_round_trips():
    a, b = filled(False, seed=5), filled(False, seed=5)
    for _ in range(5):
        np.testing.assert_array_equal(a.sample(32).index, b.sample(32).index)
    state = a.rng_state
    first = a.sample(32).index
    a.rng_state = state
    np.testing.assert_array_equal(a.sample(32).index, first)
    c = filled(False, seed=6)
    assert not np.array_equal(c.sample(32).index, filled(False, seed=5).sample(32).index)


def test_batch_arrays_are_ready_for_torch_without_a_copy():
    rb = filled(prioritized=True)
    out = Batch(32, 4, H, W)
    b = rb.sample(32, out=out)
    assert b is out
    for name, dtype in [("obs", np.uint8), ("next_obs", np.uint8), ("action", np.int64),
                        ("reward", np.float32), ("discount", np.float32), ("weight", np.float32),
                        ("index", np.int64)]:
        arr = getattr(b, name)
        assert arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.owndata
        assert torch.from_numpy(arr).data_ptr() == arr.ctypes.data
    assert b.obs.shape == (32, 4, H, W)


def test_channels_last_batch_is_a_view_of_owned_nhwc_bytes_that_torch_takes_as_is():
    rb = filled(prioritized=True)
    out = Batch(32, 4, H, W, channels_last=True)
    assert out.channels_last and not Batch(32, 4, H, W).channels_last
    with pytest.raises(AttributeError):
        out.channels_last = False  # readonly
    assert "channels_last" in repr(out)
    b = rb.sample(32, out=out)
    assert b is out
    for arr in (b.obs, b.next_obs):
        assert arr.shape == (32, 4, H, W) and arr.dtype == np.uint8
        assert not arr.flags.c_contiguous
        base = arr.base
        assert base.shape == (32, H, W, 4) and base.flags.c_contiguous and base.flags.owndata
        np.testing.assert_array_equal(arr, base.transpose(0, 3, 1, 2))
        t = torch.from_numpy(arr)
        assert t.shape == (32, 4, H, W) and t.data_ptr() == arr.ctypes.data
        assert t.is_contiguous(memory_format=torch.channels_last)
        assert t.contiguous(memory_format=torch.channels_last) is t  # a permute would copy
    for name in ("action", "reward", "discount", "weight", "index"):
        arr = getattr(b, name)
        assert arr.flags.c_contiguous and arr.flags.owndata


@pytest.mark.parametrize("frame_shape", [(84, 84), (5, 5), (7, 5), (1, 3)])
@pytest.mark.parametrize("stack", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("prioritized", [False, True])
def test_channels_last_batches_hold_the_same_values(frame_shape, stack, prioritized):
    """Every layout path (stack 4 and 2 vectorised, 1 a copy, others strided) and frame size
    (vector loop, its epilogue and the scalar tail) gives the (B, stack, H, W) batch's values:
    first-frame padding, n-step windows across episode ends and the ring's wrap included."""
    h, w = frame_shape
    n_step, capacity = 3, 40
    rng = np.random.default_rng(stack * 7 + h)
    rb = FrameReplay(capacity, frame_shape, stack=stack, n_step=n_step, gamma=0.9,
                     prioritized=prioritized, seed=11)
    rb.reset(rng.integers(0, 256, frame_shape, dtype=np.uint8))
    checked = 0
    for step in range(3 * capacity):  # wraps the ring twice
        done = rng.random() < 0.12
        rb.add(int(rng.integers(4)), float(rng.integers(-1, 2)), done, False,
               rng.integers(0, 256, frame_shape, dtype=np.uint8))
        if done:
            rb.reset(rng.integers(0, 256, frame_shape, dtype=np.uint8))
        if step % 10 != 9 or len(rb) < 8:
            continue
        valid = rb.valid_indices()
        assert_same_batch(rb.gather(valid, channels_last=True), rb.gather(valid))
        state = rb.rng_state
        nchw = rb.sample(8, beta=0.5)
        rb.rng_state = state
        assert_same_batch(rb.sample(8, beta=0.5, channels_last=True), nchw)
        if prioritized:
            rb.update_priorities(nchw.index, rng.uniform(0.1, 3.0, 8))
        checked += 1
    assert checked >= 8
    # an episode's first transition: its stack is the first frame stack times (the padding)
    first = rng.integers(0, 256, frame_shape, dtype=np.uint8)
    rb.reset(first)
    start = rb.total - 1
    for _ in range(n_step):
        rb.add(0, 0.0, False, False, rng.integers(0, 256, frame_shape, dtype=np.uint8))
    nhwc = rb.gather([start], channels_last=True)
    for j in range(stack):
        np.testing.assert_array_equal(nhwc.obs[0, j], first)
    assert_same_batch(nhwc, rb.gather([start]))


def test_an_out_batch_keeps_its_own_layout():
    rb = filled(prioritized=False)
    idx = rb.valid_indices()[:5]
    nhwc, nchw = Batch(5, 4, H, W, channels_last=True), Batch(5, 4, H, W)
    assert rb.gather(idx, out=nhwc, channels_last=False) is nhwc
    assert rb.gather(idx, out=nchw, channels_last=True) is nchw
    assert nhwc.channels_last and nchw.obs.flags.c_contiguous
    assert_same_batch(nhwc, nchw)
    assert rb.sample(5, out=nhwc) is nhwc and nhwc.channels_last
    assert rb.sample(5, out=nchw, channels_last=True) is nchw and not nchw.channels_last
    assert rb.sample(5, channels_last=True).channels_last
    assert not rb.sample(5).channels_last


def test_channels_last_sampling_leaves_the_snapshot_unchanged():
    a, b = filled(True, seed=4), filled(True, seed=4)
    for _ in range(3):
        x, y = a.sample(16), b.sample(16, channels_last=True)
        a.update_priorities(x.index, np.arange(1, 17.0))
        b.update_priorities(y.index, np.arange(1, 17.0))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def test_memory_per_transition_at_84x84():
    for prioritized in (False, True):
        for capacity in (100_000, 1_000_000):
            rb = FrameReplay(capacity, (84, 84), prioritized=prioritized)
            per = rb.bytes_per_transition
            assert per <= 7_100, (prioritized, capacity, per)


# ---------------------------------------------------------------- bad input
def make(**kw):
    args = dict(capacity=100, frame_shape=(H, W), stack=4, n_step=1, gamma=0.99)
    args.update(kw)
    return FrameReplay(**args)


@pytest.mark.parametrize("kw,needle", [
    (dict(capacity=3), "capacity"),
    (dict(capacity=5, stack=4, n_step=1), "capacity"),
    (dict(capacity="lots"), "capacity"),
    (dict(n_step=0), "n_step"),
    (dict(stack=0), "stack"),
    (dict(gamma=1.5), "gamma"),
    (dict(gamma=-0.1), "gamma"),
    (dict(gamma=float("nan")), "gamma"),
    (dict(frame_shape=(0, 4)), "frame_shape"),
    (dict(frame_shape="84x84"), "frame_shape"),
    (dict(prioritized=True, alpha=-1.0), "alpha"),
    (dict(seed=-1), "seed"),
])
def test_bad_construction_names_the_parameter(kw, needle):
    with pytest.raises(ValueError, match=needle):
        make(**kw)


def test_bad_writes_name_the_problem_and_change_nothing():
    rb = make()
    good = np.zeros((H, W), np.uint8)
    with pytest.raises(ValueError, match="reset"):
        rb.add(0, 0.0, False, False, good)
    rb.reset(good)
    for frame, needle in [(np.zeros((H, W), np.float32), "uint8"),
                          (np.zeros((H + 1, W), np.uint8), "shape"),
                          ([[0] * W] * H, "uint8 array")]:
        with pytest.raises(ValueError, match=needle):
            rb.add(0, 0.0, False, False, frame)
    with pytest.raises(ValueError, match="action"):
        rb.add(256, 0.0, False, False, good)
    with pytest.raises(ValueError, match="action"):
        rb.add(-1, 0.0, False, False, good)
    for r in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reward"):
            rb.add(0, r, False, False, good)
    assert rb.total == 1  # none of the rejected steps was recorded


def test_bad_sampling_arguments():
    rb = filled(prioritized=True, capacity=50, steps=20)
    n = len(rb)
    with pytest.raises(ValueError, match=f"batch_size {n + 1} is larger than the {n} valid"):
        rb.sample(n + 1)
    with pytest.raises(ValueError, match="batch_size"):
        rb.sample(0)
    with pytest.raises(ValueError, match="beta"):
        rb.sample(1, beta=2.0)
    with pytest.raises(ValueError, match="out must be a Batch of batch_size 2 with obs"):
        rb.sample(2, out=Batch(3, 4, H, W))
    idx = rb.sample(2).index
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="priorities must be finite and > 0"):
            rb.update_priorities(idx, [1.0, bad])
    with pytest.raises(ValueError, match="equally long"):
        rb.update_priorities(idx, [1.0])
    with pytest.raises(ValueError, match="not a valid transition"):
        rb.gather([rb.total + 5])
    with pytest.raises(ValueError, match="prioritized=True"):
        make().update_priorities([0], [1.0])


def test_empty_replay_refuses_to_sample():
    rb = make()
    with pytest.raises(ValueError, match="larger than the 0 valid"):
        rb.sample(1)
    with pytest.raises(ValueError, match="reset"):
        rb.current_stack()


def test_gather_and_sample_reject_an_out_batch_of_another_shape():
    rb = filled(prioritized=False, capacity=100, steps=200)
    idx = rb.valid_indices()[:1]
    message = "out must be a Batch of batch_size 1 with obs of shape"
    for bad in (Batch(1, 1, 4, 4), Batch(1, 4, H + 1, W), Batch(2, 4, H, W),
                Batch(1, 4, H + 1, W, channels_last=True), Batch(1, 3, H, W, channels_last=True)):
        with pytest.raises(ValueError, match=message):
            rb.gather(idx, out=bad)
        with pytest.raises(ValueError, match=message):
            rb.sample(1, out=bad)
