"""The ALE bridge: frames, determinism, episode ends, life loss, rewards, the gymnasium face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agent.config import EnvConfig
from agent.env import AtariEnv, AtariGymEnv, seed_streams
from agent.games import rom_path
from agent.native import FrameReplay


def opencv_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(np.maximum(a, b), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (84, 84), interpolation=cv2.INTER_AREA)


def test_frames_match_a_plain_ale_loop_through_opencv():
    """Replay the documented semantics by hand on a raw ALEInterface and compare every frame."""
    import ale_py

    config = EnvConfig(game="space_invaders")
    env = AtariEnv(config, seed=11)
    emulator_seed, rng = seed_streams(11)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", emulator_seed)
    ale.setFloat("repeat_action_probability", 0.25)
    ale.loadROM(str(rom_path("space_invaders")))

    env.reset()
    ale.reset_game()
    for _ in range(int(rng.integers(0, config.noop_max + 1))):
        ale.act(ale_py.Action.NOOP)
    first = ale.getScreenRGB()
    diff = np.abs(env.observation[-1].astype(int) - opencv_frame(first, first).astype(int))
    assert diff.max() <= 1
    assert np.all(env.observation == env.observation[-1])  # first-frame padding

    choose = np.random.default_rng(0)
    ale_actions = env.actions.ale_actions
    for _ in range(200):
        a = int(choose.integers(len(env.actions)))
        step = env.step(a)
        raw, screens = 0.0, []
        for i in range(4):
            raw += ale.act(ale_actions[a])
            if i >= 2:
                screens.append(ale.getScreenRGB())
        assert step.raw_reward == raw
        expected = opencv_frame(*screens)
        diff = np.abs(env.observation[-1].astype(int) - expected.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.9
        assert not step.terminated  # space invaders lasts longer than 200 random steps


def run(env: AtariEnv, actions: np.ndarray):
    env.reset()
    frames, rewards, ends = [env.observation.copy()], [], []
    for a in actions:
        s = env.step(int(a))
        frames.append(env.observation.copy())
        rewards.append(s.raw_reward)
        ends.append((s.terminated, s.truncated, s.life_lost))
        if s.terminated or s.truncated:
            env.reset()
    return np.stack(frames), rewards, ends


def test_one_seed_gives_the_same_frames_and_rewards():
    actions = np.random.default_rng(1).integers(0, 12, 300)
    a = run(AtariEnv(EnvConfig(), seed=5), actions)
    b = run(AtariEnv(EnvConfig(), seed=5), actions)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and a[2] == b[2]
    c = run(AtariEnv(EnvConfig(), seed=6), actions)
    assert not np.array_equal(a[0], c[0])
    # reseeding an env restarts it exactly
    env = AtariEnv(EnvConfig(), seed=99)
    run(env, actions[:50])
    env.seed(5)
    np.testing.assert_array_equal(run(env, actions)[0], a[0])


def test_frame_cap_truncates_and_does_not_terminate():
    env = AtariEnv(EnvConfig(max_frames=200, noop_max=0), seed=0)
    env.reset()
    steps = 0
    for _ in range(100):
        s = env.step(0)
        steps += 1
        if s.truncated:
            break
    assert s.truncated and not s.terminated
    assert steps == 50  # 200 emulator frames at frameskip 4
    assert env.ale.getEpisodeFrameNumber() >= 200


def test_game_over_terminates_and_life_loss_is_a_terminal_only_when_asked():
    for life_terminal in (False, True):
        env = AtariEnv(EnvConfig(game="breakout", terminal_on_life_loss=life_terminal), seed=0)
        env.reset()
        lives_lost = 0
        for _ in range(5_000):
            s = env.step(0)  # NOOP only: Breakout ends only because FIRE relaunches the ball
            if s.life_lost:
                lives_lost += 1
                assert s.learn_terminal == life_terminal and not s.terminated
            if s.terminated:
                break
        assert s.terminated and s.learn_terminal and not s.truncated
        assert lives_lost == 4  # five lives: four lost, the fifth ends the game


def test_rewards_are_clipped_for_learning_and_kept_raw_for_the_score():
    for clip in (True, False):
        env = AtariEnv(EnvConfig(clip_rewards=clip), seed=3)
        env.reset()
        fire = env.actions.names.index("FIRE")
        seen = []
        for _ in range(600):
            s = env.step(fire)
            if s.raw_reward:
                seen.append((s.reward, s.raw_reward))
            if s.terminated:
                break
        assert seen, "Phoenix scores when firing"
        for reward, raw in seen:
            assert reward == (np.sign(raw) if clip else raw)
        assert env.episode_score == sum(raw for _, raw in seen)
        assert any(raw > 1 for _, raw in seen)


def test_frames_can_go_straight_into_a_replay_slot():
    env = AtariEnv(EnvConfig(), seed=0)
    rb = FrameReplay(100, (84, 84), stack=4)
    env.reset(out=rb.frame_slot())
    rb.reset()
    for _ in range(10):
        s = env.step(2, out=rb.frame_slot())
        rb.add(2, s.reward, s.terminated, s.truncated)
        np.testing.assert_array_equal(rb.current_stack(), env.observation)


def test_bad_actions_and_configs_are_refused():
    env = AtariEnv(EnvConfig(), seed=0)
    env.reset()
    for bad in (12, -1, 2.5, "FIRE", None, True):
        with pytest.raises(ValueError, match=r"action must be an int in \[0, 11\]"):
            env.step(bad)
    for kw, needle in [(dict(game="phenix"), "phoenix"), (dict(action_set="full"), "action_set"),
                       (dict(frameskip=0), "frameskip"),
                       (dict(repeat_action_probability=1.5), "repeat_action_probability"),
                       (dict(frame_shape=(300, 84)), "frame_shape")]:
        with pytest.raises(ValueError, match=needle):
            AtariEnv(EnvConfig(**kw))
    with pytest.raises(ValueError, match="seed"):
        AtariEnv(EnvConfig(), seed=-1)


def test_minimal_action_set():
    env = AtariEnv(EnvConfig(game="breakout", action_set="minimal"), seed=0)
    assert env.actions.ale_names == ("NOOP", "FIRE", "RIGHT", "LEFT")


def test_gymnasium_face_passes_the_env_checker():
    env = AtariGymEnv(EnvConfig(game="pong"), render_mode="rgb_array")
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=4)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    obs2, *_ = env.reset(seed=4)
    np.testing.assert_array_equal(obs, obs2)
    step = env.step(env.action_space.sample())
    assert len(step) == 5 and env.render().shape == (210, 160, 3)
    with pytest.raises(ValueError, match="action must be in Discrete"):
        env.step(99)
    env.close()


def test_the_stack_holds_the_last_four_frames_in_order():
    """With and without `out`, the acting stack is the last `stack` frames, oldest first."""
    plain = AtariEnv(EnvConfig(), seed=8)
    into = AtariEnv(EnvConfig(), seed=8)
    plain.reset()
    slots = [np.empty((84, 84), np.uint8) for _ in range(40)]
    into.reset(out=slots[0])
    for t in range(1, 40):
        plain.step(t % 12)
        into.step(t % 12, out=slots[t])
        expected = np.stack([slots[max(0, t - 3 + j)] for j in range(4)])
        np.testing.assert_array_equal(into.observation, expected)
        np.testing.assert_array_equal(plain.observation, expected)


def test_tall_screens_are_preprocessed_too():
    env = AtariEnv(EnvConfig(game="air_raid"), seed=0)  # a 250-row screen
    assert env.ale.getScreenDims() == (250, 160)
    env.reset()
    for _ in range(20):
        env.step(2)
    frame = env.observation[-1]
    assert frame.shape == (84, 84) and frame.std() > 0


def test_a_closed_env_says_so():
    env = AtariEnv(EnvConfig(), seed=0)
    env.reset()
    env.close()
    with pytest.raises(RuntimeError, match="closed AtariEnv"):
        env.step(0)


def test_the_acting_stack_can_live_in_a_callers_buffer():
    env, twin = (AtariEnv(EnvConfig(game="phoenix"), seed=3) for _ in range(2))
    env.reset()
    twin.reset()
    shared = np.zeros((2, *env.observation.shape), np.uint8)  # a row of shared memory, say
    env.share_stack(shared[1])
    assert np.array_equal(shared[1], twin.observation) and env.observation.base is shared
    for action in [2, 0, 3, 1] * 5:
        env.step(action)
        twin.step(action)
        assert np.array_equal(shared[1], twin.observation)
    assert not shared[0].any()
    with pytest.raises(ValueError, match="buffer must be a writable C-contiguous uint8 array"):
        env.share_stack(np.zeros((4, 84, 83), np.uint8))


BREAKOUT_BALL_Y = 101
"""Breakout's RAM byte of the ball's row: 0 while no ball is in play (before a serve)."""


def test_breakouts_serve_holds_under_sticky_actions():
    """The env presses FIRE at reset and after each lost life (Breakout waits for it). With
    sticky actions ALE may repeat the previous action (NOOP) on that frame instead, and the ball
    would never come. Under a NOOP-only policy every ball must still be served: on every seed the
    ball is in play right after reset and after every lost life, and five balls go past the
    paddle (game over) well within 400 agent steps (about 25 steps a ball)."""
    config = EnvConfig(game="breakout", repeat_action_probability=0.25)
    failed = []
    for seed in range(20):
        env = AtariEnv(config, seed)
        env.reset()
        served = [int(env.ale.getRAM()[BREAKOUT_BALL_Y]) != 0]
        for _ in range(400):
            s = env.step(0)
            if s.life_lost:
                served.append(int(env.ale.getRAM()[BREAKOUT_BALL_Y]) != 0)
            if s.terminated:
                break
        if not (s.terminated and all(served) and len(served) == 5):
            failed.append(f"seed {seed}: {env.ale.lives()} lives left, served {served}")
    assert not failed, "\n".join(failed)


def test_a_serve_that_takes_several_frames_replays_exactly_from_a_snapshot():
    """The serve's extra FIRE frames depend only on the emulator's state and RNG: a snapshot
    taken just before a step whose life loss needed more than one FIRE frame replays it."""
    config = EnvConfig(game="breakout", repeat_action_probability=0.25)

    def first_long_serve(seed: int) -> int | None:
        """The NOOP step whose lost life took more than one FIRE frame, if any."""
        env = AtariEnv(config, seed)
        env.reset()
        for k in range(200):
            before = env.ale.getEpisodeFrameNumber()
            s = env.step(0)
            if s.life_lost and env.ale.getEpisodeFrameNumber() - before > 4 + 1:
                return k
            if s.terminated:
                return None
        return None

    seed, k = next(((seed, k) for seed in range(40)
                    if (k := first_long_serve(seed)) is not None), (None, None))
    assert seed is not None, "no serve took two FIRE frames in 40 seeds (expected ~1 in 4)"

    def continuation(env: AtariEnv) -> list:
        out = []
        for _ in range(30):
            s = env.step(0)
            out.append((env.ale.getEpisodeFrameNumber(), s.raw_reward, s.life_lost,
                        bytes(env.ale.getRAM()), env.observation.tobytes()))
        return out

    env = AtariEnv(config, seed)
    env.reset()
    for _ in range(k):
        env.step(0)
    state = env.get_state()
    start = env.ale.getEpisodeFrameNumber()
    expected = continuation(env)
    assert expected[0][2] and expected[0][0] - start > 5  # the long serve is in the replay

    twin = AtariEnv(config, seed=seed + 1000)
    twin.reset()
    for _ in range(7):
        twin.step(1)
    twin.set_state(state)
    assert continuation(twin) == expected
