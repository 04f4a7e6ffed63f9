"""What the learner is told: clipped rewards (both signs), the env's flags as the replay's
terminals and bootstraps, and Agree% as the health check computes it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agent.collector import Collector
from agent.config import Config, EnvConfig
from agent.env import AtariEnv, Step
from agent.games import BUTTONS, ActionSet
from agent.health import HealthMonitor
from agent.native import FrameReplay


def test_negative_rewards_are_clipped_to_minus_one_and_kept_raw_for_the_score():
    """Pong pays -1 for each point the opponent wins: its sign is -1 for learning, whatever
    the clip does to positive rewards."""
    for clip in (True, False):
        env = AtariEnv(EnvConfig(game="pong", clip_rewards=clip), seed=1)
        env.reset()
        rng = np.random.default_rng(0)
        seen = []
        while len(seen) < 3:
            s = env.step(int(rng.integers(len(env.actions))))
            if s.raw_reward < 0:
                seen.append((s.reward, s.raw_reward))
        env.close()
        assert seen == [(-1.0, -1.0)] * 3
    # A raw reward beyond +-1 keeps its sign (Phoenix pays 20+ a kill: see test_env).


class ScriptedGame:
    """Plays a fixed list of steps; frame t is filled with the value t (so stacks show time)."""

    SCRIPT = [  # (life_lost, learn_terminal, truncated, terminated)
        (False, False, False, False),
        (True, True, False, False),    # a lost life that the config makes a learning terminal
        (False, False, False, False),
        (False, False, True, False),   # truncated at the frame cap: bootstraps
        (False, False, False, False),  # (after the reset)
        (False, True, False, True),    # game over
    ]

    def __init__(self, seed: int, config: EnvConfig):
        self.config = config
        self.actions = ActionSet("scripted", "documented", BUTTONS, ("A", "B", "C", "D"),
                                 (0, 1, 2, 3))
        self._stack = np.zeros((config.stack, *config.frame_shape), np.uint8)
        self.t = 0  # frames emitted (resets and steps)
        self.i = 0  # steps taken
        self.episode_score = 0.0
        self.episode_steps = 0

    @property
    def observation(self):
        return self._stack

    def _emit(self, out):
        frame = np.full(self.config.frame_shape, self.t, np.uint8)
        if out is not None:
            out[...] = frame
        return frame

    def reset(self, out=None):
        self.t += 1
        self._stack[:] = self._emit(out)
        return self._stack

    def step(self, action, out=None):
        life_lost, learn_terminal, truncated, terminated = self.SCRIPT[self.i]
        self.i += 1
        self.t += 1
        frame = self._emit(out)
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = frame
        if learn_terminal and not terminated:
            self._stack[:-1] = frame  # as AtariEnv does: the replay pads a new segment here
        return Step(reward=0.5, raw_reward=0.5, terminated=terminated, truncated=truncated,
                    life_lost=life_lost, learn_terminal=learn_terminal)

    def close(self):
        pass


def test_the_envs_flags_become_the_replays_terminals_and_bootstraps():
    config = Config().replace(env={"frame_shape": [36, 36], "stack": 2},
                              learner={"n_step": 1, "gamma": 0.9, "learning_starts": 32},
                              replay={"capacity": 64}, run={"envs": 1})
    collector = Collector(config, 1, lambda s, c: ScriptedGame(s, c), env_seed=0,
                          replay_seed=0, explore_seed=np.random.SeedSequence(0))
    collector.start()
    for _ in ScriptedGame.SCRIPT:
        collector.step(lambda obs: 0, epsilon=0.0)
    replay = collector.replay
    index = replay.valid_indices()  # a lost life and a reset each start a new padded segment
    assert len(index) == len(ScriptedGame.SCRIPT)
    batch = replay.gather(index)
    # obs / next_obs: the newest frame's value is the frame number t (resets at t 1 and 6)
    assert batch.obs[:, -1, 0, 0].tolist() == [1, 2, 3, 4, 6, 7]
    assert batch.next_obs[:, -1, 0, 0].tolist() == [2, 3, 4, 5, 7, 8]
    assert batch.discount.tolist() == [np.float32(0.9), 0.0, np.float32(0.9),
                                       np.float32(0.9), np.float32(0.9), 0.0]
    assert batch.reward.tolist() == [0.5] * 6
    # after the lost life the replay's stack restarts padded with that step's frame, and the
    # truncated step bootstraps from its own next frame, not from the next episode's first
    assert batch.obs[2, :, 0, 0].tolist() == [3, 3]
    assert batch.next_obs[3, :, 0, 0].tolist() == [4, 5]
    assert collector.episodes == 2 and collector.steps == 6


@pytest.mark.parametrize("same, agree", [(None, 75.0), ((0, 1, 2, 0), 100.0)])
def test_agree_is_the_share_of_replay_actions_that_the_greedy_policy_repeats(tmp_path, same,
                                                                            agree):
    """Frame value v makes the stub network's greedy action v % 4; the stored actions repeat
    it in 3 transitions of 4, so Agree% is 75 and the distributions are known exactly. Where
    action 3 presses the same ALE action as action 0 (`same`: ActionSet.outputs()), the fourth
    transition agrees too: 100."""
    config = Config().replace(env={"frame_shape": [36, 36], "stack": 2},
                              learner={"n_step": 1, "learning_starts": 32},
                              replay={"capacity": 400}, run={"diag_batch": 200,
                                                            "probe_size": 8})
    replay = FrameReplay(400, (36, 36), 2, 1, 0.99, False, 0.6, seed=0)
    replay.reset(np.zeros((36, 36), np.uint8))
    for t in range(200):
        greedy = t % 4
        stored = greedy if t % 4 != 3 else 0  # greedy 3 is never the stored action
        replay.add(stored, 0.0, False, False, np.full((36, 36), t + 1, np.uint8))

    class Stub:
        channels_last = False
        device = torch.device("cpu")
        target_age = 0

        def q_values(self, obs):
            v = torch.as_tensor(np.asarray(obs)[:, -1, 0, 0].astype(np.int64)) % 4
            return torch.nn.functional.one_hot(v, 4).float()

    buttons = np.array([0, 1, 2, 3])
    monitor = HealthMonitor(config, Stub(), replay, buttons, None,
                            SimpleNamespace(event=lambda *a, **k: None), tmp_path,
                            np.random.default_rng(0),
                            same=None if same is None else np.asarray(same))
    monitor.probe = replay.gather(np.arange(8)).obs.copy()
    m = monitor.measure()
    assert m["agree"] == agree
    assert m["greedy_dist"] == {"noop": 0.25, "ZAP": 0.25, "FIRE": 0.25, "FIRE+ZAP": 0.25}
    assert m["replay_dist"] == {"noop": 0.5, "ZAP": 0.25, "FIRE": 0.25, "FIRE+ZAP": 0.0}
