"""Exact snapshots: FrameReplay.state_dict/load_state_dict and AtariEnv.get_state/set_state.

A restored object must go on exactly like the original: same batches, indices, weights and
priorities for the replay; same frames, rewards and flags for the env (sticky actions included).
"""

from __future__ import annotations

import io
import random

import ale_py
import numpy as np
import pytest
import torch

from agent.config import EnvConfig
from agent.env import AtariEnv, _ale_rng_words
from agent.native import FrameReplay

H = W = 6
CAPACITY = 64


# ------------------------------------------------------------------------------ replay helpers
def make(prioritized: bool = True, n_step: int = 3, seed: int = 1, **kw) -> FrameReplay:
    args = dict(capacity=CAPACITY, frame_shape=(H, W), stack=4, n_step=n_step, gamma=0.9,
                prioritized=prioritized, alpha=0.6, seed=seed)
    args.update(kw)
    return FrameReplay(**args)


def feed(rb: FrameReplay, steps: int, rng: np.random.Generator, end: str | None = None) -> None:
    """Random episodes (terminals, truncations, resets mid-episode); `end` fixes the last state:
    "open" leaves an episode waiting for add(), "closed" ends with a terminal step."""
    shape = rb.frame_shape
    if not rb.state_dict(copy=False)["episode_open"][0]:  # stream 0: the one it writes
        rb.reset(rng.integers(0, 256, shape, dtype=np.uint8))
    for _ in range(steps):
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        if rng.random() < 0.03:
            rb.reset(frame)
            continue
        done = rng.random() < 0.1
        truncated = done and rng.random() < 0.3
        reward = float(rng.choice([-1.0, 0.0, 1.0]))
        rb.add(int(rng.integers(0, 18)), reward, done and not truncated, truncated, frame)
        if done:
            rb.reset(rng.integers(0, 256, shape, dtype=np.uint8))
    if end == "closed":
        rb.add(1, 1.0, True, False, rng.integers(0, 256, shape, dtype=np.uint8))


def learn(rb: FrameReplay, rng: np.random.Generator, rounds: int = 3) -> list:
    """Sample a few batches (and update priorities); returns the batches' arrays."""
    out = []
    for _ in range(rounds):
        b = rb.sample(8, beta=0.5)
        out.append({k: getattr(b, k).copy() for k in
                    ("obs", "next_obs", "action", "reward", "discount", "index", "weight")})
        if rb.prioritized:
            # Priorities over 24 decades: their double sums round, so a sum-tree rebuilt in
            # another order than the running tree's would differ in the last bits.
            rb.update_priorities(b.index, 10.0 ** rng.uniform(-12, 12, b.index.size))
    return out


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        np.testing.assert_array_equal(x, y, err_msg=k)


def assert_same_replay(a: FrameReplay, b: FrameReplay) -> None:
    assert_same_state(a.state_dict(), b.state_dict())
    assert a.num_valid() == b.num_valid()
    np.testing.assert_array_equal(a.valid_indices(), b.valid_indices())
    if a.total:
        np.testing.assert_array_equal(a.current_stack(), b.current_stack())
    if a.prioritized and a.num_valid():
        # Bit-identical sum-tree: each probability is leaf / root, compared exactly.
        np.testing.assert_array_equal(a.probabilities(a.valid_indices()),
                                      b.probabilities(b.valid_indices()))


def go_on_together(a: FrameReplay, b: FrameReplay, seed: int, rounds: int = 6) -> None:
    """Drive both replays with the same stream and check every batch is identical."""
    ra, rb_ = np.random.default_rng(seed), np.random.default_rng(seed)
    for _ in range(rounds):
        ba, bb = learn(a, ra), learn(b, rb_)
        for x, y in zip(ba, bb):
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=k)
        feed(a, 17, ra)
        feed(b, 17, rb_)
    assert_same_replay(a, b)


# ------------------------------------------------------------------------------ replay tests
@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("steps,end", [(30, "open"), (150, "open"), (151, "closed")])
def test_replay_round_trip_continues_exactly(prioritized, n_step, steps, end):
    rng = np.random.default_rng(steps)
    a = make(prioritized, n_step)
    feed(a, steps, rng, end)
    learn(a, rng)
    state = a.state_dict()
    assert bool(state["episode_open"]) == (end == "open")
    assert state["total"].shape == (1,)  # per-stream counters, one stream
    assert (int(state["total"][0]) > CAPACITY) == (steps > CAPACITY)  # wrapped or not
    assert state["frames"].shape == (min(int(state["total"][0]), CAPACITY), H, W)

    b = make(prioritized, n_step, seed=999)  # another seed: the RNG comes from the state
    feed(b, 20, np.random.default_rng(5))  # and other contents, all replaced
    b.load_state_dict(state)
    assert_same_replay(a, b)
    go_on_together(a, b, seed=steps)


@pytest.mark.parametrize("prioritized", [False, True])
def test_replay_state_survives_savez_and_torch(prioritized, tmp_path):
    rng = np.random.default_rng(7)
    a = make(prioritized)
    feed(a, 120, rng)
    learn(a, rng)
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())

    np.savez(tmp_path / "replay.npz", **state)
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as f:
        from_disk = {k: f[k] for k in f.files}
    assert_same_state(state, from_disk)
    b = make(prioritized, seed=3)
    b.load_state_dict(from_disk)
    assert_same_replay(a, b)

    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    assert_same_state(state, {k: t.numpy() for k, t in tensors.items()})
    c = make(prioritized, seed=4)
    c.load_state_dict(tensors)  # CPU tensors are accepted as they are
    assert_same_replay(a, c)
    go_on_together(b, c, seed=8)


def test_rebuilt_sum_tree_keeps_the_running_trees_rounding():
    """Priorities chosen so that the order of the double sums shows in the root: the running
    tree adds siblings pairwise (2**-53 + 2**-53 first, then 1), a left-to-right sum would lose
    both halves. The loaded tree must round exactly like the running one."""
    a = FrameReplay(16, (H, W), stack=1, n_step=1, prioritized=True, alpha=1.0, seed=0)
    feed(a, 0, np.random.default_rng(0))
    for _ in range(10):
        a.add(0, 0.0, False, False, np.zeros((H, W), np.uint8))
    prio = np.array([1.0, 2.0**-60, 2.0**-53, 2.0**-53] + [2.0**-80] * 6)
    a.update_priorities(np.arange(10), prio)
    leaves = np.zeros(16)
    leaves[:10] = prio
    pairwise = leaves.copy()
    while pairwise.size > 1:
        pairwise = pairwise[0::2] + pairwise[1::2]
    left_to_right = 0.0
    for v in leaves:
        left_to_right += v
    assert pairwise[0] != left_to_right  # the test can tell the two orders apart
    assert a.probabilities([0])[0] == 1.0 / pairwise[0]

    b = FrameReplay(16, (H, W), stack=1, n_step=1, prioritized=True, alpha=1.0, seed=9)
    b.load_state_dict(a.state_dict())
    assert_same_replay(a, b)
    for _ in range(5):
        np.testing.assert_array_equal(a.sample(10).index, b.sample(10).index)


def test_replay_state_of_an_empty_replay_and_views():
    a = make(True)
    state = a.state_dict()
    assert state["frames"].shape == (0, H, W) and int(state["total"][0]) == 0
    b = make(True)
    feed(b, 40, np.random.default_rng(0))
    b.load_state_dict(state)
    assert b.total == 0 and b.num_valid() == 0
    assert_same_replay(a, b)

    feed(a, 40, np.random.default_rng(1))
    view = a.state_dict(copy=False)
    assert not view["frames"].flags.writeable
    assert_same_state(view, a.state_dict())
    copied = a.state_dict()
    feed(a, 5, np.random.default_rng(2))  # the copy keeps its values, the view follows the ring
    assert not np.array_equal(copied["flags"], a.state_dict()["flags"])
    np.testing.assert_array_equal(view["flags"], a.state_dict()["flags"])

def _editors(good: dict):
    """put(key, value) / drop(key): copies of the state `good` with one key changed or gone."""

    def put(key, value):
        return {**good, key: value}

    def drop(key):
        return {k: v for k, v in good.items() if k != key}

    return put, drop



def _mutations(good: dict) -> list:
    """(description, key the error must name, broken state) for one consistent state."""
    total = int(good["total"].sum())

    put, drop = _editors(good)

    flags = good["flags"].copy()
    flags[0] = 200
    prio_nan = good["prio"].copy()
    prio_nan[3] = np.nan
    return [
        ("missing key", "flags", drop("flags")),
        ("unknown key", "bogus", put("bogus", np.zeros(1))),
        ("version", "version", put("version", np.asarray(3, np.int64))),
        ("version 1 layout", "version", put("version", np.asarray(1, np.int64))),
        ("reward dtype", "reward", put("reward", good["reward"].astype(np.float64))),
        ("frames dtype", "frames", put("frames", good["frames"].astype(np.int16))),
        ("total as float", "total", put("total", np.asarray(float(total)))),
        ("action shape", "action", put("action", good["action"][:-1])),
        ("rng shape", "rng_state", put("rng_state", good["rng_state"][:3])),
        ("rng as int64", "rng_state", put("rng_state", good["rng_state"].view(np.int64))),
        ("rng all zero", "rng_state", put("rng_state", np.zeros(4, np.uint64))),
        ("total 0-d", "total", put("total", np.asarray(total, np.int64))),
        ("negative total", "total", put("total", -np.ones_like(good["total"]))),
        ("frames count", "frames", put("frames", good["frames"][:-1])),
        ("live_transitions", "live_transitions",
         put("live_transitions", good["live_transitions"] + 1)),
        ("flag bits", "flags", put("flags", flags)),
        ("prio NaN", "prio", put("prio", prio_nan)),
        ("prio negative", "prio", put("prio", -good["prio"] - 1)),
        ("prio for uniform shape", "prio", put("prio", np.zeros(0, np.float32))),
        ("max_priority", "max_priority", put("max_priority", np.asarray(0.5))),
        ("episode_transitions", "episode_transitions",
         put("episode_transitions", good["episode_transitions"] + total + 5)),
        ("not a mapping", "dict", [1, 2, 3]),
    ]


def test_bad_replay_states_raise_and_change_nothing():
    rng = np.random.default_rng(11)
    source = make(True)
    feed(source, 100, rng)
    learn(source, rng)
    good = source.state_dict()
    target = make(True, seed=5)
    feed(target, 70, np.random.default_rng(12))
    learn(target, np.random.default_rng(13))
    before = target.state_dict()
    twin = make(True, seed=5)  # the target's twin, for a sampling check afterwards
    feed(twin, 70, np.random.default_rng(12))
    learn(twin, np.random.default_rng(13))

    for what, key, state in _mutations(good):
        with pytest.raises(ValueError, match=key) as info:
            target.load_state_dict(state)
        assert "expected" in str(info.value) or what in ("not a mapping", "unknown key",
                                                          "missing key"), what
        assert_same_state(before, target.state_dict())
    assert_same_replay(twin, target)
    go_on_together(twin, target, seed=14, rounds=2)


@pytest.mark.parametrize("param,value", [
    ("capacity", 65), ("frame_shape", (6, 7)), ("stack", 3), ("n_step", 2), ("gamma", 0.99),
    ("prioritized", False), ("alpha", 0.5), ("streams", 2),
])
def test_replay_built_otherwise_refuses_the_state(param, value):
    source = make(**{"prioritized": True, param: value})
    feed(source, 30, np.random.default_rng(0))
    target = make(True)
    feed(target, 30, np.random.default_rng(1))
    before = target.state_dict()
    with pytest.raises(ValueError, match=f"'{param}'.*this replay was built with {param}="):
        target.load_state_dict(source.state_dict())
    assert_same_state(before, target.state_dict())


def test_counters_must_agree_with_the_stored_frames():
    state = make(False).state_dict()
    state["episode_open"] = np.ones(1, np.bool_)
    with pytest.raises(ValueError, match="episode_open"):
        make(False).load_state_dict(state)
    rb = make(False)
    feed(rb, 20, np.random.default_rng(0))  # not wrapped: total frames stored
    state = rb.state_dict()
    state["total"] = state["total"] + 1
    with pytest.raises(ValueError, match=r"'frames'.*min\(total="):
        make(False).load_state_dict(state)


def test_stack_floor_stops_at_the_live_range():
    """A long episode in a just-wrapped ring with a deep stack: the walk to the episode start
    now stops under the live range (it used to go on to logical index -1, a read before the
    flags buffer); which indices are valid is unchanged."""
    rb = FrameReplay(20, (H, W), stack=6, n_step=1, seed=0)
    rng = np.random.default_rng(0)
    rb.reset(rng.integers(0, 256, (H, W), dtype=np.uint8))
    for _ in range(20):  # one episode: only logical index 0 is FIRST, then it is overwritten
        rb.add(0, 0.0, False, False, rng.integers(0, 256, (H, W), dtype=np.uint8))
    # Indices whose stack reaches under the live range are not valid, the rest are.
    start = rb.live_start
    np.testing.assert_array_equal(rb.valid_indices(),
                                  np.arange(start + 5, rb.total - 1, dtype=np.int64))


# ------------------------------------------------------------------------------ env helpers
def play(env: AtariEnv, actions) -> list:
    """Step through `actions` (resetting at episode ends); everything a step produced and the
    emulator's state after it."""
    out = []
    for a in actions:
        s = env.step(int(a))
        # The whole emulator (RAM, CPU, TIA, paddles, frame numbers) and its RNG, as bytes.
        emulator = bytes(env.ale.cloneState(include_rng=True).serialize())
        out.append((env.observation.copy(), s.reward, s.raw_reward, s.terminated, s.truncated,
                    s.life_lost, s.learn_terminal, env.episode_score, env.episode_steps, emulator))
        if s.terminated or s.truncated:
            env.reset()
            out.append(("reset", env.observation.copy()))
    return out


def assert_same_play(a: list, b: list) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert len(x) == len(y), i
        for u, v in zip(x, y):
            if isinstance(u, np.ndarray):
                np.testing.assert_array_equal(u, v, err_msg=f"step {i}")
            else:
                assert u == v, f"step {i}: {u!r} != {v!r}"


def to_torch(value):
    if isinstance(value, dict):
        return {k: to_torch(v) for k, v in value.items()}
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


# ------------------------------------------------------------------------------ env tests
@pytest.mark.parametrize("game", ["breakout", "phoenix"])
def test_env_round_trip_continues_exactly(game):
    config = EnvConfig(game=game, repeat_action_probability=0.25)
    actions = np.random.default_rng(3).integers(0, 6, 500)
    a = AtariEnv(config, seed=3)
    a.reset()
    play(a, actions[:200])
    state = a.get_state()
    expected = play(a, actions[200:])

    b = AtariEnv(config, seed=12345)
    b.reset()
    play(b, actions[:37][::-1])
    b.set_state(state)
    assert_same_play(expected, play(b, actions[200:]))

    # The state is plain data: through tensors and torch.save / torch.load(weights_only=True).
    buf = io.BytesIO()
    torch.save(to_torch(state), buf)
    buf.seek(0)
    c = AtariEnv(config, seed=7)
    c.set_state(torch.load(buf, weights_only=True))
    assert_same_play(expected, play(c, actions[200:]))


def _first_frame_sticks(state: dict, p: float) -> bool:
    gen = random.Random()
    gen.setstate((3, _ale_rng_words(state["ale"].tobytes()), None))
    return gen.getrandbits(32) / 2**32 < p


def test_env_restores_the_sticky_previous_action():
    """ALE keeps the action a sticky frame repeats outside its saved state; set_state restores
    it. Snapshot where the next frame sticks, after RIGHT, into an env that last pushed LEFT.
    (Pong: its paddle integrates every frame's input, so one frame of LEFT always shows.)"""
    config = EnvConfig(game="pong", repeat_action_probability=0.25)
    a = AtariEnv(config, seed=1)
    right = a.actions.ale_actions.index(ale_py.Action.RIGHT)
    left = a.actions.ale_actions.index(ale_py.Action.LEFT)
    a.reset()
    for _ in range(10):
        a.step(right)
    state = a.get_state()
    while not _first_frame_sticks(state, 0.25):
        a.step(right)
        state = a.get_state()
    assert state["sticky_action"] == ale_py.Action.RIGHT.value
    actions = [0] * 5 + [left] * 5
    expected = play(a, actions)

    def target():
        b = AtariEnv(config, seed=2)
        b.reset()
        for _ in range(10):
            b.step(left)
        return b

    b = target()
    b.set_state(state)
    assert_same_play(expected, play(b, actions))

    # Control: restoring the emulator alone (no sticky action) repeats the target's own
    # previous action, LEFT, on the first frame, and the game goes elsewhere.
    c = target()
    c._sticky.force = lambda ale, ale_state, words, action: ale.restoreState(ale_state)
    c.set_state(state)
    with pytest.raises(AssertionError):
        assert_same_play(expected[:1], play(c, actions[:1]))


def test_bad_env_states_raise_and_change_nothing():
    config = EnvConfig(game="breakout")
    a = AtariEnv(config, seed=0)
    a.reset()
    play(a, [1, 2, 3] * 10)
    good = a.get_state()
    other = AtariEnv(EnvConfig(game="phoenix"), seed=0)
    other.reset()
    b = AtariEnv(config, seed=4)
    b.reset()
    play(b, [2, 3] * 7)
    twin = AtariEnv(config, seed=4)
    twin.reset()
    play(twin, [2, 3] * 7)

    put, drop = _editors(good)

    bad = [
        ("game 'phoenix'", other.get_state()),
        ("frameskip", put("config", {**good["config"], "frameskip": 3})),
        ("frame_shape", put("config", {**good["config"], "frame_shape": np.array([64, 64])})),
        ("stack", put("stack", good["stack"][:2])),
        ("stack", put("stack", good["stack"].astype(np.float32))),
        ("missing key 'rng'", drop("rng")),
        ("unexpected", put("extra", 1)),
        ("version", put("version", 2)),
        ("ale", put("ale", good["ale"][:-5])),
        ("ale", put("ale", good["ale"].astype(np.int64))),
        ("sticky_action", put("sticky_action", 99)),
        ("rng", put("rng", {"bit_generator": "MT19937", "state": {}})),
        ("lives", put("lives", -1)),
        ("episode_steps", put("episode_steps", 2.5)),
        ("must be a dict", [good]),
    ]
    for needle, state in bad:
        with pytest.raises(ValueError, match=needle):
            b.set_state(state)
    actions = np.random.default_rng(0).integers(0, 6, 60)
    assert_same_play(play(twin, actions), play(b, actions))
