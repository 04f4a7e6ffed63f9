"""The worker pool's replay-ring mode, env factories and snapshots, and the shared memory under
them (agent/shm.py).

Ring mode is checked against serial envs stepped with the same seeds and actions, their frames
written with ``out=`` into a copy of the ring: after every step the whole ring must equal the
copy, so a frame in the wrong row, a reset frame written when no episode ended, or any other row
touched shows. Both ways of waiting (doorbell words and pipes alone, by switching
`agent.wire.DOORBELL` off) and both layouts (env 0 in this process, every env in a worker) are
covered."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time

import numpy as np
import pytest

import agent.wire
from agent.config import EnvConfig
from agent.env import AtariEnv
from agent.native import PoolBlock
from agent.shm import SharedArray
from agent.workers import VecEnv, WorkerError, WorkerValueError
from tests.procs import closing_pools, wait_gone
from tests.toygame import LENGTH, FireGame, make_fire_game

SHORT = 400  # emulator frames: an episode is truncated after about 100 agent steps
TOY = EnvConfig(frame_shape=(36, 36), stack=2)
SENTINEL = 7  # no frame of either game is all 7s

INLINE = pytest.mark.parametrize("inline_first", [True, False], ids=["inline", "all-workers"])
DOORBELL = pytest.mark.parametrize("doorbell", [True, False], ids=["doorbell", "pipe-only"])


@pytest.fixture
def make_vec(monkeypatch):
    """Builds VecEnvs (doorbell=False: pipe-only) and always closes them; afterwards none of
    their workers runs."""
    def build(config=None, num_envs=2, doorbell=True, **kwargs) -> VecEnv:
        monkeypatch.setattr(agent.wire, "DOORBELL", doorbell)
        vec = VecEnv(config or EnvConfig(max_frames=SHORT), num_envs, **kwargs)
        assert vec._doorbell is (doorbell and vec.spin > 0)
        return vec

    with closing_pools(build) as make:
        yield make


@pytest.fixture
def make_ring():
    """SharedArrays that are closed after the test."""
    made: list[SharedArray] = []

    def make(rows: int, frame_shape=(84, 84)) -> SharedArray:
        ring = SharedArray((rows, *frame_shape), np.uint8)
        made.append(ring)
        return ring

    yield make
    for ring in made:
        ring.close()


# ------------------------------------------------------------------------------ SharedArray
def _write_in_child(shared: SharedArray, value: int) -> None:
    shared.array[1:3] = value  # pages first touched here, in the child


def _write_from_queue(queue) -> None:
    shared = queue.get(timeout=30)
    shared.array[0] = 42


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_shared_array_maps_the_same_memory_in_a_child(method):
    shared = SharedArray((4, 3), np.int64)
    assert (shared.array == 0).all() and shared.array.shape == (4, 3)
    ctx = multiprocessing.get_context(method)
    proc = ctx.Process(target=_write_in_child, args=(shared, 9))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert shared.array.tolist() == [[0] * 3, [9] * 3, [9] * 3, [0] * 3]
    shared.close()


def test_shared_array_sent_through_a_queue_to_a_running_process():
    """Pickled outside a Process start (multiprocessing's resource sharer passes the fd)."""
    shared = SharedArray((2,), np.uint8)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_write_from_queue, args=(queue,))
    proc.start()
    queue.put(shared)
    proc.join(30)
    assert proc.exitcode == 0 and shared.array.tolist() == [42, 0]
    shared.close()


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_shared_array_costs_nothing_until_touched_and_leaves_nothing_behind():
    before_files = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    rss = _rss_kb()
    started = time.perf_counter()
    big = SharedArray((8 << 30,), np.uint8)  # 8 GiB: no page of it is written up front
    assert time.perf_counter() - started < 0.5
    assert _rss_kb() - rss < 16 * 1024
    big.close()
    shared = SharedArray((64 << 20,), np.uint8)
    shared.array[::4096] = 1  # every page now
    assert _rss_kb() - rss > 60 * 1024
    fd = shared._fd
    assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")  # no path names it
    view = shared.array[:10]
    shared.close()
    shared.close()  # idempotent
    assert shared.closed and view[0] == 1  # a view taken before close() stays valid
    with pytest.raises(ValueError, match="closed"):
        _ = shared.array
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(shared)
    assert not os.path.exists(f"/proc/self/fd/{fd}") or not os.readlink(
        f"/proc/self/fd/{fd}").startswith("/memfd:atari")
    del view
    if before_files:
        assert set(os.listdir("/dev/shm")) <= before_files


def test_shared_array_without_memfd_uses_an_unlinked_file(monkeypatch):
    monkeypatch.delattr(os, "memfd_create")
    before = set(os.listdir("/dev/shm"))
    shared = SharedArray((3, 5), np.float32)
    assert "(deleted)" in os.readlink(f"/proc/self/fd/{shared._fd}")
    assert set(os.listdir("/dev/shm")) <= before  # the name is gone already
    ctx = multiprocessing.get_context("forkserver")
    proc = ctx.Process(target=_write_in_child, args=(shared, 2))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0 and shared.array[1:3].tolist() == [[2.0] * 5] * 2
    shared.close()


def test_shared_array_arguments_are_checked():
    for shape in (-1, (2, -3), (2.0,), "ab", None, (True,)):
        with pytest.raises(ValueError, match="shape"):
            SharedArray(shape, np.uint8)
    with pytest.raises(ValueError, match="dtype"):
        SharedArray((2,), object)
    empty = SharedArray((0, 84, 84), np.uint8)
    assert empty.array.shape == (0, 84, 84) and empty.nbytes == 0
    empty.close()
    with SharedArray(5, "<u2") as shared:
        assert shared.array.shape == (5,) and shared.array.dtype == np.uint16
        assert "SharedArray(shape=(5,)" in repr(shared)
    assert shared.closed


# ------------------------------------------------------------------------------ ring mode
class RingSchedule:
    """Rows as a replay with one stream per env hands them out: env i owns the block of rows
    [i * block, (i + 1) * block) and writes it round and round; a step takes the next row, and
    an ended episode's reset the row after it."""

    def __init__(self, n: int, block: int):
        self.block, self.cursor = block, [0] * n
        self.base = [i * block for i in range(n)]

    def reset_slots(self) -> np.ndarray:
        return np.array([b + c for b, c in zip(self.base, self.cursor)], np.int64)

    def step_slots(self) -> np.ndarray:
        out = []
        for b, c in zip(self.base, self.cursor):
            out.append([b + (c + 1) % self.block, b + (c + 2) % self.block])
        return np.array(out, np.int64)

    def advance(self, ended) -> None:
        for i, e in enumerate(ended):
            self.cursor[i] = (self.cursor[i] + (2 if e else 1)) % self.block


def check_ring_mode(vec: VecEnv, ring: SharedArray, serial: list, actions: np.ndarray,
                    use_async: bool = False) -> int:
    """Step `vec` (ring mode) and the serial envs alike; after the reset and every step the
    whole ring equals the serial envs' copy, obs, scalars and scores agree, and frames /
    final_frames are never written. Returns the number of episodes that ended."""
    n = vec.num_envs
    steps = len(actions)
    schedule = RingSchedule(n, len(ring.array) // n)
    expected = np.full(ring.array.shape, SENTINEL, np.uint8)
    ring.array[:] = SENTINEL
    vec.frames[:] = SENTINEL
    vec.final_frames[:] = SENTINEL

    slots = schedule.reset_slots()
    vec.reset(slots)
    for i, env in enumerate(serial):
        env.reset(out=expected[slots[i]])
    np.testing.assert_array_equal(ring.array, expected)
    ends = 0
    for t in range(steps):
        slots = schedule.step_slots()
        ring.array[slots[:, 1]] = SENTINEL  # a reset frame written here shows at once
        expected[slots[:, 1]] = SENTINEL
        if use_async:
            vec.step_async(actions[t], slots)
            out = vec.step_wait()
        else:
            out = vec.step(actions[t], slots)
        scores = {}
        for i, env in enumerate(serial):
            s = env.step(int(actions[t, i]), out=expected[slots[i, 0]])
            if s.terminated or s.truncated:
                scores[i] = (float(env.episode_score), int(env.episode_steps))
                env.reset(out=expected[slots[i, 1]])
            assert out.raw_reward[i] == np.float32(s.raw_reward), (t, i)
            assert out.reward[i] == np.float32(s.reward), (t, i)
            assert (out.terminated[i], out.truncated[i], out.life_lost[i],
                    out.learn_terminal[i]) == (s.terminated, s.truncated, s.life_lost,
                                               s.learn_terminal), (t, i)
            np.testing.assert_array_equal(vec.obs[i], env.observation, err_msg=f"{t} {i}")
        np.testing.assert_array_equal(ring.array, expected, err_msg=f"ring after step {t}")
        assert {i: (score, length) for i, score, length in out.episode_scores} == scores
        assert out.ended.tolist() == [i in scores for i in range(n)]
        ends += len(scores)
        schedule.advance(out.ended)
    assert (vec.frames == SENTINEL).all() and (vec.final_frames == SENTINEL).all()
    return ends


@INLINE
@DOORBELL
def test_ring_mode_with_the_toy_game_writes_exactly_the_rows_given(make_vec, make_ring,
                                                                   doorbell, inline_first):
    n, steps = 3, 2 * LENGTH + 5
    ring = make_ring(n * 10, TOY.frame_shape)
    vec = make_vec(TOY, n, doorbell=doorbell, seed=4, inline_first=inline_first,
                   make_env=make_fire_game, ring=ring)
    actions = np.random.default_rng(0).integers(0, 4, (steps, n))
    serial = [FireGame(4 + i, TOY) for i in range(n)]
    assert check_ring_mode(vec, ring, serial, actions, use_async=not doorbell) == 2 * n


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_ring_mode_under_other_start_methods(make_vec, make_ring, method):
    """The ring reaches spawn workers pickled (its descriptor passed), fork workers inherited."""
    ring = make_ring(20, TOY.frame_shape)
    vec = make_vec(TOY, 2, seed=1, start_method=method, inline_first=False,
                   make_env=make_fire_game, ring=ring)
    actions = np.full((LENGTH + 2, 2), 2)
    assert check_ring_mode(vec, ring, [FireGame(1, TOY), FireGame(2, TOY)], actions) == 2


@pytest.mark.parametrize("doorbell, inline_first, spin", [
    (True, True, 0.001), (False, False, 0.001), (True, False, 1e-6)],
    ids=["doorbell-inline", "pipe-only-all-workers", "doorbell-sleeping"])
def test_ring_mode_with_a_rom_matches_serial_envs_across_auto_resets(make_vec, make_ring,
                                                                     doorbell, inline_first,
                                                                     spin):
    config = EnvConfig(max_frames=SHORT)
    n, steps, seed = 2, 130, 11
    ring = make_ring(n * 40)
    vec = make_vec(config, n, doorbell=doorbell, seed=seed, inline_first=inline_first,
                   spin=spin, ring=ring)
    actions = np.random.default_rng(1).integers(0, len(vec.actions), (steps, n))
    serial = [AtariEnv(config, seed + i) for i in range(n)]
    assert check_ring_mode(vec, ring, serial, actions, use_async=True) >= n


def test_ring_mode_with_a_rom_and_one_env_in_this_process(make_vec, make_ring):
    config = EnvConfig(game="pong", max_frames=SHORT)
    ring = make_ring(8)
    vec = make_vec(config, 1, seed=2, ring=ring)
    assert vec.pids == []
    actions = np.random.default_rng(2).integers(0, len(vec.actions), (110, 1))
    assert check_ring_mode(vec, ring, [AtariEnv(config, 2)], actions) >= 1


@pytest.mark.parametrize("call, slots, match", [
    ("step", None, r"needs slots, an int64 array of shape \(2, 2\)"),
    ("step", np.array([1, 2]), r"shape \(2, 2\) for step\(\), got shape \(2,\)"),
    ("step", np.zeros((2, 2), np.float64), "got dtype float64"),
    ("step", np.array([[0, 1], [2, 20]]), r"slots\[1, 1\] = 20 is out of range.*\[0, 19\]"),
    ("step", np.array([[-1, 1], [2, 3]]), r"slots\[0, 0\] = -1 is out of range"),
    ("step", [[0, 1], [2, 3.5]], "got dtype float64"),
    ("step", np.array([[True, False], [True, True]]), "got dtype bool"),
    ("reset", None, r"reset\(\) needs slots"),
    ("reset", np.array([[0, 1], [2, 3]]), r"shape \(2,\) for reset\(\)"),
    ("reset", np.array([5, 99]), r"slots\[1\] = 99 is out of range"),
])
def test_bad_slots_are_refused_and_the_pool_stays_usable(make_vec, make_ring, call, slots,
                                                         match):
    ring = make_ring(20, TOY.frame_shape)
    vec = make_vec(TOY, 2, make_env=make_fire_game, ring=ring)
    ring.array[:] = SENTINEL
    if call == "reset":
        with pytest.raises(ValueError, match=match):
            vec.reset(slots)
        assert not vec.closed and (ring.array == SENTINEL).all()
    vec.reset(np.array([0, 10]))
    before = ring.array.copy()
    if call == "step":
        for method in (vec.step, vec.step_async):
            with pytest.raises(ValueError, match=match):
                method([2, 2], slots)
        np.testing.assert_array_equal(ring.array, before)  # nothing was sent
    assert not vec.closed
    out = vec.step([2, 2], [[1, 2], [11, 12]])  # lists of ints are fine too
    assert out.reward.tolist() == [1.0, 1.0] and (ring.array[[1, 11]] != SENTINEL).all()


def test_slots_without_a_ring_are_refused(make_vec):
    vec = make_vec(TOY, 2, make_env=make_fire_game)
    with pytest.raises(ValueError, match="has no ring.*without slots"):
        vec.reset(np.array([0, 1]))
    vec.reset()
    with pytest.raises(ValueError, match="has no ring.*without slots"):
        vec.step([0, 0], np.array([[0, 1], [2, 3]]))
    assert not vec.closed and vec.step([0, 0]).reward.shape == (2,)


def test_a_ring_must_be_a_shared_array_of_frames(make_ring):
    with pytest.raises(ValueError, match="SharedArray"):
        VecEnv(TOY, 2, make_env=make_fire_game, ring=np.zeros((4, 36, 36), np.uint8))
    with pytest.raises(ValueError, match=r"\(rows, 36, 36\) uint8"):
        VecEnv(TOY, 2, make_env=make_fire_game, ring=make_ring(4, (84, 84)))
    closed = make_ring(4, (36, 36))
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        VecEnv(TOY, 2, make_env=make_fire_game, ring=closed)


def test_the_pool_block_carries_the_ring_rows_before_the_command_word():
    n = 3
    cmd, ack = np.zeros((n, 8), np.int64), np.zeros((n, 8), np.int64)
    rewards, flags = np.zeros((2, n), np.float32), np.zeros((4, n), np.bool_)
    parent = PoolBlock(cmd, ack, rewards, flags, 1)
    worker = PoolBlock(cmd, ack, rewards, flags, 0)
    assert parent.ring(1 << 32 | 1 << 24, [0, 5, 6], [10, 11, 12, 13, 14, 15]) == 0
    assert cmd[0].tolist() == [0] * 8  # env 0 runs in the parent: not rung
    assert cmd[1, :4].tolist() == [1 << 32 | 1 << 24 | 5, 0, 12, 13]
    assert worker.wait_command(2, 1, 0.0) == 1 << 32 | 1 << 24 | 6
    assert worker.slots(2) == (14, 15) and worker.slots(1) == (12, 13)
    assert parent.ring(2 << 32 | 2 << 24) == 0  # without slots: words 2 and 3 unchanged
    assert cmd[2, :4].tolist() == [2 << 32 | 2 << 24, 0, 14, 15]
    with pytest.raises(ValueError, match="slots must have 6 items"):
        parent.ring(3 << 32, [0, 0, 0], [1, 2])
    with pytest.raises(IndexError):
        worker.slots(3)


# ------------------------------------------------------------------------------ make_env
@INLINE
def test_make_env_builds_every_env_with_its_seed(make_vec, inline_first):
    vec = make_vec(TOY, 3, seed=5, inline_first=inline_first, make_env=make_fire_game)
    assert vec.actions == FireGame().actions and vec.obs.shape == (3, 2, 36, 36)
    serial = [FireGame(5 + i, TOY) for i in range(3)]
    vec.reset()
    for env in serial:
        env.reset()
    actions = np.random.default_rng(3).integers(0, 4, (LENGTH + 3, 3))
    for t, acts in enumerate(actions):
        out = vec.step(acts)
        for i, env in enumerate(serial):
            s = env.step(int(acts[i]), out=None)
            if s.terminated:
                np.testing.assert_array_equal(vec.final_frames[i], env.observation[-1])
                env.reset()
            assert out.reward[i] == s.reward, (t, i)
            np.testing.assert_array_equal(vec.obs[i], env.observation)
            np.testing.assert_array_equal(vec.frames[i], env.observation[-1])


def test_make_env_must_be_a_picklable_callable():
    with pytest.raises(ValueError, match="make_env must be None or a callable"):
        VecEnv(TOY, 2, make_env="fire_game")
    with pytest.raises(ValueError, match="make_env must be picklable"):
        VecEnv(TOY, 2, make_env=lambda seed, config: FireGame(seed, config))
    alone = VecEnv(TOY, 1, make_env=lambda seed, config: FireGame(seed, config))  # no worker
    alone.reset()
    assert alone.step([2]).reward.tolist() == [1.0]
    alone.close()


# ------------------------------------------------------------------------------ snapshots
def record(vec: VecEnv, actions: np.ndarray) -> list:
    """What `vec` does with `actions`: per step the stacks, scalars and ended episodes."""
    out = []
    for acts in actions:
        s = vec.step(acts)
        out.append((vec.obs.copy(), s.reward.tolist(), s.raw_reward.tolist(),
                    s.terminated.tolist(), s.truncated.tolist(), s.life_lost.tolist(),
                    s.episode_scores))
    return out


def assert_same_records(got: list, want: list) -> None:
    assert len(got) == len(want)
    for t, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a[0], b[0], err_msg=f"step {t}")
        assert a[1:] == b[1:], t


@pytest.mark.parametrize("doorbell, inline_first, spin", [
    (True, True, 0.001), (False, True, 0.001), (True, False, 1e-6), (False, False, 0.0)],
    ids=["doorbell-inline", "pipe-only-inline", "doorbell-sleeping", "no-spin-all-workers"])
def test_states_restored_into_a_fresh_pool_continue_exactly(make_vec, doorbell, inline_first,
                                                           spin):
    config = EnvConfig(max_frames=SHORT)
    n = 3
    original = make_vec(config, n, doorbell=doorbell, seed=7, inline_first=inline_first,
                        spin=spin)
    rng = np.random.default_rng(8)
    original.reset()
    record(original, rng.integers(0, len(original.actions), (60, n)))
    time.sleep(0.01)  # with a tiny spin every side is asleep now
    states = original.get_states()
    assert len(states) == n and all(s["format"] == "atari-agent-env-state" for s in states)
    stacks = np.stack([s["stack"] for s in states])
    np.testing.assert_array_equal(stacks, original.obs)
    actions = rng.integers(0, len(original.actions), (80, n))  # past the first truncation
    want = record(original, actions)
    assert any(r[4] != [False] * n for r in want)

    restored = make_vec(config, n, doorbell=doorbell, seed=1000, inline_first=inline_first,
                        spin=spin)  # another seed: the states carry everything
    restored.set_states(states)  # no reset() needed before stepping
    np.testing.assert_array_equal(restored.obs, stacks)
    assert_same_records(record(restored, actions), want)
    assert not restored.closed and not original.closed


def test_states_round_trip_in_ring_mode(make_vec, make_ring):
    config = EnvConfig(max_frames=SHORT)
    n, seed = 2, 21
    ring_a, ring_b = make_ring(64), make_ring(64)
    a = make_vec(config, n, seed=seed, ring=ring_a)
    b = make_vec(config, n, seed=seed + 50, ring=ring_b, inline_first=False)
    rng = np.random.default_rng(4)
    a.reset(np.array([0, 32]))
    for t in range(40):
        a.step(rng.integers(0, len(a.actions), n), np.array([[t % 30 + 1, 31],
                                                             [32 + t % 30 + 1, 63]]))
    b.set_states(a.get_states())
    ring_a.array[:] = ring_b.array[:] = SENTINEL
    actions = rng.integers(0, len(a.actions), (70, n))
    ends = 0
    for t in range(70):
        slots = np.array([[t % 30, 30 + t % 2], [32 + t % 30, 62 + t % 2]])
        sa, sb = a.step(actions[t], slots), b.step(actions[t], slots)
        assert sa.raw_reward.tolist() == sb.raw_reward.tolist()
        assert sa.ended.tolist() == sb.ended.tolist()
        ends += sa.ended.sum()
        np.testing.assert_array_equal(ring_a.array, ring_b.array, err_msg=f"step {t}")
        np.testing.assert_array_equal(a.obs, b.obs)
    assert ends >= 1


class BigStateGame(FireGame):
    """The toy game with a state of several megabytes (more than a pipe holds), and a
    set_state that refuses a bad state with ValueError, as AtariEnv's does."""

    BALLAST = 3 << 20

    def get_state(self) -> dict:
        state = super().get_state()
        state["ballast"] = np.full(self.BALLAST, self.t % 251, np.uint8)
        return state

    def set_state(self, state: dict) -> None:
        ballast = state.get("ballast") if isinstance(state, dict) else None
        if ballast is None or len(ballast) != self.BALLAST or ballast[-1] != state["t"] % 251:
            raise ValueError("not a BigStateGame state (test)")
        super().set_state(state)


def make_big_state_game(seed: int, config: EnvConfig) -> BigStateGame:
    return BigStateGame(seed, config)


@INLINE
@DOORBELL
def test_states_of_megabytes_go_both_ways(make_vec, doorbell, inline_first):
    vec = make_vec(TOY, 3, doorbell=doorbell, inline_first=inline_first,
                   make_env=make_big_state_game)
    vec.reset()
    for t in range(5):
        vec.step([2, 0, 2] if t % 2 else [0, 2, 2])
    states = vec.get_states()
    assert [s["t"] for s in states] == [5, 5, 5]
    assert [s["episode_score"] for s in states] == [2.0, 3.0, 5.0]
    vec.step([2, 2, 2])
    vec.set_states(states)
    assert [s["t"] for s in vec.get_states()] == [5, 5, 5]
    out = vec.step([2, 2, 2])
    assert out.reward.tolist() == [1.0] * 3 and not vec.closed


@pytest.mark.parametrize("bad_env", [0, 2])
@DOORBELL
def test_a_state_that_an_env_refuses_names_the_env(make_vec, doorbell, bad_env):
    vec = make_vec(TOY, 3, doorbell=doorbell, make_env=make_big_state_game)
    vec.reset()
    states = vec.get_states()
    states[bad_env] = {"t": 3}
    where = "env 0 \\(in this process\\)" if bad_env == 0 else f"worker {bad_env} "
    with pytest.raises(WorkerValueError, match=f"{where}.*set_states.*not a BigStateGame") as info:
        vec.set_states(states)
    assert info.value.index == bad_env
    assert vec.closed and wait_gone(vec.pids) == []


def test_a_rom_state_that_the_env_refuses_names_the_env(make_vec):
    vec = make_vec(EnvConfig(max_frames=SHORT), 2, doorbell=True)
    vec.reset()
    states = vec.get_states()
    states[1] = dict(states[1], stack=states[1]["stack"][:2])
    with pytest.raises(WorkerValueError, match=r"worker 1 \(pid \d+\) raised ValueError "
                                               r"during set_states: env state\['stack'\]"):
        vec.set_states(states)


def test_bad_state_lists_and_pending_steps_are_refused(make_vec):
    vec = make_vec(TOY, 2, make_env=make_fire_game)
    vec.reset()
    for bad in ([{"t": 0}], {"t": 0}, "ab", None, [{"t": 0}, {"t": 0}, {"t": 0}]):
        with pytest.raises(ValueError, match="states must be a list of 2 env states"):
            vec.set_states(bad)
    with pytest.raises(ValueError, match=r"states\[1\] cannot be pickled"):
        vec.set_states([vec.get_states()[0], {"t": lambda: 0}])
    vec.step_async([0, 0])
    for call in (vec.get_states, lambda: vec.set_states([{}, {}])):
        with pytest.raises(RuntimeError, match="step_async.*call step_wait"):
            call()
    vec.step_wait()
    assert not vec.closed and len(vec.get_states()) == 2
    vec.close()
    with pytest.raises(RuntimeError, match="closed"):
        vec.get_states()


def test_a_worker_killed_before_get_states_is_named(make_vec):
    vec = make_vec(TOY, 3, make_env=make_fire_game, spin=1e-6, timeout=5)
    vec.reset()
    victim = vec.env_pids[2]
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerError, match=rf"worker 2 \(pid {victim}\) .*SIGKILL"):
        vec.get_states()
    assert vec.closed and wait_gone(vec.pids) == []


@pytest.mark.parametrize("call", ["get_states", "set_states"])
@DOORBELL
def test_a_worker_stopped_during_a_snapshot_times_out(make_vec, call, doorbell):
    """set_states: the payload is larger than the pipe holds, so the parent's write waits for
    the worker, with the pool's deadline; get_states: the answer never comes."""
    vec = make_vec(TOY, 2, doorbell=doorbell, make_env=make_big_state_game, timeout=1)
    vec.reset()
    states = vec.get_states()
    victim = vec.env_pids[1]
    os.kill(victim, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(WorkerError, match=rf"worker 1 .*did not answer within 1 s during "
                                          rf"{call}") as info:
        vec.set_states(states) if call == "set_states" else vec.get_states()
    assert 0.9 < time.monotonic() - started < 4 and info.value.pid == victim
    assert vec.closed and wait_gone(vec.pids) == []

