"""The collector on a real game: what the agent acts on is what the replay learns from."""

from __future__ import annotations

import numpy as np
import pytest

from agent.collector import Collector
from agent.config import Config
from agent.train import default_env


@pytest.mark.parametrize("envs", [1, 2])
def test_the_acting_stack_is_the_replays_stack_across_life_losses(envs):
    """With terminal_on_life_loss the replay starts a padded stack at a lost life; the acting
    stack must restart the same way, or the agent acts on one stack and learns from another."""
    config = Config().replace(env={"game": "breakout", "terminal_on_life_loss": True},
                              replay={"capacity": 4_000}, learner={"n_step": 1})
    collector = Collector(config, envs, default_env, env_seed=5, replay_seed=1,
                          explore_seed=np.random.SeedSequence(2))
    stack = np.empty((config.env.stack, *config.env.frame_shape), np.uint8)
    restarts = 0  # stacks padded afresh within an episode: lost lives
    try:
        collector.start()
        for _ in range(1_200 // envs):
            episodes = collector.episodes
            collector.step(lambda obs: 0, epsilon=1.0)  # every action random: never called
            for i in range(envs):
                collector.replay.current_stack(stack, i)
                assert np.array_equal(collector.observations[i], stack), (i, collector.steps)
                padded = all(np.array_equal(f, stack[-1]) for f in stack[:-1])
                restarts += padded and collector.episodes == episodes
    finally:
        collector.close()
    assert restarts >= 3, "the run must cover lost lives for the check to mean anything"
