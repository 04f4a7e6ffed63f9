"""Scoring a policy under one documented protocol (the training loop's periodic evaluation and
the demo's trained-vs-random comparison use the same one).

Protocol (Machado et al. 2018): sticky actions 0.25; an episode ends at game over (a lost life is
not an end); the raw game score; episodes truncated at 108,000 emulator frames (30 minutes);
up to 30 no-op frames at the start; actions epsilon-greedy with `explore.eval_epsilon` (0.001)
so a policy that stalls cannot stall forever. Episode i of a run seeded s plays on an env seeded
from (s, i), so results are deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.config import EnvConfig

PROTOCOL = {"repeat_action_probability": 0.25, "terminal_on_life_loss": False,
            "max_frames": 108_000, "noop_max": 30}
"""The EnvConfig fields every evaluation sets, whatever the training run used."""


def protocol_config(env: EnvConfig) -> EnvConfig:
    """The training env's config with the evaluation protocol's settings."""
    return env.replace(**PROTOCOL)


@dataclass
class Episode:
    score: float
    """Raw game score."""
    length: int
    """Agent steps."""


def run_episodes(make_env: Callable, act: Callable[[np.ndarray], int] | None, episodes: int,
                 seed: int, epsilon: float) -> list[Episode]:
    """Play `episodes` episodes; `act(stack) -> action`, or None for a uniformly random policy.

    `make_env(seed)` builds an env with the protocol's config (see `protocol_config`).
    """
    results = []
    for i in range(episodes):
        env_seed, rng_seed = np.random.SeedSequence([seed, i]).generate_state(2)
        env = make_env(int(env_seed & 0x7FFFFFFF))
        rng = np.random.default_rng(int(rng_seed))
        n = len(env.actions)
        try:
            obs = env.reset()
            while True:
                if act is None or rng.random() < epsilon:
                    action = int(rng.integers(n))
                else:
                    action = act(obs)
                s = env.step(action)
                if s.terminated or s.truncated:
                    break
            results.append(Episode(float(env.episode_score), int(env.episode_steps)))
        finally:
            env.close()
    return results


def summarize(episodes: list[Episode]) -> dict:
    scores = np.array([e.score for e in episodes], np.float64)
    return {"episodes": len(episodes), "mean": float(scores.mean()), "std": float(scores.std()),
            "median": float(np.median(scores)), "min": float(scores.min()),
            "max": float(scores.max()),
            "mean_length": float(np.mean([e.length for e in episodes]))}
